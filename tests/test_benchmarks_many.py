"""The many-small-databases benchmark (benchmarks/many.py) in its quick mode: every step runs
and the result file is well-formed. No timing assertion."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import many  # noqa: E402
from helpers import run_benchmark  # noqa: E402


def test_quick_mode_runs_every_step_and_writes_sane_results(tmp_path):
    work = tmp_path / "work"
    run_benchmark("many.py", "--quick", "--work-dir", str(work), "--name", "smoke", timeout=180, cwd=tmp_path)
    # --quick writes into the work dir, never into benchmarks/results
    res = json.loads((work / "results" / "smoke.json").read_text())
    md = (work / "results" / "smoke.md").read_text()
    assert not (REPO / "benchmarks" / "results" / "smoke.json").exists()

    n = many.QUICK_DATABASES
    assert res["ok"] is True and res["problems"] == []
    assert res["mode"] == "quick"
    assert res["tree"]["databases"] == n
    assert res["tree"]["records"] == n * many.RECORDS_PER_DB
    assert res["machine"]["cpus"] >= 1 and res["commit"]

    r = res["results"]
    steps = r["steps"]
    assert set(steps) == {"plan", "run", "status", "cutover", "rollback"}
    assert len(steps["status"]) == many.STATUS_REPEATS
    for s in [steps["plan"], steps["run"], *steps["status"], steps["cutover"], steps["rollback"]]:
        assert s["rc"] == 0 and s["ok"] and not s["timed_out"], s
        assert s["wall_s"] > 0 and s["maxrss_mb"] > 0
    assert steps["plan"]["totals"]["databases"] == n
    assert steps["plan"]["totals"]["records"] == n * many.RECORDS_PER_DB
    assert steps["run"]["outcome"] == "staged"
    assert steps["run"]["databases"] == {"staged": n}
    assert steps["run"]["records_embedded"] == n * many.RECORDS_PER_DB
    assert steps["run"]["overhead_per_database_ms"] > 0
    assert all(s["by_state"] == {"staged": n} for s in steps["status"])
    assert steps["cutover"]["outcome"] == "done"
    assert steps["cutover"]["databases"] == {"cut_over": n}
    assert steps["rollback"]["done"] == n and steps["rollback"]["refused"] == 0
    assert r["restored"]["ok"] and r["restored"]["identical"] == n and r["restored"]["problems"] == []

    p = r["progress"]
    assert p["done_at_end"] == n
    assert p["databases_per_tenth"] == n // 10
    assert p["first_tenth"]["databases_per_s"] > 0
    assert p["last_tenth"]["databases_per_s"] > 0
    assert p["ratio_last_first"] > 0
    assert p["samples"][0][1] == 0 and p["samples"][-1][1] == n

    for key in ("job_table_after_run", "job_table_after_cutover"):
        assert r[key]["db_bytes"] > 0 and r[key]["bytes_per_database"] > 0

    v = r["verify"]
    assert v["ok"] and v["sample_ok"] and v["records_match"]
    assert v["files_read"] == v["files_expected"] == n
    assert v["by_dim"] == {str(many.NEW_DIM): n}
    assert v["records"] == v["records_expected"] == n * many.RECORDS_PER_DB
    assert v["sample"] == min(many.SAMPLE, n)

    # the migrated copy is removed (no --keep); the cached tree stays for the next run
    assert not (Path(r["run_dir"]) / "video_database").exists()
    assert (work / "corpora" / many.tree_key(n) / many.MANIFEST).exists()

    assert "| step | wall s | peak RSS MB |" in md
    for label in ("plan --no-probe", "run --no-cutover", "status (3)", "cutover", "rollback"):
        assert f"| {label} |" in md
    assert "ratio last/first" in md and "bytes per database" in md and "Verification: OK" in md


def test_tenths_from_samples():
    # 100 databases: nothing until 2 s, then 10 a second
    samples = [(0.0, 0), (1.0, 0), (2.0, 0)] + [(2.0 + k, 10 * k) for k in range(1, 11)]
    t = many.tenths(samples, 100)
    assert t["databases_per_tenth"] == 10
    assert t["first_tenth"]["from_s"] == 2.0 and t["first_tenth"]["seconds"] == 1.0
    assert t["first_tenth"]["databases_per_s"] == 10.0
    assert t["last_tenth"]["databases_per_s"] == 10.0
    assert t["ratio_last_first"] == 1.0
    # between samples the count is taken as linear
    assert many.crossing([(0.0, 0), (2.0, 40)], 10) == 0.5
    # never got there
    assert many.tenths([(0.0, 0), (1.0, 50)], 100)["last_tenth"]["databases_per_s"] is None
