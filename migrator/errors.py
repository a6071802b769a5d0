"""One exception family for every expected failure, each with its exit code.

The CLI turns a :class:`MigratorError` into a one-line message on stderr and
exits with ``exit_code``; anything else is a bug and keeps its traceback.
The codes are documented in README.md ("Exit codes"); keep the two in step.
"""

from __future__ import annotations

# Exit codes (see README.md, "Exit codes").
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: unexpected exception
EXIT_USAGE = 2  # bad option, bad configuration (click uses 2 too)
EXIT_LOCKED = 3  # another migrate run/cutover/rollback holds the lock
EXIT_PARTIAL = 4  # some databases failed or were refused; the others are done
EXIT_ENDPOINT_DOWN = 5  # endpoint unreachable / timing out for too long: resumable
EXIT_ENDPOINT_REJECTED = 6  # endpoint refuses us: bad key, unknown model, wrong dimension
EXIT_STATE = 7  # the state database is corrupt, locked or from a newer version
EXIT_DISK = 8  # no space / I/O error while writing
EXIT_WINDOW = 9  # stopped at --max-duration / --until: resumable, run again in the next window
EXIT_HELD = 10  # everything staged, but the --on-before-cutover hook said no: nothing swapped
EXIT_GATE = 11  # the quality gate failed (report names what): nothing swapped
EXIT_NOTHING = 0  # nothing to do is success
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM: stopped cleanly, resumable

# What each code means and what to do: the README's table is generated from this (docs.py).
EXIT_CODES: dict[int, tuple[str, str]] = {
    EXIT_OK: ('success, including "nothing to do"', ""),
    EXIT_INTERNAL: ("internal error (a bug): the traceback is printed", "report it; files are safe, run again"),
    EXIT_USAGE: ("bad option or configuration, or cancelled at the prompt", "fix the command"),
    EXIT_LOCKED: (
        "another `migrate run/cutover/rollback` holds this state directory's lock; the message names "
        "its pid and host. Or another state directory's migration owns the tree "
        "(`.migrator-claim.json`; the message names it). Or a LightRAG server holds its storage lock "
        "(or is saving) over files to be swapped: nothing was swapped",
        "wait, or stop it; run from the owner's state directory; the next `migrate run` swaps",
    ),
    EXIT_PARTIAL: (
        "partial: some databases failed (each named with why), were refused at cutover or rollback, "
        "or were held back with a file of their working dir; the rest are done",
        "fix the named files, run again",
    ),
    EXIT_ENDPOINT_DOWN: (
        "endpoint unreachable or failing for longer than `--retry-for`; `plan` too, after its "
        "report, when the endpoint does not answer",
        "start or fix the server, run again (resumes)",
    ),
    EXIT_ENDPOINT_REJECTED: (
        "the endpoint refuses us: wrong key (401), a model it does not serve, wrong dimension, "
        "a model with no embeddings (a chat model), a Qwen3-Embedding tokenizer that does "
        "not append EOS, answers that are always invalid; `plan` too, after its report",
        "fix `--model`, the key or the server",
    ),
    EXIT_STATE: ("the job database is corrupt, locked or from a newer migrator", "the message says which"),
    EXIT_DISK: ("disk full while writing: the staged file is removed and nothing is swapped", "free space, run again"),
    EXIT_WINDOW: (
        "the time window ended (`--window`, `--max-duration`, `--until`): requests in flight "
        "finished, everything staged or committed is kept; or the run started outside `--window` "
        "and did nothing",
        "nothing: the next run (cron tick) resumes",
    ),
    EXIT_HELD: (
        "held: everything is staged, but the `--on-before-cutover` hook exited non-zero, so nothing was swapped",
        "fix what the hook checks; the next `migrate run` (or `migrate cutover`) swaps",
    ),
    EXIT_GATE: (
        "the quality gate failed (each problem is named): nothing was swapped, the migration stays "
        "staged; `migrate verify` of a finished migration exits with it too",
        "fix the server or model, `migrate rollback` (drops the staged files), then run again",
    ),
    EXIT_INTERRUPTED: (
        "interrupted by SIGINT or SIGTERM; in-flight batches were committed or dropped",
        "run again to resume",
    ),
}


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
