"""`migrate status`: what the job table says, read-only."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from migrator.jobs.models import DatabaseJob, Event, Migration
from migrator.jobs.store import default_state_dir, open_state, state_url


def _bytes_on_disk(paths: list[str]) -> int:
    total = 0
    for p in paths:
        try:
            total += os.stat(p).st_size
        except OSError:
            pass
    return total


def status(
    state_dir: str | os.PathLike | None = None,
    *,
    migration_id: str | None = None,
    errors: int = 20,
    url: str | None = None,
) -> dict:
    """A JSON-ready report of every migration (or one), newest first."""
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
                jobs = s.scalars(
                    select(DatabaseJob).where(DatabaseJob.migration_id == m.id).order_by(DatabaseJob.id)
                ).all()
                by_state = Counter(j.state for j in jobs)
                now = time.time()  # leases are by the job database's clock; this host's is close
                workers = Counter(j.lease_owner for j in jobs if j.lease_until is not None and j.lease_until > now - 5)
                total = sum(j.n_records for j in jobs)
                done = sum(
                    j.n_records if j.state in ("staged", "cut_over", "rolled_back") else (j.n_done or 0) for j in jobs
                )
                evts = s.scalars(
                    select(Event)
                    .where(Event.migration_id == m.id, Event.level == "error")
                    .order_by(Event.id.desc())
                    .limit(errors)
                ).all()
                rate = m.records_embedded / m.embed_seconds if m.embed_seconds else None
                out.append(
                    {
                        "id": m.id,
                        "state": m.state,
                        "created_at": m.created_at.isoformat() + "Z",
                        "finished_at": m.finished_at.isoformat() + "Z" if m.finished_at else None,
                        "model": m.model,
                        "requested_model": m.requested_model,
                        "target_dim": m.target_dim,
                        "endpoint": m.endpoint,
                        "roots": m.roots,
                        "databases": len(jobs),
                        "by_state": dict(by_state),
                        "texts": m.profile,  # how texts are read: auto, a profile, field:, template:
                        "by_application": dict(Counter(j.profile or "unknown" for j in jobs)),
                        "workers": dict(workers),  # worker (host:pid:tag) -> databases it holds now
                        "records_total": total,
                        "records_done": done,
                        "records_left": total - done,
                        "records_embedded": m.records_embedded,
                        "tokens_embedded": m.tokens_embedded,
                        "records_per_second": round(rate, 1) if rate else None,
                        "backup_bytes": _bytes_on_disk(
                            [j.backup_path for j in jobs if j.backup_path and j.state in ("cut_over", "refused")]
                        ),
                        "truncated_records": sum(len(j.truncated or []) for j in jobs),
                        "message": m.message,
                        "database_list": [
                            {
                                "path": j.path,
                                "state": j.state,
                                "records": j.n_records,
                                "profile": j.profile,
                                "done": j.n_records if j.state in ("staged", "cut_over") else (j.n_done or 0),
                                "error": j.error,
                            }
                            for j in jobs
                        ],
                        "errors": [{"at": e.at.isoformat() + "Z", "path": e.path, "message": e.message} for e in evts],
                    }
                )
            return {"state": store.location, "migrations": out}
    finally:
        store.close()
