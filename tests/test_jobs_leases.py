"""Claiming databases costs the same at the end of a run as at its start: the work of a claim
does not grow with the databases already done (a run of a million is linear, not quadratic)."""

from __future__ import annotations

from sqlalchemy import update

from helpers import migration_row
from migrator.jobs import leases, queries
from migrator.jobs.models import D_EMBEDDING, D_PENDING, D_STAGED
from migrator.jobs.store import open_state

N = 4000


def _store_with_jobs(tmp_path):
    store = open_state(tmp_path / "state")
    assert store is not None
    with store.session() as s:
        s.add(migration_row("m1"))
    rows = [
        dict(
            migration_id="m1",
            path=f"/videos/{i:06d}/database.json",
            state=D_PENDING,
            source_size=1,
            source_mtime_ns=1,
            source_sha256="",
            source_dim=3072,
            n_records=2,
        )
        for i in range(N)
    ]
    with store.connection() as conn:
        queries.add_jobs(conn, rows, [])
    return store


def _vm_steps(store, fn) -> tuple[int, object]:
    """SQLite virtual-machine instructions spent in ``fn(conn)``: the work, not the time."""
    with store.connection() as conn:
        raw = conn.connection.driver_connection
        steps = [0]

        def tick() -> int:
            steps[0] += 1
            return 0

        raw.set_progress_handler(tick, 1)
        try:
            out = fn(conn)
        finally:
            raw.set_progress_handler(None, 1)
    return steps[0], out


def test_a_claim_costs_the_same_with_almost_every_database_done(tmp_path):
    store = _store_with_jobs(tmp_path)
    try:
        early, got = _vm_steps(store, lambda c: leases.claim(c, "m1", "w1", ttl=60))
        assert [j.path for j in got] == [f"/videos/{i:06d}/database.json" for i in range(4)]
        with store.connection() as conn:  # all but the last ten staged, one left mid-embedding
            conn.execute(update(queries.JOBS).where(queries.JOBS.c.id <= N - 10).values(state=D_STAGED))
            conn.execute(update(queries.JOBS).where(queries.JOBS.c.id == N - 5).values(state=D_EMBEDDING))
            conn.execute(update(queries.JOBS).values(lease_until=None))
        late, got = _vm_steps(store, lambda c: leases.claim(c, "m1", "w1", ttl=60))
        # the begun one first, then the oldest pending
        assert [j.id for j in got] == [N - 5, N - 9, N - 8, N - 7]
        # stepping past 3,990 done rows would cost tens of thousands of instructions
        assert late < 3 * early + 200, (early, late)
    finally:
        store.close()
