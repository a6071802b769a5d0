"""Power-loss ordering: files are durable before the job table says they are.

A real migration and rollback run in-process through ``migrator.api`` while the
write path is interposed: ``os.fsync`` (file or directory, told apart by
``fstat``), ``os.open`` of directories (``fsync_dir``), ``os.replace`` and
``os.link`` are wrapped, and every commit of the job table is caught by an
SQLAlchemy ``commit`` listener on the store's engine (``migrator.commands.common.open_state``
is wrapped to register it). The listener fires just before the DBAPI commit and
reads, on the committing connection, what that commit is about to make durable.
All of it lands in one ordered trace, which the test then reads per database:

- staging:  temp file data fsync -> rename onto the staged name -> directory
  fsync -> the commit that says ``staged``;
- cutover:  backup hard link -> directory fsync -> replace onto the live name
  -> directory fsync -> the commit that says ``cut_over``;
- rollback: backup replaced onto the live name -> directory fsync -> the
  commit that says ``rolled_back``;
- every commit: a batch row exists iff its records count in ``n_done``, and the
  bytes every batch row points at in its database's spool were fsync'd (and the
  spool's directory entry too) before the commit, with SQLite in
  ``synchronous=FULL`` and a rollback journal, so a commit is on disk when it
  returns.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import event

import migrator.commands.common as common_mod
from dvdcheck import assert_migrated
from migrator import api
from migrator.apps.provenance import sidecar_path
from migrator.files.durable import TMP_MARK
from migrator.files.layout import backup_path, spool_path, staged_path
from migrator.testing.corpus import build_dvd_tree

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="names fsync'd descriptors through /proc/self/fd"
)

BATCH, CONC = 4, 2


def _real(p) -> str:
    return os.path.realpath(os.fspath(p))


@dataclass
class Ev:
    seq: int
    kind: str  # fsync | fsync_dir | open_dir | replace | link | chmod | commit
    path: str = ""  # fsync*/open_dir: the file; replace/link: the destination
    src: str = ""  # replace/link: the source
    changes: list = field(default_factory=list)  # commit: (live path, old state, new state)
    thread: str = ""

    def __str__(self) -> str:
        if self.kind == "commit":
            return f"#{self.seq} commit {[(Path(p).parent.name, a, b) for p, a, b in self.changes]}"
        if self.src:
            return f"#{self.seq} {self.kind} {Path(self.src).name} -> {Path(self.path).name}"
        return f"#{self.seq} {self.kind} {self.path}"


class Trace:
    def __init__(self, root: Path):
        self.root = _real(root)
        self.events: list[Ev] = []
        self.lock = threading.Lock()
        self.states: dict[str, str] = {}
        self.n_done: dict[str, int] = {}
        self.violations: list[str] = []
        self.pragmas: set[tuple] = set()
        self.commits = 0
        self.records_committed = 0  # sum of n_done increases over all commits
        self.batch_commits = 0  # commits that made some batch durable
        self.records_staged_whole = 0  # records of small databases, durable as their staged file
        self.staged_whole = 0
        self.spool_synced: dict[str, int] = {}  # spool -> its size at its last fsync
        self.spool_named: set[str] = set()  # spools whose directory was fsync'd after they were
        self.spools_checked = 0  # commits' batch rows whose spooled bytes were checked durable

    def add(self, kind: str, **kw) -> None:
        with self.lock:
            self.events.append(Ev(len(self.events), kind, thread=threading.current_thread().name, **kw))

    def mine(self, path: str) -> bool:
        return path.startswith(self.root + os.sep)

    # the engine's "commit" event: called just before the DBAPI commit, on the committing connection
    def on_commit(self, conn) -> None:
        raw = conn.connection.dbapi_connection
        cur = raw.cursor()
        try:
            rows = cur.execute(
                "select d.path, d.state, coalesce(d.n_done, 0), d.n_records, coalesce(b.n, 0), coalesce(b.k, 0) "
                "from databases d left join (select database_id, sum(count) n, count(*) k from batches "
                "group by database_id) b on b.database_id = d.id"
            ).fetchall()
            spooled = cur.execute(
                "select d.path, d.migration_id, max(b.spool_offset + b.count * b.dim * 4) from batches b "
                "join databases d on d.id = b.database_id where b.spool_offset is not null "
                "group by d.path, d.migration_id"
            ).fetchall()
            sync = cur.execute("pragma synchronous").fetchone()[0]
            journal = cur.execute("pragma journal_mode").fetchone()[0]
        except sqlite3.OperationalError:
            return  # the schema is not there yet
        finally:
            cur.close()
        changes, grew = [], 0
        for path, state, n_done, n_records, in_batches, n_rows in rows:
            path = _real(path)
            old = self.states.get(path)
            if old != state:
                changes.append((path, old, state))
            self.states[path] = state
            if n_done > self.n_done.get(path, 0) and state in ("pending", "embedding"):
                grew += n_done - self.n_done.get(path, 0)
            elif n_done > self.n_done.get(path, 0) and state == "staged" and old != "staged":
                # a small database: its vectors were held in memory, the staged file is their record
                self.records_staged_whole += n_done - self.n_done.get(path, 0)
                self.staged_whole += 1
            self.n_done[path] = n_done
            # a batch row exists iff its records count in n_done
            if state in ("pending", "embedding") and in_batches != n_done:
                self.violations.append(
                    f"commit #{len(self.events)}: {path}: {state}, batches hold "
                    f"{in_batches} records, n_done says {n_done}"
                )
            if state not in ("pending", "embedding", "failed") and (n_rows or n_done != n_records):
                self.violations.append(
                    f"commit #{len(self.events)}: {path}: {state} with {n_rows} batch "
                    f"rows and n_done {n_done}/{n_records}"
                )
        for path, mid, end in spooled:
            sp = _real(spool_path(path, mid))
            if self.spool_synced.get(sp, -1) < end:
                self.violations.append(
                    f"commit #{len(self.events)}: {sp}: batch rows point up to byte {end}, "
                    f"but only {self.spool_synced.get(sp)} bytes of it were fsync'd"
                )
            elif sp not in self.spool_named:
                self.violations.append(f"commit #{len(self.events)}: {sp}: its directory entry was never fsync'd")
            self.spools_checked += 1
        self.commits += 1
        self.records_committed += grew
        self.batch_commits += bool(grew)
        self.pragmas.add((sync, journal))
        self.add("commit", changes=changes)


def _first(evs, start, stop, pred):
    return next((e.seq for e in evs[start:stop] if pred(e)), None)


def _last(evs, start, stop, pred):
    return next((e.seq for e in reversed(evs[start:stop]) if pred(e)), None)


def _commit_to(evs, live: str, state: str) -> int | None:
    return _first(
        evs, 0, len(evs), lambda e: e.kind == "commit" and any(p == live and new == state for p, _, new in e.changes)
    )


@pytest.fixture
def traced(tmp_path, monkeypatch):
    """Interpose on the write path and on job-table commits; yields the trace."""
    root = tmp_path / "video_database"
    tr = Trace(root)
    real_fsync, real_replace, real_link, real_open = os.fsync, os.replace, os.link, os.open
    real_chmod, real_chown = os.chmod, getattr(os, "chown", None)

    def fsync(fd):
        real_fsync(fd)
        path = os.readlink(f"/proc/self/fd/{fd}")
        if tr.mine(path) or path == tr.root:
            st = os.fstat(fd)
            is_dir = stat.S_ISDIR(st.st_mode)
            tr.add("fsync_dir" if is_dir else "fsync", path=path)
            with tr.lock:
                if path.endswith(".spool") and not is_dir:
                    tr.spool_synced[path] = st.st_size
                elif is_dir:  # every spool in it that exists now has its name made durable
                    tr.spool_named.update(sp for sp in tr.spool_synced if os.path.dirname(sp) == path)

    def replace(src, dst, **kw):
        real_replace(src, dst, **kw)
        if tr.mine(_real(dst)):
            tr.add("replace", path=_real(dst), src=_real(src))

    def link(src, dst, **kw):
        real_link(src, dst, **kw)
        if tr.mine(_real(dst)):
            tr.add("link", path=_real(dst), src=_real(src))

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & getattr(os, "O_DIRECTORY", 0) and tr.mine(_real(path) + os.sep):
            tr.add("open_dir", path=_real(path))
        return fd

    def _named(path):
        """A path, or the file an open descriptor refers to (fchmod/fchown)."""
        return os.readlink(f"/proc/self/fd/{path}") if isinstance(path, int) else _real(path)

    def chmod(path, mode, **kw):
        real_chmod(path, mode, **kw)
        if tr.mine(_named(path)):
            tr.add("chmod", path=_named(path))

    def chown(path, uid, gid, **kw):
        real_chown(path, uid, gid, **kw)
        if tr.mine(_named(path)):
            tr.add("chown", path=_named(path))

    real_open_state = common_mod.open_state

    def open_state(*a, **kw):
        store = real_open_state(*a, **kw)
        event.listen(store.engine, "commit", tr.on_commit)
        return store

    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        real_unlink(path, *a, **kw)
        if tr.mine(_named(path)):
            tr.add("unlink", path=_named(path))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "unlink", unlink)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "chmod", chmod)
    if real_chown is not None:
        monkeypatch.setattr(os, "chown", chown)
    monkeypatch.setattr(common_mod, "open_state", open_state)
    return root, tr


def test_files_are_durable_before_the_job_table_says_so(traced, tmp_path, server):
    root, tr = traced
    # up to IN_MEMORY_BATCHES x BATCH = 16 records a database is embedded in memory, above in batch rows
    paths = build_dvd_tree(root, 5, clips=(3, 40), seed=23)  # 10, 30, 20, 20, 24 records
    originals = {p: p.read_bytes() for p in paths}
    total = sum(len(json.loads(b)["data"]) for b in originals.values())
    settings = api.Settings(
        roots=[str(root)],
        model="8b",
        endpoint=server.base_url,
        state_dir=str(tmp_path / "state"),
        batch_size=BATCH,
        concurrency=CONC,
        request_timeout=10,
        retry_for=10,
    )
    result = api.run(settings)
    assert result.outcome == "done", result.message
    run_end = len(tr.events)
    for p in paths:
        assert_migrated(p, json.loads(originals[p]), dim=4096)
    back = api.rollback(settings)
    assert not back.refused and back.done == len(paths)
    for p in paths:
        assert p.read_bytes() == originals[p]

    evs = tr.events
    mid = result.migration_id
    dump = "\n".join(map(str, evs))

    # every commit: durable SQLite, and a batch row exists iff its records count in n_done
    assert tr.pragmas == {(2, "delete")}, f"job table commits with (synchronous, journal) {tr.pragmas}"
    assert tr.violations == []
    # large databases commit batch rows; small ones go to their staged file whole: both are here
    assert tr.batch_commits >= 1 and tr.staged_whole >= 1, (tr.batch_commits, tr.staged_whole)
    assert tr.spools_checked >= tr.batch_commits, (tr.spools_checked, tr.batch_commits)
    assert tr.records_committed + tr.records_staged_whole == total, (
        f"{tr.records_committed} records made durable by {tr.batch_commits} batch commits and "
        f"{tr.records_staged_whole} in {tr.staged_whole} staged files, {total} in the tree: "
        f"each record's vectors must be committed exactly once"
    )

    sidecars_removed = 0
    for p in paths:
        live, d = _real(p), _real(p.parent)
        staged, backup = _real(staged_path(p, mid)), _real(backup_path(p, mid))
        where = f"{p.parent.name}:\n{dump}"

        # staging: temp data fsync -> rename onto the staged name -> dir fsync -> commit 'staged'
        c_staged = _commit_to(evs, live, "staged")
        assert c_staged is not None, f"no commit says {p} is staged\n{where}"
        r = _last(evs, 0, c_staged, lambda e: e.kind == "replace" and e.path == staged)
        assert r is not None, f"the staged file was not renamed into place before the commit #{c_staged}\n{where}"
        tmp = evs[r].src
        assert Path(tmp).parent == Path(d) and TMP_MARK in Path(tmp).name, f"renamed from {tmp}"
        f = _last(evs, 0, r, lambda e: e.kind == "fsync" and e.path == tmp)
        assert f is not None, f"{tmp}: renamed (#{r}) without its data fsync'd first\n{where}"
        dsync = _first(evs, r + 1, c_staged, lambda e: e.kind == "fsync_dir" and e.path == d)
        assert dsync is not None, f"{d}: not fsync'd between the rename #{r} and the commit #{c_staged}\n{where}"
        assert _last(evs, r, dsync, lambda e: e.kind == "open_dir" and e.path == d) is not None

        # cutover: link backup -> dir fsync -> replace live -> dir fsync -> commit 'cut_over'
        c_cut = _commit_to(evs, live, "cut_over")
        assert c_cut is not None and c_staged < c_cut < run_end, f"{p}: no cut_over commit in the run"
        lnk = _last(evs, c_staged, c_cut, lambda e: e.kind == "link" and e.path == backup)
        assert lnk is not None and evs[lnk].src == live, f"{backup}: not linked from the live file\n{where}"
        rep = _last(evs, lnk, c_cut, lambda e: e.kind == "replace" and e.path == live)
        assert rep is not None and evs[rep].src == staged, f"{live}: not replaced by the staged file\n{where}"
        d1 = _first(evs, lnk + 1, rep, lambda e: e.kind == "fsync_dir" and e.path == d)
        assert d1 is not None, f"the backup link #{lnk} was not made durable before the replace #{rep}\n{where}"
        d2 = _first(evs, rep + 1, c_cut, lambda e: e.kind == "fsync_dir" and e.path == d)
        assert d2 is not None, f"the replace #{rep} was not made durable before the commit #{c_cut}\n{where}"

        # rollback: backup replaced onto live -> dir fsync -> commit 'rolled_back'
        c_rb = _commit_to(evs, live, "rolled_back")
        assert c_rb is not None and c_rb > run_end, f"{p}: no rolled_back commit"
        rrep = _last(evs, run_end, c_rb, lambda e: e.kind == "replace" and e.path == live)
        assert rrep is not None and evs[rrep].src == backup, f"{live}: the backup was not moved back\n{where}"
        d3 = _first(evs, rrep + 1, c_rb, lambda e: e.kind == "fsync_dir" and e.path == d)
        assert d3 is not None, f"the restore #{rrep} was not made durable before the commit #{c_rb}\n{where}"
        # the provenance sidecar cutover left, removed by rollback and durably so before the commit
        side = _real(sidecar_path(p))
        un = _last(evs, run_end, c_rb, lambda e: e.kind == "unlink" and e.path == side)
        if un is not None:
            sidecars_removed += 1
            d4 = _first(evs, un + 1, c_rb, lambda e: e.kind == "fsync_dir" and e.path == d)
            assert d4 is not None, f"{side}: removed (#{un}) but not made durable before the commit #{c_rb}\n{where}"
    assert sidecars_removed == len(paths), f"{sidecars_removed} of {len(paths)} sidecars removed by rollback"


MODE_AFTER_FSYNC = (
    "BUG (durability, low severity) migrator/files/durable.py:96-103 atomic_write fsyncs the temp file "
    "(line 99) and only then gives it the original's mode and owner (apply_owner_and_mode, line "
    "101: os.chmod/os.chown by path), then renames it and fsyncs the directory. fsync covers a "
    "file's data and metadata as of the fsync; the later chmod/chown are made durable by nothing "
    "POSIX promises (a directory fsync persists the entry, not the inode's attributes). So the "
    "job table can say 'staged' - and cutover can put the file live - while after a power loss "
    "the database may come back with the 0600 mode it was created with (unreadable to the DVD "
    "user if that is another account). Fix: apply mode/owner with os.fchmod/os.fchown on the "
    "open descriptor before os.fsync (the same applies to shutil.copystat after the durable "
    "write in durable_copy, fsutil.py:126-127, the copy fallback for backups)."
)


def test_a_staged_files_mode_is_set_before_it_is_fsynced(traced, tmp_path, server):
    root, tr = traced
    paths = build_dvd_tree(root, 2, clips=(3, 5), seed=29)
    for p in paths:
        os.chmod(p, 0o644)
    settings = api.Settings(
        roots=[str(root)],
        model="8b",
        endpoint=server.base_url,
        state_dir=str(tmp_path / "state"),
        batch_size=BATCH,
        concurrency=CONC,
        request_timeout=10,
        retry_for=10,
        cutover=False,
    )
    result = api.run(settings)
    assert result.outcome == "staged", result.message
    evs = tr.events
    for p in paths:
        staged = _real(staged_path(p, result.migration_id))
        assert stat.S_IMODE(os.stat(staged).st_mode) == 0o644  # the mode is right once written...
        r = _last(evs, 0, len(evs), lambda e: e.kind == "replace" and e.path == staged)
        tmp = evs[r].src
        f = _last(evs, 0, r, lambda e: e.kind == "fsync" and e.path == tmp)
        m = _last(evs, 0, r, lambda e: e.kind == "chmod" and e.path == tmp)
        assert f is not None and m is not None, "\n".join(map(str, evs))
        # ...but it is durable only if it was set before the fsync that precedes the rename
        assert m < f, f"{tmp}: chmod #{m} after its fsync #{f} (rename #{r}): the mode is not covered by any fsync"
