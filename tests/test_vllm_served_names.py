"""What a real vLLM showed, on the fast stand-in: served names and aliases, a model it does
not serve, a tokenizer without EOS, a chat model, `endianness`, and the hang of 0.9.2-0.31
(aborted when its client goes, while other requests go on)."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from dvdcheck import assert_migrated
from helpers import API_KEY, Cli, tree_digest
from migrator.errors import EXIT_ENDPOINT_REJECTED
from migrator.testing.corpus import build_dvd_tree
from migrator.testing.server import FakeVLLM

QWEN_8B = "Qwen/Qwen3-Embedding-8B"
QWEN_06 = "Qwen/Qwen3-Embedding-0.6B"


def _tree(tmp_path, n=2):
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, n, clips=(3, 6), seed=4)
    return root, paths


@pytest.mark.parametrize(
    "names, model",
    [
        (["qwen3-embed", QWEN_8B], "8b"),  # answers name the alias (the first name)
        ([QWEN_8B, "qwen3-embed"], "8b"),
        (["qwen3-embed", QWEN_8B], "qwen3-embed"),  # --model given as the alias
        (["qwen3-embed"], "8b"),  # one alias only: matched by the card's root
        (["qwen3-embed"], "qwen3-embed"),
    ],
)
def test_any_served_name_answers_for_the_model(tmp_path, key_env, names, model):
    root, paths = _tree(tmp_path)
    originals = {p: json.loads(p.read_text()) for p in paths}
    with FakeVLLM(model=QWEN_8B, served_names=names, api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        r = cli("plan", "--root", str(root), "--model", model, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["endpoint"]["model"] == QWEN_8B  # recorded by its identity
        r = cli("run", "--root", str(root), "--model", model, "--yes")
        assert r.exit_code == 0, r.output
        r = cli("status", "--json")
        assert json.loads(r.stdout)["migrations"][0]["model"] == QWEN_8B
    for p in paths:
        assert_migrated(p, originals[p], dim=4096)


def test_a_model_named_nowhere_is_never_replaced_by_the_served_one(tmp_path, key_env):
    """The bug: `--model text-embedding-3-large` against a server of 0.6B alone migrated
    everything to 1024 dims and exited 0."""
    root, _ = _tree(tmp_path)
    before = tree_digest(root)
    with FakeVLLM(model=QWEN_06, api_key=API_KEY) as srv:
        cli = Cli(srv.base_url, tmp_path / "state")
        for args in (("run", "--yes"), ("plan",), ("plan", "--json")):
            r = cli(args[0], "--root", str(root), "--model", "text-embedding-3-large", *args[1:])
            assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
            assert "text-embedding-3-large" in r.output and QWEN_06 in r.output
        assert srv.stats.snapshot()["embedding_requests"] == 0
    assert tree_digest(root) == before


def test_another_qwen_size_under_an_alias_is_refused_by_its_dimension(tmp_path, key_env):
    root, _ = _tree(tmp_path)
    before = tree_digest(root)
    with FakeVLLM(model=QWEN_06, served_names=["embed"], root="/models/some-embedder", api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_ENDPOINT_REJECTED and "1024-dim" in r.output and "4096" in r.output
    assert tree_digest(root) == before


def test_a_tokenizer_that_does_not_append_eos_is_refused(tmp_path, key_env):
    """A stale Qwen3-Embedding snapshot (QwenLM/Qwen3-Embedding#54) gives other vectors silently."""
    root, _ = _tree(tmp_path)
    before = tree_digest(root)
    with FakeVLLM(model=QWEN_8B, appends_eos=False, api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
    assert "does not append <|endoftext|>" in r.output and "update the model snapshot" in r.output
    assert tree_digest(root) == before


@pytest.mark.parametrize("version", ["0.11.0", "0.33.0"])
def test_a_chat_model_is_named_as_such(tmp_path, key_env, version):
    """0.11 answers 400 "does not support Embeddings API"; 0.33 has no route (404)."""
    root, _ = _tree(tmp_path)
    with FakeVLLM(model=QWEN_8B, runner="generate", version=version, api_key=API_KEY) as srv:
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
    assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
    assert "not an embedding model" in r.output and "--runner pooling" in r.output
    assert "check --model" not in r.output


@pytest.mark.parametrize("version, sent", [("0.32.0", True), ("0.11.1", True), ("0.11.0", False), ("0.8.5", False)])
def test_little_endian_is_asked_for_where_the_server_knows_the_field(tmp_path, key_env, version, sent):
    root, paths = _tree(tmp_path, 1)
    with FakeVLLM(model=QWEN_8B, version=version, api_key=API_KEY) as srv:
        srv.request_log = []
        r = Cli(srv.base_url, tmp_path / "state")("run", "--root", str(root), "--model", "8b", "--yes")
        assert r.exit_code == 0, r.output
        fields = [set(req.fields) for req in srv.request_log]
    assert fields and all(("endianness" in f) == sent for f in fields)


def _post(url: str, doc: dict, timeout: float):
    req = urllib.request.Request(
        url, data=json.dumps(doc).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def _exact(srv: FakeVLLM) -> str:
    """A text of exactly max_model_len tokens (EOS included) for the stand-in's tokenizer."""
    return " ".join(["word"] * (srv.max_model_len - 1))


def test_no_hang_at_exactly_max_model_len_on_0_32():
    with FakeVLLM(model=QWEN_8B, max_model_len=64, version="0.32.0") as srv:
        status, doc = _post(srv.base_url + "/embeddings", {"input": [_exact(srv)]}, timeout=10)
    assert status == 200 and doc["usage"]["prompt_tokens"] == 64


def test_the_hang_of_0_31_is_aborted_when_its_client_goes_and_others_go_on():
    with FakeVLLM(model=QWEN_8B, max_model_len=64, version="0.31.0") as srv:
        with pytest.raises((socket.timeout, TimeoutError, urllib.error.URLError)):
            _post(srv.base_url + "/embeddings", {"input": [_exact(srv)]}, timeout=1.0)
        status, _ = _post(srv.base_url + "/embeddings", {"input": ["other work goes on"]}, timeout=10)
        assert status == 200
        deadline = time.monotonic() + 10
        while srv.stats.snapshot().get("hung", 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        snap = srv.stats.snapshot()
        assert snap["hung"] == 0 and snap["hangs_aborted"] == 1


def test_the_answer_names_the_first_served_name_and_errors_use_0_32_words():
    with FakeVLLM(model=QWEN_8B, served_names=["a", "b"], max_model_len=64, version="0.32.0") as srv:
        _, doc = _post(srv.base_url + "/embeddings", {"model": "b", "input": ["x"]}, timeout=10)
        assert doc["model"] == "a"
        req = urllib.request.Request(
            srv.base_url + "/embeddings",
            method="POST",
            data=json.dumps({"input": ["w " * 100]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        err = json.loads(e.value.read())["error"]
        assert e.value.code == 400 and "your prompt contains at least 65 input tokens" in err["message"]
        with urllib.request.urlopen(srv.base_url + "/models", timeout=10) as r:
            cards = json.loads(r.read())["data"]
        assert [c["id"] for c in cards] == ["a", "b"] and {c["root"] for c in cards} == {QWEN_8B}
