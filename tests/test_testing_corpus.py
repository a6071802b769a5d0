"""DVD-shaped trees from migrator.testing.corpus, read back with the real nano-vectordb."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from nano_vectordb import NanoVectorDB

from migrator.testing.corpus import (
    NO_TRANSCRIPT,
    TRANSCRIPT_LEAD,
    build_dvd_database,
    build_dvd_tree,
    caption_text,
    dvd_time,
    dvd_vector,
    make_captions,
)
from migrator.testing.embedder import count_tokens, embed

REPO = Path(__file__).resolve().parents[1]
PREFIX = re.compile(r"\A\[From (\d{2}:\d{2}:\d+\.\d+) to (\d{2}:\d{2}:\d+\.\d+) seconds\]\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvd")
    return root, build_dvd_tree(root, 3, clips=(4, 8), seed=7)


def load_raw(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def bare_captions(video_dir):
    caps = load_raw(video_dir / "captions" / "captions.json")
    return caps, [(k, v["caption"]) for k, v in caps.items() if k != "subject_registry"]


def test_dvd_time_matches_dvds_format():
    assert dvd_time(0.0) == "00:00:0.0"
    assert dvd_time(70.0) == "00:01:10.0"
    assert dvd_time(3725.5) == "01:02:5.5"
    assert dvd_time(10) == "00:00:10.0"
    assert caption_text(0.0, 10.0, "x") == "[From 00:00:0.0 to 00:00:10.0 seconds]\nx"


def test_make_captions_shape_and_determinism():
    caps = make_captions(random.Random(5), 30)
    keys = list(caps)
    assert keys[-1] == "subject_registry" and len(keys) == 31
    assert keys[:3] == ["0_10", "10_20", "20_30"] and keys[29] == "290_300"
    registry = caps["subject_registry"]
    assert 2 <= len(registry) <= 4
    assert all({"name", "appearance", "identity", "first_seen"} <= set(s) for s in registry.values())
    for key in keys[:-1]:
        text = caps[key]["caption"]
        assert 50 <= count_tokens(text) <= 300, key
        assert text.endswith((".", '"')) and text[0].isupper()
    assert make_captions(random.Random(5), 30) == caps
    assert make_captions(random.Random(6), 30) != caps
    assert list(make_captions(random.Random(5), 3, clip_secs=30))[:3] == ["0_30", "30_60", "60_90"]


def test_captions_with_transcripts_end_as_dvds_full_mode_ends_them():
    caps = make_captions(random.Random(5), 400, speech=0.7)
    texts = [v["caption"] for k, v in caps.items() if k != "subject_registry"]
    assert all(TRANSCRIPT_LEAD in t and t.endswith(".") for t in texts)
    silent = [t for t in texts if t.endswith(TRANSCRIPT_LEAD + NO_TRANSCRIPT + ".")]
    spoken = [t for t in texts if t not in silent]
    assert 0.6 < len(spoken) / len(texts) < 0.8
    said = [count_tokens(t.split(TRANSCRIPT_LEAD, 1)[1]) for t in spoken]
    assert 20 <= min(said) and max(said) <= 480 and sum(said) / len(said) > 90
    assert max(count_tokens(t) for t in texts) > 500  # the long transcript-bearing ones
    assert make_captions(random.Random(5), 400, speech=0.7) == caps
    # the descriptions before the transcripts are the draws of plain captions' kind
    assert all(50 <= count_tokens(t.split(TRANSCRIPT_LEAD, 1)[0]) <= 300 for t in texts)


def test_tree_layout_and_ids(tree):
    root, paths = tree
    assert len(paths) == 3 and len({p.parent.name for p in paths}) == 3
    for path in paths:
        assert path.name == "database.json" and path.parent.parent == root
        assert (path.parent / "captions" / "captions.json").is_file()
        vid = path.parent.name
        assert re.fullmatch(r"vid_\d{4}|[A-Za-z0-9_][A-Za-z0-9_-]{10}", vid), vid


def test_database_loads_with_real_nano_vectordb(tree):
    _, paths = tree
    for path in paths:
        caps, bare = bare_captions(path.parent)
        db = NanoVectorDB(3072, storage_file=str(path))
        assert len(db) == len(bare)
        with pytest.raises(AssertionError, match="Embedding dim mismatch, expected: 4096, but loaded: 3072"):
            NanoVectorDB(4096, storage_file=str(path))


def test_records_have_dvd_prefix_fields_and_md5_ids(tree):
    _, paths = tree
    for path in paths:
        raw = load_raw(path)
        assert set(raw) == {"embedding_dim", "data", "matrix", "additional_data"}
        assert raw["embedding_dim"] == 3072
        caps, bare = bare_captions(path.parent)
        assert len(raw["data"]) == len(bare)
        matrix = np.frombuffer(base64.b64decode(raw["matrix"]), dtype=np.float32).reshape(-1, 3072)
        assert matrix.shape[0] == len(raw["data"])
        for row, record, (key, text) in zip(matrix, raw["data"], bare):
            assert set(record) == {"__id__", "time_start_secs", "time_end_secs", "caption"}
            start, end = map(float, key.split("_"))
            assert record["time_start_secs"] == start and type(record["time_start_secs"]) is float
            assert record["time_end_secs"] == end
            m = PREFIX.match(record["caption"])
            assert m and m.groups() == (dvd_time(start), dvd_time(end))
            assert record["caption"][m.end() :] == text
            # no __id__ given, so nano-vectordb used md5 of the vector DVD upserted
            old = dvd_vector(text)
            assert old.dtype == np.float64
            assert record["__id__"] == hashlib.md5(old.tobytes()).hexdigest()
            assert (
                record["__id__"]
                == hashlib.md5(
                    np.array(embed(text, 3072, seed="text-embedding-3-large").tolist()).tobytes()
                ).hexdigest()
            )
            np.testing.assert_allclose(row, old / np.linalg.norm(old), atol=1e-6)


def test_query_by_own_old_vector_returns_the_record(tree):
    _, paths = tree
    for path in paths:
        db = NanoVectorDB(3072, storage_file=str(path))
        _, bare = bare_captions(path.parent)
        for _key, text in bare:
            top = db.query(dvd_vector(text), top_k=2)
            assert top[0]["caption"].endswith("\n" + text)
            assert top[0]["__metrics__"] == pytest.approx(1.0, abs=1e-5)
            assert top[1]["__metrics__"] < 0.999


def test_additional_data_matches_dvd(tree):
    _, paths = tree
    for path in paths:
        caps, bare = bare_captions(path.parent)
        extra = NanoVectorDB(3072, storage_file=str(path)).get_additional_data()
        assert set(extra) == {"subject_registry", "video_length", "video_file_root", "fps"}
        assert extra["subject_registry"] == caps["subject_registry"]
        assert extra["video_length"] == dvd_time(max(float(k.split("_")[1]) for k, _ in bare))
        assert extra["video_file_root"] == str(path.parent) and Path(extra["video_file_root"]).is_absolute()
        assert extra["fps"] == 2


def test_empty_and_list_captions_follow_dvd(tmp_path):
    captions = {
        "0_10": {"caption": "A dog runs."},
        "10_20": {"caption": ""},
        "20_30": {"caption": ["First version.", "Second version."]},
        "30_40": {"caption": "The end."},
        "character_registry": {"subject_1": {"name": "dog"}},
    }
    path = build_dvd_database(tmp_path / "v1", captions)
    raw = load_raw(path)
    assert [r["caption"] for r in raw["data"]] == [
        "[From 00:00:0.0 to 00:00:10.0 seconds]\nA dog runs.",
        "[From 00:00:20.0 to 00:00:30.0 seconds]\nFirst version.",
        "[From 00:00:30.0 to 00:00:40.0 seconds]\nThe end.",
    ]
    assert raw["additional_data"]["video_length"] == "00:00:40.0"
    assert raw["additional_data"]["subject_registry"] == {"subject_1": {"name": "dog"}}
    with pytest.raises(FileExistsError):
        build_dvd_database(tmp_path / "v1", captions)
    build_dvd_database(tmp_path / "v1", captions, overwrite=True)
    assert len(NanoVectorDB(3072, storage_file=str(path))) == 3


def test_tree_is_deterministic(tmp_path):
    a = build_dvd_tree(tmp_path / "a", 2, clips=(2, 3), seed=11, dim=64)
    b = build_dvd_tree(tmp_path / "b", 2, clips=(2, 3), seed=11, dim=64)
    c = build_dvd_tree(tmp_path / "c", 2, clips=(2, 3), seed=12, dim=64)
    assert [p.parent.name for p in a] == [p.parent.name for p in b]
    assert [p.parent.name for p in a] != [p.parent.name for p in c]
    for pa, pb in zip(a, b):
        ra, rb = load_raw(pa), load_raw(pb)
        assert ra["data"] == rb["data"] and ra["matrix"] == rb["matrix"]
        assert ra["embedding_dim"] == 64


def test_cli_builds_a_tree_quietly(tmp_path):
    out = tmp_path / "tree"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "migrator.testing.corpus",
            "--out",
            str(out),
            "--videos",
            "2",
            "--seed",
            "3",
            "--dim",
            "128",
            "--min-clips",
            "2",
            "--max-clips",
            "3",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    paths = [Path(line) for line in proc.stdout.splitlines()]
    assert len(paths) == 2 and all(p.is_file() for p in paths)
    assert NanoVectorDB(128, storage_file=str(paths[0])).get_additional_data()["fps"] == 2
    assert "INFO" not in proc.stderr  # nano-vectordb's logging.basicConfig(INFO) is undone
