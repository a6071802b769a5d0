"""The fake vLLM server's cost model: a token capacity its requests share, as continuous batching shares a GPU."""

from __future__ import annotations

import threading
import time


class _SharedCapacity:
    """Processor sharing, like continuous batching: the requests in flight
    split ``tokens_per_second`` equally, so a request of T tokens alone takes
    T / rate seconds and k equal requests together take k*T / rate.

    Bookkeeping uses "virtual tokens": the work each active request has
    received so far, which grows at rate / active.
    """

    def __init__(self, tokens_per_second: float, stopping: threading.Event):
        if tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        self._rate = float(tokens_per_second)
        self._stopping = stopping
        self._cond = threading.Condition()
        self._virtual = 0.0
        self._stamp = time.monotonic()
        self._active = 0

    def _advance(self) -> None:
        now = time.monotonic()
        if self._active:
            self._virtual += (now - self._stamp) * self._rate / self._active
        self._stamp = now

    def consume(self, tokens: int) -> bool:
        """Block for this request's share of the time; False if stopped."""
        with self._cond:
            self._advance()
            target = self._virtual + tokens
            self._active += 1
            try:
                while not self._stopping.is_set():
                    self._advance()
                    left = target - self._virtual
                    if left <= 1e-9:
                        return True
                    self._cond.wait(min(left * self._active / self._rate, 0.2))
                return False
            finally:
                self._advance()
                self._active -= 1
                self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
