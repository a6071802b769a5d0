"""`migrate plan`: what a run would do. Reads the databases and asks the endpoint; writes nothing.

The databases are tallied as they are scanned, one at a time: memory holds the totals, not a
list of every database (100,000 of them plan in the memory of 1,000)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from migrator.apps import appconfig, provenance
from migrator.commands.settings import Settings
from migrator.errors import MigratorError, UsageError
from migrator.files import durable, nvdb
from migrator.pipeline.runner import Reporter
from migrator.pipeline.scan import BAD, MIGRATE, SKIP, Found, examine, scan
from migrator.vllm.endpoint import Endpoint, resolve_model
from migrator.vllm.pool import EndpointPool


async def _probe_unknown(
    endpoint: Endpoint | EndpointPool, f: Found, settings: Settings, reporter: Reporter | None = None
) -> Found:
    """A file at the target dimension that records no model (``f.unknown_model``): a few of its
    records are embedded again; where the stored vectors are not the target model's, the file
    is migrated after all. Returns what stands for it now: ``f`` (its reason told), or the
    file examined again to be migrated."""
    again = await asyncio.to_thread(
        examine, f.path, endpoint.target_dim, spec=settings.spec, keep_texts=True, same_dim=True
    )
    if again.status != MIGRATE or not again.texts:
        return f  # unreadable (reported by the pipeline) or empty: nothing to compare
    try:
        nf = await asyncio.to_thread(nvdb.read, f.path)
        cosine = await provenance.probe(endpoint, nf, again.texts)
    except (MigratorError, OSError) as e:
        f.reason += f" (could not probe it: {e})"
        return f
    assert cosine is not None  # None only for a file without records; again.texts has some
    assert endpoint.info is not None  # the callers probe the endpoint first
    if cosine >= provenance.SAME_MODEL_COSINE:
        f.reason = (
            f"already at the target dimension {f.dim}; {endpoint.info.model} gives back its "
            f"stored vectors (probe: cosine {cosine:.3f})"
        )
        f.unknown_model = False
        return f
    again.texts = None  # like every scanned database's: memory holds none of them
    again.reason = (
        f"at the target dimension {f.dim}, but its vectors are not {endpoint.info.model}'s "
        f"(probe: cosine {cosine:.2f} between stored and re-embedded records): migrated"
    )
    if reporter is not None:
        reporter.note(f"{f.path}: {again.reason}")
    return again


@dataclass
class _Tally:
    """What plan reports of the databases, added up one database at a time."""

    model: str  # the target model
    target: int | None  # the target dimension (None: unknown, with --no-probe)
    databases: int = 0
    to_migrate: int = 0
    skipped: int = 0
    bad: int = 0
    records: int = 0
    chars: int = 0
    exact_tokens: int = 0  # of the databases to migrate with exact tokens
    est_tokens: int = 0  # estimated, of every database to migrate
    all_exact: bool = True  # every database to migrate has exact tokens
    by_dim: Counter = field(default_factory=Counter)
    by_application: Counter = field(default_factory=Counter)
    made_by_other_model: int = 0
    same_dim_other_model: int = 0
    model_unknown: int = 0
    staging_bytes: int = 0
    backup_bytes: int = 0
    # Disk: the new file is staged beside the old one; after cutover the old one
    # stays as the backup (a hard link: no extra space), so each new file is extra.
    need_by_dev: Counter = field(default_factory=Counter)
    where_of_dev: dict[int, Path] = field(default_factory=dict)  # a directory on each filesystem
    applications: appconfig.Applications = field(default_factory=appconfig.Applications)

    def add(self, f: Found) -> None:
        self.databases += 1
        self.skipped += f.status == SKIP
        self.bad += f.status == BAD
        if f.dim is not None:
            self.by_dim[f.dim] += 1
        if f.status != BAD:
            self.by_application[f.profile or "unknown"] += 1
        if f.made_by is not None and f.made_by.model != self.model:
            self.made_by_other_model += 1
            self.same_dim_other_model += f.dim == self.target
        self.model_unknown += f.unknown_model
        self.applications.add(f.profile, f.path)
        if f.status != MIGRATE:
            return
        assert f.dim is not None  # inspect gives every file it would migrate its dimension
        self.to_migrate += 1
        self.records += f.records
        self.chars += f.chars
        self.est_tokens += f.est_tokens()
        if f.tokens is None:
            self.all_exact = False
        else:
            self.exact_tokens += f.tokens
        f.new_size = max(f.size + int((f.records * 4 * ((self.target or f.dim) - f.dim)) * 4 / 3), 0)
        self.staging_bytes += f.new_size
        self.backup_bytes += f.size
        # the file's filesystem is its directory's, where it is staged, unless the file itself
        # is a mount point; as read by the scan (a stat of every directory here was a fifth of
        # plan's main process at 100,000 databases)
        dev = f.dev or os.stat(f.path.parent).st_dev
        if dev not in self.where_of_dev:
            self.where_of_dev[dev] = f.path.parent
        self.need_by_dev[dev] += f.new_size

    @property
    def tokens_exact(self) -> bool:
        return self.to_migrate > 0 and self.all_exact

    @property
    def tokens(self) -> int:
        return self.exact_tokens if self.tokens_exact else self.est_tokens

    def totals(self) -> dict:
        return {
            "databases": self.databases,
            "to_migrate": self.to_migrate,
            "skipped": self.skipped,
            "bad": self.bad,
            "records": self.records,
            "chars": self.chars,
            "tokens": self.tokens,
            "tokens_exact": self.tokens_exact,
            "by_dim": {str(k): v for k, v in sorted(self.by_dim.items())},
            "by_application": dict(self.by_application),
            "made_by_other_model": self.made_by_other_model,
            "same_dim_other_model": self.same_dim_other_model,
            "model_unknown_at_target_dim": self.model_unknown,
            "staging_bytes": self.staging_bytes,
            "backup_bytes": self.backup_bytes,
        }

    def disks(self) -> list[dict]:
        out = []
        for dev, need in self.need_by_dev.items():
            where = self.where_of_dev[dev]
            free = durable.free_bytes(where)
            out.append({"filesystem_of": str(where), "needed_bytes": need, "free_bytes": free, "enough": need < free})
        return out


def plan(
    settings: Settings,
    *,
    probe: bool = True,
    tokenize: bool = True,
    databases: Callable[[dict], None] | None = None,
) -> dict:
    """What a run would do. Reads the databases and asks the endpoint; writes nothing.

    The report: roots, pattern, model, target_dim, totals, disk, configs, endpoint, and
    "databases", each database's dict in scan order. With ``databases`` (a callable), each
    of those dicts is passed to it instead, as soon as that database is settled, in scan
    order, and the report has no "databases" key: memory then holds one database at a time."""
    if not settings.roots:
        raise UsageError("no --root given: name the directory that holds the databases")
    model_id, known_dim = resolve_model(settings.model or "8b")
    spec = settings.spec  # a bad --text-template is refused before anything is read
    endpoint_report: dict = {"url": ", ".join(settings.check_endpoints()), "reachable": False}
    target = settings.dim or known_dim
    listed: list[dict] | None = None
    if databases is None:
        listed = []
        databases = listed.append
    ep: Endpoint | EndpointPool | None = None
    loop = asyncio.new_event_loop()
    try:
        if probe:
            ep = settings.make_endpoint()
            try:
                info = loop.run_until_complete(ep.probe(settings.model or "8b", target_dim=settings.dim))
                target, model_id = ep.target_dim, info.model
                endpoint_report.update(
                    reachable=True,
                    model=info.model,
                    served_models=info.served_models,
                    max_model_len=info.max_model_len,
                    native_dim=info.native_dim,
                    tokenize=info.tokenize,
                    note=info.note or None,
                )
            except MigratorError as e:
                # reported, and plan exits with its code: a plan that could not check the
                # endpoint (down, key refused, model not served) is no plan to run
                endpoint_report.update(error=str(e), exit_code=e.exit_code)
        tally = _Tally(model_id, target)
        sample: list[str] = []  # a few real texts for the throughput probe
        for f in scan(
            list(settings.roots),
            settings.pattern,
            target,
            spec=spec,
            target_model=model_id,
            follow_symlinks=settings.follow_symlinks,
            keep_texts=endpoint_report["reachable"],
        ):
            if f.status == MIGRATE and f.texts is not None:
                assert ep is not None and ep.info is not None  # texts are kept only once the probe answered
                if tokenize and ep.info.tokenize:
                    counts = loop.run_until_complete(ep.count_tokens(f.texts))
                    f.tokens = sum(counts) if counts is not None else None
                sample.extend(f.texts[: max(0, 128 - len(sample))])
            f.texts = None  # memory holds one database's texts at a time
            if f.unknown_model and endpoint_report["reachable"]:
                assert ep is not None
                f = loop.run_until_complete(_probe_unknown(ep, f, settings))
            tally.add(f)
            databases(f.as_dict())
        if endpoint_report["reachable"] and tally.to_migrate:
            assert ep is not None
            try:
                rate, n = loop.run_until_complete(ep.measure(sample, seconds=3.0))
                endpoint_report.update(measured_tokens_per_second=round(rate, 1), measured_texts=n)
                endpoint_report["eta_seconds"] = round(tally.tokens / rate, 1) if rate > 0 else None
            except MigratorError as e:
                endpoint_report["measure_error"] = str(e)
    finally:
        if ep is not None:
            loop.run_until_complete(ep.aclose())
        loop.close()
    native = endpoint_report.get("native_dim")
    configs = appconfig.report(
        tally.applications.dirs(),
        [Path(r) for r in settings.roots],
        model_id,
        target,
        native,
        endpoint=settings.check_endpoints()[0],
        key_source=settings.key_source,
    )
    report = {
        "roots": [str(r) for r in settings.roots],
        "pattern": settings.pattern,
        "model": model_id,
        "target_dim": target,
        "totals": tally.totals(),
        "disk": tally.disks(),
        "configs": [c.as_dict() for c in configs],
        "endpoint": endpoint_report,
    }
    if listed is not None:
        report["databases"] = listed
    return report
