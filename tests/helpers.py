"""What the tests share that is not a fixture: keys, a tree's digest, the CLI in-process
and as a real process. Test modules import from here; fixtures live in conftest.py."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from migrator.cli import main as cli_main
from migrator.testing.jobtable import migration_row

API_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
REAL_KEY = "sk-real-vllm-test-3b1e"  # the real vLLM servers' key (tests/test_real_vllm.py)


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under root (relative path -> digest)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def load_originals(paths) -> dict:
    """Each file's parsed JSON (to compare a migrated database with what it was)."""
    return {p: json.loads(Path(p).read_text(encoding="utf-8")) for p in paths}


class Cli:
    """Runs `migrate` in-process through click's CliRunner."""

    def __init__(self, endpoint: str | None, state_dir: Path):
        self.endpoint, self.state_dir = endpoint, state_dir
        self.runner = CliRunner()

    def __call__(self, *args: str, endpoint: bool = True, state: bool = True):
        argv = list(args)
        cmd = argv[0]
        if endpoint and self.endpoint and cmd in ("plan", "run"):
            argv += ["--endpoint", self.endpoint]
        if state and cmd in ("run", "cutover", "rollback", "status", "finalize"):
            argv += ["--state-dir", str(self.state_dir)]
        if cmd == "run":
            for opt, default in (("--retry-for", "5"), ("--request-timeout", "10")):
                if opt not in argv:
                    argv += [opt, default]
        return self.runner.invoke(cli_main, argv, catch_exceptions=False)


def run_args(root, endpoint: str, state, *extra: str) -> list[str]:
    """`migrate run`'s argv for the usual test run: one root, the 8b preset, a server, a state dir."""
    return ["run", "--root", str(root), "--model", "8b", "--endpoint", endpoint, "--state-dir", str(state), *extra]


MIGRATE = (sys.executable, "-m", "migrator.cli")  # `migrate` as a process, by this interpreter
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str, timeout: float = 120, cwd: Path | None = None) -> str:
    """``benchmarks/<script>`` as a process, which must exit 0; returns what it printed."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def spawn_migrate(*args: str, env: dict | None = None, new_session: bool = False) -> subprocess.Popen:
    """`migrate` as a real process (for kill tests); ``new_session``: in a process group of its own."""
    return subprocess.Popen(
        [*MIGRATE, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def add_migration_with_jobs(store, migration_id: str, paths) -> None:
    """A migration row and a pending job for each of ``paths`` (tests that build a table by hand)."""
    from migrator.jobs import queries

    with store.session() as s:
        s.add(migration_row(migration_id))
    rows = [
        dict(
            migration_id=migration_id,
            path=p,
            state="pending",
            source_size=1,
            source_mtime_ns=1,
            source_sha256="",
            source_dim=3072,
            n_records=2,
        )
        for p in paths
    ]
    with store.connection() as conn:
        queries.add_jobs(conn, rows, [])
