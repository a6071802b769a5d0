"""What does this disk charge to make one small database durable? Files only: no parsing, no job table, no server.

`run` on many small databases (benchmarks/many.py) costs a few milliseconds a
database. Part of that is the least any safe migration must pay: the new file
and its provenance sidecar written beside the original, each fsync'd under a
temporary name, renamed into place and the directory fsync'd. This measures
that part alone, on the disk the benchmarks run on, in ``--databases``
directories of their own, with the same number of threads as `run`'s I/O pool
(``IO_THREADS``), so that `run`'s figure can be read against it:

  as staged   each file through ``durable.atomic_write`` (what the stager calls):
              two file fsyncs and two directory fsyncs a database
  one dir     both files fsync'd, then their directory once: three fsyncs
  grouped     256 databases written unsynced, then every file and every
              directory fsync'd by 8 threads at once (how cutover groups its
              directory fsyncs): the same three fsyncs, overlapped

Each variant runs ``--repeats`` times, in turn, over fresh directories under
``--work-dir`` (default: the system's temporary directory, on the disk
benchmarks use), and the medians are reported in milliseconds a database.

    .venv/bin/python benchmarks/disk_floor.py [--databases 2000] [--repeats 3] [--size 3300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.procs import machine  # noqa: E402
from migrator.files import durable  # noqa: E402
from migrator.pipeline.runner import IO_THREADS  # noqa: E402

SIDECAR_BYTES = 420  # a provenance sidecar of one entry, about
GROUP = 256  # databases written before their fsyncs (swap.RECORD_EVERY)
GROUP_THREADS = 8  # fsyncs at once (swap.SYNC_THREADS)


def _unsynced(path: Path, data: bytes) -> int:
    """Write ``data`` under a temporary name and rename it into place, leaving its fd open."""
    tmp = durable.temp_path_for(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.replace(tmp, path)
    return fd


def _fsync_close(fd: int) -> None:
    os.fsync(fd)
    os.close(fd)


def as_staged(dirs: list[Path], data: bytes, side: bytes) -> None:
    def one(d: Path) -> None:
        durable.atomic_write(d / "database.json.staged", [data])
        durable.atomic_write(d / "database.json.sidecar", [side])

    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(one, dirs))


def one_dir(dirs: list[Path], data: bytes, side: bytes) -> None:
    def one(d: Path) -> None:
        for name, payload in (("database.json.staged", data), ("database.json.sidecar", side)):
            _fsync_close(_unsynced(d / name, payload))
        durable.fsync_dir(d)

    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(one, dirs))


def grouped(dirs: list[Path], data: bytes, side: bytes) -> None:
    with ThreadPoolExecutor(GROUP_THREADS) as pool:
        for at in range(0, len(dirs), GROUP):
            group = dirs[at : at + GROUP]
            fds = [
                _unsynced(d / name, p)
                for d in group
                for name, p in (("database.json.staged", data), ("database.json.sidecar", side))
            ]
            list(pool.map(_fsync_close, fds))
            list(pool.map(durable.fsync_dir, group))


VARIANTS: dict[str, Callable[[list[Path], bytes, bytes], None]] = {
    "as staged": as_staged,
    "one dir": one_dir,
    "grouped": grouped,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--databases", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=3300, help="bytes of the new file (many.py's: about 3,300)")
    ap.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args(argv)
    data, side = os.urandom(args.size), os.urandom(SIDECAR_BYTES)
    ms: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeats):
        for name, fn in VARIANTS.items():
            top = Path(tempfile.mkdtemp(prefix="disk-floor-", dir=args.work_dir))
            try:
                dirs = [top / f"v{i:06d}" for i in range(args.databases)]
                for d in dirs:
                    d.mkdir()
                os.sync()  # the directories' creation is not what is timed
                t0 = time.perf_counter()
                fn(dirs, data, side)
                ms[name].append((time.perf_counter() - t0) / args.databases * 1000)
            finally:
                shutil.rmtree(top)
    m = machine()
    sizes = f"{args.size} + {SIDECAR_BYTES} bytes"
    print(f"{m.get('cpu_model', '?')}, {m['cpus']} CPUs, {m['date']}; {args.databases} databases, {sizes}")
    base = statistics.median(ms["as staged"])
    for name, values in ms.items():
        med = statistics.median(values)
        runs = " / ".join(f"{v:.3f}" for v in values)
        print(f"{name:10s} {med:.3f} ms a database (runs {runs}), {med / base:.2f} of 'as staged'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
