"""The disk-floor benchmark (benchmarks/disk_floor.py): each variant writes what it claims
to time, and the script reports every variant. No timing assertion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import disk_floor  # noqa: E402
from helpers import run_benchmark  # noqa: E402


@pytest.mark.parametrize("variant", sorted(disk_floor.VARIANTS))
def test_each_variant_leaves_both_files_whole_and_no_temporary(tmp_path, variant):
    dirs = [tmp_path / f"v{i}" for i in range(disk_floor.GROUP + 3)]  # more than one group
    for d in dirs:
        d.mkdir()
    data, side = b"new file " * 300, b"sidecar " * 40
    disk_floor.VARIANTS[variant](dirs, data, side)
    for d in dirs:
        assert {p.name: p.read_bytes() for p in d.iterdir()} == {
            "database.json.staged": data,
            "database.json.sidecar": side,
        }


def test_the_script_reports_every_variant(tmp_path):
    out = run_benchmark("disk_floor.py", "--databases", "20", "--repeats", "1", "--work-dir", str(tmp_path))
    lines = out.splitlines()
    for name in disk_floor.VARIANTS:
        line = next(ln for ln in lines if ln.startswith(name))
        assert float(line.split()[len(name.split())]) > 0, line
    assert list(tmp_path.iterdir()) == []  # its directories removed
