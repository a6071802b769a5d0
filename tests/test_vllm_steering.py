"""Queue backoff: vLLM's /metrics shows a queue, the run lowers its in-flight cap.

Real FakeVLLM servers on 127.0.0.1, real HTTP, real threads; no mocks and no
assertions about how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import urllib.error
import urllib.request

import pytest

from helpers import MIGRATE
from migrator.testing.server import FakeVLLM
from migrator.vllm.steering import QUEUE_START_CAP, RUNNING, WAITING, Control, Throttle, metrics_url_for, parse_metric
from migrator.vllm.tuning import AdaptiveLimit

MODEL = "Qwen/Qwen3-Embedding-8B"

# What vLLM 0.11 (V1 engine, two data-parallel engines) writes, abridged; label order and
# the _by_reason gauge as seen in the wild.
REAL = f"""\
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{{generation="0"}} 12345.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{{engine="0",model_name="{MODEL}"}} 16.0
vllm:num_requests_running{{engine="1",model_name="{MODEL}"}} 14.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{{engine="0",model_name="{MODEL}"}} 8.0
vllm:num_requests_waiting{{model_name="{MODEL}",engine="1"}} 3.0
# HELP vllm:num_requests_waiting_by_reason Number of requests waiting, by reason.
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{{engine="0",model_name="{MODEL}",reason="capacity"}} 100.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{{engine="0",model_name="{MODEL}"}} 0.42
"""


# ------------------------------------------------------------------ helpers
@pytest.fixture
def srv():
    with FakeVLLM() as server:
        yield server


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.DEBUG, logger="migrator.vllm.steering")
    return caplog


def records(caplog, level, text=""):
    return [
        r
        for r in caplog.records
        if r.name == "migrator.vllm.steering" and r.levelno == level and text in r.getMessage()
    ]


def get(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def watching(tmp_path, url, limit=4, **kw) -> Control:
    """A Control that looks at /metrics on every refresh (interval 0)."""
    return Control(tmp_path, metrics_url=url, queue_limit=limit, metrics_interval=0, **kw)


def step(control: Control) -> int | None:
    """One look at the files and /metrics, synchronously, as refresh() would apply it;
    the in-flight cap in force after it."""
    return control.check_now()


def refresh_until(control: Control, done, what: str, deadline: float = 20.0) -> None:
    """Drive refresh() the way the runner does (before each request) until done() holds."""
    end = time.monotonic() + deadline
    while not done():
        assert time.monotonic() < end, f"never happened: {what}"
        control.refresh()
        time.sleep(0.005)


# ------------------------------------------------------------------ the parser
def test_parser_sums_every_engine_and_skips_everything_else():
    assert parse_metric(REAL, WAITING) == 11.0  # not the 100 of ..._by_reason
    assert parse_metric(REAL, RUNNING) == 30.0
    assert parse_metric(REAL, "vllm:kv_cache_usage_perc") == pytest.approx(0.42)
    assert parse_metric(REAL, "vllm:prompt_tokens_total") is None
    assert parse_metric("", WAITING) is None
    assert parse_metric("<html><body>Sign in</body></html>", WAITING) is None


def test_parser_copes_with_awkward_but_valid_lines():
    text = "\n".join(
        [
            WAITING + '{engine="0",model_name="a} b \\"q\\""} 2 1712345678000',  # '}' and quotes in a label, timestamp
            f"{WAITING} 3",  # no labels
            f'{WAITING}{{engine="2",model_name="m"}} NaN',  # skipped
            f'{WAITING}{{engine="3",model_name="m"}} 1e1',
            f'{WAITING}{{engine="4",model_name="m"}} garbage',  # skipped
            f"  # {WAITING} 1000",  # a comment
        ]
    )
    assert parse_metric(text, WAITING) == 15.0


def test_metrics_url_from_the_endpoint():
    assert metrics_url_for("http://gpu:8000/v1") == "http://gpu:8000/metrics"
    assert metrics_url_for("http://gpu:8000/v1/") == "http://gpu:8000/metrics"
    assert metrics_url_for("https://gpu.lan/vllm/v1") == "https://gpu.lan/vllm/metrics"
    assert metrics_url_for("http://gpu:8000") == "http://gpu:8000/metrics"


# ------------------------------------------------------------------ the fake server
def test_fake_metrics_in_vllm_format_with_other_tenants(srv):
    status, text = get(srv.root_url + "/metrics")
    assert status == 200
    assert f"# TYPE {WAITING} gauge" in text and f"# TYPE {RUNNING} gauge" in text
    assert f'{WAITING}{{engine="0",model_name="{MODEL}"}} 0.0' in text.splitlines()
    srv.other_waiting, srv.other_running, srv.engines = 7, 3, 2
    text = get(srv.root_url + "/metrics")[1]
    assert f'{WAITING}{{engine="0",model_name="{MODEL}"}} 4.0' in text.splitlines()
    assert f'{WAITING}{{engine="1",model_name="{MODEL}"}} 3.0' in text.splitlines()
    assert (parse_metric(text, WAITING), parse_metric(text, RUNNING)) == (7.0, 3.0)
    # the same from another process's point of view
    assert get(srv.root_url + "/_admin/queue", {"waiting": 12, "engines": 3}) == (
        200,
        json.dumps({"waiting": 12, "running": 3, "engines": 3}, separators=(",", ":")),
    )
    text = get(srv.root_url + "/metrics")[1]
    assert parse_metric(text, WAITING) == 12.0 and text.count(f"{WAITING}{{") == 3
    assert json.loads(get(srv.root_url + "/_admin/queue")[1])["waiting"] == 12
    for bad in ({"waiting": -1}, {"engines": 0}, {"waiting": "5"}, {"queue": 1}):
        assert get(srv.root_url + "/_admin/queue", bad)[0] == 400, bad
    assert srv.other_waiting == 12


def test_fake_metrics_count_its_own_running_requests():
    import openai

    with FakeVLLM(request_overhead_s=0.3) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)

        async def main():
            task = asyncio.create_task(asyncio.to_thread(client.embeddings.create, model=MODEL, input="one two three"))
            seen = 0.0
            while not task.done():
                seen = max(seen, parse_metric(get(server.root_url + "/metrics")[1], RUNNING))
                await asyncio.sleep(0.01)
            await task
            return seen

        assert asyncio.run(main()) == 1.0
        assert parse_metric(get(server.root_url + "/metrics")[1], RUNNING) == 0.0


# ------------------------------------------------------------------ backing off
def test_queue_above_the_limit_halves_the_cap_and_a_drained_one_lifts_it(srv, tmp_path, logs):
    control = watching(tmp_path, srv.root_url + "/metrics", limit=4)
    assert step(control) is None and control.throttle == Throttle()  # 0 waiting: nothing
    srv.other_waiting, srv.engines = 9, 2  # 5 + 4, over two engines
    caps = [step(control) for _ in range(5)]
    assert caps == [QUEUE_START_CAP // 2, 4, 2, 1, 1]  # never below 1
    assert control.throttle.max_in_flight == control.max_in_flight == 1
    assert control.queue.waiting == 9
    assert len(records(logs, logging.INFO, "backing off")) == 1
    assert "9 requests waiting" in records(logs, logging.INFO, "backing off")[0].getMessage()
    srv.other_waiting = 4  # at the limit is fine
    caps = [step(control) for _ in range(11)]
    assert caps == [2, 3, 4, 5, 6, 7, 8, 10, 12, 15, None]
    assert control.throttle == Throttle()
    ends = records(logs, logging.INFO, "backoff ends")
    assert len(ends) == 1 and "lowest cap 1" in ends[0].getMessage()
    assert not records(logs, logging.WARNING)


def test_the_throttle_file_and_the_queue_cap_combine(srv, tmp_path):
    (tmp_path / "THROTTLE").write_text("max_in_flight = 6\ntokens_per_second = 900\n")
    control = watching(tmp_path, srv.root_url + "/metrics", limit=0)
    assert step(control) == 6  # the file's cap, no queue
    assert control.queue.cap is None
    assert control.throttle == Throttle(max_in_flight=6, tokens_per_second=900)
    srv.other_waiting = 1
    assert step(control) == 3  # half of the operator's 6
    assert control.throttle == Throttle(max_in_flight=3, tokens_per_second=900)
    srv.other_waiting = 0
    assert [step(control) for _ in range(3)] == [4, 5, 6]  # back up to the file's 6
    assert control.queue.cap is None
    assert control.throttle == Throttle(max_in_flight=6, tokens_per_second=900)
    srv.other_waiting = 50
    assert step(control) == 3
    throttle = tmp_path / "THROTTLE"
    mtime = throttle.stat().st_mtime_ns
    throttle.write_text("max_in_flight = 2\n")  # the operator tightens
    os.utime(throttle, ns=(mtime + 10**9, mtime + 10**9))
    srv.other_waiting = 0
    assert step(control) == 2 and control.queue.cap is None  # 3 -> 4 > the file's 2: lifted
    assert control.throttle == Throttle(max_in_flight=2)
    srv.other_waiting = 1
    assert step(control) == 1 and control.throttle == Throttle(max_in_flight=1)


def test_the_runners_line_applies_it_to_the_adaptive_limit(srv, tmp_path):
    """Embedder._embed_request does `self.limit.set_cap(self.control.throttle.max_in_flight)`."""
    control = watching(tmp_path, srv.root_url + "/metrics", limit=2)

    async def main():
        limit = AdaptiveLimit(start=12, maximum=64)
        limit.set_cap(control.throttle.max_in_flight)
        before = limit.allowed
        srv.other_waiting = 3
        step(control)
        limit.set_cap(control.throttle.max_in_flight)
        during = limit.allowed
        srv.other_waiting = 0
        while control.max_in_flight is not None:
            step(control)
        limit.set_cap(control.throttle.max_in_flight)
        return before, during, limit.allowed

    assert asyncio.run(main()) == (12, 8, 12)


def test_refresh_reads_metrics_in_the_background(srv, tmp_path, logs):
    """The path the runner takes: refresh() before each request, never waiting for /metrics."""
    control = watching(tmp_path, srv.root_url + "/metrics", limit=4)
    srv.other_waiting = 20
    caps = []

    def low():
        caps.append(control.max_in_flight)
        return control.max_in_flight == 1

    refresh_until(control, low, "backed off to 1")
    seen = [c for c in caps if c is not None]
    assert seen == sorted(seen, reverse=True) and seen[0] <= QUEUE_START_CAP // 2
    srv.other_waiting = 0
    refresh_until(control, lambda: control.max_in_flight is None, "cap lifted")
    assert len(records(logs, logging.INFO, "backing off")) == 1
    assert len(records(logs, logging.INFO, "backoff ends")) == 1
    assert not records(logs, logging.WARNING)


def test_a_silent_metrics_server_never_blocks_refresh(tmp_path, logs):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # accepts connections, never answers
    port = listener.getsockname()[1]
    listener.settimeout(20)
    control = watching(tmp_path, f"http://127.0.0.1:{port}/metrics", metrics_timeout=60)
    try:
        control.refresh()
        pending = control.queue._pending
        control.refresh()  # refresh() does not wait for it
        assert control.queue._pending is pending and control.queue.checks == 0
        conn, _ = listener.accept()  # the GET, from its own thread
        conn.recv(4096)
        assert not pending.done() and control.max_in_flight is None
        conn.close()  # hang up without an answer
    finally:
        listener.close()
    refresh_until(control, lambda: control.queue.checks >= 1, "the hang-up noticed")
    assert control.max_in_flight is None
    warnings = records(logs, logging.WARNING)
    assert len(warnings) == 1 and "no HTTP answer" in warnings[0].getMessage()


# ------------------------------------------------------------------ no metrics
@pytest.mark.parametrize("path, why", [("/no-such-metrics", "HTTP 404"), ("/version", f"no {WAITING}")])
def test_metrics_missing_means_no_cap_and_one_warning(srv, tmp_path, logs, path, why):
    srv.other_waiting = 100
    control = watching(tmp_path, srv.root_url + path)
    refresh_until(control, lambda: control.queue.checks >= 4, "four looks")
    assert control.max_in_flight is None and control.throttle == Throttle()
    warnings = records(logs, logging.WARNING)
    assert len(warnings) == 1 and why in warnings[0].getMessage()
    assert "carries on" in warnings[0].getMessage()


def test_server_down_means_no_cap_one_warning_and_it_recovers(tmp_path, logs):
    server = FakeVLLM().start()
    url = server.root_url + "/metrics"
    server.other_waiting = 30
    control = watching(tmp_path, url, limit=4)
    assert step(control) == QUEUE_START_CAP // 2
    server.stop()  # vLLM restarted, or its port firewalled
    try:
        refresh_until(control, lambda: control.queue.checks >= 5, "looks while down")
        assert control.max_in_flight is None  # no information: no queue cap
        warnings = records(logs, logging.WARNING)
        assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
        assert len(records(logs, logging.INFO, "backoff ends")) == 1
        server.start()  # same port
        assert step(control) == QUEUE_START_CAP // 2
        assert len(records(logs, logging.INFO, "answers again")) == 1
        assert len(records(logs, logging.WARNING)) == 1
    finally:
        server.stop()


def test_credentials_in_the_url_are_sent_but_never_logged(srv, tmp_path, logs):
    srv.other_waiting = 10
    control = watching(tmp_path, f"http://user:s3cret@127.0.0.1:{srv.port}/metrics")
    assert step(control) == QUEUE_START_CAP // 2
    control = watching(tmp_path, f"http://user:s3cret@127.0.0.1:{srv.port}/nothing-here")
    assert step(control) is None
    text = " ".join(r.getMessage() for r in logs.records)
    assert "HTTP 404" in text and "127.0.0.1" in text and "s3cret" not in text


def test_off_unless_asked(tmp_path):
    control = Control(tmp_path)
    control.refresh()
    assert control.queue is None and control.throttle == Throttle() and control.max_in_flight is None
    assert Control(tmp_path, metrics_url="http://x/metrics").queue is None  # a URL alone does nothing
    with pytest.raises(ValueError, match="metrics_url"):
        Control(tmp_path, queue_limit=4)
    with pytest.raises(ValueError, match=">= 0"):
        Control(tmp_path, metrics_url="http://x/metrics", queue_limit=-1)


def test_a_server_that_is_not_http_is_only_a_warning(tmp_path, logs):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(20)
    control = watching(tmp_path, f"http://127.0.0.1:{listener.getsockname()[1]}/metrics")
    try:
        control.refresh()  # the GET starts in its thread
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")  # not an HTTP status line
        conn.close()
        refresh_until(control, lambda: control.queue.checks >= 1, "the answer applied")
    finally:
        listener.close()
    assert control.max_in_flight is None
    warnings = records(logs, logging.WARNING)
    assert len(warnings) == 1 and "no HTTP answer" in warnings[0].getMessage()


# ------------------------------------------------- through `migrate run`
def test_run_backs_off_while_the_servers_queue_is_long(tmp_path):
    """`--backoff-queue` reaches the running migration: with other tenants' requests waiting
    on the server, the run logs that it backs off, and still finishes the migration."""
    import json as _json
    import subprocess

    from dvdcheck import assert_migrated
    from helpers import API_KEY
    from migrator.testing.corpus import build_dvd_tree
    from migrator.testing.server import FakeVLLM

    root = tmp_path / "video_database"
    paths = build_dvd_tree(root, 6, clips=(10, 20), seed=2)
    originals = {p: _json.loads(p.read_text()) for p in paths}
    with FakeVLLM(model="Qwen/Qwen3-Embedding-0.6B", api_key=API_KEY, tokens_per_second=1500) as srv:
        srv.other_waiting = 12
        env = dict(os.environ, MIGRATOR_API_KEY=API_KEY)
        r = subprocess.run(
            [
                *MIGRATE,
                "run",
                "--root",
                str(root),
                "--model",
                "0.6b",
                "--endpoint",
                srv.base_url,
                "--yes",
                "--state-dir",
                str(tmp_path / "st"),
                "--backoff-queue",
                "4",
                "--batch-size",
                "4",
            ],  # many requests: the run
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )  # looks at /metrics often
    assert r.returncode == 0, r.stdout + r.stderr
    log_text = (tmp_path / "st" / "migrator.log").read_text()
    assert "backing off" in log_text and "queue limit 4" in log_text, log_text[-2000:]
    for p in paths:
        assert_migrated(p, originals[p], dim=1024, native_dim=1024, seed="Qwen/Qwen3-Embedding-0.6B")


def test_an_endless_metrics_answer_is_read_only_up_to_its_cap():
    """A /metrics that never ends (a proxy streaming something else) costs at most
    METRICS_MAX_BYTES: the read returns, with the gauge from what was read."""
    import threading

    from migrator.vllm import steering

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    sent = {"bytes": 0}

    def serve():
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + f"{WAITING} 7\n".encode())
        filler = b"# filler\n" * 4096
        try:
            while sent["bytes"] < 8 * steering.METRICS_MAX_BYTES:
                conn.sendall(filler)
                sent["bytes"] += len(filler)
        except OSError:
            pass  # the reader hung up once it had enough
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    watch = steering.QueueWatch(f"http://127.0.0.1:{listener.getsockname()[1]}/metrics", 4, timeout=30)
    try:
        assert watch.read() == 7
    finally:
        listener.close()
    t.join(30)
    assert sent["bytes"] < 8 * steering.METRICS_MAX_BYTES  # it stopped reading long before the end
