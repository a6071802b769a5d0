"""`migrate finalize`: a kept migration's backups and leftovers deleted."""

from __future__ import annotations

from typing import Callable

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
from migrator.pipeline import backups


def finalize(
    settings: Settings, *, migration_id: str | None = None, confirm: Callable[[backups.Leftovers], bool] | None = None
) -> dict:
    """Delete the backups and leftovers of a finished migration; rollback is impossible after.

    ``confirm`` is shown what would be deleted and how much space that frees (under the
    lock, so it stays true) and returns whether to go ahead."""
    with _writer(settings, "finalize") as (store, _):
        with store.session() as s:
            mig = _pick(s, migration_id, (M_DONE, M_FINALIZED), "finalize")
            state, mid = mig.state, mig.id
        if state in (M_RUNNING, M_STAGED):
            raise UsageError(
                f"migration {mid} is unfinished ({state}); finish it with `migrate run` "
                f"or undo it with `migrate rollback` before finalizing"
            )
        if state == M_ROLLED_BACK:
            raise UsageError(f"migration {mid} was rolled back; it has no backups to delete")
        roots = mig.roots
        claims.check(roots, settings.job_table)
        found = backups.leftovers(store, mid)
        if confirm is not None and not confirm(found):
            raise UsageError("cancelled; nothing was deleted")
        done = backups.finalize(store, mid)
        claims.release(roots, settings.job_table, mid)
        return {
            **done.as_dict(),
            "state": M_FINALIZED,
            "message": f"migration {mid} finalized: {len(done.files)} file(s) deleted; it can no longer be rolled back",
        }
