"""Checks that a migrated DVD database is exactly what DVD would build with the new model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from migrator.apps.dvd import DVD_PREFIX
from migrator.testing.embedder import embed

logging.getLogger("nano-vectordb").setLevel(logging.WARNING)
from nano_vectordb import NanoVectorDB  # noqa: E402


def assert_migrated(
    path: Path, original: dict, *, dim: int, native_dim: int = 4096, seed: str = "Qwen/Qwen3-Embedding-8B"
) -> None:
    """``original`` is the parsed JSON of the file before migration."""
    new = json.loads(Path(path).read_text(encoding="utf-8"))
    assert new["embedding_dim"] == dim
    assert new["data"] == original["data"]  # every record, field, id, order
    assert new.get("additional_data") == original.get("additional_data")
    assert list(new) == list(original)  # same top-level keys, same order
    db = NanoVectorDB(dim, storage_file=str(path))  # the real package loads it
    assert len(db) == len(original["data"])
    matrix = np.frombuffer(__import__("base64").b64decode(new["matrix"]), dtype="<f4").reshape(-1, dim)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    for i, rec in enumerate(original["data"]):
        bare = DVD_PREFIX.sub("", rec["caption"], count=1)
        want = embed(bare, native_dim, seed=seed)[:dim]
        want = want / np.linalg.norm(want)
        assert np.allclose(matrix[i], want, atol=1e-5), f"record {i} was not embedded from its bare caption"
        hit = db.query(want, top_k=1)[0]
        assert hit["__id__"] == rec["__id__"]
