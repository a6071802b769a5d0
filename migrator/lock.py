"""One writer per state directory.

`run`, `cutover` and `rollback` hold an OS file lock (``filelock``: flock on
POSIX, released by the kernel when the holder dies, even by SIGKILL) on
``<state>/migrator.lock``. Next to it, ``migrator.lock.json`` names the holder
so a second command can say who is in the way.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .errors import LockHeld, StateError

LOCK_NAME = "migrator.lock"
HOLDER_NAME = "migrator.lock.json"


def _holder(state_dir: Path) -> str:
    try:
        info = json.loads((state_dir / HOLDER_NAME).read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
        return f"'migrate {info.get('command', '?')}' (pid {info.get('pid')} on {info.get('host')}, since {since})"
    except (OSError, ValueError):
        return "another migrate process"


@contextmanager
def state_lock(state_dir: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold the state directory's lock for the duration, or raise :class:`LockHeld` at once."""
    state_dir = Path(state_dir)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StateError(f"{state_dir}: cannot create the state directory ({e.strerror})") from None
    lock = FileLock(str(state_dir / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(f"{state_dir / LOCK_NAME}: held by {_holder(state_dir)}; wait for it to "
                       f"finish or stop it, then run again") from None
    holder = state_dir / HOLDER_NAME
    try:
        holder.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "command": command, "since": time.time(),
                                      "python": sys.executable}))
        yield
    finally:
        try:
            holder.unlink()
        except OSError:
            pass
        lock.release()
