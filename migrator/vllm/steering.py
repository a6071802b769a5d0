"""Steering a running migration without restarting it: files in the state directory,
and (opt-in) the vLLM server's own queue.

- ``PAUSE``: while this file exists the run sends no new request (those in
  flight finish); remove it and the run carries on. ``touch state/PAUSE``.
- ``THROTTLE``: ``max_in_flight = 4`` and/or ``tokens_per_second = 20000``
  (one ``key = value`` per line, ``#`` comments): caps applied to the adaptive
  limit, for a GPU shared with a chat model. Remove it to lift the caps.

The run re-reads both about once a second, so an operator (or a cron job of
their own) can steer a night's migration with ``touch`` and ``echo``.

Queue backoff (``Control(..., metrics_url=..., queue_limit=N)``): about every
:data:`METRICS_EVERY` seconds a background thread reads vLLM's Prometheus
``/metrics`` (short timeout; the event loop never waits for it) and sums
``vllm:num_requests_waiting`` over all its label sets (one per engine, and per
model). The rule:

- *waiting > queue_limit*: halve the in-flight cap at each look, down to 1 (a
  migration is slowed, never stopped). The first halving starts from the
  smaller of the THROTTLE file's ``max_in_flight`` and :data:`QUEUE_START_CAP`
  (the adaptive limit's own value is not known here), so the first cap is at most 8.
- *waiting <= queue_limit*: raise the cap by one at each look (by a quarter once
  it is 8 or more), and lift it once it reaches that starting value again.
- ``/metrics`` unreachable, not 200, or without the gauge: one warning, and no
  queue cap until it answers again (the migration itself never fails for it).

Whose requests are waiting is not known. Pointed at a chat model's own vLLM
(another process on the same GPU) the queue is all the chat's. Pointed at the
embedding server itself it includes ours: each input of a request is an engine
request of its own, so up to ``batch_size`` x in-flight of the waiting ones may
be ours. The rule does not try to subtract them: backing off whenever the queue
is long whoever fills it means the run keeps the server's queue near
``queue_limit`` (and our adaptive limit, which stops growing at the knee, keeps
our own share small). Choose ``queue_limit`` at least a batch (``--batch-size``)
when watching the embedding server, or the run will throttle itself.

The effective in-flight cap is the smaller of the THROTTLE file's and the
queue backoff's: ``Control.throttle.max_in_flight`` (also ``Control.max_in_flight``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from migrator.vllm.http import Http, NotHttp, Unreachable

log = logging.getLogger("migrator.vllm.steering")

PAUSE_FILE = "PAUSE"
THROTTLE_FILE = "THROTTLE"
CHECK_EVERY = 1.0  # seconds between looks at the files
METRICS_EVERY = 2.0  # seconds between looks at vLLM's /metrics (queue backoff)
METRICS_TIMEOUT = 2.0  # seconds a look at /metrics may take
QUEUE_START_CAP = 16  # in-flight count the first halving starts from, without a THROTTLE cap
METRICS_MAX_BYTES = 16 << 20
WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"


@dataclass(frozen=True)
class Throttle:
    max_in_flight: int | None = None
    tokens_per_second: float | None = None


def read_throttle(path: Path) -> Throttle:
    """Parse a THROTTLE file; a line that cannot be understood is logged once and ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, IsADirectoryError):
        return Throttle()
    except (OSError, UnicodeDecodeError) as e:
        log.warning("%s: unreadable (%s); no throttle applied", path, e)
        return Throttle()
    values: dict = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        try:
            if not sep:
                raise ValueError
            if key == "max_in_flight":
                values[key] = max(1, int(value))
            elif key == "tokens_per_second":
                values[key] = max(1.0, float(value))
            else:
                raise ValueError
        except ValueError:
            log.warning(
                "%s line %d: %r not understood (max_in_flight = N, tokens_per_second = N); ignored", path, n, line
            )
    return Throttle(**values)


def parse_metric(text: str, name: str) -> float | None:
    """The sum of one metric's samples over all its label sets in Prometheus text format
    (``name{engine="0",model_name="m"} 3.0``, one line per engine/model), or None when it
    has no sample. HELP/TYPE comments, other metrics (also longer names with the same
    start, like ``..._by_reason``), timestamps and NaN samples are skipped."""
    total, found = 0.0, False
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(name):
            continue
        rest = line[len(name) :]
        if rest.startswith("{"):
            labels = _LABELS.match(rest)
            if labels is None:
                continue
            rest = rest[labels.end() :]
        elif not rest[:1].isspace():
            continue  # a longer name, e.g. vllm:num_requests_waiting_by_reason
        parts = rest.split()
        try:
            value = float(parts[0])
        except (IndexError, ValueError):
            continue
        if math.isnan(value):
            continue
        total += value
        found = True
    return total if found else None


_LABELS = re.compile(r'\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\}')


def metrics_url_for(endpoint_url: str) -> str:
    """``http://host:8000/v1`` (or the server's root) -> ``http://host:8000/metrics``."""
    parts = urlsplit(endpoint_url.rstrip("/"))
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, parts.netloc, path + "/metrics", "", ""))


def _shown(url: str) -> str:
    """A URL as it may be logged: without a user:password@ part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class QueueWatch:
    """Backs off while vLLM's waiting queue is above ``limit`` (the rule is in the module
    docstring). :meth:`poll` never blocks: the HTTP GET runs in a daemon thread and its
    answer is applied by the next :meth:`poll` after it arrives. ``cap`` is the in-flight
    cap it asks for now (None: none)."""

    def __init__(
        self,
        url: str,
        limit: float,
        *,
        interval: float = METRICS_EVERY,
        timeout: float = METRICS_TIMEOUT,
        verify_tls: bool = True,
        http: Http | None = None,
    ):
        if limit < 0:
            raise ValueError("queue_limit must be >= 0")
        self.url = _shown(url)  # credentials in the URL go in a header, never in a log
        self._headers = {"Accept": "text/plain"}
        parts = urlsplit(url)
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        self.limit = limit
        self.interval = interval
        self.timeout = timeout
        self.start_cap = QUEUE_START_CAP
        self.cap: int | None = None
        self.waiting: float | None = None  # the last figures read (None: none or unreadable)
        self.running: float | None = None
        self.checks = 0  # answers applied (for tests and status)
        self.http = http or Http(verify_tls=verify_tls)
        self._pending: Future | None = None
        self._started = -math.inf
        self._failing = False
        self._since = 0.0
        self._lowest = 0

    # ------------------------------------------------------------- reading
    def read(self) -> float:
        """GET the metrics and sum the waiting gauge (the running one goes to ``running``);
        raises ValueError with the reason."""
        try:
            answer = self.http.get(self.url, timeout=self.timeout, headers=self._headers, max_bytes=METRICS_MAX_BYTES)
        except NotHttp as e:
            raise ValueError(f"no HTTP answer ({e})") from None
        except Unreachable as e:
            raise ValueError(f"unreachable ({e})") from None
        if answer.status != 200:
            raise ValueError(f"HTTP {answer.status}")
        text = answer.body.decode("utf-8", "replace")
        waiting = parse_metric(text, WAITING)
        if waiting is None:
            raise ValueError(f"no {WAITING} in its answer (is it vLLM's /metrics?)")
        self.running = parse_metric(text, RUNNING)
        return waiting

    def _read_into(self, fut: Future) -> None:
        try:
            fut.set_result(self.read())
        except Exception as e:  # applied (and logged) by the next poll()
            fut.set_exception(e)

    # ------------------------------------------------------------- steering
    def poll(self, ceiling: int | None = None) -> None:
        """Apply an answer that has arrived; start the next look when one is due.
        ``ceiling``: the operator's cap (THROTTLE max_in_flight), if any."""
        fut = self._pending
        if fut is not None and fut.done():
            self._pending = None
            error = fut.exception()
            if error is None:
                self._apply(fut.result(), ceiling)
            elif isinstance(error, ValueError):
                self._unreadable(str(error))
            else:  # never fail a migration for its metrics
                self._unreadable(f"{type(error).__name__}: {error}")
        now = time.monotonic()
        if self._pending is None and now - self._started >= self.interval:
            self._started = now
            self._pending = Future()
            threading.Thread(
                target=self._read_into, args=(self._pending,), daemon=True, name="migrator-queue-watch"
            ).start()

    def check_now(self, ceiling: int | None = None) -> int | None:
        """One look, in this thread (blocks up to ``timeout``): for tests and tools.
        (A background look under way is not disturbed; the next poll() applies it too.)"""
        try:
            self._apply(self.read(), ceiling)
        except ValueError as e:
            self._unreadable(str(e))
        return self.cap

    def _unreadable(self, why: str) -> None:
        self.checks += 1
        self.waiting = self.running = None
        if not self._failing:
            self._failing = True
            log.warning("%s: %s; no queue backoff until it answers (the migration carries on)", self.url, why)
        if self.cap is not None:
            self._end(f"{self.url} unreadable")

    def _apply(self, waiting: float, ceiling: int | None) -> None:
        self.checks += 1
        self.waiting = waiting
        if self._failing:
            self._failing = False
            log.info("%s answers again: %g requests waiting", self.url, waiting)
        top = min(ceiling, self.start_cap) if ceiling else self.start_cap
        if waiting > self.limit:
            new = max(1, (self.cap if self.cap is not None else top) // 2)
            if self.cap is None:
                self._since, self._lowest = time.monotonic(), new
                running = "" if self.running is None else f" ({self.running:g} running)"
                log.info(
                    "vLLM queue: %g requests waiting%s > queue limit %g: backing off to at most "
                    "%d in flight (halved every %gs while it stays above)",
                    waiting,
                    running,
                    self.limit,
                    new,
                    self.interval,
                )
            elif new != self.cap:
                log.debug("vLLM queue: %g waiting > %g: in-flight cap %d -> %d", waiting, self.limit, self.cap, new)
            self.cap = new
            self._lowest = min(self._lowest, new)
        elif self.cap is not None:
            new = self.cap + max(1, self.cap // 4)
            if new >= top:
                self._end(f"{waiting:g} requests waiting <= queue limit {self.limit:g}")
            else:
                log.debug("vLLM queue: %g waiting <= %g: in-flight cap %d -> %d", waiting, self.limit, self.cap, new)
                self.cap = new

    def _end(self, why: str) -> None:
        log.info(
            "vLLM queue: %s: backoff ends after %.0fs (lowest cap %d); in-flight cap lifted",
            why,
            time.monotonic() - self._since,
            self._lowest,
        )
        self.cap = None


class Control:
    """What the PAUSE and THROTTLE files say now (read at most once a second), and,
    with ``queue_limit``, the in-flight cap vLLM's waiting queue asks for (read from
    ``metrics_url``, e.g. :func:`metrics_url_for` of the endpoint, every ``metrics_interval`` s).

    ``throttle`` is what to apply: the THROTTLE file's caps with ``max_in_flight``
    lowered to the queue backoff's cap when that is smaller; ``file_throttle`` is
    the file's alone.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike,
        metrics_url: str | None = None,
        queue_limit: float | None = None,
        *,
        metrics_interval: float = METRICS_EVERY,
        metrics_timeout: float = METRICS_TIMEOUT,
        verify_tls: bool = True,
        http: Http | None = None,
    ):
        self.pause_path = Path(state_dir) / PAUSE_FILE
        self.throttle_path = Path(state_dir) / THROTTLE_FILE
        self._checked = -math.inf
        self._throttle_mtime: int | None = None
        self._paused = False
        self.file_throttle = Throttle()
        self._bucket_at = time.monotonic()
        self._bucket = 0.0
        self.queue: QueueWatch | None = None
        if queue_limit is not None:
            if not metrics_url:
                raise ValueError("queue_limit needs metrics_url (the server's /metrics)")
            self.queue = QueueWatch(
                metrics_url,
                queue_limit,
                interval=metrics_interval,
                timeout=metrics_timeout,
                verify_tls=verify_tls,
                http=http,
            )

    @property
    def max_in_flight(self) -> int | None:
        """The in-flight cap in force: the smaller of THROTTLE's and the queue backoff's."""
        caps = [c for c in (self.file_throttle.max_in_flight, self.queue.cap if self.queue is not None else None) if c]
        return min(caps) if caps else None

    @property
    def throttle(self) -> Throttle:
        """The caps to apply now (see the class docstring)."""
        if self.queue is None or self.queue.cap is None:
            return self.file_throttle
        return Throttle(self.max_in_flight, self.file_throttle.tokens_per_second)

    def check_now(self) -> int | None:
        """Re-read the files and /metrics at once, in this thread (blocks up to
        ``metrics_timeout``), and return the in-flight cap: for tests and tools.
        A running migration uses :meth:`refresh`, which never waits."""
        self._checked = time.monotonic()
        self._refresh_files()
        if self.queue is not None:
            self.queue.check_now(self.file_throttle.max_in_flight)
        return self.max_in_flight

    def refresh(self) -> None:
        """Re-read the files if a second has passed; apply an answer from /metrics that
        has arrived and start the next look when one is due (never blocks)."""
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY:
            self._checked = now
            self._refresh_files()
        if self.queue is not None:
            self.queue.poll(self.file_throttle.max_in_flight)

    def _refresh_files(self) -> None:
        paused = self.pause_path.exists()
        if paused != self._paused:
            log.info(
                "%s %s: %s",
                self.pause_path,
                "found" if paused else "removed",
                "pausing (requests in flight finish)" if paused else "resuming",
            )
            self._paused = paused
        try:
            mtime = self.throttle_path.stat().st_mtime_ns
        except OSError:
            mtime = None
        if mtime != self._throttle_mtime:
            self._throttle_mtime = mtime
            new = read_throttle(self.throttle_path) if mtime is not None else Throttle()
            if new != self.file_throttle:
                log.info(
                    "throttle now: %s",
                    "none"
                    if new == Throttle()
                    else ", ".join(f"{k} = {v:g}" for k, v in vars(new).items() if v is not None),
                )
            self.file_throttle = new

    async def wait_while_paused(self, stop: asyncio.Event) -> None:
        self.refresh()
        while self._paused and not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=CHECK_EVERY)
            except asyncio.TimeoutError:
                pass
            self.refresh()

    async def pace(self, tokens: int, stop: asyncio.Event) -> None:
        """Wait until sending ``tokens`` more keeps within tokens_per_second (a token bucket
        holding at most one second's worth)."""
        rate = self.throttle.tokens_per_second
        if not rate:
            return
        while not stop.is_set():
            now = time.monotonic()
            self._bucket = min(rate, self._bucket + (now - self._bucket_at) * rate)
            self._bucket_at = now
            if self._bucket >= min(tokens, rate):
                self._bucket -= tokens
                return
            await asyncio.sleep(min(CHECK_EVERY, (min(tokens, rate) - self._bucket) / rate))
            self.refresh()
            rate = self.throttle.tokens_per_second
            if not rate:
                return
