"""Re-embedding: the long-running middle of a migration, from claiming databases to handing them to staging.

The pipeline, per run:

- **read** (I/O threads, a few databases ahead; :mod:`~migrator.pipeline.load`):
  each claimed database is read once, hashed, checked and its source texts
  taken out;
- **pack**: texts go to the endpoint in requests of ``batch_size``, filled
  across databases (DVD databases are small: one request often serves two or
  three), several requests in flight, their number tuned by
  :class:`~migrator.vllm.tuning.AdaptiveLimit`;
- **keep**: a database of at most ``in_memory_rows`` records keeps its new
  vectors in memory until it is complete; a larger one appends each answered
  batch to its spool file (:mod:`~migrator.files.spool`), fsyncs it, and only
  then commits a small done-mark (offset and CRC-32) to the job table, so an
  interrupted run resumes inside it;
- **stage** (I/O threads; :mod:`~migrator.pipeline.stage`): a complete database is written beside the old one,
  fsync'd, read back and verified, and only then marked staged.

Every job-table write goes through :class:`~migrator.jobs.journal.Journal` (one
thread, one transaction for everything waiting). The rule that makes that
safe: a change that describes a file is submitted only after the file is
durable, and a batch of vectors is acknowledged only once its spooled
bytes are fsync'd and its done-mark committed.

Interrupted at any point, the next run loses at most the requests in flight and
the answered rows of small databases not yet staged; everything staged or
committed is kept. Memory holds the databases being worked on (a bounded
number of rows), never the corpus.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncGenerator, Callable, Protocol

import numpy as np
from sqlalchemy.engine import Connection

from migrator import apps, config, crashpoints
from migrator.files import durable, spool
from migrator.files.layout import spool_path
from migrator.jobs import leases, queries
from migrator.jobs.journal import Journal, defer
from migrator.jobs.models import D_EMBEDDING, Migration
from migrator.jobs.store import StateStore
from migrator.ops import allocator
from migrator.pipeline.gate import Prejudge
from migrator.pipeline.load import Failed, Job, Work, in_memory_rows, load
from migrator.pipeline.stage import Stager
from migrator.vllm.endpoint import Endpoint, PoisonedInput
from migrator.vllm.pool import EndpointPool
from migrator.vllm.steering import Control
from migrator.vllm.tuning import AdaptiveLimit

log = logging.getLogger("migrator.run")

STOP_GRACE = 10.0  # seconds in-flight requests get to finish after SIGINT/SIGTERM
MAX_IN_FLIGHT = 64  # ceiling for the adaptive in-flight limit
READ_AHEAD = 4  # databases read ahead of the requests (and claimed at once), at the least...
READ_AHEAD_RECORDS = 2048  # ...or as many as hold about this many records (small databases)
READ_AHEAD_MAX = 32  # ...but never more than this many
IO_THREADS = 3  # reading, writing and verifying files (hashing and fsync release the GIL)
SPOOL_THREADS = 2  # appending answered batches of large databases to their spools
TRIM_EVERY = 64  # staged databases between handing freed memory back (allocator.trim)


class Reporter(Protocol):
    """What the runner tells its caller (the CLI draws bars or logs lines from it)."""

    def start(self, total_records: int, done_records: int) -> None: ...
    def advance(self, records: int) -> None: ...
    def note(self, message: str) -> None: ...
    def step(self, message: str) -> None: ...  # a step of its own after the embedding (gate, swap)


class NullReporter:
    def start(self, total_records: int, done_records: int) -> None:
        pass

    def advance(self, records: int) -> None:
        pass

    def note(self, message: str) -> None:
        log.info("%s", message)

    def step(self, message: str) -> None:
        log.info("%s", message)


@dataclass
class _Slice:
    work: Work
    start: int
    count: int


@dataclass
class EmbedOutcome:
    records: int = 0
    tokens: int = 0
    staged: int = 0
    failed: int = 0
    restaged: int = 0
    truncated: list[str] = field(default_factory=list)


def make_limit(concurrency: int | None) -> AdaptiveLimit:
    """The run's in-flight limit: found by measuring (None), or fixed at ``concurrency``."""
    return AdaptiveLimit(fixed=concurrency, maximum=MAX_IN_FLIGHT)


class Embedder:
    """Runs the embedding and staging of one migration's jobs."""

    def __init__(
        self,
        store: StateStore,
        migration: Migration,
        endpoint: Endpoint | EndpointPool,
        *,
        limit: AdaptiveLimit,
        batch_size: int,
        fail_fast: bool = False,
        reporter: Reporter | None = None,
        stop: asyncio.Event | None = None,
        control: Control | None = None,
        drop: asyncio.Event | None = None,
        prejudge: Prejudge | None = None,
    ):
        """``limit`` is the in-flight limit the endpoint reports pushback to (make_limit);
        ``prejudge`` judges the quality gate's sampled databases as they stage."""
        self.store = store
        self.mig = migration
        self.mid = migration.id
        self.target = migration.target_dim
        self.endpoint = endpoint
        self.batch_size = max(1, batch_size)
        self.limit = limit
        self.concurrency = self.limit.maximum
        self.fail_fast = fail_fast
        self.reporter = reporter or NullReporter()
        self.stop = stop or asyncio.Event()
        self.drop = drop or asyncio.Event()  # a second Ctrl-C: drop the requests in flight now
        self.spec = apps.Spec.parse(migration.profile)  # as the migration was scanned
        self.outcome = EmbedOutcome()
        self.control = control
        self.prejudge = prejudge
        self.fatal: BaseException | None = None
        self._journal: Journal | None = None  # created by run()
        self._stager: Stager | None = None  # created by run(), with the journal
        self.io = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="migrator-io")
        # appends to spools, apart from the I/O threads: a batch is not held up behind a staging
        self.spooler = ThreadPoolExecutor(max_workers=SPOOL_THREADS, thread_name_prefix="migrator-spool")
        self.spools = spool.Spools()
        self._tasks: set[asyncio.Task] = set()
        self._alive_rows = 0
        self._room_cond: asyncio.Condition | None = None  # created by run()
        self.owner = leases.worker_name()
        self.held: set[int] = set()  # databases this worker holds a lease on
        self.lost: set[int] = set()  # ... that another worker took over (we were too slow)
        self._works: dict[int, Work] = {}
        self._seen = [0, 0]  # databases read, their records: how many to claim and read ahead

    def _ahead(self) -> int:
        """Databases to claim at once and hold read ahead: a few long videos, or many short
        ones (one claim, a committed transaction, for every 4 databases of 2 records held a
        100,000-database run to 200 a second)."""
        dbs, records = self._seen
        if not dbs:
            return READ_AHEAD
        return max(READ_AHEAD, min(READ_AHEAD_MAX, READ_AHEAD_RECORDS * dbs // max(1, records)))

    @property
    def journal(self) -> Journal:
        """The run's journal: every write goes through it (there is one only inside run())."""
        assert self._journal is not None, "used outside run()"
        return self._journal

    @property
    def stager(self) -> Stager:
        """Stages complete databases (stage.py); there is one only inside run()."""
        assert self._stager is not None, "used outside run()"
        return self._stager

    @property
    def _room(self) -> asyncio.Condition:
        """Notified when databases leave memory (created by run(), in its event loop)."""
        assert self._room_cond is not None, "used outside run()"
        return self._room_cond

    # ----------------------------------------------------------- job table
    def _submit(self, change: Callable[[Connection], object], after: str | None = None, times: int = 1) -> Future:
        fut = self.journal.submit(change)
        if after:

            def reached(f: Future) -> None:
                if f.exception() is None:
                    for _ in range(times):
                        crashpoints.reached(after)

            fut.add_done_callback(reached)
        return fut

    def _fail(self, job: Job, message: str, st: os.stat_result | None = None) -> Future:
        self.outcome.failed += 1
        self.reporter.note(f"FAILED {message}")
        mid = self.mid

        def change(conn: Connection) -> None:
            values: dict[str, int] = {}
            if st is not None:  # retried only once the file changes from this
                values.update(source_size=st.st_size, source_mtime_ns=st.st_mtime_ns)
            queries.fail_job(conn, job.id, mid, job.path, message, **values)

        return self._submit(change)

    def _done_ranges(self, job: Job) -> list[tuple[int, int]] | None:
        """Its committed batches, or None if its spool stops short of their vectors."""
        with self.store.engine.connect() as conn:
            done = queries.done_ranges(conn, job.id)
        end = max((e for _, _, e in done if e is not None), default=0)
        if end and not spool.holds(spool_path(job.path, self.mid), end):
            return None
        return [(start, count) for start, count, _ in done]

    def _load(self, job: Job) -> Work | Failed:
        """Read a claimed database (an I/O thread; load.py)."""
        got = load(job, self.spec, target=self.target, batch_size=self.batch_size, done_ranges=self._done_ranges)
        if isinstance(got, Work):
            self._seen[0] += 1  # an I/O thread: a count a moment stale only sizes the next claim
            self._seen[1] += got.nf.n
        return got

    def _prepared(self, w: Work) -> None:
        """Record that a database is being embedded, as it was read."""
        job, mid = w.job, self.mid
        if (job.source_sha256 and w.sha != job.source_sha256) or w.lost:
            why = "its spool lost vectors it had committed" if w.lost else "changed since it was first read"

            def forget(conn: Connection) -> None:  # what we embedded before is not this file's
                queries.forget_vectors(conn, job.id)
                queries.add_event(conn, mid, "warning", f"{w.path}: {why}; embedding it afresh", job.path)

            self._submit(forget)
        settled = durable.settled(w.st)  # else cutover hashes it: a change may hide in the same tick
        self.journal.execute(
            queries.SET_PREPARED,
            dict(
                _id=job.id,
                source_size=w.st.st_size,
                source_mtime_ns=w.st.st_mtime_ns,
                source_ctime_ns=w.st.st_ctime_ns if settled else None,
                source_ino=w.st.st_ino if settled else None,
                source_sha256=w.sha,
                source_dim=w.nf.embedding_dim,
                n_records=w.nf.n,
                n_chars=sum(len(t) for t in w.texts),
                error=None,
                state=D_EMBEDDING,
            ),
        )

    async def _finish_if_done(self, w: Work) -> None:
        if w.finished or w.outstanding or w.producing:
            return
        # After a stop (signal, time window) a database whose every row is in is still staged:
        # that is what the grace for requests in flight is for. One with rows missing never is.
        if w.failed or w.left or self.fatal is not None:
            self._release(w)
            return
        w.finished = True
        try:
            result = await asyncio.get_running_loop().run_in_executor(self.io, self.stager.stage, w)
        finally:
            self._release(w)
        if result == "changed":
            self.outcome.restaged += 1
        elif result == "staged":
            self.outcome.staged += 1
            if self.prejudge is not None and w.staged and self.prejudge.wants(w.job.id) and not self.stop.is_set():
                self._spawn(self.prejudge.staged(w.staged, w.texts, w.profile, self.limit))
            if self.outcome.staged % TRIM_EVERY == 0:
                allocator.trim()

    # ------------------------------------------------------------ embedding
    async def _truncation_report(self, sl: _Slice) -> list[str]:
        """Ids of records in this slice the server will cut to max_model_len - 1 tokens."""
        w = sl.work
        idx = [i for i in range(sl.start, sl.start + sl.count) if self.endpoint.may_be_truncated(w.texts[i])]
        if not idx:
            return []
        info = self.endpoint.info
        assert info is not None and info.max_model_len is not None  # or may_be_truncated says no
        limit = info.max_model_len - 1
        counts = await self.endpoint.count_tokens([w.texts[i] for i in idx]) if info.tokenize else None
        if counts is None:  # no /tokenize: report every record that may be over
            return [w.ids[i] for i in idx]
        return [w.ids[i] for i, c in zip(idx, counts) if c > limit]

    def _spool(self, answers: list[tuple[_Slice, np.ndarray, int, list[str]]]) -> list[dict]:
        """Append each answered batch to its database's spool, durably (a spool thread); returns
        the batch rows that say where they went."""
        rows = []
        for sl, v, tokens, _ in answers:
            data = np.ascontiguousarray(v, dtype="<f4").tobytes()
            offset, crc = self.spools.append(spool_path(sl.work.path, self.mid), data)
            crashpoints.reached("batch.spooled")
            rows.append(
                dict(
                    database_id=sl.work.job.id,
                    start=sl.start,
                    count=sl.count,
                    dim=v.shape[1],
                    tokens=tokens,
                    vectors=None,
                    spool_offset=offset,
                    crc32=crc,
                )
            )
        return rows

    async def _commit_batches(self, answers: list[tuple[_Slice, np.ndarray, int, list[str]]]) -> None:
        """Batches of large databases: their vectors appended to their spools and fsync'd, then
        their done-marks committed, in one transaction."""
        rows = await asyncio.get_running_loop().run_in_executor(self.spooler, self._spool, answers)
        mid = self.mid

        def change(conn: Connection) -> None:
            queries.add_batches(conn, rows)
            for sl, _v, _tokens, truncated in answers:
                values: dict[str, object] = {"n_done": queries.JOBS.c.n_done + sl.count}
                if truncated:
                    old = queries.truncated_of(conn, sl.work.job.id)
                    values["truncated"] = sorted(set(old or []) | set(truncated))
                queries.set_job(conn, sl.work.job.id, **values)
            # the migration row last, before the commit: one lock order for every worker (journal.py)
            defer(
                conn,
                queries.COUNT_EMBEDDED,
                dict(_mid=mid, _records=sum(r["count"] for r in rows), _tokens=sum(r["tokens"] for r in rows)),
            )

        await asyncio.wrap_future(self._submit(change, after="batch.committed", times=len(rows)))

    async def _embed_request(self, slices: list[_Slice]) -> None:
        slices = [sl for sl in slices if not sl.work.failed]
        if not slices:
            return
        texts = [t for sl in slices for t in sl.work.texts[sl.start : sl.start + sl.count]]
        if self.control is not None:  # an operator's PAUSE and THROTTLE files
            await self.control.wait_while_paused(self.stop)
            self.limit.set_cap(self.control.throttle.max_in_flight)
            await self.control.pace(sum(len(t) for t in texts) // 4 + len(texts), self.stop)
            if self.stop.is_set():
                return  # unsent: the next run asks again
        truncated = [await self._truncation_report(sl) for sl in slices]
        try:
            async with self.limit:
                t0 = time.monotonic()
                result = await self.endpoint.embed(texts)
                self.limit.record(result.prompt_tokens or len(texts), time.monotonic() - t0)
        except PoisonedInput as p:
            at = p.index
            for k, sl in enumerate(slices):
                if at < sl.count:
                    i = sl.start + at
                    sl.work.failed = True
                    self._fail(
                        sl.work.job,
                        f"{sl.work.path}: record #{i} (__id__ {sl.work.ids[i]!r}): "
                        f"{p.detail}; shorten or remove that record's text, then run again",
                    )
                    await self._embed_request(slices[:k] + slices[k + 1 :])  # the others again, without it
                    return
                at -= sl.count
            raise
        # tokens are counted for the whole request; share them out by characters
        chars = [sum(len(t) for t in sl.work.texts[sl.start : sl.start + sl.count]) for sl in slices]
        total_chars = max(1, sum(chars))
        answers = []
        row = 0
        for sl, c, trunc in zip(slices, chars, truncated):
            v = result.vectors[row : row + sl.count]
            row += sl.count
            tokens = round(result.prompt_tokens * c / total_chars)
            for rid in trunc:
                self.reporter.note(
                    f"TRUNCATED {sl.work.path} record {rid!r}: longer than "
                    f"max_model_len-1 tokens, embedded from its first tokens"
                )
            self.outcome.truncated.extend(f"{sl.work.path}#{r}" for r in trunc)
            if sl.work.failed:
                continue  # dropped meanwhile (lease lost): nothing to keep
            if sl.work.in_memory:
                assert sl.work.vectors is not None  # not failed, so not released yet
                sl.work.vectors[sl.start : sl.start + sl.count] = v
                sl.work.left -= sl.count
                sl.work.tokens += tokens
                sl.work.truncated.extend(trunc)
            else:
                answers.append((sl, v, tokens, trunc))
        if answers:  # acknowledged only once durable
            await self._commit_batches(answers)
            for sl, _, _, _ in answers:
                sl.work.left -= sl.count
        self.outcome.records += len(texts)
        self.outcome.tokens += result.prompt_tokens
        self.reporter.advance(len(texts))

    async def _worker(self, requests: asyncio.Queue) -> None:
        while True:
            req = await requests.get()
            if req is None:
                requests.task_done()
                return
            try:
                if not self.stop.is_set():
                    await self._embed_request(req)
            except Exception as e:  # endpoint gave up, disk full, a bug: stop everything
                self._fatal(e)
            finally:
                for sl in req:
                    sl.work.outstanding -= 1
                requests.task_done()
            for w in {id(sl.work): sl.work for sl in req}.values():
                self._spawn(self._finish_if_done(w))

    # ------------------------------------------------------------ plumbing
    def _fatal(self, e: BaseException) -> None:
        if self.fatal is None:
            self.fatal = e
        self.stop.set()

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            if not t.cancelled():
                e = t.exception()
                if e is not None:
                    self._fatal(e)

        task.add_done_callback(done)

    def _bound(self) -> int:
        """Rows of databases allowed in memory at once: enough to fill the requests in flight."""
        return (self.limit.limit + 2) * self.batch_size + in_memory_rows(self.batch_size)

    def _fits(self, w: Work) -> bool:
        return self._alive_rows == 0 or self.stop.is_set() or self._alive_rows + w.rows <= self._bound()

    async def _admit(self, w: Work) -> None:
        async with self._room:
            await self._room.wait_for(lambda: self._fits(w))
            self._alive_rows += w.rows

    def _release(self, w: Work) -> None:
        self.held.discard(w.job.id)
        if w.spooled:
            self.spools.forget(spool_path(w.path, self.mid))
        self._works.pop(w.job.id, None)
        if w.rows:
            self._alive_rows -= w.rows
            w.rows = 0
            w.vectors = None
            self._spawn(self._wake_room())

    async def _wake_room(self) -> None:
        async with self._room:
            self._room.notify_all()

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

    async def _send(self, queue: asyncio.Queue, req: list[_Slice]) -> None:
        """Queue a request; after a stop, its slices are given back instead."""
        if not await self._put(queue, req):
            for sl in req:
                sl.work.outstanding -= 1

    def _discard_queued(self, queue: asyncio.Queue) -> None:
        while not queue.empty():
            req = queue.get_nowait()
            if req is not None:
                for sl in req:
                    sl.work.outstanding -= 1
                for w in {id(sl.work): sl.work for sl in req}.values():
                    self._spawn(self._finish_if_done(w))
            queue.task_done()

    async def _drain(self, queue: asyncio.Queue, workers: list[asyncio.Task]) -> None:
        """Let in-flight batches commit; after a stop, give them STOP_GRACE seconds, then drop them."""
        if self.stop.is_set():  # queued work that no request was sent for is dropped
            self._discard_queued(queue)
        for _ in workers:  # then one end-marker per worker, after the queued work
            while not await self._put(queue, None):
                self._discard_queued(queue)
        pending = set(workers)
        stop_seen: float | None = None
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.25)
            if self.stop.is_set() and pending:
                if stop_seen is None:
                    stop_seen = time.monotonic()
                    if self.limit.in_flight:
                        self.reporter.note(
                            f"stopping: {self.limit.in_flight} request(s) in flight finish "
                            f"first, {STOP_GRACE:.0f} s at most (Ctrl-C again to drop them)"
                        )
                if self.drop.is_set() or time.monotonic() - stop_seen > STOP_GRACE:
                    for t in pending:
                        t.cancel()  # unanswered requests are dropped; the next run asks again
                    await asyncio.gather(*pending, return_exceptions=True)
                    break
        while self._tasks:  # stagings under way finish (they are short and local)
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _claims(self) -> AsyncGenerator[Job, None]:
        """The databases this worker takes on, claimed a few at a time (leases.py)."""
        while not self.stop.is_set():
            n = self._ahead()

            def claim(conn: Connection, n: int = n) -> list[Job]:
                return leases.claim(conn, self.mid, self.owner, n=n)

            got = await asyncio.wrap_future(self.journal.submit(claim))
            if not got:
                return
            self.held.update(j.id for j in got)
            for job in got:
                yield job

    async def _renew_leases(self) -> None:
        """Keep this worker's leases alive; drop a database another worker took over."""
        while True:
            await asyncio.sleep(config.lease_seconds() / 4)
            ids = sorted(self.held)

            def renew(conn: Connection, ids: list[int] = ids) -> set[int]:
                return leases.renew(conn, self.owner, ids)

            lost = await asyncio.wrap_future(self.journal.submit(renew))
            for job_id in lost & self.held:
                self.lost.add(job_id)
                w = self._works.get(job_id)
                log.warning(
                    "%s: lease lost (this worker was stalled past it); another worker has it now, dropping it here",
                    w.path if w else f"database #{job_id}",
                )
                if w is not None:
                    w.failed = True
                    self._spawn(self._finish_if_done(w))

    async def _produce(self, queue: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        ahead: deque[asyncio.Future] = deque()
        claims = self._claims()
        req: list[_Slice] = []
        fill = 0

        async def read_ahead() -> None:
            while len(ahead) < self._ahead() and not self.stop.is_set():
                job = await anext(claims, None)
                if job is None:
                    return
                ahead.append(loop.run_in_executor(self.io, self._load, job))

        try:
            await read_ahead()
            while ahead and not self.stop.is_set():
                work = await ahead.popleft()
                await read_ahead()
                if isinstance(work, Failed):
                    self.held.discard(work.job.id)
                    self._fail(work.job, work.message, work.st)
                    if self.fail_fast:
                        self.stop.set()
                    continue
                self._works[work.job.id] = work
                if work.job.id in self.lost:
                    self._release(work)
                    continue
                if req and not self._fits(work):
                    # the part-filled request goes now: the databases in it may be what
                    # holds the room this one waits for (they finish only once it is answered)
                    await self._send(queue, req)
                    req, fill = [], 0
                await self._admit(work)
                if self.stop.is_set():
                    self._release(work)
                    break
                self._prepared(work)
                for start, count in work.ranges:
                    while count and not self.stop.is_set():
                        take = min(count, self.batch_size - fill)
                        req.append(_Slice(work, start, take))
                        work.outstanding += 1
                        fill += take
                        start += take
                        count -= take
                        if fill == self.batch_size:
                            await self._send(queue, req)
                            req, fill = [], 0
                work.producing = False
                if not work.ranges:
                    await self._finish_if_done(work)
            if req and not self.stop.is_set():
                await self._send(queue, req)
            elif req:
                for sl in req:
                    sl.work.outstanding -= 1
        finally:
            for fut in ahead:  # read but never started: nothing to undo
                fut.cancel()
            await claims.aclose()

    async def _wake_on_stop(self) -> None:
        """A stop must not wait for a request to finish before anyone looks at it: wake the
        producer where it waits for room (a Condition sees a change only when notified)."""
        await self.stop.wait()
        async with self._room:
            self._room.notify_all()

    async def run(self) -> EmbedOutcome:
        """Claim, embed and stage databases of the migration until none is left to claim."""
        self._journal = Journal(self.store)
        self._stager = Stager(self.store, self.mig, self._journal, self._fail)
        self._room_cond = asyncio.Condition()
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.concurrency * 2)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        renewer = asyncio.create_task(self._renew_leases())
        waker = asyncio.create_task(self._wake_on_stop())
        try:
            try:
                await self._produce(queue)
            except Exception as e:
                self._fatal(e)
            if self.stop.is_set():
                self._discard_queued(queue)
        finally:
            await self._drain(queue, workers)
            renewer.cancel()
            waker.cancel()
            await asyncio.gather(renewer, waker, return_exceptions=True)
            if self.journal.broken is None:  # what is left unfinished, others may take at once
                self.journal.submit(lambda conn: leases.release_all(conn, self.mid, self.owner))
            await asyncio.get_running_loop().run_in_executor(None, self.journal.close)
            self.io.shutdown(wait=True)
            self.spooler.shutdown(wait=True)
        broken = self.journal.broken
        if self.fatal is None and broken is not None:
            self.fatal = broken
        if self.fatal is not None:
            raise self.fatal
        return self.outcome
