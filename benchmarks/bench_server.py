"""The fake vLLM in benchmark mode, run as its own process.

``BenchVLLM`` is ``migrator.testing.FakeVLLM`` with three changes, all made
so that the server costs what a real vLLM costs and nothing else:

* **No stand-in model on the CPU.**  The fake's word-hashing embedder costs
  about 0.3 ms of CPU per 4096-dim vector; a real server computes embeddings
  on the accelerator, where the cost is already modelled by the shared token
  capacity.  Here each answer row is taken from a small pool of precomputed
  unit vectors (picked by a hash of the text), so the answer is still a valid,
  finite, unit vector of the right dimension.
* **What stays real** is what a real vLLM spends CPU on: parsing the request,
  tokenising (the fake's tokenizer), and serialising the answer.  Float JSON
  at 4096 dims (``list`` of floats through ``json.dumps``, as Starlette's
  ``JSONResponse`` does) costs several milliseconds per vector; base64 costs
  microseconds, and binary answers (``encoding_format: "bytes"``) less again.
  Those differences are measured, not modelled.
* **Counters for the benchmark** at ``GET /_bench/stats``: the process's own
  CPU time, the wall-clock time of the first embeddings request and of the
  last answer, and how often each distinct text was embedded (to count the
  texts re-embedded after a kill and resume).

Run::

    python benchmarks/bench_server.py --tokens-per-second 15900 \\
        --request-overhead 0.0207 --model Qwen/Qwen3-Embedding-8B --ready-file F

Without ``--tokens-per-second`` the server answers as fast as its CPU allows
(the "instant" server used to measure the client's own ceiling).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from migrator.testing.server import FakeVLLM, _json_reply, serve_until_signalled  # noqa: E402
from migrator.testing.server.vectors import embeddings_reply  # noqa: E402

POOL_SIZE = 64


def text_digest(words: list[str]) -> str:
    """Identity of a prompt as the server sees it (its words), 16 hex chars.

    The harness computes the same digest from a corpus text with
    ``migrator.testing.embedder.prompt_words(text)[0]``.
    """
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).hexdigest()


class BenchVLLM(FakeVLLM):
    """FakeVLLM whose only CPU work is HTTP, tokenising and serialisation."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rng = np.random.default_rng(12345)
        pool = rng.standard_normal((POOL_SIZE, self.dim))
        self._pool = (pool / np.linalg.norm(pool, axis=1, keepdims=True)).astype(np.float32)
        self._bench_lock = threading.Lock()
        self._seen: dict[str, int] = {}
        self._first_request: Optional[float] = None
        self._last_answer: Optional[float] = None
        self._routes["/_bench/stats"] = {"GET": self._bench_stats}

    # Stamp the arrival of every embeddings request.
    def _embeddings(self, body: bytes):
        now = time.time()
        with self._bench_lock:
            if self._first_request is None:
                self._first_request = now
        return super()._embeddings(body)

    def _answer(self, prepared, fmt, dims, tokens, fault):
        digests = [text_digest(p.words) for p in prepared]
        with self._bench_lock:
            for d in digests:
                self._seen[d] = self._seen.get(d, 0) + 1
        if fault is not None:  # faults keep the original behaviour (not used by the benchmark)
            reply = super()._answer(prepared, fmt, dims, tokens, fault)
        else:
            reply = self._fast_answer(prepared, fmt, dims, tokens, digests)
        with self._bench_lock:
            self._last_answer = time.time()
        return reply

    def _fast_answer(self, prepared, wire, dims, tokens, digests):
        rows = [self._row(d) for d in digests]
        if dims is not None:
            rows = [r[:dims] / np.linalg.norm(r[:dims]) for r in rows]
        self.stats.answered(len(prepared), tokens)
        return embeddings_reply(rows, wire, self.model, tokens)

    def _row(self, digest: str) -> np.ndarray:
        """A unit vector unique to the text: a pool row with the text's 8 digest
        bytes added to its first 8 values (DVD derives record ids from the md5
        of each vector, so two texts must never share one)."""
        raw = bytes.fromhex(digest)
        row = self._pool[int.from_bytes(raw, "little") % POOL_SIZE].copy()
        row[:8] += np.frombuffer(raw, dtype=np.uint8) / 255.0
        return row / np.linalg.norm(row)

    def _bench_stats(self, body: bytes):
        t = os.times()
        with self._bench_lock:
            repeats = {d: c for d, c in self._seen.items() if c > 1}
            out = {
                "cpu_s": t.user + t.system,
                "first_request": self._first_request,
                "last_answer": self._last_answer,
                "texts_answered": sum(self._seen.values()),
                "texts_unique": len(self._seen),
                "repeats": repeats,
            }
        out["server"] = self.stats.snapshot()
        out["server"].pop("batch_sizes", None)
        sizes = list(self.stats.batch_sizes)
        out["server"]["requests_with_input"] = len(sizes)
        out["server"]["mean_batch"] = (sum(sizes) / len(sizes)) if sizes else 0.0
        return _json_reply(200, out)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="bench_server.py", description="fake vLLM in benchmark mode (see module docstring)"
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--model", default="Qwen/Qwen3-Embedding-8B")
    ap.add_argument("--tokens-per-second", type=float, default=None)
    ap.add_argument("--request-overhead", type=float, default=0.0, metavar="SECONDS")
    ap.add_argument("--ready-file", required=True)
    ap.add_argument(
        "--vllm-version", default=None, help="the version /version reports (0.11.0: no binary answers, base64)"
    )
    args = ap.parse_args(argv)
    srv = BenchVLLM(
        model=args.model,
        host=args.host,
        port=args.port,
        tokens_per_second=args.tokens_per_second,
        request_overhead_s=args.request_overhead,
        **({"version": args.vllm_version} if args.vllm_version else {}),
    )
    return serve_until_signalled(srv, args.ready_file, "benchmark vLLM stand-in")


if __name__ == "__main__":
    sys.exit(main())
