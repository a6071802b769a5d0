"""`migrate cron`: the crontab line (or systemd units) that runs and resumes a migration, checked first.

The caller hands over the ``migrate run`` arguments the schedule repeats (the
CLI rebuilds them from the options it was given). Everything a tick would
refuse is refused here, before anything is printed: a URL with credentials, a
malformed window or duration, an ``--until`` without its window, no
``--root``, and a job-table URL holding a password.
"""

from __future__ import annotations

from pathlib import Path

from migrator.errors import UsageError
from migrator.jobs.store import default_state_dir, has_password
from migrator.ops import cron, window
from migrator.vllm.endpoint import normalize_endpoint


def schedule(
    run_args: list[str],
    *,
    every: str,
    roots: list[str],
    endpoints: list[str],
    state_dir: str | None = None,
    state_url: str | None = None,
    api_key_file: str | None = None,
    window_spec: str | None = None,
    until: str | None = None,
    max_duration: str | None = None,
    systemd: bool = False,
    cwd: Path | None = None,
) -> str:
    """The text to install: a crontab line, or systemd service and timer units."""
    for url in endpoints:
        normalize_endpoint(url)  # refuse a URL with credentials before printing it
    if max_duration:
        window.parse_duration(max_duration)
    if until:
        window.seconds_until(until)
        if not window_spec:
            raise UsageError(
                f"--until {until} in a schedule: a tick after {until} would run until the "
                f"next day's; give the window instead, like --window 22:00-{until}"
            )
    if window_spec:
        window.parse_window(window_spec)
    if not roots:
        raise UsageError("--root is required: the schedule must name the databases")
    args = list(run_args)
    if state_url:
        if has_password(state_url):
            raise UsageError(
                "MIGRATOR_STATE_URL holds a password, which must not go into a crontab "
                "or unit file; put it in ~/.pgpass of the user cron runs as"
            )
        args += ["--state-url", state_url]
    where = Path(state_dir) if state_dir else default_state_dir()
    make = cron.systemd_units if systemd else cron.crontab
    return make(args, where, every, cwd or Path.cwd(), api_key_file, window=window_spec)
