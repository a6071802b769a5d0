"""Named points where a crash test may kill this process, for real.

``MIGRATOR_CRASH_AT=<name>[:<n>]`` makes the process SIGKILL itself the n-th
time (default: first) it reaches the point ``<name>``: no cleanup, no
``finally``, exactly like ``kill -9`` or a power cut at that instant (minus
the page cache, which the fsync ordering covers). Unset, a point costs one
dictionary lookup. Used by the crash-torture tests to land kills inside
windows a few microseconds wide (between a rename and its journal commit)
that random timing would almost never hit.
"""

from __future__ import annotations

import os
import signal

from migrator import config

ENV = "MIGRATOR_CRASH_AT"
_target: tuple[str, int] | None = None
_hits: dict[str, int] = {}
_loaded = False

# Every point, in the order a migration reaches them (tests iterate over this).
POINTS = (
    "scan.recorded",  # the migration and its database rows are committed
    "batch.spooled",  # a batch of vectors is in its spool, durable; its done-mark not yet committed
    "batch.committed",  # a batch's done-mark is committed
    "stage.written",  # staged file durable, not yet read back
    "stage.recorded",  # the job table says staged
    "write.partial",  # a temporary file written, not yet renamed into place
    "cutover.backed_up",  # backup hard link made, live file not yet replaced
    "cutover.replaced",  # live file replaced, not yet recorded
    "cutover.recorded",  # the swap is recorded
    "rollback.replaced",  # backup moved back, not yet recorded
    "rollback.recorded",  # the restore is recorded
    "rollback.finished",  # the migration is recorded rolled back; configs and claims not yet
)


def _load() -> None:
    global _target, _loaded
    _loaded = True
    spec = config.crash_at()
    if not spec:
        return
    name, _, n = spec.partition(":")
    _target = (name, int(n or 1))


def reached(name: str) -> None:
    """Die here if a crash test asked for it."""
    if not _loaded:
        _load()
    if _target is None or _target[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)
