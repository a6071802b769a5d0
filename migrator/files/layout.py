"""Names of the files migrator puts beside a live database.

All live in the database's own directory (so a rename is atomic) and carry the
migration id, so two migrations never collide and `rollback --migration ID`
finds its own. None uses ``.tmp.``, a name some NanoVectorDB users clean up.
"""

from __future__ import annotations

import os
from pathlib import Path

OWN_MARK = ".migrator-"


def _beside(live: str | Path, migration_id: str, kind: str) -> str:
    # the live name with a suffix, as a string: cutover and rollback ask for 100,000s, and
    # building a Path for each cost them a tenth of their time
    return f"{os.fspath(live)}{OWN_MARK}{migration_id}.{kind}"


def staged_path(live: str | Path, migration_id: str) -> str:
    return _beside(live, migration_id, "staged")


def spool_path(live: str | Path, migration_id: str) -> str:
    """The new vectors of a large database while it is embedded (:mod:`migrator.files.spool`)."""
    return _beside(live, migration_id, "spool")


def backup_path(live: str | Path, migration_id: str) -> str:
    return _beside(live, migration_id, "backup")


def displaced_path(live: str | Path, migration_id: str) -> str:
    """Where `rollback --force` keeps a live file that was changed after cutover."""
    return _beside(live, migration_id, "displaced")


def is_own_file(name: str) -> bool:
    return OWN_MARK in name


def migrations_beside(live: str | Path) -> set[str]:
    """Ids of the migrations with a staged, spool, backup or displaced file beside ``live``."""
    live = Path(live)
    prefix = f"{live.name}{OWN_MARK}"
    out: set[str] = set()
    try:
        names = [e.name for e in os.scandir(live.parent)]
    except OSError:
        return out
    for name in names:
        if name.startswith(prefix):
            rest = name[len(prefix) :]
            mid, dot, kind = rest.rpartition(".")
            if dot and kind in ("staged", "spool", "backup", "displaced") and mid:
                out.add(mid)
    return out
