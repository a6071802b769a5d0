"""The spool file: appends that say where they landed, and reads that check it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from migrator.files import spool

_APPENDER = """
import json, os, random, sys
from pathlib import Path
from migrator.files import spool
path, seed, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
out = []
for _ in range(n):
    data = os.urandom(rng.randrange(1, 96) * 1024)
    offset, crc = spool.append(path, data, first=False)
    out.append((offset, len(data), crc))
print(json.dumps(out))
"""


def test_appends_from_two_processes_at_once_each_land_where_they_say(tmp_path):
    """A worker whose lease was taken over may still append while the new holder does:
    every append's offset and CRC must still find its own bytes."""
    path = tmp_path / "database.json.migrator-x.spool"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(path), str(seed), "300"], stdout=subprocess.PIPE, text=True
        )
        for seed in (1, 2, 3)
    ]
    marks = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        marks += json.loads(out)
    reader = spool.Reader(path)
    try:
        for offset, size, crc in marks:
            reader.read(offset, size, crc)  # raises Damaged if another append overlapped it
    finally:
        reader.close()
    assert sorted(o for o, _, _ in marks) == sorted({o for o, _, _ in marks})  # no two at one offset
    assert path.stat().st_size == sum(size for _, size, _ in marks)


def test_threads_of_one_run_append_without_overlap(tmp_path):
    path = tmp_path / "database.json.migrator-x.spool"
    spools = spool.Spools()
    marks: list[tuple[int, bytes, int]] = []

    def work(k: int) -> None:
        for i in range(200):
            data = bytes([k, i % 256]) * (512 + 37 * i)
            offset, crc = spools.append(path, data)
            marks.append((offset, data, crc))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    blob = path.read_bytes()
    for offset, data, _ in marks:
        assert blob[offset : offset + len(data)] == data
    assert len(blob) == sum(len(d) for _, d, _ in marks)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_read_that_does_not_match_its_mark_is_refused(tmp_path, damage):
    path = tmp_path / "s.spool"
    offset, crc = spool.append(path, b"\x01" * 4096)
    if damage == "flip":
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"\x02")
    else:
        with open(path, "r+b") as f:
            f.truncate(4000)
    reader = spool.Reader(path)
    with pytest.raises(spool.Damaged, match="s.spool"):
        reader.read(offset, 4096, crc)
    reader.close()
