"""Finding and sizing up databases: a large tree, walked and examined by a pool of
processes, gives exactly what one process finds, in os.walk's order."""

from __future__ import annotations

import fnmatch
import os
import random

import pytest

from migrator import apps, config
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
    found = scan.scan(roots, config.DEFAULT_PATTERN, 16, spec=apps.Spec(), target_model="m")
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
    expected = _walk_order(roots, scan.patterns(config.DEFAULT_PATTERN))
    assert [d["path"] for d in alone] == expected
    assert len(expected) == 60 + 2  # 60 videos, LightRAG's file, the symlinked file
    by_path = {d["path"]: d for d in pooled}
    assert by_path[str(tree / "v001" / "database.json")]["status"] == scan.BAD
    assert "symlink" in by_path[str(tree / "v004" / "vdb_link.json")]["reason"]
    assert not any("zz_linked_dir" in p or ".staged" in p for p in by_path)
    assert sum(d["status"] == scan.MIGRATE for d in pooled) == 59


def test_discover_is_the_walk_order(tree):
    globs = scan.patterns(config.DEFAULT_PATTERN)
    assert [str(p) for p in scan.discover([tree], config.DEFAULT_PATTERN)] == _walk_order([str(tree)], globs)


def test_the_frontier_opens_directories_in_order_until_there_are_enough(tree):
    match = scan._matcher(config.DEFAULT_PATTERN)
    top = [(True, str(tree))]
    for enough in (1, 8, 1000):
        items = list(scan._items(scan._frontier(top, match, enough)))
        assert [p for item in items for p in scan._walk(item, match)] == list(scan._walk(top[0], match))
    assert list(scan._items(scan._frontier(top, match, 1))) == top
    assert sum(d for d, _ in scan._items(scan._frontier(top, match, 8))) >= 8
    # the files of the root, and a root that is a file, stay where they are
    files = [(False, str(tree / "v001" / "database.json")), *top]
    items = list(scan._items(scan._frontier(files, match, 1000)))
    assert items[0] == files[0] and [p for it in items for p in scan._walk(it, match)][1:] == list(
        scan._walk(top[0], match)
    )


@pytest.mark.parametrize(
    "roots, overlapping",
    [
        ([(True, "/a"), (True, "/a/b")], True),  # one inside another
        ([(True, "/a/b"), (True, "/a")], True),  # ... in either order
        ([(True, "/a"), (True, "/a")], True),  # the same twice
        ([(False, "/a/v/database.json"), (True, "/a")], True),  # a file of a directory root
        ([(True, "/a"), (True, "/ab")], False),  # a shared prefix is not a parent
        ([(True, "/a/b"), (True, "/a/c"), (False, "/d.json")], False),
        ([(True, "/")], False),
        ([(True, "/"), (True, "/x")], True),
    ],
)
def test_roots_overlap_only_when_one_holds_another(roots, overlapping):
    assert scan._overlapping(roots) is overlapping


def test_without_overlapping_roots_the_scan_keeps_no_set_of_paths(tree, monkeypatch):
    """Each file is found once by the walk itself: nothing grows with the tree (a set of
    every path is only built for roots that overlap, or for followed symlinks)."""
    made = []

    class Counting(set):
        def __init__(self, *a):
            super().__init__(*a)
            made.append(self)

    monkeypatch.setattr(scan, "set", Counting, raising=False)
    found = list(scan.scan([tree], "database.json,vdb_*.json", None))
    assert found and sum(len(s) for s in made) == 0
    again = list(scan.scan([tree, tree / "more"], "database.json,vdb_*.json", None))
    assert [f.path for f in again] == [f.path for f in found]  # overlapping: each once still
    assert sum(len(s) for s in made) >= len(found)


def test_a_spooled_scan_gives_back_every_database_in_order(tree):
    found = list(scan.scan([tree], "database.json,vdb_*.json", 16))
    assert {f.status for f in found} == {scan.MIGRATE, scan.BAD}
    many = found * 40  # more than a batch
    spooled = scan.Scanned()
    try:
        for f in many:
            spooled.add(f)
        assert spooled.count == len(many) > scan.Scanned.BATCH
        assert len(spooled._batch) < scan.Scanned.BATCH  # memory holds less than a batch of them
        assert [f.path for f in spooled] == [f.path for f in many]
        assert [f.path for f in spooled] == [f.path for f in many]  # read again, the same
        assert spooled.todo == sum(f.status == scan.MIGRATE for f in many)
        assert [f.path for f in spooled.bad] == [f.path for f in many if f.status == scan.BAD]
        assert spooled.records == sum(f.records for f in many if f.status == scan.MIGRATE)
    finally:
        spooled.close()
