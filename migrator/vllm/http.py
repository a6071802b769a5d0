"""One HTTP stack for everything migrator asks a server: httpx (``httpx2``, the one the openai SDK is built on).

The embeddings and the model list go through the async client made here
(:meth:`Http.async_client`, :func:`send`); the small requests beside them
(``/version``, ``/tokenize``, ``/metrics``, and ``/v1/models`` while ``--serve``
waits for vLLM) through :class:`Http`'s pooled sync client. One per command
(``Settings.http``), handed to the endpoints, the queue watch and the managed
server it makes, so TLS verification, the worker header and the error handling
are decided in one place.

The embeddings once went through the openai SDK's ``AsyncOpenAI``. Importing it
took about 0.5 s of every ``run``'s start, and its request layers a tenth of the
client's CPU at full speed, for a request migrator builds and checks itself (see
docs/BENCHMARKS.md). Its error classes map onto three here: :class:`Unreachable`
(no answer), :class:`TimedOut` (none within the timeout) and :class:`StatusError`
(an answer, not 2xx).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import httpx2  # the httpx the openai SDK is built on (openai >= 3)
import orjson

# which migrate process sent a request, for the server's logs (vLLM ignores it)
WORKER_HEADERS = {"X-Migrator-Worker": f"{socket.gethostname()}:{os.getpid()}"}


class Unreachable(Exception):
    """No HTTP answer at all: refused, reset, timed out. The message says which."""


class NotHttp(Unreachable):
    """A connection, but no HTTP answer on it: a hang-up, or another service on the port."""


class TimedOut(Unreachable):
    """No answer within the request's timeout."""


class StatusError(Exception):
    """An HTTP answer that is not 2xx: its status, headers and body (``doc`` if it is JSON)."""

    def __init__(self, status: int, headers: httpx2.Headers, body: bytes):
        self.status, self.headers, self.body = status, headers, body
        try:
            self.doc: object = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            self.doc = None
        super().__init__(f"HTTP {status}")

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Answer:
    status: int
    body: bytes


class Http:
    """A thread-safe client for the small requests; ``verify_tls=False`` is ``--insecure``."""

    def __init__(self, *, verify_tls: bool = True):
        self.verify_tls = verify_tls
        self._pid = os.getpid()
        self._client = self._new_client()

    def _new_client(self) -> httpx2.Client:
        return httpx2.Client(verify=self.verify_tls, headers=WORKER_HEADERS, follow_redirects=False)

    @property
    def client(self) -> httpx2.Client:
        """The pooled client; a forked child gets a fresh one. The parent's kept-alive
        connections are the same sockets in both: two processes on one connection read
        each other's answers (or wait for them forever)."""
        if self._pid != os.getpid():
            self._pid, self._client = os.getpid(), self._new_client()
        return self._client

    def async_client(self) -> httpx2.AsyncClient:
        """An async client for the embeddings, with the openai SDK's connection limits
        (1,000 connections, 100 kept alive): the adaptive limit, not the pool, bounds them."""
        return httpx2.AsyncClient(
            verify=self.verify_tls,
            headers=WORKER_HEADERS,
            follow_redirects=False,
            limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100),
        )

    def get(
        self, url: str, *, timeout: float, headers: dict[str, str] | None = None, max_bytes: int | None = None
    ) -> Answer:
        """GET ``url``; the body is cut at ``max_bytes`` (a server cannot make us read more)."""
        try:
            with self.client.stream("GET", url, headers=headers, timeout=timeout) as r:
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if max_bytes is not None and len(body) >= max_bytes:
                        del body[max_bytes:]
                        break
                return Answer(r.status_code, bytes(body))
        except httpx2.HTTPError as e:
            raise _no_answer(e) from None

    def post_json(self, url: str, doc: object, *, timeout: float, headers: dict[str, str] | None = None) -> Answer:
        try:
            r = self.client.post(url, json=doc, headers=headers, timeout=timeout)
            return Answer(r.status_code, r.content)
        except httpx2.HTTPError as e:
            raise _no_answer(e) from None

    def close(self) -> None:
        self.client.close()


async def send(
    client: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    timeout: float,
    headers: dict[str, str],
    content: bytes | None = None,
) -> httpx2.Response:
    """One request on ``client``: the 2xx answer, read whole, or StatusError, TimedOut, Unreachable."""
    try:
        r = await client.request(method, url, content=content, headers=headers, timeout=timeout)
    except httpx2.TimeoutException as e:
        raise TimedOut(_reason(e)) from None
    except httpx2.HTTPError as e:
        raise _no_answer(e) from None
    if not 200 <= r.status_code < 300:
        raise StatusError(r.status_code, r.headers, r.content)
    return r


def bearer(key: str | None) -> dict[str, str]:
    """The Authorization header for ``key`` (none without a key)."""
    return {"Authorization": f"Bearer {key}"} if key else {}


def _no_answer(e: httpx2.HTTPError) -> Unreachable:
    """NotHttp when a connection was made but no HTTP answer came back (a hang-up, or bytes
    that are not HTTP: httpx cannot tell these apart), else Unreachable."""
    if isinstance(e, httpx2.ProtocolError):
        return NotHttp(_reason(e))
    return Unreachable(_reason(e))


def _reason(e: httpx2.HTTPError) -> str:
    cause = e.__cause__ or e.__context__
    text = str(e) or (str(cause) if cause else "") or type(e).__name__
    return f"{type(e).__name__}: {text}"
