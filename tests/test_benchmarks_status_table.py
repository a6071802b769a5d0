"""The status-on-a-big-job-table benchmark (benchmarks/status_table.py) on a tiny table: the
table it builds is one `migrate status` reads as staged, and every size is reported."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import status_table  # noqa: E402
from helpers import run_benchmark  # noqa: E402


def test_the_table_it_builds_reads_as_that_many_staged_databases(cli, tmp_path):
    status_table.build(tmp_path / "state", 30)
    r = cli("status", "--json", "--state-dir", str(tmp_path / "state"))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)["migrations"][0]
    assert doc["id"] == status_table.MIGRATION
    assert doc["databases"] == 30 and doc["by_state"] == {"staged": 30}


def test_the_script_reports_every_size(tmp_path):
    out = run_benchmark("status_table.py", "--sizes", "20,40", "--repeats", "1", "--work-dir", str(tmp_path))
    for what in ("empty state dir", "20 databases", "40 databases"):
        line = next(ln for ln in out.splitlines() if f"status --json, {what}:" in ln)
        assert float(line.split(":")[-1].split()[0]) > 0, line
    assert list(tmp_path.iterdir()) == []  # its tables removed
