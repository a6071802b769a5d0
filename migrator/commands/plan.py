"""`migrate plan`: what a run would do. Reads the databases and asks the endpoint; writes nothing."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path

from migrator.apps import appconfig, provenance
from migrator.commands.common import _applications
from migrator.commands.settings import Settings
from migrator.errors import MigratorError, UsageError
from migrator.files import durable, nvdb
from migrator.pipeline.runner import Reporter
from migrator.pipeline.scan import BAD, MIGRATE, SKIP, Found, examine, scan
from migrator.vllm.endpoint import Endpoint, resolve_model
from migrator.vllm.pool import EndpointPool


async def _check_unknown_models(
    endpoint: Endpoint | EndpointPool, found: list[Found], settings: Settings, reporter: Reporter | None = None
) -> None:
    """Files at the target dimension that record no model: a few of their records are embedded
    again; where the stored vectors are not the target model's, the file is migrated after all."""
    spec = settings.spec
    for i, f in enumerate(found):
        if not f.unknown_model:
            continue
        again = await asyncio.to_thread(examine, f.path, endpoint.target_dim, spec=spec, keep_texts=True, same_dim=True)
        if again.status != MIGRATE or not again.texts:
            continue  # unreadable (reported by the pipeline) or empty: nothing to compare
        try:
            nf = await asyncio.to_thread(nvdb.read, f.path)
            cosine = await provenance.probe(endpoint, nf, again.texts)
        except (MigratorError, OSError) as e:
            f.reason += f" (could not probe it: {e})"
            continue
        assert cosine is not None  # None only for a file without records; again.texts has some
        assert endpoint.info is not None  # the callers probe the endpoint first
        if cosine >= provenance.SAME_MODEL_COSINE:
            f.reason = (
                f"already at the target dimension {f.dim}; {endpoint.info.model} gives back its "
                f"stored vectors (probe: cosine {cosine:.3f})"
            )
            f.unknown_model = False
            continue
        again.texts = None  # like every scanned database's: memory holds none of them
        again.reason = (
            f"at the target dimension {f.dim}, but its vectors are not {endpoint.info.model}'s "
            f"(probe: cosine {cosine:.2f} between stored and re-embedded records): migrated"
        )
        found[i] = again
        if reporter is not None:
            reporter.note(f"{f.path}: {again.reason}")


def plan(settings: Settings, *, probe: bool = True, tokenize: bool = True) -> dict:
    """What a run would do. Reads the databases and asks the endpoint; writes nothing."""
    if not settings.roots:
        raise UsageError("no --root given: name the directory that holds the databases")
    model_id, known_dim = resolve_model(settings.model or "8b")
    spec = settings.spec  # a bad --text-template is refused before anything is read
    endpoint_report: dict = {"url": ", ".join(settings.check_endpoints()), "reachable": False}
    target = settings.dim or known_dim
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
        found = []
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
            found.append(f)
        if endpoint_report["reachable"]:
            assert ep is not None
            loop.run_until_complete(_check_unknown_models(ep, found, settings))
        todo = [f for f in found if f.status == MIGRATE]
        exact = bool(todo) and all(f.tokens is not None for f in todo)
        tokens = sum(f.tokens for f in todo if f.tokens is not None) if exact else sum(f.est_tokens() for f in todo)
        if endpoint_report["reachable"] and todo:
            assert ep is not None
            try:
                rate, n = loop.run_until_complete(ep.measure(sample, seconds=3.0))
                endpoint_report.update(measured_tokens_per_second=round(rate, 1), measured_texts=n)
                endpoint_report["eta_seconds"] = round(tokens / rate, 1) if rate > 0 else None
            except MigratorError as e:
                endpoint_report["measure_error"] = str(e)
    finally:
        if ep is not None:
            loop.run_until_complete(ep.aclose())
        loop.close()
    # Disk: the new file is staged beside the old one; after cutover the old one
    # stays as the backup (a hard link: no extra space), so each new file is extra.
    need_by_dev: Counter = Counter()
    where_of_dev: dict[int, Path] = {}  # one directory on each filesystem, to ask for free space
    for f in todo:
        assert f.dim is not None  # inspect gives every file it would migrate its dimension
        new_size = f.size + int((f.records * 4 * ((target or f.dim) - f.dim)) * 4 / 3)
        f.new_size = max(new_size, 0)
        dev = os.stat(f.path.parent).st_dev
        where_of_dev.setdefault(dev, f.path.parent)
        need_by_dev[dev] += f.new_size
    disks = []
    for dev, need in need_by_dev.items():
        where = where_of_dev[dev]
        free = durable.free_bytes(where)
        disks.append({"filesystem_of": str(where), "needed_bytes": need, "free_bytes": free, "enough": need < free})
    by_dim = Counter(f.dim for f in found if f.dim is not None)
    native = endpoint_report.get("native_dim")
    configs = appconfig.report(
        _applications((f.profile, f.path) for f in found),
        [Path(r) for r in settings.roots],
        model_id,
        target,
        native,
        endpoint=settings.check_endpoints()[0],
        key_source=settings.key_source,
    )
    other_model = [f for f in found if f.made_by is not None and f.made_by.model != model_id]
    return {
        "roots": [str(r) for r in settings.roots],
        "pattern": settings.pattern,
        "model": model_id,
        "target_dim": target,
        "totals": {
            "databases": len(found),
            "to_migrate": len(todo),
            "skipped": sum(f.status == SKIP for f in found),
            "bad": sum(f.status == BAD for f in found),
            "records": sum(f.records for f in todo),
            "chars": sum(f.chars for f in todo),
            "tokens": tokens,
            "tokens_exact": exact,
            "by_dim": {str(k): v for k, v in sorted(by_dim.items())},
            "by_application": dict(Counter(f.profile or "unknown" for f in found if f.status != BAD)),
            "made_by_other_model": len(other_model),
            "same_dim_other_model": sum(f.dim == target for f in other_model),
            "model_unknown_at_target_dim": sum(f.unknown_model for f in found),
            "staging_bytes": sum(f.new_size for f in todo),
            "backup_bytes": sum(f.size for f in todo),
        },
        "disk": disks,
        "configs": [c.as_dict() for c in configs],
        "endpoint": endpoint_report,
        "databases": [f.as_dict() for f in found],
    }
