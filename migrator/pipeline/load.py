"""Reading a source database for the run: the one pass that hashes it, checks it and takes out its texts.

:func:`load` touches no job-table row. It returns either a :class:`Work` (the
in-memory side of one database being embedded: its records, texts, the row
ranges still to embed and, for a small database, the matrix its new vectors
fill) or a :class:`Failed` saying why the file cannot be migrated as it is.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from migrator import apps
from migrator.errors import BadDatabase
from migrator.files import durable, nvdb
from migrator.jobs import leases

IN_MEMORY_BATCHES = 4  # a database of at most this many batches is kept in memory until staged ...
IN_MEMORY_RECORDS = 128  # ... and of at most this many records, whatever the batch size

Job = leases.Claimed  # a job-table row, as far as the run needs it


@dataclass
class Failed:
    job: Job
    message: str
    st: os.stat_result | None = None


@dataclass(frozen=True)
class StagedFile:
    """A database staged a moment ago, as the quality gate reads it (before its row is read)."""

    id: int
    path: str
    staged_path: str
    staged_sha256: str
    source_sha256: str
    n_records: int


@dataclass
class Work:
    """The in-memory side of one database being embedded."""

    job: Job
    path: Path
    nf: nvdb.NanoFile
    st: os.stat_result
    sha: str
    texts: list[str]
    ids: list[str]
    ranges: list[tuple[int, int]]  # (start, count) still to embed
    in_memory: bool
    profile: apps.Profile
    vectors: np.ndarray | None = None  # in memory: n x target, filled as answers come
    rows: int = 0  # what it counts against the memory bound
    left: int = 0  # rows still to embed (and, if large, to commit)
    tokens: int = 0
    truncated: list[str] = field(default_factory=list)
    outstanding: int = 0  # slices queued or in flight
    producing: bool = True
    failed: bool = False
    finished: bool = False
    staged: StagedFile | None = None  # what stage.Stager wrote, once it has
    spooled: bool = False  # it may have a spool file (files/spool.py), removed once it is staged
    lost: bool = False  # committed batches whose vectors its spool no longer holds: dropped


def in_memory_rows(batch_size: int) -> int:
    """The most records a database may have and still be kept in memory until staged: what
    a SIGKILL can cost beyond the requests in flight, so it does not grow with the batch size."""
    return min(IN_MEMORY_BATCHES * batch_size, IN_MEMORY_RECORDS)


def missing_ranges(n: int, done: list[tuple[int, int]], batch_size: int) -> list[tuple[int, int]]:
    """Row ranges of [0, n) not covered by ``done`` (start, count) pairs, cut to ``batch_size``."""
    covered = np.zeros(n, dtype=bool)
    for start, count in done:
        covered[start : start + count] = True
    out = []
    i = 0
    while i < n:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < n and not covered[j] and j - i < batch_size:
            j += 1
        out.append((i, j - i))
        i = j
    return out


def _stat_if_there(path: Path) -> os.stat_result | None:
    return os.stat(path) if os.path.exists(path) else None


def load(
    job: Job,
    spec: apps.Spec,
    *,
    target: int,
    batch_size: int,
    done_ranges: Callable[[Job], list[tuple[int, int]] | None],
) -> Work | Failed:
    """Read ``job``'s file once: hash it, check it, take its texts (an I/O thread).

    ``done_ranges(job)`` gives the batches already committed for it, or None when
    their vectors are not all in its spool any more (then it is embedded afresh);
    they are asked for only when the file is the one they were embedded from."""
    path = Path(job.path)
    if path.is_symlink():  # jobs name real files (--follow-symlinks records the target)
        return Failed(
            job,
            f"{path}: is a symlink (not followed: it may point outside --root; "
            f"--follow-symlinks migrates the file it points to)",
            _stat_if_there(path),
        )
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            raw = f.read() if st.st_size <= nvdb.WHOLE_FILE else None
    except FileNotFoundError:
        return Failed(job, f"{path}: the file is gone")
    except IsADirectoryError:
        return Failed(job, f"{path}: is a directory, not a file")
    except OSError as e:
        return Failed(
            job,
            f"{path}: cannot be read ({e.strerror}); run as a user who can read and write it",
            _stat_if_there(path),
        )
    try:
        if raw is not None:
            nf = nvdb.parse(raw, path)
            digest = hashlib.sha256(raw).hexdigest()
        else:
            nf = nvdb.read(path)
            digest = durable.sha256_file(path)
        prof = apps.choose(nf, spec)
        texts = prof.texts(nf)
        nf.check_matrix()
    except BadDatabase as e:
        return Failed(job, str(e), st)
    nf._raw = None  # the old vectors are not needed again; keep only the records
    durable.remove_stale_partials(path)
    changed = bool(job.source_sha256) and digest != job.source_sha256
    done = done_ranges(job) if job.n_done and not changed else []
    lost = done is None
    done = done or []
    in_memory = not done and nf.n <= in_memory_rows(batch_size)
    work = Work(
        job,
        path,
        nf,
        st,
        digest,
        texts,
        [r[nvdb.ID] for r in nf.data],
        ranges=missing_ranges(nf.n, done, batch_size),
        in_memory=in_memory,
        profile=prof,
        spooled=not in_memory or bool(job.n_done),
        lost=lost,
    )
    work.left = sum(count for _, count in work.ranges)
    if in_memory:
        work.vectors = np.empty((nf.n, target), dtype=nvdb.FLOAT32)
        work.rows = nf.n
    else:
        work.rows = min(nf.n, in_memory_rows(batch_size))
    return work
