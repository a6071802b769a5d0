"""The README's demo command keeps working: a full migration of the bundled examples."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from migrator.demo import EXAMPLES


def _digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_migrates_a_copy_and_leaves_the_examples_alone(tmp_path):
    bundled = _digest(EXAMPLES)
    work = tmp_path / "work"
    r = subprocess.run([sys.executable, "-m", "migrator.demo", "--workdir", str(work)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TEST SERVER" in r.stdout and "NOT a real Qwen3 model" in r.stdout
    assert r.stdout.count("as a query -> found") == len(list(EXAMPLES.glob("*/database.json")))
    assert "AOAI_EMBEDDING_LARGE_DIM = 4096" in r.stdout
    assert _digest(EXAMPLES) == bundled
