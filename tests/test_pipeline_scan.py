"""Finding and sizing up databases: a large tree, walked and examined by a pool of
processes, gives exactly what one process finds, in os.walk's order."""

from __future__ import annotations

import fnmatch
import os
import random

import pytest

from migrator import apps
from migrator.files.layout import is_own_file
from migrator.pipeline import scan
from migrator.testing.corpus import build_dvd_database, make_captions


def _walk_order(roots, globs) -> list[str]:
    """What os.walk (sorted, no symlinked directories entered) finds, each path once."""
    out: list[str] = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if any(fnmatch.fnmatchcase(name, g) for g in globs) and not is_own_file(name):
                    p = os.path.abspath(os.path.join(dirpath, name))
                    if p not in out:
                        out.append(p)
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """60 DVD videos, some two levels down, with the odd ones out a real tree has."""
    root = tmp_path_factory.mktemp("scan") / "video_database"
    for i in range(60):
        where = root / f"v{i:03d}" if i % 3 else root / "more" / f"v{i:03d}"
        build_dvd_database(where, make_captions(random.Random(i), 2), dim=8)
    (root / "v001" / "database.json").write_bytes(b'{"embedding_dim": 8, "data": [')  # damaged
    os.symlink(root / "v002" / "database.json", root / "v004" / "vdb_link.json")  # a symlinked file
    os.symlink(root / "v005", root / "zz_linked_dir")  # a symlinked directory: not entered
    (root / "v007" / "database.json.migrator-20260101-000000-abcd.staged").write_text("{}")  # ours
    (root / "v008" / "notes.json").write_text("{}")  # no pattern matches it
    (root / "rag").mkdir()
    (root / "rag" / "vdb_chunks.json").write_text('{"embedding_dim": 8, "data": [], "matrix": ""}')
    return root


def _scan(roots, monkeypatch, pool_dirs: int) -> list[dict]:
    monkeypatch.setattr(scan, "POOL_DIRS", pool_dirs)
    monkeypatch.setattr(scan, "POOL_CHUNK", 5)  # many tasks, so their order is tested too
    monkeypatch.setattr(scan, "_processes", lambda: 2)
    found = scan.scan(roots, scan.DEFAULT_PATTERN, 16, spec=apps.Spec(), target_model="m")
    return [f.as_dict() for f in found]


@pytest.mark.parametrize("overlap", [False, True], ids=["one-root", "overlapping-roots"])
def test_a_pool_finds_what_one_process_finds(tree, monkeypatch, overlap):
    roots = [str(tree), str(tree / "more")] if overlap else [str(tree)]
    alone = _scan(roots, monkeypatch, pool_dirs=10**9)

    def not_here(*a, **kw):
        raise AssertionError("examined in this process, not by the pool")

    monkeypatch.setattr(scan, "examine", not_here)  # the pool's processes import their own
    pooled = _scan(roots, monkeypatch, pool_dirs=8)
    assert pooled == alone
    expected = _walk_order(roots, scan.patterns(scan.DEFAULT_PATTERN))
    assert [d["path"] for d in alone] == expected
    assert len(expected) == 60 + 2  # 60 videos, LightRAG's file, the symlinked file
    by_path = {d["path"]: d for d in pooled}
    assert by_path[str(tree / "v001" / "database.json")]["status"] == scan.BAD
    assert "symlink" in by_path[str(tree / "v004" / "vdb_link.json")]["reason"]
    assert not any("zz_linked_dir" in p or ".staged" in p for p in by_path)
    assert sum(d["status"] == scan.MIGRATE for d in pooled) == 59


def test_discover_is_the_walk_order(tree):
    globs = scan.patterns(scan.DEFAULT_PATTERN)
    assert [str(p) for p in scan.discover([tree], scan.DEFAULT_PATTERN)] == _walk_order([str(tree)], globs)


def test_the_frontier_opens_directories_in_order_until_there_are_enough(tree):
    match = scan._matcher(scan.DEFAULT_PATTERN)
    top = [(True, str(tree))]
    for enough in (1, 8, 1000):
        items = scan._frontier(top, match, enough)
        assert [p for item in items for p in scan._walk(item, match)] == list(scan._walk(top[0], match))
    assert scan._frontier(top, match, 1) == top
    assert sum(d for d, _ in scan._frontier(top, match, 8)) >= 8
