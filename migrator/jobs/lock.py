"""One writer per job table.

With the default SQLite job table, `run`, `cutover` and `rollback` hold an OS file lock (``filelock``: flock on
POSIX, released by the kernel when the holder dies, even by SIGKILL) on
``<state>/migrator.lock``. Next to it, ``migrator.lock.json`` names the holder
so a second command can say who is in the way. With a PostgreSQL job table
the lock is the server's (see below), and several `run` workers share it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout
from sqlalchemy import text

from migrator.errors import LockHeld, StateError

LOCK_NAME = "migrator.lock"
HOLDER_NAME = "migrator.lock.json"
HOLDER_WAIT = 1.0  # seconds a refused command waits for a holder that has just taken the lock to name itself


def _holder(state_dir: Path) -> str:
    # The holder writes its name just after it takes the lock, so a command refused in
    # that instant finds no file yet, or half of one (which does not parse): it looks
    # again for a moment before it gives up.
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            info = json.loads((state_dir / HOLDER_NAME).read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
            return f"'migrate {info.get('command', '?')}' (pid {info.get('pid')} on {info.get('host')}, since {since})"
        except (OSError, ValueError):
            if time.monotonic() >= deadline:
                return "another migrate process"
            time.sleep(0.02)


@contextmanager
def state_lock(state_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the state directory's lock for the duration, or raise :class:`LockHeld` at once."""
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StateError(f"{state_dir}: cannot create the state directory ({e.strerror})") from None
    lock = FileLock(str(state_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(
            f"{state_dir / LOCK_NAME}: held by {_holder(state_dir)}; wait for it to finish or stop it, then run again"
        ) from None
    holder = state_dir / HOLDER_NAME
    try:
        holder.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": command,
                    "since": time.time(),
                    "python": sys.executable,
                }
            )
        )
        yield
    finally:
        try:
            holder.unlink()
        except OSError:
            pass
        lock.release()


# ------------------------------------------------------------------ PostgreSQL
# With a shared job table (PostgreSQL) the lock must hold across hosts, so it is the
# server's: a session-level advisory lock on a connection held open for the duration,
# released by the server when that connection ends, also when its process is killed.
# Workers (`run`) hold it shared; `cutover`, `rollback` and `finalize` exclusive. A
# worker that finds everything staged trades its shared hold for an exclusive one
# before it cuts over: only one does, and never while another worker is still running.
WRITERS_KEY = 0x6D69_6772_0010  # 'migr' + 0x10
SCAN_KEY = 0x6D69_6772_0011  # held while a worker scans and records a new migration


class WriterLock:
    """What a writer holds: for SQLite, the state directory's file lock (always exclusive);
    for PostgreSQL, the advisory lock on its own connection."""

    exclusive = True

    def try_exclusive(self) -> bool:
        """Hold the lock exclusively (a worker about to cut over). False: others hold it."""
        return True

    def try_scan(self) -> bool:
        """One worker at a time decides whether to start a new migration (and scans for it):
        True when this one may now; end it with :meth:`end_scan`."""
        return True

    def end_scan(self) -> None:
        pass


class ServerLock(WriterLock):
    def __init__(self, engine, location: str):
        self.conn = engine.connect()
        self.location = location
        self.exclusive = False

    def _ask(self, sql: str, key: int = WRITERS_KEY):
        value = self.conn.execute(text(sql), {"k": key}).scalar()
        self.conn.commit()
        return value

    def acquire(self, shared: bool) -> bool:
        ok = self._ask("select pg_try_advisory_lock_shared(:k)" if shared else "select pg_try_advisory_lock(:k)")
        self.exclusive = bool(ok) and not shared
        return bool(ok)

    def try_exclusive(self) -> bool:
        """Give up the shared hold, then try for the exclusive one. On failure hold nothing:
        a worker that kept (or took back) its shared hold could make every worker fail here
        at once, each seeing the others', and leave the cutover to nobody. The worker that
        lets go last always gets it."""
        if self.exclusive:
            return True
        self._ask("select pg_advisory_unlock_shared(:k)")
        return self.acquire(shared=False)

    def try_scan(self) -> bool:
        return bool(self._ask("select pg_try_advisory_lock(:k)", SCAN_KEY))

    def end_scan(self) -> None:
        self._ask("select pg_advisory_unlock(:k)", SCAN_KEY)

    def holders(self) -> str:
        rows = self.conn.execute(
            text(
                "select a.application_name, host(a.client_addr), l.mode from pg_locks l "
                "join pg_stat_activity a on a.pid = l.pid where l.locktype = 'advisory' and l.granted "
                "and l.classid = :hi and l.objid = :lo and a.pid <> pg_backend_pid()"
            ),
            {"hi": WRITERS_KEY >> 32, "lo": WRITERS_KEY & 0xFFFFFFFF},
        ).all()
        self.conn.commit()
        if not rows:
            return "another migrate process"
        return "; ".join(
            f"'{name or 'a client'}' from {addr or 'a local socket'}"
            + (" (shared)" if "Share" in mode and "Exclusive" not in mode else "")
            for name, addr, mode in rows
        )

    def close(self) -> None:
        try:
            self.conn.close()  # the server releases every advisory lock of the session
        except Exception:  # noqa: BLE001 - the connection may already be gone
            pass


@contextmanager
def server_lock(engine, location: str, command: str, *, shared: bool) -> Iterator[ServerLock]:
    """Hold the shared job table's writer lock (shared for workers), or raise LockHeld at once."""
    lock = ServerLock(engine, location)
    try:
        if not lock.acquire(shared):
            raise LockHeld(f"{location}: held by {lock.holders()}; wait for it to finish or stop it, then run again")
        yield lock
    finally:
        lock.close()
