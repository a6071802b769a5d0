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

Files move in units (``apps.unit_of``): a LightRAG or nano-graphrag working
dir is swapped, and restored, whole or not at all, because its application opens
every vector file there at one dimension. A file that cannot be migrated (failed,
changed, refused) holds back its siblings, and the dir stays loadable at its old
dimension. A DVD video, and any other file, is a unit of its own.

Every step is idempotent: after a crash the next call compares hashes to find
where each file stands and carries on (a unit interrupted halfway through its
swaps is completed).
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from migrator import apps, crashpoints
from migrator.apps import provenance
from migrator.files import durable
from migrator.files.layout import backup_path, displaced_path, staged_path
from migrator.jobs import queries
from migrator.jobs.models import (
    D_CUT_OVER,
    D_EMBEDDING,
    D_FAILED,
    D_PENDING,
    D_REFUSED,
    D_ROLLED_BACK,
    D_STAGED,
    M_DONE,
    M_ROLLED_BACK,
    M_RUNNING,
    utcnow,
)
from migrator.jobs.store import StateStore

log = logging.getLogger("migrator.pipeline.swap")

CHECK_THREADS = 2  # hashing live and staged files (sha256 releases the GIL)
RECORD_EVERY = 256  # swaps made durable and recorded together, in whole units
SYNC_THREADS = 8  # backups made and directories fsync'd at once


@dataclass
class SwapResult:
    migration_id: str
    done: list[str] = field(default_factory=list)  # paths swapped (or restored)
    already: list[str] = field(default_factory=list)  # found already in the wanted state
    restage: list[str] = field(default_factory=list)  # changed since the scan: to embed again
    refused: list[str] = field(default_factory=list)  # one line each: path and why
    held: list[str] = field(default_factory=list)  # one line each: kept back with a sibling
    configs_restored: list[str] = field(default_factory=list)  # settings --apply-config had changed
    was_rolled_back: bool = False  # a rollback of a rolled-back migration

    def as_dict(self) -> dict:
        return {
            "migration": self.migration_id,
            "done": self.done,
            "already": self.already,
            "restage": self.restage,
            "refused": self.refused,
            "held": self.held,
            "configs_restored": self.configs_restored,
            "was_rolled_back": self.was_rolled_back,
        }


def _units(rows) -> dict[str, list]:
    """Jobs by the unit of files they move with (in job order)."""
    out: dict[str, list] = {}
    for r in rows:
        out.setdefault(apps.unit_of(r.profile, r.path), []).append(r)
    return out


def _held_line(path: str, unit: str, blocker: str, profile: str | None) -> str:
    return (
        f"{path}: held back, not swapped: {apps.label_of(profile)} opens every vector file of "
        f"{unit} at one dimension, and {blocker}; the dir stays whole at its old dimension"
    )


def _restage(conn: Connection, job, why: str) -> None:
    """A staged database that may not be swapped in: drop the staged file, embed it again."""
    if job.staged_path:
        durable.remove_if_exists(job.staged_path)
    queries.embed_again(conn, job.id, job.migration_id, job.path, why, error=why)


def _check(job) -> tuple[str, str | None, os.stat_result | None]:
    """Where one staged database stands, reading only (an I/O thread): (verdict, why, live stat)."""
    live, staged = Path(job.path), Path(job.staged_path)
    # A file whose stat is what was recorded when it was read (or staged) is that file: no
    # need to read it again. Otherwise (changed, or recorded before 0004) it is hashed.
    st = durable.unchanged(live, queries.source_identity(job))
    if st is not None:
        live_sha: str | None = job.source_sha256
    else:
        try:
            st = os.stat(live)  # before the hash: a change after it shows in phase 2's stat
        except FileNotFoundError:
            st = None
        live_sha = durable.sha256_if_exists(live)
    if live_sha is not None and live_sha == job.staged_sha256:
        return "already", None, None  # swapped before a crash, not yet recorded
    if live_sha != job.source_sha256:
        return (
            "restage",
            (
                f"{live}: changed since it was scanned (now "
                f"{'missing' if live_sha is None else 'different content'}); "
                f"not overwritten, it will be embedded again"
            ),
            None,
        )
    if not durable.is_recorded(staged, queries.staged_identity(job), job.staged_sha256):
        return "restage", f"{staged}: the staged file is missing or altered; it will be staged again", None
    return "ready", None, st


def cutover(store: StateStore, migration_id: str) -> SwapResult:
    """Swap every staged database of the migration into place.

    Phase 1 checks every database (hashes, in a few threads) and touches no
    file. Phase 2 swaps them in groups of whole units: the group's backups,
    durable; its renames; its directories fsync'd; then one commit records
    the group (a swap not yet recorded is found again by its hash: phase 1,
    'already').
    """
    result = SwapResult(migration_id)
    with store.engine.connect() as conn:
        rows = queries.swap_candidates(conn, migration_id)
    jobs = []
    for unit, members in _units(rows).items():
        blockers = [m for m in members if m.state not in (D_STAGED, D_CUT_OVER)]
        staged = [m for m in members if m.state == D_STAGED]
        if blockers and staged:
            b = blockers[0]
            what = {D_FAILED: "cannot be migrated", D_REFUSED: "was refused"}.get(b.state, "is not staged yet")
            more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
            for m in staged:
                result.held.append(_held_line(m.path, unit, f"{b.path} {what}{more}", m.profile))
            continue
        jobs += staged
    # A LightRAG storage lock guarding any of the files is held from the checks to the last
    # swap, so no LightRAG starts on a half-swapped working dir (held by one: nothing swapped).
    with apps.storage_locks(jobs):
        _cutover(store, migration_id, jobs, result)
    with store.session() as s:
        mig = queries.migration(s, migration_id)
        if not queries.any_unswapped(s, migration_id):
            mig.state, mig.finished_at = M_DONE, utcnow()
        else:
            mig.state = M_RUNNING
    return result


def _cutover(store: StateStore, migration_id: str, jobs: list, result: SwapResult) -> None:
    # Phase 1: the slow checks, no file touched.
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="migrator-check") as pool:
        verdicts = list(pool.map(_check, jobs, chunksize=16))
    ready: list[tuple[Any, os.stat_result | None]] = []  # (job row, its live stat)
    # a unit with a member to re-stage waits for it, whole (its swapped members are completed)
    waiting = {
        apps.unit_of(j.profile, j.path): j.path for j, (verdict, _, _) in zip(jobs, verdicts) if verdict == "restage"
    }
    with store.connection() as conn:
        for job, (verdict, why, st) in zip(jobs, verdicts):
            unit = apps.unit_of(job.profile, job.path)
            if verdict == "already":
                queries.set_job(conn, job.id, state=D_CUT_OVER, backup_path=str(backup_path(job.path, migration_id)))
                result.already.append(job.path)
            elif verdict == "restage":
                assert why is not None  # _check always says why it re-stages
                _restage(conn, job, why)
                result.restage.append(job.path)
            elif unit in waiting:
                result.held.append(_held_line(job.path, unit, f"{waiting[unit]} is embedded again first", job.profile))
            else:
                ready.append((job, st))
    del verdicts
    # Phase 2: the swaps, a group of whole units at a time. Every backup of the group is made
    # durable before any live file of it is replaced; then the renames; then their directories
    # are fsync'd, and only then is the group recorded (a swap not yet recorded is found again
    # by its hash). The fsyncs of a group run concurrently, and the filesystem commits them
    # together: 4x fewer milliseconds a database than one after another (docs/BENCHMARKS.md).
    by_unit: dict[str, list] = {}
    for job, checked in ready:
        by_unit.setdefault(apps.unit_of(job.profile, job.path), []).append((job, checked))
    with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="migrator-sync") as pool:
        for group in _groups(list(by_unit.items()), RECORD_EVERY):
            done = _swap_group(store, migration_id, group, pool, result)
            list(pool.map(durable.fsync_dir, sorted({Path(job.path).parent for job, _ in done})))
            for _ in done:
                crashpoints.reached("cutover.replaced")
            if done:
                with store.connection() as conn:
                    queries.cut_over(conn, [(job.id, str(backup)) for job, backup in done])
                for _ in done:
                    crashpoints.reached("cutover.recorded")


def _groups(units: list[tuple[str, list]], size: int) -> list[list[tuple[str, list]]]:
    """Whole units, about ``size`` files a group (a larger unit is a group of its own)."""
    groups: list[list[tuple[str, list]]] = [[]]
    count = 0
    for unit in units:
        if count and count + len(unit[1]) > size:
            groups.append([])
            count = 0
        groups[-1].append(unit)
        count += len(unit[1])
    return groups


def _make_backup(job, migration_id: str) -> None:
    """Keep the live file as its backup, durably (its directory fsync'd), if not kept already."""
    backup = backup_path(job.path, migration_id)
    if not backup.exists():
        durable.link_or_copy(job.path, backup)


def _swap_group(
    store: StateStore, migration_id: str, group: list[tuple[str, list]], pool: ThreadPoolExecutor, result: SwapResult
) -> list[tuple[Any, Path]]:
    """Back up, then replace, every live file of ``group``; returns (job, backup) of those
    replaced (not yet durable: the caller fsyncs their directories)."""
    go = []
    for unit, members in group:
        conflicts = [job for job, _ in members if _backup_conflict(job, migration_id)]
        if not conflicts:
            go.append((unit, members))
            continue
        for job in conflicts:
            msg = (
                f"{backup_path(job.path, migration_id)}: exists with other content; move it away, "
                f"then run cutover again"
            )
            result.refused.append(msg)
            with store.connection() as conn:
                queries.add_event(conn, migration_id, "error", msg, job.path)
        for job, _ in members:
            if job not in conflicts:
                result.held.append(_held_line(job.path, unit, f"{conflicts[0].path} was refused", job.profile))
    list(pool.map(lambda member: _make_backup(member[0], migration_id), [m for _, ms in go for m in ms]))
    for _, members in go:
        for _ in members:
            crashpoints.reached("cutover.backed_up")
    swapped: list[tuple[Any, Path]] = []
    for unit, members in go:
        done_here: list[tuple[Any, Path]] = []
        for job, checked in members:
            live, staged = Path(job.path), Path(job.staged_path)
            backup = backup_path(live, migration_id)
            st = os.stat(live)
            assert checked is not None  # _check stats every "ready" file (its hash matched)
            if (st.st_ino, st.st_size, st.st_mtime_ns) != (checked.st_ino, checked.st_size, checked.st_mtime_ns):
                for rest, _ in members[len(done_here) :]:  # this one and those after it: live, unreplaced
                    durable.remove_if_exists(backup_path(rest.path, migration_id))
                for prev, prev_backup in reversed(done_here):  # the unit moves whole or not at all
                    _unswap(prev, prev_backup)
                with store.connection() as conn:
                    _restage(conn, job, f"{live}: changed during cutover; not overwritten, it will be embedded again")
                result.restage.append(job.path)
                for prev, _ in done_here:
                    result.done.remove(prev.path)
                result.held += [
                    _held_line(o.path, unit, f"{live} changed during cutover", o.profile)
                    for o, _ in members
                    if o is not job
                ]
                done_here = []
                break
            os.replace(staged, live)
            done_here.append((job, backup))
            result.done.append(job.path)
        swapped += done_here
    return swapped


def _backup_conflict(job, migration_id: str) -> bool:
    """A backup name already taken by other bytes than the original's (never overwritten)."""
    backup = backup_path(job.path, migration_id)
    return backup.exists() and durable.sha256_if_exists(backup) != job.source_sha256


def _unswap(job, backup: Path) -> None:
    """Undo one swap of a unit that cannot complete: the new file goes back to its staged
    name, the original back onto the live name (both durable)."""
    live, staged = Path(job.path), Path(job.staged_path)
    durable.remove_if_exists(staged)
    durable.link_or_copy(live, staged)
    os.replace(backup, live)
    durable.fsync_dir(live.parent)


def rollback(store: StateStore, migration_id: str, *, force: bool = False) -> SwapResult:
    """Put every database of the migration back as it was before it."""
    result = SwapResult(migration_id)
    with store.session() as s:
        jobs = queries.job_rows(s, migration_id, "id", "path", "profile")
    with apps.storage_locks(jobs):
        _restore_all(store, migration_id, [j.id for j in jobs], force, result)
    with store.session() as s:
        mig = queries.migration(s, migration_id)
        if not result.refused:
            mig.state, mig.finished_at = M_ROLLED_BACK, utcnow()
        queries.add_event(
            s, migration_id, "info", f"rollback: {len(result.done)} restored, {len(result.refused)} refused"
        )
    return result


def _restore_verdict(job, force: bool, migration_id: str) -> tuple[str | None, str | None]:
    """(refusal or None, live sha) for a cut-over job, reading only."""
    live = Path(job.path)
    backup = Path(job.backup_path or backup_path(live, migration_id))
    live_sha = durable.sha256_if_exists(live)
    if live_sha == job.source_sha256:
        return None, live_sha
    backup_sha = durable.sha256_if_exists(backup)
    if backup_sha is None:
        msg = f"{live}: its backup {backup} is gone; this file cannot be restored (left as it is)"
    elif backup_sha != job.source_sha256:
        msg = f"{live}: its backup {backup} no longer holds the original; left as it is"
    elif live_sha != job.staged_sha256 and not force:
        msg = (
            f"{live}: {'missing' if live_sha is None else 'changed'} since the migration wrote "
            f"it; not restored (use --force to keep it as "
            f"{displaced_path(live, migration_id).name} and restore the backup)"
        )
    else:
        msg = None
    return msg, live_sha


def _restore_all(store: StateStore, migration_id: str, job_ids: list[int], force: bool, result: SwapResult) -> None:
    # First, reading only: which cut-over files cannot be restored. A unit (a LightRAG or
    # nano-graphrag working dir) with one is left whole at the new dimension: restoring its
    # other files would leave a dir its application cannot open at either dimension.
    with store.reader() as s:
        rows = queries.restore_candidates(s, job_ids)
    verdicts = {r.id: _restore_verdict(r, force, migration_id) for r in rows if r.state in (D_CUT_OVER, D_REFUSED)}
    held: dict[int, str] = {}
    for unit, members in _units(rows).items():
        blocked = [m for m in members if m.id in verdicts and verdicts[m.id][0]]
        if blocked:
            for m in members:
                if m.id in verdicts and not verdicts[m.id][0] and verdicts[m.id][1] != m.source_sha256:
                    held[m.id] = (
                        f"{m.path}: not restored: {apps.label_of(m.profile)} opens every "
                        f"vector file of {unit} at one dimension, and {blocked[0].path} cannot "
                        f"be restored; the dir stays whole at the new dimension"
                    )
    for job_id in job_ids:
        with store.session() as s:
            job = queries.job(s, job_id)
            live = Path(job.path)
            if job.state in (D_ROLLED_BACK,):
                result.already.append(job.path)
                continue
            if job.state in (D_PENDING, D_EMBEDDING, D_STAGED, D_FAILED):
                # Never swapped: the live file is the original; drop our staged work.
                durable.remove_if_exists(staged_path(live, migration_id))
                durable.remove_stale_partials(live)
                provenance.forget(live, migration_id)
                s.execute(queries.DROP_BATCHES, {"_id": job.id})
                job.state, job.staged_path = D_ROLLED_BACK, None
                result.already.append(job.path)
                continue
            # D_CUT_OVER or D_REFUSED: the live file should be ours, the backup the original.
            backup = Path(job.backup_path or backup_path(live, migration_id))
            msg, live_sha = verdicts.get(job.id) or _restore_verdict(job, force, migration_id)
            if live_sha == job.source_sha256:
                durable.remove_stale_partials(live)
                provenance.forget(live, migration_id)
                job.state, job.error = D_ROLLED_BACK, None  # restored before a crash
                result.already.append(job.path)
                continue
            msg = msg or held.get(job.id)
            if msg:
                job.state, job.error = D_REFUSED, msg
                queries.add_event(s, migration_id, "error", msg, job.path)
                result.refused.append(msg)
                continue
            if live_sha is not None and live_sha != job.staged_sha256:
                keep = displaced_path(live, migration_id)
                durable.remove_if_exists(keep)
                durable.link_or_copy(live, keep)
                queries.add_event(
                    s, migration_id, "warning", f"{live}: changed after cutover; kept as {keep}", job.path
                )
            os.replace(backup, live)
            durable.fsync_dir(live.parent)
            durable.remove_stale_partials(live)
            provenance.forget(live, migration_id)
            crashpoints.reached("rollback.replaced")
            job.state, job.error = D_ROLLED_BACK, None
            result.done.append(job.path)
        crashpoints.reached("rollback.recorded")
