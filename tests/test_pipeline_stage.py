"""Staging's read of a large database's committed vectors (pipeline/stage.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sqlalchemy import select, update

from helpers import add_migration_with_jobs
from migrator.files import spool
from migrator.jobs import queries
from migrator.jobs.journal import Journal
from migrator.jobs.models import DatabaseJob, Migration
from migrator.jobs.store import open_state
from migrator.pipeline import stage
from migrator.pipeline.stage import Stager, _Untiled


def _store_with_batches(tmp_path, n: int, batch: int, dim: int, skip: int | None = None, spooled: bool = False):
    """Committed batches of one database: in its spool (as a run writes them now), or as
    blobs in their rows (as runs before revision 0005 did)."""
    store = open_state(tmp_path / "state")
    add_migration_with_jobs(store, "m1", ["/videos/a/database.json"])
    with store.session() as s:
        job_id = s.execute(select(DatabaseJob.id)).scalar_one()
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, dim)).astype("<f4")
    rows = []
    for i in range(0, n, batch):
        if i == skip:
            continue
        data = vectors[i : i + batch].tobytes()
        row = dict(database_id=job_id, start=i, count=min(batch, n - i), dim=dim, vectors=data)
        if spooled:
            offset, crc = spool.append(_spool(tmp_path), data)
            row.update(vectors=None, spool_offset=offset, crc32=crc)
        rows.append(row)
    with store.engine.begin() as conn:
        queries.add_batches(conn, rows)
    with store.session() as s:
        mig = s.get(Migration, "m1")
    return store, mig, job_id, vectors


def _spool(tmp_path):
    return tmp_path / "database.json.migrator-m1.spool"


def test_committed_vectors_come_back_in_order_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "PAGE_BYTES", 64 * 16 * 4 * 3)  # 3 batches of 16 rows a page
    store, mig, job_id, vectors = _store_with_batches(tmp_path, 200, 16, 64)
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        blocks = list(st._vector_blocks(job_id, _spool(tmp_path), 200, 64))
    finally:
        st.journal.close()
    assert [len(b) for b in blocks] == [16] * 12 + [8]
    assert np.array_equal(np.concatenate(blocks), vectors)


def test_a_gap_in_the_committed_batches_is_found(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "PAGE_BYTES", 64 * 16 * 4 * 3)
    store, mig, job_id, _ = _store_with_batches(tmp_path, 200, 16, 64, skip=96)  # rows 96-111 missing
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        with pytest.raises(_Untiled) as e:
            list(st._vector_blocks(job_id, _spool(tmp_path), 200, 64))
        assert e.value.row == 112  # the first batch past the gap
    finally:
        st.journal.close()


def test_reading_a_large_database_back_does_not_hold_off_the_runs_commits(tmp_path, monkeypatch):
    """With SQLite's rollback journal a reader holds off every writer. The vectors were
    read in one statement while the staged file was written: for a file of gigabytes
    every commit of the run waited, and after busy_timeout (30 s) the run failed with
    'database is locked'. Now each page is read in its own short transaction."""
    monkeypatch.setenv("MIGRATOR_DB_BUSY_TIMEOUT", "0.2")
    monkeypatch.setattr(stage, "PAGE_BYTES", 64 * 16 * 4 * 2)
    store, mig, job_id, _ = _store_with_batches(tmp_path, 160, 16, 64)
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        blocks = st._vector_blocks(job_id, _spool(tmp_path), 160, 64)
        next(blocks)  # suspended where the file's writer is busy writing this block
        writer = open_state(tmp_path / "state")  # another connection: the journal's, say
        try:
            with writer.engine.begin() as conn:  # raises "database is locked" while a read is open
                conn.execute(update(Migration).values(embed_seconds=Migration.embed_seconds + 1.0))
        finally:
            writer.engine.dispose()
        assert sum(len(b) for b in blocks) == 160 - 16
    finally:
        st.journal.close()


def test_spooled_vectors_come_back_from_the_spool_in_row_order(tmp_path):
    store, mig, job_id, vectors = _store_with_batches(tmp_path, 200, 16, 64, spooled=True)
    with store.engine.connect() as conn:  # the rows say where the vectors are; they hold none
        assert conn.execute(select(queries.BATCHES.c.vectors)).scalars().all() == [None] * 13
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        assert np.array_equal(np.concatenate(list(st._vector_blocks(job_id, _spool(tmp_path), 200, 64))), vectors)
    finally:
        st.journal.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "remove"])
def test_a_damaged_spool_is_found_at_the_first_batch_it_lost(tmp_path, damage):
    store, mig, job_id, _ = _store_with_batches(tmp_path, 200, 16, 64, spooled=True)
    path = _spool(tmp_path)
    at = 5 * 16 * 64 * 4 + 100  # inside the sixth batch: rows 80-95
    if damage == "flip":
        with open(path, "r+b") as f:
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0x01]))
    elif damage == "truncate":
        os.truncate(path, at)
    else:
        path.unlink()
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        with pytest.raises(_Untiled) as e:
            list(st._vector_blocks(job_id, path, 200, 64))
        assert e.value.row == (0 if damage == "remove" else 80)
    finally:
        st.journal.close()


def test_the_done_ranges_say_where_each_batch_ends_in_the_spool(tmp_path):
    store, _, job_id, _ = _store_with_batches(tmp_path, 40, 16, 8, spooled=True)
    with store.engine.connect() as conn:
        done = sorted(queries.done_ranges(conn, job_id))
    assert done == [(0, 16, 16 * 8 * 4), (16, 16, 32 * 8 * 4), (32, 8, 40 * 8 * 4)]
    assert spool.holds(_spool(tmp_path), 40 * 8 * 4) and not spool.holds(_spool(tmp_path), 40 * 8 * 4 + 1)
