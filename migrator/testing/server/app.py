"""``FakeVLLM``, the fake vLLM server itself: its routes and how each answers, vLLM's hang included."""

from __future__ import annotations

import hmac
import json
import select
import socket
import ssl
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from migrator.testing.embedder import EOS_ID, EOS_TOKEN, MODEL_DIMS, embed_word_lists, token_strings, tokenize
from migrator.testing.server.capacity import _SharedCapacity
from migrator.testing.server.faults import (
    _LOGIN_PAGE,
    _NGINX_502,
    _PRE_FAULTS,
    Fault,
    FaultQueue,
    _mangle_items,
    _mangle_vectors,
    _partial_response,
)
from migrator.testing.server.http import _HTTPServer
from migrator.testing.server.replies import _Abort, _ApiError, _json_reply, _Reply
from migrator.testing.server.requests import _bad, _is_int, _parse_input, _parse_object, _prepare, _Prepared
from migrator.testing.server.stats import ServerStats
from migrator.testing.server.vectors import (
    BYTES_FORMATS,
    EMBED_DTYPES,
    ENDIANNESS,
    JSON_FORMATS,
    WRITABLE_DTYPES,
    Wire,
    _unit,
    embeddings_reply,
)
from migrator.vllm.endpoint import parse_version

VLLM_VERSION = "0.31.0"  # the newest release that still has the exactly-max-length hang
OTHER_MODEL = "intfloat/e5-mistral-7b-instruct"


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

    def _wire(self, req: dict) -> Wire:
        """encoding_format, embed_dtype and endianness, as this server's version knows them."""
        formats: tuple[str, ...] = JSON_FORMATS
        if self.version >= (0, 11, 1):
            formats += BYTES_FORMATS[:1]
        if self.version >= (0, 13):
            formats += BYTES_FORMATS[1:]
        fmt = req.get("encoding_format") or "float"
        if fmt not in formats:
            allowed = " or ".join(repr(f) for f in formats)
            raise _bad(f"encoding_format: Input should be {allowed}", "encoding_format")
        if self.version < (0, 11, 1):
            return Wire(fmt)  # embed_dtype and endianness are unknown fields, ignored
        dtype = req.get("embed_dtype") or "float32"
        if dtype not in EMBED_DTYPES:
            raise _bad(f"embed_dtype: Input should be one of {', '.join(EMBED_DTYPES)}", "embed_dtype")
        if dtype not in WRITABLE_DTYPES:
            raise _bad(f"embed_dtype {dtype!r}: this fake server writes only float32 and float16", "embed_dtype")
        order = req.get("endianness") or "native"
        if order not in ENDIANNESS:
            raise _bad(f"endianness: Input should be one of {', '.join(ENDIANNESS)}", "endianness")
        return Wire(fmt, dtype, order)

    def _options(self, req: dict) -> tuple[Wire, Optional[int], Optional[int], bool]:
        fmt = self._wire(req)
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
        self, prepared: list[_Prepared], fmt: Wire, dims: Optional[int], tokens: int, fault: Optional[Fault]
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
        self.stats.answered(len(prepared), tokens)
        mangle = (lambda items: _mangle_items(fault, items)) if fault is not None else None
        reply = embeddings_reply(vectors, fmt, model, tokens, mangle)
        if fault is not None and fault.kind == "no_metadata":
            reply.headers.pop("metadata", None)
        return reply

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
