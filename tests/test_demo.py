"""The README's demo command keeps working: a full migration of the bundled examples."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from migrator.testing.demo import EXAMPLES


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_demo_migrates_a_copy_and_leaves_the_examples_alone(tmp_path):
    bundled = _digest(EXAMPLES)
    work = tmp_path / "work"
    r = subprocess.run(
        [sys.executable, "-m", "migrator.testing.demo", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "TEST SERVER" in r.stdout and "NOT a real Qwen3 model" in r.stdout
    dvd = list(EXAMPLES.glob("video_database/*/database.json"))
    others = list(EXAMPLES.glob("lightrag/rag_storage/vdb_*.json")) + list(EXAMPLES.glob("nano-graphrag/*/vdb_*.json"))
    assert len(dvd) == 3 and len(others) == 5
    assert r.stdout.count("as a query -> found") == len(dvd) + len(others)
    assert "NOT found" not in r.stdout and "is NOT the new one" not in r.stdout
    assert r.stdout.count("marker says Qwen/Qwen3-Embedding-8B at 4096") == 3
    # the settings each application must change, named at cutover with the file they live in
    assert f"in {work / 'dvd' / 'config.py'}:" in r.stdout and "AOAI_EMBEDDING_LARGE_DIM = 4096" in r.stdout
    assert f"in {work / 'lightrag' / '.env'}:" in r.stdout and "EMBEDDING_DIM=4096" in r.stdout
    assert "embedding_dim=4096" in r.stdout
    assert "still names text-embedding-3-large" in r.stdout  # plan's warning, before
    assert _digest(EXAMPLES) == bundled
