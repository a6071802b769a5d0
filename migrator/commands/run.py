"""`migrate run`: scan, embed, stage, check and (unless told not to) cut over. Resumable."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import secrets
import signal
import threading
import time
from typing import Any

from sqlalchemy import Row

from migrator import apps, crashpoints
from migrator.commands.common import (
    RunResult,
    _apply_configs,
    _ask,
    _before_cutover_hook,
    _gate_failed,
    _hook_figures,
    _job_counts,
    _result,
    _step,
    _writer,
)
from migrator.commands.plan import _probe_unknown
from migrator.commands.settings import Settings
from migrator.errors import EndpointRejected, Interrupted, LockHeld, MigratorError, UsageError, WindowEnded
from migrator.files import nvdb
from migrator.files.layout import is_own_file
from migrator.jobs import claims, leases, queries
from migrator.jobs.lock import WriterLock
from migrator.jobs.models import (
    ACTIVE_MIGRATION_STATES,
    D_EMBEDDING,
    D_FAILED,
    D_PENDING,
    D_STAGED,
    M_RUNNING,
    M_STAGED,
    Migration,
)
from migrator.jobs.store import StateStore
from migrator.ops import allocator, hooks, window
from migrator.pipeline import gate, swap
from migrator.pipeline.runner import Embedder, NullReporter, Reporter, make_limit
from migrator.pipeline.scan import MIGRATE, SKIP, Scanned, scan
from migrator.vllm.endpoint import Endpoint, PoisonedInput, resolve_model
from migrator.vllm.pool import EndpointPool
from migrator.vllm.serve import ManagedServer
from migrator.vllm.tuning import AdaptiveLimit


def _new_migration_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _active(s) -> Migration | None:
    return queries.latest_migration(s, ACTIVE_MIGRATION_STATES)


def _changed_since_it_failed(job: Row) -> bool:
    """Its file, or for an application that keeps a working dir the files beside it."""
    try:
        st = os.stat(job.path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns) != (job.source_size, job.source_mtime_ns) or _dir_changed_since(job)


def _dir_changed_since(job: Row) -> bool:
    """For a file whose application keeps a working dir (its texts may come from the files
    beside it, as nano-graphrag's do): did anything there change since the job failed?"""
    if apps.unit_of(job.profile, job.path) == job.path:
        return False  # a unit of its own (a DVD video): only its own file counts
    since = job.updated_at.replace(tzinfo=datetime.timezone.utc).timestamp() if job.updated_at else 0.0
    try:
        with os.scandir(os.path.dirname(job.path)) as entries:
            return any(
                e.is_file(follow_symlinks=False)
                and not is_own_file(e.name)
                and e.stat(follow_symlinks=False).st_mtime > since
                for e in entries
            )
    except OSError:
        return False


def _same_roots(given, recorded) -> bool:
    """The same directories, however spelled: through a symlink or not, relative or absolute
    (`migrate cron` writes absolute paths; a user may have typed a symlinked one)."""
    return sorted(os.path.realpath(r) for r in given) == sorted(os.path.realpath(r) for r in recorded)


class _StopOnSignals:
    """SIGINT/SIGTERM set ``event`` (a clean stop) instead of killing the process; a second
    one sets ``drop`` too (the requests in flight are dropped instead of awaited)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        event: asyncio.Event,
        drop: asyncio.Event | None = None,
        reporter: "Reporter | None" = None,
    ):
        self.loop, self.event = loop, event
        self.saved: dict[signal.Signals, Any] = {}  # the handlers we replaced
        self.drop, self.reporter = drop, reporter

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.getsignal(sig)
                self.loop.add_signal_handler(sig, self._fire, sig)
        return self

    def _fire(self, sig) -> None:
        self.received = sig
        name = signal.Signals(sig).name
        if self.event.is_set():
            if self.drop is not None and not self.drop.is_set():
                self.drop.set()
                if self.reporter is not None:
                    self.reporter.note(
                        f"{name} again: dropping the requests in flight (the next run asks for them again)"
                    )
            return
        self.event.set()
        if self.reporter is not None:
            self.reporter.note(f"{name}: stopping; committed work is kept (Ctrl-C again to stop sooner)")

    def __exit__(self, *exc):
        for sig, old in self.saved.items():
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, old)


def run(settings: Settings, *, reporter: Reporter | None = None) -> RunResult:
    """Migrate: scan (first time), embed, stage, verify, cut over. Resumes an unfinished migration."""
    reporter = reporter or NullReporter()
    allocator.tune()  # before the run's threads start: memory flat in the number of databases
    # bad values: refused now; outside --window: exit 9 at once, nothing done
    deadline = window.time_left(settings.max_duration, settings.until, window=settings.window)
    settings.check_endpoints()  # bad URL or key file: refuse before touching any state
    settings.check_key()
    if settings.serve and not settings.model:
        raise UsageError("--serve needs --model: it names the model vllm must load")
    with _writer(settings, "run", shared=True) as (store, held), contextlib.ExitStack() as owned:
        try:
            if settings.serve:  # our own vLLM: stopped on the way out, whatever happens
                assert settings.model  # --serve without --model was refused above
                try:
                    server = owned.enter_context(
                        ManagedServer(
                            resolve_model(settings.model)[0],
                            log_dir=settings.state_path,
                            api_key=settings.api_key,
                            http=settings.http,
                            gpu=settings.serve_gpu,
                            memory_fraction=settings.serve_memory_fraction,
                            extra_args=tuple(settings.serve_args),
                            startup_timeout=settings.serve_timeout,
                        )
                    )
                except KeyboardInterrupt:  # Ctrl-C or SIGTERM while it loads: it was stopped
                    raise Interrupted(
                        "interrupted while vLLM was starting; the vLLM it started was stopped and nothing was changed"
                    ) from None
                settings = dataclasses.replace(settings, endpoint=server)
            result = asyncio.run(_run(settings, store, reporter, deadline, held))
        except (WindowEnded, LockHeld):
            raise  # the normal ends of a cron tick: no failure to report
        except MigratorError as e:
            hooks.run_hook(
                "failure",
                settings.on_failure,
                {
                    "outcome": "error",
                    "exit_code": e.exit_code,
                    "message": str(e),
                    "state_dir": settings.state_path.resolve(),
                },
            )
            raise
        ok = result.outcome in ("done", "staged", "nothing_to_do")
        hooks.run_hook(
            "success" if ok else "failure",
            settings.on_success if ok else settings.on_failure,
            _hook_figures(result, settings),
        )
        return result


async def _window(seconds: float, stop: asyncio.Event, ended: list, reporter: Reporter) -> None:
    await asyncio.sleep(seconds)
    if not stop.is_set():
        ended.append(True)
        reporter.note(
            f"the time window ends now ({seconds:.0f} s after the start): finishing the "
            f"requests in flight, then stopping"
        )
        stop.set()


async def _run(
    settings: Settings,
    store: StateStore,
    reporter: Reporter,
    deadline: float | None = None,
    held: WriterLock | None = None,
) -> RunResult:
    held = held or WriterLock()
    stop = asyncio.Event()
    drop = asyncio.Event()  # a second signal: do not wait for the requests in flight
    started = time.monotonic()
    limit = make_limit(settings.concurrency)  # the endpoint tells it of each pushback
    endpoint = settings.make_endpoint(on_pushback=limit.throttled)
    ended: list = []
    timer = asyncio.create_task(_window(deadline, stop, ended, reporter)) if deadline is not None else None

    def stopped() -> MigratorError:
        if ended:
            return WindowEnded(
                f"stopped at the end of the time window; everything staged or "
                f"committed is kept. `migrate run` resumes migration {mig.id}"
            )
        with store.session() as s:  # `migrate status` says so, until a run resumes it
            m = queries.migration(s, mig.id)
            if m is not None and m.state in ACTIVE_MIGRATION_STATES:
                m.message = (
                    f"interrupted at {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()}); `migrate run` resumes it"
                )
        return Interrupted(f"interrupted; committed work is kept. Run `migrate run` again to resume migration {mig.id}")

    try:
        with _StopOnSignals(asyncio.get_running_loop(), stop, drop, reporter):
            started_as = await _start_or_resume(settings, store, endpoint, reporter, held, stop)
            if isinstance(started_as, RunResult):
                return started_as
            mig = started_as
            if held.exclusive:  # the only writer: any lease left is a dead run's
                await asyncio.to_thread(_in_transaction, store, leases.clear_all, mig.id)
            await _sanity_probe(settings, store, mig, endpoint, reporter)
            prejudge = _prejudge(settings, store, mig, endpoint)
            cut = None
            rounds = 0
            while True:
                failed_fast = await _embed_pending(
                    settings, store, mig, endpoint, limit, reporter, stop, drop, prejudge=prejudge
                )
                if failed_fast:
                    break  # --fail-fast: report the failure (exit 4), nothing swapped
                if stop.is_set():
                    raise stopped()
                counts = _job_counts(store, mig.id)
                if counts.get(D_PENDING) or counts.get(D_EMBEDDING):
                    free = await _wait_for_others(store, mig.id, reporter, stop)
                    if stop.is_set():
                        raise stopped()
                    rounds += 1
                    if free and rounds < MAX_ROUNDS:
                        continue  # left by a worker that stopped or died, or changed under us
                    if free:
                        break  # reported as partial: `migrate run` again takes them
                    continue  # the others finished theirs: see what is left
                if not held.try_exclusive():
                    return _left_to_others(store, mig, started)
                with store.reader() as s:
                    if queries.migration(s, mig.id).state not in ACTIVE_MIGRATION_STATES:
                        return _result(store, mig, None, started, settings.key_source)  # another worker cut it over
                if not settings.cutover:
                    with store.session() as s:
                        m = queries.migration(s, mig.id)
                        if m.state == M_RUNNING:
                            m.state = M_STAGED
                    break
                if counts.get(D_STAGED) and not settings.quality_gate:
                    reporter.note(
                        "quality gate: SKIPPED (--no-quality-gate); staging verified each "
                        "file, nothing checked that the vectors mean anything"
                    )
                elif counts.get(D_STAGED):
                    _step(
                        reporter,
                        f"quality gate: checking a sample of the {counts[D_STAGED]} staged database(s) before any swap",
                    )
                    report = await gate.check(
                        store,
                        mig.id,
                        mig.target_dim,
                        endpoint,
                        every_database=False,
                        prejudged=prejudge.results if prejudge else None,
                    )
                    reporter.note(
                        f"quality gate: {'passed' if report.passed else 'FAILED'} "
                        f"({report.databases} staged, {report.self_hits}/{report.sampled} sampled "
                        f"records found by their own text"
                        + (
                            f", neighbourhood overlap {report.overlap:.2f} vs {report.chance:.2f} by chance"
                            if report.overlap is not None
                            else ""
                        )
                        + ")"
                    )
                    if not report.passed:
                        with store.session() as s:
                            queries.migration(s, mig.id).state = M_STAGED
                        return _gate_failed(store, mig, report, started)
                if settings.on_before_cutover and counts.get(D_STAGED):
                    held_result = await _before_cutover_hook(store, mig, settings, started)
                    if held_result is not None:
                        return held_result
                # also with nothing staged: a kill after the last swap leaves the
                # migration running with every database cut over; cutover closes it
                if counts.get(D_STAGED):
                    _step(reporter, f"cutover: swapping {counts[D_STAGED]} database(s) in (backups kept)")
                cut = await asyncio.to_thread(swap.cutover, store, mig.id)
                if cut.restage and rounds < MAX_ROUNDS:
                    rounds += 1
                    continue
                break
            result = _result(store, mig, cut, started, settings.key_source)
            if settings.apply_config and cut is not None and cut.done:
                result.applied = _apply_configs(store, mig, settings.key_source)
            return result
    finally:
        if timer is not None:
            timer.cancel()
        await endpoint.aclose()


async def _start_or_resume(
    settings: Settings,
    store: StateStore,
    endpoint: Endpoint | EndpointPool,
    reporter: Reporter,
    held: WriterLock,
    stop: asyncio.Event,
) -> Migration | RunResult:
    """The unfinished migration (checked against what was asked), or a new one, scanned and
    recorded. With several workers, one at a time gets here: the others wait, then resume it."""
    waited = False
    while not held.try_scan():
        if not waited:
            reporter.note("another worker is deciding what to migrate (scanning); waiting for it")
            waited = True
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
            raise Interrupted("interrupted before anything started; nothing to resume")
        except asyncio.TimeoutError:
            pass
    try:
        with store.session() as s:
            active = _active(s)
        if active and settings.model:
            want_model = resolve_model(settings.model)[0]
            if want_model != resolve_model(active.requested_model)[0] or (
                settings.dim and settings.dim != active.target_dim
            ):
                raise UsageError(
                    f"migration {active.id} to {active.requested_model} ({active.target_dim} dims) "
                    f"is unfinished; finish it with `migrate run` or undo it with "
                    f"`migrate rollback` before starting another"
                )
        if active and settings.spec.forced and settings.spec != apps.Spec.parse(active.profile):
            raise UsageError(
                f"migration {active.id} reads texts as {active.profile!r}, not "
                f"{settings.spec.describe()!r}; finish it without those options (it keeps its "
                f"own) or roll it back first"
            )
        if active and settings.roots and not _same_roots(settings.roots, active.roots):
            raise UsageError(
                f"migration {active.id} over {', '.join(active.roots)} is unfinished; finish it "
                f"(`migrate run` without --root) or roll it back before migrating other roots"
            )
        if active is not None:
            claims.take(active.roots, settings.job_table, active.id)  # refused if another owns it
        elif settings.roots:
            claims.check([str(r) for r in settings.roots], settings.job_table)  # before any scan
        requested = settings.model or (active.requested_model if active else None)
        if not requested:
            raise UsageError("--model is required for a new migration (8b, 4b, 0.6b or a model id)")
        info = await endpoint.probe(requested, target_dim=settings.dim or (active.target_dim if active else None))
        if info.note:
            reporter.note(info.note)
        if active is None:
            if not settings.roots:
                raise UsageError("no --root given: name the directory that holds the databases")
            with store.reader() as s:
                known = queries.migration_ids(s)
            loop = asyncio.get_running_loop()

            def scanned_all() -> Scanned:
                out = Scanned()
                try:
                    for f in scan(
                        settings.roots,
                        settings.pattern,
                        endpoint.target_dim,
                        spec=settings.spec,
                        target_model=info.model,
                        follow_symlinks=settings.follow_symlinks,
                        known_migrations=known,
                    ):
                        if f.unknown_model:  # a few records embedded again, on the loop
                            probe = _probe_unknown(endpoint, f, settings, reporter)
                            f = asyncio.run_coroutine_threadsafe(probe, loop).result()
                        out.add(f)
                except BaseException:
                    out.close()
                    raise
                return out

            found = await asyncio.to_thread(scanned_all)
            try:
                if found.todo and settings.confirm is not None:
                    dims = ", ".join(str(d) for d in sorted(found.dims))
                    _ask(
                        settings,
                        f"Migrate {found.todo} database(s), {found.records} records, "
                        f"under {', '.join(map(str, settings.roots))} from {dims} dims to "
                        f"{info.model} at {endpoint.target_dim} dims"
                        f"{' and swap them in (backups are kept)' if settings.cutover else ''}?",
                    )
                return await asyncio.to_thread(_create_migration, settings, store, endpoint, requested, reporter, found)
            finally:
                found.close()
        if info.native_dim != active.native_dim or endpoint.target_dim != active.target_dim:
            raise EndpointRejected(
                f"{endpoint.base_url}: serves {info.native_dim}-dim vectors but "
                f"migration {active.id} was started with {active.native_dim}; "
                f"point --endpoint at the same model"
            )
        if settings.confirm is not None:
            counts = _job_counts(store, active.id)
            left = counts.get(D_PENDING, 0) + counts.get(D_EMBEDDING, 0) + counts.get(D_STAGED, 0)
            _ask(
                settings,
                f"Resume migration {active.id}: {left} database(s) still to embed or swap, to "
                f"{active.model} at {active.target_dim} dims"
                f"{' (backups are kept)' if settings.cutover else ''}?",
            )
        reporter.note(f"resuming migration {active.id} ({active.requested_model}, {active.target_dim} dims)")
        if (active.message or "").startswith("interrupted"):
            with store.session() as s:
                queries.migration(s, active.id).message = None
        return active
    finally:
        held.end_scan()


def _in_transaction(store: StateStore, fn, *args):
    with store.connection() as conn:
        return fn(conn, *args)


MAX_ROUNDS = 10  # embedding passes of one run (each after others stopped or files changed)


WAIT_POLL = 1.0  # seconds between looks at what other workers still hold (two small queries)


async def _wait_for_others(store: StateStore, mid: str, reporter: Reporter, stop: asyncio.Event) -> int:
    """While other workers hold what is left, wait: until they finish it, or a lease of theirs
    runs out (a worker died) or is given back. Returns how many are free to claim now."""
    said = 0.0
    while not stop.is_set():
        # owner "": every live lease is another worker's (ours were given back)
        free, others, wait = await asyncio.to_thread(_in_transaction, store, leases.outlook, mid, "")
        if free or not others:
            return free
        if time.monotonic() - said > 300:
            reporter.note(
                f"{others} database(s) held by other workers; waiting for them to finish "
                f"(or for their leases to run out)"
            )
            said = time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), timeout=min(max(wait or 0.0, 0.2), WAIT_POLL))
        except asyncio.TimeoutError:
            pass
    return 0


def _left_to_others(store: StateStore, mig: Migration, started: float) -> RunResult:
    """Everything is staged, and another worker is still running: that one cuts over."""
    result = _result(store, mig, None, started)
    result.outcome = "staged"
    result.message = f"migration {mig.id}: everything is staged; another worker still running does the cutover"
    return result


SANITY_TEXTS = 3


def _stored_texts(settings: Settings, store: StateStore, mig: Migration, n: int) -> list[str]:
    """The first ``n`` source texts of the first database still to embed (none: nothing left)."""
    with store.reader() as s:
        paths = [p for (p,) in queries.job_rows(s, mig.id, "path", states=(D_PENDING, D_EMBEDDING), limit=5)]
    spec = apps.Spec.parse(mig.profile)
    for path in paths:
        try:
            nf = nvdb.read(path)
            texts = apps.choose(nf, spec).texts(nf)
        except (MigratorError, OSError):
            continue  # the pipeline reports a bad file in its place
        if texts:
            return texts[:n]
    return []


async def _sanity_probe(
    settings: Settings, store: StateStore, mig: Migration, endpoint: Endpoint | EndpointPool, reporter: Reporter
) -> None:
    """Before hours are spent: a few stored texts, embedded, come back from the expected model at
    the expected dimension (Endpoint.embed checks both and raises EndpointRejected if not)."""
    texts = await asyncio.to_thread(_stored_texts, settings, store, mig, SANITY_TEXTS)
    if texts:
        try:
            got = await endpoint.embed(texts)
        except PoisonedInput:
            return  # one of these texts is never answered: the pipeline names its record
        assert endpoint.info is not None  # probed by _start_or_resume
        reporter.note(
            f"sanity probe: {len(texts)} stored texts embedded by {endpoint.info.model} "
            f"into {got.vectors.shape[1]} dims, as expected"
        )


def _create_migration(
    settings: Settings,
    store: StateStore,
    endpoint: Endpoint | EndpointPool,
    requested: str,
    reporter: Reporter,
    found: Scanned,
) -> Migration | RunResult:
    info = endpoint.info
    assert info is not None  # probed by _start_or_resume
    # again, after the scan: a run of another job table started meanwhile may own the tree now
    # (its staged files are what the scan just refused)
    claims.check([str(r) for r in settings.roots], settings.job_table)
    target = endpoint.target_dim
    bad = found.bad
    if bad and settings.fail_fast:
        return RunResult(
            None,
            "partial",
            f"--fail-fast: {len(bad)} database(s) cannot be migrated as they are; nothing was started",
            model=info.model,
            target_dim=target,
            failures=[f"{f.path}: {f.reason}" for f in bad],
        )
    if not found.todo and bad:
        # Only files that cannot be migrated: report them, start nothing (a migration
        # holding nothing would become the default target of `rollback`).
        return RunResult(
            None,
            "partial",
            f"nothing migrated: {len(bad)} database(s) cannot be migrated as they are; fix them and run again",
            model=info.model,
            target_dim=target,
            failures=[f"{f.path}: {f.reason}" for f in bad],
        )
    if not found.todo and not bad:
        return RunResult(
            None,
            "nothing_to_do",
            f"nothing to do: {found.skipped} database(s) found, all already at {target} dims"
            + ("" if not found.skipped_unrecorded else " (some record no model; `migrate plan` says which)")
            if found.skipped
            else f"nothing to do: no files named {settings.pattern!r} under {', '.join(map(str, settings.roots))}",
            model=info.model,
            target_dim=target,
        )
    mid = _new_migration_id()
    # the tree's claim first: of two job tables racing for one tree, exactly one goes on
    for root in claims.take([os.path.abspath(r) for r in settings.roots], settings.job_table, mid):
        reporter.note(
            f"WARNING: cannot write {root}/{claims.CLAIM_NAME} (permission denied): a run "
            f"from another state directory will see this migration only by the staged and "
            f"backup files beside each database"
        )
    with store.session() as s:
        mig = Migration(
            id=mid,
            state=M_RUNNING,
            model=info.model,
            requested_model=requested,
            native_dim=info.native_dim,
            target_dim=target,
            max_model_len=info.max_model_len,
            endpoint=endpoint.base_url[:500],
            roots=[os.path.abspath(r) for r in settings.roots],
            pattern=settings.pattern,
            profile=settings.spec.describe(),
        )
        s.add(mig)
        s.flush()
        conn = s.connection()  # one row per database: plain executemany, no ORM objects
        for batch in found.batches():
            rows, events = [], []
            for f in batch:
                if f.status == SKIP:
                    continue
                error = None if f.status == MIGRATE else f"{f.path}: {f.reason}"
                rows.append(
                    dict(
                        migration_id=mid,
                        path=str(f.path),
                        state=D_PENDING if f.status == MIGRATE else D_FAILED,
                        source_size=f.size,
                        source_mtime_ns=f.mtime_ns,
                        source_sha256="",  # hashed when first read for embedding
                        source_dim=f.dim or 0,
                        n_records=f.records,
                        n_chars=f.chars,
                        error=error,
                        profile=f.profile,
                    )
                )
                if error:
                    events.append(dict(migration_id=mid, level="error", path=str(f.path), message=error))
            queries.add_jobs(conn, rows, events)
    crashpoints.reached("scan.recorded")
    reporter.note(
        f"migration {mid}: {found.todo} database(s) to migrate to {info.model} "
        f"({target} dims), {found.skipped} already there, {len(bad)} cannot be migrated"
    )
    for f in bad:
        reporter.note(f"SKIP {f.path}: {f.reason}")
    for f in found:
        if f.status == MIGRATE and f.reason:
            reporter.note(f"NOTE {f.path}: {f.reason}")
    return mig


def _prejudge(
    settings: Settings, store: StateStore, mig: Migration, endpoint: Endpoint | EndpointPool
) -> gate.Prejudge | None:
    """The quality gate's sampled databases, judged as they stage (when a gate will run)."""
    if not (settings.cutover and settings.quality_gate):
        return None
    return gate.Prejudge(mig.id, mig.target_dim, mig.model, endpoint, gate.sample_ids(store, mig.id))


async def _embed_pending(
    settings: Settings,
    store: StateStore,
    mig: Migration,
    endpoint: Endpoint | EndpointPool,
    limit: AdaptiveLimit,
    reporter: Reporter,
    stop: asyncio.Event,
    drop: asyncio.Event | None = None,
    *,
    prejudge: gate.Prejudge | None = None,
) -> bool:
    """Embed and stage what is left. True when --fail-fast stopped it at a failure."""
    with store.session() as s:
        # a failed database is tried again only if its file changed since it failed
        failed = queries.job_rows(
            s, mig.id, "id", "path", "profile", "source_size", "source_mtime_ns", "updated_at", states=(D_FAILED,)
        )
        queries.embed_anew(s, [j.id for j in failed if _changed_since_it_failed(j)])
        total, done = queries.records_of(s, mig.id, (D_PENDING, D_EMBEDDING))
    if total == 0:
        return False
    reporter.start(total, done)
    t0 = time.monotonic()
    embedder = Embedder(
        store,
        mig,
        endpoint,
        limit=limit,
        batch_size=settings.batch_size,
        fail_fast=settings.fail_fast,
        reporter=reporter,
        stop=stop,
        control=settings.make_control(),
        drop=drop,
        prejudge=prejudge,
    )
    try:
        outcome = await embedder.run()
        return settings.fail_fast and outcome.failed > 0
    finally:
        with store.connection() as conn:
            queries.add_embed_seconds(conn, mig.id, time.monotonic() - t0)
