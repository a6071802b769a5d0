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

__all__ = ["RunResult", "Settings", "cutover", "finalize", "plan", "rollback", "run", "schedule", "status", "verify"]
