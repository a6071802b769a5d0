"""What `migrate finalize` deletes: the backups and leftovers of a migration the user keeps.

After finalize the migration cannot be rolled back, and the job table says so.
The order makes a crash harmless: the migration is first recorded as
finalized (from then on rollback refuses it), then the files are deleted;
running finalize again deletes whatever a crash left.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from migrator.files import durable
from migrator.files.layout import backup_path, spool_path, staged_path
from migrator.jobs import queries
from migrator.jobs.models import D_CUT_OVER, D_REFUSED, M_FINALIZED, Event, Migration, utcnow
from migrator.jobs.store import StateStore


@dataclass
class Leftovers:
    migration_id: str
    files: list[str] = field(default_factory=list)  # backups and staged leftovers that exist
    bytes_freed: int = 0  # what deleting them gives back (last links only)

    def as_dict(self) -> dict:
        return {
            "migration": self.migration_id,
            "files": len(self.files),
            "bytes_freed": self.bytes_freed,
            "paths": self.files,
        }


def leftovers(store: StateStore, migration_id: str) -> Leftovers:
    """The files finalize would delete, and the space that frees (a file with other hard
    links frees nothing)."""
    out = Leftovers(migration_id)
    for r in store.each_job(migration_id, "path", "state", "backup_path"):  # a page at a time
        candidates = [
            r.backup_path or backup_path(r.path, migration_id),
            staged_path(r.path, migration_id),
            spool_path(r.path, migration_id),  # a database that failed after some batches
        ]
        if r.state not in (D_CUT_OVER, D_REFUSED):
            candidates = candidates[1:]  # never cut over: no backup of ours to delete
        for f in candidates:
            try:
                st = os.lstat(f)
            except FileNotFoundError:
                continue
            out.files.append(str(f))
            if st.st_nlink <= 1:
                out.bytes_freed += st.st_size
    return out


def finalize(store: StateStore, migration_id: str) -> Leftovers:
    """Record the migration as finalized, then delete its leftovers. Idempotent."""
    found = leftovers(store, migration_id)
    with store.session() as s:
        mig = s.get(Migration, migration_id)
        assert mig is not None  # the caller has just read it, under the lock
        if mig.state != M_FINALIZED:
            mig.state = M_FINALIZED
            mig.message = (
                f"finalized {utcnow():%Y-%m-%d %H:%M} UTC: backups deleted "
                f"({found.bytes_freed} bytes freed); rollback is no longer possible"
            )
            s.add(Event(migration_id=migration_id, level="info", message=mig.message))
    for f in found.files:
        durable.remove_if_exists(f)
    with store.session() as s:
        queries.forget_backups(s, migration_id)
    return found
