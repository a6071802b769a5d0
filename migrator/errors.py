"""One exception family for every expected failure, each with its exit code.

The CLI turns a :class:`MigratorError` into a one-line message on stderr and
exits with ``exit_code``; anything else is a bug and keeps its traceback.
The codes are documented in README.md ("Exit codes"); keep the two in step.
"""
from __future__ import annotations

# Exit codes (see README.md, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1          # a bug: unexpected exception
EXIT_USAGE = 2             # bad option, bad configuration (click uses 2 too)
EXIT_LOCKED = 3            # another migrate run/cutover/rollback holds the lock
EXIT_PARTIAL = 4           # some databases failed or were refused; the others are done
EXIT_ENDPOINT_DOWN = 5     # endpoint unreachable / timing out for too long: resumable
EXIT_ENDPOINT_REJECTED = 6 # endpoint refuses us: bad key, unknown model, wrong dimension
EXIT_STATE = 7             # the state database is corrupt, locked or from a newer version
EXIT_DISK = 8              # no space / I/O error while writing
EXIT_WINDOW = 9            # stopped at --max-duration / --until: resumable, run again in the next window
EXIT_HELD = 10             # everything staged, but the --on-before-cutover hook said no: nothing swapped
EXIT_GATE = 11             # the quality gate failed (report names what): nothing swapped
EXIT_NOTHING = 0           # nothing to do is success
EXIT_INTERRUPTED = 130     # SIGINT/SIGTERM: stopped cleanly, resumable


class MigratorError(Exception):
    """An expected failure with a one-line, actionable message."""

    exit_code = EXIT_INTERNAL

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(MigratorError):
    exit_code = EXIT_USAGE


class LockHeld(MigratorError):
    exit_code = EXIT_LOCKED


class PartialFailure(MigratorError):
    exit_code = EXIT_PARTIAL


class EndpointUnavailable(MigratorError):
    """The endpoint did not answer usefully for longer than we wait: resumable."""

    exit_code = EXIT_ENDPOINT_DOWN


class EndpointRejected(MigratorError):
    """The endpoint answered, and the answer means our configuration is wrong."""

    exit_code = EXIT_ENDPOINT_REJECTED


class StateError(MigratorError):
    exit_code = EXIT_STATE


class DiskError(MigratorError):
    exit_code = EXIT_DISK


class WindowEnded(MigratorError):
    """The run's time window (--max-duration, --until) ended; everything done is kept."""
    exit_code = EXIT_WINDOW


class Interrupted(MigratorError):
    exit_code = EXIT_INTERRUPTED


class BadDatabase(MigratorError):
    """A database file cannot be migrated as it is. Names the file (and record)."""

    exit_code = EXIT_PARTIAL

    def __init__(self, path, problem: str, *, hint: str = ""):
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        msg = f"{self.path}: {problem}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class BadResponse(Exception):
    """An endpoint answer that must not be written: retried, never stored."""
