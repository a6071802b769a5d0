"""The command API: one function per command, callable from Python.

The CLI (:mod:`migrator.cli`) only parses options, calls these and prints what they
return. Each returns plain data (dataclasses / dicts ready for JSON) and raises
:class:`~migrator.errors.MigratorError` subclasses for expected failures. Each command
lives in its own module under :mod:`migrator.commands`; this is the one place a caller
imports them from.

- :func:`plan`     read-only: scan, size up, probe the endpoint. Writes nothing.
- :func:`run`      embed, stage, verify and (unless told not to) cut over. Resumable.
- :func:`cutover`  swap staged databases in, keeping backups.
- :func:`rollback` put the backups back, byte-identical.
- :func:`finalize` delete a kept migration's backups; rollback is impossible after.
- :func:`verify`   the quality gate on the staged databases.
- :func:`status`   read-only report from the job table.
- :func:`schedule` the crontab line or systemd units for `migrate cron`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each name is loaded with its command's module when first used: `migrate status` and
# `migrate --help` never import numpy, httpx or the pipeline that `run` needs.
_WHERE = {
    "RunResult": "common",
    "Settings": "settings",
    "cutover": "cutover",
    "finalize": "finalize",
    "plan": "plan",
    "rollback": "rollback",
    "run": "run",
    "schedule": "cron",
    "status": "status",
    "verify": "verify",
}

if TYPE_CHECKING:
    from migrator.commands.common import RunResult
    from migrator.commands.cron import schedule
    from migrator.commands.cutover import cutover
    from migrator.commands.finalize import finalize
    from migrator.commands.plan import plan
    from migrator.commands.rollback import rollback
    from migrator.commands.run import run
    from migrator.commands.settings import Settings
    from migrator.commands.status import status
    from migrator.commands.verify import verify


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'migrator.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"migrator.commands.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["RunResult", "Settings", "cutover", "finalize", "plan", "rollback", "run", "schedule", "status", "verify"]
