"""The job table's statements that a run repeats, each written once and named for what it does.

A migration's writes are few kinds, each made thousands of times: a database read, staged,
failed, to be embedded again; a batch of vectors committed; an event noted. They live here
so that each is written one way, and so that a change to the schema shows every place it
touches.

The three updates of a job by id look alike and are kept apart on purpose: the journal
(:mod:`migrator.jobs.journal`) runs consecutive uses of one statement object as one
``executemany``, and SQLAlchemy needs every parameter row of an ``executemany`` to name
the same columns. Each is used with one set of columns only.

Every function here takes a SQLAlchemy ``Connection`` or ``Session`` (both ``execute``) and
runs inside the caller's transaction.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from sqlalchemy import Table, and_, bindparam, case, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from migrator.errors import StateError
from migrator.jobs.models import (
    D_CUT_OVER,
    D_EMBEDDING,
    D_FAILED,
    D_PENDING,
    D_REFUSED,
    D_ROLLED_BACK,
    D_STAGED,
    Batch,
    DatabaseJob,
    Event,
    Migration,
)

# Declarative models type __table__ as any FromClause; these are plain tables.
IN_CHUNK = 500  # ids in one IN (...): well under every database's limit on bound parameters
JOBS = cast(Table, DatabaseJob.__table__)
BATCHES = cast(Table, Batch.__table__)
EVENTS = cast(Table, Event.__table__)
MIGRATIONS = cast(Table, Migration.__table__)

# A job by id (``_id``), with the columns given in each parameter row; one statement per
# set of columns (see above).
SET_PREPARED = update(JOBS).where(JOBS.c.id == bindparam("_id"))  # read, about to be embedded
SET_STAGED = update(JOBS).where(JOBS.c.id == bindparam("_id"))  # staged from memory (+ truncated)
SET_STAGED_BATCHES = update(JOBS).where(JOBS.c.id == bindparam("_id"))  # staged from committed batches
# The migration's counters (``_mid``, ``_records``, ``_tokens``): always last in a transaction
# (the lock order, see journal.py).
COUNT_EMBEDDED = (
    update(MIGRATIONS)
    .where(MIGRATIONS.c.id == bindparam("_mid"))
    .values(
        records_embedded=MIGRATIONS.c.records_embedded + bindparam("_records"),
        tokens_embedded=MIGRATIONS.c.tokens_embedded + bindparam("_tokens"),
    )
)
# A database's committed batches (``_id``).
DROP_BATCHES = delete(BATCHES).where(BATCHES.c.database_id == bindparam("_id"))


class Executes(Protocol):
    def execute(self, statement: Any, parameters: Any = None, /) -> Any: ...


def add_event(conn: Executes, migration_id: str, level: str, message: str, path: str | None = None) -> None:
    """A line of the migration's history (``migrate status`` shows the latest)."""
    conn.execute(insert(EVENTS).values(migration_id=migration_id, level=level, path=path, message=message))


def set_job(conn: Executes, job_id: int, **values: Any) -> None:
    conn.execute(update(JOBS).where(JOBS.c.id == job_id).values(**values))


def forget_vectors(conn: Executes, job_id: int) -> None:
    """Drop what was embedded of a database so far (its batches), keeping its state."""
    conn.execute(DROP_BATCHES, {"_id": job_id})
    set_job(conn, job_id, n_done=0)


def embed_again(conn: Executes, job_id: int, migration_id: str, path: str, why: str, **values: Any) -> None:
    """Back to pending from scratch: no batches, nothing staged, no lease; ``why`` is noted.

    ``values`` adds columns (the file's new size and hash, or an ``error``). The caller
    removes any staged file first."""
    conn.execute(DROP_BATCHES, {"_id": job_id})
    set_job(
        conn,
        job_id,
        state=D_PENDING,
        n_done=0,
        staged_path=None,
        staged_sha256=None,
        staged_size=None,
        lease_until=None,
        **values,
    )
    add_event(conn, migration_id, "warning", why, path)


def fail_job(conn: Executes, job_id: int, migration_id: str, path: str, message: str, **values: Any) -> None:
    """A database that cannot be migrated now; ``message`` says why and what to do."""
    set_job(conn, job_id, state=D_FAILED, error=message, lease_until=None, **values)
    add_event(conn, migration_id, "error", message, path)


def done_ranges(conn: Executes, job_id: int) -> list[tuple[int, int, int | None]]:
    """(start, count, end) of each committed batch of a database: ``end`` is the byte its
    vectors end at in the spool, or None for a row that holds them itself (before 0005)."""
    rows = conn.execute(
        select(BATCHES.c.start, BATCHES.c.count, BATCHES.c.dim, BATCHES.c.spool_offset).where(
            BATCHES.c.database_id == job_id
        )
    )
    return [(int(s), int(c), None if o is None else int(o) + int(c) * int(d) * 4) for s, c, d, o in rows]


def vector_batches(conn: Executes, job_id: int, first_row: int, rows: int) -> list:
    """(start, count, dim, vectors, spool_offset, crc32) of the committed batches of a
    database that start in rows [first_row, first_row + rows), in row order. ``vectors`` is
    None where they are in the spool. Rows from before 0005 hold megabytes each, so a caller
    reads page by page, each in a short transaction: no read lock is held while the file is
    written (with SQLite's rollback journal a reader holds off every commit)."""
    return conn.execute(
        select(
            BATCHES.c.start,
            BATCHES.c.count,
            BATCHES.c.dim,
            BATCHES.c.vectors,
            BATCHES.c.spool_offset,
            BATCHES.c.crc32,
        )
        .where(
            BATCHES.c.database_id == job_id,
            BATCHES.c.start >= first_row,
            BATCHES.c.start < first_row + rows,
        )
        .order_by(BATCHES.c.start)
    ).all()


def add_batches(conn: Executes, rows: list[dict]) -> None:
    conn.execute(insert(BATCHES), rows)


def truncated_of(conn: Executes, job_id: int) -> list[int] | None:
    return conn.execute(select(JOBS.c.truncated).where(JOBS.c.id == job_id)).scalar()


def cut_over(conn: Executes, swapped: list[tuple[int, str]]) -> None:
    """Record swaps: each (job id, its backup's path) is now cut over."""
    conn.execute(
        update(JOBS).where(JOBS.c.id == bindparam("_id")).values(state=D_CUT_OVER, backup_path=bindparam("_backup")),
        [{"_id": i, "_backup": b} for i, b in swapped],
    )


def record_restores(
    conn: Executes,
    *,
    restored: list[int],
    unstaged: list[int],
    refused: list[tuple[int, str]],
    events: list[dict],
) -> None:
    """Record a group of rollback's outcomes (plain executemany): databases put back as they
    were (``restored``, or ``unstaged``: never swapped, whose batches and staged file are
    dropped) and those refused (id, why), with their history lines."""
    if restored:
        conn.execute(
            update(JOBS).where(JOBS.c.id == bindparam("_id")).values(state=D_ROLLED_BACK, error=None),
            [{"_id": i} for i in restored],
        )
    if unstaged:
        conn.execute(DROP_BATCHES, [{"_id": i} for i in unstaged])
        conn.execute(
            update(JOBS).where(JOBS.c.id == bindparam("_id")).values(state=D_ROLLED_BACK, staged_path=None),
            [{"_id": i} for i in unstaged],
        )
    if refused:
        conn.execute(
            update(JOBS).where(JOBS.c.id == bindparam("_id")).values(state=D_REFUSED, error=bindparam("_error")),
            [{"_id": i, "_error": e} for i, e in refused],
        )
    if events:
        conn.execute(insert(EVENTS), events)


# What a file's stat said when it was read (the source) and when it was staged: durable.identity
SOURCE_IDENTITY = ("source_size", "source_mtime_ns", "source_ctime_ns", "source_ino")
STAGED_IDENTITY = ("staged_size", "staged_mtime_ns", "staged_ctime_ns", "staged_ino")


def source_identity(row: Any) -> tuple[int | None, ...]:
    """The source's recorded identity, from a row read with SOURCE_IDENTITY."""
    return tuple(getattr(row, c) for c in SOURCE_IDENTITY)


def staged_identity(row: Any) -> tuple[int | None, ...]:
    """The staged file's recorded identity, from a row read with STAGED_IDENTITY."""
    return tuple(getattr(row, c) for c in STAGED_IDENTITY)


def any_unswapped(conn: Executes, migration_id: str) -> bool:
    """Whether a database of the migration is still to be embedded, staged or swapped."""
    return (
        conn.execute(
            select(JOBS.c.id)
            .where(JOBS.c.migration_id == migration_id, JOBS.c.state.in_([D_PENDING, D_EMBEDDING, D_STAGED]))
            .limit(1)
        ).first()
        is not None
    )


# ------------------------------------------------------------------ what the commands read
def job_counts(conn: Executes, migration_id: str) -> dict[str, int]:
    """Databases of the migration by state."""
    return {
        state: n
        for state, n in conn.execute(
            select(JOBS.c.state, func.count()).where(JOBS.c.migration_id == migration_id).group_by(JOBS.c.state)
        )
    }


def progress(conn: Executes, migration_id: str, lease_after: float) -> dict:
    """The figures `migrate status` shows of one migration, as aggregates: no row is loaded
    but the few whose records were truncated. ``lease_after``: a lease ending after it is held."""
    c = JOBS.c
    finished = c.state.in_((D_STAGED, D_CUT_OVER, D_ROLLED_BACK))
    kept = and_(c.backup_path.is_not(None), c.state.in_((D_CUT_OVER, D_REFUSED)))
    by: dict[str, dict[str, int]] = {"state": {}, "application": {}}
    total = done = backups = 0
    for state, prof, n, records, done_records, backup in conn.execute(
        select(
            c.state,
            c.profile,
            func.count(),
            func.coalesce(func.sum(c.n_records), 0),
            func.coalesce(func.sum(case((finished, c.n_records), else_=func.coalesce(c.n_done, 0))), 0),
            func.coalesce(func.sum(case((kept, c.source_size), else_=0)), 0),
        )
        .where(c.migration_id == migration_id)
        .group_by(c.state, c.profile)
    ):
        by["state"][state] = by["state"].get(state, 0) + n
        app = prof or "unknown"
        by["application"][app] = by["application"].get(app, 0) + n
        total, done, backups = total + int(records), done + int(done_records), backups + int(backup)
    workers = dict(
        conn.execute(
            select(c.lease_owner, func.count())
            .where(c.migration_id == migration_id, c.lease_until.is_not(None), c.lease_until > lease_after)
            .group_by(c.lease_owner)
        ).all()
    )
    truncated = sum(len(ids or []) for _, ids in truncated_records(conn, migration_id))
    return dict(
        databases=sum(by["state"].values()),
        by_state=by["state"],
        by_application=by["application"],
        workers=workers,
        records_total=total,
        records_done=done,
        backup_bytes=backups,
        truncated_records=truncated,
    )


def embed_anew(conn: Executes, job_ids: list[int]) -> None:
    """Failed databases whose files changed since: pending again, to be read afresh."""
    for i in range(0, len(job_ids), IN_CHUNK):
        conn.execute(update(JOBS).where(JOBS.c.id.in_(job_ids[i : i + IN_CHUNK])).values(state=D_PENDING))


def records_of(conn: Executes, migration_id: str, states: tuple[str, ...]) -> tuple[int, int]:
    """(records, records already embedded) of the migration's databases in ``states``."""
    total, done = conn.execute(
        select(func.coalesce(func.sum(JOBS.c.n_records), 0), func.coalesce(func.sum(JOBS.c.n_done), 0)).where(
            JOBS.c.migration_id == migration_id, JOBS.c.state.in_(states)
        )
    ).one()
    return int(total), int(done)


def forget_backups(conn: Executes, migration_id: str) -> None:
    """Finalize deleted the migration's backups: no row names one any more."""
    kept = JOBS.c.backup_path.is_not(None)
    conn.execute(update(JOBS).where(JOBS.c.migration_id == migration_id, kept).values(backup_path=None))


def job_rows(
    conn: Executes, migration_id: str, *columns: str, states: tuple[str, ...] | None = None, limit: int | None = None
) -> list:
    """The named columns of the migration's databases (in ``states``, if given), in job order."""
    q = select(*(JOBS.c[c] for c in columns)).where(JOBS.c.migration_id == migration_id)
    if states is not None:
        q = q.where(JOBS.c.state.in_(states))
    return conn.execute(q.order_by(JOBS.c.id).limit(limit)).all()


def job_page(
    conn: Executes,
    migration_id: str,
    columns: tuple[str, ...],
    *,
    after: Any = None,
    limit: int,
    states: tuple[str, ...] | None = None,
    by_path: bool = False,
) -> list:
    """One page of :func:`job_rows`: the rows after the one whose id (``by_path``: path) is
    ``after``. By path, the order is the bytes' (PostgreSQL's collation set aside), so every
    file under a directory comes between its name + "/" and the next name not under it."""
    key: Any = JOBS.c.path if by_path else JOBS.c.id
    if by_path and _dialect(conn) == "postgresql":
        key = key.collate("C")
    q = select(*(JOBS.c[c] for c in columns)).where(JOBS.c.migration_id == migration_id)
    if states is not None:
        q = q.where(JOBS.c.state.in_(states))
    if after is not None:
        q = q.where(key > after)
    return conn.execute(q.order_by(key).limit(limit)).all()


def _dialect(conn: Executes) -> str:
    bind = conn.get_bind() if isinstance(conn, Session) else cast(Connection, conn)
    return bind.dialect.name


def count_jobs(conn: Executes, migration_id: str) -> int:
    """How many databases the migration has (in every state)."""
    return int(conn.execute(select(func.count()).where(JOBS.c.migration_id == migration_id)).scalar_one())


def profiles_in(conn: Executes, migration_id: str, states: tuple[str, ...] | None) -> set[str | None]:
    """The profiles of the migration's databases in ``states`` (None: in any state; a None
    profile: a job without one)."""
    q = select(JOBS.c.profile).where(JOBS.c.migration_id == migration_id)
    if states is not None:
        q = q.where(JOBS.c.state.in_(states))
    return {p for (p,) in conn.execute(q.distinct())}


def truncated_records(conn: Executes, migration_id: str) -> list[tuple[str, list[int]]]:
    """(path, record ids) of each database some of whose texts the server cut short."""
    return [
        (p, ids or [])
        for p, ids in conn.execute(
            select(JOBS.c.path, JOBS.c.truncated)
            .where(JOBS.c.migration_id == migration_id, JOBS.c.truncated.is_not(None))
            .order_by(JOBS.c.id)
        )
    ]


def latest_migration(s: Session, states: tuple[str, ...]) -> Migration | None:
    """The newest migration in one of ``states``."""
    return s.scalars(select(Migration).where(Migration.state.in_(states)).order_by(Migration.created_at.desc())).first()


def migration_ids(conn: Executes) -> set[str]:
    return set(conn.execute(select(MIGRATIONS.c.id)).scalars())


def add_jobs(conn: Executes, rows: list[dict], events: list[dict]) -> None:
    """A new migration's databases (plain executemany: one row each, no ORM objects) and its events."""
    if rows:
        conn.execute(insert(JOBS), rows)
    if events:
        conn.execute(insert(EVENTS), events)


def add_embed_seconds(conn: Executes, migration_id: str, seconds: float) -> None:
    """An increment, so that several workers may add at once."""
    conn.execute(
        update(MIGRATIONS)
        .where(MIGRATIONS.c.id == migration_id)
        .values(embed_seconds=MIGRATIONS.c.embed_seconds + seconds)
    )


def migration(s: Session, migration_id: str) -> Migration:
    """The migration's row (a migration named by the job table itself, so it exists)."""
    mig = s.get(Migration, migration_id)
    if mig is None:
        raise StateError(f"migration {migration_id} is not in the job table; was the state directory replaced?")
    return mig


def jobs(s: Session, job_ids: list[int]) -> list[DatabaseJob]:
    """Databases' rows in the order of ``job_ids`` (at most ``IN_CHUNK``), in one query."""
    assert len(job_ids) <= IN_CHUNK
    rows = {r.id: r for r in s.scalars(select(DatabaseJob).where(DatabaseJob.id.in_(job_ids)))}
    missing = [i for i in job_ids if i not in rows]
    if missing:
        raise StateError(f"database job {missing[0]} is not in the job table; was the state directory replaced?")
    return [rows[i] for i in job_ids]


def job(s: Session, job_id: int) -> DatabaseJob:
    """A database's row, by the id the job table gave it."""
    row = s.get(DatabaseJob, job_id)
    if row is None:
        raise StateError(f"database job {job_id} is not in the job table; was the state directory replaced?")
    return row
