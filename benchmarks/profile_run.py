"""Where does ``migrate run`` spend its time?  A sampling profile of every thread.

Runs ``migrator.api.run(Settings(...))`` with default settings in this process
against ``bench_server.py`` (in its own process), and samples the stack of
every Python thread every few milliseconds.  Prints, per thread, the
functions seen most often: *self* (the frame on top) and *inclusive* (anywhere
on the stack).  A thread parked in ``queue.get`` / ``select`` is idle.

    python benchmarks/profile_run.py [--databases 200 --records 4000] [--shape long] [--capacity N] [--dim 4096]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import corpus as corp  # noqa: E402
from benchmarks.procs import Server  # noqa: E402
from benchmarks.run import MODELS  # noqa: E402


class Sampler(threading.Thread):
    def __init__(self, every: float):
        super().__init__(daemon=True, name="sampler")
        self.every = every
        self.stop = threading.Event()
        self.self_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.incl_counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.samples: collections.Counter = collections.Counter()

    @staticmethod
    def _where(frame) -> str:
        code = frame.f_code
        name = code.co_filename
        for marker in ("site-packages/", "/lib/python3"):
            if marker in name:
                name = name.split(marker, 1)[1]
                break
        else:
            name = os.path.relpath(name) if name.startswith("/") else name
        return f"{name}:{code.co_name}"

    def run(self) -> None:
        me = threading.get_ident()
        while not self.stop.wait(self.every):
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in sys._current_frames().items():
                if ident == me:
                    continue
                tname = names.get(ident, str(ident))
                group = tname.split("_")[0] if tname.startswith("migrator-writer") else tname.rsplit("-", 1)[0]
                self.samples[group] += 1
                self.self_counts[group][self._where(frame)] += 1
                seen = set()
                f = frame
                while f is not None:
                    w = self._where(f)
                    if w not in seen:
                        seen.add(w)
                        self.incl_counts[group][w] += 1
                    f = f.f_back


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--databases", type=int, default=200)
    ap.add_argument("--records", type=int, default=4000)
    ap.add_argument("--shape", default="flat", help="flat (the default), long, medium, short or mixed")
    ap.add_argument("--capacity", type=float, default=None, help="tokens/s (default: instant server)")
    ap.add_argument("--overhead", type=float, default=0.0)
    ap.add_argument("--dim", type=int, default=4096, choices=sorted(MODELS))
    ap.add_argument(
        "--no-quality-gate", action="store_true", help="as the benchmarks run it (their server's vectors are random)"
    )
    ap.add_argument("--every", type=float, default=0.005)
    ap.add_argument("--top", type=int, default=18)
    ap.add_argument("--work-dir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "migrator-bench")
    args = ap.parse_args(argv)
    for var in ("MIGRATOR_ENDPOINT", "MIGRATOR_STATE_DIR", "MIGRATOR_API_KEY", "VLLM_API_KEY", "OPENAI_API_KEY"):
        os.environ.pop(var, None)
    man = corp.ensure_corpus(args.work_dir, args.databases, args.records, seed=0, shape=args.shape)
    run_dir = args.work_dir / "runs" / "profile"
    corp.remove_tree(run_dir)
    root = run_dir / "video_database"
    corp.link_copy(Path(man["root"]), root)
    from migrator import api

    short, model = MODELS[args.dim]
    with Server(run_dir, model=model, tokens_per_second=args.capacity, overhead_s=args.overhead) as srv:
        settings = api.Settings(
            roots=[str(root)],
            model=short,
            endpoint=srv.base_url,
            state_dir=str(run_dir / "state"),
            quality_gate=not args.no_quality_gate,
        )
        sampler = Sampler(args.every)
        sampler.start()
        t0, c0 = time.monotonic(), time.process_time()
        result = api.run(settings)
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
        sampler.stop.set()
        sampler.join()
        stats = srv.stats()
    print(
        f"{result.outcome}: {man['records']} records, {man['databases']} databases in {wall:.1f} s "
        f"({man['records'] / wall:.0f} records/s), client CPU {cpu:.1f} s ({100 * cpu / wall:.0f}%), "
        f"server CPU {stats['cpu_s']:.1f} s, requests {stats['server']['embedding_ok']}, "
        f"mean batch {stats['server']['mean_batch']:.1f}, max in flight {stats['server']['max_in_flight']}"
    )
    for group, n in sampler.samples.most_common():
        print(f"\n== thread {group}: {n} samples ({n * args.every:.1f} s)")
        print("   self:")
        for where, c in sampler.self_counts[group].most_common(args.top // 2):
            print(f"     {100 * c / n:5.1f}%  {where}")
        print("   inclusive:")
        for where, c in sampler.incl_counts[group].most_common(args.top):
            print(f"     {100 * c / n:5.1f}%  {where}")
    corp.remove_tree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
