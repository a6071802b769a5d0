"""User commands run at the points of a migration that matter: before cutover, on success, on failure.

A hook is a shell command line (``--on-success 'notify-send done'``). It
gets the migration's figures in ``MIGRATOR_*`` environment variables, and
never the API key (the key variables are removed from its environment). A
``--on-before-cutover`` hook that exits non-zero holds the cutover: every
database stays staged and nothing is swapped until a later run or
``migrate cutover`` finds the hook passing.
"""

from __future__ import annotations

import logging
import os
import subprocess

from migrator.config import KEY_VARIABLES

log = logging.getLogger("migrator.ops.hooks")

HOOK_TIMEOUT = 600.0  # seconds a hook may take before it counts as failed


def run_hook(event: str, command: str | None, figures: dict) -> int | None:
    """Run one hook; returns its exit code (None when there is no hook). A hook that cannot
    start or times out counts as failed (exit 127 or 124), and says why in the log."""
    if not command:
        return None
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARIABLES}
    env["MIGRATOR_EVENT"] = event
    for key, value in figures.items():
        env[f"MIGRATOR_{key.upper()}"] = "" if value is None else str(value)
    log.info("hook %s: running %s", event, command)
    try:
        done = subprocess.run(
            command, shell=True, env=env, timeout=HOOK_TIMEOUT, stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
    except subprocess.TimeoutExpired:
        log.warning("hook %s: still running after %.0f s; stopped, counted as failed", event, HOOK_TIMEOUT)
        return 124
    except OSError as e:
        log.warning("hook %s: could not start (%s)", event, e.strerror)
        return 127
    for line in (done.stdout + done.stderr).splitlines()[-20:]:
        log.info("hook %s | %s", event, line)
    log.info("hook %s: exit %d", event, done.returncode)
    return done.returncode
