"""Does throughput grow with endpoints and with workers?

N benchmark servers (benchmarks/bench_server.py, each in its own process, all
with the same token capacity) and W ``migrate run`` worker processes:

  sqlite  W=1: one ``migrate run --endpoint URL1 ... --endpoint URLN`` with the
          default SQLite job table (the baseline: N=1 is today's single setup)
  pg      W=1, 2, 4: that many ``migrate run`` processes started together, all
          with ``--state-url`` pointing at one fresh PostgreSQL database and every
          endpoint listed; they divide the databases with leases

Every run gets a fresh hard-link copy of the corpus, fresh servers and (pg) a
fresh PostgreSQL database, dropped afterwards. Throughput is records/s over the
embedding phase: from the first request any server saw to the last answer any
server gave (``/_bench/stats``). End-to-end figures (first worker started to
last worker exited) are kept too. Each figure is compared as a ratio to
sqlite W=1 N=1 of the same round; the target is >= 0.9 x N.

The client's own ceiling is measured first, against servers with no capacity
limit and no overhead; the per-endpoint capacity should keep N=4 well below it
(the report gives 4 x capacity as a share of the ceiling).

    python benchmarks/scale.py --quick     # smoke test: tiny corpus, W, N in {1, 2}, well under 2 min
    python benchmarks/scale.py             # the figures for docs/BENCHMARKS.md (about 17 min)
    python benchmarks/scale.py --measure ceiling --repeat 3   # only the client ceiling

PostgreSQL: ``--pg-url`` (an admin URL; a database is created and dropped per
run), else $MIGRATOR_TEST_PG_URL, else what ``scripts/pg.sh url`` prints.
``scripts/bench.sh --scale`` starts that throwaway server when needed.

Results: benchmarks/results/<name>.json (+ .md); --quick writes to the work dir.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import corpus as corp  # noqa: E402
from benchmarks.procs import PY, REPO, Server, machine, report, run_timed  # noqa: E402
from benchmarks.run import DEFAULT_OVERHEAD_S, MODELS, _ints, log, timeout_for, verify_tree  # noqa: E402

DIM = 4096
TARGET_EFFICIENCY = 0.9  # throughput >= 0.9 x N (as a ratio to N=1, W=1)

#: Per-endpoint capacity for the figures: 4 x 40,000 = 160,000 tokens/s, about half
#: of the client's own ceiling on the 2-core machine of docs/BENCHMARKS.md (measured
#: with --measure ceiling; the report recomputes the share on every run).
DEFAULT_CAPACITY = 40_000

PRESETS = {
    # smoke test: every code path once (sqlite and pg, 1 and 2 of each), no timing assertion
    "quick": dict(
        databases=24, records_per_db=15, capacity=200_000, endpoints=[1, 2], workers=[1, 2], repeat=1, grid="full"
    ),
    # the figures: a few hundred DVD-shaped databases (22 records each, as the large corpora)
    "default": dict(
        databases=400,
        records_per_db=22,
        capacity=DEFAULT_CAPACITY,
        endpoints=[1, 2, 4],
        workers=[1, 2, 4],
        repeat=3,
        grid="full",
    ),
}
SEED = 3


# --------------------------------------------------------------------------- #
# PostgreSQL: a fresh database per run                                        #
# --------------------------------------------------------------------------- #
def admin_url(given: str | None) -> str:
    url = given or os.environ.get("MIGRATOR_TEST_PG_URL")
    if not url:
        url = subprocess.run(
            ["bash", str(REPO / "scripts" / "pg.sh"), "url"], capture_output=True, text=True, check=True
        ).stdout.strip()
    return url


class Postgres:
    """An admin connection that makes and drops one database per run."""

    def __init__(self, url: str):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.url = make_url(url)
        self.engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self.postmaster = self._postmaster_pid()

    def check(self) -> str:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return conn.execute(text("select version()")).scalar()

    @contextlib.contextmanager
    def database(self):
        from sqlalchemy import text

        name = "b_" + secrets.token_hex(5)
        with self.engine.connect() as conn:
            conn.execute(text(f'create database "{name}"'))
        try:
            yield self.url.set(database=name).render_as_string(hide_password=False)
        finally:
            with self.engine.connect() as conn:
                conn.execute(text(f'drop database if exists "{name}" with (force)'))

    def _postmaster_pid(self) -> int | None:
        """The local server's postmaster (to count the job table's CPU); None if not readable."""
        from sqlalchemy import text

        if self.url.host not in (None, "127.0.0.1", "localhost", "::1"):
            return None
        try:
            with self.engine.connect() as conn:
                data = conn.execute(text("show data_directory")).scalar()
            return int(Path(data, "postmaster.pid").read_text().split()[0])
        except Exception:  # noqa: BLE001 - an optional figure
            return None

    def cpu_s(self) -> float | None:
        """CPU seconds of the whole server: postmaster, its live children, and the children it
        reaped (backends of connections already closed)."""
        if self.postmaster is None:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        try:
            for p in Path("/proc").iterdir():
                if not p.name.isdigit():
                    continue
                try:
                    fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                pid, ppid = int(p.name), int(fields[1])
                if pid == self.postmaster:
                    total += sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
                elif ppid == self.postmaster:
                    total += sum(int(x) for x in fields[11:13]) / tick
        except OSError:
            return None
        return total

    def job_summary(self, url: str) -> dict:
        from sqlalchemy import create_engine, text

        eng = create_engine(url)
        try:
            with eng.connect() as conn:
                states = dict(conn.execute(text("select state, count(*) from databases group by state")).all())
                owners = [
                    n
                    for (n,) in conn.execute(
                        text("select count(*) from databases group by lease_owner order by 1 desc")
                    ).all()
                ]
        finally:
            eng.dispose()
        return {"states": states, "databases_per_worker": owners}

    def close(self) -> None:
        self.engine.dispose()


# --------------------------------------------------------------------------- #
# One run: N servers, W workers                                               #
# --------------------------------------------------------------------------- #
def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all processes, all cores), from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return float("nan")
    return (sum(f) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def worker_cmd(root: Path, state_dir: Path, urls: list[str], state_url: str | None) -> list[str]:
    cmd = [PY, "-m", "migrator.cli", "run", "--root", str(root), "--model", MODELS[DIM][0]]
    for u in urls:
        cmd += ["--endpoint", u]
    cmd += ["--state-dir", str(state_dir)]
    if state_url:
        cmd += ["--state-url", state_url]
    # --no-quality-gate: the benchmark server's vectors are random per text (see run.py)
    return cmd + ["--yes", "--json", "--no-quality-gate"]


def _worker_detail(t) -> dict:
    """One worker: what the kernel says, its --json result (the last thing it printed), and
    whether it waited on the others (for the scan, or for their last databases)."""
    d = {
        "rc": t.rc,
        "wall_s": round(t.wall_s, 3),
        "cpu_s": round(t.cpu_s, 3),
        "maxrss_mb": round(t.maxrss_mb, 1),
        "timed_out": t.timed_out,
        "outcome": None,
    }
    try:
        out = Path(t.log).read_text(errors="replace")
    except OSError:
        return d
    d["waited_for_scan"] = "deciding what to migrate (scanning); waiting" in out
    d["waited_for_others"] = "held by other workers; waiting" in out
    try:
        doc = json.loads(out[out.index("\n{") + 1 :] if not out.startswith("{") else out)
        d.update(outcome=doc.get("outcome"), records_embedded=doc.get("records_embedded"), seconds=doc.get("seconds"))
    except ValueError:
        pass
    return d


def one_run(cfg: dict, man: dict, work: Path, pg: Postgres | None, *, overhead: float, tag: str, keep: bool) -> dict:
    store, W, N, cap = cfg["store"], cfg["workers"], cfg["endpoints"], cfg["capacity"]
    run_dir = work / "runs" / tag
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    corp.link_copy(Path(man["root"]), root)
    ideal = man["tokens"] / (cap * N) if cap else 0.0
    timeout = timeout_for(ideal) if cap else man["records"] / 50 + 300
    res: dict = {**cfg, "records": man["records"], "tokens": man["tokens"]}
    with contextlib.ExitStack() as stack:
        state_url = stack.enter_context(pg.database()) if store == "pg" else None
        servers = [
            stack.enter_context(
                Server(run_dir / f"server-{i}", model=MODELS[DIM][1], tokens_per_second=cap, overhead_s=overhead)
            )
            for i in range(N)
        ]
        urls = [s.base_url for s in servers]
        s0 = [s.stats() for s in servers]
        pg0 = pg.cpu_s() if state_url else None
        busy0, load0 = machine_busy_s(), os.getloadavg()[0]
        t0 = time.monotonic()
        with cf.ThreadPoolExecutor(W) as pool:
            futs = [
                pool.submit(
                    run_timed,
                    worker_cmd(root, run_dir / f"state-{w}", urls, state_url),
                    log_path=run_dir / f"worker-{w}.log",
                    timeout=timeout,
                )
                for w in range(W)
            ]
            timed = [f.result() for f in futs]
        wall = time.monotonic() - t0
        busy1 = machine_busy_s()
        s1 = [s.stats() for s in servers]
        time.sleep(0.2)  # the workers' backends exit and are reaped
        pg1 = pg.cpu_s() if state_url else None
        details = [_worker_detail(t) for t in timed]
        if state_url and all(t.rc == 0 for t in timed) and [d["outcome"] for d in details] == ["staged"] * W:
            # Every worker left the cutover to another one (each saw the others' shared lock):
            # nothing was swapped. Recorded, then finished as an operator would, by running again.
            res["no_cutover"] = True
            t = run_timed(
                worker_cmd(root, run_dir / "state-finish", urls, state_url),
                log_path=run_dir / "worker-finish.log",
                timeout=timeout,
            )
            res["finish"] = _worker_detail(t)
        if state_url:
            try:
                res["job_table"] = pg.job_summary(state_url)
            except Exception as e:  # noqa: BLE001 - reported
                res["job_table"] = {"error": f"{type(e).__name__}: {e}"}
    firsts = [s["first_request"] for s in s1 if s.get("first_request")]
    lasts = [s["last_answer"] for s in s1 if s.get("last_answer")]
    busy = (max(lasts) - min(firsts)) if firsts and lasts else None
    texts = [b["texts_answered"] - a["texts_answered"] for a, b in zip(s0, s1)]
    cpu = sum(t.cpu_s for t in timed)
    res.update(
        {
            "wall_s": round(wall, 3),
            "busy_s": round(busy, 3) if busy else None,
            "records_per_s": round(man["records"] / wall, 1),
            "records_per_s_busy": round(man["records"] / busy, 1) if busy else None,
            "tokens_per_s_busy": round(man["tokens"] / busy) if busy else None,
            "client_cpu_s": round(cpu, 3),
            "client_cpu_pct": round(100 * cpu / wall, 1),
            "server_cpu_s": round(sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(s0, s1)), 3),
            "pg_cpu_s": round(pg1 - pg0, 3) if pg0 is not None and pg1 is not None else None,
            "texts_per_endpoint": texts,
            "extra_texts": sum(texts) - man["records"],  # probes, and anything embedded twice
            "requests": sum(b["server"]["embedding_ok"] - a["server"]["embedding_ok"] for a, b in zip(s0, s1)),
            "max_in_flight_per_endpoint": [s["server"]["max_in_flight"] for s in s1],
            "workers_detail": details,
        }
    )
    res["server_cpu_pct"] = round(100 * res["server_cpu_s"] / wall, 1)
    if res["pg_cpu_s"] is not None:
        res["pg_cpu_pct"] = round(100 * res["pg_cpu_s"] / wall, 1)
    # Everything else the machine did meanwhile (other users, the kernel, this harness): the noise.
    other = (busy1 - busy0) - cpu - res["server_cpu_s"] - (res["pg_cpu_s"] or 0.0)
    res["other_cpu_pct"] = round(100 * other / wall, 1) if math.isfinite(other) else None
    res["loadavg_1min_at_start"] = round(load0, 2)
    if cap:
        res["ideal_s"] = round(ideal, 3)
        res["goodput_busy"] = round(ideal / busy, 4) if busy else None
        res["goodput"] = round(ideal / wall, 4)
    outcomes = [w["outcome"] for w in res["workers_detail"]] + [res.get("finish", {}).get("outcome")]
    problems = [
        f"worker {i}: rc {w['rc']}" + (" (timed out)" if w["timed_out"] else "")
        for i, w in enumerate(res["workers_detail"] + [res.get("finish", {"rc": 0, "timed_out": False})])
        if w["rc"] != 0
    ]
    if outcomes.count("done") != 1:
        problems.append(f"outcomes {outcomes}: expected exactly one 'done'")
    states = res.get("job_table", {}).get("states")
    if states is not None and states != {"cut_over": man["databases"]}:
        problems.append(f"job table: {states}")
    if not problems:
        problems = verify_tree(root, Path(man["root"]), DIM)
    res["ok"] = not problems
    if problems:
        res["error"] = "; ".join(problems[:5])
        res["error_tail"] = timed[0].stdout_tail[-1500:]
    if not keep:
        corp.remove_tree(root)
    return res


# --------------------------------------------------------------------------- #
# The grid                                                                    #
# --------------------------------------------------------------------------- #
def label(cfg: dict) -> str:
    return f"{cfg['store']} W={cfg['workers']} N={cfg['endpoints']}"


def grid(endpoints: list[int], workers: list[int], kind: str, capacity) -> list[dict]:
    """sqlite W=1 for every N, and pg W x N (kind "full") or the subset the issue asks for
    (W=1 and W=2 at every N, every W at the largest N)."""
    cfgs = [dict(store="sqlite", workers=1, endpoints=n, capacity=capacity) for n in endpoints]
    for w in workers:
        for n in endpoints:
            if kind == "full" or w <= 2 or n == max(endpoints):
                cfgs.append(dict(store="pg", workers=w, endpoints=n, capacity=capacity))
    return cfgs


def ceiling_configs(endpoints: list[int], workers: list[int]) -> list[dict]:
    """Instant servers: one process alone, then the most workers against as many servers."""
    cfgs = [dict(store="sqlite", workers=1, endpoints=1, capacity=None)]
    for w in sorted(set(workers) - {1}):
        cfgs.append(dict(store="pg", workers=w, endpoints=min(w, max(endpoints)), capacity=None))
    return cfgs


def run_rounds(cfgs: list[dict], man, work, pg, args, what: str) -> list[dict]:
    rows = []
    for rnd in range(args.repeat):
        order = cfgs if rnd % 2 == 0 else list(reversed(cfgs))  # drift hits both ends alike
        for cfg in order:
            tag = f"{what}-r{rnd}-{cfg['store']}-w{cfg['workers']}-n{cfg['endpoints']}"
            ideal = f", ideal {man['tokens'] / (cfg['capacity'] * cfg['endpoints']):.1f} s" if cfg["capacity"] else ""
            log(f"{what} round {rnd + 1}/{args.repeat}: {label(cfg)}{ideal}")
            r = one_run(cfg, man, work, pg, overhead=args.overhead if cfg["capacity"] else 0.0, tag=tag, keep=args.keep)
            r["round"] = rnd
            log(
                f"  {r['records_per_s_busy']} records/s while embedding ({r['busy_s']} s), "
                f"{r['records_per_s']} end to end ({r['wall_s']} s); client CPU {r['client_cpu_pct']}%, "
                f"servers {r['server_cpu_pct']}%, pg {r.get('pg_cpu_pct')}%, "
                f"other {r.get('other_cpu_pct')}%; texts per endpoint "
                f"{r['texts_per_endpoint']}" + ("" if r["ok"] else f"  FAILED: {r['error'][:400]}")
            )
            rows.append(r)
    return rows


def summarize(rows: list[dict], base_key=("sqlite", 1, 1)) -> list[dict]:
    """Per configuration: medians over rounds, and the ratio to the baseline of the same round."""
    key = lambda r: (r["store"], r["workers"], r["endpoints"])  # noqa: E731
    base = {r["round"]: r for r in rows if key(r) == base_key and r["ok"]}
    out = []
    for k in dict.fromkeys(key(r) for r in rows):
        rs = [r for r in rows if key(r) == k]
        ok = [r for r in rs if r["ok"]]
        s = {
            "store": k[0],
            "workers": k[1],
            "endpoints": k[2],
            "runs": len(rs),
            "ok_runs": len(ok),
            "no_cutover_runs": sum(bool(r.get("no_cutover")) for r in rs),
        }
        if ok:
            for f in (
                "records_per_s_busy",
                "records_per_s",
                "busy_s",
                "wall_s",
                "goodput_busy",
                "goodput",
                "client_cpu_pct",
                "server_cpu_pct",
                "pg_cpu_pct",
                "other_cpu_pct",
                "extra_texts",
            ):
                vals = [r[f] for r in ok if r.get(f) is not None]
                if vals:
                    s[f] = round(statistics.median(vals), 4 if "goodput" in f else 1)
            for f, name in (("records_per_s_busy", "ratio_busy"), ("records_per_s", "ratio_end_to_end")):
                ratios = [r[f] / base[r["round"]][f] for r in ok if r["round"] in base and r.get(f)]
                if ratios:
                    s[name] = round(statistics.median(ratios), 3)
                    s[name + "_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
            if "ratio_busy" in s:
                s["efficiency"] = round(s["ratio_busy"] / k[2], 3)
                s["target_ratio"] = round(TARGET_EFFICIENCY * k[2], 2)
                s["met"] = s["ratio_busy"] >= s["target_ratio"]
            shares = [
                max(r["texts_per_endpoint"]) / (sum(r["texts_per_endpoint"]) / k[2])
                for r in ok
                if sum(r["texts_per_endpoint"])
            ]
            s["busiest_endpoint_vs_even"] = round(statistics.median(shares), 3) if shares else None
        out.append(s)
    return out


# --------------------------------------------------------------------------- #
# Report                                                                      #
# --------------------------------------------------------------------------- #
def _pct(x) -> str:
    return "-" if x is None else f"{x}%"


def markdown(res: dict) -> str:
    m, c = res["machine"], res["corpus"]
    lines = [
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}), {m.get('ram_gb', '?')} GB RAM, "
        f"Python {m['python']}, {m['platform']}; {m['date']}; migrator commit {m.get('git_head')}"
        f"{' (uncommitted changes under migrator/)' if m.get('migrator_uncommitted_changes') else ''}; "
        f"load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')}.",
        "",
        f"Corpus: {c['databases']} DVD databases, {c['records']:,} records, {c['tokens']:,} tokens. "
        f"{res['config']['repeat']} round(s); medians; ratios to sqlite W=1 N=1 of the same round.",
        "",
    ]
    ceil = res.get("ceiling_summary")
    if ceil:
        lines += [
            "Client ceiling (servers with no capacity limit and no overhead):",
            "",
            "| setup | records/s while embedding | records/s end to end | client CPU | servers CPU | pg CPU | "
            "other CPU |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for s in ceil:
            lines.append(
                f"| {s['store']} W={s['workers']} N={s['endpoints']} | {s.get('records_per_s_busy')} | "
                f"{s.get('records_per_s')} | {s.get('client_cpu_pct')}% | {s.get('server_cpu_pct')}% | "
                f"{_pct(s.get('pg_cpu_pct'))} | {_pct(s.get('other_cpu_pct'))} |"
            )
        lines.append("")
        share = res.get("capacity_share_of_ceiling")
        if share:
            lines.append(
                f"Per-endpoint capacity {res['config']['capacity']:,} tokens/s: 4 endpoints = "
                f"{4 * res['config']['capacity']:,} tokens/s = {share['four_endpoints_records_per_s']} "
                f"records/s, {share['share_of_single_process'] * 100:.0f}% of the one-process ceiling "
                f"and {share['share_of_best'] * 100:.0f}% of the best ceiling measured."
            )
            lines.append("")
    summ = res.get("summary")
    if summ:
        lines += [
            "| setup | records/s while embedding | ratio | target 0.9 x N | met | efficiency | "
            "records/s end to end | ratio end to end | goodput while busy | client CPU | servers CPU | "
            "pg CPU | other CPU | busiest endpoint vs even |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in summ:
            bad = "" if s["ok_runs"] == s["runs"] else f" ({s['runs'] - s['ok_runs']} FAILED)"
            rng = s.get("ratio_busy_range")
            lines.append(
                f"| {s['store']} W={s['workers']} N={s['endpoints']}{bad} | {s.get('records_per_s_busy')} | "
                f"{s.get('ratio_busy')}"
                + (f" ({rng[0]}-{rng[1]})" if rng and rng[0] != rng[1] else "")
                + f" | {s.get('target_ratio')} | {'yes' if s.get('met') else 'NO'} | {s.get('efficiency')} | "
                f"{s.get('records_per_s')} | {s.get('ratio_end_to_end')} | {s.get('goodput_busy')} | "
                f"{s.get('client_cpu_pct')}% | {s.get('server_cpu_pct')}% | "
                f"{_pct(s.get('pg_cpu_pct'))} | {_pct(s.get('other_cpu_pct'))} | "
                f"{s.get('busiest_endpoint_vs_even')} |"
            )
    missed = [
        f"{what}{label(s)}: {s['no_cutover_runs']} of {s['runs']}"
        for what, ss in (("ceiling ", res.get("ceiling_summary") or []), ("", summ or []))
        for s in ss
        if s.get("no_cutover_runs")
    ]
    if missed:
        lines += [
            "",
            "Runs in which every worker left the cutover to another one (nothing swapped until "
            "one more `migrate run`): " + "; ".join(missed) + ".",
        ]
    return "\n".join(lines) + "\n"


def well_formed(res: dict) -> list[str]:
    problems = []
    for r in res.get("grid", []) + res.get("ceiling", []):
        if not r["ok"]:
            problems.append(f"{label(r)}: failed: {r.get('error', '')[:400]}")
        for k in ("records_per_s_busy", "records_per_s", "client_cpu_pct"):
            x = r.get(k)
            if not isinstance(x, (int, float)) or not math.isfinite(x):
                problems.append(f"{label(r)} {k}: not a finite number ({x!r})")
    for s in res.get("summary", []):
        if s.get("ratio_busy") is None:
            problems.append(f"{label(s)}: no ratio")
    return problems


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/scale.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny corpus, W and N in {1, 2}")
    ap.add_argument("--databases", type=int, help="databases in the corpus (default 400)")
    ap.add_argument("--records", type=int, help="records in all (default 22 per database; quick: 15)")
    ap.add_argument("--capacity", type=int, help=f"tokens/s of each endpoint (default {DEFAULT_CAPACITY:,})")
    ap.add_argument("--endpoints", type=_ints, help="endpoint counts N (default 1,2,4)")
    ap.add_argument("--workers", type=_ints, help="worker counts W on PostgreSQL (default 1,2,4)")
    ap.add_argument(
        "--grid",
        choices=("full", "subset"),
        help="full: every W x N; subset: W=1,2 at every N and every W at the largest N",
    )
    ap.add_argument("--repeat", type=int, help="rounds (default 3); figures are medians")
    ap.add_argument("--measure", default="ceiling,grid", help="subset of ceiling,grid")
    ap.add_argument(
        "--overhead",
        type=float,
        default=DEFAULT_OVERHEAD_S,
        help=f"server overhead per request, seconds (default {DEFAULT_OVERHEAD_S})",
    )
    ap.add_argument("--pg-url", help="PostgreSQL admin URL (default $MIGRATOR_TEST_PG_URL or scripts/pg.sh url)")
    ap.add_argument("--name", help="result name (default s3-scale-<date>; quick: scale-quick)")
    ap.add_argument("--results-dir", type=Path, help="default benchmarks/results (quick: the work dir)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "migrator-bench",
        help="corpora (cached) and run directories",
    )
    ap.add_argument("--keep", action="store_true", help="keep migrated trees of each run")
    args = ap.parse_args(argv)
    for key, value in PRESETS["quick" if args.quick else "default"].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.records is None:
        args.records = args.records_per_db * args.databases
    args.measures = [x for x in args.measure.split(",") if x]
    for x in args.measures:
        if x not in ("ceiling", "grid"):
            ap.error(f"unknown measurement {x!r}")
    if 1 not in args.endpoints or 1 not in args.workers:
        ap.error("--endpoints and --workers must include 1 (the baseline)")
    args.name = args.name or ("scale-quick" if args.quick else time.strftime("s3-scale-%Y-%m-%d"))
    args.results_dir = args.results_dir or (
        args.work_dir / "results" if args.quick else REPO / "benchmarks" / "results"
    )
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        pg = Postgres(admin_url(args.pg_url))
        pg_version = pg.check()
    except Exception as e:  # noqa: BLE001 - said plainly
        print(
            f"scale benchmark: no PostgreSQL ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"start the throwaway one with `scripts/pg.sh start` or give --pg-url",
            file=sys.stderr,
        )
        return 2
    res: dict = {
        "name": args.name,
        "mode": "quick" if args.quick else "custom",
        "machine": machine(),
        "measures": args.measures,
        "config": {
            "capacity": args.capacity,
            "overhead_s": args.overhead,
            "endpoints": args.endpoints,
            "workers": args.workers,
            "grid": args.grid,
            "repeat": args.repeat,
            "dim": DIM,
            "target": f"records/s while embedding >= {TARGET_EFFICIENCY} x N times sqlite W=1 N=1",
            "migrator_settings": "CLI defaults (no --batch-size/--concurrency), --no-quality-gate",
            "postgres": pg_version.split(" on ")[0],
        },
    }
    man = corp.ensure_corpus(work, args.databases, args.records, seed=SEED, log=log)
    res["corpus"] = {k: man[k] for k in ("databases", "records", "tokens", "chars", "bytes", "key")}
    try:
        if "ceiling" in args.measures:
            res["ceiling"] = run_rounds(ceiling_configs(args.endpoints, args.workers), man, work, pg, args, "ceiling")
            res["ceiling_summary"] = summarize(res["ceiling"])
            one = next(s for s in res["ceiling_summary"] if (s["store"], s["workers"]) == ("sqlite", 1))
            best = max(s.get("records_per_s_busy") or 0 for s in res["ceiling_summary"])
            four = 4 * args.capacity * man["records"] / man["tokens"]
            if one.get("records_per_s_busy"):
                res["capacity_share_of_ceiling"] = {
                    "four_endpoints_records_per_s": round(four, 1),
                    "share_of_single_process": round(four / one["records_per_s_busy"], 3),
                    "share_of_best": round(four / best, 3),
                }
        if "grid" in args.measures:
            res["grid"] = run_rounds(
                grid(args.endpoints, args.workers, args.grid, args.capacity), man, work, pg, args, "grid"
            )
            res["summary"] = summarize(res["grid"])
    finally:
        pg.close()
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["total_seconds"] = round(time.monotonic() - t0, 1)
    return report(
        res,
        markdown(res),
        args.results_dir,
        args.name,
        what="scale benchmark",
        problems=well_formed(res),
        quick=args.quick,
    )


if __name__ == "__main__":
    sys.exit(main())
