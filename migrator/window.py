"""When a run must stop: ``--max-duration 45m`` and ``--until 06:00``.

A run started from cron at night must be done with the GPU before the day
shift. Both options give a deadline; the run stops sending requests there,
lets the ones in flight finish, keeps everything committed or staged, and
exits with :data:`~migrator.errors.EXIT_WINDOW` so the next window resumes it.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from .errors import UsageError

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_duration(text: str) -> float:
    """'45m' -> 2700.0; '1h30m', '90s', '2d', or plain seconds ('600')."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = _PART.findall(t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise UsageError(f"{text!r} is not a duration; write it like 45m, 1h30m, 90s or 2d")
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"{text!r}: a duration must be longer than zero")
    return seconds


def seconds_until(clock: str, now: datetime | None = None) -> float:
    """Seconds from ``now`` (local time) to the next ``HH:MM``; today if still ahead, else tomorrow."""
    m = _CLOCK.fullmatch(clock.strip())
    if not m:
        raise UsageError(f"--until {clock!r} is not a time of day; write it like 06:00 (24-hour, local time)")
    now = now or datetime.now()
    at = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return (at - now).total_seconds()


def time_left(max_duration: str | None, until: str | None, now: datetime | None = None) -> float | None:
    """Seconds the run may take (the earlier of the two limits), or None for no limit."""
    limits = []
    if max_duration:
        limits.append(parse_duration(max_duration))
    if until:
        limits.append(seconds_until(until, now))
    return min(limits) if limits else None
