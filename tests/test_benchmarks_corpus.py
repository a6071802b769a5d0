"""The benchmark's corpus shapes (benchmarks/corpus.py): real trees, read back with the real nano-vectordb."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

import pytest
from nano_vectordb import NanoVectorDB

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import corpus as corp  # noqa: E402
from migrator.testing.corpus import TRANSCRIPT_LEAD  # noqa: E402

#: (shape, databases): a tiny tree of each, a few seconds to build in all
TINY = [("long", 2), ("medium", 3), ("short", 4), ("mixed", 3), ("talk", 2)]


def _quiet(*_args) -> None:
    pass


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench-work")
    return work, {shape: corp.ensure_corpus(work, n, seed=5, shape=shape, log=_quiet) for shape, n in TINY}


@pytest.mark.parametrize("shape,databases", TINY)
def test_each_database_has_a_record_count_in_its_shape_and_loads(trees, shape, databases):
    _work, mans = trees
    man = mans[shape]
    root = Path(man["root"])
    dirs = sorted(p for p in root.iterdir() if p.is_dir())
    assert len(dirs) == databases == man["databases"]
    assert man["shape"] == shape
    assert shape in man["key"]
    total = 0
    for d in dirs:
        kind, n = man["layout"][d.name]
        sub = corp.SHAPES[kind]
        assert (kind == shape) if shape != "mixed" else kind in ("long", "medium", "short")
        assert sub.lo <= n <= sub.hi, (d.name, kind, n)
        db = NanoVectorDB(corp.OLD_DIM, storage_file=str(d / "database.json"))
        assert len(db) == n
        extra = db.get_additional_data()
        assert extra["fps"] == 2 and extra["subject_registry"]
        captions = json.loads((d / "captions" / "captions.json").read_text())
        assert len(corp.clip_texts(captions)) == n  # one record per 10-second clip
        spoken = [c for _, _, c in corp.clip_texts(captions) if TRANSCRIPT_LEAD in c]
        assert len(spoken) == (n if sub.speech is not None else 0)  # DVD's transcripts only in talk
        assert f"{(n - 1) * corp.CLIP_SECS}_{n * corp.CLIP_SECS}" in captions
        total += n
    assert total == man["records"]
    lo, hi = corp.SHAPES[shape].lo, corp.SHAPES[shape].hi
    assert lo <= man["records_per_db"]["min"] <= man["records_per_db"]["max"] <= hi


def test_mixed_takes_a_third_of_its_databases_from_each_shape(trees):
    _work, mans = trees
    assert mans["mixed"]["databases_by_shape"] == {"long": 1, "medium": 1, "short": 1}
    kinds = [corp.shape_layout("mixed", 30, random.Random(s)) for s in range(3)]
    for layout in kinds:
        assert sorted(k for k, _ in layout).count("long") == 10
        assert {k for k, _ in layout} == {"long", "medium", "short"}


def test_a_cached_tree_is_reused_and_the_key_names_the_shape(trees):
    work, mans = trees
    again = corp.ensure_corpus(work, 2, seed=5, shape="long", log=_quiet)
    assert again["key"] == mans["long"]["key"] == "dvd-long-2db-s5-v2"
    assert again["build_seconds"] == mans["long"]["build_seconds"]  # from the manifest, not rebuilt
    # the default shape keeps the key corpora had before shapes, so those caches still count
    assert corp.corpus_key(8, 120, 0) == "dvd-8db-120rec-s0-v2"
    assert corp.corpus_key(8, None, 0, "short") == "dvd-short-8db-s0-v2"


def test_flat_is_the_default_and_unchanged(tmp_path):
    man = corp.ensure_corpus(tmp_path, 3, 30, seed=0, log=_quiet)
    assert man["shape"] == "flat" and man["key"] == "dvd-3db-30rec-s0-v2"
    assert man["records"] == 30
    counts = corp.split_records(30, 3, random.Random(0))
    assert [man["layout"][vid][1] for vid in man["layout"]] == counts
    for d in Path(man["root"]).iterdir():
        assert len(NanoVectorDB(corp.OLD_DIM, storage_file=str(d / "database.json"))) == man["layout"][d.name][1]


@pytest.mark.parametrize("shape", ["long", "medium", "short"])
def test_draws_stay_in_range_and_near_the_benchmark_mean(shape):
    sh = corp.SHAPES[shape]
    rng = random.Random(1)
    draws = [sh.draw(rng) for _ in range(5000)]
    assert sh.lo <= min(draws) and max(draws) <= sh.hi
    mean = sum(draws) / len(draws)
    want = {"long": 405, "medium": 150, "short": 18}[shape]  # LVBench 68 min, Video-MME 4-60 min, EgoSchema 3 min
    assert abs(mean - want) / want < 0.05


def test_records_give_the_number_of_databases_for_a_shape(tmp_path):
    assert corp.databases_for("long", 4000) == 10
    assert corp.databases_for("short", 4000) == 222
    assert corp.databases_for("long", 10, minimum=3) == 3
    man = corp.ensure_corpus(tmp_path, None, 60, seed=2, shape="short", log=_quiet)
    assert man["databases"] == 3
    with pytest.raises(ValueError):
        corp.ensure_corpus(tmp_path, 2, seed=0, shape="no-such-shape", log=_quiet)


def test_run_py_sizes_shaped_corpora_from_records_or_databases():
    from benchmarks import run

    args = run.parse_args(["--shape", "long,short", "--records", "4000", "--measure", "goodput"])
    assert args.shapes == ["long", "short"]
    assert run.corpus_sizes(args, "long")["goodput"] == (10, None)
    assert run.corpus_sizes(args, "short")["goodput"] == (222, None)
    args = run.parse_args(["--shape", "flat,medium", "--databases", "7"])
    assert run.corpus_sizes(args, "medium")["goodput"] == (7, None)
    assert run.corpus_sizes(args, "flat")["goodput"] == (7, 4000)
    quick = run.parse_args(["--quick", "--shape", "mixed"])
    sizes = run.corpus_sizes(quick, "mixed")
    assert sizes["goodput"][0] >= 3 and sizes["large"][0] >= 2 * sizes["small"][0]
    with pytest.raises(SystemExit):
        run.parse_args(["--shape", "huge"])


def test_ab_and_server_ceiling_run_on_a_tiny_tree(trees):
    """benchmarks/ab.py and server_ceiling.py (session 11's tools) against the real bench server."""
    from benchmarks import ab, server_ceiling

    work, mans = trees
    man = mans["long"]
    corpus = Path(man["root"]).parent
    assert ab.parse_variant("b32@/tmp/old:--batch-size 32") == ("b32", Path("/tmp/old"), ["--batch-size", "32"])
    assert ab.parse_variant("new:") == ("new", ab.REPO, [])
    res = ab.one(corpus, man["records"], work / "ab", 1024, ab.REPO, ["--batch-size", "16"])
    assert res["records_per_s"] > 0 and res["client_cpu"] > 0
    texts = server_ceiling.corpus_texts(Path(man["root"]))
    assert len(texts) == man["records"]
    with server_ceiling.Server(
        work / "srv", model="Qwen/Qwen3-Embedding-0.6B", tokens_per_second=None, overhead_s=0.0
    ) as srv:
        r = asyncio.run(server_ceiling._send_all(srv.base_url, "Qwen/Qwen3-Embedding-0.6B", 1024, texts, 64, 4))
    assert r["records"] == len(texts) and r["records_per_s"] > 0
