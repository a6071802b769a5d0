"""One migration per tree, whatever the state directory or job table.

The state directory's lock (lock.py) keeps two `migrate` processes of one job table
apart. Two job tables (two ``./state`` directories, from two working directories) did
not see each other: both migrated the same files. So the data itself says who owns it:

- **A claim at each root**, ``<root>/.migrator-claim.json``: the migration that owns the
  tree and the job table that records it (a state directory, or a PostgreSQL URL without
  its password), with the pid and host that made it. It is created with ``O_EXCL`` when a
  migration is recorded, so of two runs started together exactly one wins. It stays until
  that migration is rolled back or finalized: a finished migration can still be rolled
  back, and only from its own job table.
- Every ``run``, ``cutover``, ``rollback`` and ``finalize`` checks the claims of its roots
  and of their parent directories: another job table's claim means exit 3, naming the
  migration, the job table and who made it.
- **Beside each file**, a staged or backup file of a migration this job table does not
  know is another migration's work: that database is refused by name (scan.py).

Workers sharing one PostgreSQL job table share its claim.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from migrator.errors import LockHeld
from migrator.files import durable

CLAIM_NAME = ".migrator-claim.json"


def identity(state_url: str | None, state_dir: Path) -> str:
    """The job table, as claims name it: a PostgreSQL URL without password, or a state dir."""
    if state_url:
        from sqlalchemy.engine import make_url

        return make_url(state_url).render_as_string(hide_password=True).replace("***", "")
    return os.path.realpath(state_dir)


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"state": "?", "migration": "?", "unreadable": True}


def _claims_over(root: str) -> list[tuple[Path, dict]]:
    """Claims at ``root`` and at every directory above it (a tree inside a claimed tree)."""
    out = []
    p = Path(os.path.realpath(root))
    for d in (p, *p.parents):
        doc = _read(d / CLAIM_NAME)
        if doc is not None:
            out.append((d / CLAIM_NAME, doc))
    return out


def _describe(path: Path, doc: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M", time.localtime(doc.get("since", 0)))
    return (
        f"{path.parent} belongs to migration {doc.get('migration')} recorded in {doc.get('state')} "
        f"(started by pid {doc.get('pid')} on {doc.get('host')}, {since})"
    )


def check(roots: list[str], me: str) -> None:
    """Refuse (exit 3) when another job table's migration owns any of ``roots``."""
    for root in roots:
        for path, doc in _claims_over(root):
            if doc.get("state") != me:
                raise LockHeld(
                    f"{_describe(path, doc)}; run migrate with that state "
                    f"(--state-dir/--state-url) to go on, or roll that migration back or "
                    f"finalize it there first. If that job table is gone for good, delete "
                    f"{path} (its staged and backup files stay until you remove them)"
                )


def take(roots: list[str], me: str, migration_id: str) -> list[str]:
    """Claim ``roots`` for ``migration_id`` (exclusive create: one of two racing runs wins).

    Returns the roots that could not be claimed because this user may not write there (a
    shared tree whose top belongs to someone else): they are still guarded by the staged
    and backup files beside each database, which another job table's run refuses."""
    check(roots, me)
    unwritable = []
    for root in roots:
        try:
            _take_one(root, me, migration_id)
        except PermissionError:
            unwritable.append(root)
    return unwritable


def _take_one(root: str, me: str, migration_id: str) -> None:
    path = Path(os.path.realpath(root)) / CLAIM_NAME
    doc = {
        "migration": migration_id,
        "state": me,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.time(),
    }
    data = json.dumps(doc, indent=1).encode()
    existing = _read(path)
    if existing is not None:
        if existing.get("state") != me:
            raise LockHeld(f"{_describe(path, existing)}; run migrate with that state to go on")
        if existing.get("migration") != migration_id:
            _replace(path, data)  # ours, an older migration of the same job table
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:  # another run made it just now: it won
        other = _read(path) or {}
        if other.get("state") != me:
            raise LockHeld(f"{_describe(path, other)}; run migrate with that state to go on") from None
        return
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    durable.fsync_dir(path.parent)


def _replace(path: Path, data: bytes) -> None:
    durable.atomic_write(path, [data])


def release(roots: list[str], me: str, migration_id: str) -> None:
    """Drop this migration's claims (after a rollback or a finalize)."""
    for root in roots:
        path = Path(os.path.realpath(root)) / CLAIM_NAME
        doc = _read(path)
        if doc is not None and doc.get("state") == me and doc.get("migration") == migration_id:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
