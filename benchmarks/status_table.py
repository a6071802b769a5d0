"""How long does `migrate status` take on a job table of a million databases? The table only: no files.

Building a tree of a million databases and migrating it would take hours here;
`status` reads only the job table. This builds job tables of ``--sizes`` staged
DVD rows (the columns `run` fills, through ``queries.add_jobs``) under
``--work-dir``, then times ``migrate status --json`` on each, and on an empty
state directory, in turn, ``--repeats`` times: wall seconds, start-up included.

    .venv/bin/python benchmarks/status_table.py [--sizes 100000,1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import PY, child_env, machine  # noqa: E402
from migrator.jobs import queries  # noqa: E402
from migrator.jobs.models import D_STAGED, M_STAGED  # noqa: E402
from migrator.jobs.store import DB_NAME, open_state  # noqa: E402
from migrator.testing.jobtable import migration_row  # noqa: E402

MIGRATION = "20261203-000000-0001"
CHUNK = 20_000  # rows an insert


def build(state: Path, n: int) -> float:
    """A job table of ``n`` staged DVD databases; returns its bytes a row."""
    store = open_state(state)
    assert store is not None
    try:
        with store.session() as s:
            s.add(
                migration_row(
                    MIGRATION,
                    state=M_STAGED,
                    model="Qwen/Qwen3-Embedding-0.6B",
                    requested_model="0.6b",
                    native_dim=1024,
                    target_dim=128,
                    roots=["/srv/video_database"],
                )
            )
        sha, t = hashlib.sha256(b"x").hexdigest(), 1_764_000_000_000_000_000
        for at in range(0, n, CHUNK):
            rows = []
            for i in range(at, min(n, at + CHUNK)):
                live = f"/srv/video_database/v{i:07d}/database.json"
                rows.append(
                    dict(
                        migration_id=MIGRATION,
                        path=live,
                        state=D_STAGED,
                        profile="dvd",
                        source_size=3176,
                        source_mtime_ns=t + i,
                        source_ctime_ns=t + i,
                        source_ino=1_000_000 + i,
                        source_sha256=sha,
                        source_dim=64,
                        n_records=2,
                        n_done=2,
                        staged_path=f"{live}.migrator-{MIGRATION}.staged",
                        staged_sha256=sha,
                        staged_size=3300,
                        staged_mtime_ns=t + i,
                        staged_ctime_ns=t + i,
                        staged_ino=2_000_000 + i,
                    )
                )
            with store.connection() as conn:
                queries.add_jobs(conn, rows, [])
    finally:
        store.close()
    return (state / DB_NAME).stat().st_size / max(1, n)


def timed_status(state: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        [PY, "-m", "migrator.cli", "status", "--json", "--state-dir", str(state)],
        env=child_env(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000", help="databases in each job table")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    top = Path(tempfile.mkdtemp(prefix="status-table-", dir=args.work_dir))
    try:
        states = {0: top / "empty"}
        states[0].mkdir()
        for n in sizes:
            states[n] = top / f"state-{n}"
            per_row = build(states[n], n)
            print(f"{n:,} databases: {per_row:.0f} bytes a row", flush=True)
        seconds: dict[int, list[float]] = {n: [] for n in states}
        for _ in range(args.repeats):
            for n, state in states.items():
                seconds[n].append(timed_status(state))
    finally:
        shutil.rmtree(top)
    m = machine()
    print(f"{m.get('cpu_model', '?')}, {m['cpus']} CPUs, {m['date']}")
    for n, values in seconds.items():
        what = "empty state dir" if n == 0 else f"{n:,} databases"
        print(f"status --json, {what}: " + " / ".join(f"{v:.2f}" for v in values) + " s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
