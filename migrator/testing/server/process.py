"""The fake vLLM server as a process: ``python -m migrator.testing.server``, serving until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Optional

from migrator.testing.server.app import VLLM_VERSION, FakeVLLM

BANNER = "fake vLLM (migrator test server, not a real model)"


def serve_until_signalled(srv: "FakeVLLM", ready_file: Optional[str], banner: str) -> int:
    """Start ``srv``, announce it (stderr line, ready file), serve until SIGTERM/SIGINT, stop."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    srv.start()
    print(f"{banner} listening on {srv.base_url} model={srv.model} dim={srv.dim}", file=sys.stderr, flush=True)
    if ready_file:
        _write_ready_file(ready_file, srv.base_url)
    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


def _write_ready_file(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m migrator.testing.server",
        description=f"{BANNER}: serves vLLM's OpenAI-compatible embeddings API (/v1/embeddings, "
        f"/v1/models, /tokenize, /health, /metrics, /version) for tests, the demo and the "
        f"benchmarks. Its vectors come from a deterministic word-hashing stand-in, not a "
        f"model. Faults are queued with POST /_admin/faults.",
        epilog="example: KEY=secret python -m migrator.testing.server --port 8888 --api-key-env KEY "
        "--tokens-per-second 40000, then migrate run --endpoint http://127.0.0.1:8888/v1 with "
        "MIGRATOR_API_KEY=secret",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument(
        "--model", default="Qwen/Qwen3-Embedding-8B", help="the model it pretends to be (its vectors' seed and size)"
    )
    ap.add_argument(
        "--served-model-name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the names it serves the model under, like vLLM's flag (answers name the first)",
    )
    ap.add_argument(
        "--vllm-version",
        default=VLLM_VERSION,
        help=f"the vLLM version it behaves as (default {VLLM_VERSION}; the max-length hang "
        f"exists on 0.9.2 to 0.31 only)",
    )
    ap.add_argument("--dim", type=int, default=None, help="vector size (default: the model's, 4096 for an unknown one)")
    ap.add_argument("--max-model-len", type=int, default=8192, help="the context length it reports and enforces")
    ap.add_argument(
        "--error-shape",
        choices=("new", "old"),
        default="new",
        help="error bodies as vLLM >= 0.10.1 writes them ({error: {...}}) or older (flat)",
    )
    ap.add_argument(
        "--matryoshka",
        action="store_true",
        help="accept `dimensions` (as vLLM does only with is_matryoshka in the model config)",
    )
    ap.add_argument(
        "--accept-normalize", action="store_true", help="ignore `normalize` like older vLLM instead of rejecting it"
    )
    ap.add_argument("--seed", default=None, help="embedding seed (default: model name)")
    ap.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="a capacity shared by all requests, like a GPU's (default: as fast as it can)",
    )
    ap.add_argument(
        "--request-overhead", type=float, default=0.0, metavar="SECONDS", help="fixed time added to every request"
    )
    ap.add_argument(
        "--hang-blocks-others",
        action="store_true",
        help="a hung request stalls every later one too (worse than any vLLM)",
    )
    ap.add_argument("--no-hang-blocks-others", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--api-key-env", metavar="VAR", default=None, help="name of the environment variable holding the API key"
    )
    ap.add_argument("--ready-file", default=None, help="write the base URL here (atomically) once listening")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = _arg_parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: environment variable {args.api_key_env} is not set or empty", file=sys.stderr)
            return 2
    srv = FakeVLLM(
        model=args.model,
        dim=args.dim,
        max_model_len=args.max_model_len,
        api_key=api_key,
        error_shape=args.error_shape,
        matryoshka=args.matryoshka,
        reject_normalize=not args.accept_normalize,
        host=args.host,
        port=args.port,
        seed=args.seed,
        tokens_per_second=args.tokens_per_second,
        request_overhead_s=args.request_overhead,
        hang_blocks_others=args.hang_blocks_others,
        verbose=args.verbose,
        served_names=args.served_model_name,
        version=args.vllm_version,
    )
    return serve_until_signalled(srv, args.ready_file, BANNER)
