"""`migrate run --serve`: start vLLM for the migration, and stop it afterwards.

The server is ``vllm serve MODEL --runner pooling --max-model-len 8192`` on
127.0.0.1 and a free port, with the GPU index, memory fraction and extra
flags the user passes. vLLM 0.10.0 and older know ``--task embed`` instead of
``--runner pooling``: ``vllm --version`` decides. The server inherits this
process's environment (``VLLM_CPU_*``, ``CUDA_*``, ``HF_*``). The API key goes to it in ``VLLM_API_KEY`` (vLLM reads
it from there), never in its argv, where ``ps`` would show it. Its output goes
to ``<state dir>/vllm.log``. Its ZMQ sockets, which vLLM leaves behind in
``$TMPDIR``, go in a directory of their own there, deleted when it stops (unless
``VLLM_RPC_BASE_PATH`` is set: then they go where it says).

migrator waits for ``/health`` and ``/v1/models``, runs the migration, and
stops the server it started (its own process group: SIGTERM, then SIGKILL
after a grace) on success, on failure and on Ctrl-C. It never signals any
other process, so a vLLM someone else runs is never touched.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from migrator.errors import EndpointUnavailable, UsageError
from migrator.vllm.endpoint import parse_version
from migrator.vllm.http import Http, Unreachable, bearer

log = logging.getLogger("migrator.vllm.serve")

MAX_MODEL_LEN = 8192
STOP_GRACE = 30.0  # seconds between SIGTERM and SIGKILL
RUNNER_SINCE = (0, 10, 1)  # `--runner pooling` from vLLM 0.10.1; `--task embed` before (removed in 0.13)
SOCKET_PATH_MAX = 107  # a Unix socket's path, in bytes (Linux's sun_path less its NUL)
SOCKET_NAME_LEN = 37  # "/" and the uuid4 vLLM names each of its ZMQ sockets by


def vllm_version(exe: str, timeout: float = 180.0) -> tuple[int, ...] | None:
    """``vllm --version`` as a tuple (it imports vLLM: ~10 s), or None if it does not say."""
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in reversed(out.strip().splitlines()):
        version = parse_version(line)
        if version is not None:
            return version
    return None


def served_names(model: str, extra_args: tuple[str, ...]) -> list[str]:
    """The names vLLM will serve ``model`` under: ``--served-model-name`` in the extra flags
    (as ``--served-model-name a b`` or ``--served-model-name=a``), else the model itself."""
    names: list[str] | None = None
    args = list(extra_args)
    for i, a in enumerate(args):
        if a == "--served-model-name":
            names = []
            for b in args[i + 1 :]:
                if b.startswith("-"):
                    break
                names.append(b)
        elif a.startswith("--served-model-name="):
            names = [n for n in a.split("=", 1)[1].replace(",", " ").split() if n]
    return names or [model]


def socket_dir(env: dict) -> Path | None:
    """A directory of its own for a vLLM's ZMQ sockets, set in ``env`` (``VLLM_RPC_BASE_PATH``).

    vLLM makes a socket per process in ``$TMPDIR`` and never removes it (a test run left ~1,500
    in /tmp); the caller deletes this directory once the server has stopped. None, and ``env``
    untouched, where the user chose the place already or the directory's name would be too long
    for a socket path."""
    if env.get("VLLM_RPC_BASE_PATH"):
        return None
    d = Path(tempfile.mkdtemp(prefix="migrator-vllm-"))
    if len(os.fsencode(d)) + SOCKET_NAME_LEN > SOCKET_PATH_MAX:
        d.rmdir()
        return None
    env["VLLM_RPC_BASE_PATH"] = str(d)
    return d


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """Does any process of this process group still exist?"""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), wait
    up to ``grace`` seconds for all of it (vLLM's engine and worker processes outlive its API
    server by seconds), then SIGKILL what is left."""
    pgid = proc.pid
    deadline = time.monotonic() + grace
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    kill_deadline = time.monotonic() + 5
    while group_alive(pgid) and time.monotonic() < kill_deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def _sigterm_interrupts():
    """While vLLM starts, SIGTERM interrupts like Ctrl-C (KeyboardInterrupt), so that the
    server being started is stopped too instead of left running without its owner."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class ManagedServer:
    """A vLLM this process starts and owns (a context manager yielding the base URL)."""

    def __init__(
        self,
        model: str,
        *,
        log_dir: Path,
        api_key: str | None = None,
        gpu: str | None = None,
        memory_fraction: float | None = None,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 1800.0,
        executable: str = "vllm",
        host: str = "127.0.0.1",
        http: Http | None = None,
    ):
        self.model, self.api_key, self.host = model, api_key, host
        self.http = http or Http()  # plain HTTP on 127.0.0.1: nothing to verify
        self.gpu, self.memory_fraction, self.extra_args = gpu, memory_fraction, tuple(extra_args)
        self.startup_timeout, self.executable = startup_timeout, executable
        self.log_path = Path(log_dir) / "vllm.log"
        self.proc: subprocess.Popen | None = None
        self.base_url = ""
        self.version: tuple[int, ...] | None = None
        self.sockets: Path | None = None  # vLLM's ZMQ sockets (socket_dir), removed by stop()

    def command(self, port: int) -> list[str]:
        runner = (
            ["--task", "embed"] if self.version is not None and self.version < RUNNER_SINCE else ["--runner", "pooling"]
        )
        cmd = [
            self.executable,
            "serve",
            self.model,
            *runner,
            "--max-model-len",
            str(MAX_MODEL_LEN),
            "--host",
            self.host,
            "--port",
            str(port),
        ]
        if self.memory_fraction is not None:
            cmd += ["--gpu-memory-utilization", str(self.memory_fraction)]
        return cmd + list(self.extra_args)

    def __enter__(self) -> str:
        with _sigterm_interrupts():
            return self._start()

    def _start(self) -> str:
        exe = shutil.which(self.executable)
        if exe is None:
            raise UsageError(
                f"--serve: no {self.executable!r} on PATH; install vLLM (pip install vllm) "
                f"or start it yourself and pass --endpoint"
            )
        self.version = vllm_version(exe, timeout=min(120.0, self.startup_timeout))
        port = free_port(self.host)
        env = dict(os.environ)  # CPU or GPU settings (VLLM_CPU_*, CUDA_*, HF_*) reach the server
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command(port)
        log.info("starting %s (output in %s)", " ".join(cmd), self.log_path)
        self.sockets = socket_dir(env)
        try:  # from here on, a failure stops what was started and removes the socket directory
            with open(self.log_path, "ab") as out:
                self.proc = subprocess.Popen(
                    [exe, *cmd[1:]],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                )
            self.base_url = f"http://{self.host}:{port}/v1"
            self._wait_ready(f"http://{self.host}:{port}")
        except BaseException:
            self.stop()
            raise
        log.info("vLLM (pid %d) is serving %s at %s", self.proc.pid, self.model, self.base_url)
        return self.base_url

    def _get(self, url: str) -> tuple[int, bytes]:
        """(status, body) of a GET to the server being started; (0, b"") while nothing answers."""
        try:
            answer = self.http.get(url, timeout=5, headers=bearer(self.api_key))
        except Unreachable:
            return 0, b""
        return answer.status, answer.body if answer.status == 200 else b""

    def _wait_ready(self, root: str) -> None:
        assert self.proc is not None  # _start has just started it
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EndpointUnavailable(
                    f"--serve: vllm exited with code {self.proc.returncode} while "
                    f"starting; its output is in {self.log_path}: {self._tail()}"
                )
            status, _ = self._get(root + "/health")
            if status == 200:
                status, body = self._get(root + "/v1/models")
                if status == 200:
                    try:
                        served = [m.get("id") for m in json.loads(body).get("data", [])]
                    except (ValueError, AttributeError):
                        served = []
                    if set(served) & set(served_names(self.model, self.extra_args)):
                        return
            time.sleep(1.0)
        raise EndpointUnavailable(
            f"--serve: vllm did not serve {self.model} within {self.startup_timeout:.0f} s; see {self.log_path}"
        )

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no output)"
        return " | ".join(lines[-3:]) or "(no output)"

    def stop(self) -> None:
        """Stop the server this object started (its process group), if it still runs."""
        p = self.proc
        if p is not None:
            if p.poll() is None:
                log.info("stopping the vLLM we started (pid %d)", p.pid)
            stop_group(p, STOP_GRACE)  # also its engine processes, which outlive it by seconds
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None

    def __exit__(self, *exc) -> None:
        self.stop()
