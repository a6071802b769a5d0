"""The fake vLLM server (migrator.testing.server) against real clients.

Everything goes over real sockets: the openai SDK, urllib and http.client.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest

from migrator.testing.embedder import EOS_ID, embed, embed_tokens, token_strings
from migrator.testing.server import FAULT_KINDS, FakeVLLM

REPO = Path(__file__).resolve().parents[1]
MODEL = "Qwen/Qwen3-Embedding-8B"
DIM = 4096


# --------------------------------------------------------------------------- #
# helpers                                                                     #
# --------------------------------------------------------------------------- #
@pytest.fixture
def srv():
    with FakeVLLM(max_model_len=64) as server:
        yield server


def sdk(server, key="none", timeout=5.0, retries=0):
    return openai.OpenAI(base_url=server.base_url, api_key=key, timeout=timeout, max_retries=retries)


def call(url, body=None, *, method=None, key=None, timeout=5.0):
    """(status, headers, raw body) of one request; HTTP errors are returned too."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def embed_raw(server, body, **kw):
    status, headers, raw = call(server.base_url + "/embeddings", body, **kw)
    return status, headers, raw


def b64_vector(s):
    return np.frombuffer(base64.b64decode(s), dtype="<f4")


def words(n):
    """A text of exactly n tokens (n-1 words + EOS)."""
    return " ".join(f"word{i}" for i in range(n - 1))


TEXTS = ["A man in a gray hoodie walks into the kitchen.", "The camera pans left.", ""]


# --------------------------------------------------------------------------- #
# the happy path                                                              #
# --------------------------------------------------------------------------- #
def test_sdk_base64_and_float_agree_with_the_embedder(srv):
    client = sdk(srv)
    default = client.embeddings.create(model=MODEL, input=TEXTS)  # SDK asks for base64
    floats = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert [d.index for d in default.data] == [0, 1, 2]
    for i, text in enumerate(TEXTS):
        a = np.array(default.data[i].embedding, dtype=np.float32)
        b = np.array(floats.data[i].embedding, dtype=np.float32)
        assert a.shape == (DIM,)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, embed(text, DIM, seed=MODEL))
        assert abs(np.linalg.norm(a) - 1.0) < 1e-5
    assert default.model == MODEL
    assert default.usage.prompt_tokens == sum(len(token_strings(t)) + 1 for t in TEXTS)
    assert default.usage.total_tokens == default.usage.prompt_tokens


def test_bytes_answers_are_vllms_binary_shape():
    """vLLM 0.32's layout (vllm/entrypoints/pooling/utils.py): the arrays back to back, a JSON
    `metadata` header with each input's byte range; bytes_only: no header; big-endian honoured."""
    with FakeVLLM(max_model_len=64, version="0.32.0") as srv:
        status, headers, raw = embed_raw(
            srv, {"input": TEXTS, "encoding_format": "bytes", "embed_dtype": "float32", "endianness": "little"}
        )
        assert status == 200 and headers["Content-Type"] == "application/octet-stream"
        meta = json.loads(headers["metadata"])
        assert set(meta) == {"id", "created", "model", "data", "usage"} and meta["model"] == MODEL
        assert meta["usage"]["prompt_tokens"] == sum(len(token_strings(t)) + 1 for t in TEXTS)
        assert len(raw) == len(TEXTS) * DIM * 4
        for i, item in enumerate(meta["data"]):
            assert item == {
                "index": i,
                "embed_dtype": "float32",
                "endianness": "little",
                "start": i * DIM * 4,
                "end": (i + 1) * DIM * 4,
                "shape": [DIM],
            }
            row = np.frombuffer(raw[item["start"] : item["end"]], dtype="<f4")
            np.testing.assert_array_equal(row, embed(TEXTS[i], DIM, seed=MODEL))
        status, headers, big = embed_raw(srv, {"input": TEXTS[:1], "encoding_format": "bytes", "endianness": "big"})
        np.testing.assert_array_equal(np.frombuffer(big, dtype=">f4"), embed(TEXTS[0], DIM, seed=MODEL))
        status, headers, only = embed_raw(srv, {"input": TEXTS, "encoding_format": "bytes_only"})
        assert status == 200 and headers.get("metadata") is None and only == raw


@pytest.mark.parametrize("version, refused", [("0.11.0", "bytes"), ("0.12.0", "bytes_only")])
def test_binary_formats_only_from_the_versions_that_have_them(version, refused):
    with FakeVLLM(max_model_len=64, version=version) as srv:
        status, _, raw = embed_raw(srv, {"input": "x", "encoding_format": refused})
        assert status == 400 and "encoding_format" in json.loads(raw)["error"]["message"]


def test_raw_response_shape_over_urllib(srv):
    status, headers, raw = embed_raw(srv, {"input": ["one two", "three"], "encoding_format": "base64"})
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(raw)
    body = json.loads(raw)
    assert body["id"].startswith("embd-") and body["object"] == "list"
    assert isinstance(body["created"], int) and body["model"] == MODEL
    assert [(d["index"], d["object"]) for d in body["data"]] == [(0, "embedding"), (1, "embedding")]
    assert body["usage"] == {
        "prompt_tokens": 5,
        "total_tokens": 5,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }
    np.testing.assert_array_equal(b64_vector(body["data"][1]["embedding"]), embed("three", DIM, seed=MODEL))

    status, _, raw = embed_raw(srv, {"input": "one two", "encoding_format": "float"})
    vec = json.loads(raw)["data"][0]["embedding"]
    assert all(type(x) is float for x in vec) and len(vec) == DIM
    assert b"NaN" not in raw and b"Infinity" not in raw
    np.testing.assert_array_equal(
        np.array(vec, dtype=np.float32),
        b64_vector(
            json.loads(embed_raw(srv, {"input": "one two", "encoding_format": "base64"})[2])["data"][0]["embedding"]
        ),
    )


def test_model_may_be_omitted_and_unknown_fields_are_ignored(srv):
    status, _, raw = embed_raw(srv, {"input": "x", "user": "u", "priority": 0, "something_new": {"a": 1}})
    assert status == 200 and json.loads(raw)["model"] == MODEL


def test_token_id_inputs_are_accepted(srv):
    status, _, raw = embed_raw(srv, {"input": [1, 2, 3, EOS_ID]})
    body = json.loads(raw)
    assert status == 200 and len(body["data"]) == 1 and body["usage"]["prompt_tokens"] == 4
    status, _, raw = embed_raw(srv, {"input": [[1, 2], [5, 6, 7]]})
    body = json.loads(raw)
    assert status == 200 and body["usage"]["prompt_tokens"] == 5
    assert [d["index"] for d in body["data"]] == [0, 1]


def test_keep_alive_reuses_one_connection(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    conn.request("GET", "/health")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Length") == "0"
    resp.read()
    sock = conn.sock
    for text in ("one", "two"):
        conn.request("POST", "/v1/embeddings", json.dumps({"input": text}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.version == 11
        assert json.loads(resp.read())["data"][0]["index"] == 0
    assert conn.sock is sock  # never reconnected
    conn.close()


def test_models_card_carries_max_model_len(srv):
    models = sdk(srv).models.list()
    assert [m.id for m in models.data] == [MODEL]
    card = models.data[0]
    assert card.owned_by == "vllm" and card.model_extra["max_model_len"] == 64
    assert card.model_extra["root"] == MODEL and card.model_extra["parent"] is None


def test_tokenize_and_detokenize(srv):
    text = "Hello, world! It's 10:30."
    status, _, raw = call(srv.root_url + "/tokenize", {"model": MODEL, "prompt": text})
    body = json.loads(raw)
    assert status == 200 and body["max_model_len"] == 64
    assert body["count"] == len(token_strings(text)) + 1 == len(body["tokens"]) == 12
    assert body["tokens"][-1] == EOS_ID
    _, _, raw = call(srv.root_url + "/tokenize", {"prompt": text, "add_special_tokens": False})
    assert json.loads(raw)["count"] == 11
    _, _, raw = call(srv.root_url + "/detokenize", {"tokens": body["tokens"]})
    assert json.loads(raw)["prompt"].startswith("Hello , world !")
    status, _, _ = call(srv.root_url + "/tokenize", {"model": "other", "prompt": "x"})
    assert status == 404


def test_health_metrics_and_dead_engine(srv):
    status, headers, raw = call(srv.root_url + "/health")
    assert status == 200 and raw == b""
    sdk(srv).embeddings.create(model=MODEL, input="one two three")
    status, headers, raw = call(srv.root_url + "/metrics")
    text = raw.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:prompt_tokens_total",
        "vllm:kv_cache_usage_perc",
    ):
        assert re.search(rf'^{name}{{.*model_name="{re.escape(MODEL)}".*}} ', text, re.M), name
    assert re.search(r"^vllm:prompt_tokens_total\{.*\} 4\.0$", text, re.M)
    srv.dead = True
    assert call(srv.root_url + "/health")[0] == 503
    call(srv.root_url + "/_admin/health", {"dead": False})
    assert call(srv.root_url + "/health")[0] == 200


# --------------------------------------------------------------------------- #
# auth and errors                                                             #
# --------------------------------------------------------------------------- #
def test_auth_401_body_and_open_endpoints():
    with FakeVLLM(api_key="s3cret-key") as server:
        for key in (None, "wrong"):
            status, headers, raw = embed_raw(server, {"input": "x"}, key=key)
            assert status == 401
            assert json.loads(raw) == {"error": "Unauthorized"}
            assert raw == b'{"error":"Unauthorized"}'  # as Starlette's JSONResponse writes it
        assert call(server.base_url + "/models")[0] == 401
        with pytest.raises(openai.AuthenticationError):
            sdk(server, key="wrong").embeddings.create(model=MODEL, input="x")
        # only /v1/* is protected
        assert call(server.root_url + "/health")[0] == 200
        assert call(server.root_url + "/metrics")[0] == 200
        assert call(server.root_url + "/tokenize", {"prompt": "a b"})[0] == 200
        # the right key works, and is never kept in the stats
        ok = sdk(server, key="s3cret-key").embeddings.create(model=MODEL, input="x")
        assert len(ok.data) == 1
        assert server.stats.unauthorized == 4
        assert "s3cret" not in json.dumps(server.stats.snapshot())
        assert "s3cret" not in repr(server.stats)


@pytest.mark.parametrize("shape", ["new", "old"])
def test_error_shapes_and_unknown_model(shape):
    with FakeVLLM(error_shape=shape) as server:
        status, _, raw = embed_raw(server, {"model": "nope", "input": "x"})
        body = json.loads(raw)
        assert status == 404
        info = body["error"] if shape == "new" else body
        if shape == "old":
            assert body["object"] == "error"
        assert info["message"] == "The model `nope` does not exist."
        assert info["type"] == "NotFoundError" and info["code"] == 404
        with pytest.raises(openai.NotFoundError):
            sdk(server).embeddings.create(model="nope", input="x")


@pytest.mark.parametrize(
    "body",
    [
        {},  # missing input
        {"input": 5},  # wrong type
        {"input": []},  # empty list
        {"input": ["a", 1]},  # mixed list
        {"input": [[1, 2], []]},  # empty token list
        {"input": "x", "encoding_format": "npy"},  # bad format
        {"input": "x", "encoding_format": "bytes", "embed_dtype": "float64"},
        {"input": "x", "encoding_format": "bytes", "endianness": "middle"},
        {"input": "x", "model": 7},
        {"input": "x", "truncate_prompt_tokens": -2},
        {"input": "x", "truncate_prompt_tokens": 65},  # > max_model_len
        b"{not json",
        b"[1, 2]",
    ],
)
def test_schema_errors_are_400_never_422(srv, body):
    status, _, raw = embed_raw(srv, body)
    assert status == 400
    err = json.loads(raw)["error"]
    assert err["code"] == 400 and err["type"] == "BadRequestError" and err["message"]


def test_too_long_input_is_a_400_naming_the_context_length(srv):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(srv).embeddings.create(model=MODEL, input=["short", words(65)])
    assert info.value.status_code == 400
    message = info.value.body["message"]
    assert "context length" in message
    assert "maximum context length is 64 tokens. However, you requested 65 tokens" in message
    assert info.value.body["param"] == "input_tokens"


def test_dimensions_rejected_unless_matryoshka(srv):
    with pytest.raises(openai.BadRequestError) as info:
        sdk(srv).embeddings.create(model=MODEL, input="x", dimensions=256)
    assert "does not support matryoshka representation" in info.value.body["message"]
    with FakeVLLM(matryoshka=True) as server:
        out = sdk(server).embeddings.create(model=MODEL, input="cut me short", dimensions=256)
        vec = np.array(out.data[0].embedding, dtype=np.float32)
        full = embed("cut me short", DIM, seed=MODEL)[:256]
        assert vec.shape == (256,)
        np.testing.assert_allclose(vec, full / np.linalg.norm(full), atol=1e-6)
        assert embed_raw(server, {"input": "x", "dimensions": DIM + 1})[0] == 400


def test_normalize_rejected_by_new_servers_ignored_by_old():
    with FakeVLLM() as server:
        status, _, raw = embed_raw(server, {"input": "x", "normalize": True})
        assert status == 400
        assert "Parameter `normalize` was removed" in json.loads(raw)["error"]["message"]
    with FakeVLLM(reject_normalize=False) as server:
        assert embed_raw(server, {"input": "x", "normalize": True})[0] == 200


# --------------------------------------------------------------------------- #
# the vLLM hang (vllm#29496) and truncation                                   #
# --------------------------------------------------------------------------- #
@pytest.fixture
def blocking_srv():
    """The worst case, worse than any vLLM: a hung request stalls every later one too."""
    with FakeVLLM(max_model_len=64, hang_blocks_others=True) as server:
        yield server


def test_exact_max_len_input_hangs_and_blocks_later_requests(blocking_srv):
    srv = blocking_srv
    client = sdk(srv, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.embeddings.create(model=MODEL, input=["fine", words(64)])
    assert time.monotonic() - started >= 0.9
    assert call(srv.root_url + "/health", timeout=2)[0] == 200  # health still looks fine
    with pytest.raises(openai.APITimeoutError):  # ...but everything queues behind it
        sdk(srv, timeout=0.5).embeddings.create(model=MODEL, input="short")
    assert srv.stats.hung == 2
    assert srv.stats.embedding_ok == 0
    # restarting the server (same port) clears the stall, as restarting vLLM does
    base_url = srv.base_url
    srv.stop()
    srv.start()
    assert srv.base_url == base_url
    assert len(sdk(srv).embeddings.create(model=MODEL, input="short").data) == 1


def test_hang_without_blocking_others():
    with FakeVLLM(max_model_len=64, hang_blocks_others=False) as server:
        with pytest.raises(openai.APITimeoutError):
            sdk(server, timeout=0.5).embeddings.create(model=MODEL, input=words(64))
        assert len(sdk(server).embeddings.create(model=MODEL, input="short").data) == 1


def test_truncate_prompt_tokens_avoids_the_hang(srv):
    text = words(64)  # exactly max_model_len
    out = sdk(srv, timeout=2).embeddings.create(
        model=MODEL, input=[text, words(500)], extra_body={"truncate_prompt_tokens": 63}
    )
    assert out.usage.prompt_tokens == 63 * 2
    # the first 62 word tokens + EOS are kept
    expect = embed_tokens(token_strings(text)[:62], DIM, seed=MODEL)
    np.testing.assert_array_equal(np.array(out.data[0].embedding, dtype=np.float32), expect)
    np.testing.assert_array_equal(np.array(out.data[1].embedding, dtype=np.float32), expect)
    # -1 means max_model_len: an over-long input is cut to exactly 64 tokens and hangs
    with pytest.raises(openai.APITimeoutError):
        sdk(srv, timeout=0.5).embeddings.create(model=MODEL, input=words(80), extra_body={"truncate_prompt_tokens": -1})


def test_stop_does_not_hang_while_a_request_is_stuck():
    server = FakeVLLM(max_model_len=16).start()
    errors = []

    def stuck():
        try:
            sdk(server, timeout=30).embeddings.create(model=MODEL, input=words(16))
        except Exception as exc:  # noqa: BLE001 - any failure is the point
            errors.append(exc)

    worker = threading.Thread(target=stuck)
    worker.start()
    deadline = time.monotonic() + 5
    while server.stats.hung == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.stats.hung == 1
    started = time.monotonic()
    server.stop()
    worker.join(timeout=5)
    assert time.monotonic() - started < 3
    assert not worker.is_alive()
    assert errors and isinstance(errors[0], openai.APIConnectionError)


# --------------------------------------------------------------------------- #
# faults                                                                      #
# --------------------------------------------------------------------------- #
def test_fault_kinds_are_validated(srv):
    assert set(FAULT_KINDS) == {
        "status",
        "html",
        "reset",
        "hang",
        "delay",
        "wrong_dim",
        "nan",
        "too_few",
        "dup_index",
        "shuffle",
        "wrong_model",
        "garbage",
        "misorder",
        "zero",
        "no_metadata",
    }
    with pytest.raises(ValueError):
        srv.faults.add("explode")
    with pytest.raises(ValueError):
        srv.faults.add("status", statuss=500)
    assert len(srv.faults) == 0


def test_status_fault_with_retry_after(srv):
    srv.faults.add("status", status=503, retry_after=7)
    status, headers, raw = embed_raw(srv, {"input": "x"})
    assert status == 503 and headers["Retry-After"] == "7"
    assert json.loads(raw)["error"]["code"] == 503
    assert embed_raw(srv, {"input": "x"})[0] == 200  # times=1: consumed
    srv.faults.add("status", status=500, body="upstream exploded")
    status, headers, raw = embed_raw(srv, {"input": "x"})
    assert status == 500 and raw == b"upstream exploded"


def test_sdk_retries_a_429_and_honours_retry_after(srv):
    srv.faults.add("status", status=429, retry_after=0.1)
    out = sdk(srv, retries=2).embeddings.create(model=MODEL, input="x")
    assert len(out.data) == 1
    assert srv.stats.embedding_requests == 2 and srv.stats.faults_fired == {"status": 1}


def test_html_faults(srv):
    srv.faults.add("html")
    status, headers, raw = embed_raw(srv, {"input": "x"})
    assert status == 502 and headers["Content-Type"].startswith("text/html")
    assert b"502 Bad Gateway" in raw
    srv.faults.add("html", status=200)
    status, headers, raw = embed_raw(srv, {"input": "x"})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert raw.lstrip().startswith(b"<!DOCTYPE html>")


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_reset_fault_drops_the_connection(srv, stage):
    srv.faults.add("reset", stage=stage)
    with pytest.raises((http.client.HTTPException, ConnectionError, urllib.error.URLError)):
        embed_raw(srv, {"input": "x"})
    srv.faults.add("reset", stage=stage)
    with pytest.raises(openai.APIConnectionError):
        sdk(srv).embeddings.create(model=MODEL, input="x")
    assert srv.stats.faults_fired["reset"] == 2
    assert embed_raw(srv, {"input": "x"})[0] == 200


def test_hang_and_delay_faults(srv):
    srv.faults.add("hang")
    with pytest.raises(openai.APITimeoutError):
        sdk(srv, timeout=0.5).embeddings.create(model=MODEL, input="x")
    srv.faults.add("delay", seconds=0.3)
    started = time.monotonic()
    out = sdk(srv).embeddings.create(model=MODEL, input="x")
    assert time.monotonic() - started >= 0.3
    np.testing.assert_array_equal(np.array(out.data[0].embedding, dtype=np.float32), embed("x", DIM, seed=MODEL))


def _data(server, inputs, fmt="float"):
    status, _, raw = embed_raw(server, {"input": inputs, "encoding_format": fmt})
    assert status == 200
    return json.loads(raw), raw


def test_vector_faults(srv):
    inputs = ["alpha beta", "gamma delta", "epsilon"]
    expect = [embed(t, DIM, seed=MODEL) for t in inputs]

    srv.faults.add("wrong_dim")
    body, _ = _data(srv, inputs)
    assert {len(d["embedding"]) for d in body["data"]} == {DIM // 2}

    srv.faults.add("nan")
    body, raw = _data(srv, inputs)
    assert b"NaN" in raw and np.isnan(body["data"][0]["embedding"][0])
    srv.faults.add("nan", value="inf", item=1)
    body, raw = _data(srv, inputs)
    assert b"Infinity" in raw and np.isinf(body["data"][1]["embedding"][0])
    srv.faults.add("nan")
    body, _ = _data(srv, inputs, fmt="base64")
    assert np.isnan(b64_vector(body["data"][0]["embedding"])).any()

    srv.faults.add("zero", item=2)
    body, _ = _data(srv, inputs)
    assert not np.any(body["data"][2]["embedding"])

    srv.faults.add("garbage")
    body, _ = _data(srv, inputs)
    for d, e in zip(body["data"], expect):
        v = np.array(d["embedding"])
        assert abs(np.linalg.norm(v) - 1) < 1e-5 and abs(v @ e) < 0.2

    srv.faults.add("wrong_model")
    body, _ = _data(srv, inputs)
    assert body["model"] != MODEL
    v = np.array(body["data"][0]["embedding"], dtype=np.float32)
    assert abs(v @ expect[0]) < 0.3
    np.testing.assert_array_equal(v, embed(inputs[0], DIM, seed=body["model"]))


def test_item_faults(srv):
    inputs = ["alpha beta", "gamma delta", "epsilon", "zeta eta"]
    srv.faults.add("too_few")
    assert len(_data(srv, inputs)[0]["data"]) == 3

    srv.faults.add("dup_index")
    indexes = [d["index"] for d in _data(srv, inputs)[0]["data"]]
    assert len(indexes) == 4 and len(set(indexes)) == 3

    srv.faults.add("shuffle")
    data = _data(srv, inputs)[0]["data"]
    indexes = [d["index"] for d in data]
    assert indexes != sorted(indexes) and sorted(indexes) == [0, 1, 2, 3]
    for d in data:  # complete and valid once re-sorted by index
        np.testing.assert_array_equal(
            np.array(d["embedding"], dtype=np.float32), embed(inputs[d["index"]], DIM, seed=MODEL)
        )
    # the SDK does not re-sort: the client has to
    srv.faults.add("shuffle")
    out = sdk(srv).embeddings.create(model=MODEL, input=inputs)
    assert [d.index for d in out.data] != [0, 1, 2, 3]


def test_match_and_times(srv):
    rule = srv.faults.add("status", times=2, status=500, match="POISON")
    assert embed_raw(srv, {"input": ["clean", "text"]})[0] == 200
    assert embed_raw(srv, {"input": ["clean", "has POISON in it"]})[0] == 500
    assert embed_raw(srv, {"input": "POISON again"})[0] == 500
    assert embed_raw(srv, {"input": "POISON third"})[0] == 200
    assert rule.fired == 2 and len(srv.faults) == 0
    srv.faults.add("status", times=None, status=502)
    for _ in range(3):
        assert embed_raw(srv, {"input": "x"})[0] == 502
    srv.faults.clear()
    assert embed_raw(srv, {"input": "x"})[0] == 200


def test_admin_http_faults_and_stats_are_unprotected():
    with FakeVLLM(api_key="k") as server:
        status, _, raw = call(server.root_url + "/_admin/faults", {"kind": "status", "status": 503, "times": 5})
        assert status == 200 and json.loads(raw)["pending"] == 1
        assert embed_raw(server, {"input": "x"}, key="k")[0] == 503
        assert call(server.root_url + "/_admin/faults", method="DELETE")[0] == 200
        assert embed_raw(server, {"input": "x"}, key="k")[0] == 200
        assert call(server.root_url + "/_admin/faults", {"kind": "bogus"})[0] == 400
        status, _, raw = call(server.root_url + "/_admin/stats")
        stats = json.loads(raw)
        assert status == 200
        assert stats["embedding_requests"] == 2 and stats["embedding_ok"] == 1
        assert stats["batch_sizes"] == [1, 1] and stats["status_counts"]["503"] == 1


# --------------------------------------------------------------------------- #
# stats and the cost model                                                    #
# --------------------------------------------------------------------------- #
def test_stats_count_requests_inputs_and_tokens(srv):
    client = sdk(srv)
    client.embeddings.create(model=MODEL, input=["a b", "c"])
    client.embeddings.create(model=MODEL, input="d e f")
    embed_raw(srv, {"input": ["x", words(65)]})  # 400: parsed but not answered
    snap = srv.stats.snapshot()
    assert snap["embedding_requests"] == 3 and snap["embedding_ok"] == 2
    assert snap["batch_sizes"] == [2, 1, 2]
    assert snap["inputs_embedded"] == 3
    assert snap["prompt_tokens"] == 3 + 2 + 4
    assert snap["status_counts"] == {"200": 2, "400": 1}


def test_cost_model_shares_capacity_between_concurrent_requests():
    with FakeVLLM(tokens_per_second=400) as server:
        text = words(50)  # 50 tokens: 0.125 s alone
        started = time.monotonic()
        sdk(server).embeddings.create(model=MODEL, input=text)
        alone = time.monotonic() - started
        assert 0.1 <= alone < 0.5

        def one():
            sdk(server).embeddings.create(model=MODEL, input=text)

        threads = [threading.Thread(target=one) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together = time.monotonic() - started
        assert server.stats.max_in_flight >= 3
        assert 0.45 <= together < 1.5  # 200 tokens at 400 tokens/s, shared


# --------------------------------------------------------------------------- #
# process mode                                                                #
# --------------------------------------------------------------------------- #
def _spawn(tmp_path, *extra, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    ready = tmp_path / "ready.txt"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migrator.testing.server",
            "--port",
            "0",
            "--model",
            "Qwen/Qwen3-Embedding-0.6B",
            "--max-model-len",
            "128",
            "--ready-file",
            str(ready),
            *extra,
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, ready


def test_server_process_mode(tmp_path):
    key = "process-key-123"
    proc, ready = _spawn(
        tmp_path, "--api-key-env", "FAKE_VLLM_TEST_KEY", "--error-shape", "old", env_extra={"FAKE_VLLM_TEST_KEY": key}
    )
    try:
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.02)
        base_url = ready.read_text().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", base_url)
        assert key not in " ".join(proc.args)
        client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=5)
        out = client.embeddings.create(model="Qwen/Qwen3-Embedding-0.6B", input="hello")
        assert len(out.data[0].embedding) == 1024
        status, _, raw = call(base_url + "/embeddings", {"input": "x"})
        assert status == 401 and json.loads(raw) == {"error": "Unauthorized"}
        status, _, raw = call(base_url + "/embeddings", {"input": "x", "model": "m"}, key=key)
        assert status == 404 and json.loads(raw)["object"] == "error"  # old shape
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    first = err.splitlines()[0]
    assert first == (
        "fake vLLM (migrator test server, not a real model) listening on "
        f"{base_url} model=Qwen/Qwen3-Embedding-0.6B dim=1024"
    )
    assert key not in err


def test_server_process_refuses_a_missing_key_variable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NO_SUCH_KEY_VAR"}
    proc = subprocess.run(
        [sys.executable, "-m", "migrator.testing.server", "--api-key-env", "NO_SUCH_KEY_VAR"],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 2 and "NO_SUCH_KEY_VAR" in proc.stderr
