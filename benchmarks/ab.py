"""Two (or more) ways of running ``migrate run`` on the ceiling's corpus, alternating, in one run.

This machine's speed drifts by 15-20% from one minute to the next, so a change
is judged by variants run in turn, pair after pair, each over a fresh
hard-linked copy of the corpus against a fresh instant server. Each variant is
``LABEL[@REPO]:ARGS``: extra ``migrate run`` arguments, and optionally another
checkout to run (a ``git worktree`` of an older commit, first on PYTHONPATH).

    .venv/bin/python benchmarks/ab.py --dim 1024 --pairs 3 "b32:--batch-size 32" "b128:--batch-size 128"
    .venv/bin/python benchmarks/ab.py "old@/tmp/old-wt:" "new:"

Prints records/s and client CPU (its children included) per run, then each
variant's median and its ratio to the first variant's median.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import corpus as corp  # noqa: E402
from benchmarks.procs import PY, REPO, Server  # noqa: E402
from benchmarks.run import MODELS  # noqa: E402

DEFAULT_CORPUS = Path("/tmp/migrator-bench/corpora/dvd-long-50db-s2-v2")


def parse_variant(text: str) -> tuple[str, Path, list[str]]:
    head, _, args = text.partition(":")
    label, _, repo = head.partition("@")
    return label, Path(repo) if repo else REPO, shlex.split(args)


def one(corpus: Path, records: int, work: Path, dim: int, repo: Path, extra: list[str]) -> dict:
    run_dir = work / "ab"
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    corp.link_copy(corpus / "video_database", root)
    short, model = MODELS[dim]
    with Server(run_dir, model=model, tokens_per_second=None, overhead_s=0.0) as srv:
        cmd = [PY, "-m", "migrator.cli", "run", "--root", str(root), "--model", short, "--endpoint", srv.base_url]
        cmd += ["--state-dir", str(run_dir / "state"), "--yes", "--json", "--no-quality-gate", *extra]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p))
        t0, c0 = time.perf_counter(), os.times()
        p = subprocess.run(cmd, env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall, c1 = time.perf_counter() - t0, os.times()
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    corp.remove_tree(run_dir)
    if p.returncode:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr[-1500:]}")
    return {"records_per_s": round(records / wall), "client_cpu": round(cpu / wall, 3), "wall_s": round(wall, 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", help="LABEL[@REPO]:ARGS")
    ap.add_argument("--dim", type=int, default=1024, choices=sorted(MODELS))
    ap.add_argument("--pairs", type=int, default=3, help="rounds; each runs every variant once")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="a corpus dir with bench-manifest.json")
    ap.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "migrator-bench")
    ap.add_argument("--json", type=Path, help="also write every figure here")
    args = ap.parse_args()
    manifest = args.corpus / "bench-manifest.json"
    if not manifest.is_file():
        sys.exit(f"{manifest}: no corpus there; `scripts/bench.sh --shape long --measure ceiling` builds it")
    records = json.loads(manifest.read_text())["records"]
    variants = [parse_variant(v) for v in args.variants]
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in variants}
    for r in range(args.pairs):
        for label, repo, extra in variants:
            res = one(args.corpus, records, args.work_dir, args.dim, repo, extra)
            runs[label].append(res)
            print(
                f"round {r + 1} {label}: {res['records_per_s']:,} records/s, client CPU {res['client_cpu']:.0%}",
                flush=True,
            )
    base = statistics.median(x["records_per_s"] for x in runs[variants[0][0]])
    for label, _, _ in variants:
        med = statistics.median(x["records_per_s"] for x in runs[label])
        each = [x["records_per_s"] for x in runs[label]]
        print(f"{label}: median {med:,.0f} records/s ({med / base:.2f} x {variants[0][0]}), runs {each}")
    if args.json:
        args.json.write_text(json.dumps({"dim": args.dim, "records": records, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
