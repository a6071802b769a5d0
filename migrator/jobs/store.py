"""Opening the job database: where it lives, its schema version, its durability.

Writers (`run`, `cutover`, `rollback`) open it with :func:`open_state`, which
creates the state directory and brings the schema to Alembic's head. Readers
(`status`) use ``readonly=True``: nothing is created, upgraded or written.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from migrator import config
from migrator.errors import StateError
from migrator.jobs import queries

DB_NAME = "migrator.db"
JOB_PAGE = 512  # job rows a read of StateStore.each_job: memory flat, a few ms a page
# The newest revision in migrations/versions. A new revision must update this (a test
# compares it with Alembic's head); a job database at it is opened without Alembic.
HEAD_REVISION = "0005"


def default_state_dir() -> Path:
    return config.state_dir()


def migrations_dir() -> Path:
    spec = importlib.util.find_spec("migrator._migrations")
    if spec and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parents[2] / "migrations"  # running from a source tree


def alembic_config(url: str | None = None):
    """Alembic's configuration for our migrations (Alembic is imported only when needed:
    a job database already at :data:`HEAD_REVISION` never loads it)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Let SQLAlchemy, not pysqlite, say when transactions begin, so that schema
    # changes (DDL) are transactional too: a process killed mid-upgrade leaves
    # the old schema, never half of the new one.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    # Rollback journal, not WAL: WAL needs shared memory, which network
    # filesystems do not give. FULL: a commit is on disk before it returns.
    cur.execute("PRAGMA journal_mode=DELETE")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms()}")
    cur.close()


def busy_timeout_ms() -> int:
    """How long to wait for another process's write transaction (MIGRATOR_DB_BUSY_TIMEOUT, s)."""
    return int(config.busy_timeout_seconds() * 1000)


def _sqlite_begin(conn) -> None:
    conn.exec_driver_sql("BEGIN")


def unreadable(location: str, e: DatabaseError) -> StateError:
    msg = str(getattr(e, "orig", None) or e).splitlines()[0]
    if "locked" in msg:
        return StateError(f"{location}: the job database is locked by another process ({msg}); wait for it, or stop it")
    if getattr(getattr(e, "orig", None), "sqlstate", "") in ("40P01", "40001"):
        return StateError(
            f"{location}: a write collided with another worker's again and again "
            f"({msg}); nothing is damaged, run again to resume"
        )
    return StateError(
        f"{location}: the job database is unreadable ({msg}); move it aside and re-run "
        f"(live databases are untouched), or restore it from a backup"
    )


def _sqlite_readonly_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={busy_timeout_ms()}")
    cur.close()


class StateStore:
    """The job database: an engine plus a session factory."""

    def __init__(self, engine: Engine, location: str):
        self.engine = engine
        self.location = location
        self._sessions = sessionmaker(bind=engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error.

        A damaged or locked job database surfaces as :class:`StateError`."""
        try:
            with self._sessions() as s:
                try:
                    yield s
                    s.commit()
                except BaseException:
                    s.rollback()
                    raise
        except DatabaseError as e:
            raise unreadable(self.location, e) from None

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A Core connection in one transaction (for hot paths: no ORM objects)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except DatabaseError as e:
            raise unreadable(self.location, e) from None

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only look (nothing is committed)."""
        try:
            with self._sessions() as s:
                yield s
        except DatabaseError as e:
            raise unreadable(self.location, e) from None

    def job_pages(
        self,
        migration_id: str,
        *columns: str,
        states: tuple[str, ...] | None = None,
        by_path: bool = False,
        page: int | None = None,
    ) -> Iterator[list]:
        """The named columns of the migration's databases (in ``states``), in job order (or
        by path: :func:`queries.job_page`), a page of rows at a time, each page a short read
        of its own: memory holds one page whatever the migration's size, and a writer may
        commit between pages (the next page starts after the last row seen)."""
        page = page or JOB_PAGE
        key = "path" if by_path else "id"
        wanted = columns if key in columns else (*columns, key)
        after = None
        while True:
            with self.reader() as s:
                rows = queries.job_page(
                    s, migration_id, wanted, after=after, limit=page, states=states, by_path=by_path
                )
            if rows:
                yield rows
            if len(rows) < page:
                return
            after = getattr(rows[-1], key)

    def each_job(self, migration_id: str, *columns: str, **kw: Any) -> Iterator[Any]:
        """:meth:`job_pages`' rows one by one."""
        for rows in self.job_pages(migration_id, *columns, **kw):
            yield from rows

    def close(self) -> None:
        self.engine.dispose()


def _stored_revision(conn) -> str | None:
    """The schema revision the job database records, read without Alembic (None: none yet)."""
    try:
        row = conn.exec_driver_sql("select version_num from alembic_version").first()
    except DatabaseError:
        conn.rollback()
        return None
    conn.rollback()  # end the read transaction: Alembic may begin its own
    return row[0] if row else None


def _create_if_empty(conn: Connection) -> bool:
    """A SQLite job database with no table at all gets the models' schema and the head's
    revision in one transaction (what the revisions build, checked by a test), without
    loading Alembic: a quarter of a second off a new migration's first request."""
    from migrator.jobs.models import Base

    try:
        # a write first, so that two processes creating it at once take turns (busy timeout)
        conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        others = conn.exec_driver_sql(
            "select count(*) from sqlite_master where type = 'table' and name != 'alembic_version'"
        ).scalar()
        if others or conn.exec_driver_sql("select count(*) from alembic_version").scalar():
            conn.rollback()
            return False  # made meanwhile, or an older schema: Alembic's to upgrade
        Base.metadata.create_all(conn)
        conn.execute(text("insert into alembic_version (version_num) values (:v)"), {"v": HEAD_REVISION})
        conn.commit()
        return True
    except BaseException:
        conn.rollback()
        raise


def _check_revision(conn, where: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    current = MigrationContext.configure(conn).get_current_revision()
    if current is not None:
        try:
            script.get_revision(current)
        except Exception:
            raise StateError(
                f"{where}: the job database is at schema revision {current!r}, which this "
                f"migrator does not know (it was written by a newer version); "
                f"upgrade migrator or point --state-dir elsewhere"
            ) from None
    return current


def _recover_hot_journal(path: Path) -> None:
    """A writer killed mid-commit leaves a journal that only a writable connection can
    roll back; a reader opened read-only would fail. Let SQLite do its recovery first."""
    journal = path.with_name(path.name + "-journal")
    try:
        if journal.stat().st_size == 0:
            return
    except FileNotFoundError:
        return
    import sqlite3

    try:
        con = sqlite3.connect(str(path), timeout=busy_timeout_ms() / 1000)
        try:
            con.execute("select count(*) from sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        pass  # the read-only open below reports what is wrong


def state_url(url: str | None = None) -> str | None:
    """The job database's URL when it is a server (``--state-url`` or MIGRATOR_STATE_URL);
    None: the default SQLite file in the state directory."""
    return config.state_url(url)


def has_password(url: str) -> bool:
    """Does this URL carry a password (which must never be on a command line or in a crontab)?"""
    try:
        return make_url(url).password is not None
    except Exception:
        return False


def shown_url(url: str) -> str:
    """A URL as it may be printed or logged: never with its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable --state-url>"


def _server_engine(url: str, *, readonly: bool, application: str) -> Engine:
    try:
        parsed = make_url(url)
    except Exception:
        raise StateError(
            f"--state-url: cannot parse {shown_url(url)!r}; expected postgresql+psycopg://USER@HOST:PORT/DATABASE"
        ) from None
    if parsed.get_backend_name() != "postgresql":
        raise StateError(
            f"--state-url {shown_url(url)}: only PostgreSQL "
            f"(postgresql+psycopg://...) is supported; leave it out for SQLite"
        )
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # Keepalives both ways: a worker host that loses power holds the writers' advisory lock
    # until the server notices its connection is dead; by default that is the OS's two hours,
    # here about a minute (then the others may cut over).
    options = "-c tcp_keepalives_idle=30 -c tcp_keepalives_interval=10 -c tcp_keepalives_count=3"
    if readonly:
        options += " -c default_transaction_read_only=on"
    args: dict = {
        "application_name": application[:60],
        "connect_timeout": 10,
        "options": options,
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }
    return create_engine(parsed, connect_args=args, pool_pre_ping=True)


# Session-level advisory lock keys (PostgreSQL): one schema upgrade at a time.
SCHEMA_LOCK_KEY = 0x6D69_6772_0001


def open_state(
    state_dir: str | os.PathLike | None = None,
    *,
    readonly: bool = False,
    url: str | None = None,
    application: str = "migrator",
) -> StateStore | None:
    """Open (and for writers create and upgrade) the job database.

    With ``url`` (PostgreSQL) the job table lives on that server and is shared by every
    worker pointed at it; otherwise it is ``<state_dir>/migrator.db``. Returns None for a
    reader when no SQLite job database exists yet.
    """
    if url:
        engine = _server_engine(url, readonly=readonly, application=application)
        where = shown_url(url)
    else:
        state_dir = Path(state_dir) if state_dir else default_state_dir()
        path = state_dir / DB_NAME
        where = str(path)
        if readonly:
            if not path.exists():
                return None
            _recover_hot_journal(path)
            engine = create_engine(
                f"sqlite:///file:{path.resolve()}?mode=ro&uri=true", connect_args={"timeout": busy_timeout_ms() / 1000}
            )
            event.listen(engine, "connect", _sqlite_readonly_pragmas)
        else:
            try:
                state_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StateError(
                    f"{state_dir}: cannot create the state directory ({e.strerror}); choose another with --state-dir"
                ) from None
            engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": busy_timeout_ms() / 1000})
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
    try:
        with engine.connect() as conn:
            if _stored_revision(conn) == HEAD_REVISION:
                return StateStore(engine, where)  # the usual case: nothing for Alembic to do
            if not readonly and conn.dialect.name == "sqlite" and _create_if_empty(conn):
                return StateStore(engine, where)  # a new job database, made at the head at once
            from alembic import command
            from alembic.script import ScriptDirectory

            if readonly:
                current = _check_revision(conn, where)
                head = ScriptDirectory.from_config(alembic_config()).get_current_head()
                if current != head:
                    raise StateError(
                        f"{where}: the job database is at schema revision {current!r}, "
                        f"not {head!r}; any run, cutover or rollback upgrades it"
                    )
            else:
                if conn.dialect.name == "postgresql":
                    # workers starting together: one upgrades, the others wait for it (the lock
                    # ends with the transaction Alembic commits)
                    conn.execute(text("select pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK_KEY})
                _check_revision(conn, where)
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
    except StateError:
        engine.dispose()
        raise
    except OperationalError as e:
        engine.dispose()
        msg = (str(e.orig) if e.orig else str(e)).strip().splitlines()[0]
        if "locked" in msg:
            raise StateError(
                f"{where}: the job database is locked by another process ({msg}); wait for it, or stop it"
            ) from None
        raise StateError(f"{where}: cannot open the job database ({msg})") from None
    except DatabaseError as e:
        engine.dispose()
        raise unreadable(where, e) from None
    except Exception as e:
        engine.dispose()
        from alembic.util import CommandError

        if not isinstance(e, CommandError):
            raise
        raise StateError(f"{where}: cannot bring the job database to the current schema ({e})") from None
    return StateStore(engine, where)
