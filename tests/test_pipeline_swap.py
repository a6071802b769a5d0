"""Cutover proves a file unchanged by its stat (size, mtime, ctime, inode) where it can, and
hashes it where it cannot: never trusting a stat that a write could share."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migrator import apps
from migrator.errors import EXIT_PARTIAL
from migrator.files import durable
from migrator.jobs import queries
from migrator.jobs import store as store_module
from migrator.pipeline import swap
from migrator.testing.appstores import build_lightrag_workdir

IDENTITY = "source_ctime_ns, source_ino, staged_mtime_ns, staged_ctime_ns, staged_ino"


def _rows(state):
    with sqlite3.connect(state / "migrator.db") as db:
        return db.execute(f"select path, {IDENTITY} from databases order by id").fetchall()


@pytest.fixture
def hashed(monkeypatch):
    """The paths cutover reads whole to hash them (durable's hashing, counted as it runs)."""
    seen: list[str] = []
    real = durable.sha256_if_exists

    def counting(path):
        seen.append(str(path))
        return real(path)

    monkeypatch.setattr(durable, "sha256_if_exists", counting)
    return seen


@pytest.fixture
def settled_at_once(monkeypatch):
    """Files count as settled however recently they were written (the trees are built a moment
    before the run; in the field they are hours old)."""
    monkeypatch.setattr(durable, "SETTLED_NS", -(10**12))


def _stage(cli, root):
    r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == 0, r.output


def test_cutover_hashes_nothing_it_can_prove_unchanged(cli, dvd_tree, tmp_path, hashed, settled_at_once):
    root, paths = dvd_tree
    _stage(cli, root)
    assert all(None not in row[1:] for row in _rows(tmp_path / "state"))  # every identity recorded
    hashed.clear()
    r = cli("cutover", "--yes", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["outcome"] == "done"
    assert hashed == []  # neither the gate nor the swap read a live or staged file again
    assert len(list(root.rglob("*.backup"))) == len(paths)


def test_a_rewrite_that_keeps_size_and_mtime_is_still_caught(cli, dvd_tree, tmp_path, hashed, settled_at_once):
    """ctime is what no writer can put back: same bytes count, mtime reset, still seen."""
    root, paths = dvd_tree
    _stage(cli, root)
    victim = paths[0]
    st = victim.stat()
    raw = bytearray(victim.read_bytes())
    i = raw.index(b'"__id__"') + 10
    raw[i] = ord("x") if raw[i] != ord("x") else ord("y")  # same size, other content
    victim.write_bytes(bytes(raw))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    hashed.clear()
    r = cli("cutover", "--yes", "--json")
    out = json.loads(r.stdout)["cutover"]
    assert str(victim) in out["restage"], r.output
    assert victim.read_bytes() == bytes(raw)  # not overwritten
    # only the database whose stat differs was read again (by the gate, then by the swap)
    assert str(victim) in hashed and {h.split(".json")[0] for h in hashed} == {str(victim)[: -len(".json")]}


def test_an_altered_staged_file_is_caught_though_its_size_and_mtime_are_kept(
    cli, dvd_tree, tmp_path, hashed, settled_at_once
):
    root, paths = dvd_tree
    _stage(cli, root)
    staged = next(root.rglob("*.staged"))
    st = staged.stat()
    raw = bytearray(staged.read_bytes())
    raw[-3] = ord(" ") if raw[-3] != ord(" ") else ord("\n")
    staged.write_bytes(bytes(raw))
    os.utime(staged, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("cutover", "--yes", "--json")
    out = json.loads(r.stdout)["cutover"]
    assert len(out["restage"]) == 1 and out["restage"][0] in {str(p) for p in paths}, r.output
    assert str(staged) in hashed
    assert not staged.exists()  # dropped, to be staged again


def test_a_file_changed_just_before_it_was_read_is_hashed_at_cutover(cli, dvd_tree, tmp_path, hashed):
    """Its stat may be shared by a write in the same clock tick: no identity is kept for it."""
    root, paths = dvd_tree
    assert time.time_ns() - paths[0].stat().st_ctime_ns < durable.SETTLED_NS  # just built
    _stage(cli, root)
    rows = _rows(tmp_path / "state")
    assert all(r[1] is None and r[2] is None for r in rows)  # source: not settled, not recorded
    assert all(None not in r[3:] for r in rows)  # staged: ours, recorded
    hashed.clear()
    r = cli("cutover", "--yes", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["outcome"] == "done", r.output
    assert {str(p) for p in paths} <= set(hashed)  # every live file read again, as before 0004


# ------------------------------------------------------- a page of the job table at a time
_names = st.sampled_from(["a", "b", "v", "vdb_x", "v-1", "v.2", "z"])
_file = st.tuples(
    st.lists(_names, min_size=0, max_size=3),  # directories
    st.sampled_from(["database.json", "vdb_entities.json", "vdb_chunks.json", "vdb_other.json"]),
    st.sampled_from(["dvd", "lightrag", "nano-graphrag", None]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_file, min_size=0, max_size=40))
def test_units_gathered_in_path_order_are_the_units_of_the_whole_table(files):
    """Read in path order, each unit (a file, or an application's working dir) comes out
    once and whole, while only the directories the current row is in stay open."""
    rows, seen = [], set()
    for dirs, name, profile in files:
        path = os.sep + os.path.join("t", *dirs, name)
        if path not in seen:
            seen.add(path)
            rows.append(SimpleNamespace(path=path, profile=profile if name != "database.json" else "dvd"))
    rows.sort(key=lambda r: r.path.encode())  # as the job table orders them (bytes)
    whole_table: dict[str, list] = {}  # the units of every row at once: the oracle
    for r in rows:
        whole_table.setdefault(apps.unit_of(r.profile, r.path), []).append(r)
    want = {unit: sorted(r.path for r in members) for unit, members in whole_table.items()}
    consumed = 0

    def reading():
        nonlocal consumed
        for r in rows:
            consumed += 1
            yield r

    got = []
    for unit, members in swap._whole_units(reading()):
        got.append((unit, members))
        if members[0].path != unit:  # a directory: given out as soon as the rows leave it
            last = max(i for i, r in enumerate(rows) if r in members)
            left = next((i for i in range(last + 1, len(rows)) if not rows[i].path.startswith(unit + os.sep)), None)
            assert consumed <= (len(rows) if left is None else left + 1), unit
    assert len(got) == len(want)  # each unit once
    assert {unit: sorted(r.path for r in members) for unit, members in got} == want


@pytest.mark.parametrize("page", [1, 2, 5])
def test_a_cutover_read_a_few_rows_at_a_time_still_moves_each_working_dir_whole(
    cli, tmp_path, dvd_tree, monkeypatch, page
):
    """Pages smaller than a working dir: its files arrive on different pages, and it is still
    held back whole for one broken file, or swapped whole; the DVD videos go in around it."""
    monkeypatch.setattr(store_module, "JOB_PAGE", page)
    monkeypatch.setattr(swap, "RECORD_EVERY", 2)
    good = build_lightrag_workdir(tmp_path / "rag" / "good", n_docs=2)
    held = build_lightrag_workdir(tmp_path / "rag" / "held", n_docs=2)
    broken = held.files["relationships"]
    doc = json.loads(broken.read_text())
    doc["data"][0]["content"] = None  # a record with nothing to embed
    broken.write_text(json.dumps(doc), encoding="utf-8")
    root, dvd_paths = dvd_tree
    r = cli("run", "--root", str(tmp_path / "rag"), "--root", str(root), "--model", "8b", "--yes", "--no-cutover")
    assert r.exit_code == EXIT_PARTIAL, r.output
    pages: list[int] = []
    real = queries.job_page

    def counted(*a, **kw):
        out = real(*a, **kw)
        pages.append(len(out))
        return out

    monkeypatch.setattr(queries, "job_page", counted)
    r = cli("cutover", "--yes", "--json")
    doc = json.loads(r.stdout)
    assert max(pages) <= page  # never more than a page of rows at once
    assert doc["cutover"]["done"] == len(good.files) + len(dvd_paths)
    assert sorted(ln.split(":")[0] for ln in doc["cutover"]["held"]) == sorted(
        str(p) for p in held.files.values() if p != broken
    )
    for p in good.files.values():
        assert json.loads(p.read_text())["embedding_dim"] == 4096
    for p in held.files.values():
        assert json.loads(p.read_text())["embedding_dim"] == 3072
    for p in dvd_paths:
        assert json.loads(p.read_text())["embedding_dim"] == 4096


@pytest.mark.parametrize("page", [1, 2, 5])
def test_a_rollback_read_a_few_rows_at_a_time_still_holds_each_working_dir_whole(
    cli, tmp_path, dvd_tree, monkeypatch, page
):
    """Rollback reads the job table a page at a time too (its memory flat in the number of
    databases): a working dir with a file that cannot be restored stays whole at the new
    dimension though its files come on different pages, and every other file is restored."""
    monkeypatch.setattr(store_module, "JOB_PAGE", page)
    monkeypatch.setattr(swap, "RECORD_EVERY", 2)
    good = build_lightrag_workdir(tmp_path / "rag" / "good", n_docs=2)
    kept = build_lightrag_workdir(tmp_path / "rag" / "kept", n_docs=2)
    root, dvd_paths = dvd_tree
    originals = {p: p.read_bytes() for p in [*good.files.values(), *dvd_paths]}
    r = cli("run", "--root", str(tmp_path / "rag"), "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    lost = kept.files["chunks"]
    next(lost.parent.glob("vdb_chunks.json.migrator-*.backup")).unlink()  # it cannot be restored
    pages: list[int] = []  # the rows of each read of the job table's databases
    for name in ("job_page", "job_rows"):
        real = getattr(queries, name)

        def counted(*a, _real=real, **kw):
            out = _real(*a, **kw)
            pages.append(len(out))
            return out

        monkeypatch.setattr(queries, name, counted)
    r = cli("rollback", "--yes", "--json")
    assert r.exit_code == EXIT_PARTIAL, r.output
    doc = json.loads(r.stdout)
    assert pages and max(pages) <= page  # never more than a page of rows at once
    assert doc["done"] == len(originals)
    assert [ln.split(":")[0] for ln in doc["refused"] if "is gone" in ln] == [str(lost)]
    not_restored = sorted(ln.split(":")[0] for ln in doc["refused"] if "not restored" in ln)
    assert not_restored == sorted(str(p) for p in kept.files.values() if p != lost)
    for p, data in originals.items():
        assert p.read_bytes() == data, p
    for p in kept.files.values():  # the held dir: every file still at the new dimension
        assert json.loads(p.read_text())["embedding_dim"] == 4096
