"""The quality gate: checks on the staged databases before any of them replaces a live one.

Every staged file was verified when it was written (records, dimension, unit
norms, the committed vectors). The gate looks again, as a whole, right before
cutover (and on demand with ``migrate verify``), and adds what a per-file
check cannot see: whether the new vectors *mean* anything.

- **Structure**: the file is still the one verified (SHA-256), it parses,
  has the records of its source and the target dimension, finite unit rows,
  and no two records with different texts share a vector (a server answering
  the same vector for everything passes every per-answer check). `migrate
  verify` reads every staged database; before cutover `run` reads the
  sampled ones, since staging verified each file the same way and cutover
  checks by hash that it is still that file.
- **Self-retrieval**, on a sample (3 records in each of up to 40 databases, at
  least 30 in all): each sampled record's own text, embedded
  as a Qwen3 query (with an instruction), must find that record among the top
  k of its new database. Random vectors, or vectors attached to the wrong
  records, fail this.
- **Neighbourhoods**, on the same sample: the top-k neighbours of a record
  under the new vectors must overlap those under the old vectors clearly more
  than chance. Two real embedding models agree on what is close; garbage does
  not.

A failed gate holds the cutover (exit 11) and says what failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import Row

from migrator import apps
from migrator.errors import BadDatabase
from migrator.files import durable, nvdb
from migrator.jobs import queries as jobs_queries
from migrator.jobs.models import D_CUT_OVER, D_STAGED, Migration
from migrator.jobs.store import StateStore
from migrator.pipeline import readback
from migrator.pipeline.load import StagedFile
from migrator.pipeline.readback import SharedVectors

SAMPLE_DATABASES = 40  # databases sampled for the semantic checks
SAMPLE_PER_DATABASE = 3  # records sampled in each...
MIN_SAMPLES = 30  # ...or more, so that a migration of few databases still samples 30
SELF_HIT_FLOOR = 0.9  # share of sampled records that must find themselves in the top k
MISSES_ALWAYS_ALLOWED = 1  # so that one unlucky record in a small sample does not fail the gate
TIE = 0.02  # a record scoring this close to the best counts as found
OVERLAP_OVER_CHANCE = 1.5  # mean old/new neighbourhood overlap must beat chance by this factor
MIN_OVERLAP_SAMPLES = 10  # fewer (tiny databases only): the overlap test is not decisive, skipped
NORM_TOLERANCE = 1e-3
QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def as_query(text: str) -> str:
    """Qwen3-Embedding's query form (documents are embedded without an instruction)."""
    return f"Instruct: {QUERY_TASK}\nQuery:{text}"


def top_k(n: int) -> int:
    """How deep a record must be found: 1 in a 4-record database, up to 5 in larger ones."""
    return max(1, min(5, n // 4))


@dataclass
class GateReport:
    migration_id: str
    databases: int = 0
    problems: list[str] = field(default_factory=list)  # one line each: file and what is wrong
    sampled: int = 0
    self_hits: int = 0
    overlap: float | None = None  # mean |top-k old ∩ top-k new| / k over the sample
    chance: float | None = None  # what random vectors would give on the same databases
    overlap_samples: int = 0
    checked: int = 0  # databases read again (all, or the sample)
    skipped: list[str] = field(default_factory=list)  # staged files cutover will re-stage
    live: bool = False  # judged the cut-over live files (against their backups)

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {
            "migration": self.migration_id,
            "passed": self.passed,
            "databases": self.databases,
            "what": "live" if self.live else "staged",
            "databases_read": self.checked,
            "sampled_records": self.sampled,
            "self_hits": self.self_hits,
            "neighbourhood_overlap": None if self.overlap is None else round(self.overlap, 3),
            "overlap_by_chance": None if self.chance is None else round(self.chance, 3),
            "problems": self.problems,
            "skipped": self.skipped,
        }


log = logging.getLogger("migrator.gate")

BLOCK_ROWS = 256  # rows of the new and old matrices read together: a few MB at 3072 dims


def _unit(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)  # float32: enough to rank neighbours, half the memory
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)


@dataclass
class _Checked:
    problems: list[str]
    skipped: str | None = None  # why this database was not checked (cutover re-stages it)
    hits: int = 0  # sampled records found by their own query in the top k
    samples: int = 0
    overlaps: list[float] = field(default_factory=list)
    chances: list[float] = field(default_factory=list)


def _texts(path: str, spec: apps.Spec) -> tuple[list[str], apps.Profile] | None:
    try:
        src = nvdb.read(path)
        prof = apps.choose(src, spec)
        return prof.texts(src), prof
    except (BadDatabase, OSError):
        return None  # _structure reports it


def _structure(
    job,
    target_dim: int,
    picked: list[int],
    queries: np.ndarray | None,
    found: tuple[list[str], apps.Profile] | None,
    model: str,
    trusted: bool = False,
) -> _Checked:
    """Check one staged database, streaming its new and old matrices in blocks; for the
    ``picked`` rows also score their ``queries`` and compare neighbourhoods. ``trusted``:
    both files were verified a moment ago (at staging), so they are not hashed again."""
    staged, live = Path(job.staged_path), Path(job.path)
    if trusted:
        pass
    elif durable.sha256_if_exists(staged) != job.staged_sha256:
        if isinstance(job, _AsLive):
            return _Checked([], skipped=f"{staged}: changed since the cutover wrote it; not judged")
        # Swapped before a crash, or altered since staging: cutover tells which (by hashes)
        # and re-stages an altered one; it is not this gate's to judge.
        return _Checked([], skipped=f"{staged}: missing or changed since staging; cutover sorts it out")
    if not trusted and durable.sha256_if_exists(live) != job.source_sha256:
        if isinstance(job, _AsLive):
            return _Checked([f"{live}: the backup no longer holds the original"])
        # the live file changed since it was read: cutover leaves it alone and embeds it again
        return _Checked([], skipped=f"{live}: changed since it was read; cutover embeds it again")
    try:
        new = nvdb.read(staged)
        src = nvdb.read(live)
    except (BadDatabase, OSError) as e:
        return _Checked([f"{staged}: {e}"])
    if new.embedding_dim != target_dim:
        return _Checked([f"{staged}: {new.embedding_dim} dims, expected {target_dim}"])
    texts, prof = found or (None, None)
    if new.n != job.n_records or texts is None or (problem := readback.payload_problem(new, src, prof, model)):
        return _Checked([f"{staged}: records differ from its source {live}"])
    n, p = new.n, len(picked)
    # pass 1: the picked rows' vectors, old and new
    new_rows, old_rows = np.zeros((p, target_dim)), np.zeros((p, src.embedding_dim))
    at = 0
    for nb, ob in zip(new.matrix_blocks(BLOCK_ROWS), src.matrix_blocks(BLOCK_ROWS)):
        for k, r in enumerate(picked):
            if at <= r < at + len(nb):
                new_rows[k], old_rows[k] = nb[r - at], ob[r - at]
        at += len(nb)
    new_rows, old_rows = _unit(new_rows), _unit(old_rows)
    # pass 2: every row checked; similarities of the picked rows (and their queries) to all
    new_sims, old_sims, q_sims = np.zeros((p, n)), np.zeros((p, n)), np.zeros((p, n))
    shared = SharedVectors(texts)
    worst, at = 0.0, 0
    for nb, ob in zip(new.matrix_blocks(BLOCK_ROWS), src.matrix_blocks(BLOCK_ROWS)):
        if not np.all(np.isfinite(nb)):
            return _Checked([f"{staged}: NaN or infinite values"])
        worst = max(worst, float(np.max(np.abs(np.linalg.norm(nb, axis=1).astype(np.float64) - 1.0))))
        if problem := shared.add(nb):
            return _Checked([f"{staged}: {problem} (is the server answering one vector for everything?)"])
        if problem := readback.record_problem(new, src, prof, at, nb):
            return _Checked([f"{staged}: {problem}"])
        if p:
            nu, ou = _unit(nb), _unit(ob)
            new_sims[:, at : at + len(nb)] = new_rows @ nu.T
            old_sims[:, at : at + len(nb)] = old_rows @ ou.T
            q_sims[:, at : at + len(nb)] = queries @ nu.T
        at += len(nb)
    if worst > NORM_TOLERANCE:
        return _Checked([f"{staged}: a vector's norm is off by {worst:.2g}"])
    out = _Checked([])
    k = top_k(n)
    for qi, i in enumerate(picked):
        out.samples += 1
        scores = q_sims[qi]
        # found: in the top k, or tied with the best (identical or near-identical texts, such as
        # consecutive clips of one scene, share the top; which of them ranks first is chance)
        out.hits += int(scores[i] >= scores.max() - TIE or i in np.argsort(-scores, kind="stable")[:k])
        if n - 1 > 2 * k:  # room for the neighbourhoods to differ by chance
            ns, os_ = new_sims[qi].copy(), old_sims[qi].copy()
            ns[i] = os_[i] = -np.inf  # not its own neighbour
            by_new = np.argsort(-ns, kind="stable")[:k]
            # the old top k, with whatever ties its k-th (near-identical texts: which of them
            # ranks first is chance, so any of them is as good a neighbour)
            kth_old = np.partition(os_, -k)[-k]
            in_old = os_ >= kth_old - TIE
            chance = float(np.count_nonzero(in_old)) / (n - 1)
            if chance * OVERLAP_OVER_CHANCE < 1.0:  # else even a perfect model could not beat it
                out.overlaps.append(float(np.count_nonzero(in_old[by_new])) / k)
                out.chances.append(chance)
    return out


@dataclass
class _AsLive:
    """A cut-over job seen as the gate sees a staged one: the live file is the new one, its
    backup the source (records, old vectors)."""

    id: int
    path: str  # the source: the backup
    staged_path: str  # the new file: the live one
    staged_sha256: str
    source_sha256: str
    n_records: int
    live_path: str


def _as_live(job, migration_id: str) -> _AsLive:
    from migrator.files.layout import backup_path

    backup = job.backup_path or str(backup_path(job.path, migration_id))
    return _AsLive(job.id, backup, job.path, job.staged_sha256, job.source_sha256, job.n_records, job.path)


def _proven(jobs: list) -> list:
    """The jobs whose files' stats prove them unchanged since staging."""
    return [j for j in jobs if _proven_unchanged(j)]


def sample_ids(store: StateStore, migration_id: str) -> set[int]:
    """The databases the semantic checks sample, chosen by the migration's id among all of
    its databases: a run knows them before any is staged, and every run picks the same.
    The picks are positions in job order (what ``random.sample`` of the sorted ids would
    pick), so the ids are read a page at a time and only the sampled ones kept."""
    with store.reader() as s:
        n = jobs_queries.count_jobs(s, migration_id)
    at = set(random.Random(migration_id).sample(range(n), min(SAMPLE_DATABASES, n)))
    return {r.id for i, r in enumerate(store.each_job(migration_id, "id")) if i in at}


async def judge(
    job,
    target_dim: int,
    endpoint,
    *,
    migration_id: str,
    model: str,
    sampled: bool,
    n_sampled: int,
    found: tuple[list[str], apps.Profile] | None,
    trusted: bool = False,
) -> _Checked:
    """One database's part of the gate: its structure, and for a sampled one its records'
    self-retrieval and neighbourhoods (their queries embedded through ``endpoint``)."""
    texts = found[0] if found else None
    picked: list[int] = []
    queries = None
    if sampled and endpoint is not None and texts and len(texts) >= 2:
        rng = random.Random(f"{migration_id}:{job.id}")  # its own: judged in any order, the same picks
        per_db = max(SAMPLE_PER_DATABASE, -(-MIN_SAMPLES // max(1, n_sampled)))
        picked = sorted(rng.sample(range(len(texts)), min(per_db, len(texts))))
        queries = (await endpoint.embed([as_query(texts[i]) for i in picked])).vectors.astype(np.float64)
    return await asyncio.to_thread(_structure, job, target_dim, picked, queries, found, model, trusted)


class _Limited:
    """An endpoint whose requests wait for a place under the run's in-flight limit."""

    def __init__(self, endpoint, limit: AbstractAsyncContextManager):
        self.endpoint, self.limit = endpoint, limit

    async def embed(self, texts: list[str]):
        async with self.limit:
            return await self.endpoint.embed(texts)


class Prejudge:
    """Judges the sampled databases as they are staged, while the others are still being
    embedded: the gate before cutover then only adds up what it found (:func:`check`'s
    ``prejudged``), reading again only what changed since or was staged by another run."""

    def __init__(self, migration_id: str, target_dim: int, model: str, endpoint, sampled: set[int]):
        """``sampled``: :func:`sample_ids`."""
        self.migration_id, self.target_dim, self.model, self.endpoint = migration_id, target_dim, model, endpoint
        self.sampled = sampled
        self.results: dict[int, _Checked] = {}

    def wants(self, job_id: int) -> bool:
        return job_id in self.sampled and job_id not in self.results

    async def staged(
        self, staged: StagedFile, texts: list[str], profile: apps.Profile, limit: AbstractAsyncContextManager | None
    ) -> None:
        """Judge a database just staged; its queries are sent under the run's in-flight ``limit``,
        so a kill loses no more than the run's window."""
        try:
            self.results[staged.id] = await judge(
                staged,
                self.target_dim,
                _Limited(self.endpoint, limit) if limit is not None else self.endpoint,
                migration_id=self.migration_id,
                model=self.model,
                sampled=True,
                n_sampled=len(self.sampled),
                found=(texts, profile),
                trusted=True,
            )
        except Exception as e:  # the gate before cutover judges it again; the run goes on
            log.info("%s: not judged while staging (%s); the gate reads it before cutover", staged.path, e)


def _proven_unchanged(job) -> bool:
    """Both files still have the stat they had when read and when staged (and verified)."""
    return (
        durable.unchanged(job.path, jobs_queries.source_identity(job)) is not None
        and durable.unchanged(job.staged_path, jobs_queries.staged_identity(job)) is not None
    )


def _still_the_same(job) -> bool:
    """Both files are the ones judged at staging: by their stat where it proves it, else by hash."""
    source = durable.is_recorded(job.path, jobs_queries.source_identity(job), job.source_sha256)
    return source and durable.is_recorded(job.staged_path, jobs_queries.staged_identity(job), job.staged_sha256)


async def check(
    store: StateStore,
    migration_id: str,
    target_dim: int,
    endpoint,
    *,
    every_database: bool = True,
    live: bool = False,
    unproven: bool = False,
    prejudged: dict[int, _Checked] | None = None,
) -> GateReport:
    """Run the gate over the migration's staged databases. ``endpoint`` embeds the sampled
    queries (None: structure only). Memory: one block of rows at a time, whatever the size.

    ``every_database=False`` (what `run` does before cutover) re-reads only the sampled
    databases: each of the others was verified the same way when it was staged (records,
    dimension, unit rows, no shared vectors, the committed vectors), and cutover checks by
    hash that it is still that file. `migrate verify` reads them all.

    ``unproven=True`` (what `cutover` does, with no endpoint) also reads every database whose
    files cannot be proven unchanged since staging by their stat (durable.unchanged).

    ``prejudged``: what :class:`Prejudge` found while staging; used for each database whose
    files are proven unchanged since."""

    report = GateReport(migration_id, live=live)
    with store.reader() as s:
        mig = s.get(Migration, migration_id)
        assert mig is not None  # every caller passes a migration it has just read
        spec, model = apps.Spec.parse(mig.profile), mig.model
    planned = sample_ids(store, migration_id) if endpoint else set()
    overlaps: list[float] = []
    chances: list[float] = []
    pages = store.job_pages(
        migration_id,
        *("id", "path", "staged_path", "staged_sha256", "source_sha256", "n_records", "backup_path"),
        *jobs_queries.SOURCE_IDENTITY,
        *jobs_queries.STAGED_IDENTITY,
        states=(D_CUT_OVER if live else D_STAGED,),
    )
    for page in pages:
        # the staged jobs' rows, or (live) the cut-over ones seen as live
        jobs: Sequence[Row | _AsLive] = [_as_live(j, migration_id) for j in page] if live else page
        report.databases += len(jobs)
        sampled_ids = planned & {j.id for j in jobs}
        skip: set[int] = set()  # databases not read again: neither sampled nor (with `unproven`) in doubt
        if not every_database:
            others = [j for j in jobs if j.id not in sampled_ids]
            if unproven and not live:  # two stats a database, in one thread hop a page
                others = await asyncio.to_thread(_proven, others)
            skip = {j.id for j in others}
        for job in jobs:
            if job.id in skip:
                continue
            report.checked += 1
            ready = (prejudged or {}).get(job.id)
            if ready is not None and not live and await asyncio.to_thread(_still_the_same, job):
                c = ready  # judged as it was staged, and both files are still those files
            else:
                # texts from the source's records (for a live check: the live file's, the same records,
                # read under its own name, which nano-graphrag's texts depend on)
                found = await asyncio.to_thread(_texts, job.live_path if live else job.path, spec)
                c = await judge(
                    job,
                    target_dim,
                    endpoint,
                    migration_id=migration_id,
                    model=model,
                    sampled=job.id in sampled_ids,
                    n_sampled=len(planned),
                    found=found,
                )
            report.problems += c.problems
            if c.skipped:
                report.skipped.append(c.skipped)
            report.sampled += c.samples
            report.self_hits += c.hits
            overlaps += c.overlaps
            chances += c.chances
    samples, hits = report.sampled, report.self_hits
    if samples and hits < SELF_HIT_FLOOR * samples and samples - hits > MISSES_ALWAYS_ALLOWED:
        report.problems.append(
            f"self-retrieval: only {hits} of {samples} sampled records are found by their own text among "
            f"the top results of their new database (at least {SELF_HIT_FLOOR:.0%} must be): the new "
            f"vectors do not belong to their records (wrong order, garbage, or a different model)"
        )
    if len(overlaps) >= MIN_OVERLAP_SAMPLES:
        report.overlap_samples = len(overlaps)
        report.overlap, report.chance = float(np.mean(overlaps)), float(np.mean(chances))
        if report.overlap < OVERLAP_OVER_CHANCE * report.chance:
            report.problems.append(
                f"neighbourhoods: the new vectors' nearest neighbours overlap the old ones' by "
                f"{report.overlap:.2f} on average, no better than random vectors would "
                f"({report.chance:.2f}); the new model does not see these texts as the old one did"
            )
    return report
