"""Checking a staged database before it may replace a live one."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from . import fsutil, nvdb
from .errors import BadDatabase

NORM_TOLERANCE = 1e-3


class SharedVectors:
    """Two records with different texts but one vector (a server answering one vector for
    everything passes every per-answer check): fed block by block, in row order."""

    def __init__(self, texts: list[str]):
        self.texts, self.seen, self.at = texts, {}, 0

    def add(self, block: np.ndarray) -> str | None:
        """A one-line problem, or None."""
        for i, row in enumerate(block, start=self.at):
            j = self.seen.setdefault(hashlib.blake2b(row.tobytes(), digest_size=16).digest(), i)
            if j != i and self.texts[j] != self.texts[i]:
                return f"records #{j} and #{i} have different texts but the same vector"
        self.at += len(block)
        return None


def check_staged(staged: Path, source: nvdb.NanoFile, target_dim: int,
                 vectors_sha256: str | None = None, file_sha256: str | None = None,
                 texts: list[str] | None = None) -> list[str]:
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
            if file_sha256 is not None and fsutil.sha256_file(staged) != file_sha256:
                return ["the file read back differs from the bytes written"]
            new = nvdb.read(staged)
    except BadDatabase as e:
        return [f"staged file does not read back: {e.problem}"]
    except OSError as e:
        return [f"staged file does not read back ({e.strerror})"]
    problems = []
    if new.embedding_dim != target_dim:
        problems.append(f"embedding_dim is {new.embedding_dim}, expected {target_dim}")
    if new.n != source.n:
        problems.append(f"{new.n} records, expected {source.n}")
    elif not nvdb.same_payload(new, source):
        problems.append("records or additional_data differ from the source")
    if problems:
        return problems
    h = hashlib.sha256()
    worst = 0.0
    shared = SharedVectors(texts) if texts is not None else None
    try:
        for block in new.matrix_blocks():
            h.update(block.tobytes())
            if not np.all(np.isfinite(block)):
                return ["matrix holds NaN or infinite values"]
            if shared is not None and (problem := shared.add(block)):
                return [problem]
            norms = np.linalg.norm(block.astype(np.float64), axis=1)
            worst = max(worst, float(np.max(np.abs(norms - 1.0))) if len(norms) else 0.0)
    except BadDatabase as e:
        return [f"staged matrix does not read back: {e.problem}"]
    if worst > NORM_TOLERANCE:
        problems.append(f"a vector's norm is off by {worst:.2g} (not unit length)")
    if vectors_sha256 is not None and h.hexdigest() != vectors_sha256:
        problems.append("matrix differs from the committed vectors")
    return problems
