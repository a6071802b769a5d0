"""Checking a staged database before it may replace a live one."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import nvdb
from .errors import BadDatabase

NORM_TOLERANCE = 1e-3


def check_staged(staged: Path, source: nvdb.NanoFile, target_dim: int,
                 expected: np.ndarray | None = None) -> list[str]:
    """Problems with ``staged`` as the migrated form of ``source`` (empty list: good).

    Checks: it parses as a NanoVectorDB file; the dimension is the target; every
    record, field and ``additional_data`` is identical and in the same order;
    the matrix has one finite unit vector per record (and equals ``expected``).
    """
    try:
        new = nvdb.read(staged)
        matrix = new.matrix()
    except BadDatabase as e:
        return [f"staged file does not read back: {e.problem}"]
    problems = []
    if new.embedding_dim != target_dim:
        problems.append(f"embedding_dim is {new.embedding_dim}, expected {target_dim}")
    if new.n != source.n:
        problems.append(f"{new.n} records, expected {source.n}")
    elif not nvdb.same_payload(new, source):
        problems.append("records or additional_data differ from the source")
    if matrix.size:
        if not np.all(np.isfinite(matrix)):
            problems.append("matrix holds NaN or infinite values")
        else:
            norms = np.linalg.norm(matrix.astype(np.float64), axis=1)
            worst = float(np.max(np.abs(norms - 1.0)))
            if worst > NORM_TOLERANCE:
                problems.append(f"a vector's norm is off by {worst:.2g} (not unit length)")
    if expected is not None and not problems and not np.array_equal(matrix, expected):
        problems.append("matrix differs from the committed vectors")
    return problems
