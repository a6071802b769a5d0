"""Ready-to-paste schedules for `migrate run`: a crontab line, or a systemd service and timer.

Each tick runs the same `migrate run`: the first starts (or resumes) the
migration, a tick while another run holds the lock exits 3 at once, a run that
reaches ``--max-duration``/``--until`` exits 9, and the next tick resumes.
Everything is written with absolute paths, because cron and systemd start
with an empty environment and an unknown working directory. The API key is
never written: the schedule names the key file (``--api-key-file``).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from migrator.errors import EXIT_LOCKED, EXIT_WINDOW, UsageError
from migrator.ops.window import parse_duration, window_hours

LOG_NAME = "migrator.log"  # written by every run, in the state directory
CRON_CAPTURE = "cron.log"  # what cron itself captures (the same lines, and anything before logging)


def _hour_field(hours: list[int]) -> str:
    """[22, 23, 0, 1, 2] -> '22-23,0-2'."""
    runs: list[list[int]] = []
    for h in hours:
        if runs and h == runs[-1][-1] + 1:
            runs[-1].append(h)
        else:
            runs.append([h])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def cron_schedule(every: str, window: str | None = None) -> str:
    """'15m' -> '*/15 * * * *', '2h' -> '0 */2 * * *', '1d' -> '0 0 * * *'; with a window,
    ticks only in its hours ('*/15 22-23,0-5 * * *' for 22:00-06:00)."""
    plain = _cron_schedule(every)
    if not window:
        return plain
    fields = plain.split()
    hours = window_hours(window)
    if fields[1] != "*" and fields[1].startswith("*/"):
        step = int(fields[1][2:])
        hours = hours[::step]
    elif fields[1] != "*":
        raise UsageError(f"--every {every} ticks once a day; with --window, tick at least every few hours")
    fields[1] = _hour_field(hours)
    return " ".join(fields)


def _cron_schedule(every: str) -> str:
    seconds = parse_duration(every)
    if seconds % 60:
        raise UsageError(f"--every {every}: cron counts whole minutes")
    minutes = int(seconds // 60)
    if minutes < 60 and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"
    if minutes % 60 == 0 and minutes < 1440 and 24 % (minutes // 60) == 0:
        hours = minutes // 60
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    if minutes == 1440:
        return "0 0 * * *"
    raise UsageError(
        f"--every {every}: use a number of minutes that divides an hour (1-30m), hours that divide a day (1-12h), or 1d"
    )


def run_argv(args: list[str], state_dir: Path) -> list[str]:
    """The `migrate run` command a schedule executes: this interpreter, absolute paths."""
    return [sys.executable, "-m", "migrator.cli", "run", *args, "--state-dir", str(state_dir), "--yes"]


def _cron_escape(command: str) -> str:
    return command.replace("%", "\\%")  # cron turns a bare % into a newline


def crontab(
    args: list[str], state_dir: Path, every: str, workdir: Path, key_file: str | None, window: str | None = None
) -> str:
    state_dir, workdir = state_dir.resolve(), workdir.resolve()
    command = (
        f"mkdir -p {shlex.quote(str(state_dir))} && cd {shlex.quote(str(workdir))} && "
        f"{shlex.join(run_argv(args, state_dir))} >> {shlex.quote(str(state_dir / CRON_CAPTURE))} 2>&1"
    )
    lines = [
        f"# migrator: `migrate run` every {every}. A tick while a run is going exits {EXIT_LOCKED} at once;",
        f"# a run stopped by --max-duration/--until exits {EXIT_WINDOW}; the next tick resumes. "
        f"Log: {state_dir / LOG_NAME}",
        *_key_comment(key_file),
        f"{cron_schedule(every, window)} {_cron_escape(command)}",
    ]
    return "\n".join(lines) + "\n"


def systemd_units(
    args: list[str],
    state_dir: Path,
    every: str,
    workdir: Path,
    key_file: str | None,
    name: str = "migrator",
    window: str | None = None,
) -> str:
    seconds = parse_duration(every)
    state_dir, workdir = state_dir.resolve(), workdir.resolve()
    return "\n".join(
        [
            f"# /etc/systemd/system/{name}.service",
            *_key_comment(key_file),
            "[Unit]",
            "Description=migrator: run (or resume) the NanoVectorDB migration",
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={workdir}",
            f"ExecStart={shlex.join(run_argv(args, state_dir))}",
            f"# {EXIT_LOCKED}: another run holds the lock; {EXIT_WINDOW}: the time window ended (resumable)",
            f"SuccessExitStatus={EXIT_LOCKED} {EXIT_WINDOW}",
            *([f"# ticks outside --window {window} exit {EXIT_WINDOW} at once, having done nothing"] if window else []),
            "Nice=10",
            "",
            f"# /etc/systemd/system/{name}.timer",
            "[Unit]",
            f"Description=migrator: every {every}",
            "",
            "[Timer]",
            "OnBootSec=5min",
            f"OnUnitInactiveSec={int(seconds)}s",
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
            f"# then: systemctl daemon-reload && systemctl enable --now {name}.timer",
            f"# log: {state_dir / LOG_NAME}   (and journalctl -u {name}.service)",
            "",
        ]
    )


def _key_comment(key_file: str | None) -> list[str]:
    if key_file:
        return [f"# API key read from {Path(key_file).resolve()} (keep it chmod 600)"]
    return [
        "# No --api-key-file: cron and systemd do not have your MIGRATOR_API_KEY. Put the key in a",
        "# file only this user can read (chmod 600) and add --api-key-file FILE (or no key for a",
        "# vLLM without --api-key).",
    ]
