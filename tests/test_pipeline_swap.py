"""Cutover proves a file unchanged by its stat (size, mtime, ctime, inode) where it can, and
hashes it where it cannot: never trusting a stat that a write could share."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import pytest

from migrator.files import durable

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
