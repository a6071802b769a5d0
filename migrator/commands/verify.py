"""`migrate verify`: the quality gate on a migration's staged databases."""

from __future__ import annotations

import asyncio

from migrator.commands.common import _job_counts, _pick, _reader
from migrator.commands.settings import Settings
from migrator.errors import UsageError
from migrator.jobs.models import (
    D_CUT_OVER,
    D_STAGED,
    M_DONE,
    M_RUNNING,
    M_STAGED,
)
from migrator.pipeline import gate


def verify(settings: Settings, *, migration_id: str | None = None) -> dict:
    """The quality gate on a migration's staged databases (what runs before every cutover)."""
    settings.check_key()
    store = _reader(settings)
    try:
        with store.reader() as s:
            mig = _pick(s, migration_id, (M_STAGED, M_RUNNING, M_DONE), "verify")
            mid, target, requested = mig.id, mig.target_dim, mig.requested_model
        counts = _job_counts(store, mid)
        # staged databases are judged before their cutover; after it, the live files it wrote
        live = not counts.get(D_STAGED) and bool(counts.get(D_CUT_OVER))
        if not counts.get(D_STAGED) and not live:
            raise UsageError(
                f"migration {mid} has no staged or cut-over database to verify "
                f"({', '.join(f'{n} {k}' for k, n in sorted(counts.items())) or 'none'})"
            )

        async def go() -> gate.GateReport:
            endpoint = settings.make_endpoint()
            try:
                await endpoint.probe(requested, target_dim=target)
                return await gate.check(store, mid, target, endpoint, live=live)
            finally:
                await endpoint.aclose()

        report = asyncio.run(go())
        if report.checked == len(report.skipped):  # never a pass that judged nothing
            report.problems.append(
                "nothing was checked: every database was skipped (" + "; ".join(report.skipped[:3]) + ")"
            )
        return report.as_dict()
    finally:
        store.close()
