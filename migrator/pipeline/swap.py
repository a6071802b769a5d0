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
from typing import Any, Iterable, Iterator

from sqlalchemy.engine import Connection

from migrator import apps, crashpoints
from migrator.apps import provenance
from migrator.files import durable
from migrator.files.layout import backup_path, displaced_path, spool_path, staged_path
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
from migrator.ops import allocator

log = logging.getLogger("migrator.pipeline.swap")

CHECK_THREADS = 2  # hashing live and staged files (sha256 releases the GIL)
RECORD_EVERY = 256  # swaps made durable and recorded together, in whole units
SYNC_THREADS = 8  # units backed up, replaced and their directories fsync'd at once
TRIM_GROUPS = 16  # groups between handing freed memory back (allocator.trim)


@dataclass
class SwapResult:
    migration_id: str
    done: int = 0  # databases swapped (or restored): `status --databases` names them
    already: int = 0  # found already in the wanted state
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
    live, staged = job.path, job.staged_path  # strings: a Path parsed costs more than the stat
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


def _check_all(jobs: list) -> list[tuple[str, str | None, os.stat_result | None]]:
    return [_check(job) for job in jobs]


def _slices(items: list, n: int) -> list[list]:
    """``items`` in at most ``n`` runs of about equal length, in order: a thread's task each
    (one task a file was a few thread handoffs a file)."""
    step = max(1, -(-len(items) // n))
    return [items[i : i + step] for i in range(0, len(items), step)]


CUTOVER_COLUMNS = (
    "id",
    "migration_id",
    "path",
    "staged_path",
    "staged_sha256",
    "source_sha256",
    "profile",
    "state",
    *queries.SOURCE_IDENTITY,
    *queries.STAGED_IDENTITY,
)
NOT_ROLLED_BACK = (D_PENDING, D_EMBEDDING, D_STAGED, D_CUT_OVER, D_FAILED, D_REFUSED)


def _whole_units(rows: Iterable[Any]) -> Iterator[tuple[str, list]]:
    """Rows in path order (:meth:`StateStore.job_pages` ``by_path``), gathered into units
    (``apps.unit_of``), each given once all its members are seen: a file of its own at once,
    a directory's once the rows have left it (every path under a directory sorts together).
    Memory: the members of the directories the current row is in, not the migration's."""
    open_dirs: dict[str, list] = {}  # unit (a directory) -> its members so far
    for r in rows:
        for d in [d for d in open_dirs if not r.path.startswith(d + os.sep)]:
            yield d, open_dirs.pop(d)
        unit = apps.unit_of(r.profile, r.path)
        if unit == r.path:
            yield unit, [r]
        else:
            open_dirs.setdefault(unit, []).append(r)
    yield from open_dirs.items()


def _unit_groups(
    store: StateStore,
    migration_id: str,
    columns: tuple[str, ...] = CUTOVER_COLUMNS,
    states: tuple[str, ...] | None = NOT_ROLLED_BACK,
) -> Iterator[list[tuple[str, list]]]:
    """The migration's databases (in ``states``; None: all), as groups of whole units of
    about ``RECORD_EVERY`` files (a larger unit is a group of its own), read a page at a time."""
    rows = store.each_job(migration_id, *columns, states=states, by_path=True)
    group: list[tuple[str, list]] = []
    count = 0
    for unit, members in _whole_units(rows):
        if count and count + len(members) > RECORD_EVERY:
            yield group
            group, count = [], 0
        group.append((unit, members))
        count += len(members)
    if group:
        yield group


def cutover(store: StateStore, migration_id: str) -> SwapResult:
    """Swap every staged database of the migration into place.

    Phase 1 checks every database (hashes, in a few threads) and touches no file
    but what it re-stages. Phase 2 swaps them in groups of whole units: the
    group's backups, durable; its renames; its directories fsync'd; then one
    commit records the group (a swap not yet recorded is found again by its
    hash: phase 1, 'already').

    Both phases read the job table a page at a time, in path order, so memory
    holds a group of units whatever the number of databases. What phase 1 finds
    is in the job table (cut over, re-staged) but for the units it holds back,
    which phase 2 skips; the writers' lock keeps every other writer out between.
    """
    result = SwapResult(migration_id)
    # A LightRAG storage lock guarding any of the files is held from the checks to the last
    # swap, so no LightRAG starts on a half-swapped working dir (held by one: nothing swapped).
    with apps.storage_locks(_lockable(store, migration_id)):
        _cutover(store, migration_id, result)
    with store.session() as s:
        mig = queries.migration(s, migration_id)
        if not queries.any_unswapped(s, migration_id):
            mig.state, mig.finished_at = M_DONE, utcnow()
        else:
            mig.state = M_RUNNING
    return result


def _blocked(members: list) -> tuple[list, list]:
    """A unit's (blockers, staged): members neither staged nor cut over, and those staged."""
    blockers = [m for m in members if m.state not in (D_STAGED, D_CUT_OVER)]
    return blockers, [m for m in members if m.state == D_STAGED]


def _working_dir_profiles(store: StateStore, migration_id: str, states: tuple[str, ...] | None) -> set[str]:
    """The applications among the migration's databases (in ``states``; None: all) that keep
    a working dir swapped whole, whose storage lock a swap or restore may have to hold."""
    with store.reader() as s:
        profiles = queries.profiles_in(s, migration_id, states)
    return {p for p in profiles if p in apps.APPLICATIONS and apps.by_name(p).whole_directory}


def _lockable(store: StateStore, migration_id: str) -> list:
    """The staged members of the directories cutover may swap: those an application's
    storage lock may guard (a file of its own is DVD's, which has none)."""
    if not _working_dir_profiles(store, migration_id, (D_STAGED,)):
        return []  # no application's directory to lock: not worth reading the job table for
    out = []
    for group in _unit_groups(store, migration_id):
        for unit, members in group:
            blockers, staged = _blocked(members)
            if not blockers:
                out += [m for m in staged if m.path != unit]
    return out


def _cutover(store: StateStore, migration_id: str, result: SwapResult) -> None:
    held_units: set[str] = set()  # held back by phase 1: phase 2 leaves them as they are
    rechecked: dict[int, tuple[int, int, int]] = {}  # ready, though its stat was not the recorded one
    # Phase 1: the slow checks (and the re-stages they find), a group at a time.
    with ThreadPoolExecutor(max_workers=CHECK_THREADS, thread_name_prefix="migrator-check") as pool:
        for group in _unit_groups(store, migration_id):
            jobs = []
            for unit, members in group:
                blockers, staged = _blocked(members)
                if blockers and staged:
                    b = blockers[0]
                    what = {D_FAILED: "cannot be migrated", D_REFUSED: "was refused"}.get(b.state, "is not staged yet")
                    more = f" (and {len(blockers) - 1} more)" if len(blockers) > 1 else ""
                    for m in staged:
                        result.held.append(_held_line(m.path, unit, f"{b.path} {what}{more}", m.profile))
                    held_units.add(unit)
                    continue
                jobs += staged
            verdicts = [v for part in pool.map(_check_all, _slices(jobs, CHECK_THREADS)) for v in part]
            units = [apps.unit_of(j.profile, j.path) for j in jobs]
            # a unit with a member to re-stage waits for it, whole (its swapped members are completed)
            waiting = {unit: j.path for j, unit, (verdict, _, _) in zip(jobs, units, verdicts) if verdict == "restage"}
            with store.connection() as conn:
                for job, unit, (verdict, why, st) in zip(jobs, units, verdicts):
                    if verdict == "already":
                        queries.set_job(
                            conn, job.id, state=D_CUT_OVER, backup_path=str(backup_path(job.path, migration_id))
                        )
                        result.already += 1
                    elif verdict == "restage":
                        assert why is not None  # _check always says why it re-stages
                        _restage(conn, job, why)
                        result.restage.append(job.path)
                    elif unit in waiting:
                        result.held.append(
                            _held_line(job.path, unit, f"{waiting[unit]} is embedded again first", job.profile)
                        )
                    elif st is not None and _stat_key(st) != _recorded_key(job):
                        rechecked[job.id] = _stat_key(st)
            held_units.update(waiting)
    # Phase 2: the swaps, a group of whole units at a time. A unit's backups are made durable
    # before any live file of it is replaced; then its renames; then its directories are
    # fsync'd, and only once the whole group's are is it recorded (a swap not yet recorded is
    # found again by its hash). The units of a group go through on several threads, so their
    # fsyncs run concurrently and the filesystem commits them together: 4x fewer milliseconds
    # a database than one after another (docs/BENCHMARKS.md).
    with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="migrator-sync") as pool:
        for n, group in enumerate(_unit_groups(store, migration_id), 1):
            if n % TRIM_GROUPS == 0:
                allocator.trim()  # what the threads freed goes back to the kernel, not to RSS
            ready = []
            for unit, members in group:
                blockers, staged = _blocked(members)
                if unit in held_units or blockers or not staged:
                    continue  # said in phase 1 (held, re-staged), or nothing of it to swap
                ready.append((unit, [(m, rechecked.get(m.id) or _recorded_key(m)) for m in staged]))
            if not ready:
                continue
            done = _swap_group(store, migration_id, ready, pool, result)
            for _ in done:
                crashpoints.reached("cutover.replaced")
            if done:
                with store.connection() as conn:
                    queries.cut_over(conn, [(job.id, str(backup)) for job, backup in done])
                for _ in done:
                    crashpoints.reached("cutover.recorded")


def _stat_key(st: os.stat_result) -> tuple[int, int, int]:
    """What phase 2 compares of a live file, to see it unchanged since phase 1's check."""
    return st.st_ino, st.st_size, st.st_mtime_ns


def _recorded_key(job) -> tuple[int, int, int]:
    return job.source_ino, job.source_size, job.source_mtime_ns


def _swap_group(
    store: StateStore, migration_id: str, group: list[tuple[str, list]], pool: ThreadPoolExecutor, result: SwapResult
) -> list[tuple[Any, Path]]:
    """Back up, then replace, every live file of ``group``, and fsync their directories;
    returns (job, backup) of those replaced, for the caller to record.

    Each thread takes a slice of the units and carries each unit through on its own
    (:func:`_swap_unit`): a task a slice, not a task a file and a step, because every task
    handed to a thread and back is a few GIL and condition-variable handoffs (strace: 67
    futex calls a database, most of cutover's CPU at 100,000). The fsyncs of different
    units still run at once, one a thread."""
    swapped: list[tuple[Any, Path]] = []
    slices = _slices(group, SYNC_THREADS)
    for outcomes in pool.map(lambda part: [_swap_unit(u, ms, migration_id) for u, ms in part], slices):
        for unit, members, done, refused, changed in outcomes:
            swapped += done
            result.done += len(done)
            if refused:
                for job in refused:
                    msg = (
                        f"{backup_path(job.path, migration_id)}: exists with other content; move it away, "
                        f"then run cutover again"
                    )
                    result.refused.append(msg)
                    with store.connection() as conn:
                        queries.add_event(conn, migration_id, "error", msg, job.path)
                held = [job for job, _ in members if job not in refused]
                blocker = f"{refused[0].path} was refused"
            elif changed is not None:
                live = changed.path
                with store.connection() as conn:
                    why = f"{live}: changed during cutover; not overwritten, it will be embedded again"
                    _restage(conn, changed, why)
                result.restage.append(live)
                held = [job for job, _ in members if job is not changed]
                blocker = f"{live} changed during cutover"
            else:
                continue
            result.held += [_held_line(job.path, unit, blocker, job.profile) for job in held]
    return swapped


def _swap_unit(unit: str, members: list, migration_id: str) -> tuple[str, list, list, list, Any]:
    """One unit, whole or not at all (a thread's): every member's backup durable, then every
    live file checked unchanged since phase 1 and replaced, then their directories fsync'd.
    Returns (unit, members, the (job, backup) replaced, the members whose backup name holds
    other bytes (nothing touched), the member found changed (the unit put back as it was)).
    Paths stay strings: a Path parsed is a few microseconds with the GIL held, and cutover
    made a dozen a database."""
    backups = [backup_path(job.path, migration_id) for job, _ in members]
    kept = [os.path.exists(b) for b in backups]  # by an interrupted cutover, or another's
    taken = [
        job for (job, _), b, k in zip(members, backups, kept) if k and durable.sha256_if_exists(b) != job.source_sha256
    ]
    if taken:
        return unit, members, [], taken, None
    for (job, _), backup, k in zip(members, backups, kept):
        if not k:  # else it holds the original's bytes already
            durable.link_or_copy(job.path, backup)  # durable: its directory fsync'd
        crashpoints.reached("cutover.backed_up")
    done: list[tuple[Any, str]] = []
    for (job, checked), backup in zip(members, backups):
        if _stat_key(os.stat(job.path)) != checked:
            for rest in backups[len(done) :]:  # this one's and those after it: live, unreplaced
                durable.remove_if_exists(rest)
            for prev, prev_backup in reversed(done):  # the unit moves whole or not at all
                _unswap(prev, prev_backup)
            return unit, members, [], [], job
        os.replace(job.staged_path, job.path)
        durable.remove_if_exists(spool_path(job.path, migration_id))  # left by a kill after staging
        done.append((job, backup))
    for d in sorted({os.path.dirname(job.path) for job, _ in done}):
        durable.fsync_dir(d)
    return unit, members, done, [], None


def _unswap(job, backup: Path) -> None:
    """Undo one swap of a unit that cannot complete: the new file goes back to its staged
    name, the original back onto the live name (both durable)."""
    live, staged = Path(job.path), Path(job.staged_path)
    durable.remove_if_exists(staged)
    durable.link_or_copy(live, staged)
    os.replace(backup, live)
    durable.fsync_dir(live.parent)


def rollback(store: StateStore, migration_id: str, *, force: bool = False) -> SwapResult:
    """Put every database of the migration back as it was before it.

    The job table is read a page at a time in path order, and restored a group of whole
    units at a time (as cutover swaps them), so memory holds a group whatever the number
    of databases."""
    result = SwapResult(migration_id)
    with apps.storage_locks(_in_working_dirs(store, migration_id)):
        _restore_all(store, migration_id, force, result)
    with store.session() as s:
        mig = queries.migration(s, migration_id)
        if not result.refused:
            mig.state, mig.finished_at = M_ROLLED_BACK, utcnow()
        queries.add_event(s, migration_id, "info", f"rollback: {result.done} restored, {len(result.refused)} refused")
    return result


def _in_working_dirs(store: StateStore, migration_id: str) -> list:
    """The migration's databases in an application's working dir, whose storage lock a
    restore must hold (a file of its own is DVD's, which has none): none read otherwise."""
    wanted = _working_dir_profiles(store, migration_id, None)
    if not wanted:
        return []
    return [r for r in store.each_job(migration_id, "path", "profile") if r.profile in wanted]


def _restore_verdict(job, force: bool, migration_id: str) -> tuple[str | None, str | None]:
    """(refusal or None, live sha) for a cut-over job, reading only (an I/O thread)."""
    live = job.path  # strings, as in _check
    backup = job.backup_path or str(backup_path(live, migration_id))
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
            f"{os.path.basename(displaced_path(live, migration_id))} and restore the backup)"
        )
    else:
        msg = None
    return msg, live_sha


RESTORE_COLUMNS = ("id", "path", "profile", "state", "backup_path", "source_sha256", "staged_sha256")


def _held_back(group: list[tuple[str, list]], verdicts: dict) -> dict[int, str]:
    """The restorable members of units with a file that cannot be restored: a working dir
    with one is left whole at the new dimension (restoring its other files would leave a
    dir its application cannot open at either dimension). Job id -> why."""
    held: dict[int, str] = {}
    for unit, members in group:
        blocked = [m for m in members if m.id in verdicts and verdicts[m.id][0]]
        if not blocked:
            continue
        for m in members:
            if m.id in verdicts and not verdicts[m.id][0] and verdicts[m.id][1] != m.source_sha256:
                held[m.id] = (
                    f"{m.path}: not restored: {apps.label_of(m.profile)} opens every "
                    f"vector file of {unit} at one dimension, and {blocked[0].path} cannot "
                    f"be restored; the dir stays whole at the new dimension"
                )
    return held


def _restore_all(store: StateStore, migration_id: str, force: bool, result: SwapResult) -> None:
    # A group of whole units at a time. Each thread takes a slice of the group's units and
    # carries each through on its own (as cutover does, and for the same reason: a task a
    # file was a few GIL handoffs a file): which of its cut-over files cannot be restored
    # (hashes), so whether the unit is held back; then each backup moved back; then the
    # slice's directories fsync'd. Only then does the main thread record the group, in one
    # commit (a restore not yet recorded is found again by its hash: 'restored before a crash').
    with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="migrator-sync") as pool:
        for n, group in enumerate(_unit_groups(store, migration_id, RESTORE_COLUMNS, None), 1):
            if n % TRIM_GROUPS == 0:
                allocator.trim()
            parts = pool.map(lambda part: _restore_units(part, migration_id, force), _slices(group, SYNC_THREADS))
            outcomes = [o for part in parts for o in part]
            with store.connection() as conn:
                queries.record_restores(
                    conn,
                    restored=[o.job.id for o in outcomes if o.kind in ("restored", "recovered")],
                    unstaged=[o.job.id for o in outcomes if o.kind == "unstaged"],
                    refused=[(o.job.id, o.error or "") for o in outcomes if o.kind == "refused"],
                    events=[
                        {"migration_id": migration_id, "level": level, "message": msg, "path": o.job.path}
                        for o in outcomes
                        for level, msg in o.events
                    ],
                )
            result.done += sum(o.kind == "restored" for o in outcomes)
            result.already += sum(o.kind in ("already", "recovered", "unstaged") for o in outcomes)
            result.refused += [o.error or "" for o in outcomes if o.kind == "refused"]
            for o in outcomes:
                if o.touched:
                    crashpoints.reached("rollback.recorded")


@dataclass
class _Restore:
    """What restoring one database did, for the main thread to record."""

    job: Any
    # 'restored'; 'recovered' (restored before a crash, not yet recorded); 'already' (recorded
    # so); 'unstaged' (never swapped: its staged work dropped); 'refused'
    kind: str
    touched: bool = False  # its directory changed (fsync'd before the record)
    error: str | None = None  # why it was refused
    events: list[tuple[str, str]] = field(default_factory=list)  # (level, message) for the history


def _restore_units(units: list[tuple[str, list]], migration_id: str, force: bool) -> list[_Restore]:
    """Restore a slice of whole units (a thread's), their directories fsync'd at the end."""
    out: list[_Restore] = []
    for unit, members in units:
        verdicts = {
            m.id: _restore_verdict(m, force, migration_id) for m in members if m.state in (D_CUT_OVER, D_REFUSED)
        }
        held = _held_back([(unit, members)], verdicts)
        out += [_restore_one(m, migration_id, verdicts[m.id] if m.id in verdicts else None, held) for m in members]
    for d in sorted({os.path.dirname(o.job.path) for o in out if o.touched}):
        durable.fsync_dir(d)
    return out


def _restore_one(job, migration_id: str, verdict: tuple[str | None, str | None] | None, held: dict) -> _Restore:
    """Put one database back, its files only (a thread's): ``verdict`` is its
    :func:`_restore_verdict`, None if it was never cut over. A directory changed here (the
    backup moved onto the live name, the sidecar removed) is not yet durable: the caller
    fsyncs it before anything is recorded."""
    if job.state in (D_ROLLED_BACK,):
        return _Restore(job, "already")
    if verdict is None:  # pending, embedding, staged or failed
        # Never swapped: the live file is the original; drop our staged work.
        durable.remove_if_exists(staged_path(job.path, migration_id))
        durable.remove_if_exists(spool_path(job.path, migration_id))
        durable.remove_stale_partials(job.path)
        provenance.forget(job.path, migration_id)
        return _Restore(job, "unstaged")
    # cut over or refused: the live file should be ours, the backup the original.
    msg, live_sha = verdict
    if live_sha == job.source_sha256:
        durable.remove_stale_partials(job.path)
        provenance.forget(job.path, migration_id, sync=False)
        return _Restore(job, "recovered", touched=True)  # restored before a crash
    msg = msg or held.get(job.id)
    if msg:
        return _Restore(job, "refused", error=msg, events=[("error", msg)])
    events = []
    if live_sha is not None and live_sha != job.staged_sha256:  # changed after cutover, and --force
        keep = displaced_path(job.path, migration_id)
        durable.remove_if_exists(keep)
        durable.link_or_copy(job.path, keep)
        events.append(("warning", f"{job.path}: changed after cutover; kept as {keep}"))
    os.replace(job.backup_path or backup_path(job.path, migration_id), job.path)
    durable.remove_stale_partials(job.path)
    provenance.forget(job.path, migration_id, sync=False)
    crashpoints.reached("rollback.replaced")
    return _Restore(job, "restored", touched=True, events=events)
