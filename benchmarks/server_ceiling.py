"""How fast can the benchmark's instant server answer at all? Requests only: no files, no job table.

The client ceiling (``bench.sh --measure ceiling``) is a whole ``migrate run``
against ``bench_server.py`` with no capacity limit. That server is one Python
process on the same two cores, so it has a ceiling of its own. This sends the
texts of a corpus through migrator's own endpoint client (``Endpoint.embed``:
binary answers, unit rows) in requests of ``--batch`` texts, ``--concurrency``
at once, and reports records/s and the client's CPU: what a run could reach if
everything but the requests cost nothing.

    .venv/bin/python benchmarks/server_ceiling.py [--corpus DIR] [--dim 1024] [--batch 128] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import Server  # noqa: E402
from benchmarks.run import MODELS  # noqa: E402
from migrator import apps  # noqa: E402
from migrator.files import nvdb  # noqa: E402
from migrator.vllm.endpoint import Endpoint  # noqa: E402

DEFAULT_CORPUS = Path("/tmp/migrator-bench/corpora/dvd-long-50db-s2-v2/video_database")


def corpus_texts(root: Path) -> list[str]:
    texts: list[str] = []
    for p in sorted(root.glob("*/database.json")):
        nf = nvdb.read(p)
        texts += apps.choose(nf).texts(nf)
    return texts


async def _send_all(url: str, model: str, dim: int, texts: list[str], batch: int, concurrency: int) -> dict:
    ep = Endpoint(url, None)
    try:
        await ep.probe(model, target_dim=dim)
        room = asyncio.Semaphore(concurrency)

        async def one(chunk: list[str]) -> None:
            async with room:
                await ep.embed(chunk)

        chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(c) for c in chunks))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await ep.aclose()
    return {
        "records": len(texts),
        "wall_s": round(wall, 3),
        "records_per_s": round(len(texts) / wall),
        "client_cpu": round(cpu / wall, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="a video_database tree (default: the ceiling's)"
    )
    ap.add_argument("--dim", type=int, default=1024, choices=sorted(MODELS))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    if not args.corpus.is_dir():
        sys.exit(
            f"{args.corpus}: no such corpus; run `scripts/bench.sh --shape long --measure ceiling` once to build it"
        )
    texts = corpus_texts(args.corpus)
    _, model = MODELS[args.dim]
    with (
        tempfile.TemporaryDirectory() as work,
        Server(Path(work), model=model, tokens_per_second=None, overhead_s=0.0) as srv,
    ):
        r = asyncio.run(_send_all(srv.base_url, model, args.dim, texts, args.batch, args.concurrency))
    print(
        f"instant server, {args.dim} dims, {args.batch} texts a request, {args.concurrency} in flight: "
        f"{r['records_per_s']:,} records/s ({r['records']:,} in {r['wall_s']} s), client CPU {r['client_cpu']:.0%}"
    )


if __name__ == "__main__":
    main()
