"""Staging a database whose every row is embedded: write the new file beside the old one, verify it, record it.

:class:`Stager` runs in an I/O thread. It writes the staged file, fsyncs it,
reads it back (:mod:`migrator.pipeline.readback`), writes the provenance
sidecar where the file cannot carry its model, and only then queues the job
row's "staged" record through the run's journal: a change that describes a
file is submitted only after the file is durable. A source that changed while
it was embedded is not staged; it is queued to be embedded again.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from typing import Callable, Iterator, Literal

import numpy as np
from sqlalchemy.engine import Connection

from migrator import crashpoints
from migrator.apps import provenance
from migrator.files import durable, nvdb, spool
from migrator.files.layout import spool_path, staged_path
from migrator.jobs import queries
from migrator.jobs.journal import Journal
from migrator.jobs.models import D_STAGED, Migration
from migrator.jobs.store import StateStore
from migrator.pipeline import readback
from migrator.pipeline.load import Job, StagedFile, Work

MAX_CHANGES = 3  # a database changed under the run this often is failed, not embedded again
PAGE_BYTES = 16 << 20  # committed vectors read back at a time, each page in its own transaction

Staged = Literal["staged", "changed", "failed"]
Fail = Callable[[Job, str, "os.stat_result | None"], Future]


class _Untiled(Exception):
    """The committed batches of a database leave a gap or overlap at ``row``."""

    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class Stager:
    """Stages the complete databases of one run."""

    def __init__(self, store: StateStore, migration: Migration, journal: Journal, fail: Fail):
        """``fail(job, message, st)`` records a database as failed (and counts it)."""
        self.store = store
        self.mig = migration
        self.mid = migration.id
        self.target = migration.target_dim
        self.journal = journal
        self.fail = fail
        self._changes: dict[int, int] = {}  # times a database changed under this run

    # ------------------------------------------------------------- vectors
    def _vector_blocks(self, job_id: int, spooled: str, n: int, dim: int) -> Iterator[np.ndarray]:
        """The committed vectors of one database in row order, one batch at a time, from its
        spool (rows from before 0005: from the job table, :data:`PAGE_BYTES` at a time, so
        that no read transaction stays open while they are written)."""
        covered = 0
        page_rows = max(1, PAGE_BYTES // (dim * 4))
        reader = spool.Reader(spooled)
        try:
            while covered < n:
                with self.store.engine.connect() as conn:
                    page = queries.vector_batches(conn, job_id, covered, page_rows)
                if not page:
                    break
                for start, count, bdim, blob, offset, crc in page:
                    size = count * dim * 4
                    if start != covered or bdim != dim:
                        raise _Untiled(start)
                    if blob is None:
                        try:
                            blob = reader.read(offset, size, crc)
                        except spool.Damaged:
                            raise _Untiled(start) from None
                    if len(blob) != size:
                        raise _Untiled(start)
                    covered += count
                    yield np.frombuffer(blob, dtype="<f4").reshape(count, dim)
        finally:
            reader.close()
        if covered != n:
            raise _Untiled(covered)

    def _new_vectors(self, w: Work) -> Iterator[np.ndarray]:
        """The new vectors of a database in row order (a fresh pass each call)."""
        if w.in_memory:
            assert w.vectors is not None  # allocated with the work, freed only on release
            return iter([w.vectors])
        return self._vector_blocks(w.job.id, spool_path(w.path, self.mid), w.nf.n, self.target)

    def _new_records(self, w: Work) -> Iterator[dict]:
        """Its records as the profile rewrites them for their new vectors (LightRAG's copy)."""
        i = 0
        for block in self._new_vectors(w):
            for row in block:
                yield w.profile.record(w.nf.data[i], row)
                i += 1

    # ------------------------------------------------------------- staging
    def _again(self, job_id: int) -> int:
        """Count one more time this run must embed a database again (changed or damaged)."""
        self._changes[job_id] = n = self._changes.get(job_id, 0) + 1
        return n

    def _changed(self, w: Work, st: os.stat_result | None) -> Staged:
        """The source is not the file that was read: embed it again, or give up on it."""
        path, job, mid = w.path, w.job, self.mid
        changes = self._again(job.id)
        if changes >= MAX_CHANGES and st is not None:  # something keeps writing it
            self.fail(
                job,
                f"{path}: changed {changes} times while it was being embedded; run again once nothing writes to it",
                st,
            )
            return "failed"
        digest = durable.sha256_file(path) if st is not None else ""

        def reset(conn: Connection) -> None:
            values: dict[str, object] = dict(source_sha256=digest)
            if st is not None:
                values.update(source_size=st.st_size, source_mtime_ns=st.st_mtime_ns)
            queries.embed_again(
                conn,
                job.id,
                mid,
                job.path,
                f"{path}: changed while it was being embedded; it will be embedded again",
                **values,
            )

        self.journal.submit(reset)
        return "changed"

    def _damaged(self, w: Work, row: int) -> Staged:
        """The committed vectors stop short of the file or do not read back: embed it again."""
        path, job, mid = w.path, w.job, self.mid
        changes = self._again(job.id)
        if changes >= MAX_CHANGES:
            self.fail(
                job,
                f"{path}: its spooled vectors were damaged {changes} times; check the disk, then "
                f"touch the file and run again (a failed database is retried once its file changes)",
                None,
            )
            return "failed"
        why = f"{path}: its committed vectors stop short or are damaged at row {row}; it will be embedded again"
        fut = self.journal.submit(lambda conn: queries.embed_again(conn, job.id, mid, job.path, why))
        spooled = spool_path(path, mid)

        def dropped(f: Future) -> None:  # before the journal's next commit, so before any new append
            if f.exception() is None:
                durable.remove_if_exists(spooled)

        fut.add_done_callback(dropped)
        return "changed"

    def stage(self, w: Work) -> Staged:
        """Write, fsync and verify the new file, then queue its record (I/O thread)."""
        path, n, target, mid, job = w.path, w.nf.n, self.target, self.mid, w.job
        try:
            st: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is None or (st.st_size, st.st_mtime_ns, st.st_ino) != (w.st.st_size, w.st.st_mtime_ns, w.st.st_ino):
            return self._changed(w, st)
        staged = staged_path(path, mid)
        encoder = nvdb.MatrixEncoder(n, target)
        model, prof = self.mig.model, w.profile
        values = readback.new_values(w.nf, prof, model, target)
        records = self._new_records(w) if prof.rewrites_records else None
        try:
            size, digest = durable.atomic_write(
                staged,
                nvdb.render(w.nf, self._new_vectors(w), target, encoder, records=records, values=values),
                like=st,
            )
        except PermissionError as e:
            self.fail(
                job,
                f"{path}: cannot write the new file beside it ({e.strerror}); give this "
                f"user write access to {path.parent}, then run again",
                None,
            )
            return "failed"
        except _Untiled as e:
            return self._damaged(w, e.row)
        staged_st = os.stat(staged)  # after the rename: what cutover compares, instead of hashing
        crashpoints.reached("stage.written")
        problems = readback.check_staged(
            staged,
            w.nf,
            target,
            vectors_sha256=encoder.sha.hexdigest(),
            file_sha256=digest,
            texts=w.texts,
            profile=prof,
            model=model,
        )
        if problems:
            durable.remove_if_exists(staged)
            self.fail(job, f"{path}: staged file failed verification: {'; '.join(problems)}", None)
            return "failed"
        if not values:  # the file cannot say which model made it: its sidecar will
            try:
                provenance.record(path, staged, digest, model, target, mid)
            except OSError as e:
                durable.remove_if_exists(staged)
                self.fail(
                    job,
                    f"{provenance.sidecar_path(path)}: cannot be written ({e.strerror}); "
                    f"give this user write access to {path.parent}, then run again",
                    None,
                )
                return "failed"
        # The staged file is durable (fsync'd, directory fsync'd) before this is queued.
        row = dict(
            _id=job.id,
            state=D_STAGED,
            staged_path=str(staged),
            staged_sha256=digest,
            staged_size=size,
            staged_mtime_ns=staged_st.st_mtime_ns,
            staged_ctime_ns=staged_st.st_ctime_ns,
            staged_ino=staged_st.st_ino,
            n_done=n,
            error=None,
            lease_until=None,
        )
        if w.in_memory:
            row["truncated"] = sorted(set(job.truncated or []) | set(w.truncated)) or None
            self.journal.execute_last(queries.COUNT_EMBEDDED, dict(_mid=mid, _records=n, _tokens=w.tokens))
            fut = self.journal.execute(queries.SET_STAGED, row)
        else:
            self.journal.execute(queries.DROP_BATCHES, {"_id": job.id})
            fut = self.journal.execute(queries.SET_STAGED_BATCHES, row)

        spooled = spool_path(path, mid) if w.spooled else None

        def recorded(f: Future) -> None:
            if f.exception() is None:
                crashpoints.reached("stage.recorded")
                if spooled is not None:  # its vectors are in the staged file now
                    durable.remove_if_exists(spooled)

        fut.add_done_callback(recorded)
        w.staged = StagedFile(job.id, str(path), str(staged), digest, w.sha, n)
        return "staged"
