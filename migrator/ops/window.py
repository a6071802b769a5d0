"""When a run may go on: ``--window 22:00-06:00``, ``--max-duration 45m``, ``--until 06:00``.

A run started from cron at night must be done with the GPU before the day
shift. Both options give a deadline; the run stops sending requests there,
lets the ones in flight finish, keeps everything committed or staged, and
exits with :data:`~migrator.errors.EXIT_WINDOW` so the next window resumes it.

``--until`` alone is a time of day, the next one: a cron tick at 07:00 with
``--until 06:00`` would run until tomorrow's 06:00. A window has a start too:
a tick outside ``--window 22:00-06:00`` exits 9 at once, having done nothing,
and ``migrate cron --window`` schedules ticks in those hours only.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from migrator.errors import UsageError, WindowEnded

_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")


def parse_duration(text: str) -> float:
    """'45m' -> 2700.0; '1h30m', '90s', '2d', or plain seconds ('600')."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        seconds = float(t)
    else:
        parts = _PART.findall(t)
        if not parts or "".join(n + u for n, u in parts) != t:
            raise UsageError(f"{text!r} is not a duration; write it like 45m, 1h30m, 90s or 2d")
        seconds = sum(float(n) * _UNIT[u] for n, u in parts)
    if seconds <= 0:
        raise UsageError(f"{text!r}: a duration must be longer than zero")
    return seconds


def seconds_until(clock: str, now: datetime | None = None) -> float:
    """Seconds from ``now`` (local time) to the next ``HH:MM``; today if still ahead, else tomorrow."""
    hour, minute = divmod(_clock(clock, "--until"), 60)
    now = now or datetime.now()
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return (at - now).total_seconds()


def _clock(text: str, what: str) -> int:
    m = _CLOCK.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{what} {text!r} is not a time of day; write it like 06:00 (24-hour, local time)")
    return int(m.group(1)) * 60 + int(m.group(2))


def parse_window(text: str) -> tuple[int, int]:
    """'22:00-06:00' -> (start, end) in minutes after midnight; it may run past midnight."""
    start, sep, end = text.strip().partition("-")
    if not sep:
        raise UsageError(f"--window {text!r}: write it as START-END, like 22:00-06:00 (local time)")
    a, b = _clock(start, "--window start"), _clock(end, "--window end")
    if a == b:
        raise UsageError(f"--window {text!r}: the start and the end are the same time")
    return a, b


def window_left(text: str, now: datetime | None = None) -> float | None:
    """Seconds until the window's end if ``now`` is inside it, else None."""
    start, end = parse_window(text)
    now = now or datetime.now()
    minute = now.hour * 60 + now.minute + now.second / 60
    inside = start <= minute < end if start < end else (minute >= start or minute < end)
    if not inside:
        return None
    left = (end - minute) % 1440
    return left * 60


def window_hours(text: str) -> list[int]:
    """The hours of the day a window touches (for a crontab's hour field), in order from its start."""
    start, end = parse_window(text)
    last = (end - 1) % 1440 // 60  # the hour of the window's last minute
    hours, h = [], start // 60
    while True:
        hours.append(h)
        if h == last:
            return hours
        h = (h + 1) % 24


def time_left(
    max_duration: str | None, until: str | None, now: datetime | None = None, window: str | None = None
) -> float | None:
    """Seconds the run may take (the earliest of the limits), or None for no limit.
    Outside ``window``: :class:`WindowEnded` at once (exit 9, nothing done)."""
    limits = []
    if window:
        left = window_left(window, now)
        if left is None:
            now = now or datetime.now()
            raise WindowEnded(
                f"outside the window {window} (now {now:%H:%M}): nothing was done; a run inside it goes on"
            )
        limits.append(left)
    if max_duration:
        limits.append(parse_duration(max_duration))
    if until:
        limits.append(seconds_until(until, now))
    return min(limits) if limits else None
