"""`migrate status`: what the job table says, read-only."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import select

from migrator.jobs import queries
from migrator.jobs.models import D_CUT_OVER, D_STAGED, Event, Migration
from migrator.jobs.store import default_state_dir, open_state, state_url


def status(
    state_dir: str | os.PathLike | None = None,
    *,
    migration_id: str | None = None,
    errors: int = 20,
    url: str | None = None,
    databases: bool = False,
) -> dict:
    """A JSON-ready report of every migration (or one), newest first.

    Its figures are aggregates the job database computes (no job row is loaded
    into Python); ``databases`` adds the list of every database."""
    store = open_state(state_dir, readonly=True, url=state_url(url))
    if store is None:
        return {"state": str(Path(state_dir) if state_dir else default_state_dir()), "migrations": []}
    try:
        with store.reader() as s:  # StateError if the file is damaged
            q = select(Migration).order_by(Migration.created_at.desc())
            if migration_id:
                q = q.where(Migration.id == migration_id)
            out = []
            for m in s.scalars(q).all():
                # leases are by the job database's clock; this host's is close
                figures = queries.progress(s, m.id, lease_after=time.time() - 5)
                evts = s.scalars(
                    select(Event)
                    .where(Event.migration_id == m.id, Event.level == "error")
                    .order_by(Event.id.desc())
                    .limit(errors)
                ).all()
                rate = m.records_embedded / m.embed_seconds if m.embed_seconds else None
                report = {
                    "id": m.id,
                    "state": m.state,
                    "created_at": m.created_at.isoformat() + "Z",
                    "finished_at": m.finished_at.isoformat() + "Z" if m.finished_at else None,
                    "model": m.model,
                    "requested_model": m.requested_model,
                    "target_dim": m.target_dim,
                    "endpoint": m.endpoint,
                    "roots": m.roots,
                    "databases": figures["databases"],
                    "by_state": figures["by_state"],
                    "texts": m.profile,  # how texts are read: auto, a profile, field:, template:
                    "by_application": figures["by_application"],
                    "workers": figures["workers"],  # worker (host:pid:tag) -> databases it holds now
                    "records_total": figures["records_total"],
                    "records_done": figures["records_done"],
                    "records_left": figures["records_total"] - figures["records_done"],
                    "records_embedded": m.records_embedded,
                    "tokens_embedded": m.tokens_embedded,
                    "records_per_second": round(rate, 1) if rate else None,
                    "backup_bytes": figures["backup_bytes"],  # the old files' sizes, as recorded
                    "truncated_records": figures["truncated_records"],
                    "message": m.message,
                    "errors": [{"at": e.at.isoformat() + "Z", "path": e.path, "message": e.message} for e in evts],
                }
                if databases:
                    report["database_list"] = _database_list(s, m.id)
                out.append(report)
            return {"state": store.location, "migrations": out}
    finally:
        store.close()


def _database_list(s, migration_id: str) -> list[dict]:
    return [
        {
            "path": path,
            "state": state,
            "records": n,
            "profile": profile,
            "done": n if state in (D_STAGED, D_CUT_OVER) else (n_done or 0),
            "error": error,
        }
        for path, state, n, profile, n_done, error in queries.job_rows(
            s, migration_id, "path", "state", "n_records", "profile", "n_done", "error"
        )
    ]
