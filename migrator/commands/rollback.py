"""`migrate rollback`: the backups put back, byte-identical."""

from __future__ import annotations

from pathlib import Path

from migrator import crashpoints
from migrator.apps import appconfig
from migrator.commands.common import _pick, _writer
from migrator.commands.settings import Settings
from migrator.errors import UsageError
from migrator.jobs import claims
from migrator.jobs.models import (
    M_DONE,
    M_FINALIZED,
    M_ROLLED_BACK,
    M_RUNNING,
    M_STAGED,
)
from migrator.pipeline import swap


def rollback(settings: Settings, *, migration_id: str | None = None, force: bool = False) -> swap.SwapResult:
    with _writer(settings, "rollback") as (store, _):
        with store.session() as s:
            # the latest, finalized and rolled-back ones included: never an older one behind them
            mig = _pick(s, migration_id, (M_DONE, M_STAGED, M_RUNNING, M_FINALIZED, M_ROLLED_BACK), "roll back")
            if mig.state == M_FINALIZED:
                raise UsageError(
                    f"migration {mig.id} was finalized: its backups were deleted, so it cannot be rolled back"
                )
            if mig.state not in (M_DONE, M_STAGED, M_RUNNING, M_ROLLED_BACK):
                raise UsageError(f"migration {mig.id} is {mig.state}; it cannot be rolled back")
            roots, mid, again = mig.roots, mig.id, mig.state == M_ROLLED_BACK
        claims.check(roots, settings.job_table)
        # Rolled back already: the databases stay as they are, but the steps after the record
        # (configs, claims) run again, since a kill may have come between them and the record.
        result = swap.SwapResult(mid, was_rolled_back=True) if again else swap.rollback(store, mid, force=force)
        if not again and not result.refused:
            crashpoints.reached("rollback.finished")
        rows = store.each_job(mid, "profile", "path")
        dirs = appconfig.by_application(((r.profile, r.path) for r in rows), unknown="dvd")
        result.configs_restored = appconfig.restore([Path(r) for r in roots], dirs, mid)
        if not result.refused:
            claims.release(roots, settings.job_table, mid)
        return result
