"""The faults tests queue on the fake vLLM server: their kinds, the queue, and what each does to an answer."""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from migrator.testing.embedder import embed_word_lists
from migrator.testing.server.vectors import _unit

#: Fault kinds and the parameters each accepts (besides ``times``/``match``).
FAULT_KINDS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "retry_after", "body"}),
    "html": frozenset({"status"}),
    "reset": frozenset({"stage"}),
    "hang": frozenset(),
    "delay": frozenset({"seconds"}),
    "wrong_dim": frozenset({"dim"}),
    "nan": frozenset({"value", "item"}),
    "too_few": frozenset({"item"}),
    "dup_index": frozenset(),
    "shuffle": frozenset({"seed"}),
    "wrong_model": frozenset({"model"}),
    "garbage": frozenset({"seed"}),
    "misorder": frozenset(),  # each index gets its neighbour's vector: passes every per-answer check
    "zero": frozenset({"item"}),
    "no_metadata": frozenset(),  # a binary answer without its `metadata` header (a proxy dropping it)
}
# Faults that answer (or refuse to answer) instead of the model.
_PRE_FAULTS = frozenset({"status", "html", "reset", "hang"})

_NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_LOGIN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>"
    '<form method="post" action="/login"><input name="user"><input '
    'name="password" type="password"><button>Sign in</button></form>'
    "</body></html>\n"
)


@dataclass
class Fault:
    """One queued fault rule.  ``times=None`` means until cleared."""

    kind: str
    times: Optional[int] = 1
    match: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def matches(self, texts: list[str]) -> bool:
        return self.match is None or any(self.match in t for t in texts)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "times": self.times, "match": self.match, "fired": self.fired, **self.params}


class FaultQueue:
    """Thread-safe FIFO of fault rules consumed by ``/v1/embeddings`` requests.

    Each request that passes validation takes (one use of) the first rule
    whose ``match`` substring occurs in one of its text inputs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, kind: str, times: Optional[int] = 1, *, match: Optional[str] = None, **params: Any) -> Fault:
        """Queue a rule; raises ValueError for an unknown kind or parameter."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        unknown = set(params) - FAULT_KINDS[kind]
        if unknown:
            raise ValueError(f"fault {kind!r} takes no parameter(s) {sorted(unknown)}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive int or None (until cleared)")
        rule = Fault(kind=kind, times=times, match=match, params=params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, texts: list[str]) -> Optional[Fault]:
        """Consume one use of the first rule matching *texts*, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(texts):
                    rule.fired += 1
                    if rule.times is not None and rule.fired >= rule.times:
                        self._rules.remove(rule)
                    return rule
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [r.as_dict() for r in self._rules]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)


def _mangle_vectors(fault: Fault, vectors: list[np.ndarray], words: list[list[str]], seed: str) -> list[np.ndarray]:
    p, kind = fault.params, fault.kind
    if kind == "wrong_dim":
        other = int(p.get("dim", max(1, len(vectors[0]) // 2)))
        return list(embed_word_lists(words, other, seed))
    if kind == "garbage":
        rng = np.random.default_rng(p.get("seed"))
        return [_unit(rng.standard_normal(len(v))) for v in vectors]
    if kind == "misorder":
        return vectors[1:] + vectors[:1] if len(vectors) > 1 else vectors
    if kind in ("nan", "zero"):
        item = int(p.get("item", 0)) % len(vectors)
        vectors = [v.copy() for v in vectors]
        if kind == "zero":
            vectors[item][:] = 0.0
        else:
            vectors[item][0] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[p.get("value", "nan")]
    return vectors


def _mangle_items(fault: Fault, data: list[dict]) -> list[dict]:
    kind, p = fault.kind, fault.params
    if kind == "too_few":
        del data[int(p.get("item", -1)) % len(data)]
    elif kind == "dup_index":
        if len(data) == 1:
            data.append(dict(data[0]))
        else:
            data[-1]["index"] = data[0]["index"]
    elif kind == "shuffle" and len(data) > 1:
        order = list(range(len(data)))
        random.Random(p.get("seed")).shuffle(order)
        if order == sorted(order):  # must actually be out of order
            order = order[1:] + order[:1]
        data = [data[i] for i in order]
    return data


def _partial_response(stage: str) -> bytes:
    """The bytes a `reset` fault sends before the RST."""
    if stage == "headers":
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-le"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: 65536\r\n\r\n"
        b'{"id":"embd-0","object":"list","created":0,"model":"x","data":[{"index":0,'
    )
