"""The job table: SQLAlchemy models of what a migration has done so far.

This database, not the filesystem, is the source of truth for progress. A
batch of new vectors is done when its row is committed; the vectors themselves
are appended to the database's spool file and fsync'd first, and the row says
where they are. A database's state changes are committed only after the files
they describe are durable on disk.

Schema changes go through Alembic (``migrations/``); never edit a released
revision, add a new one.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


# Migration states
M_RUNNING = "running"  # scanning / embedding / staging
M_STAGED = "staged"  # every selected database staged; waiting for cutover
M_DONE = "done"  # cut over
M_ROLLED_BACK = "rolled_back"  # backups restored
M_FINALIZED = "finalized"  # backups deleted; no rollback possible

# Database (per-file job) states
D_PENDING = "pending"
D_EMBEDDING = "embedding"
D_STAGED = "staged"
D_CUT_OVER = "cut_over"
D_ROLLED_BACK = "rolled_back"
D_FAILED = "failed"
D_REFUSED = "refused"  # rollback refused (file changed since, backup missing)

ACTIVE_MIGRATION_STATES = (M_RUNNING, M_STAGED)


class Migration(Base):
    __tablename__ = "migrations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    state: Mapped[str] = mapped_column(String(20), default=M_RUNNING, index=True)
    model: Mapped[str] = mapped_column(String(200))  # model id sent to the endpoint
    requested_model: Mapped[str] = mapped_column(String(200))  # what the user asked for (8b, ...)
    native_dim: Mapped[int] = mapped_column(Integer)
    target_dim: Mapped[int] = mapped_column(Integer)
    max_model_len: Mapped[int | None] = mapped_column(Integer)
    endpoint: Mapped[str] = mapped_column(String(500))  # URL only; never a key
    roots: Mapped[list] = mapped_column(JSON)
    pattern: Mapped[str] = mapped_column(String(200))
    profile: Mapped[str] = mapped_column(Text)  # auto | dvd | lightrag | nano-graphrag | field:NAME | template:T
    records_embedded: Mapped[int] = mapped_column(BigInteger, default=0)
    tokens_embedded: Mapped[int] = mapped_column(BigInteger, default=0)
    embed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)

    databases: Mapped[list["DatabaseJob"]] = relationship(back_populates="migration", order_by="DatabaseJob.id")


class DatabaseJob(Base):
    __tablename__ = "databases"
    __table_args__ = (
        UniqueConstraint("migration_id", "path", name="uq_databases_migration_path"),
        # id last: a claim walks it in id order within one state and stops after a few (leases.py)
        Index("ix_databases_migration_state_id", "migration_id", "state", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    migration_id: Mapped[str] = mapped_column(ForeignKey("migrations.id"), index=True)
    path: Mapped[str] = mapped_column(String(4096))
    state: Mapped[str] = mapped_column(String(20), default=D_PENDING, index=True)
    source_size: Mapped[int] = mapped_column(BigInteger)
    source_mtime_ns: Mapped[int] = mapped_column(BigInteger)
    source_sha256: Mapped[str] = mapped_column(String(64))
    # with size and mtime, what proves the live file unchanged without hashing it (cutover)
    source_ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    source_ino: Mapped[int | None] = mapped_column(BigInteger)
    source_dim: Mapped[int] = mapped_column(Integer)
    n_records: Mapped[int] = mapped_column(Integer)
    n_chars: Mapped[int] = mapped_column(BigInteger, default=0)
    n_done: Mapped[int] = mapped_column(Integer, default=0)
    # ids of records cut to fit max_model_len; None is SQL NULL (not JSON 'null'), so that
    # the few truncated rows can be found by an index-free IS NOT NULL without decoding the rest
    truncated: Mapped[list | None] = mapped_column(JSON(none_as_null=True))
    staged_path: Mapped[str | None] = mapped_column(String(4096))
    staged_sha256: Mapped[str | None] = mapped_column(String(64))
    staged_size: Mapped[int | None] = mapped_column(BigInteger)
    staged_mtime_ns: Mapped[int | None] = mapped_column(BigInteger)  # ... and the staged file
    staged_ctime_ns: Mapped[int | None] = mapped_column(BigInteger)
    staged_ino: Mapped[int | None] = mapped_column(BigInteger)
    backup_path: Mapped[str | None] = mapped_column(String(4096))
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    # Which worker holds it (leases.py), until when (epoch seconds by the job database's
    # clock); the owner is kept after staging, to say which worker staged it.
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_until: Mapped[float | None] = mapped_column(Float)
    profile: Mapped[str | None] = mapped_column(String(40))  # as found at the scan (profiles.py)

    migration: Mapped[Migration] = relationship(back_populates="databases")
    batches: Mapped[list["Batch"]] = relationship(
        back_populates="database", cascade="all, delete-orphan", order_by="Batch.start"
    )


class Batch(Base):
    """New vectors for rows [start, start+count) of one database: done when the row exists."""

    __tablename__ = "batches"
    __table_args__ = (UniqueConstraint("database_id", "start", name="uq_batches_database_start"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    database_id: Mapped[int] = mapped_column(ForeignKey("databases.id", ondelete="CASCADE"), index=True)
    start: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    # float32 little-endian, count x dim: in the database's spool file (files/spool.py) at
    # spool_offset, with this CRC-32; rows from before revision 0005 hold them here instead
    vectors: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    spool_offset: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    crc32: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    tokens: Mapped[int] = mapped_column(Integer, default=0)

    database: Mapped[DatabaseJob] = relationship(back_populates="batches")


class Event(Base):
    """What happened, for `migrate status`: errors, refusals, interruptions."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    migration_id: Mapped[str | None] = mapped_column(ForeignKey("migrations.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    level: Mapped[str] = mapped_column(String(10))
    path: Mapped[str | None] = mapped_column(String(4096))
    message: Mapped[str] = mapped_column(Text)
