"""Where settings come from: options, then environment variables, then defaults.

Every environment variable migrator reads is listed in ``ENVIRONMENT`` (and in
README.md), and read here, by the functions below; nothing else in the package
reads the environment (what it passes on to a child process is not reading it).
The API key is read from the environment or a file only: never
from the command line, and it is never printed, logged or stored.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from migrator.errors import UsageError

DEFAULT_ENDPOINT = "http://localhost:8888/v1"  # what `vllm serve ... --port 8888` listens on
DEFAULT_PATTERN = "database.json,vdb_*.json"  # DVD; LightRAG and nano-graphrag
APPLICATIONS = ("dvd", "lightrag", "nano-graphrag")  # the profiles migrator knows (migrator.apps registers them)

ENVIRONMENT = {
    "MIGRATOR_ENDPOINT": "the vLLM base URL (default http://localhost:8888/v1)",
    "MIGRATOR_STATE_DIR": "where the job database and lock live (default ./state)",
    "MIGRATOR_API_KEY": "API key for the endpoint (first choice)",
    "VLLM_API_KEY": "API key for the endpoint (second choice; the key DVD already uses)",
    "OPENAI_API_KEY": "API key for the endpoint (third choice)",
    "MIGRATOR_DB_BUSY_TIMEOUT": "seconds to wait for another process's lock on the job database (default 30)",
    "MIGRATOR_STATE_URL": "a shared PostgreSQL job table, postgresql+psycopg://USER@HOST/DB (default: SQLite "
    "in the state directory); its password here, in PGPASSWORD or in ~/.pgpass",
    "MIGRATOR_LEASE_SECONDS": "how long a worker's claim on a database lasts unrenewed (default 60)",
    "MIGRATOR_CRASH_AT": "tests only: point[:n] makes the process SIGKILL itself at a named point "
    "(migrator/crashpoints.py)",
}
KEY_VARIABLES = ("MIGRATOR_API_KEY", "VLLM_API_KEY", "OPENAI_API_KEY")
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_BUSY_TIMEOUT = 30.0
_WARNED: set[str] = set()  # key files already warned about (readable by others)


def api_key(key_file: str | os.PathLike | None = None) -> str | None:
    """The endpoint's key: from ``--api-key-file`` if given, else the first set variable."""
    if key_file:
        path = Path(key_file)
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"--api-key-file {path}: cannot read it ({e.strerror})") from None
        except UnicodeDecodeError:
            raise UsageError(f"--api-key-file {path}: not UTF-8 text; it must hold the key on one line") from None
        if not text:
            raise UsageError(f"--api-key-file {path}: the file is empty")
        try:
            if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO) and str(path) not in _WARNED:
                _WARNED.add(str(path))  # once a process, however often the key is read
                import logging

                logging.getLogger("migrator").warning("%s is readable by other users; chmod 600 it", path)
        except OSError:
            pass
        return text.splitlines()[0].strip()
    for name in KEY_VARIABLES:
        value = os.environ.get(name)
        if value:
            return value.strip()
    return None


def key_source(key_file: str | os.PathLike | None = None) -> str | None:
    """Where the key comes from, to name it (never its value): the file, or the variable."""
    if key_file:
        return f"file:{Path(key_file).resolve()}"
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return name
    return None


def _seconds(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name) or default)
    except ValueError:
        return default


def state_dir() -> Path:
    """The state directory when no --state-dir is given (MIGRATOR_STATE_DIR, else ./state)."""
    return Path(os.environ.get("MIGRATOR_STATE_DIR") or "state")


def state_url(url: str | None = None) -> str | None:
    """``--state-url``, else MIGRATOR_STATE_URL; None: SQLite in the state directory."""
    return url or os.environ.get("MIGRATOR_STATE_URL") or None


def busy_timeout_seconds() -> float:
    """How long to wait for another process's write transaction (MIGRATOR_DB_BUSY_TIMEOUT)."""
    return _seconds("MIGRATOR_DB_BUSY_TIMEOUT", DEFAULT_BUSY_TIMEOUT)


def lease_seconds() -> float:
    """How long a worker's claim on a database lasts unrenewed (MIGRATOR_LEASE_SECONDS)."""
    return _seconds("MIGRATOR_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)


def crash_at() -> str | None:
    """Tests only: where this process is to SIGKILL itself (MIGRATOR_CRASH_AT, ``point[:n]``)."""
    return os.environ.get("MIGRATOR_CRASH_AT") or None
