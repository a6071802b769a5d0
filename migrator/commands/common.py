"""What several commands share: the job table opened for reading or writing, results, hooks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from migrator import apps, config
from migrator.apps import appconfig
from migrator.commands.settings import Settings
from migrator.errors import EXIT_USAGE, MigratorError, UsageError
from migrator.jobs import queries
from migrator.jobs.lock import WriterLock, server_lock, state_lock
from migrator.jobs.models import (
    D_CUT_OVER,
    D_EMBEDDING,
    D_FAILED,
    D_PENDING,
    D_REFUSED,
    D_STAGED,
    M_DONE,
    M_RUNNING,
    M_STAGED,
    Migration,
)
from migrator.jobs.store import StateStore, open_state, state_url
from migrator.ops import hooks
from migrator.pipeline import gate, swap
from migrator.pipeline.runner import Reporter


@contextlib.contextmanager
def _writer(settings: Settings, command: str, *, shared: bool = False):
    """The job table, opened for writing under the writers' lock: the state directory's file
    lock (SQLite), or the server's advisory lock (PostgreSQL; ``shared`` for `run` workers)."""
    url = state_url(settings.state_url)
    if url:
        import socket

        store = open_state(url=url, application=f"migrate {command} {os.getpid()}@{socket.gethostname()}")
        assert store is not None  # None only for a reader of a missing SQLite file
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
            assert store is not None  # None only for a reader of a missing SQLite file
            try:
                yield store, WriterLock()
            finally:
                store.close()


def _reader(settings: Settings) -> StateStore:
    url = state_url(settings.state_url)
    if url:
        store = open_state(url=url, readonly=True)
        assert store is not None  # None only for a missing SQLite file
        return store
    _require_state(settings)
    store = open_state(settings.state_path, readonly=True)
    if store is None:  # removed since _require_state saw it
        raise UsageError(f"no migrations recorded in {settings.state_path} (wrong --state-dir?)")
    return store


@dataclass
class RunResult:
    migration_id: str | None
    outcome: str  # nothing_to_do | staged | done | partial | held | gate_failed
    message: str
    model: str | None = None
    target_dim: int | None = None
    databases: dict = field(default_factory=dict)  # state -> count
    records_embedded: int = 0
    tokens_embedded: int = 0
    seconds: float = 0.0
    truncated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cutover: dict | None = None
    configs: list[dict] = field(default_factory=list)  # appconfig.AppConfig: what to change now
    applied: list[str] = field(default_factory=list)  # config files --apply-config changed
    gate: dict | None = None  # the quality gate's report, when it ran and failed

    def as_dict(self) -> dict:
        return asdict(self)


def _job_counts(store: StateStore, mid: str) -> dict:
    with store.reader() as s:
        return queries.job_counts(s, mid)


def _step(reporter: Reporter, message: str) -> None:
    """A step of its own (the progress bar ends first); reporters without steps get a note."""
    getattr(reporter, "step", reporter.note)(message)


def _ask(settings: Settings, question: str) -> None:
    assert settings.confirm is not None  # asked only when there is someone to ask
    if not settings.confirm(question):
        raise MigratorError("cancelled; nothing was changed", exit_code=EXIT_USAGE)


def _failed_applications(store: StateStore, mid: str) -> list[str]:
    """The applications whose files failed, as messages name them (DVD, LightRAG, ...)."""
    with store.reader() as s:
        found = {apps.label_of(p) for (p,) in queries.job_rows(s, mid, "profile", states=(D_FAILED,))}
    return sorted(found)


def _failures(store: StateStore, mid: str) -> list[str]:
    with store.reader() as s:
        return [error or path for path, error in queries.job_rows(s, mid, "path", "error", states=(D_FAILED,))]


def _hook_figures(result: "RunResult", settings: Settings) -> dict:
    return {
        "migration_id": result.migration_id,
        "outcome": result.outcome,
        "message": result.message,
        "model": result.model,
        "target_dim": result.target_dim,
        "databases_cut_over": result.databases.get(D_CUT_OVER, 0),
        "databases_staged": result.databases.get(D_STAGED, 0),
        "databases_failed": result.databases.get(D_FAILED, 0),
        "records_embedded": result.records_embedded,
        "tokens_embedded": result.tokens_embedded,
        "seconds": result.seconds,
        "state_dir": settings.state_path.resolve(),
    }


async def _before_cutover_hook(
    store: StateStore, mig: Migration, settings: Settings, started: float
) -> RunResult | None:
    """Run --on-before-cutover; a failing hook holds the cutover (the result says so)."""
    figures = _hook_figures(_result(store, mig, None, started, settings.key_source), settings)
    code = await asyncio.to_thread(hooks.run_hook, "before_cutover", settings.on_before_cutover, figures)
    if not code:
        return None
    with store.session() as s:
        m = queries.migration(s, mig.id)
        if m.state == M_RUNNING:
            m.state = M_STAGED
    held = _result(store, mig, None, started, settings.key_source)
    held.outcome = "held"
    held.message = (
        f"migration {mig.id}: {held.databases.get(D_STAGED, 0)} database(s) staged; the "
        f"--on-before-cutover hook exited {code}, so nothing was swapped. "
        f"`migrate cutover` or the next `migrate run` swaps them"
    )
    return held


def _result(
    store: StateStore, mig: Migration, cut: swap.SwapResult | None, started: float, key_source: str | None = None
) -> RunResult:
    """``key_source`` names where the run's key came from (Settings.key_source), for DVD's settings."""
    counts = _job_counts(store, mig.id)
    failures = _failures(store, mig.id)
    with store.session() as s:
        m = queries.migration(s, mig.id)
        state = m.state
        truncated = [f"{path}#{r}" for path, ids in queries.truncated_records(s, mig.id) for r in ids]
        rec, tok = m.records_embedded, m.tokens_embedded
    refused = (cut.refused + cut.held) if cut else []
    if state == M_DONE and not failures and not refused:
        outcome = "done"
        msg = f"migration {mig.id} done: {counts.get(D_CUT_OVER, 0)} database(s) now at {mig.target_dim} dims"
    elif state == M_STAGED and not failures:
        outcome, msg = (
            "staged",
            (f"migration {mig.id}: {counts.get(D_STAGED, 0)} database(s) staged; `migrate cutover` swaps them in"),
        )
    else:
        outcome = "partial"
        held = len(cut.held) if cut else 0
        msg = (
            f"migration {mig.id}: {counts.get(D_CUT_OVER, 0)} cut over, {counts.get(D_STAGED, 0)} staged, "
            f"{len(failures)} failed, {len(refused) - held} refused"
            + (f", {held} held back with them" if held else "")
            + "; fix what is named and run again"
        )
        if failures and counts.get(D_CUT_OVER):
            names = _failed_applications(store, mig.id)
            msg += (
                f". WARNING: the {len(failures)} failed database(s) are still at their old dimension; "
                f"{' and '.join(names)} cannot load them with the new config until they are migrated"
            )
    return RunResult(
        mig.id,
        outcome,
        msg,
        model=mig.model,
        target_dim=mig.target_dim,
        databases=counts,
        records_embedded=rec,
        tokens_embedded=tok,
        seconds=round(time.monotonic() - started, 2),
        truncated=truncated,
        failures=failures + refused,
        cutover=cut.as_dict() if cut else None,
        configs=_configs(store, mig, key_source) if counts.get(D_CUT_OVER) else [],
    )


def _configs(store: StateStore, mig: Migration, key_source: str | None) -> list[dict]:
    """What each application with databases cut over must now be told (appconfig.py)."""
    return [c.as_dict() for c in _app_configs(store, mig, key_source)]


def _apply_configs(store: StateStore, mig: Migration, key_source: str | None) -> list[str]:
    """--apply-config: the settings of each application whose files are all cut over, set now.
    One with a file failed, held or refused keeps its settings: they still fit those files."""
    with store.reader() as s:
        others = (D_PENDING, D_EMBEDDING, D_STAGED, D_FAILED, D_REFUSED)  # all but cut over, rolled back
        unfinished = {p or "dvd" for p in queries.profiles_in(s, mig.id, others)}
    ready = [c for c in _app_configs(store, mig, key_source) if c.application not in unfinished]
    done = appconfig.apply(ready, mig.id)
    with store.session() as s:
        for line in done:
            queries.add_event(s, mig.id, "info", f"--apply-config: {line}")
    return done


def _app_configs(store: StateStore, mig: Migration, key_source: str | None) -> list["appconfig.AppConfig"]:
    """``key_source``: where the key came from (a file, a variable); None names the environment's."""
    rows = store.each_job(mig.id, "profile", "path", states=(D_CUT_OVER,))
    endpoint = (mig.endpoint or "").split(",")[0].strip() or None
    return appconfig.report(
        appconfig.by_application(((r.profile, r.path) for r in rows), unknown="dvd"),
        [Path(r) for r in mig.roots],
        mig.model,
        mig.target_dim,
        mig.native_dim,
        endpoint=endpoint,
        key_source=key_source or config.key_source(),
    )


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
    mig = queries.latest_migration(s, states)
    if mig is None:
        raise UsageError(f"no migration to {what} (see `migrate status`)")
    return mig


def _require_state(settings: Settings) -> None:
    if not (settings.state_path / "migrator.db").exists():
        raise UsageError(f"no migrations recorded in {settings.state_path} (wrong --state-dir?)")
