"""Staging's read of a large database's committed vectors (pipeline/stage.py)."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, update

from helpers import add_migration_with_jobs
from migrator.jobs import queries
from migrator.jobs.journal import Journal
from migrator.jobs.models import DatabaseJob, Migration
from migrator.jobs.store import open_state
from migrator.pipeline import stage
from migrator.pipeline.stage import Stager, _Untiled


def _store_with_batches(tmp_path, n: int, batch: int, dim: int, skip: int | None = None):
    store = open_state(tmp_path / "state")
    add_migration_with_jobs(store, "m1", ["/videos/a/database.json"])
    with store.session() as s:
        job_id = s.execute(select(DatabaseJob.id)).scalar_one()
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((n, dim)).astype("<f4")
    rows = [
        dict(database_id=job_id, start=i, count=min(batch, n - i), dim=dim, vectors=vectors[i : i + batch].tobytes())
        for i in range(0, n, batch)
        if i != skip
    ]
    with store.engine.begin() as conn:
        queries.add_batches(conn, rows)
    with store.session() as s:
        mig = s.get(Migration, "m1")
    return store, mig, job_id, vectors


def test_committed_vectors_come_back_in_order_a_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(stage, "PAGE_BYTES", 64 * 16 * 4 * 3)  # 3 batches of 16 rows a page
    store, mig, job_id, vectors = _store_with_batches(tmp_path, 200, 16, 64)
    st = Stager(store, mig, Journal(store), fail=lambda *a: None)
    try:
        blocks = list(st._vector_blocks(job_id, 200, 64))
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
            list(st._vector_blocks(job_id, 200, 64))
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
        blocks = st._vector_blocks(job_id, 160, 64)
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
