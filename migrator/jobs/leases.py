"""Dividing a migration's databases between workers, with leases in the job table.

Every `migrate run` is a worker, whether it is alone (SQLite, the default) or one
of many on several hosts sharing a PostgreSQL job table. A worker claims a few
databases at a time:

    SELECT ... WHERE state = embedding, then = pending, AND (no lease OR lease ran out)
    ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED

then writes its name and a lease end on them in the same transaction, so two
workers never claim the same database. It renews its leases while it works
(every ``ttl / 4``); a worker that dies stops renewing, its leases run out, and
another worker claims those databases and resumes them from their committed
batches. A worker that finds a lease of its own renewed by nobody (it was
stalled longer than the lease, and another worker took the database) drops
that database at once.

Lease ends are seconds since the epoch **by the job database's clock**, never
the workers' own, so hosts with skewed clocks agree on when a lease ran out.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from dataclasses import dataclass

from sqlalchemy import case, func, or_, select, text, update
from sqlalchemy.engine import Connection

from migrator import config
from migrator.jobs.models import D_EMBEDDING, D_PENDING
from migrator.jobs.queries import JOBS

CLAIM_AT_ONCE = 4  # databases claimed per transaction (about what the read-ahead holds)


def worker_name() -> str:
    """Who holds a lease: host, pid and a random tag (a pid is reused, a tag is not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def db_now(conn: Connection) -> float:
    """Seconds since the epoch by the job database's clock (SQLite: this host's, the only one)."""
    if conn.dialect.name == "postgresql":
        now = conn.execute(text("select extract(epoch from clock_timestamp())")).scalar()
        assert now is not None  # one row, never NULL
        return float(now)
    return time.time()


@dataclass
class Claimed:
    id: int
    path: str
    source_sha256: str
    n_done: int
    truncated: list | None


def claim(
    conn: Connection, migration_id: str, owner: str, n: int = CLAIM_AT_ONCE, ttl: float | None = None
) -> list[Claimed]:
    """Claim up to ``n`` databases nobody holds (or whose lease ran out): first those a worker
    had begun (their committed batches are kept), then pending ones, oldest first.

    One query per state, each an equality on (migration_id, state) ordered by id: it walks
    that index in id order and stops after ``n``, whatever the databases already done. (One
    query with ``state IN (...)`` made SQLite step past every finished database on each
    claim, which made a run of many databases quadratic.)"""
    now = db_now(conn)
    free = or_(JOBS.c.lease_until.is_(None), JOBS.c.lease_until < now)
    rows: list = []
    for state in (D_EMBEDDING, D_PENDING):
        if len(rows) >= n:
            break
        rows += conn.execute(
            select(JOBS.c.id, JOBS.c.path, JOBS.c.source_sha256, JOBS.c.n_done, JOBS.c.truncated)
            .where(JOBS.c.migration_id == migration_id, JOBS.c.state == state, free)
            .order_by(JOBS.c.id)
            .limit(n - len(rows))
            .with_for_update(skip_locked=True)
        ).all()
    if rows:
        conn.execute(
            update(JOBS)
            .where(JOBS.c.id.in_([r.id for r in rows]))
            .values(lease_owner=owner, lease_until=now + (ttl or config.lease_seconds()))
        )
    return [Claimed(r.id, r.path, r.source_sha256 or "", r.n_done or 0, r.truncated) for r in rows]


def renew(conn: Connection, owner: str, ids: list[int], ttl: float | None = None) -> set[int]:
    """Extend this worker's leases on ``ids``; returns those it no longer holds."""
    if not ids:
        return set()
    now = db_now(conn)
    conn.execute(
        update(JOBS)
        .where(JOBS.c.id.in_(ids), JOBS.c.lease_owner == owner, JOBS.c.lease_until.is_not(None))
        .values(lease_until=now + (ttl or config.lease_seconds()))
    )
    held = set(conn.execute(select(JOBS.c.id).where(JOBS.c.id.in_(ids), JOBS.c.lease_owner == owner)).scalars())
    return set(ids) - held


def release_all(conn: Connection, migration_id: str, owner: str) -> int:
    """Give back every lease of this worker on databases not finished (a clean stop):
    another worker may take them at once instead of after the lease runs out."""
    # a database stopped halfway is "pending" again (its committed batches are kept), not
    # "embedding": nothing embeds it until a run claims it
    return conn.execute(
        update(JOBS)
        .where(JOBS.c.migration_id == migration_id, JOBS.c.lease_owner == owner, JOBS.c.lease_until.is_not(None))
        .values(lease_until=None, state=case((JOBS.c.state == D_EMBEDDING, D_PENDING), else_=JOBS.c.state))
    ).rowcount


def outlook(conn: Connection, migration_id: str, owner: str) -> tuple[int, int, float | None]:
    """Of the databases still to do: how many nobody holds now, how many other workers hold,
    and the seconds until the first of those leases runs out (None: none held)."""
    now = db_now(conn)
    live = JOBS.c.lease_until >= now
    others = live & or_(JOBS.c.lease_owner.is_(None), JOBS.c.lease_owner != owner)
    free, held, first = conn.execute(
        select(
            func.count().filter(~live | JOBS.c.lease_until.is_(None)),
            func.count().filter(others),
            func.min(JOBS.c.lease_until).filter(others),
        ).where(JOBS.c.migration_id == migration_id, JOBS.c.state.in_([D_PENDING, D_EMBEDDING]))
    ).one()
    return int(free or 0), int(held or 0), (max(0.0, float(first) - now) if first is not None else None)


def clear_all(conn: Connection, migration_id: str) -> None:
    """Forget every lease of a migration (the only writer, after a dead run's leases)."""
    conn.execute(
        update(JOBS)
        .where(JOBS.c.migration_id == migration_id, JOBS.c.lease_until.is_not(None))
        .values(lease_until=None)
    )
