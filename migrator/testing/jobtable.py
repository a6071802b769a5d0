"""Job tables built by hand, for tests and benchmarks that need one without a scan."""

from __future__ import annotations

from typing import Any

from migrator.jobs.models import Migration


def migration_row(migration_id: str, **values: Any) -> Migration:
    """A migration row with plausible values; ``values`` override any of them."""
    fields: dict[str, Any] = dict(
        model="Qwen/Qwen3-Embedding-8B",
        requested_model="8b",
        native_dim=4096,
        target_dim=4096,
        endpoint="http://127.0.0.1:1/v1",
        roots=["/videos"],
        pattern="database.json",
        profile="auto",
    )
    return Migration(id=migration_id, **{**fields, **values})
