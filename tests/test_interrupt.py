"""Stopping a run at any moment and resuming it: SIGKILL, SIGTERM, SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from dvdcheck import assert_migrated
from helpers import API_KEY, run_args, spawn_migrate, tree_digest
from migrator.commands.run import SANITY_TEXTS
from migrator.errors import EXIT_INTERRUPTED
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM

BATCH, CONC = 8, 4


def _committed(state: Path) -> int:
    db = state / "migrator.db"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select coalesce(sum(n_done),0) from databases").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _wait_for(pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def slow_setup(tmp_path, key_env):
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 10, clips=(12, 20), seed=5)
    originals = {p: json.loads(p.read_text()) for p in paths}
    total = sum(len(d["data"]) for d in originals.values())
    # ~10k tokens/s: the run takes a few seconds, long enough to be cut mid-way
    with FakeVLLM(api_key=API_KEY, tokens_per_second=10_000) as srv:
        env = dict(os.environ, MIGRATOR_API_KEY=API_KEY)
        args = [
            *run_args(root, srv.base_url, tmp_path / "state"),
            "--batch-size",
            str(BATCH),
            "--concurrency",
            str(CONC),
            "--yes",
        ]
        yield root, paths, originals, total, srv, env, args, tmp_path / "state"


def test_sigkill_mid_run_then_resume_reembeds_at_most_one_window(slow_setup):
    root, paths, originals, total, srv, env, args, state = slow_setup
    before = {p: p.read_bytes() for p in paths}
    proc = spawn_migrate(*args, env=env)
    assert _wait_for(lambda: _committed(state) >= total // 3), proc.communicate(timeout=5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    done_at_kill = _committed(state)
    assert 0 < done_at_kill < total
    for p in paths:  # nothing swapped yet, nothing damaged
        assert p.read_bytes() == before[p]
    sent_before = srv.stats.inputs_embedded
    proc = spawn_migrate(*args, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "resuming migration" in err
    gate_queries = int(re.search(r"/(\d+) sampled records", err).group(1))  # the quality gate's
    resent = srv.stats.inputs_embedded - sent_before - 1 - SANITY_TEXTS - gate_queries  # minus the probes
    assert resent <= total - done_at_kill + BATCH * CONC, (resent, total, done_at_kill)
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_sigterm_stops_cleanly_and_resumes(slow_setup):
    root, paths, originals, total, srv, env, args, state = slow_setup
    proc = spawn_migrate(*args, env=env)
    assert _wait_for(lambda: _committed(state) >= BATCH)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert "interrupted" in err and "migrate run" in err
    assert not (state / "migrator.lock.json").exists()  # lock released
    done = _committed(state)
    assert done > 0
    proc = spawn_migrate(*args, env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_sigint_is_graceful_too(slow_setup):
    root, paths, originals, total, srv, env, args, state = slow_setup
    before = tree_digest(root)
    proc = spawn_migrate(*args, env=env)
    assert _wait_for(lambda: _committed(state) >= BATCH)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert {k: v for k, v in tree_digest(root).items() if ".migrator-" not in k} == before


def test_ctrl_c_says_what_it_waits_for_and_a_second_one_drops_it(tmp_path, key_env):
    """The first Ctrl-C says at once what it waits for; the second drops the requests in
    flight instead of waiting for them; status then says the run was interrupted."""
    from click.testing import CliRunner

    from migrator.cli import main as cli_main

    root = tmp_path / "video_database"
    build_dvd_tree(root, 6, clips=(12, 20), seed=8)
    state = tmp_path / "state"
    log = state / "migrator.log"
    # every request takes 12 s: nothing in flight finishes by itself during the test
    with FakeVLLM(api_key=API_KEY, request_overhead_s=12.0) as srv:
        env = dict(os.environ, MIGRATOR_API_KEY=API_KEY)
        proc = spawn_migrate(
            *run_args(root, srv.base_url, state),
            "--batch-size",
            "8",
            "--concurrency",
            "2",
            "--yes",
            "--no-quality-gate",
            env=env,
        )
        # the probe and the sanity probe answer slowly too: wait until embedding requests are out
        assert _wait_for(
            lambda: srv.stats.in_flight >= 2 and log.exists() and "sanity probe" in log.read_text(), timeout=150
        ), proc.communicate(timeout=5)
        time.sleep(0.5)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert _wait_for(lambda: "request(s) in flight finish first" in log.read_text(), timeout=3)
        said = time.monotonic() - t0
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - t0
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert said < 3 and stopped < 8, (said, stopped)  # not the 10 s grace, nor the 12 s requests
    assert "Ctrl-C again to drop them" in err and "dropping the requests in flight" in err
    r = CliRunner().invoke(cli_main, ["status", "--state-dir", str(state)])
    first = r.stdout.splitlines()[0]
    assert "interrupted" in first and "embedding" not in first, r.stdout
    assert "`migrate run` resumes it" in r.stdout
