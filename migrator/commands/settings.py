"""What a command is asked to do: every option of `migrate`, as one dataclass."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from migrator import config
from migrator.config import DEFAULT_ENDPOINT, DEFAULT_PATTERN
from migrator.jobs import claims
from migrator.jobs.store import default_state_dir, state_url

if TYPE_CHECKING:  # imported where used: `status` and the other commands without an endpoint start sooner
    from migrator import apps
    from migrator.vllm.endpoint import Endpoint
    from migrator.vllm.http import Http
    from migrator.vllm.pool import EndpointPool
    from migrator.vllm.steering import Control


@dataclass(frozen=True)
class Settings:
    """Everything a command may need; the CLI fills it from options and environment.

    Frozen, and resolved once: the roots are made absolute when it is built (a symlink
    stays as typed), and the text spec and the API key are worked out the first time they
    are asked for, then kept. The key is not a field, so it is in no repr or dict."""

    roots: list[str] = field(default_factory=list)
    pattern: str = DEFAULT_PATTERN
    model: str | None = None
    dim: int | None = None
    endpoint: str | list[str] = DEFAULT_ENDPOINT  # one URL, or several (pool.EndpointPool)
    api_key_file: str | None = None
    state_dir: str | None = None
    state_url: str | None = None  # a shared PostgreSQL job table (None: SQLite in state_dir)
    profile: str | None = None  # auto (None), dvd, lightrag, nano-graphrag
    text_field: str | None = None
    text_template: str | None = None
    batch_size: int = 128
    concurrency: int | None = None  # None: adaptive (tuning.AdaptiveLimit)
    request_timeout: float = 120.0
    retry_for: float = 600.0
    cutover: bool = True
    fail_fast: bool = False
    follow_symlinks: bool = False
    insecure: bool = False
    max_duration: str | None = None  # e.g. "45m": stop in time (resumable, exit 9)
    until: str | None = None  # e.g. "06:00" local time: the same
    window: str | None = None  # e.g. "22:00-06:00": run only inside it (window.py)
    on_before_cutover: str | None = None  # shell commands (hooks.py); a failing one holds cutover
    on_success: str | None = None
    on_failure: str | None = None
    quality_gate: bool = True  # False: cutover without the semantic gate (benchmarks only)
    serve: bool = False  # start `vllm serve` for the run, stop it after (serve.py)
    serve_gpu: str | None = None  # CUDA_VISIBLE_DEVICES for it
    serve_memory_fraction: float | None = None
    serve_args: tuple = ()  # extra `vllm serve` flags
    apply_config: bool = False  # edit the applications' settings right after the swap
    # asked once the scan says what would be done (the question names the databases, records,
    # model and dims); False: cancelled, nothing recorded. None: no question (--yes, cron)
    confirm: Callable[[str], bool] | None = None
    serve_timeout: float = 1800.0  # seconds to wait for it to load the model
    backoff_queue: int | None = None  # back off while vLLM's /metrics shows more waiting (control.py)
    metrics_url: str | None = None  # whose queue to watch (default: the first endpoint's /metrics)

    @property
    def job_table(self) -> str:
        """This job table as tree claims name it (claims.py)."""
        return claims.identity(state_url(self.state_url), self.state_path)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else default_state_dir()

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", [os.path.abspath(r) for r in self.roots])

    @functools.cached_property
    def spec(self) -> apps.Spec:
        """How texts are found (a bad combination or template: UsageError)."""
        from migrator import apps

        return apps.Spec(self.profile, self.text_field, self.text_template)

    @functools.cached_property
    def api_key(self) -> str | None:
        """The endpoint's key (--api-key-file, else the environment), read once."""
        return config.api_key(self.api_key_file)

    @functools.cached_property
    def http(self) -> Http:
        """The command's one client for the small requests (/version, /tokenize, /metrics)."""
        from migrator.vllm.http import Http

        return Http(verify_tls=not self.insecure)

    def check_key(self) -> None:
        """Read the key now: a key file that cannot be read is refused before anything is done."""
        _ = self.api_key

    @functools.cached_property
    def key_source(self) -> str | None:
        """Where the key came from, for messages: the file, or the variable's name."""
        return config.key_source(self.api_key_file)

    @property
    def endpoint_urls(self) -> list[str]:
        return [self.endpoint] if isinstance(self.endpoint, str) else list(self.endpoint) or [DEFAULT_ENDPOINT]

    def check_endpoints(self) -> list[str]:
        """The endpoints' base URLs; a malformed one (or one with credentials) is refused."""
        from migrator.vllm.endpoint import normalize_endpoint

        return [normalize_endpoint(u)[0] for u in self.endpoint_urls]

    def make_endpoint(self, on_pushback: Callable[[str], None] | None = None) -> Endpoint | EndpointPool:
        """The endpoint (or pool); ``on_pushback``: the run's in-flight limit, told of each pushback."""
        from migrator.vllm.pool import make_endpoint

        return make_endpoint(
            self.endpoint_urls,
            self.api_key,
            on_pushback=on_pushback,
            request_timeout=self.request_timeout,
            retry_for=self.retry_for,
            verify_tls=not self.insecure,
            key_source=self.key_source,
            http=self.http,
        )

    def make_control(self) -> Control:
        from migrator.vllm.steering import Control, metrics_url_for

        metrics = None
        if self.backoff_queue is not None:
            metrics = self.metrics_url or metrics_url_for(self.endpoint_urls[0])
        return Control(
            self.state_path,
            metrics_url=metrics,
            queue_limit=self.backoff_queue,
            verify_tls=not self.insecure,
            http=self.http,
        )
