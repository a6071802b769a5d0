"""Does migrator keep the embedding server saturated?  Side by side, one run.

Three contenders migrate the same DVD corpus against the same server model:

  migrator  ``python -m migrator.cli run ... --yes`` with default settings
  dvd       delete and rebuild as DVD's build_database.py does (benchmarks/dvd_rebuild.py)
  loop      a plain sequential openai-SDK loop (benchmarks/openai_loop.py)

The server (benchmarks/bench_server.py, the project's fake vLLM in benchmark
mode) runs in its own process with a fixed token capacity shared by all
requests in flight and a fixed per-request overhead.  Goodput is the fraction
of that capacity a contender used: (corpus tokens / capacity) / wall time.

Also measured: the client's own ceiling against a server that answers at
once (records/s at 1024 and 4096 dims, end to end), peak RSS of ``migrate
run`` for 10 databases against many, ``migrate plan --no-probe`` time over
many databases, and texts re-embedded after a SIGKILL at 50% and a resume.

    python benchmarks/run.py --quick              # CI smoke test: seconds, no timing assertion
    python benchmarks/run.py --full               # the whole thing (hours)
    python benchmarks/run.py --databases 200 --records 4000 --capacities 15900,50000 --name prelim
    python benchmarks/run.py --shape long,short,mixed --records 8000 --measure goodput --name shapes

Corpus shapes (--shape, a comma list; every figure is measured and reported per shape):
  flat    the original corpora (default): --databases databases holding --records
          records in all, spread +-50% around their mean (22 per database)
  long    LVBench-like: 200-1,500 records per database (33 min to 4.2 h), mean ~405
  medium  Video-MME-like: 24-90 or 180-360 records (4-15 or 30-60 min), mean ~150
  short   EgoSchema-like: 16-20 records (3-minute clips), mean 18
  mixed   a third of the databases from each of long, medium and short
With a shape other than flat the shape decides the records of each database:
--databases, when given, is the number of databases of the goodput corpus;
otherwise --records is the approximate total (databases = records / the
shape's mean, at least 3). The other corpora (memory, ceiling, plan) keep the
record totals they have for flat (--*-databases x --records-per-db), each at
least 2-3 databases and the large ones at least twice the small one, unless
--small-databases, --large-databases or --plan-databases is given, which is
then their number of databases.

Results: benchmarks/results/<name>.json (+ .md), plot docs/benchmarks-goodput.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import corpus as corp  # noqa: E402
from benchmarks.procs import PY, REPO, Server, machine, run_timed  # noqa: E402
from migrator.commands.settings import Settings  # noqa: E402

# --------------------------------------------------------------------------- #
# The server's defaults, from the facts                                       #
# --------------------------------------------------------------------------- #
#: vLLM-Ascend guide: about 15,900 tokens/s for Qwen3-Embedding-8B at 200-token inputs.
SEED_CAPACITY = 15_900
SEED_INPUT_TOKENS = 200
#: vllm-embeddings.md: 16 inputs per request give 2.4x the tokens/s of one input
#: per request.  With requests one after another, a request of k inputs costs
#: o + k*T/C, so 16*(o + T/C) / (o + 16*T/C) = 2.4, which gives
#: o = T/C * 16*(r-1)/(16-r).
_R, _K = 2.4, 16
DEFAULT_OVERHEAD_S = round(SEED_INPUT_TOKENS / SEED_CAPACITY * _K * (_R - 1) / (_K - _R), 4)

MODELS = {4096: ("8b", "Qwen/Qwen3-Embedding-8B"), 1024: ("0.6b", "Qwen/Qwen3-Embedding-0.6B")}
CONTENDERS = ("migrator", "dvd", "loop")
MEASURES = ("goodput", "ceiling", "memory", "plan", "kill")

TARGETS = {
    "goodput_min": 0.95,
    "goodput_capacity_range": [5_000, 200_000],
    "speedup_vs_dvd_at_seed": 3.0,
    "ceiling_rps_1024": 10_000,  # issue 16; the stretch goal is 20,000
    "ceiling_rps_4096": 4_000,
    "memory_flat_within": 0.10,
    "plan_seconds_10000_databases": 10.0,
    "rework_at_most": "one in-flight window",
}

PRESETS = {
    # CI smoke test: every measurement runs once on a tiny corpus; no timing assertion.
    "quick": dict(
        databases=8,
        records=120,
        capacities=[15_900, 200_000],
        large_databases=40,
        small_databases=10,
        records_per_db=12,
        kill_capacity=15_900,
        plan_databases=40,
    ),
    # Figures for docs/BENCHMARKS.md (a few hours on 2 cores).
    "full": dict(
        databases=1_000,
        records=40_000,
        capacities=[5_000, 15_900, 50_000, 200_000],
        large_databases=10_000,
        small_databases=10,
        records_per_db=22,
        kill_capacity=50_000,
        plan_databases=10_000,
    ),
    # Neither flag: a modest run.
    "default": dict(
        databases=200,
        records=4_000,
        capacities=[15_900, 50_000, 200_000],
        large_databases=1_000,
        small_databases=10,
        records_per_db=22,
        kill_capacity=50_000,
        plan_databases=10_000,
    ),
}


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- #
# Contenders                                                                  #
# --------------------------------------------------------------------------- #
def contender_cmd(name: str, root: Path, state: Path, url: str, dim: int, loop_batch: int) -> list[str]:
    short, model = MODELS[dim]
    if name == "migrator":  # default settings: no tuning flags
        # --no-quality-gate: the benchmark server's vectors are random per text (a throughput
        # model, not a semantic one), which the gate rightly refuses. Its cost is measured apart.
        return [
            PY,
            "-m",
            "migrator.cli",
            "run",
            "--root",
            str(root),
            "--model",
            short,
            "--endpoint",
            url,
            "--state-dir",
            str(state),
            "--yes",
            "--json",
            "--no-quality-gate",
        ]
    if name == "dvd":
        return [
            PY,
            str(REPO / "benchmarks" / "dvd_rebuild.py"),
            "--root",
            str(root),
            "--endpoint",
            url,
            "--model",
            model,
            "--dim",
            str(dim),
        ]
    if name == "loop":
        return [
            PY,
            str(REPO / "benchmarks" / "openai_loop.py"),
            "--root",
            str(root),
            "--endpoint",
            url,
            "--model",
            model,
            "--dim",
            str(dim),
            "--batch",
            str(loop_batch),
        ]
    raise ValueError(name)


def verify_tree(root: Path, pristine: Path, dim: int, sample: int = 25) -> list[str]:
    """Load a sample of the migrated databases with the real nano-vectordb at
    the new dimension; each must hold as many records as before."""
    NanoVectorDB = corp.NanoVectorDB
    import orjson

    problems = []
    dbs = sorted(Path(pristine).glob("*/database.json"))
    step = max(1, len(dbs) // sample)
    for old in dbs[::step]:
        new = Path(root) / old.parent.name / "database.json"
        try:
            n_old = len(orjson.loads(old.read_bytes())["data"])
            db = NanoVectorDB(dim, storage_file=str(new))
            n_new = len(db)
            if n_new != n_old:
                problems.append(f"{new}: {n_new} records, expected {n_old}")
        except Exception as e:  # noqa: BLE001 - reported, not raised
            problems.append(f"{new}: {type(e).__name__}: {e}")
    return problems


def timeout_for(ideal_s: float) -> float:
    return 20 * ideal_s + 180


def one_run(
    name: str,
    man: dict,
    work: Path,
    *,
    capacity,
    overhead: float,
    dim: int,
    loop_batch: int,
    tag: str,
    keep: bool,
    version: str | None = None,
) -> dict:
    """One contender over a fresh (hard-linked) copy of the corpus, on a fresh server
    (``version``: what it says it is; an old one gets base64 requests, not binary)."""
    run_dir = work / "runs" / tag
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    corp.link_copy(Path(man["root"]), root)
    ideal = man["tokens"] / capacity if capacity else 0.0
    _, model = MODELS[dim]
    with Server(run_dir, model=model, tokens_per_second=capacity, overhead_s=overhead, version=version) as srv:
        s0 = srv.stats()
        t = run_timed(
            contender_cmd(name, root, run_dir / "state", srv.base_url, dim, loop_batch),
            log_path=run_dir / f"{name}.log",
            # an instant server: allow 50 records/s, far below any useful client
            timeout=timeout_for(ideal) if capacity else man["records"] / 50 + 300,
        )
        s1 = srv.stats()
    res = {
        "contender": name,
        "capacity": capacity,
        "dim": dim,
        **t.as_dict(),
        "records": man["records"],
        "tokens": man["tokens"],
    }
    res.update(_server_figures(s0, s1))
    # the fixed costs: start to the first request, and the last answer to the exit
    first, last = s1.get("first_request"), s1.get("last_answer")
    res["first_request_s"] = round(first - t.started_at, 3) if first else None
    res["after_last_answer_s"] = round(t.ended_at - last, 3) if last else None
    res["ok"] = t.rc == 0 and not t.timed_out
    if not res["ok"]:
        res["error"] = t.stdout_tail[-1500:]
    else:
        problems = verify_tree(root, Path(man["root"]), dim)
        res["verified"] = not problems
        if problems:
            res["ok"] = False
            res["error"] = "; ".join(problems[:5])
    if capacity:
        res["ideal_s"] = round(ideal, 3)
        res["goodput"] = round(ideal / t.wall_s, 4) if t.wall_s else None
        busy = res.get("server_busy_s")
        res["goodput_busy"] = round(ideal / busy, 4) if busy else None
    res["records_per_s"] = round(man["records"] / t.wall_s, 1) if t.wall_s else None
    if res.get("server_busy_s"):
        res["records_per_s_busy"] = round(man["records"] / res["server_busy_s"], 1)
    res["client_cpu_pct"] = round(100 * t.cpu_s / t.wall_s, 1) if t.wall_s else None
    res["server_cpu_pct"] = round(100 * res["server_cpu_s"] / t.wall_s, 1) if t.wall_s else None
    if name == "migrator" and res["ok"]:
        try:
            out = json.loads(t.stdout_tail[t.stdout_tail.index("{") :])
            res["migrator_outcome"] = out.get("outcome")
        except (ValueError, json.JSONDecodeError):
            pass
    if not keep:
        corp.remove_tree(run_dir / "video_database")
    return res


def _server_figures(s0: dict, s1: dict) -> dict:
    srv = s1["server"]
    first, last = s1.get("first_request"), s1.get("last_answer")
    return {
        "server_cpu_s": round(s1["cpu_s"] - s0["cpu_s"], 3),
        "server_busy_s": round(last - first, 3) if first and last else None,
        "server_prompt_tokens": srv["prompt_tokens"],
        "server_texts": srv["inputs_embedded"],
        "server_requests": srv["embedding_ok"],
        "server_mean_batch": round(srv["mean_batch"], 2),
        "server_max_in_flight": srv["max_in_flight"],
    }


# --------------------------------------------------------------------------- #
# Measurements                                                                #
# --------------------------------------------------------------------------- #
def measure_goodput(args, man, work, shape: str = "flat") -> list[dict]:
    rows = []
    for cap in args.capacities:
        for name in args.contenders:
            log(f"goodput [{shape}]: {name} at {cap:,} tokens/s (ideal {man['tokens'] / cap:.1f} s)")
            r = one_run(
                name,
                man,
                work,
                capacity=cap,
                overhead=args.overhead,
                dim=4096,
                loop_batch=args.loop_batch,
                tag=f"{shape}-goodput-{cap}-{name}",
                keep=args.keep,
            )
            log(
                f"  wall {r['wall_s']:.1f} s, goodput {r.get('goodput')}, busy {r.get('goodput_busy')}, "
                f"client cpu {r['client_cpu_pct']}%, server cpu {r['server_cpu_pct']}%"
                + ("" if r["ok"] else f"  FAILED: {r.get('error', '')[:300]}")
            )
            rows.append({"shape": shape, **r})
    return rows


#: the wire formats the ceiling is measured with, and the server version that makes migrator use each
WIRES = {"bytes": None, "base64": "0.11.0"}


def measure_ceiling(args, large, work, dims=(1024, 4096), shape: str = "flat") -> list[dict]:
    rows = []
    for wire in args.wires:
        for dim in dims:
            log(f"ceiling [{shape}]: migrator, instant server, {dim} dims, {wire}, {large['records']} records")
            r = one_run(
                "migrator",
                large,
                work,
                capacity=None,
                overhead=0.0,
                dim=dim,
                loop_batch=args.loop_batch,
                tag=f"{shape}-ceiling-{dim}-{wire}",
                keep=args.keep,
                version=WIRES[wire],
            )
            log(
                f"  {r['records_per_s']} records/s end to end ({r.get('records_per_s_busy')} while "
                f"embedding), peak RSS {r['maxrss_mb']} MB" + ("" if r["ok"] else "  FAILED")
            )
            rows.append({"shape": shape, "wire": wire, **r})
    return rows


def measure_memory(args, small, large, large_ceiling, work, shape: str = "flat") -> dict:
    log(f"memory [{shape}]: migrator over {small['databases']} databases")
    r_small = one_run(
        "migrator",
        small,
        work,
        capacity=None,
        overhead=0.0,
        dim=4096,
        loop_batch=args.loop_batch,
        tag=f"{shape}-memory-small",
        keep=args.keep,
    )
    big = next((r for r in large_ceiling if r["dim"] == 4096 and r.get("wire", "bytes") == "bytes"), None)
    out = {
        "shape": shape,
        "small": {
            "databases": small["databases"],
            "records": small["records"],
            "maxrss_mb": r_small["maxrss_mb"],
            "ok": r_small["ok"],
        },
    }
    if big is not None:
        out["large"] = {
            "databases": large["databases"],
            "records": big["records"],
            "maxrss_mb": big["maxrss_mb"],
            "ok": big["ok"],
        }
        out["ratio"] = round(big["maxrss_mb"] / r_small["maxrss_mb"], 3) if r_small["maxrss_mb"] else None
    log(f"  peak RSS {out['small']['maxrss_mb']} MB vs {out.get('large', {}).get('maxrss_mb')} MB")
    return out


def measure_plan(args, large, small, work, shape: str = "flat") -> dict:
    out: dict = {"shape": shape}
    for label, man in (("small", small), ("large", large)):
        log(f"plan [{shape}]: migrate plan --no-probe over {man['databases']} databases")
        t = run_timed(
            [PY, "-m", "migrator.cli", "plan", "--root", man["root"], "--model", "8b", "--no-probe", "--json"],
            log_path=work / "runs" / f"{shape}-plan-{label}.log",
            timeout=600,
        )
        ok = t.rc == 0
        try:
            doc = json.loads(Path(t.log).read_text()[Path(t.log).read_text().index("{") :])
            ok = ok and doc["totals"]["to_migrate"] == man["databases"]
        except (ValueError, KeyError, json.JSONDecodeError):
            ok = False
        out[label] = {
            "databases": man["databases"],
            "wall_s": round(t.wall_s, 3),
            "cpu_s": round(t.cpu_s, 3),
            "maxrss_mb": round(t.maxrss_mb, 1),
            "ok": ok,
        }
        log(f"  {t.wall_s:.2f} s" + ("" if ok else "  FAILED"))
    out["per_1000_databases_s"] = round(
        max(
            0.0,
            1000 * (out["large"]["wall_s"] - out["small"]["wall_s"]) / max(1, large["databases"] - small["databases"]),
        ),
        3,
    )
    out["extrapolated_10000_s"] = round(
        out["small"]["wall_s"] + out["per_1000_databases_s"] * (10_000 - small["databases"]) / 1000, 2
    )
    return out


def _records_committed(state_db: Path) -> int:
    if not state_db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=0.05)
        try:
            row = con.execute("SELECT COALESCE(SUM(records_embedded), 0) FROM migrations").fetchone()
            return int(row[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def measure_kill(args, man, work, shape: str = "flat") -> dict:
    cap = args.kill_capacity
    log(f"kill [{shape}]: migrator at {cap:,} tokens/s, SIGKILL at 50% of records committed, then resume")
    run_dir = work / "runs" / f"{shape}-kill"
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    corp.link_copy(Path(man["root"]), root)
    state = run_dir / "state"
    half = man["records"] // 2
    seen = {"at_kill": 0}

    def past_half() -> bool:
        n = _records_committed(state / "migrator.db")
        seen["at_kill"] = n
        return n >= half

    _, model = MODELS[4096]
    with Server(run_dir, model=model, tokens_per_second=cap, overhead_s=args.overhead) as srv:
        cmd = contender_cmd("migrator", root, state, srv.base_url, 4096, args.loop_batch)
        ideal = man["tokens"] / cap
        t1 = run_timed(cmd, log_path=run_dir / "killed.log", timeout=timeout_for(ideal), poll=past_half)
        time.sleep(1.0)  # let requests the dead client left behind finish on the server
        mid = srv.stats()
        committed = _records_committed(state / "migrator.db")
        t2 = run_timed(cmd, log_path=run_dir / "resumed.log", timeout=timeout_for(ideal))
        end = srv.stats()
    digests = corp.corpus_digests(Path(man["root"]))
    rework = sum(c - 1 for d, c in end["repeats"].items() if d in digests)
    srv_stats = end["server"]
    window_default = 8 * Settings.batch_size  # 8 requests of the default batch
    observed_window = srv_stats["max_in_flight"] * max(1.0, srv_stats["mean_batch"])
    problems = verify_tree(root, Path(man["root"]), 4096) if t2.rc == 0 else ["resume failed"]
    out = {
        "shape": shape,
        "capacity": cap,
        "records": man["records"],
        "killed_at_committed": committed,
        "killed_at_fraction": round(committed / man["records"], 3),
        "killed": t1.killed and not t1.timed_out,
        "killed_rc": t1.rc,
        "resume_rc": t2.rc,
        "resume_wall_s": round(t2.wall_s, 2),
        "first_wall_s": round(t1.wall_s, 2),
        "texts_answered_before_resume": mid["texts_answered"],
        "rework_texts": rework,
        "window_settings_default": window_default,
        "window_observed": round(observed_window, 1),
        "max_in_flight_observed": srv_stats["max_in_flight"],
        "mean_batch_observed": round(srv_stats["mean_batch"], 2),
        "verified": not problems,
        "ok": t1.killed and not t1.timed_out and t2.rc == 0 and not problems,
    }
    out["rework_within_window"] = rework <= max(window_default, observed_window)
    if not args.keep:
        corp.remove_tree(root)
    log(
        f"  killed at {committed}/{man['records']} committed; resume rc {t2.rc}; "
        f"{rework} texts embedded twice (window: {window_default} by Settings defaults, "
        f"{observed_window:.0f} observed)"
    )
    return out


def measure_startup(work) -> dict:
    t = run_timed([PY, "-m", "migrator.cli", "--help"], log_path=work / "runs" / "startup.log", timeout=120)
    return {"migrate_help_wall_s": round(t.wall_s, 3), "cpu_s": round(t.cpu_s, 3)}


# --------------------------------------------------------------------------- #
# Verdicts, report, plot                                                      #
# --------------------------------------------------------------------------- #
def verdicts(res: dict) -> dict:
    """The targets against one shape's figures (a section of the results)."""
    v = {}
    gp = [r for r in res.get("goodput", []) if r["contender"] == "migrator"]
    lo, hi = TARGETS["goodput_capacity_range"]
    in_range = [r for r in gp if lo <= r["capacity"] <= hi and r.get("goodput") is not None]
    if in_range:
        worst = min(in_range, key=lambda r: r["goodput"])
        v["goodput"] = {
            "target": f">= {TARGETS['goodput_min']} at every capacity {lo:,}-{hi:,}",
            "worst": worst["goodput"],
            "at_capacity": worst["capacity"],
            "capacities_measured": sorted(r["capacity"] for r in in_range),
            "met": worst["goodput"] >= TARGETS["goodput_min"] and worst["ok"],
        }
    by = {(r["contender"], r["capacity"]): r for r in res.get("goodput", [])}
    caps = sorted({r["capacity"] for r in res.get("goodput", [])})
    if caps:
        seed = min(caps, key=lambda c: abs(c - SEED_CAPACITY))
        m, d = by.get(("migrator", seed)), by.get(("dvd", seed))
        if m and d and m["ok"] and d["ok"]:
            sp = d["wall_s"] / m["wall_s"]
            v["speedup_vs_dvd"] = {
                "target": f">= {TARGETS['speedup_vs_dvd_at_seed']}x at the seed capacity",
                "capacity": seed,
                "speedup": round(sp, 2),
                "met": sp >= TARGETS["speedup_vs_dvd_at_seed"],
            }
    for r in res.get("ceiling", []):
        want = TARGETS[f"ceiling_rps_{r['dim']}"]
        wire = r.get("wire", "bytes")
        v[f"ceiling_{r['dim']}" + ("" if wire == "bytes" else f"_{wire}")] = {
            "target": f">= {want:,} records/s",
            "records_per_s": r["records_per_s"],
            "records_per_s_busy": r.get("records_per_s_busy"),
            "met": bool(r["ok"] and r["records_per_s"] and r["records_per_s"] >= want),
        }
    mem = res.get("memory")
    if mem and mem.get("ratio") is not None:
        v["memory"] = {
            "target": "peak RSS within 10% from 10 to 10,000 databases",
            "databases": [mem["small"]["databases"], mem["large"]["databases"]],
            "ratio": mem["ratio"],
            "met": abs(mem["ratio"] - 1) <= TARGETS["memory_flat_within"],
        }
    plan = res.get("plan")
    if plan:
        n = plan["large"]["databases"]
        secs = plan["large"]["wall_s"] if n >= 10_000 else plan["extrapolated_10000_s"]
        v["plan"] = {
            "target": "< 10 s over 10,000 databases",
            "databases_measured": n,
            "seconds": plan["large"]["wall_s"],
            "seconds_at_10000": secs,
            "extrapolated": n < 10_000,
            "met": secs < TARGETS["plan_seconds_10000_databases"],
        }
    kill = res.get("kill")
    if kill:
        v["rework"] = {
            "target": "<= one in-flight window",
            "rework_texts": kill["rework_texts"],
            "window": max(kill["window_settings_default"], kill["window_observed"]),
            "met": kill["ok"] and kill["rework_within_window"],
        }
    for item in v.values():
        item["shape"] = res.get("shape", "flat")
    return v


def sections(res: dict) -> list[dict]:
    """The per-shape sections of a results file (a file from before shapes is one, flat)."""
    if "by_shape" in res:
        return res["by_shape"]
    return [{**res, "shape": "flat"}]


def _corpus_line(c: dict) -> str:
    per = c.get("records_per_db")
    spread = f", {per['min']:,}-{per['max']:,} per database (mean {per['mean']})" if per else ""
    kinds = c.get("databases_by_shape") or {}
    mix = " (" + ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")" if len(kinds) > 1 else ""
    return f"{c['databases']:,} DVD databases{mix}, {c['records']:,} records{spread}, {c['tokens']:,} tokens"


def markdown(res: dict) -> str:
    lines = []
    m = res["machine"]
    lines.append(
        f"Machine: {m.get('cpus')} CPUs ({m.get('cpu_model', '?')}), {m.get('ram_gb', '?')} GB RAM, "
        f"Python {m['python']}, {m['platform']}; {m['date']}; load average at start "
        f"{m.get('loadavg_start')}, at end {m.get('loadavg_end')}."
    )
    c = res["config"]
    lines.append("")
    lines.append(
        f"Server overhead {c['overhead_s'] * 1000:.1f} ms/request; migrator CLI start-up alone "
        f"{res.get('startup', {}).get('migrate_help_wall_s', '?')} s. Corpora: 3072 dims, real nano-vectordb."
    )
    secs = sections(res)
    for sec in secs:
        shape = sec.get("shape", "flat")
        lines.append("")
        lines.append(f"### Corpus shape `{shape}`")
        lines.append("")
        lines.append(f"Goodput corpus ({shape}): {_corpus_line(sec['corpus'])}.")
        for label, key in (("small", "corpus_small"), ("large", "corpus_large"), ("plan", "corpus_plan")):
            if sec.get(key) and (label != "plan" or sec[key].get("key") != sec.get("corpus_large", {}).get("key")):
                lines.append(f"{label.capitalize()} corpus ({shape}): {_corpus_line(sec[key])}.")
        lines.append("")
        gp = sec.get("goodput", [])
        if gp:
            lines.append(
                "| shape | contender | capacity (tok/s) | ideal (s) | wall (s) | goodput | goodput while busy | "
                "first request (s) | after last answer (s) | "
                "client CPU | server CPU | requests | mean batch | max in flight |"
            )
            lines.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in gp:
                bad = "" if r["ok"] else " (FAILED)"
                lines.append(
                    f"| {r.get('shape', shape)} | {r['contender']}{bad} | {r['capacity']:,} | {r.get('ideal_s')} | "
                    f"{r['wall_s']:.1f} | {r.get('goodput')} | {r.get('goodput_busy')} | "
                    f"{r.get('first_request_s')} | {r.get('after_last_answer_s')} | {r['client_cpu_pct']}% | "
                    f"{r['server_cpu_pct']}% | {r['server_requests']} | {r['server_mean_batch']} | "
                    f"{r['server_max_in_flight']} |"
                )
            lines.append("")
        for r in sec.get("ceiling", []):
            lines.append(
                f"- Ceiling [{shape}] at {r['dim']} dims, {r.get('wire', 'bytes')} answers "
                f"({r['records']:,} records, instant server): "
                f"{r['records_per_s']} records/s end to end, {r.get('records_per_s_busy')} while "
                f"embedding; client CPU {r['client_cpu_pct']}%, server CPU {r['server_cpu_pct']}%; "
                f"peak RSS {r['maxrss_mb']} MB."
            )
        mem = sec.get("memory")
        if mem and "large" in mem:
            lines.append(
                f"- Peak RSS [{shape}] of `migrate run`: {mem['small']['maxrss_mb']} MB over "
                f"{mem['small']['databases']} databases ({mem['small']['records']:,} records), "
                f"{mem['large']['maxrss_mb']} MB over {mem['large']['databases']:,} "
                f"({mem['large']['records']:,} records; ratio {mem['ratio']})."
            )
        plan = sec.get("plan")
        if plan:
            lines.append(
                f"- `migrate plan --no-probe` [{shape}]: {plan['small']['wall_s']} s over "
                f"{plan['small']['databases']} databases, {plan['large']['wall_s']} s over "
                f"{plan['large']['databases']:,} ({plan['per_1000_databases_s']} s per 1,000 more; "
                f"{plan['extrapolated_10000_s']} s at 10,000 by that slope)."
            )
        kill = sec.get("kill")
        if kill:
            lines.append(
                f"- SIGKILL [{shape}] at {kill['killed_at_fraction'] * 100:.0f}% committed, then resume: "
                f"{kill['rework_texts']} texts embedded twice; in-flight window "
                f"{kill['window_settings_default']} (Settings defaults: 8 requests x {Settings.batch_size}), "
                f"{kill['window_observed']} observed (max in flight x mean batch)."
            )
    lines.append("")
    lines.append("| shape | target | measured | met |")
    lines.append("|---|---|---|---|")
    for sec in secs:
        for key, v in sec.get("verdicts", {}).items():
            shown = {k: val for k, val in v.items() if k not in ("target", "met", "shape")}
            lines.append(
                f"| {sec.get('shape', 'flat')} | {key}: {v['target']} | {json.dumps(shown)} | "
                f"{'yes' if v['met'] else 'NO'} |"
            )
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'); no plot"
    secs = [sec for sec in sections(res) if any(r.get("goodput") is not None for r in sec.get("goodput", []))]
    if not secs:
        return "no goodput figures to plot"
    n = len(secs)
    fig, axes = plt.subplots(1, n, figsize=(7.5 if n == 1 else 4.6 * n, 5.4), dpi=120, sharey=True, squeeze=False)
    styles = {"migrator": ("tab:blue", "o"), "dvd": ("tab:red", "s"), "loop": ("tab:gray", "^")}
    labels = {
        "migrator": "migrator (default settings)",
        "dvd": "DVD rebuild (Pool(cpu//2), batch 128, float JSON)",
        "loop": "plain openai-SDK loop (sequential)",
    }
    m = res["machine"]
    for ax, sec in zip(axes[0], secs):
        gp = [r for r in sec["goodput"] if r.get("goodput") is not None]
        for name in CONTENDERS:
            pts = sorted((r["capacity"], r["goodput"]) for r in gp if r["contender"] == name and r["ok"])
            if pts:
                color, marker = styles[name]
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=labels[name])
            busy = sorted(
                (r["capacity"], r["goodput_busy"])
                for r in gp
                if r["contender"] == name and r["ok"] and r.get("goodput_busy")
            )
            if name == "migrator" and busy:
                ax.plot(
                    [p[0] for p in busy],
                    [p[1] for p in busy],
                    linestyle="--",
                    linewidth=1,
                    color=styles[name][0],
                    alpha=0.6,
                    label="migrator, embedding phase only (first request to last answer)",
                )
        ax.axhline(TARGETS["goodput_min"], color="tab:green", linestyle="--", linewidth=1, label="target 0.95")
        ax.axvline(SEED_CAPACITY, color="black", linestyle=":", linewidth=0.8)
        ax.text(SEED_CAPACITY, 1.0, " seed 15,900", fontsize=7, va="bottom")
        ax.set_xscale("log")
        if n > 1:  # narrow panels: the minor tick labels (2x10^4, 3x10^4, ...) run into each other
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(0, 1.12)
        ax.set_xlabel("server capacity (tokens/s, shared by all requests in flight)", fontsize=8 if n > 1 else None)
        c = sec["corpus"]
        shape = sec.get("shape", "flat")
        head = f"shape {shape}: " if shape != "flat" or n > 1 else ""
        ax.set_title(
            f"{head}{c['databases']:,} DVD databases, {c['records']:,} records, {c['tokens']:,} tokens\n"
            f"{m.get('cpus')} CPUs, Python {m['python']}, {m['date'][:10]}",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("goodput = (tokens / capacity) / wall time")
    handles, names = {}, []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                names.append(lab)
    fig.legend(
        [handles[x] for x in names], names, fontsize=7, loc="lower center", ncol=2 if n == 1 else 3, frameon=False
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return None


def well_formed(res: dict) -> list[str]:
    """What --quick checks: everything ran, and every figure is a finite number."""
    problems = []

    def num(x, what):
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            problems.append(f"{what}: not a finite number ({x!r})")

    for sec in sections(res):
        shape = sec.get("shape", "flat")
        for r in sec.get("goodput", []):
            tag = f"[{shape}] goodput {r['contender']}@{r['capacity']}"
            if not r["ok"]:
                problems.append(f"{tag}: failed: {r.get('error', '')[:400]}")
            for k in ("wall_s", "goodput", "ideal_s", "client_cpu_pct", "server_cpu_pct"):
                num(r.get(k), f"{tag} {k}")
        for r in sec.get("ceiling", []):
            if not r["ok"]:
                problems.append(f"[{shape}] ceiling {r['dim']}: failed: {r.get('error', '')[:400]}")
            num(r.get("records_per_s"), f"[{shape}] ceiling {r['dim']} records_per_s")
        if "memory" in sec:
            num(sec["memory"].get("ratio"), f"[{shape}] memory ratio")
            if not sec["memory"]["small"]["ok"]:
                problems.append(f"[{shape}] memory: small run failed")
        if "plan" in sec:
            for label in ("small", "large"):
                if not sec["plan"][label]["ok"]:
                    problems.append(f"[{shape}] plan {label}: failed")
                num(sec["plan"][label]["wall_s"], f"[{shape}] plan {label} wall_s")
        if "kill" in sec:
            k = sec["kill"]
            if not k["ok"]:
                shown = {x: k[x] for x in ("killed", "killed_rc", "resume_rc", "verified")}
                problems.append(f"[{shape}] kill/resume: not ok ({shown})")
            num(k.get("rework_texts"), f"[{shape}] kill rework_texts")
        for key in res.get("measures", []):
            if not sec.get(key):
                problems.append(f"[{shape}] {key}: no result")
    return problems


# --------------------------------------------------------------------------- #
# CLI                                                                         #
# --------------------------------------------------------------------------- #
def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.replace("_", "").split(",") if x.strip()]


#: The sizes a preset gives in databases of the flat shape (22 records each, or
#: --records-per-db); a shaped corpus keeps the same records in all.
SIZED = ("databases", "small_databases", "large_databases", "plan_databases")


def corpus_sizes(args, shape: str) -> dict:
    """The databases of each corpus of *shape* (flat: also the records in all).

    flat: as before shapes. Any other shape: what the user gave with
    --databases, --small-databases, --large-databases, --plan-databases is the
    number of databases; otherwise each corpus holds about as many records as
    its flat counterpart (--records for goodput, --*-databases x
    --records-per-db for the others), at least 3 databases (2 for the small
    one, 3 for mixed, so that each of its corpora has every kind), and the
    large and plan corpora at least twice the small one, so memory and plan
    compare few databases against more."""
    rpd = args.records_per_db
    if shape == "flat":
        return {
            "goodput": (args.databases, args.records),
            "small": (args.small_databases, args.small_databases * rpd),
            "large": (args.large_databases, args.large_databases * rpd),
            "plan": (args.plan_databases, args.plan_databases * rpd),
        }
    given = args.explicit
    fewest = max(2, len(corp.SHAPES[shape].parts))  # mixed: one database of each kind at least
    goodput = args.databases if "databases" in given else corp.databases_for(shape, args.records, 3)
    small = (
        args.small_databases
        if "small_databases" in given
        else corp.databases_for(shape, args.small_databases * rpd, fewest)
    )
    large = (
        args.large_databases
        if "large_databases" in given
        else max(2 * small, corp.databases_for(shape, args.large_databases * rpd, 3))
    )
    plan = (
        args.plan_databases
        if "plan_databases" in given
        else max(2 * small, corp.databases_for(shape, args.plan_databases * rpd, 3))
    )
    return {"goodput": (goodput, None), "small": (small, None), "large": (large, None), "plan": (plan, None)}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CI smoke test: tiny corpus, no timing assertion")
    mode.add_argument(
        "--full",
        action="store_true",
        help="full sizes: 1,000 databases / 40,000 records for the sweep, 10,000 for memory and plan",
    )
    ap.add_argument(
        "--shape",
        default="flat",
        help="corpus shapes, a comma list of " + ", ".join(corp.SHAPES) + " (default flat); every figure is "
        "measured and reported per shape (see below)",
    )
    ap.add_argument("--capacities", type=_ints, help="server capacities, tokens/s (e.g. 5000,15900,50000,200000)")
    ap.add_argument(
        "--databases",
        type=int,
        help="databases in the goodput corpus (with a shape other than flat: of that shape, overriding --records)",
    )
    ap.add_argument(
        "--records",
        type=int,
        help="records in all in the goodput corpus (with a shape other than flat: about, and only without --databases)",
    )
    ap.add_argument("--large-databases", type=int, help="databases in the large corpus (ceiling, memory); up to 10,000")
    ap.add_argument(
        "--plan-databases",
        type=int,
        help="databases for the plan timing (its corpus is cheap to build; default 10,000)",
    )
    ap.add_argument("--small-databases", type=int, help="databases in the small corpus for memory (10)")
    ap.add_argument(
        "--records-per-db",
        type=int,
        help="mean records per database in the small/large corpora (flat; other shapes: it sets their record totals)",
    )
    ap.add_argument(
        "--overhead",
        type=float,
        default=DEFAULT_OVERHEAD_S,
        help=f"server overhead per request, seconds (default {DEFAULT_OVERHEAD_S}, from the facts)",
    )
    ap.add_argument("--kill-capacity", type=int, help="server capacity during the kill test")
    ap.add_argument("--contenders", default=",".join(CONTENDERS), help="subset of migrator,dvd,loop")
    ap.add_argument("--measure", default=",".join(MEASURES), help="subset of " + ",".join(MEASURES))
    ap.add_argument("--loop-batch", type=int, default=32, help="texts per request of the plain loop")
    ap.add_argument(
        "--wires",
        default="bytes",
        help="wire formats for the ceiling, a comma list of bytes (vLLM >= 0.11.1) and base64 (older servers)",
    )
    ap.add_argument("--name", help="result name (default: quick, full or run-<date>)")
    ap.add_argument("--results-dir", type=Path, help="default benchmarks/results (quick: the work dir)")
    ap.add_argument("--plot", type=Path, help="default docs/benchmarks-goodput.png (quick: the work dir)")
    ap.add_argument(
        "--work-dir",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")) / "migrator-bench",
        help="corpora (cached) and run directories",
    )
    ap.add_argument("--keep", action="store_true", help="keep migrated trees of each run")
    ap.add_argument(
        "--replot", type=Path, metavar="RESULTS_JSON", help="only redraw the plot (and the .md) from a results file"
    )
    args = ap.parse_args(argv)
    preset = PRESETS["quick" if args.quick else "full" if args.full else "default"]
    args.explicit = {key for key in SIZED + ("records",) if getattr(args, key, None) is not None}
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.contenders = [c for c in args.contenders.split(",") if c]
    args.measures = [m for m in args.measure.split(",") if m]
    args.wires = [w for w in args.wires.split(",") if w]
    if unknown := set(args.wires) - set(WIRES):
        ap.error(f"--wires: unknown {', '.join(sorted(unknown))} (bytes, base64)")
    args.shapes = list(dict.fromkeys(x.strip() for x in args.shape.split(",") if x.strip()))
    for c in args.contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r}")
    for m in args.measures:
        if m not in MEASURES:
            ap.error(f"unknown measurement {m!r}")
    if not args.shapes:
        ap.error("--shape needs at least one shape")
    for sh in args.shapes:
        if sh not in corp.SHAPES:
            ap.error(f"unknown corpus shape {sh!r} (one of {', '.join(corp.SHAPES)})")
    if "flat" in args.shapes and args.records < args.databases:
        ap.error("--records must be at least --databases")
    if set(args.shapes) - {"flat"} and {"databases", "records"} <= args.explicit:
        log("note: with a shape other than flat, --databases gives the count and --records is ignored")
    args.name = args.name or ("quick" if args.quick else "full" if args.full else time.strftime("run-%Y%m%d-%H%M"))
    work = args.work_dir
    args.results_dir = args.results_dir or (work / "results" if args.quick else REPO / "benchmarks" / "results")
    default_plot = work / f"{args.name}-goodput.png" if args.quick else REPO / "docs" / "benchmarks-goodput.png"
    args.plot = args.plot or default_plot
    return args


_CORPUS_FIELDS = (
    "shape",
    "databases",
    "records",
    "tokens",
    "chars",
    "bytes",
    "key",
    "records_per_db",
    "databases_by_shape",
)


def _corpus_summary(man: dict) -> dict:
    return {k: man[k] for k in _CORPUS_FIELDS if k in man}


def run_shape(args, shape: str, work: Path) -> dict:
    """Every measurement asked for, on the corpora of one shape: one section of the results."""
    sizes = corpus_sizes(args, shape)
    sec: dict = {"shape": shape, "sizes": {k: v[0] for k, v in sizes.items()}}

    def corpus(role: str, seed: int) -> dict:
        databases, records = sizes[role]
        return corp.ensure_corpus(work, databases, records, seed=seed, shape=shape, log=log)

    need_large = {"ceiling", "memory"} & set(args.measures)
    man = corpus("goodput", 0)
    sec["corpus"] = _corpus_summary(man)
    small = large = many = None
    if need_large or "plan" in args.measures:
        small = corpus("small", 1)
        sec["corpus_small"] = _corpus_summary(small)
    if need_large:
        large = corpus("large", 2)
        sec["corpus_large"] = _corpus_summary(large)
    if "plan" in args.measures:
        many = corpus("plan", 2)
        sec["corpus_plan"] = _corpus_summary(many)
    if "goodput" in args.measures:
        sec["goodput"] = measure_goodput(args, man, work, shape)
    if need_large:
        sec["ceiling"] = measure_ceiling(
            args, large, work, dims=(1024, 4096) if "ceiling" in args.measures else (4096,), shape=shape
        )
    if "memory" in args.measures:
        sec["memory"] = measure_memory(args, small, large, sec["ceiling"], work, shape)
    if "plan" in args.measures:
        sec["plan"] = measure_plan(args, many, small, work, shape)
    if "kill" in args.measures:
        sec["kill"] = measure_kill(args, man, work, shape)
    sec["verdicts"] = verdicts(sec)
    return sec


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.replot:
        res = json.loads(args.replot.read_text())
        args.replot.with_suffix(".md").write_text(markdown(res))
        note = plot(res, args.plot)
        print(f"plot: {args.plot if note is None else note}")
        return 0 if note is None else 1
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    res: dict = {
        "name": args.name,
        "mode": "quick" if args.quick else "full" if args.full else "custom",
        "machine": machine(),
        "targets": TARGETS,
        "measures": args.measures,
        "shapes": args.shapes,
        "config": {
            "capacities": args.capacities,
            "overhead_s": args.overhead,
            "seed_capacity": SEED_CAPACITY,
            "contenders": args.contenders,
            "loop_batch": args.loop_batch,
            "kill_capacity": args.kill_capacity,
            "migrator_settings": "CLI defaults (no --batch-size/--concurrency)",
            "shapes": {sh: corp.SHAPES[sh].about for sh in args.shapes},
        },
    }
    res["startup"] = measure_startup(work)
    # One section per shape, each with the figures of a results file from before
    # shapes; every row, dict and verdict in it names its shape too.
    res["by_shape"] = []
    for shape in args.shapes:
        log(f"corpus shape {shape}: {corp.SHAPES[shape].about}")
        res["by_shape"].append(run_shape(args, shape, work))
    res["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    res["total_seconds"] = round(time.monotonic() - t0, 1)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{args.name}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (args.results_dir / f"{args.name}.md").write_text(md)
    note = plot(res, args.plot)
    print(md)
    print(f"results: {out}\nplot: {args.plot if note is None else note}")
    if args.quick:
        problems = well_formed(res)
        json.loads(out.read_text())  # the file itself parses
        if problems:
            print("quick benchmark: NOT well-formed:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        print("quick benchmark: everything ran and the outputs are well-formed (no timing assertion)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
