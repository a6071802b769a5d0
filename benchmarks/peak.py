"""Run a Python module or script in this process and write its own peak RSS at exit.

    python benchmarks/peak.py OUT -m migrator.cli plan ...
    python benchmarks/peak.py OUT script.py args ...

Why: a child's ``ru_maxrss`` (``wait4``) starts at its parent's high-water mark. Linux
keeps the mark of the memory a process had before ``exec``, and a forked child's is a
copy of the parent's, so a 60 MB ``migrate status`` run from a 130 MB benchmark reports
130 MB. ``VmHWM`` in ``/proc/self/status`` is the mark of this process's memory since it
started, which is what a user running the command would see. Children (pool workers) are
their own processes and are not counted. The pid is the command's own, so a kill reaches
it; a killed process writes nothing (``procs.run_timed`` then keeps ``wait4``'s figure).
"""

from __future__ import annotations

import atexit
import runpy
import sys


def vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main() -> None:
    out, rest = sys.argv[1], sys.argv[2:]

    def write() -> None:
        kib = vm_hwm_kib()
        if kib is not None:
            with open(out, "w") as f:
                f.write(str(kib))

    atexit.register(write)
    if rest[:1] == ["-m"]:
        sys.argv = [rest[1], *rest[2:]]
        runpy.run_module(rest[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = rest
        runpy.run_path(rest[0], run_name="__main__")


if __name__ == "__main__":
    main()
