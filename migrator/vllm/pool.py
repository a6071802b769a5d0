"""Several vLLM endpoints behind one object shaped like :class:`~migrator.vllm.endpoint.Endpoint`.

``--endpoint`` may be given several times (or read from a file, see
:func:`endpoints_from_file`). :func:`make_endpoint` then returns an
:class:`EndpointPool`, which the runner, the API and the gate use exactly as they
use a lone ``Endpoint`` (same attributes, same methods, same exceptions). With a
single URL it returns a plain ``Endpoint``, so a one-server run behaves exactly
as before.

- **Same model everywhere.** At start every endpoint is probed at once; all must
  serve the same model id and native dimension, or the run is refused naming
  both servers. Vectors from two models must never meet in one database.
- **Spread by measured capacity.** Each request goes to the endpoint expected to
  finish it soonest (see :meth:`EndpointPool._finish_estimate`), so a GPU three
  times as fast ends up answering about three times as many texts.
- **Fail over, probe back in.** A connection error, a 5xx or a server that stops
  answering takes that endpoint out at once and the request goes to another one.
  The endpoint is asked again every few seconds (backing off) with a one-line
  embedding, and rejoins when it answers it correctly. Only when every endpoint
  is out does a request wait, up to ``retry_for``, and then fail as a lone
  endpoint would (:class:`~migrator.errors.EndpointUnavailable`).
- **Errors no other server could fix pass through unchanged**: a refused key, a
  wrong model or dimension, a refused request, and above all
  :class:`~migrator.vllm.endpoint.PoisonedInput`, which the runner needs to name the
  bad record. None of these takes an endpoint out.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from migrator.errors import EndpointRejected, EndpointUnavailable, UsageError
from migrator.vllm.endpoint import Embedded, Endpoint, ServerInfo, normalize_endpoint

log = logging.getLogger("migrator.vllm.pool")

RATE_WEIGHT = 0.3  # EWMA weight of the newest capacity sample
RECHECK_AFTER = 2.0  # seconds before a taken-out endpoint is first asked again
RECHECK_MAX = 30.0  # the longest wait between two such checks


def endpoints_from_file(path: str | Path) -> list[str]:
    """The URLs in a file of endpoints: one per line; blank lines and ``#`` comment lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(
            f"{path}: cannot read the endpoint list ({getattr(e, 'strerror', None) or e}); "
            f"give a text file with one URL per line"
        ) from None
    urls = [line.strip() for line in text.splitlines()]
    urls = [u for u in urls if u and not u.startswith("#")]
    if not urls:
        raise UsageError(f"{path}: no endpoint URLs in it; put one URL per line (# starts a comment)")
    return urls


def make_endpoint(
    urls: str | Sequence[str],
    api_key: str | None,
    *,
    on_pushback: Callable[[str], None] | None = None,
    **endpoint_kwargs,
) -> "Endpoint | EndpointPool":
    """A plain :class:`Endpoint` for one URL, a pool for several. ``on_pushback`` is told each
    time a server pushes back (429, 5xx, a timeout): the run's in-flight limit."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    if len(urls) == 1:
        return Endpoint(urls[0], api_key, on_pushback=on_pushback, **endpoint_kwargs)
    return EndpointPool.of(urls, api_key, on_pushback=on_pushback, **endpoint_kwargs)


@dataclass(eq=False)
class _Member:
    """One endpoint and what the pool has measured of it."""

    endpoint: Endpoint
    in_flight: int = 0
    rate: float | None = None  # EWMA of the tokens/s the server delivers (None: not measured yet)
    out: bool = False  # taken out after a failure, until it answers again
    reason: str = ""  # why it is out
    texts: int = 0  # texts it answered (status, tests)

    @property
    def url(self) -> str:
        return self.endpoint.base_url


class EndpointPool:
    """Several endpoints serving the same model, used like one :class:`Endpoint`.

    Every endpoint listed must answer at start: :meth:`probe` refuses with
    :class:`EndpointUnavailable` naming the one that does not. Someone who lists
    a server expects it to take part, and a typo in one URL should be found now,
    not hours later as a run that is mysteriously slower. Once running, an
    endpoint that fails is taken out and probed back in instead.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        recheck_after: float = RECHECK_AFTER,
        recheck_max: float = RECHECK_MAX,
        on_pushback: Callable[[str], None] | None = None,
    ):
        if not endpoints:
            raise UsageError("no endpoint given: pass --endpoint with a vLLM URL")
        seen: set[str] = set()
        for ep in endpoints:
            if ep.base_url in seen:
                raise UsageError(f"--endpoint {ep.base_url} is listed twice; list each server once")
            seen.add(ep.base_url)
        self.members = [_Member(ep) for ep in endpoints]
        self.base_url = ", ".join(m.url for m in self.members)  # for messages and the state row
        self.request_timeout = max(ep.request_timeout for ep in endpoints)
        self.retry_for = max(ep.retry_for for ep in endpoints)
        self.recheck_after = recheck_after
        self.recheck_max = max(recheck_max, recheck_after)
        self.info: ServerInfo | None = None
        self.target_dim: int | None = None
        self._on_pushback = on_pushback
        self._started = False  # fail-over only after a successful probe
        self._changed: asyncio.Event | None = None
        self._rechecks: dict[_Member, asyncio.Task] = {}
        for m in self.members:  # the pool's own members: they fail over and report through it
            m.endpoint.serve_in_pool(
                functools.partial(self._others_in_service, m), functools.partial(self._pushback, m)
            )

    @classmethod
    def of(
        cls,
        urls: Sequence[str],
        api_key: str | None,
        *,
        recheck_after: float = RECHECK_AFTER,
        recheck_max: float = RECHECK_MAX,
        on_pushback: Callable[[str], None] | None = None,
        **endpoint_kwargs,
    ) -> "EndpointPool":
        """A pool of :class:`Endpoint` (url, api_key, **endpoint_kwargs), one per URL."""
        bases = [normalize_endpoint(u)[0] for u in urls]  # refuse a bad URL before building any client
        for i, base in enumerate(bases):
            if base in bases[:i]:
                raise UsageError(f"--endpoint {base} is listed twice; list each server once")
        return cls(
            [Endpoint(u, api_key, **endpoint_kwargs) for u in urls],
            recheck_after=recheck_after,
            recheck_max=recheck_max,
            on_pushback=on_pushback,
        )

    # ------------------------------------------------------------- the hooks
    def _pushback(self, m: _Member, reason: str) -> None:
        """A member's pushback, passed on to ``on_pushback`` unless that member is already out:
        the failures of a dead server are not the pool being overloaded."""
        if self._on_pushback is not None and not m.out:
            self._on_pushback(f"{m.url}: {reason}")

    def _others_in_service(self, m: _Member) -> bool:
        """Endpoint.can_fail_over: may ``m`` hand a failing request back instead of retrying it?"""
        return self._started and any(o is not m and not o.out for o in self.members)

    # --------------------------------------------------------------- probing
    async def probe(self, requested: str, *, target_dim: int | None = None) -> ServerInfo:
        """Probe every endpoint at once; all must answer and serve the same model and dimension."""
        self._started = False
        for task in self._rechecks.values():  # probing afresh: every endpoint is asked anyway
            task.cancel()
        self._rechecks.clear()
        results = await asyncio.gather(
            *(m.endpoint.probe(requested, target_dim=target_dim) for m in self.members), return_exceptions=True
        )
        failed = [(m, r) for m, r in zip(self.members, results) if isinstance(r, BaseException)]
        for _, r in failed:  # a configuration error outranks a server that is down
            if not isinstance(r, EndpointUnavailable):
                raise r
        if failed:
            also = f" (also down: {', '.join(m.url for m, _ in failed[1:])})" if len(failed) > 1 else ""
            raise EndpointUnavailable(
                f"{failed[0][1]}{also}; every listed endpoint must answer at start: "
                f"start it, or leave it out of the list"
            ) from None
        infos: list[ServerInfo] = []
        for m in self.members:
            assert m.endpoint.info is not None  # every probe above answered
            infos.append(m.endpoint.info)
        first = infos[0]
        for other in infos[1:]:
            if (other.model, other.native_dim) != (first.model, first.native_dim):
                raise EndpointRejected(
                    f"{first.base_url} serves {first.model!r} ({first.native_dim} dims) but {other.base_url} "
                    f"serves {other.model!r} ({other.native_dim} dims); every endpoint must serve the same "
                    f"model: fix that server or leave it out"
                )
        notes = [f"{m.url}: {info.note}" for m, info in zip(self.members, infos) if info.note]
        lengths = {info.max_model_len for info in infos if info.max_model_len is not None}
        max_len = min(lengths) if lengths else None
        if max_len is not None and (len(lengths) > 1 or any(info.max_model_len is None for info in infos)):
            # Each endpoint cuts long texts at its own max_model_len - 1; one limit for all keeps
            # a text's vector the same whichever server embeds it (and is safe on every one).
            for info in infos:
                info.max_model_len = max_len
            notes.append(f"the endpoints' max_model_len differ; every request is cut to {max_len - 1} tokens")
        # Endpoints may serve the model under different names (aliases): each request carries
        # its own endpoint's name, and what the pool reports is the model's identity.
        names = list(dict.fromkeys(n for info in infos for n in info.served_models))
        self.info = ServerInfo(
            self.base_url,
            first.model,
            names,
            max_len,
            first.native_dim,
            tokenize=all(info.tokenize for info in infos),
            note="; ".join(notes),
            request_name=first.request_name,
            root=first.root,
            version=first.version,
        )
        self.target_dim = self.members[0].endpoint.target_dim
        for m in self.members:
            m.out, m.reason, m.rate = False, "", None
        self._started = True
        return self.info

    # ------------------------------------------------------------- embedding
    async def embed(self, texts: list[str]) -> Embedded:
        """Embed ``texts`` on the endpoint expected to finish soonest; another one if it fails.

        Raises what :meth:`Endpoint.embed` raises; :class:`EndpointUnavailable` only once
        no endpoint has answered for ``retry_for`` seconds.
        """
        assert self.info is not None and self.target_dim is not None
        deadline = time.monotonic() + self.retry_for
        while True:
            m = await self._pick(deadline)
            m.in_flight += 1
            sharing: float = m.in_flight
            start = time.monotonic()
            try:
                result = await m.endpoint.embed(texts)
            except EndpointUnavailable as e:
                self._take_out(m, e)  # and try the next one; _pick gives up at the deadline
                continue
            finally:
                sharing = (sharing + m.in_flight) / 2
                m.in_flight -= 1
            self._measured(m, texts, result, time.monotonic() - start, sharing)
            return result

    def _finish_estimate(self, m: _Member) -> float:
        """When would a new request sent to ``m`` finish, relatively: (in flight + 1) / capacity.

        An endpoint not measured yet counts as the average of the measured ones, so it
        gets requests at once and is measured too."""
        measured = [o.rate for o in self.members if o.rate and not o.out]
        rate = m.rate or (sum(measured) / len(measured) if measured else 1.0)
        return (m.in_flight + 1) / rate

    async def _pick(self, deadline: float) -> _Member:
        while True:
            ready = [m for m in self.members if not m.out]
            if ready:
                return min(ready, key=self._finish_estimate)
            left = deadline - time.monotonic()
            if left <= 0:
                raise EndpointUnavailable(self._all_down())
            if self._changed is None:
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=left)
            except asyncio.TimeoutError:
                pass

    def _measured(self, m: _Member, texts: list[str], result: Embedded, latency: float, sharing: float) -> None:
        """Update ``m``'s capacity from one answer.

        vLLM shares its capacity among the requests in flight (continuous batching), so a
        request's latency is about sharing x tokens / capacity. Turned around, every answer
        gives a capacity sample, whatever load we happen to put on that server."""
        tokens = result.prompt_tokens or sum(len(t) for t in texts) // 4 + len(texts)
        sample = tokens * max(sharing, 1.0) / max(latency, 1e-6)
        m.rate = sample if m.rate is None else m.rate + RATE_WEIGHT * (sample - m.rate)
        m.texts += len(texts)

    def _all_down(self) -> str:
        reasons = "; ".join(f"{m.url}: {m.reason or 'failing'}" for m in self.members)
        return (
            f"none of the {len(self.members)} endpoints answered for {self.retry_for:g}s ({reasons}); "
            f"run again to resume"
        )

    # ------------------------------------------------- taking out, probing in
    def _take_out(self, m: _Member, e: Exception) -> None:
        if m.out:
            return
        reason = str(e)
        if reason.startswith(m.url + ": "):
            reason = reason[len(m.url) + 2 :]
        m.out, m.reason = True, reason
        log.warning("%s taken out of the pool: %s; asking it again in %gs", m.url, reason, self.recheck_after)
        self._rechecks[m] = asyncio.get_running_loop().create_task(self._recheck(m))

    async def _recheck(self, m: _Member) -> None:
        """Ask a taken-out endpoint for a one-line embedding, backing off, until it answers right."""
        delay = self.recheck_after
        while True:
            await asyncio.sleep(delay)
            if await m.endpoint.alive():  # right model, right dimension, finite values
                break
            log.debug("%s still not answering; next check in %gs", m.url, delay)
            delay = min(delay * 2, self.recheck_max)
        m.out, m.reason, m.rate = False, "", None  # measured afresh: it may have restarted elsewhere
        self._rechecks.pop(m, None)
        log.info("%s answers again: back in the pool", m.url)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # ------------------------------------------------ the rest of Endpoint's face
    async def count_tokens(self, texts: list[str], *, concurrency: int = 8) -> list[int] | None:
        """Exact token counts from an endpoint in service (they all serve the same model)."""
        for m in sorted((m for m in self.members if not m.out), key=self._finish_estimate):
            counts = await m.endpoint.count_tokens(texts, concurrency=concurrency)
            if counts is not None:
                return counts
        return None

    async def alive(self) -> bool:
        """Does any endpoint in service answer a tiny request promptly?"""
        ready = [m for m in self.members if not m.out]
        return any(await asyncio.gather(*(m.endpoint.alive() for m in ready)))

    # The same code as a lone endpoint's: they read only `info` and call `embed`.
    may_be_truncated = Endpoint.may_be_truncated
    measure = Endpoint.measure

    def status(self) -> list[dict]:
        """Each endpoint: in service or out (and why), requests in flight, measured tokens/s, texts."""
        return [
            {
                "url": m.url,
                "in_service": not m.out,
                "reason": m.reason or None,
                "in_flight": m.in_flight,
                "tokens_per_second": round(m.rate, 1) if m.rate else None,
                "texts": m.texts,
            }
            for m in self.members
        ]

    async def aclose(self) -> None:
        tasks = list(self._rechecks.values())
        self._rechecks.clear()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(m.endpoint.aclose() for m in self.members), return_exceptions=True)
