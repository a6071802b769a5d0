"""How many requests to keep in flight: found by measuring, not guessed.

The embedding server is the expensive part; the client's job is to keep it
busy. vLLM batches every request in flight (continuous batching), so its
throughput grows with the number of requests in flight until the GPU is
saturated, and after that only latency grows. :class:`AdaptiveLimit` finds
that knee while the migration runs:

- *probe*: every window it measures tokens/s; while a window beats the best so
  far by more than ``GAIN``, the limit grows by half;
- *settle*: after ``PATIENCE`` windows without gain it settles at the best
  limit seen plus a quarter (headroom against jitter, so the server never
  waits on us), and re-probes now and then, since a shared GPU's capacity moves;
- *back off*: a 429, a 5xx or a timeout halves the limit at once.

A fixed ``--concurrency`` turns all this off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

log = logging.getLogger("migrator.vllm.tuning")

GAIN = 1.05  # a window must beat the best by 5% to count as growth
PATIENCE = 2  # windows without growth before settling
REPROBE_WINDOWS = 30  # settled windows before probing upward again
MIN_WINDOW_S = 1.0


class AdaptiveLimit:
    """A semaphore whose size is tuned from measured throughput."""

    def __init__(self, *, start: int = 4, maximum: int = 64, fixed: int | None = None):
        self.fixed = fixed
        self.maximum = max(1, fixed or maximum)
        self.limit = fixed or min(start, self.maximum)
        self.in_flight = 0
        self.cap: int | None = None
        self._cond = asyncio.Condition()
        self._window_start = time.monotonic()
        self._window_tokens = 0
        self._window_done = 0
        self._latencies: list[float] = []
        self._best_rate = 0.0
        self._best_limit = self.limit
        self._stalls = 0
        self._settled_windows = 0
        self.settled = fixed is not None
        self.history: list[tuple[float, int, float]] = []  # (time, limit, tokens/s) per window

    async def __aenter__(self) -> "AdaptiveLimit":
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.allowed)
            self.in_flight += 1
        return self

    async def __aexit__(self, *exc) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify_all()

    @property
    def allowed(self) -> int:
        """Requests that may be in flight now: the limit, under an operator's cap if any."""
        return min(self.limit, self.cap) if self.cap else self.limit

    def set_cap(self, cap: int | None) -> None:
        """An operator's ceiling (control.THROTTLE), applied on top of the measured limit."""
        if cap != self.cap:
            self.cap = cap
            asyncio.get_event_loop().create_task(self._wake())

    def _set(self, limit: int, why: str) -> None:
        limit = max(1, min(self.maximum, limit))
        if limit != self.limit:
            log.debug("in-flight limit %d -> %d (%s)", self.limit, limit, why)
            self.limit = limit

    async def _wake(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def record(self, tokens: int, latency: float) -> None:
        """A request finished well: account it, and maybe end the window."""
        self._window_tokens += tokens
        self._window_done += 1
        if self.fixed is not None:
            return  # nothing to tune: keep nothing (a long run would keep every latency)
        self._latencies.append(latency)
        now = time.monotonic()
        elapsed = now - self._window_start
        median = sorted(self._latencies)[len(self._latencies) // 2]
        if elapsed < max(MIN_WINDOW_S, 4 * median) or self._window_done < self.limit:
            return
        rate = self._window_tokens / elapsed
        self.history.append((now, self.limit, rate))
        self._window_start, self._window_tokens, self._window_done = now, 0, 0
        self._latencies.clear()
        if not self.settled:
            if rate > self._best_rate * GAIN:
                self._best_rate, self._best_limit, self._stalls = rate, self.limit, 0
                self._set(math.ceil(self.limit * 1.5), f"{rate:.0f} tok/s, still growing")
            else:
                self._best_rate = max(self._best_rate, rate)
                self._stalls += 1
                if self._stalls >= PATIENCE:
                    self.settled, self._settled_windows = True, 0
                    self._set(math.ceil(self._best_limit * 1.25), f"settled near {self._best_rate:.0f} tok/s")
        else:
            self._settled_windows += 1
            if self._settled_windows >= REPROBE_WINDOWS:
                self.settled, self._stalls = False, 0
                self._best_rate = rate
                self._best_limit = self.limit
                self._set(math.ceil(self.limit * 1.5), "re-probing")
        asyncio.get_event_loop().create_task(self._wake())

    def throttled(self, why: str) -> None:
        """The server pushed back (429, 5xx, timeout): halve at once."""
        if self.fixed is not None:
            return
        self._set(self.limit // 2, why)
        self._best_rate *= 0.9
        self.settled, self._stalls = False, 0
        self._window_start, self._window_tokens, self._window_done = time.monotonic(), 0, 0
        self._latencies.clear()
