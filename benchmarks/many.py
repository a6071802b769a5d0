"""Does the cost of a database stay constant over very many small ones?  (100,000 databases)

A tree of N tiny DVD databases (``video_database/v000000/database.json`` ...,
2 records each at 64 dims) is migrated to Qwen/Qwen3-Embedding-0.6B at 128
dims against the benchmark server with no capacity limit (an instant server,
benchmarks/bench_server.py in its own process), so what is measured is
migrator's own cost per database, not the embedding's. Each step is its own
``python -m migrator.cli`` process, timed (wall seconds), with its peak RSS:
its own high-water mark (``VmHWM``, written by benchmarks/peak.py at its exit),
not ``wait4``'s, which starts at the benchmark's own (a forked child inherits
it); the scan's pool workers are processes of their own, not counted:

  plan      ``plan --no-probe --json``
  run       ``run --yes --json --no-quality-gate --no-cutover``; meanwhile the
            job table (<run>/state/migrator.db) is read every second to count
            the databases done (staged or cut over), which gives the rate over
            the first tenth (0 -> N/10 done) and the last tenth (9N/10 -> N) and
            their ratio: 1.0 is a constant cost per database
  status    ``status --json``, three times
  cutover   ``cutover --yes --json``
  rollback  ``rollback --yes --json``, then every file compared byte for byte
            with the original

Also: the job table's size (plus its -wal, if any) per database after run and
after cutover, ``run``'s wall time per database, and at the end a check that
every live file is at 128 dims with its records unchanged (every file read
with migrator.files.nvdb, a sample of 200 compared record by record with the
original and loaded with the real nano-vectordb).

The tree is built once per N (a pool of 2 processes; 100,000 databases take a
few minutes) under ``<work dir>/corpora/`` and every run migrates a fresh copy
made of hard links, removed afterwards unless --keep.

    python benchmarks/many.py --databases 100000      # the figures
    python benchmarks/many.py --quick                 # smoke test: 300 databases, well under a minute
    python benchmarks/many.py --databases 3000 --results-dir /tmp/many-test
    python benchmarks/many.py --databases 10000 --steps plan    # only time the plan

Results: benchmarks/results/<name>.json (+ .md), name many-<N>db-<YYYY-MM-DD>;
--quick writes them to <work dir>/results.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import math
import multiprocessing
import os
import random
import sqlite3
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import corpus as corp  # noqa: E402
from benchmarks.procs import PY, REPO, Server, Timed, child_env, machine, report, run_timed  # noqa: E402
from benchmarks.run import log  # noqa: E402

MODEL = "Qwen/Qwen3-Embedding-0.6B"
OLD_DIM = 64
NEW_DIM = 128
RECORDS_PER_DB = 2
TREE_VERSION = 1  # bump when the tree's layout or contents change (cached trees are rebuilt)
MANIFEST = "many-manifest.json"
STEPS = ("plan", "run", "status", "cutover", "rollback")
STATUS_REPEATS = 3
QUICK_DATABASES = 300
DEFAULT_DATABASES = 100_000
SAMPLE = 200  # databases compared record by record at the end
JOB_DB = "migrator.db"  # migrator.jobs.store.DB_NAME
DONE_STATES = ("staged", "cut_over")  # migrator.jobs.models.D_STAGED, D_CUT_OVER


# --------------------------------------------------------------------------- #
# The tree                                                                    #
# --------------------------------------------------------------------------- #
def video_id(i: int) -> str:
    return f"v{i:06d}"


def tree_key(databases: int) -> str:
    return f"many-{databases}db-{RECORDS_PER_DB}rec-{OLD_DIM}d-v{TREE_VERSION}"


def _build_one(root: str, i: int) -> tuple[int, int]:
    """Write database *i*; returns (records, bytes of its database.json)."""
    from migrator.testing.corpus import build_dvd_database, make_captions

    video_dir = Path(root) / video_id(i)
    captions = make_captions(random.Random(i), RECORDS_PER_DB)
    path = build_dvd_database(video_dir, captions, dim=OLD_DIM)
    # read-only: the runs' hard-link copies share these inodes (migrator never writes in place)
    os.chmod(path, 0o444)
    os.chmod(video_dir / "captions" / "captions.json", 0o444)
    records = sum(1 for k, v in captions.items() if k != "subject_registry" and v.get("caption"))
    return records, path.stat().st_size


def ensure_tree(work: Path, databases: int, *, jobs: int = 2) -> dict:
    """Build (or reuse) the tree of *databases* tiny DVD databases; returns its manifest (with ``root``)."""
    base = work / "corpora" / tree_key(databases)
    man_path = base / MANIFEST
    if man_path.exists():
        man = json.loads(man_path.read_text())
        if man.get("version") == TREE_VERSION and man.get("databases") == databases:
            man["root"] = str(base / "video_database")
            man["reused"] = True
            log(f"reusing tree {base.name} ({databases:,} databases, built in {man['build_seconds']} s)")
            return man
    building = base.parent / (base.name + ".building")
    corp.remove_tree(building)
    corp.remove_tree(base)
    root = building / "video_database"
    root.mkdir(parents=True)
    log(f"building tree {base.name}: {databases:,} databases x {RECORDS_PER_DB} records, {jobs} processes ...")
    t0 = time.monotonic()
    records = size = done = 0
    every = max(1, databases // 20)
    last_print = t0
    chunk = max(1, min(500, databases // (jobs * 20)))
    with multiprocessing.Pool(jobs) as pool:
        for n, b in pool.imap_unordered(functools.partial(_build_one, str(root)), range(databases), chunksize=chunk):
            records += n
            size += b
            done += 1
            now = time.monotonic()
            if done == databases or done % every == 0 or now - last_print > 15:
                rate = done / (now - t0) if now > t0 else 0.0
                eta = (databases - done) / rate if rate else 0.0
                log(f"  built {done:,}/{databases:,} ({100 * done / databases:.0f}%), {rate:.0f}/s, ETA {eta:.0f} s")
                last_print = now
    man = {
        "key": base.name,
        "version": TREE_VERSION,
        "databases": databases,
        "records_per_db": RECORDS_PER_DB,
        "records": records,
        "dim": OLD_DIM,
        "bytes": size,
        "build_seconds": round(time.monotonic() - t0, 1),
        "build_processes": jobs,
    }
    (building / MANIFEST).write_text(json.dumps(man, indent=2) + "\n")
    building.rename(base)  # complete, or not there at all
    log(f"  built in {man['build_seconds']} s: {records:,} records, {size / 1e6:.0f} MB")
    man["root"] = str(base / "video_database")
    man["reused"] = False
    return man


# --------------------------------------------------------------------------- #
# Timed steps                                                                 #
# --------------------------------------------------------------------------- #
def run_step(
    cmd: list[str],
    *,
    env: dict,
    cwd: Path,
    out_path: Path,
    timeout: float,
    sample: Optional[Callable[[float], None]] = None,
    sample_every: float = 1.0,
) -> Timed:
    """Run *cmd* (``procs.run_timed``) with *env*, stdout to *out_path* and stderr to
    ``<out_path>.err``; *sample(seconds since start)* is called every *sample_every*
    seconds while it runs."""
    start = time.monotonic()
    due = [start]

    def poll() -> bool:
        now = time.monotonic()
        if sample is not None and now >= due[0]:
            sample(now - start)
            due[0] = max(due[0] + sample_every, now)
        return False  # never kill

    return run_timed(
        cmd,
        log_path=out_path.with_suffix(".err"),
        timeout=timeout,
        cwd=cwd,
        poll=poll if sample is not None else None,
        poll_every=0.01,
        env=env,
        stdout_path=out_path,
        own_peak=True,
    )


def step_result(t: Timed, out_path: Path) -> tuple[dict, Optional[dict]]:
    """The step's figures, and its --json document (None if it printed none)."""
    res = t.as_dict()
    res["maxrss_wait4_mb"] = t.extra.get("maxrss_wait4_mb")
    res["stdout"] = str(out_path)
    res["ok"] = t.rc == 0 and not t.timed_out
    doc = None
    try:
        doc = json.loads(out_path.read_bytes())
    except (OSError, ValueError):
        pass
    if not res["ok"]:
        res["error"] = t.stdout_tail[-1500:]
    return res, doc


def migrate(cmd: str, *opts: str) -> list[str]:
    return [PY, "-m", "migrator.cli", cmd, *opts]


# --------------------------------------------------------------------------- #
# The job table                                                               #
# --------------------------------------------------------------------------- #
class Progress:
    """Databases done, read from the job table (read-only) while ``run`` runs."""

    def __init__(self, state_db: Path):
        self.state_db = state_db
        self.samples: list[tuple[float, int, int]] = []  # (seconds since start, done, rows)
        self.skipped = 0  # samples lost to a lock

    def count(self) -> Optional[tuple[int, int]]:
        """(done, rows); (0, 0) before the table exists; None while it is locked."""
        if not self.state_db.exists():
            return 0, 0
        try:
            con = sqlite3.connect(f"file:{self.state_db}?mode=ro", uri=True, timeout=0.05)
            try:
                marks = ",".join("?" * len(DONE_STATES))
                done = con.execute(f"SELECT count(*) FROM databases WHERE state IN ({marks})", DONE_STATES).fetchone()
                rows = con.execute("SELECT count(*) FROM databases").fetchone()
                return int(done[0]), int(rows[0])
            finally:
                con.close()
        except sqlite3.OperationalError as e:
            msg = str(e)
            if "no such table" in msg:
                return 0, 0
            if "locked" in msg or "unable to open" in msg or "busy" in msg:
                return None
            raise
        except sqlite3.DatabaseError:  # caught half-created
            return None

    def __call__(self, seconds: float) -> None:
        got = self.count()
        if got is None:
            self.skipped += 1
        else:
            self.samples.append((round(seconds, 3), got[0], got[1]))


def crossing(samples: list[tuple[float, int]], k: int) -> Optional[float]:
    """When the done count reached *k*: linear between the samples around it; for k=0,
    the last sample with nothing done."""
    if k <= 0:
        zeros = [t for t, c in samples if c == 0]
        return zeros[-1] if zeros else None
    prev: Optional[tuple[float, int]] = None
    for t, c in samples:
        if c >= k:
            if prev is None:
                return t
            t0, c0 = prev
            return t0 + (k - c0) / (c - c0) * (t - t0)
        prev = (t, c)
    return None


def _rate(databases: int, seconds: Optional[float]) -> Optional[float]:
    if seconds is None or seconds <= 0:
        return None
    return round(databases / seconds, 2)


def tenths(samples: list[tuple[float, int]], n: int) -> dict:
    """Rates (databases/s) over the first tenth (0 -> N/10 done) and the last (9N/10 -> N)."""
    tenth = max(1, n // 10)
    a0, a1, b0, b1 = crossing(samples, 0), crossing(samples, tenth), crossing(samples, n - tenth), crossing(samples, n)
    first_s = a1 - a0 if a0 is not None and a1 is not None else None
    last_s = b1 - b0 if b0 is not None and b1 is not None else None
    first, last = _rate(tenth, first_s), _rate(tenth, last_s)
    return {
        "databases_per_tenth": tenth,
        "first_tenth": {
            "from_s": _round(a0),
            "to_s": _round(a1),
            "seconds": _round(first_s),
            "databases_per_s": first,
        },
        "last_tenth": {
            "from_s": _round(b0),
            "to_s": _round(b1),
            "seconds": _round(last_s),
            "databases_per_s": last,
        },
        "ratio_last_first": round(last / first, 3) if first and last else None,
    }


def tenths_from_job_table(state_db: Path, n: int) -> Optional[dict]:
    """The same rates from the rows' own ``updated_at`` (the time each was staged), read
    once after ``run --no-cutover``: exact, where the samples are a second apart."""
    try:
        con = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT updated_at FROM databases WHERE state = 'staged' ORDER BY updated_at").fetchall()
        finally:
            con.close()
        stamps = [datetime.fromisoformat(str(r[0])).timestamp() for r in rows]
    except (sqlite3.Error, ValueError):
        return None
    if len(stamps) != n or n < 2:
        return None
    tenth = max(2, n // 10)
    first_s = stamps[tenth - 1] - stamps[0]
    last_s = stamps[-1] - stamps[-tenth]
    # tenth rows staged span tenth-1 intervals
    first, last = _rate(tenth - 1, first_s), _rate(tenth - 1, last_s)
    return {
        "first_tenth": {"seconds": _round(first_s), "databases_per_s": first},
        "last_tenth": {"seconds": _round(last_s), "databases_per_s": last},
        "ratio_last_first": round(last / first, 3) if first and last else None,
        "first_to_last_staged_s": _round(stamps[-1] - stamps[0]),
    }


def job_table_size(state_dir: Path, n: int) -> dict:
    db = state_dir / JOB_DB
    wal = state_dir / (JOB_DB + "-wal")
    db_b = db.stat().st_size if db.exists() else 0
    wal_b = wal.stat().st_size if wal.exists() else 0
    return {
        "db_bytes": db_b,
        "wal_bytes": wal_b,
        "wal_present": wal.exists(),
        "bytes": db_b + wal_b,
        "bytes_per_database": round((db_b + wal_b) / n, 1) if n else None,
    }


def _round(x: Optional[float], nd: int = 3) -> Optional[float]:
    return None if x is None else round(x, nd)


# --------------------------------------------------------------------------- #
# Verification                                                                #
# --------------------------------------------------------------------------- #
def restored(root: Path, pristine: Path, n: int) -> dict:
    """After rollback: every live file byte-identical to the original, nothing of ours left."""
    from migrator.files.layout import is_own_file

    t0 = time.monotonic()
    identical, problems = 0, []
    for i in range(n):
        d = root / video_id(i)
        if (d / "database.json").read_bytes() == (pristine / video_id(i) / "database.json").read_bytes():
            identical += 1
        else:
            problems.append(f"{d / 'database.json'}: not the original's bytes")
        problems += [f"{d / name}: left behind" for name in os.listdir(d) if is_own_file(name)]
    return {
        "ok": identical == n and not problems,
        "identical": identical,
        "problems": problems[:20],
        "seconds": round(time.monotonic() - t0, 1),
    }


def verify(root: Path, pristine: Path, n: int, sample: int = SAMPLE) -> dict:
    """Every live file at NEW_DIM with its records; a sample compared with the original."""
    import numpy as np

    from migrator.errors import BadDatabase
    from migrator.files import nvdb
    from migrator.testing.corpus import NanoVectorDB

    t0 = time.monotonic()
    problems: list[str] = []
    by_dim: collections.Counter = collections.Counter()
    records = 0
    read = 0
    for i in range(n):
        path = root / video_id(i) / "database.json"
        try:
            nf = nvdb.read(path)
        except BadDatabase as e:
            problems.append(str(e))
            continue
        read += 1
        by_dim[nf.embedding_dim] += 1
        records += nf.n
        if nf.embedding_dim != NEW_DIM:
            problems.append(f"{path}: {nf.embedding_dim} dims, expected {NEW_DIM}")
        if nf.n != RECORDS_PER_DB:
            problems.append(f"{path}: {nf.n} records, expected {RECORDS_PER_DB}")
    picks = list(range(0, n, max(1, n // sample)))[:sample]
    sample_problems: list[str] = []
    for i in picks:
        new = root / video_id(i) / "database.json"
        old = pristine / video_id(i) / "database.json"
        try:
            a, b = nvdb.read(old), nvdb.read(new)
            if a.embedding_dim != OLD_DIM:
                sample_problems.append(f"{old}: the cached original changed ({a.embedding_dim} dims)")
            if b.data != a.data:
                sample_problems.append(f"{new}: records differ from the original's")
            if b.additional_data != a.additional_data:
                sample_problems.append(f"{new}: additional_data differs from the original's")
            m = b.matrix()
            norms = np.linalg.norm(m, axis=1) if m.size else np.zeros(0)
            if m.shape != (a.n, NEW_DIM) or not np.all(np.isfinite(m)) or not np.allclose(norms, 1.0, atol=1e-3):
                sample_problems.append(f"{new}: matrix {m.shape}, not {a.n} unit rows of {NEW_DIM}")
            db = NanoVectorDB(NEW_DIM, storage_file=str(new))
            if len(db) != a.n:
                sample_problems.append(f"{new}: nano-vectordb loads {len(db)} records, expected {a.n}")
        except Exception as e:  # noqa: BLE001 - reported, not raised
            sample_problems.append(f"{new}: {type(e).__name__}: {e}")
    problems += sample_problems
    return {
        "ok": not problems and read == n and by_dim == {NEW_DIM: n} and records == n * RECORDS_PER_DB,
        "files_expected": n,
        "files_read": read,
        "by_dim": {str(k): v for k, v in sorted(by_dim.items())},
        "records": records,
        "records_expected": n * RECORDS_PER_DB,
        "records_match": records == n * RECORDS_PER_DB and read == n,
        "sample": len(picks),
        "sample_ok": not sample_problems,
        "problems": problems[:20],
        "problems_total": len(problems),
        "seconds": round(time.monotonic() - t0, 1),
    }


# --------------------------------------------------------------------------- #
# The run                                                                     #
# --------------------------------------------------------------------------- #
def measure(args, man: dict) -> dict:
    n = man["databases"]
    work: Path = args.work_dir
    run_dir = work / "runs" / args.name
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    state_dir = run_dir / "state"
    state_db = state_dir / JOB_DB
    logs = run_dir / "logs"
    log(f"hard-link copy of the tree to {root} ...")
    t0 = time.monotonic()
    corp.link_copy(Path(man["root"]), root)
    out: dict = {"copy_seconds": round(time.monotonic() - t0, 1), "run_dir": str(run_dir), "steps": {}}
    log(f"  copied in {out['copy_seconds']} s")
    env = child_env()
    env["MIGRATOR_STATE_DIR"] = str(state_dir)
    steps = out["steps"]
    common = ["--root", str(root), "--model", MODEL, "--dim", str(NEW_DIM)]

    def step(name: str, cmd: list[str], timeout: float, **kw) -> tuple[dict, Optional[dict]]:
        out_path = logs / f"{name}.json"
        log(f"{name}: {' '.join(cmd[2:])}")
        t = run_step(cmd, env=env, cwd=run_dir, out_path=out_path, timeout=timeout, **kw)
        res, doc = step_result(t, out_path)
        log(
            f"  rc {res['rc']}, wall {res['wall_s']:.2f} s, peak RSS {res['maxrss_mb']:.0f} MB"
            + ("" if res["ok"] else f"  FAILED: {res.get('error', '')[-300:]}")
        )
        return res, doc

    if "plan" in args.steps:
        res, doc = step("plan", migrate("plan", *common, "--no-probe", "--json"), 300 + n * 0.02)
        if doc:
            res["totals"] = {k: doc.get("totals", {}).get(k) for k in ("databases", "to_migrate", "bad", "records")}
        steps["plan"] = res
    if "run" in args.steps:
        with Server(run_dir, model=MODEL, tokens_per_second=None, overhead_s=0.0) as srv:
            progress = Progress(state_db)
            s0 = srv.stats()
            res, doc = step(
                "run",
                migrate(
                    "run",
                    *common,
                    "--endpoint",
                    srv.base_url,
                    "--yes",
                    "--json",
                    "--no-quality-gate",
                    "--no-cutover",
                ),
                600 + n * 0.25,
                sample=progress,
                sample_every=args.poll_every,
            )
            progress(res["wall_s"])  # the count it left behind
            s1 = srv.stats()
        if doc:
            res.update(
                outcome=doc.get("outcome"),
                databases=doc.get("databases"),
                records_embedded=doc.get("records_embedded"),
                migrator_seconds=doc.get("seconds"),
                failures=len(doc.get("failures") or []),
            )
        res["overhead_per_database_ms"] = round(1000 * res["wall_s"] / n, 3)
        res["server"] = {
            "cpu_s": round(s1["cpu_s"] - s0["cpu_s"], 3),
            "requests": s1["server"]["embedding_ok"] - s0["server"]["embedding_ok"],
            "texts": s1["server"]["inputs_embedded"] - s0["server"]["inputs_embedded"],
            "mean_batch": round(s1["server"]["mean_batch"], 2),
            "max_in_flight": s1["server"]["max_in_flight"],
            "busy_s": _round(s1["last_answer"] - s1["first_request"])
            if s1.get("first_request") and s1.get("last_answer")
            else None,
        }
        steps["run"] = res
        samples = [(t, c) for t, c, _rows in progress.samples]
        out["progress"] = {
            "poll_every_s": args.poll_every,
            "done_states": list(DONE_STATES),
            "samples_taken": len(progress.samples),
            "samples_locked": progress.skipped,
            "done_at_end": samples[-1][1] if samples else None,
            **tenths(samples, n),
            "from_job_table": tenths_from_job_table(state_db, n),
            # (seconds since start, databases done, rows in the table): rows show the scan
            "samples": progress.samples,
        }
        out["job_table_after_run"] = job_table_size(state_dir, n)
        if "status" in args.steps:
            steps["status"] = []
            for k in range(1, STATUS_REPEATS + 1):
                res, doc = step(f"status-{k}", migrate("status", "--json"), 120 + n * 0.005)
                if doc and doc.get("migrations"):
                    res["by_state"] = doc["migrations"][0].get("by_state")
                steps["status"].append(res)
        if "cutover" in args.steps:
            res, doc = step("cutover", migrate("cutover", "--yes", "--json"), 300 + n * 0.05)
            if doc:
                res.update(outcome=doc.get("outcome"), databases=doc.get("databases"))
            steps["cutover"] = res
            out["job_table_after_cutover"] = job_table_size(state_dir, n)
            log(f"verifying the {n:,} live files ...")
            out["verify"] = verify(root, Path(man["root"]), n)
            v = out["verify"]
            log(
                f"  {'OK' if v['ok'] else 'FAILED'}: {v['files_read']:,} files, by dims {v['by_dim']}, "
                f"{v['records']:,} records (expected {v['records_expected']:,}), sample {v['sample']} "
                f"{'ok' if v['sample_ok'] else 'NOT ok'}, {v['seconds']} s"
            )
        else:
            out["verify"] = {"ok": None, "skipped": "no cutover: the live files are still the originals"}
        if "rollback" in args.steps:
            res, doc = step("rollback", migrate("rollback", "--yes", "--json"), 300 + n * 0.05)
            if doc:
                res.update(outcome=doc.get("outcome"), done=doc.get("done"), refused=len(doc.get("refused") or []))
            steps["rollback"] = res
            log(f"comparing the {n:,} restored files with the originals ...")
            out["restored"] = restored(root, Path(man["root"]), n)
            r = out["restored"]
            log(f"  {'OK' if r['ok'] else 'FAILED'}: {r['identical']:,} of {n:,} byte-identical, {r['seconds']} s")
    if not args.keep:
        corp.remove_tree(root)
    return out


# --------------------------------------------------------------------------- #
# Report                                                                      #
# --------------------------------------------------------------------------- #
def _steps_in_order(steps: dict) -> list[tuple[str, dict]]:
    rows = []
    if "plan" in steps:
        rows.append(("plan --no-probe", steps["plan"]))
    if "run" in steps:
        rows.append(("run --no-cutover", steps["run"]))
    for k, s in enumerate(steps.get("status", []), 1):
        rows.append((f"status ({k})", s))
    if "cutover" in steps:
        rows.append(("cutover", steps["cutover"]))
    if "rollback" in steps:
        rows.append(("rollback", steps["rollback"]))
    return rows


def _num(x, fmt: str = "{:,.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def markdown(res: dict) -> str:
    m, c, r = res["machine"], res["tree"], res["results"]
    n = c["databases"]
    lines = [
        f"# Many small databases: {n:,} databases of {RECORDS_PER_DB} records, {OLD_DIM} -> {NEW_DIM} dims",
        "",
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}), {m.get('ram_gb', '?')} GB RAM, "
        f"Python {m['python']}, {m['platform']}; {m['date']}; migrator commit {res.get('commit')}"
        f"{' (uncommitted changes under migrator/)' if m.get('migrator_uncommitted_changes') else ''}; "
        f"load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}.",
        "",
        f"Tree: {n:,} DVD databases, {c['records']:,} records, {c['bytes'] / 1e6:,.1f} MB "
        + (
            f"(cached; built in {c['build_seconds']} s)"
            if c.get("reused")
            else f"(built now in {c['build_seconds']} s with {c['build_processes']} processes)"
        )
        + f"; hard-link copy {r.get('copy_seconds')} s. Server: no capacity limit, no overhead; model {MODEL}.",
        "",
        "| step | wall s | peak RSS MB | wait4's figure MB |",
        "|---|---:|---:|---:|",
    ]
    for label, s in _steps_in_order(r["steps"]):
        bad = "" if s.get("ok") else f" (FAILED, rc {s.get('rc')})"
        w4 = s.get("maxrss_wait4_mb")
        lines.append(f"| {label}{bad} | {s['wall_s']:.2f} | {s['maxrss_mb']:.1f} | {_num(w4, '{:.1f}')} |")
    lines += [
        "",
        "Peak RSS is the command's own (`VmHWM` at its exit, benchmarks/peak.py). `wait4`'s figure "
        "starts at this benchmark's own high-water mark, which a forked child inherits.",
        "",
    ]
    run = r["steps"].get("run")
    if run:
        p = r["progress"]
        f, la = p["first_tenth"], p["last_tenth"]
        lines += [
            f"Progress of `run` (job table read every {p['poll_every_s']:g} s, {p['samples_taken']} samples; "
            f"a tenth is {p['databases_per_tenth']:,} databases):",
            "",
            f"- first tenth (0 -> N/10 done): {_num(f['databases_per_s'])} databases/s "
            f"({_num(f['seconds'])} s, from {_num(f['from_s'])} s after start)",
            f"- last tenth (9N/10 -> N done): {_num(la['databases_per_s'])} databases/s ({_num(la['seconds'])} s)",
            f"- ratio last/first: {_num(p['ratio_last_first'], '{:.3f}')} (1.0: a constant cost per database)",
        ]
        jt = p.get("from_job_table")
        if jt:
            lines.append(
                f"- the same from the rows' staged times (updated_at): first "
                f"{_num(jt['first_tenth']['databases_per_s'])}, "
                f"last {_num(jt['last_tenth']['databases_per_s'])} databases/s, ratio "
                f"{_num(jt['ratio_last_first'], '{:.3f}')}"
            )
        lines += [
            "",
            f"Overhead per database of `run` (wall / N): {run['overhead_per_database_ms']:.3f} ms "
            f"({n:,} databases in {run['wall_s']:.1f} s; outcome {run.get('outcome')}; "
            f"{run['server']['requests']:,} requests, mean batch {run['server']['mean_batch']}).",
            "",
        ]
        a = r.get("job_table_after_run")
        b = r.get("job_table_after_cutover")
        jt_line = f"Job table (migrator.db + -wal): {a['bytes_per_database']:,.0f} bytes per database after run"
        jt_line += f" ({a['bytes'] / 1e6:,.1f} MB)"
        if b:
            jt_line += f", {b['bytes_per_database']:,.0f} after cutover ({b['bytes'] / 1e6:,.1f} MB)"
        if not a["wal_present"] and not (b or {}).get("wal_present"):
            jt_line += "; no -wal file (the job table uses journal_mode=DELETE)"
        lines += [jt_line + ".", ""]
    v = r.get("verify") or {}
    if v.get("ok") is None:
        lines.append(f"Verification: skipped ({v.get('skipped', 'not run')}).")
    else:
        lines.append(
            f"Verification: {'OK' if v['ok'] else 'FAILED'}: {v['files_read']:,} of {v['files_expected']:,} live "
            f"files read, by dims {v['by_dim']}, {v['records']:,} records (expected {v['records_expected']:,}); "
            f"{v['sample']} compared with the originals record by record and loaded with nano-vectordb: "
            f"{'ok' if v['sample_ok'] else 'NOT ok'}."
            + ("" if v["ok"] else " Problems: " + "; ".join(v["problems"][:5]))
        )
    if rb := r.get("restored"):
        lines.append(
            f"\nAfter rollback: {'OK' if rb['ok'] else 'FAILED'}: {rb['identical']:,} live files byte-identical "
            f"to the originals, no file of migrator's left."
            + ("" if rb["ok"] else " Problems: " + "; ".join(rb["problems"][:5]))
        )
    return "\n".join(lines) + "\n"


def well_formed(res: dict) -> list[str]:
    problems = []
    r = res["results"]
    for label, s in _steps_in_order(r["steps"]):
        if not s.get("ok"):
            problems.append(f"{label}: rc {s.get('rc')}{' (timed out)' if s.get('timed_out') else ''}")
    if "run" in r["steps"]:
        p = r["progress"]
        for key in ("first_tenth", "last_tenth"):
            x = p[key]["databases_per_s"]
            if not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
                problems.append(f"progress {key}: no rate ({x!r})")
    v = r.get("verify") or {}
    if v.get("ok") is False:
        problems.append("verification: " + "; ".join(v.get("problems", [])[:5]))
    rb = r.get("restored") or {}
    if rb.get("ok") is False:
        problems.append("after rollback: " + "; ".join(rb.get("problems", [])[:5]))
    return problems


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/many.py",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(__doc__ or "").split("\n\n", 1)[1],
    )
    ap.add_argument(
        "--databases", type=int, help=f"databases in the tree (default {DEFAULT_DATABASES:,}; quick: {QUICK_DATABASES})"
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: a few hundred databases, results in the work dir")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "migrator-bench" / "many",
        help="trees (cached) and run directories (default $TMPDIR/migrator-bench/many)",
    )
    ap.add_argument("--name", help="result name (default many-<N>db-<YYYY-MM-DD>)")
    ap.add_argument("--results-dir", type=Path, help="default benchmarks/results (quick: <work dir>/results)")
    ap.add_argument("--keep", action="store_true", help="keep the migrated copy of the tree")
    ap.add_argument("--steps", default=",".join(STEPS), help="subset of " + ",".join(STEPS) + " (default all)")
    ap.add_argument("--poll-every", type=float, default=1.0, help="seconds between reads of the job table (1)")
    ap.add_argument("--build-processes", type=int, default=2, help="processes that build the tree (2)")
    args = ap.parse_args(argv)
    if args.databases is None:
        args.databases = QUICK_DATABASES if args.quick else DEFAULT_DATABASES
    if args.databases < 10:
        ap.error("--databases: at least 10 (a tenth must be a database)")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    if unknown := [s for s in args.steps if s not in STEPS]:
        ap.error(f"--steps: unknown {', '.join(unknown)} (a subset of {','.join(STEPS)})")
    if not args.steps:
        ap.error("--steps: at least one step")
    if {"status", "cutover", "rollback"} & set(args.steps) and "run" not in args.steps:
        ap.error("--steps: status, cutover and rollback need run (each run has a fresh job table)")
    if "rollback" in args.steps and "cutover" not in args.steps:
        ap.error("--steps: rollback needs cutover")
    if args.poll_every <= 0:
        ap.error("--poll-every must be positive")
    args.work_dir = args.work_dir.resolve()
    args.name = args.name or f"many-{args.databases}db-{time.strftime('%Y-%m-%d')}"
    args.results_dir = args.results_dir or (
        args.work_dir / "results" if args.quick else REPO / "benchmarks" / "results"
    )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    mach = machine()
    res: dict = {
        "name": args.name,
        "mode": "quick" if args.quick else "custom" if args.databases != DEFAULT_DATABASES else "full",
        "machine": mach,
        "commit": mach.get("git_head"),
        "config": {
            "databases": args.databases,
            "records_per_db": RECORDS_PER_DB,
            "old_dim": OLD_DIM,
            "new_dim": NEW_DIM,
            "model": MODEL,
            "server": "bench_server.py, no capacity limit, no overhead",
            "steps": args.steps,
            "status_repeats": STATUS_REPEATS,
            "poll_every_s": args.poll_every,
            "migrator_settings": "CLI defaults (no --batch-size/--concurrency), --no-quality-gate, --no-cutover",
        },
    }
    man = ensure_tree(args.work_dir, args.databases, jobs=args.build_processes)
    res["tree"] = {k: v for k, v in man.items() if k != "root"}
    res["results"] = measure(args, man)
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["total_seconds"] = round(time.monotonic() - t0, 1)
    problems = well_formed(res)
    res["ok"] = not problems
    res["problems"] = problems
    return report(
        res,
        markdown(res),
        args.results_dir,
        args.name,
        what="many-databases benchmark",
        problems=problems,
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
