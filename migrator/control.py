"""Steering a running migration without restarting it: files in the state directory.

- ``PAUSE``: while this file exists the run sends no new request (those in
  flight finish); remove it and the run carries on. ``touch state/PAUSE``.
- ``THROTTLE``: ``max_in_flight = 4`` and/or ``tokens_per_second = 20000``
  (one ``key = value`` per line, ``#`` comments): caps applied to the adaptive
  limit, for a GPU shared with a chat model. Remove it to lift the caps.

The run re-reads both about once a second, so an operator (or a cron job of
their own) can steer a night's migration with ``touch`` and ``echo``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("migrator.control")

PAUSE_FILE = "PAUSE"
THROTTLE_FILE = "THROTTLE"
CHECK_EVERY = 1.0   # seconds between looks at the files


@dataclass(frozen=True)
class Throttle:
    max_in_flight: int | None = None
    tokens_per_second: float | None = None


def read_throttle(path: Path) -> Throttle:
    """Parse a THROTTLE file; a line that cannot be understood is logged once and ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return Throttle()
    except (OSError, UnicodeDecodeError) as e:
        log.warning("%s: unreadable (%s); no throttle applied", path, e)
        return Throttle()
    values: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        try:
            if not sep:
                raise ValueError
            if key == "max_in_flight":
                values[key] = max(1, int(value))
            elif key == "tokens_per_second":
                values[key] = max(1.0, float(value))
            else:
                raise ValueError
        except ValueError:
            log.warning("%s line %d: %r not understood (max_in_flight = N, tokens_per_second = N); "
                        "ignored", path, n, line)
    return Throttle(**values)


class Control:
    """What the PAUSE and THROTTLE files say now (read at most once a second)."""

    def __init__(self, state_dir: str | os.PathLike):
        self.pause_path = Path(state_dir) / PAUSE_FILE
        self.throttle_path = Path(state_dir) / THROTTLE_FILE
        self._checked = 0.0
        self._throttle_mtime: int | None = None
        self._paused = False
        self.throttle = Throttle()
        self._bucket_at = time.monotonic()
        self._bucket = 0.0

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < CHECK_EVERY:
            return
        self._checked = now
        paused = self.pause_path.exists()
        if paused != self._paused:
            log.info("%s %s: %s", self.pause_path, "found" if paused else "removed",
                     "pausing (requests in flight finish)" if paused else "resuming")
            self._paused = paused
        try:
            mtime = self.throttle_path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._throttle_mtime:
            self._throttle_mtime = mtime
            new = read_throttle(self.throttle_path) if mtime is not None else Throttle()
            if new != self.throttle:
                log.info("throttle now: %s", "none" if new == Throttle() else
                         ", ".join(f"{k} = {v:g}" for k, v in vars(new).items() if v is not None))
            self.throttle = new

    async def wait_while_paused(self, stop: asyncio.Event) -> None:
        self.refresh()
        while self._paused and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY)
            except asyncio.TimeoutError:
                pass
            self.refresh()

    async def pace(self, tokens: int, stop: asyncio.Event) -> None:
        """Wait until sending ``tokens`` more keeps within tokens_per_second (a token bucket
        holding at most one second's worth)."""
        rate = self.throttle.tokens_per_second
        if not rate:
            return
        while not stop.is_set():
            now = time.monotonic()
            self._bucket = min(rate, self._bucket + (now - self._bucket_at) * rate)
            self._bucket_at = now
            if self._bucket >= min(tokens, rate):
                self._bucket -= tokens
                return
            await asyncio.sleep(min(CHECK_EVERY, (min(tokens, rate) - self._bucket) / rate))
            self.refresh()
            rate = self.throttle.tokens_per_second
            if not rate:
                return
