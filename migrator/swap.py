"""Cutover and rollback: putting files in place, atomically, with backups.

Cutover, per staged database: check the live file is still the one scanned
(size, mtime, SHA-256) and the staged file is still the one verified; keep the
old file as ``<name>.migrator-<id>.backup`` (a hard link: no copy, same bytes,
same mtime; a durable copy where links are not allowed); ``os.replace`` the
staged file onto the live name; fsync the directory; then record it. All the
slow checks happen first, so the window in which old and new databases are
mixed lasts only as long as the renames.

Rollback, per database: the live file must still be the one cutover wrote
(else refused, or with ``force`` kept aside first); the backup must still hold
the original bytes; then ``os.replace`` puts the backup back.

Every step is idempotent: after a crash the next call compares hashes to find
where each file stands and carries on.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, select

from . import crashpoints, fsutil
from .layout import backup_path, displaced_path, staged_path
from .models import (D_CUT_OVER, D_EMBEDDING, D_FAILED, D_PENDING, D_REFUSED, D_ROLLED_BACK,
                     D_STAGED, M_DONE, M_ROLLED_BACK, M_RUNNING, Batch, DatabaseJob,
                     Event, Migration, utcnow)
from .state import StateStore

log = logging.getLogger("migrator.swap")


@dataclass
class SwapResult:
    migration_id: str
    done: list[str] = field(default_factory=list)       # paths swapped (or restored)
    already: list[str] = field(default_factory=list)    # found already in the wanted state
    restage: list[str] = field(default_factory=list)    # changed since the scan: to embed again
    refused: list[str] = field(default_factory=list)    # one line each: path and why

    def as_dict(self) -> dict:
        return {"migration": self.migration_id, "done": self.done, "already": self.already,
                "restage": self.restage, "refused": self.refused}


def _sha(path: Path) -> str | None:
    try:
        return fsutil.sha256_file(path)
    except FileNotFoundError:
        return None


def _event(s, mid: str, level: str, message: str, path: str | None = None) -> None:
    s.add(Event(migration_id=mid, level=level, path=path, message=message))


def _reset_to_pending(s, job: DatabaseJob, why: str) -> None:
    if job.staged_path:
        fsutil.remove_if_exists(job.staged_path)
    s.execute(delete(Batch).where(Batch.database_id == job.id))
    job.state, job.n_done, job.staged_path, job.staged_sha256, job.staged_size = D_PENDING, 0, None, None, None
    job.error = why
    _event(s, job.migration_id, "warning", why, job.path)


def cutover(store: StateStore, migration_id: str) -> SwapResult:
    """Swap every staged database of the migration into place."""
    result = SwapResult(migration_id)
    with store.session() as s:
        jobs = s.scalars(select(DatabaseJob).where(DatabaseJob.migration_id == migration_id,
                                                   DatabaseJob.state == D_STAGED)
                         .order_by(DatabaseJob.id)).all()
        ready: list[tuple[int, os.stat_result]] = []
        # Phase 1: the slow checks, no file touched.
        for job in jobs:
            live, staged = Path(job.path), Path(job.staged_path)
            live_sha = _sha(live)
            if live_sha is not None and live_sha == job.staged_sha256:
                job.state, job.backup_path = D_CUT_OVER, str(backup_path(live, migration_id))
                result.already.append(job.path)           # swapped before a crash, not yet recorded
                continue
            if live_sha != job.source_sha256:
                why = (f"{live}: changed since it was scanned (now "
                       f"{'missing' if live_sha is None else 'different content'}); "
                       f"not overwritten, it will be embedded again")
                _reset_to_pending(s, job, why)
                result.restage.append(job.path)
                continue
            if _sha(staged) != job.staged_sha256:
                why = f"{staged}: the staged file is missing or altered; it will be staged again"
                _reset_to_pending(s, job, why)
                result.restage.append(job.path)
                continue
            ready.append((job.id, os.stat(live)))
    # Phase 2: the swaps, each recorded as soon as it is durable.
    for job_id, checked in ready:
        with store.session() as s:
            job = s.get(DatabaseJob, job_id)
            live, staged = Path(job.path), Path(job.staged_path)
            backup = backup_path(live, migration_id)
            if backup.exists():
                if _sha(backup) != job.source_sha256:
                    msg = f"{backup}: exists with other content; move it away, then run cutover again"
                    result.refused.append(msg)
                    _event(s, migration_id, "error", msg, job.path)
                    continue
            else:
                fsutil.link_or_copy(live, backup)
            crashpoints.reached("cutover.backed_up")
            st = os.stat(live)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (checked.st_ino, checked.st_size, checked.st_mtime_ns):
                fsutil.remove_if_exists(backup)
                _reset_to_pending(s, job, f"{live}: changed during cutover; not overwritten, "
                                          f"it will be embedded again")
                result.restage.append(job.path)
                continue
            os.replace(staged, live)
            fsutil.fsync_dir(live.parent)
            crashpoints.reached("cutover.replaced")
            job.state, job.backup_path = D_CUT_OVER, str(backup)
            result.done.append(job.path)
        crashpoints.reached("cutover.recorded")
    with store.session() as s:
        mig = s.get(Migration, migration_id)
        left = s.scalar(select(DatabaseJob.id).where(
            DatabaseJob.migration_id == migration_id,
            DatabaseJob.state.in_([D_PENDING, D_EMBEDDING, D_STAGED])).limit(1))
        if left is None:
            mig.state, mig.finished_at = M_DONE, utcnow()
        else:
            mig.state = M_RUNNING
    return result


def rollback(store: StateStore, migration_id: str, *, force: bool = False) -> SwapResult:
    """Put every database of the migration back as it was before it."""
    result = SwapResult(migration_id)
    with store.session() as s:
        job_ids = s.scalars(select(DatabaseJob.id).where(DatabaseJob.migration_id == migration_id)
                            .order_by(DatabaseJob.id)).all()
    for job_id in job_ids:
        with store.session() as s:
            job = s.get(DatabaseJob, job_id)
            live = Path(job.path)
            if job.state in (D_ROLLED_BACK,):
                result.already.append(job.path)
                continue
            if job.state in (D_PENDING, D_EMBEDDING, D_STAGED, D_FAILED):
                # Never swapped: the live file is the original; drop our staged work.
                fsutil.remove_if_exists(staged_path(live, migration_id))
                fsutil.remove_stale_partials(live)
                s.execute(delete(Batch).where(Batch.database_id == job.id))
                job.state, job.staged_path = D_ROLLED_BACK, None
                result.already.append(job.path)
                continue
            # D_CUT_OVER or D_REFUSED: the live file should be ours, the backup the original.
            backup = Path(job.backup_path or backup_path(live, migration_id))
            live_sha = _sha(live)
            backup_sha = _sha(backup)
            if live_sha == job.source_sha256:
                fsutil.remove_stale_partials(live)
                job.state, job.error = D_ROLLED_BACK, None   # restored before a crash
                result.already.append(job.path)
                continue
            if backup_sha is None:
                msg = f"{live}: its backup {backup} is gone; this file cannot be restored (left as it is)"
            elif backup_sha != job.source_sha256:
                msg = f"{live}: its backup {backup} no longer holds the original; left as it is"
            elif live_sha != job.staged_sha256 and not force:
                msg = (f"{live}: {'missing' if live_sha is None else 'changed'} since the migration wrote "
                       f"it; not restored (use --force to keep it as "
                       f"{displaced_path(live, migration_id).name} and restore the backup)")
            else:
                msg = None
            if msg:
                job.state, job.error = D_REFUSED, msg
                _event(s, migration_id, "error", msg, job.path)
                result.refused.append(msg)
                continue
            if live_sha is not None and live_sha != job.staged_sha256:
                keep = displaced_path(live, migration_id)
                fsutil.remove_if_exists(keep)
                fsutil.link_or_copy(live, keep)
                _event(s, migration_id, "warning", f"{live}: changed after cutover; kept as {keep}", job.path)
            os.replace(backup, live)
            fsutil.fsync_dir(live.parent)
            fsutil.remove_stale_partials(live)
            crashpoints.reached("rollback.replaced")
            job.state, job.error = D_ROLLED_BACK, None
            result.done.append(job.path)
        crashpoints.reached("rollback.recorded")
    with store.session() as s:
        mig = s.get(Migration, migration_id)
        if not result.refused:
            mig.state, mig.finished_at = M_ROLLED_BACK, utcnow()
        _event(s, migration_id, "info", f"rollback: {len(result.done)} restored, "
                                        f"{len(result.refused)} refused")
    return result
