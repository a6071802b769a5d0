"""A hostile endpoint: every fault ends in correct databases or a clear stop, never a wrong vector."""

from __future__ import annotations

import json
import socket

import pytest

from dvdcheck import assert_migrated
from helpers import API_KEY, Cli, load_originals, tree_digest
from migrator import api
from migrator.errors import EXIT_ENDPOINT_DOWN, EXIT_ENDPOINT_REJECTED, EXIT_PARTIAL
from migrator.testing.server import FakeVLLM


@pytest.mark.parametrize(
    "kind, params, times",
    [
        ("status", {"status": 429, "retry_after": 1}, 2),
        ("status", {"status": 429}, 2),
        ("status", {"status": 500}, 2),
        ("status", {"status": 502}, 1),
        ("status", {"status": 503}, 3),
        ("html", {"status": 502}, 2),
        ("html", {"status": 200}, 1),
        ("reset", {}, 2),
        ("wrong_dim", {}, 2),
        ("nan", {}, 2),
        ("too_few", {}, 2),
        ("dup_index", {}, 2),
        ("shuffle", {}, 4),
        ("wrong_model", {}, 2),
        ("zero", {}, 1),
    ],
)
@pytest.mark.parametrize("version", ["0.31.0", "0.11.0"], ids=["bytes", "base64"])
def test_transient_faults_are_retried_and_never_written(dvd_tree, tmp_path, key_env, kind, params, times, version):
    """Binary answers (vLLM >= 0.11.1) and base64 JSON ones (older) are checked alike."""
    root, paths = dvd_tree
    originals = load_originals(paths)
    with FakeVLLM(api_key=API_KEY, version=version) as server:
        server.request_log = []
        server.faults.add(kind, times=times, **params)
        # small batches: enough requests for every fault to fire on a different one
        cli = Cli(server.base_url, tmp_path / "state")
        r = cli("run", "--root", str(root), "--model", "8b", "--yes", "--batch-size", "4")
        assert r.exit_code == 0, r.output
        assert server.stats.faults_fired.get(kind) == times
        binary = [req for req in server.request_log if "embed_dtype" in req.fields]
        assert bool(binary) == (version >= "0.11.1")  # it asked for what the server has
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)  # exact vectors: nothing bad was stored


@pytest.mark.parametrize(
    "fault, params",
    [
        (
            "status",
            {
                "status": 400,
                "body": {
                    "error": {
                        "message": "encoding_format: Input should be 'float' or 'base64'",
                        "type": "BadRequestError",
                        "param": "encoding_format",
                        "code": 400,
                    }
                },
            },
        ),
        ("no_metadata", {}),
    ],
    ids=["refused", "header-dropped"],
)
def test_a_server_that_cannot_answer_in_binary_gets_base64(dvd_tree, tmp_path, key_env, fault, params):
    """A proxy in front of vLLM 0.11.1+ may refuse binary answers or drop their header."""
    root, paths = dvd_tree
    originals = load_originals(paths)
    with FakeVLLM(api_key=API_KEY) as server:
        server.request_log = []
        server.faults.add(fault, times=1, **params)
        r = Cli(server.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
        assert r.exit_code == 0, r.output
        assert server.stats.faults_fired.get(fault) == 1
        asked = [("embed_dtype" in req.fields) for req in server.request_log if len(req.texts) > 1]
    # binary until the fault, base64 (no embed_dtype) from the next request on
    first_plain = asked.index(False)
    assert all(asked[:first_plain]) and not any(asked[first_plain:]), asked
    assert "using base64 from now on" in r.output  # said once, where the user sees it
    assert r.output.count("using base64 from now on") == 1
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_persistent_wrong_model_stops_without_touching_files(cli, dvd_tree, server):
    root, _ = dvd_tree
    before = tree_digest(root)
    server.faults.add("wrong_model", times=None)
    r = cli("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_ENDPOINT_REJECTED
    assert "answered by model" in r.stderr
    assert tree_digest(root) == before


def test_bad_key_stops_at_once_and_is_not_echoed(dvd_tree, tmp_path, monkeypatch):
    root, _ = dvd_tree
    monkeypatch.setenv("MIGRATOR_API_KEY", "sk-wrong-key-123456")
    with FakeVLLM(api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
        assert srv.stats.unauthorized >= 1
    assert r.exit_code == EXIT_ENDPOINT_REJECTED
    assert "API key was refused" in r.stderr
    assert "sk-wrong-key" not in r.output and API_KEY not in r.output


def test_endpoint_down_is_a_resumable_exit(dvd_tree, tmp_path, key_env):
    root, _ = dvd_tree
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = Cli(f"http://127.0.0.1:{port}/v1", tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_ENDPOINT_DOWN
    assert "cannot connect" in r.stderr


def test_server_dies_mid_run_then_comes_back(dvd_tree, tmp_path, key_env):
    root, paths = dvd_tree
    originals = load_originals(paths)
    srv = FakeVLLM(api_key=API_KEY).start()
    try:
        # the server answers the probe and a few batches, then every request fails
        srv.faults.add("status", times=None, status=503, match="the")
        r = Cli(srv.base_url, tmp_path / "state")(
            "run", "--root", str(root), "--model", "8b", "--batch-size", "4", "--yes"
        )
        assert r.exit_code == EXIT_ENDPOINT_DOWN, r.output
        assert "run again to resume" in r.stderr
        for p in paths:
            assert json.loads(p.read_text()) == originals[p]
        srv.faults.clear()
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
        assert r.exit_code == 0, r.output
        for p in paths:
            assert_migrated(p, originals[p], dim=4096)
    finally:
        srv.stop()


def test_exact_max_length_input_never_hangs_and_is_reported(tmp_path, key_env):
    """vllm#29496: a prompt of exactly max_model_len tokens hangs the server. We never send one."""
    from migrator.testing.corpus import build_dvd_database

    words = ["word"] * 63  # 63 words + EOS = 64 tokens = max_model_len
    captions = {"0_10": {"caption": " ".join(words)}, "10_20": {"caption": "a short one"}, "subject_registry": {}}
    path = build_dvd_database(tmp_path / "vdb" / "vid", captions)
    with FakeVLLM(api_key=API_KEY, max_model_len=64) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(tmp_path / "vdb"), "--model", "8b", "--yes")
        assert srv.stats.hung == 0
    assert r.exit_code == 0, r.output
    assert "TRUNCATED" in r.stdout
    doc = json.loads(path.read_text())
    assert doc["embedding_dim"] == 4096
    assert doc["data"][0]["__id__"] in r.stdout


def test_an_input_the_server_never_answers_is_isolated_and_named(dvd_tree, tmp_path, key_env):
    root, paths = dvd_tree
    originals = load_originals(paths)
    victim = paths[3]
    rec = originals[victim]["data"][1]
    bare = rec["caption"].split("\n", 1)[1]
    with FakeVLLM(api_key=API_KEY, hang_blocks_others=False) as srv:
        srv.faults.add("hang", times=None, match=bare)
        r = Cli(srv.base_url, tmp_path / "state")(
            "run", "--root", str(root), "--model", "8b", "--yes", "--request-timeout", "1"
        )
    assert r.exit_code == EXIT_PARTIAL, r.output
    assert f"{victim}: record #1 (__id__ {rec['__id__']!r})" in r.stdout
    assert json.loads(victim.read_text()) == originals[victim]  # left as it was
    for p in paths:
        if p != victim:
            assert_migrated(p, originals[p], dim=4096)


def test_old_error_shape_and_float_server(dvd_tree, tmp_path, key_env):
    root, paths = dvd_tree
    originals = load_originals(paths)
    with FakeVLLM(api_key=API_KEY, error_shape="old") as srv:
        srv.faults.add("status", times=1, status=500)
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == 0, r.output
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_a_429_during_a_run_halves_the_runs_in_flight_limit(server, dvd_tree, tmp_path, caplog):
    """The endpoint is built with the run's in-flight limit as its pushback listener: a 429
    mid-run reaches that limit (logged by tuning), and the run still finishes exactly."""
    import logging

    root, paths = dvd_tree
    originals = load_originals(paths)
    caplog.set_level(logging.DEBUG, logger="migrator.vllm.tuning")
    server.faults.add("status", times=2, status=429, retry_after=0)
    result = api.run(
        api.Settings(
            roots=[str(root)], model="8b", endpoint=server.base_url, state_dir=str(tmp_path / "state"), batch_size=4
        )
    )
    assert result.outcome == "done", result.message
    halved = [m for m in caplog.messages if m.startswith("in-flight limit") and "HTTP 429" in m]
    assert halved, [m for m in caplog.messages if "limit" in m or "429" in m][:20]
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)
