"""Re-embedding and staging: the long-running middle of a migration.

For each selected database the runner reads the stored source texts, sends
them to the endpoint in batches (several in flight), commits each batch's new
vectors to the job table as it arrives (vectors and "done" in one row, one
transaction), and when a database is complete writes the new file beside the
old one, fsyncs it, reads it back to verify it, and only then marks it staged.

Interrupted at any point, the next run finds the committed batches and sends
only what is missing. Memory holds the texts of the databases being worked on,
never the corpus.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
from sqlalchemy import delete, select

from . import crashpoints, fsutil, nvdb, profiles, verify
from .endpoint import Endpoint, PoisonedInput
from .errors import BadDatabase
from .layout import staged_path
from .models import (D_EMBEDDING, D_FAILED, D_PENDING, D_STAGED, Batch, DatabaseJob, Event,
                     Migration)
from .state import StateStore
from .tuning import AdaptiveLimit

log = logging.getLogger("migrator.run")

STOP_GRACE = 10.0  # seconds in-flight requests get to finish after SIGINT/SIGTERM
MAX_IN_FLIGHT = 64  # ceiling for the adaptive in-flight limit


class Reporter(Protocol):
    """What the runner tells its caller (the CLI draws bars or logs lines from it)."""

    def start(self, total_records: int, done_records: int) -> None: ...
    def advance(self, records: int) -> None: ...
    def note(self, message: str) -> None: ...


class _Untiled(Exception):
    """The committed batches of a database leave a gap or overlap at ``row``."""

    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


class NullReporter:
    def start(self, total_records: int, done_records: int) -> None:
        pass

    def advance(self, records: int) -> None:
        pass

    def note(self, message: str) -> None:
        log.info("%s", message)


@dataclass
class _Work:
    """The in-memory side of one database being embedded."""

    job_id: int
    path: Path
    texts: list[str]
    ids: list[str]
    ranges: list[tuple[int, int]] = field(default_factory=list)   # (start, count) still to embed
    outstanding: int = 0
    producing: bool = True
    failed: bool = False


@dataclass
class _Answer:
    """An embedded batch waiting for its group commit."""

    work: _Work
    start: int
    vectors: np.ndarray
    tokens: int
    truncated: list[str]
    done: asyncio.Future | None = None


@dataclass
class EmbedOutcome:
    records: int = 0
    tokens: int = 0
    staged: int = 0
    failed: int = 0
    restaged: int = 0
    truncated: list[str] = field(default_factory=list)


def missing_ranges(n: int, done: list[tuple[int, int]], batch_size: int) -> list[tuple[int, int]]:
    """Row ranges of [0, n) not covered by ``done`` (start, count) pairs, cut to ``batch_size``."""
    covered = np.zeros(n, dtype=bool)
    for start, count in done:
        covered[start:start + count] = True
    out = []
    i = 0
    while i < n:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < n and not covered[j] and j - i < batch_size:
            j += 1
        out.append((i, j - i))
        i = j
    return out


class Embedder:
    """Runs the embedding and staging of one migration's jobs."""

    def __init__(self, store: StateStore, migration: Migration, endpoint: Endpoint, *,
                 batch_size: int = 32, concurrency: int | None = None, fail_fast: bool = False,
                 reporter: Reporter | None = None, stop: asyncio.Event | None = None,
                 profile: str | None = None, text_field: str | None = None):
        self.store = store
        self.mig = migration
        self.endpoint = endpoint
        self.batch_size = max(1, batch_size)
        # concurrency None: found by measuring (tuning.AdaptiveLimit); a number: fixed
        self.limit = AdaptiveLimit(fixed=concurrency, maximum=MAX_IN_FLIGHT)
        self.concurrency = self.limit.maximum
        endpoint.on_pushback = self.limit.throttled
        self._pending: list[_Answer] = []
        self._flusher: asyncio.Task | None = None
        self.fail_fast = fail_fast
        self.reporter = reporter or NullReporter()
        self.stop = stop or asyncio.Event()
        self.profile = profile
        self.text_field = text_field
        self.outcome = EmbedOutcome()
        self.fatal: BaseException | None = None
        # One thread owns every write to the job table and the filesystem, in order.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="migrator-writer")

    # ------------------------------------------------------------ job table
    def _event(self, s, level: str, message: str, path: str | None = None) -> None:
        s.add(Event(migration_id=self.mig.id, level=level, path=path, message=message))

    def _mark_failed(self, s, job: DatabaseJob, message: str) -> None:
        job.state, job.error = D_FAILED, message
        self._event(s, "error", message, job.path)
        self.outcome.failed += 1
        self.reporter.note(f"FAILED {message}")

    def _fail(self, job_id: int, message: str) -> None:
        with self.store.session() as s:
            self._mark_failed(s, s.get(DatabaseJob, job_id), message)

    def _prepare(self, job_id: int) -> _Work | None:
        """Read the source, check it is still the file we scanned, find what is left to embed."""
        with self.store.session() as s:
            job = s.get(DatabaseJob, job_id)
            path = Path(job.path)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._mark_failed(s, job, f"{path}: the file is gone")
                return None
            # the file as we last saw it: a failed database is retried only once this changes
            job.source_size, job.source_mtime_ns = st.st_size, st.st_mtime_ns
            try:
                nf = nvdb.read(path)
            except BadDatabase as e:
                self._mark_failed(s, job, str(e))
                return None
            fsutil.remove_stale_partials(path)
            digest = fsutil.sha256_file(path)
            if job.source_sha256 and digest != job.source_sha256:
                # Changed since we first read it: what we embedded belongs to another file.
                s.execute(delete(Batch).where(Batch.database_id == job.id))
                job.n_done = 0
                self._event(s, "warning", f"{path}: changed since it was first read; embedding it afresh",
                            job.path)
            job.source_sha256, job.source_dim, job.n_records = digest, nf.embedding_dim, nf.n
            try:
                prof = profiles.choose(nf, profile=self.profile, text_field=self.text_field)
                texts = prof.texts(nf)
                nf.check_matrix()
            except BadDatabase as e:
                self._mark_failed(s, job, str(e))
                return None
            job.n_chars = sum(len(t) for t in texts)
            job.error = None
            job.state = D_EMBEDDING
            done = [(b.start, b.count) for b in s.execute(
                select(Batch.start, Batch.count).where(Batch.database_id == job.id)).all()]
            job.n_done = sum(c for _, c in done)
        return _Work(job_id, path, texts, [r[nvdb.ID] for r in nf.data],
                     ranges=missing_ranges(nf.n, done, self.batch_size))

    def _commit_batches(self, items: list[_Answer]) -> None:
        """Group commit: every answered batch waiting now, in one transaction.

        Each batch row (its vectors) and its done-mark (n_done) go in together."""
        with self.store.session() as s:
            mig = s.get(Migration, self.mig.id)
            for a in items:
                s.add(Batch(database_id=a.work.job_id, start=a.start, count=len(a.vectors),
                            dim=a.vectors.shape[1], tokens=a.tokens,
                            vectors=np.ascontiguousarray(a.vectors, dtype="<f4").tobytes()))
                job = s.get(DatabaseJob, a.work.job_id)
                job.n_done = (job.n_done or 0) + len(a.vectors)
                if a.truncated:
                    job.truncated = sorted(set(job.truncated or []) | set(a.truncated))
                mig.records_embedded += len(a.vectors)
                mig.tokens_embedded += a.tokens
        for _ in items:
            crashpoints.reached("batch.committed")

    async def _commit(self, answer: "_Answer") -> None:
        """Queue an answered batch for the next group commit and wait until it is durable."""
        answer.done = asyncio.get_running_loop().create_future()
        self._pending.append(answer)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await answer.done

    async def _flush(self) -> None:
        while self._pending:
            items, self._pending = self._pending, []
            try:
                await self._w(self._commit_batches, items)
            except BaseException as e:
                for a in items:
                    if not a.done.done():
                        a.done.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            for a in items:
                if not a.done.done():
                    a.done.set_result(None)

    def _vector_blocks(self, job_id: int, n: int, dim: int) -> Iterator[np.ndarray]:
        """The committed vectors of one database in row order, one batch at a time."""
        covered = 0
        with self.store.reader() as s:
            rows = s.execute(select(Batch.start, Batch.count, Batch.dim, Batch.vectors)
                             .where(Batch.database_id == job_id).order_by(Batch.start)
                             .execution_options(yield_per=1))   # one batch in memory at a time
            for start, count, bdim, blob in rows:
                if start != covered or bdim != dim or len(blob) != count * dim * 4:
                    raise _Untiled(start)
                covered += count
                yield np.frombuffer(blob, dtype="<f4").reshape(count, dim)
        if covered != n:
            raise _Untiled(covered)

    def _stage(self, job_id: int) -> str:
        """Write, fsync and verify the new file; mark staged. Returns 'staged', 'changed' or 'failed'."""
        with self.store.session() as s:
            job = s.get(DatabaseJob, job_id)
            path, n, want_sha = Path(job.path), job.n_records, job.source_sha256
            want_size, want_mtime = job.source_size, job.source_mtime_ns
        target = self.mig.target_dim
        st = os.stat(path)
        nf = nvdb.read(path)
        # Unchanged size and mtime since it was hashed: not hashed again here (cutover
        # compares the live file's hash with want_sha before any swap anyway).
        unchanged = (st.st_size, st.st_mtime_ns) == (want_size, want_mtime)
        digest = want_sha if unchanged else fsutil.sha256_file(path)
        if nf.n != n or digest != want_sha:
            with self.store.session() as s:
                job = s.get(DatabaseJob, job_id)
                s.execute(delete(Batch).where(Batch.database_id == job_id))
                job.state, job.n_done = D_PENDING, 0
                job.source_size, job.source_mtime_ns = st.st_size, st.st_mtime_ns
                job.source_sha256 = fsutil.sha256_file(path) if unchanged else digest
                self._event(s, "warning", f"{path}: changed while it was being embedded; "
                                          f"it will be embedded again", job.path)
            return "changed"
        staged = staged_path(path, self.mig.id)
        encoder = nvdb.MatrixEncoder(n, target)
        try:
            size, digest = fsutil.atomic_write(
                staged, nvdb.render(nf, self._vector_blocks(job_id, n, target), target, encoder), like=st)
        except PermissionError as e:
            self._fail(job_id, f"{path}: cannot write the new file beside it ({e.strerror}); give this "
                               f"user write access to {path.parent}, then run again")
            return "failed"
        except _Untiled as e:
            with self.store.session() as s:
                s.execute(delete(Batch).where(Batch.database_id == job_id))
                s.get(DatabaseJob, job_id).n_done = 0
            self._fail(job_id, f"{path}: committed batches do not cover the file (at row {e.row}); "
                               f"run again to re-embed it")
            return "failed"
        crashpoints.reached("stage.written")
        problems = verify.check_staged(staged, nf, target, vectors_sha256=encoder.sha.hexdigest())
        if problems:
            fsutil.remove_if_exists(staged)
            self._fail(job_id, f"{path}: staged file failed verification: {'; '.join(problems)}")
            return "failed"
        # The staged file is durable (fsync'd, directory fsync'd) before the table says so.
        with self.store.session() as s:
            job = s.get(DatabaseJob, job_id)
            job.state = D_STAGED
            job.staged_path, job.staged_sha256, job.staged_size = str(staged), digest, size
            job.error = None
            s.execute(delete(Batch).where(Batch.database_id == job_id))
        crashpoints.reached("stage.recorded")
        self.outcome.staged += 1
        return "staged"

    async def _w(self, fn: Callable, *args):
        return await asyncio.get_running_loop().run_in_executor(self.writer, fn, *args)

    # ------------------------------------------------------------- pipeline
    async def _truncation_report(self, work: _Work, start: int, count: int) -> list[str]:
        """Ids of records in this slice the server will cut to max_model_len - 1 tokens."""
        idx = [i for i in range(start, start + count) if self.endpoint.may_be_truncated(work.texts[i])]
        if not idx:
            return []
        limit = self.endpoint.info.max_model_len - 1
        counts = await self.endpoint.count_tokens([work.texts[i] for i in idx]) \
            if self.endpoint.info.tokenize else None
        if counts is None:  # no /tokenize: report every record that may be over
            return [work.ids[i] for i in idx]
        return [work.ids[i] for i, c in zip(idx, counts) if c > limit]

    async def _embed_one(self, work: _Work, start: int, count: int) -> None:
        texts = work.texts[start:start + count]
        truncated = await self._truncation_report(work, start, count)
        try:
            async with self.limit:
                t0 = time.monotonic()
                result = await self.endpoint.embed(texts)
                self.limit.record(result.prompt_tokens or count, time.monotonic() - t0)
        except PoisonedInput as p:
            i = start + p.index
            work.failed = True
            await self._w(self._fail, work.job_id,
                          f"{work.path}: record #{i} (__id__ {work.ids[i]!r}): {p.detail}; "
                          f"shorten or remove that record's text, then run again")
            return
        if truncated:
            for rid in truncated:
                self.reporter.note(f"TRUNCATED {work.path} record {rid!r}: longer than "
                                   f"max_model_len-1 tokens, embedded from its first tokens")
        await self._commit(_Answer(work, start, result.vectors, result.prompt_tokens, truncated))
        self.outcome.records += count
        self.outcome.tokens += result.prompt_tokens
        self.outcome.truncated.extend(f"{work.path}#{r}" for r in truncated)
        self.reporter.advance(count)

    async def _finish_if_done(self, work: _Work) -> None:
        if work.outstanding == 0 and not work.producing and not work.failed and not self.stop.is_set():
            result = await self._w(self._stage, work.job_id)
            if result == "changed":
                self.outcome.restaged += 1

    async def _worker(self, queue: asyncio.Queue) -> None:
        while True:
            item = await queue.get()
            if item is None:
                queue.task_done()
                return
            work, start, count = item
            try:
                if not (self.stop.is_set() or work.failed):
                    await self._embed_one(work, start, count)
            except Exception as e:   # endpoint gave up, disk full, a bug: stop everything
                if self.fatal is None:
                    self.fatal = e
                self.stop.set()
            finally:
                work.outstanding -= 1
                queue.task_done()
            try:
                if self.fatal is None:
                    await self._finish_if_done(work)
            except Exception as e:
                if self.fatal is None:
                    self.fatal = e
                self.stop.set()

    async def _put(self, queue: asyncio.Queue, item) -> bool:
        """Queue an item unless a stop comes first (workers may all be inside long requests).

        End-markers (None) are queued even after a stop, as long as there is room."""
        while True:
            try:
                queue.put_nowait(item)
                return True
            except asyncio.QueueFull:
                if self.stop.is_set():
                    return False
                await asyncio.sleep(0.005)

    async def _drain(self, queue: asyncio.Queue, workers: list[asyncio.Task]) -> None:
        """Let in-flight batches commit; after a stop, give them STOP_GRACE seconds, then drop them."""
        if self.stop.is_set():        # queued work that no request was sent for is dropped
            while not queue.empty():
                work, _, _ = queue.get_nowait()
                work.outstanding -= 1
                queue.task_done()
        for _ in workers:             # then one end-marker per worker, after the queued work
            while not await self._put(queue, None):
                while not queue.empty():
                    work, _, _ = queue.get_nowait()
                    work.outstanding -= 1
                    queue.task_done()
        pending = set(workers)
        stop_seen: float | None = None
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            if self.stop.is_set() and pending:
                stop_seen = stop_seen or time.monotonic()
                if time.monotonic() - stop_seen > STOP_GRACE:
                    for t in pending:
                        t.cancel()     # uncommitted answers are dropped; the next run asks again
                    await asyncio.gather(*pending, return_exceptions=True)
                    break

    async def run(self, job_ids: list[int]) -> EmbedOutcome:
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.concurrency * 2)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        try:
            for job_id in job_ids:
                if self.stop.is_set():
                    break
                work = await self._w(self._prepare, job_id)
                if work is None:
                    if self.fail_fast:
                        self.stop.set()
                    continue
                ranges = work.ranges
                for start, count in ranges:
                    if self.stop.is_set() or work.failed:
                        break
                    work.outstanding += 1
                    if not await self._put(queue, (work, start, count)):
                        work.outstanding -= 1
                        break
                work.producing = False
                if not ranges:
                    await self._finish_if_done(work)
                if work.failed and self.fail_fast:
                    self.stop.set()
        finally:
            await self._drain(queue, workers)
            self.writer.shutdown(wait=True)
        if self.fatal is not None:
            raise self.fatal
        return self.outcome
