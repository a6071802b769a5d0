"""Talking to vLLM's OpenAI-compatible embeddings endpoint.

Everything about the wire lives here: the model names and sizes, the probe
(`/v1/models`, one test embedding, `/tokenize`), the embedding call (the same
request the ``openai`` SDK's ``embeddings.create`` sends, built and sent here on
httpx: see :mod:`migrator.vllm.http`), validation of every answer, retries, and the
defences against vLLM's exactly-max-length hang (vllm#29496):

- every request carries ``truncate_prompt_tokens = max_model_len - 1``, so no
  prompt ever reaches ``max_model_len`` tokens;
- every request has a timeout; a batch that times out is split in halves until
  the input that never answers is isolated and reported, instead of retrying
  it forever.

From vLLM 0.11.1 the vectors come back binary (``encoding_format: "bytes"``),
else as base64 JSON. An answer is written only after it has passed
:meth:`Endpoint.decode` or :meth:`Endpoint.decode_bytes`: right
count, each index exactly once, the expected model, the expected dimension,
finite non-zero values. Anything else is retried, never stored.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Protocol, cast
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import orjson
import tenacity

from migrator.errors import BadResponse, EndpointRejected, EndpointUnavailable, UsageError
from migrator.files import nvdb
from migrator.vllm.http import Http, StatusError, TimedOut, Unreachable, bearer, send

log = logging.getLogger("migrator.vllm.endpoint")

MIN_DIM = 32  # Qwen documents 32 as the smallest useful Matryoshka size
QWEN_EOS = "<|endoftext|>"  # Qwen3-Embedding's tokenizer appends it; the last token pools
ENDIANNESS_SINCE = (0, 11, 1)  # vLLM knows the `endianness` field from 0.11.1
BYTES_SINCE = (0, 11, 1)  # ... and `encoding_format: "bytes"`: raw float32 rows, a JSON header
# The `metadata` header grows about 115 bytes an input; httpcore refuses headers over
# 100 KiB (near 870 inputs). A larger request asks for base64 instead.
BYTES_MAX_INPUTS = 512

# alias -> (model id, native dimension)
MODELS = {
    "8b": ("Qwen/Qwen3-Embedding-8B", 4096),
    "4b": ("Qwen/Qwen3-Embedding-4B", 2560),
    "0.6b": ("Qwen/Qwen3-Embedding-0.6B", 1024),
}
KNOWN_DIMS = {model: dim for model, dim in MODELS.values()}

BAD_RESPONSE_TRIES = 5  # consecutive invalid answers for one batch before we give up
TIMEOUTS_BEFORE_SPLIT = 1  # extra timeouts of a single input before we call it poisoned


def resolve_model(name: str) -> tuple[str, int | None]:
    """'8b' -> ('Qwen/Qwen3-Embedding-8B', 4096); a full id -> (id, known dim or None)."""
    key = name.strip().lower()
    if key in MODELS:
        return MODELS[key]
    if not name.strip():
        raise UsageError("--model is empty: use 8b, 4b, 0.6b or a full model id")
    return name.strip(), KNOWN_DIMS.get(name.strip())


def _last_part(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _is_hub_id(root: str | None) -> bool:
    if not root:
        return False
    return "/" in root and not root.startswith(("/", ".", "~")) and root.count("/") == 1


def match_card(cards: list[dict], model_id: str, known: bool) -> tuple[dict | None, str]:
    """Which of the server's model cards ``model_id`` names, and how (for the log).

    By a served name; else by the card's ``root`` (the hub id, or a local path whose last part
    is the model's, as when vLLM was given /models/Qwen3-Embedding-8B); else, for a
    Qwen3-Embedding preset or id only, the single model served under another name (the
    dimension check that follows still has to pass). Never anything else: an unknown
    ``--model`` must not be replaced by whatever the server happens to serve.
    """
    for c in cards:
        if c.get("id") == model_id:
            return c, ""
    for c in cards:
        root = c.get("root")
        if isinstance(root, str) and (
            root == model_id or ("/" in model_id and _last_part(root) == _last_part(model_id))
        ):
            return c, f"the server serves {model_id} as {c['id']!r}"
    roots = {c.get("root") or c.get("id") for c in cards}
    if known and len(roots) == 1:
        c = cards[0]
        return c, (
            f"the server names its model {c['id']!r} (loaded from {c.get('root') or '?'}); taking it "
            f"for {model_id} because it gives {model_id}'s dimension"
        )
    return None, ""


def parse_version(text: object) -> tuple[int, ...] | None:
    """'0.32.0', 'v0.10.1', '0.32.0+cpu' -> (0, 32, 0); None if it is no version."""
    m = re.match(r"\s*v?(\d+)\.(\d+)(?:\.(\d+))?", text) if isinstance(text, str) else None
    return tuple(int(x) for x in m.groups(default="0")) if m else None


def normalize_endpoint(url: str) -> tuple[str, str]:
    """(base URL ending in /v1, server root URL). Refuses URLs carrying credentials."""
    parts = urlsplit(url.strip())
    if "@" in parts.netloc or "@" in url:
        raise UsageError(
            "--endpoint must not carry credentials; put the key in MIGRATOR_API_KEY or a file named by --api-key-file"
        )
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--endpoint {url.strip()[:80]!r} is not an http(s) URL like http://localhost:8888/v1")
    if parts.query or parts.fragment:
        raise UsageError(
            "--endpoint must not carry a query string or fragment (a key belongs in MIGRATOR_API_KEY or --api-key-file)"
        )
    path = parts.path.rstrip("/")
    if not path.endswith("/v1"):
        path = path + "/v1"
    root_path = path[: -len("/v1")]
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    root = urlunsplit((parts.scheme, parts.netloc, root_path, "", ""))
    return base, root


@dataclass
class ServerInfo:
    base_url: str
    model: str  # the model's identity: recorded in the job table and provenance
    served_models: list[str]  # every name the server serves it under
    max_model_len: int | None
    native_dim: int
    tokenize: bool  # /tokenize answers (exact token counts)
    note: str = ""
    request_name: str = ""  # the served name each request carries
    root: str | None = None  # the card's `root` (the hub id or path vLLM loaded)
    version: tuple[int, ...] | None = None  # GET /version, when the server has it

    def answers_as(self, name: object) -> bool:
        """May an answer name ``name`` as its model? vLLM >= 0.11 names the *first* served
        name whatever the request asked for, so any of the server's names is this model."""
        return name in self.served_models or name == self.request_name


@dataclass
class Embedded:
    vectors: np.ndarray  # (n, target_dim) float32, unit rows
    prompt_tokens: int


class _Embeds(Protocol):
    """What :meth:`Endpoint.may_be_truncated` and :meth:`Endpoint.measure` use of ``self``: an
    :class:`Endpoint` or a :class:`~migrator.vllm.pool.EndpointPool`, which shares them."""

    info: ServerInfo | None

    async def embed(self, texts: list[str]) -> Embedded: ...


class PoisonedInput(Exception):
    """One input that the server never answers (the vLLM hang); index into the batch."""

    def __init__(self, index: int, detail: str):
        super().__init__(detail)
        self.index = index
        self.detail = detail


class _SuspectedHang(Exception):
    pass


def _status_message(e: StatusError) -> str:
    """The server's own words from either vLLM error shape (or a proxy's page)."""
    body = e.doc
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err)[:300]
        return str(err)[:300]
    text = e.text
    if text.lstrip().startswith("<"):
        return "an HTML page (a proxy in front of vLLM?)"
    return (text or str(e))[:300]


def _no_embeddings_route(e: StatusError) -> bool:
    """A server whose model cannot embed: vLLM 0.11 answers 400 "does not support Embeddings
    API"; 0.33 has no route at all, so FastAPI's bare 404 ``{"detail": "Not Found"}``."""
    msg = _status_message(e).lower()
    if e.status == 400 and "does not support embeddings" in msg:
        return True
    body = e.doc
    return e.status == 404 and isinstance(body, dict) and body.get("detail") == "Not Found"


def _server_error(e: BaseException) -> bool:
    """A 5xx: the server (or a proxy) is failing, not refusing this request."""
    return isinstance(e, StatusError) and e.status >= 500


def _pushback(e: BaseException) -> bool:
    """429, 5xx or a timeout: the server cannot keep up (the adaptive limit backs off)."""
    return isinstance(e, TimedOut) or (isinstance(e, StatusError) and (e.status == 429 or e.status >= 500))


def _connection_failed(e: BaseException) -> bool:
    """No answer, not for want of time (another endpoint might answer at once), or a 5xx."""
    return (isinstance(e, Unreachable) and not isinstance(e, TimedOut)) or _server_error(e)


def _retry_after(e: BaseException) -> float | None:
    if not isinstance(e, StatusError):
        return None
    value = e.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 300.0))
    except ValueError:
        return None


class _NoMetadata(Exception):
    """A binary answer came without its `metadata` header."""


def _index_once(item: object, n: int, seen: np.ndarray) -> int:
    """The answer item's index: an int in 0..n-1 that no other item of the answer has."""
    idx = item.get("index") if isinstance(item, dict) else None
    if isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < n:
        raise BadResponse(f"an item has index {idx!r}, outside 0..{n - 1}")
    if seen[idx]:
        raise BadResponse(f"index {idx} appears twice")
    seen[idx] = True
    return idx


def _finite(out: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(out)):
        bad = int(np.where(~np.all(np.isfinite(out), axis=1))[0][0])
        raise BadResponse(f"item {bad}: NaN or infinite values")
    return out


def _prompt_tokens(doc: dict) -> int:
    usage = doc.get("usage")
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return int(tokens) if isinstance(tokens, int) and not isinstance(tokens, bool) else 0


def unit_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Cut each row to its first ``dim`` values (Matryoshka) and L2-normalise."""
    cut = np.ascontiguousarray(vectors[:, :dim], dtype=np.float32)
    norms = np.linalg.norm(cut.astype(np.float64), axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise BadResponse(f"a vector is zero in its first {dim} values")
    return (cut / norms).astype(np.float32)


class Endpoint:
    """An async client for one vLLM embeddings endpoint."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        request_timeout: float = 120.0,
        retry_for: float = 600.0,
        verify_tls: bool = True,
        key_source: str | None = None,
        on_pushback: Callable[[str], None] | None = None,
        http: Http | None = None,
    ):
        """``http``: the command's client for the small requests (made here if not given)."""
        self.base_url, self.root_url = normalize_endpoint(url)
        self._key = api_key
        self.key_source = key_source  # where the key came from, for messages (config.key_source)
        self.http = http or Http(verify_tls=verify_tls)
        if not self.http.verify_tls and self.base_url.startswith("https:"):
            log.warning(
                "TLS certificate verification is OFF for %s (--insecure): anyone on the "
                "path can read the key and the texts",
                self.base_url,
            )
        self.request_timeout = request_timeout
        self.retry_for = retry_for
        # no retries but ours (they must see validation failures too); the worker header is the client's
        self.client = self.http.async_client()
        self._auth = bearer(api_key)
        self._post_headers = {"Content-Type": "application/json", "Accept": "application/json", **self._auth}
        self.info: ServerInfo | None = None
        self.target_dim: int | None = None
        # raw float32 answers (no JSON, no base64 on either side), from a vLLM that has them
        self.binary = False
        # called with a reason on 429/5xx/timeouts (the run's tuning.AdaptiveLimit.throttled)
        self._on_pushback = on_pushback
        # Given by pool.EndpointPool when it takes this endpoint in (serve_in_pool): True while
        # another endpoint could take this one's request. Then a connection error or 5xx is
        # raised at once (EndpointUnavailable) instead of retried here, and a timed-out batch is
        # split only if a tiny request still answers. None (a lone endpoint): retry here for
        # `retry_for`, as always.
        self._can_fail_over: Callable[[], bool] | None = None

    def serve_in_pool(self, can_fail_over: Callable[[], bool], on_pushback: Callable[[str], None]) -> None:
        """Become a member of a pool: fail over through it, and report pushback to it."""
        self._can_fail_over, self._on_pushback = can_fail_over, on_pushback

    @property
    def in_pool(self) -> bool:
        return self._can_fail_over is not None

    async def aclose(self) -> None:
        await self.client.aclose()

    # ---------------------------------------------------------------- probing
    def _describe(self, e: BaseException) -> str:
        if isinstance(e, TimedOut):
            return f"no answer within {self.request_timeout:g}s"
        if isinstance(e, Unreachable):
            return f"cannot connect ({str(e)[:200] or 'connection failed'})"
        if isinstance(e, StatusError):
            return f"HTTP {e.status}: {_status_message(e)}"
        return str(e)[:300]

    def _fatal(self, e: Exception) -> Exception | None:
        """Map answers that no retry can fix to a clear error; None if transient."""
        if not isinstance(e, StatusError):
            return None
        if e.status in (401, 403):
            src = self.key_source
            fix = (
                f"put the server's key (its VLLM_API_KEY or --api-key) in {src[5:]}, the --api-key-file"
                if src and src.startswith("file:")
                else f"set {src} to the server's key (its VLLM_API_KEY or --api-key)"
                if src
                else "no key was given: set MIGRATOR_API_KEY or VLLM_API_KEY, or pass --api-key-file"
            )
            return EndpointRejected(f"{self.base_url}: the API key was refused (HTTP {e.status}); {fix}")
        if _no_embeddings_route(e):
            served = f" ({self.info.request_name})" if self.info else ""
            return EndpointRejected(
                f"{self.base_url}: the server's model{served} is not an embedding model "
                f"(HTTP {e.status}: {_status_message(e)}); serve an embedding model "
                f"with `vllm serve MODEL --runner pooling` (`--task embed` before "
                f"vLLM 0.10.1)"
            )
        if e.status == 404:
            return EndpointRejected(
                f"{self.base_url}: {_status_message(e)} (HTTP 404); check --model against the server's /v1/models"
            )
        if e.status in (400, 413, 422):
            return EndpointRejected(f"{self.base_url}: request refused, HTTP {e.status}: {_status_message(e)}")
        return None

    async def probe(self, requested: str, *, target_dim: int | None = None) -> ServerInfo:
        """Find the served model, its max_model_len and native dimension; check ``requested``."""
        model_id, expected_dim = resolve_model(requested)
        try:
            raw = await send(
                self.client,
                "GET",
                self.base_url + "/models",
                timeout=min(30.0, self.request_timeout),
                headers=self._auth,
            )
            cards = orjson.loads(raw.content).get("data", [])
        except (Unreachable, StatusError) as e:
            if isinstance(e, StatusError) and not _server_error(e):
                raise (self._fatal(e) or EndpointUnavailable(f"{self.base_url}: {self._describe(e)}")) from None
            what = self._describe(e)
            hint = (
                "the server's TLS certificate is not trusted: give it a trusted one, or pass --insecure"
                if "CERTIFICATE_VERIFY_FAILED" in what
                else "is vLLM running? (start it, or pass --endpoint)"
            )
            raise EndpointUnavailable(f"{self.base_url}: {what}; {hint}") from None
        except (orjson.JSONDecodeError, AttributeError):
            raise EndpointRejected(
                f"{self.base_url}/models: the answer is not vLLM's model list (is --endpoint the vLLM server?)"
            ) from None
        cards = [c for c in cards if isinstance(c, dict) and isinstance(c.get("id"), str) and c["id"]]
        served = [c["id"] for c in cards]
        card, note = match_card(cards, model_id, known=expected_dim is not None)
        if card is None:
            roots = sorted({c.get("root") for c in cards if isinstance(c.get("root"), str)} - set(served))
            also = f" (loaded from {', '.join(roots)})" if roots else ""
            raise EndpointRejected(
                f"{self.base_url}: serves {', '.join(served) or 'no model'}{also}, not {model_id}; pass "
                f"--model as one of those names, or 8b, 4b or 0.6b for a Qwen3-Embedding model"
            )
        root = card.get("root") if isinstance(card.get("root"), str) else None
        if expected_dim is None and _is_hub_id(root) and root in KNOWN_DIMS:
            # --model named an alias of a Qwen3-Embedding model: record the model by its id
            model_id, expected_dim = root, KNOWN_DIMS[root]
        max_len = card.get("max_model_len")
        max_len = int(max_len) if isinstance(max_len, int) and max_len > 1 else None
        self.info = ServerInfo(
            self.base_url,
            model_id,
            served,
            max_len,
            native_dim=0,
            tokenize=False,
            note=note,
            request_name=card["id"],
            root=root,
            version=await self._version(),
        )
        self.binary = self.info.version is not None and self.info.version >= BYTES_SINCE
        native = await self._probe_dim(card["id"])
        for _ in range(BAD_RESPONSE_TRIES - 1):  # one odd answer is not a verdict
            if expected_dim is None or native == expected_dim:
                break
            await asyncio.sleep(0.2)
            native = await self._probe_dim(card["id"])
        if expected_dim is not None and native != expected_dim:
            raise EndpointRejected(
                f"{self.base_url}: model {card['id']!r} gives {native}-dim vectors, but "
                f"{model_id} has {expected_dim}; is the right model being served?"
            )
        self.info.native_dim = native
        want = target_dim or native
        if want > native or want < MIN_DIM:
            raise UsageError(f"--dim {want}: must be between {MIN_DIM} and the model's {native} dimensions")
        self.target_dim = want
        probe_tokens = await asyncio.to_thread(self._tokenize_doc, "migrator probe", strings=True)
        self.info.tokenize = probe_tokens is not None and isinstance(probe_tokens.get("count"), int)
        self._check_eos(probe_tokens)
        return self.info

    async def _version(self) -> tuple[int, ...] | None:
        """GET /version (vLLM's own route; proxies and other servers may lack it)."""

        def get() -> tuple[int, ...] | None:
            try:
                answer = self.http.get(self.root_url + "/version", timeout=min(10.0, self.request_timeout))
                if answer.status != 200:
                    return None
                return parse_version(json.loads(answer.body).get("version"))
            except (Unreachable, ValueError, AttributeError):
                return None

        return await asyncio.to_thread(get)

    def _check_eos(self, doc: dict | None) -> None:
        """A Qwen3-Embedding whose tokenizer does not append EOS gives other vectors, silently.

        The current hub revision's tokenizer appends ``<|endoftext|>``; older snapshots did
        not (QwenLM/Qwen3-Embedding#54). /tokenize shows it where it returns ``token_strs``.
        """
        assert self.info is not None
        qwen = "qwen3-embedding" in f"{self.info.model} {self.info.root or ''}".lower()
        strs = doc.get("token_strs") if isinstance(doc, dict) else None
        if not qwen or not isinstance(strs, list) or not strs:
            return
        if strs[-1] != QWEN_EOS:
            raise EndpointRejected(
                f"{self.base_url}: {self.info.request_name}'s tokenizer does not append {QWEN_EOS} "
                f"(the last token of a test prompt is {strs[-1]!r}), so its vectors are not "
                f"{self.info.model}'s; update the model snapshot (huggingface-cli download "
                f"{self.info.model}) and restart vLLM"
            )

    async def _probe_dim(self, model: str) -> int:
        try:
            vec, _ = await self._attempts(["migrator probe: a short test sentence."], model, None)
        except _SuspectedHang:
            raise EndpointUnavailable(
                f"{self.base_url}: a one-line test embedding got no answer within "
                f"{self.request_timeout:g}s (twice); is the server stuck?"
            ) from None
        return int(vec.shape[1])

    # --------------------------------------------------------------- tokenize
    def _tokenize_doc(self, text: str, *, strings: bool = False) -> dict | None:
        """POST /tokenize (vLLM's, beside /v1): the whole answer, or None when there is none.
        ``strings`` asks for ``token_strs`` too (vLLM fills it only when asked)."""
        req_doc: dict = {"model": self.info.request_name if self.info else None, "prompt": text}
        if strings:
            req_doc["return_token_strs"] = True
        try:
            answer = self.http.post_json(
                self.root_url + "/tokenize", req_doc, timeout=min(30.0, self.request_timeout), headers=bearer(self._key)
            )
            if answer.status != 200:
                return None
            doc = json.loads(answer.body)
            return doc if isinstance(doc, dict) else None
        except (Unreachable, ValueError):
            return None

    def _tokenize_one(self, text: str) -> int | None:
        doc = self._tokenize_doc(text)
        count = doc.get("count") if doc else None
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    async def count_tokens(self, texts: list[str], *, concurrency: int = 8) -> list[int] | None:
        """Exact token counts from the server's /tokenize, or None when it has none."""
        sem = asyncio.Semaphore(concurrency)

        async def one(t: str) -> int | None:
            async with sem:
                return await asyncio.to_thread(self._tokenize_one, t)

        counts = await asyncio.gather(*(one(t) for t in texts))
        if any(c is None for c in counts):
            return None
        return list(cast("list[int]", counts))  # none is None (checked above)

    def may_be_truncated(self: _Embeds, text: str) -> bool:
        """Could ``text`` reach max_model_len tokens? (Byte-level BPE: tokens <= UTF-8 bytes + EOS.)"""
        limit = self.info.max_model_len if self.info else None
        return limit is not None and len(text.encode("utf-8")) + 1 > limit - 1

    # -------------------------------------------------------------- embedding
    def decode(self, payload: bytes, n: int, model: str, native_dim: int | None) -> tuple[np.ndarray, int]:
        # ``model`` is the served name the request carried; any other name of the same server is fine
        """Validate an embeddings answer for ``n`` inputs; returns (n x native matrix, prompt tokens)."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            head = payload[:60].decode("utf-8", "replace").strip()
            kind = "an HTML page (a proxy error?)" if head.startswith("<") else f"not JSON ({head!r}...)"
            raise BadResponse(f"the answer is {kind}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise BadResponse("the answer has no 'data' list")
        self._check_answered_by(doc.get("model"), model)
        data = doc["data"]
        if len(data) != n:
            raise BadResponse(f"{len(data)} embeddings for {n} inputs")
        out: np.ndarray | None = None
        seen = np.zeros(n, dtype=bool)
        for item in data:
            idx = _index_once(item, n, seen)
            emb = item.get("embedding")
            if isinstance(emb, str):
                try:
                    raw = nvdb.b64decode_strict(emb)
                except (binascii.Error, ValueError):
                    raise BadResponse(f"item {idx}: embedding is not valid base64") from None
                if len(raw) % 4:
                    raise BadResponse(f"item {idx}: {len(raw)} bytes is not whole float32 values")
                vec = np.frombuffer(raw, dtype="<f4")
            elif isinstance(emb, list):
                try:
                    vec = np.asarray(emb, dtype=np.float32)
                except (TypeError, ValueError):
                    raise BadResponse(f"item {idx}: embedding holds non-numbers") from None
                if vec.ndim != 1:
                    raise BadResponse(f"item {idx}: embedding is not a flat list")
            else:
                raise BadResponse(f"item {idx}: no embedding")
            want = native_dim if native_dim else (out.shape[1] if out is not None else len(vec))
            if len(vec) != want:
                raise BadResponse(f"item {idx}: {len(vec)} dimensions, expected {want}")
            if out is None:
                out = np.empty((n, want), dtype=np.float32)
            out[idx] = vec
        if out is None:
            raise BadResponse("empty answer")
        return _finite(out), _prompt_tokens(doc)

    def _check_answered_by(self, answered_by: object, model: str) -> None:
        if (
            answered_by is not None
            and answered_by != model
            and not (self.info is not None and self.info.answers_as(answered_by))
        ):
            names = self.info.served_models if self.info is not None else [model]
            raise BadResponse(f"answered by model {answered_by!r}, expected {' or '.join(map(repr, names))}")

    def decode_bytes(
        self, body: bytes, metadata: str | None, n: int, model: str, native_dim: int | None
    ) -> tuple[np.ndarray, int]:
        """Validate a binary answer (``encoding_format: "bytes"``): float32 rows back to back
        in ``body``, and a ``metadata`` header naming each input's ``index``, byte range
        (``start``, ``end``), ``shape``, ``embed_dtype`` and ``endianness``, plus ``usage``."""
        if metadata is None:
            raise _NoMetadata()
        try:
            doc = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            raise BadResponse("the answer's `metadata` header is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            raise BadResponse("the answer's `metadata` header has no 'data' list")
        self._check_answered_by(doc.get("model"), model)
        items = doc["data"]
        if len(items) != n:
            raise BadResponse(f"{len(items)} embeddings for {n} inputs")
        first = items[0] if items and isinstance(items[0], dict) else {}
        shape = first.get("shape")
        dim = native_dim or (shape[0] if isinstance(shape, list) and len(shape) == 1 else 0)
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise BadResponse(f"item 0: shape {shape!r} is not one row of values")
        row = dim * 4
        if len(body) == n * row and all(
            isinstance(it, dict)
            and it.get("index") == i
            and it.get("start") == i * row
            and it.get("end") == (i + 1) * row
            and it.get("shape") == [dim]
            and it.get("embed_dtype") == "float32"
            and it.get("endianness") == "little"
            for i, it in enumerate(items)
        ):  # what vLLM sends: rows in input order, back to back; read in place
            return _finite(np.frombuffer(body, dtype="<f4").reshape(n, dim)), _prompt_tokens(doc)
        out = np.empty((n, dim), dtype=np.float32)
        seen = np.zeros(n, dtype=bool)
        for it in items:
            idx = _index_once(it, n, seen)
            if it.get("embed_dtype") != "float32" or it.get("endianness") != "little":
                raise BadResponse(
                    f"item {idx}: {it.get('embed_dtype')!r} {it.get('endianness')!r}, asked for little-endian float32"
                )
            start, end = it.get("start"), it.get("end")
            if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= len(body)):
                raise BadResponse(f"item {idx}: bytes {start!r}..{end!r} outside the {len(body)}-byte answer")
            if it.get("shape") != [(end - start) // 4] or (end - start) % 4:
                raise BadResponse(f"item {idx}: shape {it.get('shape')!r} does not fit {end - start} bytes")
            if end - start != row:
                raise BadResponse(f"item {idx}: {(end - start) // 4} dimensions, expected {dim}")
            out[idx] = np.frombuffer(body, dtype="<f4", count=dim, offset=start)
        return _finite(out), _prompt_tokens(doc)

    async def _request(self, texts: list[str], model: str, native_dim: int | None) -> tuple[np.ndarray, int]:
        binary = self.binary and len(texts) <= BYTES_MAX_INPUTS
        body: dict[str, object] = {"model": model, "input": texts, "encoding_format": "bytes" if binary else "base64"}
        if self.info and self.info.max_model_len:
            body["truncate_prompt_tokens"] = self.info.max_model_len - 1
        if self.info and self.info.version and self.info.version >= ENDIANNESS_SINCE:
            body["endianness"] = "little"  # base64 is otherwise in the server's native order
        if binary:
            body["embed_dtype"] = "float32"
        # The request `openai_client.embeddings.create(..., encoding_format=..., extra_body=...)`
        # sends, json-encoded by orjson in one call (the SDK walked every input in Python).
        try:
            raw = await send(
                self.client,
                "POST",
                self.base_url + "/embeddings",
                content=orjson.dumps(body),
                headers=self._post_headers,
                timeout=self.request_timeout,
            )
        except StatusError as e:
            if not binary or e.status != 400 or "encoding_format" not in _status_message(e):
                raise
            self._binary_refused(f"refused it ({_status_message(e)[:120]})")
            return await self._request(texts, model, native_dim)
        if not binary:
            return self.decode(raw.content, len(texts), model, native_dim)
        try:
            return self.decode_bytes(raw.content, raw.headers.get("metadata"), len(texts), model, native_dim)
        except _NoMetadata:
            self._binary_refused("answered without the `metadata` header (a proxy dropping it?)")
            return await self._request(texts, model, native_dim)

    def _binary_refused(self, why: str) -> None:
        """Binary answers do not work with this server: base64 from now on."""
        if self.binary:
            self.binary = False
            log.warning(
                '%s: asked for binary embeddings (encoding_format "bytes"), the server %s; using base64 from now on',
                self.base_url,
                why,
            )

    def _classify(self, e: BaseException, texts: list[str]) -> BaseException | None:
        """What a failed request means: None to retry it, or the exception to raise instead."""
        if isinstance(e, BadResponse):
            return None
        if isinstance(e, TimedOut):
            # Possibly a poisoned input (the vLLM hang), possibly load. A batch is split at
            # once (smaller requests are harmless under load); a single input gets one more
            # try before we ask whether the server answers anything else.
            return _SuspectedHang() if len(texts) > 1 else None
        if isinstance(e, Unreachable) or _pushback(e):
            return None
        if isinstance(e, StatusError):
            fatal = self._fatal(e)
            if fatal is None:
                return None  # 408, 409 and other passing refusals
            if "context length" in _status_message(e).lower():
                if len(texts) == 1:
                    return PoisonedInput(0, f"the server says it is too long: {_status_message(e)}")
                return _SuspectedHang()  # split to name the long input
            return fatal
        return e  # not ours to handle

    async def _attempts(self, texts: list[str], model: str, native_dim: int | None) -> tuple[np.ndarray, int]:
        """One batch, validated, retried with backoff until ``retry_for`` seconds pass.

        Retries (tenacity): connection errors, 408/409/429/5xx (honouring Retry-After),
        answers that fail validation (at most BAD_RESPONSE_TRIES in a row), and one
        timeout of a single input. Everything else is raised at once.
        """
        counts = {"bad": 0, "timeouts": 0}

        def retry_this(state: tenacity.RetryCallState) -> bool:
            e = state.outcome.exception() if state.outcome else None
            if self._on_pushback is not None and e is not None and _pushback(e):
                self._on_pushback(self._describe(e))
            if e is None or self._classify(e, texts) is not None:
                return False
            if _connection_failed(e) and self._may_fail_over():
                counts["handed_over"] = 1
                return False
            if isinstance(e, BadResponse):
                counts["bad"] += 1
                return counts["bad"] < BAD_RESPONSE_TRIES
            if isinstance(e, TimedOut):
                counts["timeouts"] += 1
                return counts["timeouts"] <= TIMEOUTS_BEFORE_SPLIT
            return True

        backoff = tenacity.wait_random_exponential(multiplier=0.5, max=30)

        def wait(state: tenacity.RetryCallState) -> float:
            e = state.outcome.exception() if state.outcome else None
            if isinstance(e, TimedOut):
                return 0.0
            after = _retry_after(e) if e is not None else None
            return after if after is not None else backoff(state)

        def before_sleep(st: tenacity.RetryCallState) -> None:
            # tenacity sleeps only after a failed attempt that retry_this chose to retry
            e = st.outcome.exception() if st.outcome is not None else None
            assert e is not None
            log.debug("retrying a batch of %d after %s", len(texts), self._describe(e))

        retrying = tenacity.AsyncRetrying(
            retry=retry_this,
            wait=wait,
            stop=tenacity.stop_after_delay(self.retry_for),
            reraise=True,
            before_sleep=before_sleep,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._request(texts, model, native_dim)
        except BaseException as e:
            verdict = self._classify(e, texts)
            if verdict is not None and verdict is not e:
                raise verdict from None
            if counts.get("handed_over"):
                raise EndpointUnavailable(f"{self.base_url}: {self._describe(e)}") from None
            if isinstance(e, BadResponse):
                raise EndpointRejected(
                    f"{self.base_url}: {counts['bad']} invalid answers in a row for one "
                    f"batch, last: {e}; nothing was written"
                ) from None
            if isinstance(e, TimedOut) and counts["timeouts"] > TIMEOUTS_BEFORE_SPLIT:
                raise _SuspectedHang() from None
            if isinstance(e, (Unreachable, StatusError, BadResponse)):
                raise EndpointUnavailable(
                    f"{self.base_url}: still failing after {self.retry_for:g}s of "
                    f"retries ({self._describe(e)}); run again to resume"
                ) from None
            raise
        raise AssertionError("unreachable")

    def _may_fail_over(self) -> bool:
        """Could another endpoint take this request (see ``can_fail_over``)?"""
        return self._can_fail_over is not None and bool(self._can_fail_over())

    async def alive(self) -> bool:
        """Does a tiny request answer promptly? Tells a poisoned input from an outage."""
        try:
            assert self.info is not None  # probed first; unprobed, this is False (the except below), as before
            await asyncio.wait_for(
                self._request(["ping"], self.info.request_name, self.info.native_dim),
                timeout=min(30.0, self.request_timeout),
            )
            return True
        except Exception:
            return False

    async def embed(self, texts: list[str]) -> Embedded:
        """Embed ``texts`` (in order) into unit vectors of ``target_dim``.

        Raises :class:`PoisonedInput` naming the input the server never answers,
        :class:`EndpointUnavailable` after ``retry_for`` seconds of failures,
        :class:`EndpointRejected` for answers no retry can fix.
        """
        assert self.info is not None and self.target_dim is not None
        try:
            vecs, tokens = await self._attempts(texts, self.info.request_name, self.info.native_dim)
            return Embedded(unit_rows(vecs, self.target_dim), tokens)
        except _SuspectedHang:
            pass
        if len(texts) > 1 and self._may_fail_over() and not await self.alive():
            raise EndpointUnavailable(
                f"{self.base_url}: no answer within {self.request_timeout:g}s, not even to a one-line test"
            ) from None
        if len(texts) == 1:
            if await self.alive():
                raise PoisonedInput(
                    0,
                    f"the server never answers this input (timed out "
                    f"{TIMEOUTS_BEFORE_SPLIT + 1}x while other requests answer)",
                )
            if self._may_fail_over():
                raise EndpointUnavailable(
                    f"{self.base_url}: no answer within {self.request_timeout:g}s, not even to a one-line test"
                ) from None
            vecs, tokens = await self._attempts_until_deadline(texts)
            return Embedded(unit_rows(vecs, self.target_dim), tokens)
        mid = len(texts) // 2
        try:
            left = await self.embed(texts[:mid])
        except PoisonedInput as p:
            raise p
        try:
            right = await self.embed(texts[mid:])
        except PoisonedInput as p:
            raise PoisonedInput(p.index + mid, p.detail) from None
        return Embedded(np.concatenate([left.vectors, right.vectors]), left.prompt_tokens + right.prompt_tokens)

    async def _attempts_until_deadline(self, texts: list[str]) -> tuple[np.ndarray, int]:
        assert self.info is not None  # only embed() calls this, after probe()
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                return await self._attempts(texts, self.info.request_name, self.info.native_dim)
            except _SuspectedHang:
                if time.monotonic() >= deadline:
                    raise EndpointUnavailable(
                        f"{self.base_url}: requests time out after "
                        f"{self.request_timeout:g}s for {self.retry_for:g}s; "
                        f"run again to resume"
                    ) from None
                await asyncio.sleep(1.0)

    async def measure(
        self: _Embeds, texts: list[str], *, batch_size: int = 16, concurrency: int = 4, seconds: float = 3.0
    ) -> tuple[float, int]:
        """A short burst of real requests: (tokens per second, texts embedded)."""
        batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)] or [["probe"]]
        sem = asyncio.Semaphore(concurrency)
        start = time.monotonic()
        tokens = done = 0

        async def one(b: list[str]) -> None:
            nonlocal tokens, done
            async with sem:
                if time.monotonic() - start > seconds:
                    return
                r = await self.embed(b)
                tokens += r.prompt_tokens
                done += len(b)

        await asyncio.gather(*(one(b) for b in batches))
        elapsed = max(time.monotonic() - start, 1e-6)
        return tokens / elapsed, done
