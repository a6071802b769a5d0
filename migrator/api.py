"""The command API: one function per command, callable from Python.

The CLI (``migrator.cli``) only parses options, calls these and prints what
they return. Each returns plain data (dataclasses / dicts ready for JSON) and
raises :class:`~migrator.errors.MigratorError` subclasses for expected failures.

- :func:`plan`     read-only: scan, size up, probe the endpoint. Writes nothing.
- :func:`run`      embed, stage, verify and (unless told not to) cut over. Resumable.
- :func:`cutover`  swap staged databases in, keeping backups.
- :func:`rollback` put the backups back, byte-identical.
- :func:`status`   read-only report from the job table.
"""
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
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from sqlalchemy import func, insert, select, update

from migrator import (
    allocator,
    appconfig,
    apps,
    claims,
    cleanup,
    config,
    crashpoints,
    fsutil,
    gate,
    hooks,
    leases,
    nvdb,
    profiles,
    provenance,
    swap,
    window,
)
from migrator.control import Control, metrics_url_for
from migrator.endpoint import DEFAULT_ENDPOINT, Endpoint, PoisonedInput, normalize_endpoint, resolve_model
from migrator.errors import EXIT_USAGE, EndpointRejected, Interrupted, LockHeld, MigratorError, UsageError, WindowEnded
from migrator.layout import is_own_file
from migrator.lock import WriterLock, server_lock, state_lock
from migrator.models import (
    ACTIVE_MIGRATION_STATES,
    D_CUT_OVER,
    D_EMBEDDING,
    D_FAILED,
    D_PENDING,
    D_ROLLED_BACK,
    D_STAGED,
    M_DONE,
    M_FINALIZED,
    M_ROLLED_BACK,
    M_RUNNING,
    M_STAGED,
    DatabaseJob,
    Event,
    Migration,
)
from migrator.pool import EndpointPool, make_endpoint
from migrator.runner import Embedder, NullReporter, Reporter
from migrator.scan import BAD, DEFAULT_PATTERN, MIGRATE, SKIP, Found, inspect, scan
from migrator.serve import ManagedServer
from migrator.state import StateStore, default_state_dir, open_state, state_url
from migrator.status import status  # noqa: F401  (re-exported: api.status)


@dataclass
class Settings:
    """Everything a command may need; the CLI fills it from options and environment."""

    roots: list[str] = field(default_factory=list)
    pattern: str = DEFAULT_PATTERN
    model: str | None = None
    dim: int | None = None
    endpoint: str | list[str] = DEFAULT_ENDPOINT   # one URL, or several (pool.EndpointPool)
    api_key_file: str | None = None
    state_dir: str | None = None
    state_url: str | None = None        # a shared PostgreSQL job table (None: SQLite in state_dir)
    profile: str | None = None          # auto (None), dvd, lightrag, nano-graphrag
    text_field: str | None = None
    text_template: str | None = None
    batch_size: int = 32
    concurrency: int | None = None      # None: adaptive (tuning.AdaptiveLimit)
    request_timeout: float = 120.0
    retry_for: float = 600.0
    cutover: bool = True
    fail_fast: bool = False
    follow_symlinks: bool = False
    insecure: bool = False
    max_duration: str | None = None     # e.g. "45m": stop in time (resumable, exit 9)
    until: str | None = None            # e.g. "06:00" local time: the same
    window: str | None = None           # e.g. "22:00-06:00": run only inside it (window.py)
    on_before_cutover: str | None = None  # shell commands (hooks.py); a failing one holds cutover
    on_success: str | None = None
    on_failure: str | None = None
    quality_gate: bool = True           # False: cutover without the semantic gate (benchmarks only)
    serve: bool = False                 # start `vllm serve` for the run, stop it after (serve.py)
    serve_gpu: str | None = None        # CUDA_VISIBLE_DEVICES for it
    serve_memory_fraction: float | None = None
    serve_args: tuple = ()              # extra `vllm serve` flags
    apply_config: bool = False          # edit the applications' settings right after the swap
    # asked once the scan says what would be done (the question names the databases, records,
    # model and dims); False: cancelled, nothing recorded. None: no question (--yes, cron)
    confirm: Callable[[str], bool] | None = None
    serve_timeout: float = 1800.0       # seconds to wait for it to load the model
    backoff_queue: int | None = None    # back off while vLLM's /metrics shows more waiting (control.py)
    metrics_url: str | None = None      # whose queue to watch (default: the first endpoint's /metrics)

    @property
    def job_table(self) -> str:
        """This job table as tree claims name it (claims.py)."""
        return claims.identity(state_url(self.state_url), self.state_path)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    @property
    def spec(self) -> profiles.Spec:
        """How texts are found (a bad combination or template: UsageError)."""
        return profiles.Spec(self.profile, self.text_field, self.text_template)

    @property
    def endpoint_urls(self) -> list[str]:
        return [self.endpoint] if isinstance(self.endpoint, str) else list(self.endpoint) or [DEFAULT_ENDPOINT]

    def check_endpoints(self) -> list[str]:
        """The endpoints' base URLs; a malformed one (or one with credentials) is refused."""
        return [normalize_endpoint(u)[0] for u in self.endpoint_urls]

    def make_endpoint(self) -> Endpoint | EndpointPool:
        return make_endpoint(self.endpoint_urls, config.api_key(self.api_key_file),
                             request_timeout=self.request_timeout, retry_for=self.retry_for,
                             verify_tls=not self.insecure, key_source=config.key_source(self.api_key_file))

    def make_control(self) -> Control:
        metrics = None
        if self.backoff_queue is not None:
            metrics = self.metrics_url or metrics_url_for(self.endpoint_urls[0])
        return Control(self.state_path, metrics_url=metrics, queue_limit=self.backoff_queue,
                       verify_tls=not self.insecure)


@contextlib.contextmanager
def _writer(settings: Settings, command: str, *, shared: bool = False):
    """The job table, opened for writing under the writers' lock: the state directory's file
    lock (SQLite), or the server's advisory lock (PostgreSQL; ``shared`` for `run` workers)."""
    url = state_url(settings.state_url)
    if url:
        import socket
        store = open_state(url=url, application=f"migrate {command} {os.getpid()}@{socket.gethostname()}")
        try:
            with server_lock(store.engine, store.location, command, shared=shared) as held:
                yield store, held
        finally:
            store.close()
    else:
        if command != "run":
            _require_state(settings)
        with state_lock(settings.state_path, command):
            store = open_state(settings.state_path)
            try:
                yield store, WriterLock()
            finally:
                store.close()


def _reader(settings: Settings) -> StateStore:
    url = state_url(settings.state_url)
    if url:
        return open_state(url=url, readonly=True)
    _require_state(settings)
    return open_state(settings.state_path, readonly=True)


async def _check_unknown_models(endpoint: Endpoint, found: list[Found], settings: Settings,
                                 reporter: Reporter | None = None) -> None:
    """Files at the target dimension that record no model: a few of their records are embedded
    again; where the stored vectors are not the target model's, the file is migrated after all."""
    spec = settings.spec
    for i, f in enumerate(found):
        if not f.unknown_model:
            continue
        again = await asyncio.to_thread(inspect, f.path, endpoint.target_dim, spec=spec,
                                        keep_texts=True, same_dim=True)
        if again.status != MIGRATE or not again.texts:
            continue       # unreadable (reported by the pipeline) or empty: nothing to compare
        try:
            nf = await asyncio.to_thread(nvdb.read, f.path)
            cosine = await provenance.probe(endpoint, nf, again.texts)
        except (MigratorError, OSError) as e:
            f.reason += f" (could not probe it: {e})"
            continue
        if cosine >= provenance.SAME_MODEL_COSINE:
            f.reason = (f"already at the target dimension {f.dim}; {endpoint.info.model} gives back its "
                        f"stored vectors (probe: cosine {cosine:.3f})")
            f.unknown_model = False
            continue
        again.texts = None     # like every scanned database's: memory holds none of them
        again.reason = (f"at the target dimension {f.dim}, but its vectors are not {endpoint.info.model}'s "
                        f"(probe: cosine {cosine:.2f} between stored and re-embedded records): migrated")
        found[i] = again
        if reporter is not None:
            reporter.note(f"{f.path}: {again.reason}")


def _applications(pairs, unknown: str | None = None) -> dict[str, list[Path]]:
    """Application name -> its files, from (profile, path) pairs; a file with no profile
    counts as ``unknown`` (a job table from before profiles were kept knew DVD only)."""
    apps: dict[str, list[Path]] = {}
    for profile, path in pairs:
        app = unknown if profile is None else profile
        if app in profiles.APPLICATIONS:
            apps.setdefault(app, []).append(Path(path))
    return apps


# ------------------------------------------------------------------- plan
def plan(settings: Settings, *, probe: bool = True, tokenize: bool = True) -> dict:
    """What a run would do. Reads the databases and asks the endpoint; writes nothing."""
    if not settings.roots:
        raise UsageError("no --root given: name the directory that holds the databases")
    model_id, known_dim = resolve_model(settings.model or "8b")
    spec = settings.spec      # a bad --text-template is refused before anything is read
    endpoint_report: dict = {"url": ", ".join(settings.check_endpoints()), "reachable": False}
    target = settings.dim or known_dim
    ep: Endpoint | None = None
    loop = asyncio.new_event_loop()
    try:
        if probe:
            ep = settings.make_endpoint()
            try:
                info = loop.run_until_complete(ep.probe(settings.model or "8b", target_dim=settings.dim))
                target, model_id = ep.target_dim, info.model
                endpoint_report.update(reachable=True, model=info.model, served_models=info.served_models,
                                       max_model_len=info.max_model_len, native_dim=info.native_dim,
                                       tokenize=info.tokenize, note=info.note or None)
            except MigratorError as e:
                # reported, and plan exits with its code: a plan that could not check the
                # endpoint (down, key refused, model not served) is no plan to run
                endpoint_report.update(error=str(e), exit_code=e.exit_code)
        found = []
        sample: list[str] = []     # a few real texts for the throughput probe
        for f in scan(settings.roots, settings.pattern, target, spec=spec, target_model=model_id,
                      follow_symlinks=settings.follow_symlinks, keep_texts=endpoint_report["reachable"]):
            if f.status == MIGRATE and f.texts is not None:
                if tokenize and ep.info.tokenize:
                    counts = loop.run_until_complete(ep.count_tokens(f.texts))
                    f.tokens = sum(counts) if counts is not None else None
                sample.extend(f.texts[:max(0, 128 - len(sample))])
            f.texts = None         # memory holds one database's texts at a time
            found.append(f)
        if endpoint_report["reachable"]:
            loop.run_until_complete(_check_unknown_models(ep, found, settings))
        todo = [f for f in found if f.status == MIGRATE]
        exact = bool(todo) and all(f.tokens is not None for f in todo)
        tokens = sum(f.tokens for f in todo) if exact else sum(f.est_tokens() for f in todo)
        if endpoint_report["reachable"] and todo:
            try:
                rate, n = loop.run_until_complete(ep.measure(sample, seconds=3.0))
                endpoint_report.update(measured_tokens_per_second=round(rate, 1), measured_texts=n)
                endpoint_report["eta_seconds"] = round(tokens / rate, 1) if rate > 0 else None
            except MigratorError as e:
                endpoint_report["measure_error"] = str(e)
    finally:
        if ep is not None:
            loop.run_until_complete(ep.aclose())
        loop.close()
    # Disk: the new file is staged beside the old one; after cutover the old one
    # stays as the backup (a hard link: no extra space), so each new file is extra.
    need_by_dev: Counter = Counter()
    where_of_dev: dict[int, Path] = {}       # one directory on each filesystem, to ask for free space
    for f in todo:
        new_size = f.size + int((f.records * 4 * ((target or f.dim) - f.dim)) * 4 / 3)
        f.new_size = max(new_size, 0)
        dev = os.stat(f.path.parent).st_dev
        where_of_dev.setdefault(dev, f.path.parent)
        need_by_dev[dev] += f.new_size
    disks = []
    for dev, need in need_by_dev.items():
        where = where_of_dev[dev]
        free = fsutil.free_bytes(where)
        disks.append({"filesystem_of": str(where), "needed_bytes": need, "free_bytes": free,
                      "enough": need < free})
    by_dim = Counter(f.dim for f in found if f.dim is not None)
    native = endpoint_report.get("native_dim")
    configs = appconfig.report(_applications((f.profile, f.path) for f in found),
                               [Path(r) for r in settings.roots], model_id, target, native,
                               endpoint=settings.check_endpoints()[0],
                               key_source=config.key_source(settings.api_key_file))
    other_model = [f for f in found if f.made_by is not None and f.made_by.model != model_id]
    return {
        "roots": [str(r) for r in settings.roots], "pattern": settings.pattern,
        "model": model_id, "target_dim": target,
        "totals": {
            "databases": len(found), "to_migrate": len(todo),
            "skipped": sum(f.status == SKIP for f in found), "bad": sum(f.status == BAD for f in found),
            "records": sum(f.records for f in todo), "chars": sum(f.chars for f in todo),
            "tokens": tokens, "tokens_exact": exact,
            "by_dim": {str(k): v for k, v in sorted(by_dim.items())},
            "by_application": dict(Counter(f.profile or "unknown" for f in found if f.status != BAD)),
            "made_by_other_model": len(other_model),
            "same_dim_other_model": sum(f.dim == target for f in other_model),
            "model_unknown_at_target_dim": sum(f.unknown_model for f in found),
            "staging_bytes": sum(f.new_size for f in todo),
            "backup_bytes": sum(f.size for f in todo),
        },
        "disk": disks,
        "configs": [c.as_dict() for c in configs],
        "endpoint": endpoint_report,
        "databases": [f.as_dict() for f in found],
    }


# -------------------------------------------------------------------- run
@dataclass
class RunResult:
    migration_id: str | None
    outcome: str                  # nothing_to_do | staged | done | partial | held | gate_failed
    message: str
    model: str | None = None
    target_dim: int | None = None
    databases: dict = field(default_factory=dict)   # state -> count
    records_embedded: int = 0
    tokens_embedded: int = 0
    seconds: float = 0.0
    truncated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cutover: dict | None = None
    configs: list[dict] = field(default_factory=list)   # appconfig.AppConfig: what to change now
    applied: list[str] = field(default_factory=list)    # config files --apply-config changed
    gate: dict | None = None      # the quality gate's report, when it ran and failed

    def as_dict(self) -> dict:
        return asdict(self)


def _new_migration_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def _active(s) -> Migration | None:
    return s.scalars(select(Migration).where(Migration.state.in_(ACTIVE_MIGRATION_STATES))
                     .order_by(Migration.created_at.desc())).first()


def _job_counts(store: StateStore, mid: str) -> dict:
    with store.reader() as s:
        return {state: n for state, n in s.execute(
            select(DatabaseJob.state, func.count()).where(DatabaseJob.migration_id == mid)
            .group_by(DatabaseJob.state))}


def _dir_changed_since(job: DatabaseJob) -> bool:
    """For a file whose application keeps a working dir (its texts may come from the files
    beside it, as nano-graphrag's do): did anything there change since the job failed?"""
    if apps.unit_of(job.profile, job.path) == job.path:
        return False          # a unit of its own (a DVD video): only its own file counts
    since = job.updated_at.replace(tzinfo=datetime.timezone.utc).timestamp() if job.updated_at else 0.0
    try:
        with os.scandir(os.path.dirname(job.path)) as entries:
            return any(e.is_file(follow_symlinks=False) and not is_own_file(e.name)
                       and e.stat(follow_symlinks=False).st_mtime > since for e in entries)
    except OSError:
        return False


def _same_roots(given, recorded) -> bool:
    """The same directories, however spelled: through a symlink or not, relative or absolute
    (`migrate cron` writes absolute paths; a user may have typed a symlinked one)."""
    return sorted(os.path.realpath(r) for r in given) == sorted(os.path.realpath(r) for r in recorded)


def _step(reporter: Reporter, message: str) -> None:
    """A step of its own (the progress bar ends first); reporters without steps get a note."""
    getattr(reporter, "step", reporter.note)(message)


def _ask(settings: Settings, question: str) -> None:
    if not settings.confirm(question):
        raise MigratorError("cancelled; nothing was changed", exit_code=EXIT_USAGE)


def _failed_applications(store: StateStore, mid: str) -> list[str]:
    """The applications whose files failed, as messages name them (DVD, LightRAG, ...)."""
    with store.reader() as s:
        found = {apps.label_of(p) for (p,) in s.execute(select(DatabaseJob.profile).where(
            DatabaseJob.migration_id == mid, DatabaseJob.state == D_FAILED).distinct())}
    return sorted(found)


def _failures(store: StateStore, mid: str) -> list[str]:
    with store.reader() as s:
        return [error or path for path, error in s.execute(select(DatabaseJob.path, DatabaseJob.error).where(
            DatabaseJob.migration_id == mid, DatabaseJob.state == D_FAILED))]


class _StopOnSignals:
    """SIGINT/SIGTERM set ``event`` (a clean stop) instead of killing the process; a second
    one sets ``drop`` too (the requests in flight are dropped instead of awaited)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event,
                 drop: asyncio.Event | None = None, reporter: "Reporter | None" = None):
        self.loop, self.event, self.saved = loop, event, {}
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
                    self.reporter.note(f"{name} again: dropping the requests in flight (the next run "
                                       f"asks for them again)")
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
    allocator.tune()       # before the run's threads start: memory flat in the number of databases
    # bad values: refused now; outside --window: exit 9 at once, nothing done
    deadline = window.time_left(settings.max_duration, settings.until, window=settings.window)
    settings.check_endpoints()   # bad URL or key file: refuse before touching any state
    config.api_key(settings.api_key_file)
    if settings.serve and not settings.model:
        raise UsageError("--serve needs --model: it names the model vllm must load")
    with _writer(settings, "run", shared=True) as (store, held), contextlib.ExitStack() as owned:
        try:
            if settings.serve:    # our own vLLM: stopped on the way out, whatever happens
                try:
                    server = owned.enter_context(ManagedServer(
                        resolve_model(settings.model)[0], log_dir=settings.state_path,
                        api_key=config.api_key(settings.api_key_file), gpu=settings.serve_gpu,
                        memory_fraction=settings.serve_memory_fraction, extra_args=tuple(settings.serve_args),
                        startup_timeout=settings.serve_timeout))
                except KeyboardInterrupt:    # Ctrl-C or SIGTERM while it loads: it was stopped
                    raise Interrupted("interrupted while vLLM was starting; the vLLM it started was "
                                      "stopped and nothing was changed") from None
                settings = dataclasses.replace(settings, endpoint=server)
            result = asyncio.run(_run(settings, store, reporter, deadline, held))
        except (WindowEnded, LockHeld):
            raise                    # the normal ends of a cron tick: no failure to report
        except MigratorError as e:
            hooks.run_hook("failure", settings.on_failure,
                           {"outcome": "error", "exit_code": e.exit_code, "message": str(e),
                            "state_dir": settings.state_path.resolve()})
            raise
        ok = result.outcome in ("done", "staged", "nothing_to_do")
        hooks.run_hook("success" if ok else "failure", settings.on_success if ok else settings.on_failure,
                       _hook_figures(result, settings))
        return result


def _hook_figures(result: "RunResult", settings: Settings) -> dict:
    return {"migration_id": result.migration_id, "outcome": result.outcome, "message": result.message,
            "model": result.model, "target_dim": result.target_dim,
            "databases_cut_over": result.databases.get(D_CUT_OVER, 0),
            "databases_staged": result.databases.get(D_STAGED, 0),
            "databases_failed": result.databases.get(D_FAILED, 0),
            "records_embedded": result.records_embedded, "tokens_embedded": result.tokens_embedded,
            "seconds": result.seconds, "state_dir": settings.state_path.resolve()}


async def _window(seconds: float, stop: asyncio.Event, ended: list, reporter: Reporter) -> None:
    await asyncio.sleep(seconds)
    if not stop.is_set():
        ended.append(True)
        reporter.note(f"the time window ends now ({seconds:.0f} s after the start): finishing the "
                      f"requests in flight, then stopping")
        stop.set()


async def _run(settings: Settings, store: StateStore, reporter: Reporter,
               deadline: float | None = None, held: WriterLock | None = None) -> RunResult:
    held = held or WriterLock()
    stop = asyncio.Event()
    drop = asyncio.Event()        # a second signal: do not wait for the requests in flight
    started = time.monotonic()
    endpoint = settings.make_endpoint()
    ended: list = []
    timer = asyncio.create_task(_window(deadline, stop, ended, reporter)) if deadline is not None else None

    def stopped() -> MigratorError:
        if ended:
            return WindowEnded(f"stopped at the end of the time window; everything staged or "
                               f"committed is kept. `migrate run` resumes migration {mig.id}")
        with store.session() as s:     # `migrate status` says so, until a run resumes it
            m = s.get(Migration, mig.id)
            if m is not None and m.state in ACTIVE_MIGRATION_STATES:
                m.message = (f"interrupted at {time.strftime('%Y-%m-%d %H:%M:%S')} (pid {os.getpid()}); "
                             f"`migrate run` resumes it")
        return Interrupted(f"interrupted; committed work is kept. Run `migrate run` again "
                           f"to resume migration {mig.id}")

    try:
        with _StopOnSignals(asyncio.get_running_loop(), stop, drop, reporter):
            mig = await _start_or_resume(settings, store, endpoint, reporter, held, stop)
            if isinstance(mig, RunResult):
                return mig
            if held.exclusive:     # the only writer: any lease left is a dead run's
                await asyncio.to_thread(_in_transaction, store, leases.clear_all, mig.id)
            await _sanity_probe(settings, store, mig, endpoint, reporter)
            cut = None
            rounds = 0
            while True:
                failed_fast = await _embed_pending(settings, store, mig, endpoint, reporter, stop, drop)
                if failed_fast:
                    break          # --fail-fast: report the failure (exit 4), nothing swapped
                if stop.is_set():
                    raise stopped()
                counts = _job_counts(store, mig.id)
                if counts.get(D_PENDING) or counts.get(D_EMBEDDING):
                    free = await _wait_for_others(store, mig.id, reporter, stop)
                    if stop.is_set():
                        raise stopped()
                    rounds += 1
                    if free and rounds < MAX_ROUNDS:
                        continue   # left by a worker that stopped or died, or changed under us
                    if free:
                        break      # reported as partial: `migrate run` again takes them
                    continue       # the others finished theirs: see what is left
                if not held.try_exclusive():
                    return _left_to_others(store, mig, started)
                with store.reader() as s:
                    if s.get(Migration, mig.id).state not in ACTIVE_MIGRATION_STATES:
                        return _result(store, mig, None, started)   # another worker cut it over
                if not settings.cutover:
                    with store.session() as s:
                        m = s.get(Migration, mig.id)
                        if m.state == M_RUNNING:
                            m.state = M_STAGED
                    break
                if counts.get(D_STAGED) and not settings.quality_gate:
                    reporter.note("quality gate: SKIPPED (--no-quality-gate); staging verified each "
                                  "file, nothing checked that the vectors mean anything")
                elif counts.get(D_STAGED):
                    _step(reporter, f"quality gate: checking a sample of the {counts[D_STAGED]} staged "
                                    f"database(s) before any swap")
                    report = await gate.check(store, mig.id, mig.target_dim, endpoint, every_database=False)
                    reporter.note(f"quality gate: {'passed' if report.passed else 'FAILED'} "
                                  f"({report.databases} staged, {report.self_hits}/{report.sampled} sampled "
                                  f"records found by their own text"
                                  + (f", neighbourhood overlap {report.overlap:.2f} vs {report.chance:.2f} "
                                     f"by chance" if report.overlap is not None else "") + ")")
                    if not report.passed:
                        with store.session() as s:
                            s.get(Migration, mig.id).state = M_STAGED
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
            result = _result(store, mig, cut, started)
            if settings.apply_config and cut is not None and cut.done:
                result.applied = _apply_configs(store, mig)
            return result
    finally:
        if timer is not None:
            timer.cancel()
        await endpoint.aclose()


async def _start_or_resume(settings: Settings, store: StateStore, endpoint: Endpoint, reporter: Reporter,
                           held: WriterLock, stop: asyncio.Event) -> Migration | RunResult:
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
                    settings.dim and settings.dim != active.target_dim):
                raise UsageError(f"migration {active.id} to {active.requested_model} ({active.target_dim} dims) "
                                 f"is unfinished; finish it with `migrate run` or undo it with "
                                 f"`migrate rollback` before starting another")
        if active and settings.spec.forced and settings.spec != profiles.Spec.parse(active.profile):
            raise UsageError(f"migration {active.id} reads texts as {active.profile!r}, not "
                             f"{settings.spec.describe()!r}; finish it without those options (it keeps its "
                             f"own) or roll it back first")
        if active and settings.roots and not _same_roots(settings.roots, active.roots):
            raise UsageError(f"migration {active.id} over {', '.join(active.roots)} is unfinished; finish it "
                             f"(`migrate run` without --root) or roll it back before migrating other roots")
        if active is not None:
            claims.take(active.roots, settings.job_table, active.id)   # refused if another owns it
        elif settings.roots:
            claims.check([str(r) for r in settings.roots], settings.job_table)   # before any scan
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
                known = set(s.scalars(select(Migration.id)))
            found = await asyncio.to_thread(lambda: list(scan(
                settings.roots, settings.pattern, endpoint.target_dim, spec=settings.spec,
                target_model=endpoint.info.model, follow_symlinks=settings.follow_symlinks,
                known_migrations=known)))
            await _check_unknown_models(endpoint, found, settings, reporter)
            todo = [f for f in found if f.status == MIGRATE]
            if todo and settings.confirm is not None:
                dims = ", ".join(str(d) for d in sorted({f.dim for f in todo if f.dim}))
                _ask(settings, f"Migrate {len(todo)} database(s), {sum(f.records for f in todo)} records, "
                               f"under {', '.join(map(str, settings.roots))} from {dims} dims to "
                               f"{endpoint.info.model} at {endpoint.target_dim} dims"
                               f"{' and swap them in (backups are kept)' if settings.cutover else ''}?")
            return await asyncio.to_thread(_create_migration, settings, store, endpoint, requested, reporter,
                                           found)
        if info.native_dim != active.native_dim or endpoint.target_dim != active.target_dim:
            raise EndpointRejected(f"{endpoint.base_url}: serves {info.native_dim}-dim vectors but "
                                   f"migration {active.id} was started with {active.native_dim}; "
                                   f"point --endpoint at the same model")
        if settings.confirm is not None:
            counts = _job_counts(store, active.id)
            left = counts.get(D_PENDING, 0) + counts.get(D_EMBEDDING, 0) + counts.get(D_STAGED, 0)
            _ask(settings, f"Resume migration {active.id}: {left} database(s) still to embed or swap, to "
                           f"{active.model} at {active.target_dim} dims"
                           f"{' (backups are kept)' if settings.cutover else ''}?")
        reporter.note(f"resuming migration {active.id} ({active.requested_model}, {active.target_dim} dims)")
        if (active.message or "").startswith("interrupted"):
            with store.session() as s:
                s.get(Migration, active.id).message = None
        return active
    finally:
        held.end_scan()


def _in_transaction(store: StateStore, fn, *args):
    with store.connection() as conn:
        return fn(conn, *args)


MAX_ROUNDS = 10    # embedding passes of one run (each after others stopped or files changed)
WAIT_POLL = 1.0    # seconds between looks at what other workers still hold (two small queries)


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
            reporter.note(f"{others} database(s) held by other workers; waiting for them to finish "
                          f"(or for their leases to run out)")
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
    result.message = (f"migration {mig.id}: everything is staged; another worker still running "
                      f"does the cutover")
    return result


async def _before_cutover_hook(store: StateStore, mig: Migration, settings: Settings,
                               started: float) -> RunResult | None:
    """Run --on-before-cutover; a failing hook holds the cutover (the result says so)."""
    figures = _hook_figures(_result(store, mig, None, started), settings)
    code = await asyncio.to_thread(hooks.run_hook, "before_cutover", settings.on_before_cutover, figures)
    if not code:
        return None
    with store.session() as s:
        m = s.get(Migration, mig.id)
        if m.state == M_RUNNING:
            m.state = M_STAGED
    held = _result(store, mig, None, started)
    held.outcome = "held"
    held.message = (f"migration {mig.id}: {held.databases.get(D_STAGED, 0)} database(s) staged; the "
                    f"--on-before-cutover hook exited {code}, so nothing was swapped. "
                    f"`migrate cutover` or the next `migrate run` swaps them")
    return held


SANITY_TEXTS = 3


def _stored_texts(settings: Settings, store: StateStore, mig: Migration, n: int) -> list[str]:
    """The first ``n`` source texts of the first database still to embed (none: nothing left)."""
    with store.reader() as s:
        paths = s.scalars(select(DatabaseJob.path).where(
            DatabaseJob.migration_id == mig.id, DatabaseJob.state.in_([D_PENDING, D_EMBEDDING]))
            .order_by(DatabaseJob.id).limit(5)).all()
    spec = profiles.Spec.parse(mig.profile)
    for path in paths:
        try:
            nf = nvdb.read(path)
            texts = apps.choose(nf, spec).texts(nf)
        except (MigratorError, OSError):
            continue       # the pipeline reports a bad file in its place
        if texts:
            return texts[:n]
    return []


async def _sanity_probe(settings: Settings, store: StateStore, mig: Migration, endpoint: Endpoint,
                        reporter: Reporter) -> None:
    """Before hours are spent: a few stored texts, embedded, come back from the expected model at
    the expected dimension (Endpoint.embed checks both and raises EndpointRejected if not)."""
    texts = await asyncio.to_thread(_stored_texts, settings, store, mig, SANITY_TEXTS)
    if texts:
        try:
            got = await endpoint.embed(texts)
        except PoisonedInput:
            return         # one of these texts is never answered: the pipeline names its record
        reporter.note(f"sanity probe: {len(texts)} stored texts embedded by {endpoint.info.model} "
                      f"into {got.vectors.shape[1]} dims, as expected")


def _create_migration(settings: Settings, store: StateStore, endpoint: Endpoint, requested: str,
                      reporter: Reporter, found: list[Found]) -> Migration | RunResult:
    # again, after the scan: a run of another job table started meanwhile may own the tree now
    # (its staged files are what the scan just refused)
    claims.check([str(r) for r in settings.roots], settings.job_table)
    target = endpoint.target_dim
    todo = [f for f in found if f.status == MIGRATE]
    bad = [f for f in found if f.status == BAD]
    skipped = [f for f in found if f.status == SKIP]
    if bad and settings.fail_fast:
        return RunResult(None, "partial", f"--fail-fast: {len(bad)} database(s) cannot be migrated as they "
                         f"are; nothing was started", model=endpoint.info.model, target_dim=target,
                         failures=[f"{f.path}: {f.reason}" for f in bad])
    if not todo and bad:
        # Only files that cannot be migrated: report them, start nothing (a migration
        # holding nothing would become the default target of `rollback`).
        return RunResult(None, "partial", f"nothing migrated: {len(bad)} database(s) cannot be migrated "
                         f"as they are; fix them and run again", model=endpoint.info.model, target_dim=target,
                         failures=[f"{f.path}: {f.reason}" for f in bad])
    if not todo and not bad:
        return RunResult(None, "nothing_to_do",
                         f"nothing to do: {len(skipped)} database(s) found, all already at {target} dims"
                         + ("" if all(f.made_by for f in skipped) else
                            " (some record no model; `migrate plan` says which)")
                         if skipped else f"nothing to do: no files named {settings.pattern!r} under "
                                         f"{', '.join(map(str, settings.roots))}",
                         model=endpoint.info.model, target_dim=target)
    mid = _new_migration_id()
    # the tree's claim first: of two job tables racing for one tree, exactly one goes on
    for root in claims.take([os.path.abspath(r) for r in settings.roots], settings.job_table, mid):
        reporter.note(f"WARNING: cannot write {root}/{claims.CLAIM_NAME} (permission denied): a run "
                      f"from another state directory will see this migration only by the staged and "
                      f"backup files beside each database")
    with store.session() as s:
        mig = Migration(id=mid, state=M_RUNNING, model=endpoint.info.model, requested_model=requested,
                        native_dim=endpoint.info.native_dim, target_dim=target,
                        max_model_len=endpoint.info.max_model_len, endpoint=endpoint.base_url[:500],
                        roots=[os.path.abspath(r) for r in settings.roots], pattern=settings.pattern,
                        profile=settings.spec.describe())
        s.add(mig)
        s.flush()
        conn = s.connection()     # one row per database: plain executemany, no ORM objects
        for i in range(0, len(found), 1000):
            rows, events = [], []
            for f in found[i:i + 1000]:
                if f.status == SKIP:
                    continue
                error = None if f.status == MIGRATE else f"{f.path}: {f.reason}"
                rows.append(dict(migration_id=mid, path=str(f.path),
                                 state=D_PENDING if f.status == MIGRATE else D_FAILED,
                                 source_size=f.size, source_mtime_ns=f.mtime_ns,
                                 source_sha256="",   # hashed when first read for embedding
                                 source_dim=f.dim or 0, n_records=f.records, n_chars=f.chars, error=error,
                                 profile=f.profile))
                if error:
                    events.append(dict(migration_id=mid, level="error", path=str(f.path), message=error))
            if rows:
                conn.execute(insert(DatabaseJob.__table__), rows)
            if events:
                conn.execute(insert(Event.__table__), events)
    crashpoints.reached("scan.recorded")
    reporter.note(f"migration {mid}: {len(todo)} database(s) to migrate to {endpoint.info.model} "
                  f"({target} dims), {len(skipped)} already there, {len(bad)} cannot be migrated")
    for f in bad:
        reporter.note(f"SKIP {f.path}: {f.reason}")
    for f in found:
        if f.status == MIGRATE and f.reason:
            reporter.note(f"NOTE {f.path}: {f.reason}")
    return mig


async def _embed_pending(settings: Settings, store: StateStore, mig: Migration, endpoint: Endpoint,
                         reporter: Reporter, stop: asyncio.Event, drop: asyncio.Event | None = None) -> bool:
    """Embed and stage what is left. True when --fail-fast stopped it at a failure."""
    with store.session() as s:
        jobs = s.scalars(select(DatabaseJob).where(
            DatabaseJob.migration_id == mig.id,
            DatabaseJob.state.in_([D_PENDING, D_EMBEDDING, D_FAILED])).order_by(DatabaseJob.id)).all()
        # a failed database is tried again only if its file changed since it failed
        retry = []
        for j in jobs:
            if j.state == D_FAILED:
                try:
                    st = os.stat(j.path)
                except OSError:
                    continue
                if (st.st_size, st.st_mtime_ns) == (j.source_size, j.source_mtime_ns) and \
                        not _dir_changed_since(j):
                    continue
                j.state = D_PENDING
            retry.append(j)
        total = sum(j.n_records for j in retry)
        done = sum(j.n_done or 0 for j in retry)
    if not retry:
        return False
    reporter.start(total, done)
    t0 = time.monotonic()
    embedder = Embedder(store, mig, endpoint, batch_size=settings.batch_size,
                        concurrency=settings.concurrency, fail_fast=settings.fail_fast,
                        reporter=reporter, stop=stop, control=settings.make_control(), drop=drop)
    try:
        outcome = await embedder.run()
        return settings.fail_fast and outcome.failed > 0
    finally:
        with store.connection() as conn:    # an increment: several workers may add at once
            conn.execute(update(Migration.__table__).where(Migration.__table__.c.id == mig.id).values(
                embed_seconds=Migration.__table__.c.embed_seconds + (time.monotonic() - t0)))


def _result(store: StateStore, mig: Migration, cut: swap.SwapResult | None, started: float) -> RunResult:
    counts = _job_counts(store, mig.id)
    failures = _failures(store, mig.id)
    with store.session() as s:
        m = s.get(Migration, mig.id)
        state = m.state
        truncated = [f"{path}#{r}" for path, ids in s.execute(
            select(DatabaseJob.path, DatabaseJob.truncated).where(
                DatabaseJob.migration_id == mig.id, DatabaseJob.truncated.is_not(None))) for r in (ids or [])]
        rec, tok = m.records_embedded, m.tokens_embedded
    refused = (cut.refused + cut.held) if cut else []
    if state == M_DONE and not failures and not refused:
        outcome = "done"
        msg = f"migration {mig.id} done: {counts.get(D_CUT_OVER, 0)} database(s) now at {mig.target_dim} dims"
    elif state == M_STAGED and not failures:
        outcome, msg = "staged", (f"migration {mig.id}: {counts.get(D_STAGED, 0)} database(s) staged; "
                                  f"`migrate cutover` swaps them in")
    else:
        outcome = "partial"
        held = len(cut.held) if cut else 0
        msg = (f"migration {mig.id}: {counts.get(D_CUT_OVER, 0)} cut over, {counts.get(D_STAGED, 0)} staged, "
               f"{len(failures)} failed, {len(refused) - held} refused"
               + (f", {held} held back with them" if held else "") + "; fix what is named and run again")
        if failures and counts.get(D_CUT_OVER):
            names = _failed_applications(store, mig.id)
            msg += (f". WARNING: the {len(failures)} failed database(s) are still at their old dimension; "
                    f"{' and '.join(names)} cannot load them with the new config until they are migrated")
    return RunResult(mig.id, outcome, msg, model=mig.model, target_dim=mig.target_dim, databases=counts,
                     records_embedded=rec, tokens_embedded=tok, seconds=round(time.monotonic() - started, 2),
                     truncated=truncated, failures=failures + refused,
                     cutover=cut.as_dict() if cut else None,
                     configs=_configs(store, mig) if counts.get(D_CUT_OVER) else [])


def _configs(store: StateStore, mig: Migration) -> list[dict]:
    """What each application with databases cut over must now be told (appconfig.py)."""
    return [c.as_dict() for c in _app_configs(store, mig)]


def _apply_configs(store: StateStore, mig: Migration) -> list[str]:
    """--apply-config: the settings of each application whose files are all cut over, set now.
    One with a file failed, held or refused keeps its settings: they still fit those files."""
    with store.reader() as s:
        rows = s.execute(select(DatabaseJob.profile, DatabaseJob.state).where(
            DatabaseJob.migration_id == mig.id)).all()
    unfinished = {p or "dvd" for p, state in rows if state not in (D_CUT_OVER, D_ROLLED_BACK)}
    ready = [c for c in _app_configs(store, mig) if c.application not in unfinished]
    done = appconfig.apply(ready, mig.id)
    with store.session() as s:
        for line in done:
            s.add(Event(migration_id=mig.id, level="info", message=f"--apply-config: {line}"))
    return done


def _app_configs(store: StateStore, mig: Migration) -> list["appconfig.AppConfig"]:
    with store.reader() as s:
        rows = s.execute(select(DatabaseJob.profile, DatabaseJob.path).where(
            DatabaseJob.migration_id == mig.id, DatabaseJob.state == D_CUT_OVER)).all()
    endpoint = (mig.endpoint or "").split(",")[0].strip() or None
    return appconfig.report(_applications(rows, unknown="dvd"), [Path(r) for r in mig.roots], mig.model,
                            mig.target_dim, mig.native_dim, endpoint=endpoint,
                            key_source=config.key_source())


# ---------------------------------------------------------- cutover/rollback
def _gate_failed(store: StateStore, mig: Migration, report: "gate.GateReport", started: float) -> RunResult:
    """The result of a run or cutover held by the quality gate: nothing swapped, each problem named."""
    held = _result(store, mig, None, started)
    held.outcome, held.gate = "gate_failed", report.as_dict()
    held.failures = report.problems + held.failures
    held.message = f"migration {mig.id}: the quality gate failed, nothing was swapped: {report.problems[0]}"
    return held


def _pick(s, migration_id: str | None, states: tuple[str, ...], what: str) -> Migration:
    if migration_id:
        mig = s.get(Migration, migration_id)
        if mig is None:
            raise UsageError(f"no migration {migration_id!r} in this state directory (see `migrate status`)")
        return mig
    mig = s.scalars(select(Migration).where(Migration.state.in_(states))
                    .order_by(Migration.created_at.desc())).first()
    if mig is None:
        raise UsageError(f"no migration to {what} (see `migrate status`)")
    return mig


def _require_state(settings: Settings) -> None:
    if not (settings.state_path / "migrator.db").exists():
        raise UsageError(f"no migrations recorded in {settings.state_path} (wrong --state-dir?)")


def cutover(settings: Settings, *, migration_id: str | None = None) -> RunResult:
    """Swap a staged migration in. The gate's structural half runs first on every staged
    database (this command has no endpoint for the semantic half: `run` and `verify` do both),
    then the --on-before-cutover hook, if any; either can hold the cutover."""
    started = time.monotonic()
    with _writer(settings, "cutover") as (store, _):
        with store.session() as s:
            mig = _pick(s, migration_id, (M_STAGED, M_RUNNING), "cut over")
            if mig.state not in (M_STAGED, M_RUNNING):
                raise UsageError(f"migration {mig.id} is {mig.state}; nothing to cut over")
        claims.check(mig.roots, settings.job_table)
        counts = _job_counts(store, mig.id)
        unstaged = counts.get(D_PENDING, 0) + counts.get(D_EMBEDDING, 0)
        if unstaged:
            raise UsageError(f"migration {mig.id}: {unstaged} database(s) are not staged yet; "
                             f"`migrate run --no-cutover` finishes staging them")
        report = asyncio.run(gate.check(store, mig.id, mig.target_dim, None))
        if not report.passed:
            return _gate_failed(store, mig, report, started)
        if settings.on_before_cutover and counts.get(D_STAGED):
            held = asyncio.run(_before_cutover_hook(store, mig, settings, started))
            if held is not None:
                return held
        cut = swap.cutover(store, mig.id)
        result = _result(store, mig, cut, started)
        if settings.apply_config and cut.done:
            result.applied = _apply_configs(store, mig)
        if cut.restage:
            result.outcome = "partial"
            result.message += f"; {len(cut.restage)} changed since the scan: `migrate run` re-stages them"
        return result


def rollback(settings: Settings, *, migration_id: str | None = None, force: bool = False) -> swap.SwapResult:
    with _writer(settings, "rollback") as (store, _):
        with store.session() as s:
            # the latest, finalized and rolled-back ones included: never an older one behind them
            mig = _pick(s, migration_id, (M_DONE, M_STAGED, M_RUNNING, M_FINALIZED, M_ROLLED_BACK),
                        "roll back")
            if mig.state == M_FINALIZED:
                raise UsageError(f"migration {mig.id} was finalized: its backups were deleted, so it "
                                 f"cannot be rolled back")
            if mig.state not in (M_DONE, M_STAGED, M_RUNNING, M_ROLLED_BACK):
                raise UsageError(f"migration {mig.id} is {mig.state}; it cannot be rolled back")
            roots, mid, again = mig.roots, mig.id, mig.state == M_ROLLED_BACK
        claims.check(roots, settings.job_table)
        # Rolled back already: the databases stay as they are, but the steps after the record
        # (configs, claims) run again, since a kill may have come between them and the record.
        result = (swap.SwapResult(mid, was_rolled_back=True) if again
                  else swap.rollback(store, mid, force=force))
        if not again and not result.refused:
            crashpoints.reached("rollback.finished")
        with store.reader() as s:
            lightrag_dirs = sorted({Path(p).parent for (p,) in s.execute(select(DatabaseJob.path).where(
                DatabaseJob.migration_id == mid, DatabaseJob.profile == "lightrag"))})
        result.configs_restored = appconfig.restore([Path(r) for r in roots], lightrag_dirs, mid)
        if not result.refused:
            claims.release(roots, settings.job_table, mid)
        return result


# --------------------------------------------------------------- finalize
def finalize(settings: Settings, *, migration_id: str | None = None,
             confirm: Callable[[cleanup.Leftovers], bool] | None = None) -> dict:
    """Delete the backups and leftovers of a finished migration; rollback is impossible after.

    ``confirm`` is shown what would be deleted and how much space that frees (under the
    lock, so it stays true) and returns whether to go ahead."""
    with _writer(settings, "finalize") as (store, _):
        with store.session() as s:
            mig = _pick(s, migration_id, (M_DONE, M_FINALIZED), "finalize")
            state, mid = mig.state, mig.id
        if state in (M_RUNNING, M_STAGED):
            raise UsageError(f"migration {mid} is unfinished ({state}); finish it with `migrate run` "
                             f"or undo it with `migrate rollback` before finalizing")
        if state == M_ROLLED_BACK:
            raise UsageError(f"migration {mid} was rolled back; it has no backups to delete")
        roots = mig.roots
        claims.check(roots, settings.job_table)
        found = cleanup.leftovers(store, mid)
        if confirm is not None and not confirm(found):
            raise UsageError("cancelled; nothing was deleted")
        done = cleanup.finalize(store, mid)
        claims.release(roots, settings.job_table, mid)
        return {**done.as_dict(), "state": M_FINALIZED,
                "message": f"migration {mid} finalized: {len(done.files)} file(s) deleted; it can no "
                           f"longer be rolled back"}


# ----------------------------------------------------------------- verify
def verify(settings: Settings, *, migration_id: str | None = None) -> dict:
    """The quality gate on a migration's staged databases (what runs before every cutover)."""
    config.api_key(settings.api_key_file)
    store = _reader(settings)
    try:
        with store.reader() as s:
            mig = _pick(s, migration_id, (M_STAGED, M_RUNNING, M_DONE), "verify")
            mid, target, requested = mig.id, mig.target_dim, mig.requested_model
        counts = _job_counts(store, mid)
        # staged databases are judged before their cutover; after it, the live files it wrote
        live = not counts.get(D_STAGED) and bool(counts.get(D_CUT_OVER))
        if not counts.get(D_STAGED) and not live:
            raise UsageError(f"migration {mid} has no staged or cut-over database to verify "
                             f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items())) or 'none'})")

        async def go() -> gate.GateReport:
            endpoint = settings.make_endpoint()
            try:
                await endpoint.probe(requested, target_dim=target)
                return await gate.check(store, mid, target, endpoint, live=live)
            finally:
                await endpoint.aclose()

        report = asyncio.run(go())
        if report.checked == len(report.skipped):     # never a pass that judged nothing
            report.problems.append("nothing was checked: every database was skipped (" +
                                   "; ".join(report.skipped[:3]) + ")")
        return report.as_dict()
    finally:
        store.close()
