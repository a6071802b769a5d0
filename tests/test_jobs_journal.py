"""The journal's lock order: in every group commit the databases' rows first, the migration
row (the counters every worker bumps) last, whatever order the changes were submitted in.
Two workers taking the two in opposite orders deadlocked PostgreSQL (once in ~130 runs).
And its grouping: rows nobody waits for linger together; a change waited on does not wait."""

from __future__ import annotations

import time

from sqlalchemy import event, select, update

from helpers import add_migration_with_jobs
from migrator.jobs import journal as journal_module
from migrator.jobs.journal import Journal, defer
from migrator.jobs.models import DatabaseJob, Migration
from migrator.jobs.store import open_state

_jobs, _migs = DatabaseJob.__table__, Migration.__table__
COUNT = update(_migs).where(_migs.c.id == "m").values(records_embedded=_migs.c.records_embedded + 1)
TOUCH = update(_jobs).where(_jobs.c.id == 1).values(n_done=_jobs.c.n_done + 1)


def test_the_migration_row_is_taken_last_in_every_transaction(tmp_path):
    store = open_state(tmp_path / "state")
    seen: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def record(conn, cursor, statement, params, context, executemany):
        if statement.startswith(("UPDATE", "INSERT")):
            seen.append(statement.split()[1])

    @event.listens_for(store.engine, "commit")
    def committed(conn):
        seen.append("COMMIT")

    def batch(conn):  # a batch commit: its counters deferred, its job row now
        defer(conn, COUNT, {})
        conn.execute(TOUCH)
        return "batch"

    journal = Journal(store)
    try:
        futures = [
            journal.execute_last(COUNT, {}),
            journal.submit(batch),
            journal.execute(TOUCH, {}),
            journal.execute_last(COUNT, {}),
            journal.execute(TOUCH, {}),
        ]
        results = [f.result(timeout=10) for f in futures]
    finally:
        journal.close()
        store.close()
    assert results == [None, "batch", None, None, None]  # in the order submitted
    transactions = [t.split() for t in " ".join(seen).split("COMMIT") if t.strip()]
    assert any("migrations" in t for t in transactions) and any("databases" in t for t in transactions)
    for t in transactions:  # within each: no database row after the migration row
        if "migrations" in t:
            assert "databases" not in t[t.index("migrations") :], seen


def test_rows_nobody_waits_for_linger_together_and_a_waited_change_takes_them_along(tmp_path, monkeypatch):
    """A group of one-row statements (Journal.execute) waits for company, long; a change that
    someone waits on (a claim, a batch's done-mark) cuts the wait short for the whole group."""
    monkeypatch.setattr(journal_module, "LAZY_LINGER", 60.0)  # far longer than the test may take
    store = open_state(tmp_path / "state")
    add_migration_with_jobs(store, "m", ["/v/database.json"])
    journal = Journal(store)
    try:
        lazy = [journal.execute(TOUCH, {}) for _ in range(50)]
        time.sleep(0.2)
        assert not any(f.done() for f in lazy)  # still lingering, uncommitted
        assert journal.submit(lambda conn: "claimed").result(timeout=20) == "claimed"
        assert all(f.done() and f.exception() is None for f in lazy)  # committed with it, in order
        assert journal.commits == 1
        # and closing commits what lingers, without waiting it out
        late = journal.execute(TOUCH, {})
        started = time.monotonic()
    finally:
        journal.close()
    assert late.result(timeout=0) is None and time.monotonic() - started < 20
    with store.connection() as conn:
        assert conn.execute(select(_jobs.c.n_done)).scalar() == 51
    store.close()
