"""Reading a staged file back: exactly the database it must be, before it may replace a live one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from migrator import apps
from migrator.errors import BadDatabase
from migrator.files import durable, nvdb

NORM_TOLERANCE = 1e-3


class SharedVectors:
    """Two records with different texts but one vector (a server answering one vector for
    everything passes every per-answer check): fed block by block, in row order."""

    def __init__(self, texts: list[str]):
        self.texts, self.at = texts, 0
        self.seen: dict[bytes, int] = {}

    def add(self, block: np.ndarray) -> str | None:
        """A one-line problem, or None."""
        for i, row in enumerate(block, start=self.at):
            j = self.seen.setdefault(hashlib.blake2b(row.tobytes(), digest_size=16).digest(), i)
            if j != i and self.texts[j] != self.texts[i]:
                return f"records #{j} and #{i} have different texts but the same vector"
        self.at += len(block)
        return None


def new_values(source: nvdb.NanoFile, profile: apps.Profile | None, model: str | None, dim: int) -> dict:
    """Top-level values the migrated file has in place of the source's (``additional_data``
    for a profile that records the model there)."""
    if profile is None or model is None:
        return {}
    ad = profile.additional_data(source.additional_data, model, dim)
    return {} if ad is apps.KEEP else {"additional_data": ad}


def payload_problem(
    new: nvdb.NanoFile, source: nvdb.NanoFile, profile: apps.Profile | None = None, model: str | None = None
) -> str | None:
    """Whether everything but the vectors is the source's, as the profile rewrites it
    (records a profile rewrites are checked against their vectors by :func:`record_problem`)."""
    if new.n != source.n:
        return f"{new.n} records, expected {source.n}"
    values = new_values(source, profile, model, new.embedding_dim)
    if not values and not (profile and profile.rewrites_records):
        return None if nvdb.same_payload(new, source) else "records or additional_data differ from the source"
    keys = source.keys_with(values)
    if new.keys != keys:
        return f"top-level keys are {new.keys}, expected {keys}"
    codec = "orjson" if new.codec == source.codec == "orjson" else "json"
    for k in keys:
        if k in ("embedding_dim", "matrix") or (k == "data" and profile is not None and profile.rewrites_records):
            continue
        want = values[k] if k in values else source.values[k]
        if nvdb.dumps(new.values[k], codec) != nvdb.dumps(want, codec):
            return f"'{k}' differs from what the migration writes"
    return None


def record_problem(
    new: nvdb.NanoFile, source: nvdb.NanoFile, profile: apps.Profile | None, start: int, block: np.ndarray
) -> str | None:
    """For a profile that keeps something made from the vector in each record: rows
    ``start``.. of ``new`` are the source's records, rewritten for these vectors."""
    if profile is None or not profile.rewrites_records:
        return None
    for k, row in enumerate(block):
        i = start + k
        if problem := profile.check_record(new.data[i], source.data[i], row):
            return f"record #{i} (__id__ {source.data[i].get(nvdb.ID)!r}): {problem}"
    return None


def check_staged(
    staged: str | Path,
    source: nvdb.NanoFile,
    target_dim: int,
    vectors_sha256: str | None = None,
    file_sha256: str | None = None,
    texts: list[str] | None = None,
    profile: apps.Profile | None = None,
    model: str | None = None,
) -> list[str]:
    """Problems with ``staged`` as the migrated form of ``source`` (empty list: good).

    Reads the staged file back from disk, as a new reader would: it parses as a
    NanoVectorDB file; the dimension is the target; every record, field and
    ``additional_data`` is identical and in the same order; the matrix holds one
    finite unit vector per record (given ``texts``, no two records with different
    texts share one), and (given ``vectors_sha256``) exactly the
    vectors that were committed, and (given ``file_sha256``) exactly the bytes
    that were written. A file of up to ``nvdb.WHOLE_FILE`` bytes is read once;
    a larger one is checked block by block.
    """
    try:
        if os.path.getsize(staged) <= nvdb.WHOLE_FILE:
            raw = Path(staged).read_bytes()
            if file_sha256 is not None and hashlib.sha256(raw).hexdigest() != file_sha256:
                return ["the file read back differs from the bytes written"]
            new = nvdb.parse(raw, staged)
        else:
            if file_sha256 is not None and durable.sha256_file(staged) != file_sha256:
                return ["the file read back differs from the bytes written"]
            new = nvdb.read(staged)
    except BadDatabase as e:
        return [f"staged file does not read back: {e.problem}"]
    except OSError as e:
        return [f"staged file does not read back ({e.strerror})"]
    problems = []
    if new.embedding_dim != target_dim:
        problems.append(f"embedding_dim is {new.embedding_dim}, expected {target_dim}")
    if problem := payload_problem(new, source, profile, model):
        problems.append(problem)
    if problems:
        return problems
    h = hashlib.sha256()
    worst = 0.0
    shared = SharedVectors(texts) if texts is not None else None
    at = 0
    try:
        for block in new.matrix_blocks():
            h.update(block.tobytes())
            if not np.all(np.isfinite(block)):
                return ["matrix holds NaN or infinite values"]
            if shared is not None and (problem := shared.add(block)):
                return [problem]
            if problem := record_problem(new, source, profile, at, block):
                return [problem]
            at += len(block)
            norms = np.linalg.norm(block.astype(np.float64), axis=1)
            worst = max(worst, float(np.max(np.abs(norms - 1.0))) if len(norms) else 0.0)
    except BadDatabase as e:
        return [f"staged matrix does not read back: {e.problem}"]
    if worst > NORM_TOLERANCE:
        problems.append(f"a vector's norm is off by {worst:.2g} (not unit length)")
    if vectors_sha256 is not None and h.hexdigest() != vectors_sha256:
        problems.append("matrix differs from the committed vectors")
    return problems
