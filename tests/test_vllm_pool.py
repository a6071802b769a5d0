"""EndpointPool: several real (fake) vLLM servers on loopback behind one Endpoint-shaped object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import numpy as np
import pytest

from helpers import API_KEY
from migrator.errors import EndpointRejected, EndpointUnavailable, UsageError
from migrator.testing.server import FakeVLLM
from migrator.vllm.endpoint import Endpoint, PoisonedInput
from migrator.vllm.pool import EndpointPool, endpoints_from_file, make_endpoint

QUICK = dict(request_timeout=5.0, retry_for=5.0, recheck_after=0.1, recheck_max=0.3)
COLORS = ["red", "blue", "green", "grey", "yellow", "black", "white"]
PLACES = ["kitchen", "harbour", "station", "garden", "office", "bridge"]


def _texts(n: int, start: int = 0) -> list[str]:
    return [
        f"clip {i}: a {COLORS[i % 7]} car drives past the {PLACES[i % 6]} at {i % 24} o'clock"
        for i in range(start, start + n)
    ]


def _batches(n: int, size: int = 4) -> list[list[str]]:
    return [_texts(size, start=i * size) for i in range(n)]


@contextlib.contextmanager
def _servers(*kwargs_list: dict):
    servers = [FakeVLLM(api_key=API_KEY, **kw).start() for kw in kwargs_list]
    try:
        yield servers
    finally:
        for s in servers:
            s.stop()


def _pool(servers, **kw) -> EndpointPool:
    return EndpointPool.of([s.base_url for s in servers], API_KEY, **{**QUICK, **kw})


async def _embed_all(pool, batches, concurrency: int = 4):
    sem = asyncio.Semaphore(concurrency)

    async def one(b):
        async with sem:
            return await pool.embed(b)

    return await asyncio.gather(*(one(b) for b in batches))


async def _until_in_service(pool: EndpointPool, url: str, limit: float = 10.0) -> None:
    for _ in range(int(limit / 0.05)):
        if next(s for s in pool.status() if s["url"] == url)["in_service"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never came back: {pool.status()}")


def _free_url() -> str:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _status(pool: EndpointPool, srv: FakeVLLM) -> dict:
    return next(s for s in pool.status() if s["url"] == srv.base_url)


# ------------------------------------------------------------------ building
def test_one_url_is_a_plain_endpoint_several_a_pool(tmp_path):
    one = make_endpoint("http://127.0.0.1:9/v1", API_KEY)
    assert type(one) is Endpoint and not one.in_pool
    two = make_endpoint(["http://127.0.0.1:9", "http://127.0.0.2:9/v1"], API_KEY, retry_for=7)
    assert isinstance(two, EndpointPool) and all(m.endpoint.in_pool for m in two.members)
    assert two.base_url == "http://127.0.0.1:9/v1, http://127.0.0.2:9/v1" and two.retry_for == 7
    with pytest.raises(UsageError, match="listed twice"):
        make_endpoint(["http://127.0.0.1:9/v1", "http://127.0.0.1:9/"], API_KEY)
    listing = tmp_path / "endpoints.txt"
    listing.write_text("# the GPU boxes\nhttp://gpu1:8888/v1\n\n  http://gpu2:8888  \n")
    assert endpoints_from_file(listing) == ["http://gpu1:8888/v1", "http://gpu2:8888"]
    listing.write_text("# nothing here\n")
    with pytest.raises(UsageError, match="no endpoint URLs"):
        endpoints_from_file(listing)


# ---------------------------------------------------------------- at start
@pytest.mark.parametrize(
    "a, b, words",
    [
        # B does not serve the model asked for: refused by B itself, naming both models
        (dict(model="acme/embed-a", dim=1024), dict(model="acme/embed-b", dim=1024), ["acme/embed-a", "acme/embed-b"]),
        (dict(model="acme/embed", dim=1024), dict(model="acme/embed", dim=768), ["1024 dims", "768 dims"]),
    ],
)
def test_endpoints_serving_different_models_are_refused_at_start(a, b, words):
    with _servers(a, b) as (sa, sb):
        pool = _pool([sa, sb])

        async def go():
            try:
                with pytest.raises(EndpointRejected) as exc:
                    await pool.probe(a["model"])
                return str(exc.value)
            finally:
                await pool.aclose()

        message = asyncio.run(go())
    assert sb.base_url in message
    assert (sa.base_url in message and "same model" in message) or "not acme/embed-a" in message
    assert all(w in message for w in words) and "\n" not in message


def test_an_endpoint_down_at_start_is_refused_by_name():
    down = _free_url()
    with _servers({}) as (sa,):
        pool = EndpointPool.of([sa.base_url, down], API_KEY, **QUICK)

        async def go():
            try:
                with pytest.raises(EndpointUnavailable) as exc:
                    await pool.probe("8b")
                return str(exc.value)
            finally:
                await pool.aclose()

        message = asyncio.run(go())
    assert message.startswith(down) and "cannot connect" in message and "must answer at start" in message


def test_a_refused_key_is_a_configuration_error_not_an_outage():
    with _servers({}) as (sa,), FakeVLLM(api_key="another-key") as sb:
        pool = _pool([sa, sb])

        async def go():
            try:
                with pytest.raises(EndpointRejected, match="API key was refused") as exc:
                    await pool.probe("8b")
                return str(exc.value)
            finally:
                await pool.aclose()

        assert asyncio.run(go()).startswith(sb.base_url)


def test_one_truncation_limit_for_all_when_max_model_len_differs():
    with _servers(dict(max_model_len=8192), dict(max_model_len=4096)) as servers:
        pool = _pool(servers)

        async def go():
            try:
                info = await pool.probe("8b")
                assert info.model == "Qwen/Qwen3-Embedding-8B" and info.native_dim == 4096
                assert info.max_model_len == 4096 and "4095 tokens" in info.note
                assert [m.endpoint.info.max_model_len for m in pool.members] == [4096, 4096]
                assert pool.target_dim == 4096 and pool.may_be_truncated("x " * 5000)
            finally:
                await pool.aclose()

        asyncio.run(go())


# ----------------------------------------------------------------- spreading
def test_requests_are_spread_by_measured_capacity():
    """Capacities 1:3 (tokens/s shared among requests in flight, like vLLM): the fast one answers most."""
    with _servers(dict(tokens_per_second=2000), dict(tokens_per_second=6000)) as (slow, fast):
        pool = _pool([slow, fast])
        batches = _batches(64, size=8)

        async def go():
            try:
                await pool.probe("8b")
                return await _embed_all(pool, batches, concurrency=8)
            finally:
                await pool.aclose()

        results = asyncio.run(go())
    answered = {s["url"]: s["texts"] for s in pool.status()}
    assert sum(answered.values()) == 64 * 8
    share = answered[fast.base_url] / (64 * 8)
    assert 0.6 < share < 0.95, pool.status()
    assert fast.stats.inputs_embedded > 2 * slow.stats.inputs_embedded
    for r, b in zip(results, batches):  # whichever server answered: unit rows of the model's size
        assert r.vectors.shape == (len(b), 4096)
        np.testing.assert_allclose(np.linalg.norm(r.vectors, axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------- fail-over
@pytest.mark.parametrize("how", ["503", "stopped"])
def test_a_failing_endpoint_is_taken_out_then_probed_back_in(how, caplog):
    caplog.set_level(logging.DEBUG, logger="migrator.vllm.pool")
    with _servers({}, {}) as (sa, sb):
        pushbacks: list[str] = []
        # a failure must not wait out the member's retries
        pool = _pool([sa, sb], retry_for=600.0, on_pushback=pushbacks.append)
        batches = _batches(24)

        async def go():
            try:
                await pool.probe("8b")
                assert pushbacks == []
                if how == "503":
                    sa.faults.add("status", times=None, status=503)
                else:
                    sa.stop()
                first = await _embed_all(pool, batches)
                assert not _status(pool, sa)["in_service"] and _status(pool, sa)["texts"] == 0
                assert _status(pool, sb)["texts"] == 24 * 4  # every request answered by the other
                if how == "503":  # each request sent there at most once (4 in flight), none retried there
                    assert 1 <= sa.stats.batch_sizes.count(4) <= 4
                if how == "503":
                    sa.faults.clear()
                else:
                    sa.start()  # same port, like a restarted vLLM
                await _until_in_service(pool, sa.base_url)
                second = await _embed_all(pool, batches)
                assert _status(pool, sa)["texts"] > 0  # back, and given work again
                return first, second
            finally:
                await pool.aclose()

        first, second = asyncio.run(go())
    for a, b in zip(first, second):  # same vectors from either server
        np.testing.assert_array_equal(a.vectors, b.vectors)
    taken_out = [r.getMessage() for r in caplog.records if "taken out" in r.getMessage()]
    assert len(taken_out) == 1 and taken_out[0].startswith(sa.base_url)
    assert ("HTTP 503" if how == "503" else "cannot connect") in taken_out[0]
    assert any(r.getMessage() == f"{sa.base_url} answers again: back in the pool" for r in caplog.records)
    assert API_KEY not in caplog.text
    assert len(pushbacks) <= 4 and all(p.startswith(sa.base_url) for p in pushbacks)


def test_a_hung_endpoint_is_taken_out_without_waiting_for_its_retries():
    with _servers({}, {}) as (sa, sb):
        pool = _pool([sa, sb], request_timeout=0.5, retry_for=600.0)
        batches = _batches(8)

        async def go():
            try:
                await pool.probe("8b")
                sa.faults.add("hang", times=None)  # every request, pings too, never answered
                await _embed_all(pool, batches)
            finally:
                await pool.aclose()

        asyncio.run(go())
    assert not _status(pool, sa)["in_service"] and "no answer within 0.5s" in _status(pool, sa)["reason"]
    assert _status(pool, sb)["texts"] == 8 * 4


def test_all_endpoints_down_is_a_clear_error_after_retry_for():
    with _servers({}, {}) as (sa, sb):
        pool = _pool([sa, sb], retry_for=1.0)

        async def go():
            try:
                await pool.probe("8b")
                sa.stop()
                sb.stop()
                with pytest.raises(EndpointUnavailable) as exc:
                    await pool.embed(_texts(4))
                assert not any(s["in_service"] for s in pool.status())
                with pytest.raises(EndpointUnavailable):  # a request arriving now waits, then fails too
                    await pool.embed(_texts(2))
                return str(exc.value)
            finally:
                await pool.aclose()

        message = asyncio.run(go())
    assert sa.base_url in message and sb.base_url in message
    assert "run again to resume" in message and "\n" not in message


# ------------------------------------------------ errors that are not outages
_TOO_LONG = {
    "error": {
        "message": "This model's maximum context length is 64 tokens. However, you "
        "requested 99 tokens in the input for embedding generation.",
        "type": "BadRequestError",
        "param": "input_tokens",
        "code": 400,
    }
}


@pytest.mark.parametrize("fault", ["context-length", "hang", "refused"])
def test_errors_of_the_input_pass_through_and_take_no_endpoint_out(fault):
    batch = _texts(6)
    batch[4] = "POISON " + batch[4]
    with _servers(dict(hang_blocks_others=False), dict(hang_blocks_others=False)) as servers:
        for s in servers:  # whichever server gets it answers the same way
            if fault == "context-length":
                s.faults.add("status", times=None, status=400, body=_TOO_LONG, match="POISON")
            elif fault == "hang":
                s.faults.add("hang", times=None, match="POISON")
            else:
                s.faults.add("status", times=None, status=422, match="POISON")
        pool = _pool(servers, request_timeout=0.5)

        async def go():
            try:
                await pool.probe("8b")
                with pytest.raises(Exception) as exc:
                    await pool.embed(batch)
                ok = await pool.embed(_texts(3))  # the pool still serves
                assert ok.vectors.shape == (3, 4096)
                return exc.value
            finally:
                await pool.aclose()

        error = asyncio.run(go())
    if fault == "refused":
        assert isinstance(error, EndpointRejected) and "HTTP 422" in str(error)
    else:
        assert type(error) is PoisonedInput and error.index == 4
    assert all(s["in_service"] for s in pool.status())


def test_endpoints_serving_the_model_under_different_names_are_one_model():
    """One server names it qwen3-embed (an alias of the 8B), the other by its id: the same
    model. Each request carries its own server's name; answers name their server's first."""
    qwen = "Qwen/Qwen3-Embedding-8B"
    with _servers(dict(model=qwen, served_names=["qwen3-embed"]), dict(model=qwen)) as servers:
        pool = _pool(servers)

        async def go():
            try:
                info = await pool.probe("8b")
                out = await _embed_all(pool, [[f"clip {i} of a long video"] * 4 for i in range(24)])
                return info, out
            finally:
                await pool.aclose()

        info, out = asyncio.run(go())
    assert info.model == qwen and set(info.served_models) == {"qwen3-embed", qwen}
    assert len(out) == 24 and all(r.vectors.shape == (4, 4096) for r in out)
    assert all(s.stats.embedding_ok > 0 for s in servers)  # both served: neither refused
