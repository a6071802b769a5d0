"""Processes for the benchmark: the server, timed children, machine facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PY = sys.executable

# Variables migrator or the SDK would read; the benchmark sets its own.
_SCRUB = (
    "MIGRATOR_ENDPOINT",
    "MIGRATOR_STATE_DIR",
    "MIGRATOR_STATE_URL",
    "MIGRATOR_API_KEY",
    "VLLM_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
)


def child_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    return env


@dataclass
class Timed:
    """One child process run: wall time and what the kernel says it used."""

    cmd: list[str]
    rc: Optional[int] = None
    wall_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    maxrss_mb: float = 0.0
    killed: bool = False
    timed_out: bool = False
    log: str = ""
    stdout_tail: str = ""
    extra: dict = field(default_factory=dict)
    started_at: float = 0.0  # epoch seconds (the server stamps its requests the same way)
    ended_at: float = 0.0

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    def as_dict(self) -> dict:
        return {
            "cmd": " ".join(self.cmd),
            "rc": self.rc,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "user_s": round(self.user_s, 3),
            "sys_s": round(self.sys_s, 3),
            "maxrss_mb": round(self.maxrss_mb, 1),
            "killed": self.killed,
            "timed_out": self.timed_out,
            "log": self.log,
        }


def run_timed(
    cmd: list[str],
    *,
    log_path: Path,
    timeout: float,
    cwd: Optional[Path] = None,
    poll: Optional[Callable[[], bool]] = None,
    poll_every: float = 0.02,
    env: Optional[dict] = None,
    stdout_path: Optional[Path] = None,
    own_peak: bool = False,
) -> Timed:
    """Run *cmd*, reap it with wait4 (CPU and peak RSS include the children it
    reaped, e.g. DVD's pool workers).  *poll* is called while it runs; when it
    returns True the child is SIGKILLed (the kill test).  *env* defaults to
    :func:`child_env`; with *stdout_path*, stdout goes there and only stderr to
    *log_path* (a ``--json`` document to parse).

    *own_peak* (a ``[PY, ...]`` command): its peak RSS is the process's own (``VmHWM``,
    through ``peak.py``), not ``wait4``'s, which starts at this process's own high-water
    mark (kept in ``extra["maxrss_wait4_mb"]``)."""
    t = Timed(cmd=list(cmd), log=str(log_path))
    peak_file = log_path.with_suffix(".peak")
    if own_peak:
        assert cmd[0] == PY, "own_peak runs a Python command through peak.py"
        peak_file.unlink(missing_ok=True)
        cmd = [PY, str(HERE / "peak.py"), str(peak_file), *cmd[1:]]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        log = files.enter_context(open(log_path, "wb"))
        out = files.enter_context(open(stdout_path, "wb")) if stdout_path else log
        start = time.monotonic()
        t.started_at = time.time()
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=log if stdout_path else subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(cwd or REPO),
            env=child_env() if env is None else env,
            start_new_session=True,
        )
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now - start > timeout and not t.killed:
                t.timed_out = t.killed = True
                os.killpg(proc.pid, signal.SIGKILL)
            elif poll is not None and not t.killed and poll():
                t.killed = True
                os.kill(proc.pid, signal.SIGKILL)
            time.sleep(poll_every if poll is not None else 0.01)
        t.wall_s = time.monotonic() - start
        t.ended_at = time.time()
        proc.returncode = t.rc = os.waitstatus_to_exitcode(status)
    if t.killed and not t.timed_out:
        # the killed process's pool children (if any) die with its group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    t.user_s, t.sys_s = ru.ru_utime, ru.ru_stime
    t.maxrss_mb = ru.ru_maxrss / 1024.0  # KiB on Linux
    if own_peak:
        t.extra["maxrss_wait4_mb"] = round(t.maxrss_mb, 1)
        try:
            t.maxrss_mb = int(peak_file.read_text()) / 1024.0
            peak_file.unlink()
        except (OSError, ValueError):
            pass  # killed before it could say: wait4's figure stands
    try:
        t.stdout_tail = log_path.read_text(errors="replace")[-4000:]
    except OSError:
        pass
    return t


class Server:
    """``bench_server.py`` in its own process (its CPU is its own, and it
    never competes with the client for a GIL)."""

    def __init__(
        self,
        work: Path,
        *,
        model: str,
        tokens_per_second: Optional[float],
        overhead_s: float,
        version: Optional[str] = None,
    ):
        """``version``: what the server says it is (0.11.0 makes the client ask for base64)."""
        self.version = version
        self.work = work
        self.model = model
        self.tps = tokens_per_second
        self.overhead = overhead_s
        self.proc: Optional[subprocess.Popen] = None
        self.base_url = ""

    def __enter__(self) -> "Server":
        self.work.mkdir(parents=True, exist_ok=True)
        ready = self.work / f"server-{os.getpid()}-{time.monotonic_ns()}.url"
        cmd = [
            PY,
            str(HERE / "bench_server.py"),
            "--model",
            self.model,
            "--ready-file",
            str(ready),
            "--request-overhead",
            str(self.overhead),
        ]
        if self.tps:
            cmd += ["--tokens-per-second", str(self.tps)]
        if self.version:
            cmd += ["--vllm-version", self.version]
        self.log = open(self.work / "server.log", "ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(), cwd=str(REPO)
        )
        deadline = time.monotonic() + 60
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"benchmark server did not start (see {self.work / 'server.log'})")
            time.sleep(0.05)
        self.base_url = ready.read_text().strip()
        ready.unlink()
        return self

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    def stats(self) -> dict:
        with urllib.request.urlopen(self.root_url + "/_bench/stats", timeout=30) as r:
            return json.loads(r.read())

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    try:
        info["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        from importlib.metadata import version

        info["packages"] = {p: version(p) for p in ("nano-vectordb", "openai", "numpy", "orjson")}
        for p in ("requests", "matplotlib"):
            try:
                info["packages"][p] = version(p)
            except Exception:
                info["packages"][p] = None
    except Exception:
        pass
    try:
        info["git_head"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "migrator"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        info["migrator_uncommitted_changes"] = bool(dirty)
    except OSError:
        pass
    return info


def report(
    res: dict, markdown: str, results_dir: Path, name: str, *, what: str, problems: list[str], quick: bool
) -> int:
    """Write ``<name>.json`` and ``.md``, print the tables, and say whether the run was
    well-formed (the exit code of a benchmark script: 1 when it was not)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{name}.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    (results_dir / f"{name}.md").write_text(markdown)
    print(markdown)
    print(f"results: {out}")
    if problems:
        print(f"{what}: NOT well-formed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if quick:
        print(f"quick {what}: every step ran and the outputs are well-formed (no timing assertion)")
    return 0
