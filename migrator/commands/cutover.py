"""`migrate cutover`: the staged databases swapped in, keeping backups."""

from __future__ import annotations

import asyncio
import time

from migrator.commands.common import (
    RunResult,
    _apply_configs,
    _before_cutover_hook,
    _gate_failed,
    _job_counts,
    _pick,
    _result,
    _writer,
)
from migrator.commands.settings import Settings
from migrator.errors import UsageError
from migrator.jobs import claims
from migrator.jobs.models import (
    D_EMBEDDING,
    D_PENDING,
    D_STAGED,
    M_RUNNING,
    M_STAGED,
)
from migrator.ops import allocator
from migrator.pipeline import gate, swap


def cutover(settings: Settings, *, migration_id: str | None = None) -> RunResult:
    """Swap a staged migration in. The gate's structural half runs first on every staged
    database (this command has no endpoint for the semantic half: `run` and `verify` do both),
    then the --on-before-cutover hook, if any; either can hold the cutover."""
    started = time.monotonic()
    allocator.tune()  # before the swap's threads start: memory flat in the number of databases
    with _writer(settings, "cutover") as (store, _):
        with store.session() as s:
            mig = _pick(s, migration_id, (M_STAGED, M_RUNNING), "cut over")
            if mig.state not in (M_STAGED, M_RUNNING):
                raise UsageError(f"migration {mig.id} is {mig.state}; nothing to cut over")
        claims.check(mig.roots, settings.job_table)
        counts = _job_counts(store, mig.id)
        unstaged = counts.get(D_PENDING, 0) + counts.get(D_EMBEDDING, 0)
        if unstaged:
            raise UsageError(
                f"migration {mig.id}: {unstaged} database(s) are not staged yet; "
                f"`migrate run --no-cutover` finishes staging them"
            )
        report = asyncio.run(gate.check(store, mig.id, mig.target_dim, None, every_database=False, unproven=True))
        if not report.passed:
            return _gate_failed(store, mig, report, started)
        if settings.on_before_cutover and counts.get(D_STAGED):
            held = asyncio.run(_before_cutover_hook(store, mig, settings, started))
            if held is not None:
                return held
        cut = swap.cutover(store, mig.id)
        result = _result(store, mig, cut, started, settings.key_source)
        if settings.apply_config and cut.done:
            result.applied = _apply_configs(store, mig, settings.key_source)
        if cut.restage:
            result.outcome = "partial"
            result.message += f"; {len(cut.restage)} changed since the scan: `migrate run` re-stages them"
        return result
