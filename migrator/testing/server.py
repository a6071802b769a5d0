"""A fake vLLM embeddings server for tests, the demo and benchmarks.

It speaks the HTTP protocol of vLLM's OpenAI-compatible server as a client
sees it (see ``docs/notes/vllm-and-dvd-facts.md``): ``/v1/embeddings``,
``/v1/models``, ``/tokenize``, ``/detokenize``, ``/health``, ``/metrics``,
bearer-key auth on ``/v1/*``, both error shapes, the context-length 400, the
``dimensions`` (Matryoshka) 400, the ``normalize`` 400 - and vLLM's worst
habit: a prompt of *exactly* ``max_model_len`` tokens hangs forever
(vllm#29496) and, by default, stalls every later embedding request while
``/health`` keeps answering 200.

The "model" is ``migrator.testing.embedder``: deterministic feature hashing,
never a real model.  On top of that, tests make the endpoint hostile with
queued faults (``srv.faults.add("status", status=503)`` or, for a server in
another process, ``POST /_admin/faults``).  ``/_admin/*`` exists only here.

``/metrics`` speaks vLLM's Prometheus text format (``vllm:num_requests_waiting
{engine="0",model_name="..."} 0.0``).  The fake itself never queues (every
request runs at once, sharing the capacity), so its own waiting figure is 0;
tests play other tenants of a shared GPU with ``srv.other_waiting`` /
``srv.other_running`` (added to the figures) and ``srv.engines`` (the figures
split over that many ``engine`` label sets, like a data-parallel vLLM), or
``POST /_admin/queue {"waiting": 12, "running": 3, "engines": 2}``.

In-process::

    with FakeVLLM(model="Qwen/Qwen3-Embedding-8B", api_key="k") as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="k")

As a process (the key comes only from the environment)::

    KEY=secret python -m migrator.testing.server --port 0 \\
        --api-key-env KEY --ready-file /tmp/ready
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import math
import os
import random
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional
from urllib.parse import urlsplit

import numpy as np

from migrator.testing.embedder import (
    EOS_ID,
    EOS_TOKEN,
    MODEL_DIMS,
    _id_words,
    _words_of,
    embed_word_lists,
    prompt_words,
    token_strings,
    tokenize,
)
from migrator.vllm.endpoint import parse_version

__all__ = ["FakeVLLM", "FaultQueue", "Fault", "ServerStats", "FAULT_KINDS", "main"]

BANNER = "fake vLLM (migrator test server, not a real model)"
VLLM_VERSION = "0.31.0"  # the newest release that still has the exactly-max-length hang
OTHER_MODEL = "intfloat/e5-mistral-7b-instruct"

#: Fault kinds and the parameters each accepts (besides ``times``/``match``).
FAULT_KINDS: dict[str, frozenset[str]] = {
    "status": frozenset({"status", "retry_after", "body"}),
    "html": frozenset({"status"}),
    "reset": frozenset({"stage"}),
    "hang": frozenset(),
    "delay": frozenset({"seconds"}),
    "wrong_dim": frozenset({"dim"}),
    "nan": frozenset({"value", "item"}),
    "too_few": frozenset({"item"}),
    "dup_index": frozenset(),
    "shuffle": frozenset({"seed"}),
    "wrong_model": frozenset({"model"}),
    "garbage": frozenset({"seed"}),
    "misorder": frozenset(),  # each index gets its neighbour's vector: passes every per-answer check
    "zero": frozenset({"item"}),
}
# Faults that answer (or refuse to answer) instead of the model.
_PRE_FAULTS = frozenset({"status", "html", "reset", "hang"})

_ERROR_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    502: "BadGatewayError",
    503: "ServiceUnavailableError",
    504: "GatewayTimeoutError",
}

_NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_LOGIN_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n<body>"
    '<form method="post" action="/login"><input name="user"><input '
    'name="password" type="password"><button>Sign in</button></form>'
    "</body></html>\n"
)


# --------------------------------------------------------------------------- #
# Replies and errors                                                          #
# --------------------------------------------------------------------------- #
@dataclass
class _Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


class _Abort(Exception):
    """Drop the connection: optionally after *partial* bytes, with a TCP RST."""

    def __init__(self, partial: bytes = b"", reset: bool = False):
        super().__init__("connection dropped")
        self.partial = partial
        self.reset = reset


class _ApiError(Exception):
    """An error vLLM reports in its JSON error shape."""

    def __init__(self, status: int, message: str, param: Optional[str] = None, err_type: Optional[str] = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type or _ERROR_TYPES.get(status, "Error")


def _json_bytes(obj: Any) -> bytes:
    # Compact like Starlette's JSONResponse; NaN/Infinity pass through as
    # Python's json writes them (only the `nan` fault ever produces them).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _json_reply(status: int, obj: Any, headers: Optional[dict] = None) -> _Reply:
    return _Reply(status, _json_bytes(obj), "application/json", dict(headers or {}))


# --------------------------------------------------------------------------- #
# Faults                                                                      #
# --------------------------------------------------------------------------- #
@dataclass
class Fault:
    """One queued fault rule.  ``times=None`` means until cleared."""

    kind: str
    times: Optional[int] = 1
    match: Optional[str] = None
    params: dict[str, Any] = field(default_factory=dict)
    fired: int = 0

    def matches(self, texts: list[str]) -> bool:
        return self.match is None or any(self.match in t for t in texts)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "times": self.times, "match": self.match, "fired": self.fired, **self.params}


class FaultQueue:
    """Thread-safe FIFO of fault rules consumed by ``/v1/embeddings`` requests.

    Each request that passes validation takes (one use of) the first rule
    whose ``match`` substring occurs in one of its text inputs.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, kind: str, times: Optional[int] = 1, *, match: Optional[str] = None, **params: Any) -> Fault:
        """Queue a rule; raises ValueError for an unknown kind or parameter."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {sorted(FAULT_KINDS)}")
        unknown = set(params) - FAULT_KINDS[kind]
        if unknown:
            raise ValueError(f"fault {kind!r} takes no parameter(s) {sorted(unknown)}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive int or None (until cleared)")
        rule = Fault(kind=kind, times=times, match=match, params=params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, texts: list[str]) -> Optional[Fault]:
        """Consume one use of the first rule matching *texts*, if any."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(texts):
                    rule.fired += 1
                    if rule.times is not None and rule.fired >= rule.times:
                        self._rules.remove(rule)
                    return rule
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [r.as_dict() for r in self._rules]

    def __len__(self) -> int:
        with self._lock:
            return len(self._rules)


# --------------------------------------------------------------------------- #
# Stats                                                                       #
# --------------------------------------------------------------------------- #
@dataclass
class ServerStats:
    """Counters for tests.  Never holds a key or an Authorization header.

    ``batch_sizes`` has one entry per ``/v1/embeddings`` request whose
    ``input`` parsed (including ones that later failed, hung or were
    faulted); ``inputs_embedded`` and ``prompt_tokens`` count answered
    requests only.
    """

    requests_total: int = 0
    embedding_requests: int = 0
    embedding_ok: int = 0
    inputs_embedded: int = 0
    prompt_tokens: int = 0
    batch_sizes: list[int] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    running: int = 0
    hung: int = 0
    hangs_aborted: int = 0  # hung requests ended by their client hanging up
    unauthorized: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    faults_fired: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def bump(self, name: str, by: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + by)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def count_status(self, status: int) -> None:
        with self._lock:
            self.status_counts[status] = self.status_counts.get(status, 0) + 1

    def count_fault(self, kind: str) -> None:
        with self._lock:
            self.faults_fired[kind] = self.faults_fired.get(kind, 0) + 1

    def add_batch(self, size: int) -> None:
        with self._lock:
            self.batch_sizes.append(size)

    def answered(self, inputs: int, tokens: int) -> None:
        with self._lock:
            self.embedding_ok += 1
            self.inputs_embedded += inputs
            self.prompt_tokens += tokens

    def snapshot(self) -> dict:
        """A JSON-ready copy (what ``GET /_admin/stats`` returns)."""
        with self._lock:
            out = {k: v for k, v in vars(self).items() if not k.startswith("_")}
            out["batch_sizes"] = list(self.batch_sizes)
            out["status_counts"] = {str(k): v for k, v in self.status_counts.items()}
            out["faults_fired"] = dict(self.faults_fired)
        return out


# --------------------------------------------------------------------------- #
# Cost model                                                                  #
# --------------------------------------------------------------------------- #
class _SharedCapacity:
    """Processor sharing, like continuous batching: the requests in flight
    split ``tokens_per_second`` equally, so a request of T tokens alone takes
    T / rate seconds and k equal requests together take k*T / rate.

    Bookkeeping uses "virtual tokens": the work each active request has
    received so far, which grows at rate / active.
    """

    def __init__(self, tokens_per_second: float, stopping: threading.Event):
        if tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")
        self._rate = float(tokens_per_second)
        self._stopping = stopping
        self._cond = threading.Condition()
        self._virtual = 0.0
        self._stamp = time.monotonic()
        self._active = 0

    def _advance(self) -> None:
        now = time.monotonic()
        if self._active:
            self._virtual += (now - self._stamp) * self._rate / self._active
        self._stamp = now

    def consume(self, tokens: int) -> bool:
        """Block for this request's share of the time; False if stopped."""
        with self._cond:
            self._advance()
            target = self._virtual + tokens
            self._active += 1
            try:
                while not self._stopping.is_set():
                    self._advance()
                    left = target - self._virtual
                    if left <= 1e-9:
                        return True
                    self._cond.wait(min(left * self._active / self._rate, 0.2))
                return False
            finally:
                self._advance()
                self._active -= 1
                self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


# --------------------------------------------------------------------------- #
# Request parsing                                                             #
# --------------------------------------------------------------------------- #
@dataclass
class _Prompt:
    text: Optional[str] = None  # a text prompt ...
    ids: Optional[list[int]] = None  # ... or token ids


@dataclass
class _Prepared:
    words: list[str]  # what the embedder hashes
    tokens: int  # prompt length in tokens, after truncation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bad(message: str, param: Optional[str] = None) -> _ApiError:
    return _ApiError(400, message, param)


def _parse_object(body: bytes) -> dict:
    try:
        obj = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError) as exc:
        raise _bad(f"JSON decode error: {exc}") from None
    if not isinstance(obj, dict):
        raise _bad("Input should be a valid JSON object")
    return obj


def _parse_input(value: Any) -> list[_Prompt]:
    """``input``: str, list[str], list[int] or list[list[int]]; else 400."""
    if value is None:
        raise _bad("Field required: input", "input")
    if isinstance(value, str):
        return [_Prompt(text=value)]
    if not isinstance(value, list) or not value:
        raise _bad(
            "input must be a string, a non-empty list of strings, or token ids (list[int] or list[list[int]])", "input"
        )
    if all(isinstance(v, str) for v in value):
        return [_Prompt(text=v) for v in value]
    if all(_is_int(v) for v in value):
        return [_Prompt(ids=_check_ids(value))]
    if all(isinstance(v, list) for v in value):
        return [_Prompt(ids=_check_ids(v)) for v in value]
    raise _bad("input items must all be strings, all token ids, or all lists of token ids", "input")


def _check_ids(ids: list) -> list[int]:
    if not ids or not all(_is_int(i) and i >= 0 for i in ids):
        raise _bad("token id prompts must be non-empty lists of non-negative ints", "input")
    return ids


def _prepare(prompt: _Prompt, truncate: Optional[int], add_special: bool) -> _Prepared:
    """Token count (EOS included when special tokens are added) and words,
    after keeping the first *truncate* tokens (EOS stays last)."""
    if prompt.ids is not None:
        ids = prompt.ids if truncate is None else prompt.ids[:truncate]
        return _Prepared(_id_words(ids), len(ids))
    assert prompt.text is not None  # a prompt is text or token ids
    words, count = prompt_words(prompt.text)
    if not add_special:
        count -= 1
    if truncate is not None and count > truncate:
        keep = truncate - 1 if add_special else truncate
        words, count = _words_of(token_strings(prompt.text)[:keep]), truncate
    return _Prepared(words, count)


def _read_chunked(rfile) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int(rfile.readline().split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return b"".join(chunks)
        chunks.append(rfile.read(size))
        rfile.readline()


# --------------------------------------------------------------------------- #
# HTTP plumbing                                                               #
# --------------------------------------------------------------------------- #
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "uvicorn"
    sys_version = ""
    server: _HTTPServer  # the server that made this handler (it has the app)

    def setup(self) -> None:
        super().setup()
        self.server.app._track(self.connection, True)
        if isinstance(self.connection, ssl.SSLSocket):
            # TLS mode: the handshake runs here, in this connection's thread, so a
            # client that rejects the certificate (or never speaks TLS) blocks no one.
            try:
                self.connection.do_handshake()
            except BaseException:
                self.server.app._track(self.connection, False)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.app._track(self.connection, False)

    def log_message(self, fmt: str, *args: Any) -> None:
        if self.server.app.verbose:
            sys.stderr.write("fake-vllm: " + (fmt % args) + "\n")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return _read_chunked(self.rfile)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _serve(self, method: str) -> None:
        app = self.server.app
        try:
            body = self._read_body()
            app._local.conn = self.connection
            reply = app.dispatch(method, urlsplit(self.path).path, self.headers, body)
        except _Abort as abort:
            self._drop(abort)
            return
        app.stats.count_status(reply.status)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            if reply.content_type:
                self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (e.g. its timeout fired)
            self.close_connection = True

    def _drop(self, abort: _Abort) -> None:
        """Close the connection without a complete answer."""
        self.close_connection = True
        sock = self.connection
        try:
            if abort.partial:
                self.wfile.write(abort.partial)
            if abort.reset:  # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()  # release the makefile() reference first
            sock.close()
        except OSError:
            pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address, app: "FakeVLLM"):
        self.app = app
        super().__init__(address, _Handler)

    def handle_error(self, request, client_address) -> None:
        if self.app.verbose:  # otherwise a client hanging up is not news
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------- #
# The server                                                                  #
# --------------------------------------------------------------------------- #
@dataclass
class LoggedRequest:
    """One ``/v1/embeddings`` request, as ``FakeVLLM.request_log`` keeps it."""

    worker: str  # the X-Migrator-Worker header (host:pid), "" if none
    started: float  # time.monotonic() in the server's process
    ended: float
    texts: list[str]
    fields: list[str] = field(default_factory=list)  # the request's top-level JSON keys


class FakeVLLM:
    """A protocol-faithful fake of ``vllm serve <Qwen3-Embedding> --runner pooling``.

    Attributes for tests: ``faults`` (a ``FaultQueue``), ``stats`` (a
    ``ServerStats``), ``dead`` (set True to make ``/health`` answer 503),
    ``other_waiting`` / ``other_running`` (other tenants' requests, added to
    ``/metrics``), ``engines`` (engine label sets ``/metrics`` splits its figures
    over), ``base_url`` (``http://127.0.0.1:PORT/v1``) and ``root_url``.

    TLS mode: pass ``ssl_context`` (a server-side ``ssl.SSLContext`` holding
    the certificate) and the same server speaks https on the same port.
    """

    def __init__(
        self,
        model: str = "Qwen/Qwen3-Embedding-8B",
        dim: Optional[int] = None,
        max_model_len: int = 8192,
        api_key: Optional[str] = None,
        error_shape: str = "new",
        matryoshka: bool = False,
        reject_normalize: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: Optional[str] = None,
        tokens_per_second: Optional[float] = None,
        request_overhead_s: float = 0.0,
        hang_blocks_others: bool = False,
        verbose: bool = False,
        ssl_context: Optional[ssl.SSLContext] = None,
        served_names: Optional[list[str]] = None,
        version: str = VLLM_VERSION,
        root: Optional[str] = None,
        appends_eos: bool = True,
        runner: str = "pooling",
    ):
        if error_shape not in ("new", "old"):
            raise ValueError("error_shape must be 'new' or 'old'")
        if runner not in ("pooling", "generate"):
            raise ValueError("runner must be 'pooling' or 'generate'")
        self.model = model
        # `--served-model-name a b`: every answer names the first (vLLM >= 0.11)
        self.served_names = list(served_names or [model])
        self.root = root or model  # /v1/models' `root`: the hub id or path vLLM loaded
        parsed = parse_version(version)
        if parsed is None:
            raise ValueError(f"version {version!r} is not like 0.32.0")
        self.version: tuple[int, ...] = parsed
        self.version_text = version
        self.appends_eos = appends_eos  # False: a stale Qwen3-Embedding snapshot (no EOS)
        self.runner = runner  # "generate": a chat model, no embeddings
        self.dim = int(dim or MODEL_DIMS.get(model, 4096))
        self.max_model_len = int(max_model_len)
        self.error_shape = error_shape
        self.matryoshka = matryoshka
        self.reject_normalize = reject_normalize
        self.host, self.port = host, port
        self.seed = model if seed is None else seed
        self.request_overhead_s = float(request_overhead_s)
        self.hang_blocks_others = hang_blocks_others
        self.verbose = verbose
        self.ssl_context = ssl_context  # server-side context: serve https (TLS mode)
        self.dead = False
        self.other_waiting = 0  # other tenants' requests, as /metrics reports them
        self.other_running = 0
        self.engines = 1  # /metrics splits its figures over this many engines
        self.request_log: Optional[list] = None  # a list: every embeddings request is logged in it
        self.faults = FaultQueue()
        self.stats = ServerStats()
        self.created = int(time.time())
        self.__api_key = api_key
        self._stopping = threading.Event()
        self._poisoned = threading.Event()
        self._capacity = _SharedCapacity(tokens_per_second, self._stopping) if tokens_per_second else None
        self._conns: set[socket.socket] = set()
        self._local = threading.local()  # the connection a handler thread is serving
        self._conns_lock = threading.Lock()
        self._vocab: OrderedDict[int, str] = OrderedDict()  # for /detokenize
        self._vocab_lock = threading.Lock()
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None
        self._routes = {
            "/v1/embeddings": {"POST": self._embeddings},
            "/v1/models": {"GET": self._models},
            "/tokenize": {"POST": self._tokenize},
            "/detokenize": {"POST": self._detokenize},
            "/health": {"GET": self._health},
            "/metrics": {"GET": self._metrics},
            "/version": {"GET": lambda body: _json_reply(200, {"version": self.version_text})},
            "/_admin/faults": {
                "POST": self._admin_add_fault,
                "DELETE": self._admin_clear,
                "GET": self._admin_list_faults,
            },
            "/_admin/stats": {"GET": lambda body: _json_reply(200, self.stats.snapshot())},
            "/_admin/health": {"POST": self._admin_health},
            "/_admin/queue": {"POST": self._admin_queue, "GET": self._admin_queue_figures},
        }

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "FakeVLLM":
        """Listen and serve in a daemon thread.  After ``stop()``, starting
        again reuses the same port, like restarting vLLM: the hang is gone."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._poisoned.clear()
        self._httpd = _HTTPServer((self.host, self.port), self)
        if self.ssl_context is not None:
            self._httpd.socket = self.ssl_context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"fake-vllm:{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving.  Hung and stalled requests are dropped, not answered."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        if self._capacity:
            self._capacity.wake()
        httpd.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeVLLM":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(sock)

    # -- routing -----------------------------------------------------------
    def dispatch(self, method: str, path: str, headers, body: bytes) -> _Reply:
        """Answer one request (raises ``_Abort`` to drop the connection)."""
        self.stats.bump("requests_total")
        if path.startswith("/v1") and not self._authorized(headers):
            self.stats.bump("unauthorized")
            return _json_reply(401, {"error": "Unauthorized"})
        methods = self._routes.get(path)
        if methods is None:
            return _json_reply(404, {"detail": "Not Found"})
        handler = methods.get(method)
        if handler is None:
            return _json_reply(405, {"detail": "Method Not Allowed"})
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if method == "POST" and ctype and ctype != "application/json" and not ctype.endswith("+json"):
            # FastAPI (vLLM's server) reads a JSON body only under a JSON content type
            return _json_reply(
                422,
                {
                    "detail": [
                        {
                            "type": "model_attributes_type",
                            "loc": ["body"],
                            "msg": "Input should be a valid dictionary or object to extract fields from",
                        }
                    ]
                },
            )
        started = time.monotonic()
        try:
            return handler(body)
        except _ApiError as err:
            return self._error(err)
        finally:
            if self.request_log is not None and path == "/v1/embeddings":
                self._log_request(headers, body, started)

    def _log_request(self, headers, body: bytes, started: float) -> None:
        """Who asked for which texts, from when to when (``request_log``, for tests)."""
        try:
            doc = json.loads(body)
            texts, fields = doc.get("input"), sorted(doc)
        except (ValueError, AttributeError, TypeError):
            texts, fields = None, []
        texts = [texts] if isinstance(texts, str) else texts if isinstance(texts, list) else []
        assert self.request_log is not None  # logged only when there is a log
        with self._vocab_lock:
            self.request_log.append(
                LoggedRequest(
                    headers.get("X-Migrator-Worker") or "",
                    started,
                    time.monotonic(),
                    [t for t in texts if isinstance(t, str)],
                    fields,
                )
            )

    def _authorized(self, headers) -> bool:
        if self.__api_key is None:
            return True
        given = headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {self.__api_key}".encode())

    def _error(self, err: _ApiError) -> _Reply:
        info = {"message": err.message, "type": err.err_type, "param": err.param, "code": err.status}
        body = {"error": info} if self.error_shape == "new" else {"object": "error", **info}
        return _json_reply(err.status, body)

    def _check_model(self, name: Any) -> None:
        if name is not None and not isinstance(name, str):
            raise _bad("model must be a string", "model")
        if name and name not in self.served_names:
            raise _ApiError(404, f"The model `{name}` does not exist.", "model", "NotFoundError")

    @property
    def answer_name(self) -> str:
        """The ``model`` of every answer: the first served name from 0.11, the asked one before."""
        return self.served_names[0]

    def _has_hang(self) -> bool:
        """vllm#29496 and relatives: 0.9.2 to 0.31 (0.8.5 pooled on the old engine; 0.32 fixed it)."""
        return (0, 9, 2) <= self.version < (0, 32)

    # -- /v1/embeddings ----------------------------------------------------
    def _embeddings(self, body: bytes) -> _Reply:
        if self.runner != "pooling":
            if self.version >= (0, 33):
                return _json_reply(404, {"detail": "Not Found"})  # no route for a generative model
            raise _bad("The model does not support Embeddings API")
        self.stats.bump("embedding_requests")
        self.stats.enter()
        try:
            return self._embed_request(body)
        finally:
            self.stats.bump("in_flight", -1)

    def _embed_request(self, body: bytes) -> _Reply:
        req = _parse_object(body)
        self._local.asked = req.get("model")
        prompts = _parse_input(req.get("input"))
        self.stats.add_batch(len(prompts))
        fmt, dims, truncate, add_special = self._options(req)
        prepared = [_prepare(p, truncate, add_special) for p in prompts]
        self._check_lengths(prepared)
        texts = [p.text for p in prompts if p.text is not None]
        fault = self.faults.take(texts)
        if fault is not None:
            self.stats.count_fault(fault.kind)
            if fault.kind in _PRE_FAULTS:
                return self._pre_fault(fault)
            if fault.kind == "delay":
                self._sleep(float(fault.params.get("seconds", 1.0)))
        self._stall_if_poisoned(prepared)
        tokens = sum(p.tokens for p in prepared)
        self._spend(tokens)
        return self._answer(prepared, fmt, dims, tokens, fault)

    def _options(self, req: dict) -> tuple[str, Optional[int], Optional[int], bool]:
        fmt = req.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise _bad("encoding_format must be 'float' or 'base64'", "encoding_format")
        if self.reject_normalize and req.get("normalize") is not None:
            raise _bad("Parameter `normalize` was removed; use `use_activation` instead.", "normalize")
        add_special = req.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise _bad("add_special_tokens must be a boolean", "add_special_tokens")
        truncate = self._truncation(req.get("truncate_prompt_tokens"))
        self._check_model(req.get("model"))
        dims = req.get("dimensions")
        if dims is not None:
            self._check_dimensions(dims)
        return fmt, dims, truncate, add_special

    def _truncation(self, value: Any) -> Optional[int]:
        if value is None:
            return None
        if not _is_int(value) or value < -1:
            raise _bad("truncate_prompt_tokens must be an integer >= -1", "truncate_prompt_tokens")
        if value == 0:  # not emulated: no sensible prompt has zero tokens
            raise _bad("truncate_prompt_tokens must be -1 or >= 1", "truncate_prompt_tokens")
        if value == -1:
            return self.max_model_len
        if value > self.max_model_len:
            raise _bad(
                f"truncate_prompt_tokens value ({value}) is greater than "
                f"max_model_len ({self.max_model_len}). Please, select a smaller "
                "truncation size.",
                "truncate_prompt_tokens",
            )
        return value

    def _check_dimensions(self, dims: Any) -> None:
        if not _is_int(dims):
            raise _bad("dimensions must be an integer", "dimensions")
        if not self.matryoshka:
            raise _bad(
                f'Model "{self.model}" does not support matryoshka representation, '
                "changing output dimensions will lead to poor results.",
                "dimensions",
            )
        if not 1 <= dims <= self.dim:
            raise _bad(f"Dimensions must be between 1 and {self.dim}, got {dims}.", "dimensions")

    def _check_lengths(self, prepared: list[_Prepared]) -> None:
        for p in prepared:
            if p.tokens > self.max_model_len:
                if self.version >= (0, 32):
                    raise _bad(
                        f"This model's maximum context length is {self.max_model_len} tokens. "
                        f"However, your prompt contains at least {self.max_model_len + 1} input tokens. "
                        "Please reduce the length of the input prompt.",
                        "input_tokens",
                    )
                raise _bad(
                    f"This model's maximum context length is {self.max_model_len} tokens. "
                    f"However, you requested {p.tokens} tokens in the input for embedding "
                    "generation. Please reduce the length of the input.",
                    "input_tokens",
                )

    def _stall_if_poisoned(self, prepared: list[_Prepared]) -> None:
        """vllm#29496 (0.9.2 to 0.31): an input of exactly max_model_len tokens never
        finishes. Other requests go on, and the stuck one is aborted when its client
        disconnects, as on the real server. ``hang_blocks_others`` makes it worse than
        any vLLM: everything submitted after it queues forever."""
        poison = self._has_hang() and any(p.tokens == self.max_model_len for p in prepared)
        if poison and self.hang_blocks_others:
            self._poisoned.set()
        if poison or (self.hang_blocks_others and self._poisoned.is_set()):
            self._hang()

    def _hang(self) -> None:
        """Never answer: until the server stops or the client hangs up (vLLM aborts then)."""
        self.stats.bump("hung")
        # the worst case (hang_blocks_others) stalls for good, whoever hangs up
        conn = None if self.hang_blocks_others else getattr(self._local, "conn", None)
        try:
            while not self._stopping.wait(0.05):
                if conn is not None and _peer_closed(conn):
                    self.stats.bump("hangs_aborted")
                    break
        finally:
            self.stats.bump("hung", -1)
        raise _Abort()

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self._stopping.wait(seconds):
            raise _Abort()

    def _spend(self, tokens: int) -> None:
        """Model time: fixed overhead plus a share of the token capacity."""
        self.stats.bump("running")
        try:
            self._sleep(self.request_overhead_s)
            if self._capacity is not None and not self._capacity.consume(tokens):
                raise _Abort()
        finally:
            self.stats.bump("running", -1)

    def _answer(
        self, prepared: list[_Prepared], fmt: str, dims: Optional[int], tokens: int, fault: Optional[Fault]
    ) -> _Reply:
        model, seed = self.answer_name, self.seed
        asked = getattr(self._local, "asked", None)
        if self.version < (0, 11) and isinstance(asked, str):
            model = asked or model  # before 0.11 the answer echoed the request
        if fault is not None and fault.kind == "wrong_model":
            model = seed = fault.params.get("model", OTHER_MODEL)
        vectors = list(embed_word_lists([p.words for p in prepared], self.dim, seed))
        if dims is not None:
            vectors = [_unit(v[:dims]) for v in vectors]
        if fault is not None:
            vectors = _mangle_vectors(fault, vectors, [p.words for p in prepared], seed)
        data = [{"index": i, "object": "embedding", "embedding": _encode(v, fmt)} for i, v in enumerate(vectors)]
        if fault is not None:
            data = _mangle_items(fault, data)
        self.stats.answered(len(prepared), tokens)
        return _json_reply(
            200,
            {
                "id": f"embd-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            },
        )

    def _pre_fault(self, fault: Fault) -> _Reply:
        """Faults that replace the model's answer."""
        p = fault.params
        if fault.kind == "hang":
            self._hang()
        if fault.kind == "reset":
            raise _Abort(_partial_response(p.get("stage", "body")), reset=True)
        if fault.kind == "html":
            status = int(p.get("status", 502))
            page = _NGINX_502 if status != 200 else _LOGIN_PAGE
            return _Reply(status, page.encode(), "text/html")
        status = int(p.get("status", 503))
        headers = {}
        if p.get("retry_after") is not None:
            headers["Retry-After"] = str(p["retry_after"])
        body = p.get("body")
        if body is None:
            reply = self._error(_ApiError(status, f"injected fault: HTTP {status}"))
            reply.headers.update(headers)
            return reply
        if isinstance(body, str):
            return _Reply(status, body.encode(), "text/plain; charset=utf-8", headers)
        return _json_reply(status, body, headers)

    # -- other endpoints -----------------------------------------------------
    def _models(self, body: bytes) -> _Reply:
        return _json_reply(200, {"object": "list", "data": [self._card(n) for n in self.served_names]})

    def _card(self, name: str) -> dict:
        return {
            "id": name,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.root,
            "parent": None,
            "max_model_len": self.max_model_len,
            "permission": [
                {
                    "id": f"modelperm-{uuid.uuid4().hex}",
                    "object": "model_permission",
                    "created": self.created,
                    "allow_create_engine": False,
                    "allow_sampling": True,
                    "allow_logprobs": True,
                    "allow_search_indices": False,
                    "allow_view": True,
                    "allow_fine_tuning": False,
                    "organization": "*",
                    "group": None,
                    "is_blocking": False,
                }
            ],
        }

    def _tokenize(self, body: bytes) -> _Reply:
        req = _parse_object(body)
        self._check_model(req.get("model"))
        prompt = req.get("prompt")
        if not isinstance(prompt, str):
            raise _bad("prompt must be a string (chat `messages` are not supported here)", "prompt")
        add_special = req.get("add_special_tokens", True)
        if not isinstance(add_special, bool):
            raise _bad("add_special_tokens must be a boolean", "add_special_tokens")
        ids = tokenize(prompt, add_special_tokens=add_special)
        strs = token_strings(prompt)
        if add_special and not self.appends_eos and ids and ids[-1] == EOS_ID:
            ids = ids[:-1]
        if add_special and ids and ids[-1] == EOS_ID:
            strs = strs + [EOS_TOKEN]
        self._remember(strs, ids)
        return _json_reply(
            200,
            {
                "count": len(ids),
                "max_model_len": self.max_model_len,
                "tokens": ids,
                "token_strs": strs if req.get("return_token_strs") is True else None,
            },
        )

    def _remember(self, strings: list[str], ids: list[int]) -> None:
        """Keep recent id -> token pairs (bounded) so /detokenize can answer."""
        with self._vocab_lock:
            for tok, tid in zip(strings, ids):
                self._vocab[tid] = tok
                self._vocab.move_to_end(tid)
            while len(self._vocab) > 100_000:
                self._vocab.popitem(last=False)

    def _detokenize(self, body: bytes) -> _Reply:
        req = _parse_object(body)
        self._check_model(req.get("model"))
        ids = req.get("tokens")
        if not isinstance(ids, list) or not all(_is_int(i) for i in ids):
            raise _bad("tokens must be a list of integers", "tokens")
        with self._vocab_lock:
            words = [EOS_TOKEN if i == EOS_ID else self._vocab.get(i, f"<unk:{i}>") for i in ids]
        return _json_reply(200, {"prompt": " ".join(words)})

    def _health(self, body: bytes) -> _Reply:
        return _Reply(503 if self.dead else 200, b"", "")

    def _metrics(self, body: bytes) -> _Reply:
        engines = max(1, int(self.engines))
        running = _split(self.stats.running + int(self.other_running), engines)
        waiting = _split(int(self.other_waiting), engines)  # the fake never queues its own
        tokens = _split(self.stats.prompt_tokens, engines)
        lines: list[str] = []
        for name, kind, help_text, values in (
            ("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.", running),
            ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.", waiting),
            (
                "vllm:kv_cache_usage_perc",
                "gauge",
                "KV-cache usage. 1 means 100 percent usage.",
                [min(1.0, r / 64) for r in running],
            ),
            ("vllm:prompt_tokens_total", "counter", "Number of prefill tokens processed.", tokens),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            lines += [
                f'{name}{{engine="{e}",model_name="{self.answer_name}"}} {float(v)}' for e, v in enumerate(values)
            ]
        return _Reply(200, ("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8")

    # -- /_admin (this fake only) ------------------------------------------
    def _admin_add_fault(self, body: bytes) -> _Reply:
        req = _parse_object(body)
        kind = req.pop("kind", None)
        times = req.pop("times", 1)
        match = req.pop("match", None)
        try:
            rule = self.faults.add(kind, times, match=match, **req)
        except (TypeError, ValueError) as exc:
            raise _bad(str(exc)) from None
        return _json_reply(200, {"ok": True, "fault": rule.as_dict(), "pending": len(self.faults)})

    def _admin_clear(self, body: bytes) -> _Reply:
        self.faults.clear()
        return _json_reply(200, {"ok": True, "pending": 0})

    def _admin_list_faults(self, body: bytes) -> _Reply:
        return _json_reply(200, {"pending": self.faults.pending()})

    def _admin_health(self, body: bytes) -> _Reply:
        self.dead = bool(_parse_object(body).get("dead", False))
        return _json_reply(200, {"ok": True, "dead": self.dead})

    def _admin_queue(self, body: bytes) -> _Reply:
        """``{"waiting": N, "running": N, "engines": N}`` (any of them): other tenants'
        requests as ``/metrics`` reports them, and its engine count."""
        req = _parse_object(body)
        unknown = set(req) - {"waiting", "running", "engines"}
        if unknown:
            raise _bad(f"unknown field(s) {sorted(unknown)}; known: engines, running, waiting")
        for key, least in (("waiting", 0), ("running", 0), ("engines", 1)):
            if key in req and not (_is_int(req[key]) and req[key] >= least):
                raise _bad(f"{key} must be an integer >= {least}", key)
        self.other_waiting = req.get("waiting", self.other_waiting)
        self.other_running = req.get("running", self.other_running)
        self.engines = req.get("engines", self.engines)
        return self._admin_queue_figures(b"")

    def _admin_queue_figures(self, body: bytes) -> _Reply:
        return _json_reply(200, {"waiting": self.other_waiting, "running": self.other_running, "engines": self.engines})


def _peer_closed(sock: socket.socket) -> bool:
    """Has the client closed its end (EOF waiting to be read)?"""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _split(total: int, parts: int) -> list[int]:
    """``total`` shared out over ``parts`` engines as evenly as whole requests go."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# --------------------------------------------------------------------------- #
# Vector helpers and response-mangling faults                                 #
# --------------------------------------------------------------------------- #
def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)


def _encode(v: np.ndarray, fmt: str) -> Any:
    if fmt == "base64":
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(v, dtype=np.float32).tolist()


def _mangle_vectors(fault: Fault, vectors: list[np.ndarray], words: list[list[str]], seed: str) -> list[np.ndarray]:
    p, kind = fault.params, fault.kind
    if kind == "wrong_dim":
        other = int(p.get("dim", max(1, len(vectors[0]) // 2)))
        return list(embed_word_lists(words, other, seed))
    if kind == "garbage":
        rng = np.random.default_rng(p.get("seed"))
        return [_unit(rng.standard_normal(len(v))) for v in vectors]
    if kind == "misorder":
        return vectors[1:] + vectors[:1] if len(vectors) > 1 else vectors
    if kind in ("nan", "zero"):
        item = int(p.get("item", 0)) % len(vectors)
        vectors = [v.copy() for v in vectors]
        if kind == "zero":
            vectors[item][:] = 0.0
        else:
            vectors[item][0] = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}[p.get("value", "nan")]
    return vectors


def _mangle_items(fault: Fault, data: list[dict]) -> list[dict]:
    kind, p = fault.kind, fault.params
    if kind == "too_few":
        del data[int(p.get("item", -1)) % len(data)]
    elif kind == "dup_index":
        if len(data) == 1:
            data.append(dict(data[0]))
        else:
            data[-1]["index"] = data[0]["index"]
    elif kind == "shuffle" and len(data) > 1:
        order = list(range(len(data)))
        random.Random(p.get("seed")).shuffle(order)
        if order == sorted(order):  # must actually be out of order
            order = order[1:] + order[:1]
        data = [data[i] for i in order]
    return data


def _partial_response(stage: str) -> bytes:
    """The bytes a `reset` fault sends before the RST."""
    if stage == "headers":
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-le"
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: 65536\r\n\r\n"
        b'{"id":"embd-0","object":"list","created":0,"model":"x","data":[{"index":0,'
    )


# --------------------------------------------------------------------------- #
# Process mode                                                                #
# --------------------------------------------------------------------------- #
def serve_until_signalled(srv: "FakeVLLM", ready_file: Optional[str], banner: str) -> int:
    """Start ``srv``, announce it (stderr line, ready file), serve until SIGTERM/SIGINT, stop."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    srv.start()
    print(f"{banner} listening on {srv.base_url} model={srv.model} dim={srv.dim}", file=sys.stderr, flush=True)
    if ready_file:
        _write_ready_file(ready_file, srv.base_url)
    while not done.wait(0.5):
        pass
    srv.stop()
    return 0


def _write_ready_file(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _arg_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m migrator.testing.server",
        description=f"{BANNER}: serves vLLM's OpenAI-compatible embeddings API (/v1/embeddings, "
        f"/v1/models, /tokenize, /health, /metrics, /version) for tests, the demo and the "
        f"benchmarks. Its vectors come from a deterministic word-hashing stand-in, not a "
        f"model. Faults are queued with POST /_admin/faults.",
        epilog="example: KEY=secret python -m migrator.testing.server --port 8888 --api-key-env KEY "
        "--tokens-per-second 40000, then migrate run --endpoint http://127.0.0.1:8888/v1 with "
        "MIGRATOR_API_KEY=secret",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument(
        "--model", default="Qwen/Qwen3-Embedding-8B", help="the model it pretends to be (its vectors' seed and size)"
    )
    ap.add_argument(
        "--served-model-name",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the names it serves the model under, like vLLM's flag (answers name the first)",
    )
    ap.add_argument(
        "--vllm-version",
        default=VLLM_VERSION,
        help=f"the vLLM version it behaves as (default {VLLM_VERSION}; the max-length hang "
        f"exists on 0.9.2 to 0.31 only)",
    )
    ap.add_argument("--dim", type=int, default=None, help="vector size (default: the model's, 4096 for an unknown one)")
    ap.add_argument("--max-model-len", type=int, default=8192, help="the context length it reports and enforces")
    ap.add_argument(
        "--error-shape",
        choices=("new", "old"),
        default="new",
        help="error bodies as vLLM >= 0.10.1 writes them ({error: {...}}) or older (flat)",
    )
    ap.add_argument(
        "--matryoshka",
        action="store_true",
        help="accept `dimensions` (as vLLM does only with is_matryoshka in the model config)",
    )
    ap.add_argument(
        "--accept-normalize", action="store_true", help="ignore `normalize` like older vLLM instead of rejecting it"
    )
    ap.add_argument("--seed", default=None, help="embedding seed (default: model name)")
    ap.add_argument(
        "--tokens-per-second",
        type=float,
        default=None,
        help="a capacity shared by all requests, like a GPU's (default: as fast as it can)",
    )
    ap.add_argument(
        "--request-overhead", type=float, default=0.0, metavar="SECONDS", help="fixed time added to every request"
    )
    ap.add_argument(
        "--hang-blocks-others",
        action="store_true",
        help="a hung request stalls every later one too (worse than any vLLM)",
    )
    ap.add_argument("--no-hang-blocks-others", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--api-key-env", metavar="VAR", default=None, help="name of the environment variable holding the API key"
    )
    ap.add_argument("--ready-file", default=None, help="write the base URL here (atomically) once listening")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    args = _arg_parser().parse_args(argv)
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(f"error: environment variable {args.api_key_env} is not set or empty", file=sys.stderr)
            return 2
    srv = FakeVLLM(
        model=args.model,
        dim=args.dim,
        max_model_len=args.max_model_len,
        api_key=api_key,
        error_shape=args.error_shape,
        matryoshka=args.matryoshka,
        reject_normalize=not args.accept_normalize,
        host=args.host,
        port=args.port,
        seed=args.seed,
        tokens_per_second=args.tokens_per_second,
        request_overhead_s=args.request_overhead,
        hang_blocks_others=args.hang_blocks_others,
        verbose=args.verbose,
        served_names=args.served_model_name,
        version=args.vllm_version,
    )
    return serve_until_signalled(srv, args.ready_file, BANNER)


if __name__ == "__main__":
    sys.exit(main())
