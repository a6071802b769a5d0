"""What the applications' settings files have in common: reading them safely, finding them
upward from a directory, and setting one value in Python source or in a ``.env`` file.

Each application's own rules (which file, which keys, what else to tell the user) are in
its module (:mod:`~migrator.apps.dvd`, :mod:`~migrator.apps.lightrag`,
:mod:`~migrator.apps.nanographrag`), as hooks of its profile; :mod:`~migrator.apps.appconfig`
runs them for every application of a migration.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

MAX_CONFIG_BYTES = 1 << 20
UP_LEVELS = 3


@dataclass
class AppConfig:
    application: str
    path: str | None  # the file found (None: none found, or the app has none)
    model: str | None = None  # what it names now
    dim: int | None = None
    lines: list[str] = field(default_factory=list)  # what to set at cutover
    warnings: list[str] = field(default_factory=list)  # to fix before the application works: said at plan too
    notes: list[str] = field(default_factory=list)  # said with the lines to set, at cutover
    stale: bool = False  # names another model or dimension than the migration's

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Wanted:
    """What the settings must say after the cutover."""

    model: str
    dim: int | None  # None with --no-probe (or no answer) and a model of unknown dimension
    native_dim: int | None = None
    endpoint: str | None = None  # the run's endpoint (DVD's EMBEDDING_ENDPOINT)
    key_source: str | None = None  # where the run's key came from: a variable's name or "file:<path>"


def read_text(path: Path) -> str | None:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            return None
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def upward(start: Path, levels: int = UP_LEVELS):
    d = start
    for _ in range(levels + 1):
        yield d
        if d.parent == d:
            return
        d = d.parent


def env_values(text: str) -> dict[str, str]:
    """KEY=value lines of a .env file (comments and quotes removed; the last one wins)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        out[key] = value
    return out


_PY_ASSIGN = r"^(\s*){key}\s*=.*$"


def set_py(text: str, key: str, value_src: str) -> str:
    """``key = value_src`` in Python source: the assignment replaced, or added at the end."""
    pattern = re.compile(_PY_ASSIGN.format(key=re.escape(key)), re.M)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key} = {value_src}", text, count=1)
    return text.rstrip("\n") + f"\n{key} = {value_src}\n"


def set_env(text: str, key: str, value: str) -> str:
    pattern = re.compile(rf"^(\s*(?:export\s+)?){re.escape(key)}\s*=.*$", re.M)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key}={value}", text, count=1)
    return text.rstrip("\n") + f"\n{key}={value}\n"


def edited(cfg: AppConfig, setter: Callable[[str, str, str], str]) -> str | None:
    """The text of ``cfg``'s file with each of its ``KEY = value`` lines set by ``setter``
    (:func:`set_py` or :func:`set_env`); None if there is no file or nothing changes."""
    text = read_text(Path(cfg.path)) if cfg.path else None
    if text is None:
        return None
    new = text
    for line in cfg.lines:
        key, _, value = (part.strip() for part in line.partition("="))
        new = setter(new, key, value)
    return new if new != text else None
