"""The fake vLLM server's counters, for tests: requests, batches, statuses and faults fired."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class ServerStats:
    """Counters for tests.  Never holds a key or an Authorization header.

    ``batch_sizes`` has one entry per ``/v1/embeddings`` request whose
    ``input`` parsed (including ones that later failed, hung or were
    faulted); ``inputs_embedded`` and ``prompt_tokens`` count answered
    requests only.
    """

    requests_total: int = 0
    embedding_requests: int = 0
    embedding_ok: int = 0
    inputs_embedded: int = 0
    prompt_tokens: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    running: int = 0
    hung: int = 0
    hangs_aborted: int = 0  # hung requests ended by their client hanging up
    unauthorized: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    faults_fired: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def count_status(self, status: int) -> None:
        with self._lock:
            self.status_counts[status] = self.status_counts.get(status, 0) + 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults_fired[kind] = self.faults_fired.get(kind, 0) + 1

    def add_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.append(size)

    def answered(self, inputs: int, tokens: int) -> None:
        with self._lock:
            self.embedding_ok += 1
            self.inputs_embedded += inputs
            self.prompt_tokens += tokens

    def snapshot(self) -> dict:
        """A JSON-ready copy (what ``GET /_admin/stats`` returns)."""
        with self._lock:
            out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
            out["batch_sizes"] = list(self.batch_sizes)
            out["status_counts"] = {str(k): v for k, v in self.status_counts.items()}
            out["faults_fired"] = dict(self.faults_fired)
        return out
