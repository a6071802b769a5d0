"""Which model made a file's vectors.

A LightRAG file says so itself (``additional_data``, see :mod:`migrator.apps.lightrag`).
Other files cannot without their application noticing, so migrator keeps a
sidecar beside each file it migrates, ``<name>.migrator-provenance`` (JSON): a short
list of entries, each naming the model and dimension of one version of the file,
identified by size, mtime and inode (and sha256, for when the inode changed).

An entry is written when the staged file is (its inode, size and mtime survive
the rename that cuts it over), and entries are never removed when a file is
rolled back: the restored backup is the original inode, so an entry that
described it before the migration describes it again. An entry matching no
current file says nothing, so a file rebuilt by its application is "unknown",
never mistaken for a migrated one.

Two vector sets of one dimension can come from different models (LightRAG users
moved Qwen3-Embedding-0.6B to 4B, both at 1024 dims, and got silent garbage).
Where nothing records the model, :func:`probe` asks the endpoint: a few stored
texts re-embedded by the same model come back at cosine ~1 to their stored
vectors; by another model, near 0.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from migrator import apps
from migrator.files import durable, nvdb
from migrator.files.layout import OWN_MARK

log = logging.getLogger("migrator.apps.provenance")

SIDECAR = f"{OWN_MARK}provenance"  # no ".json": globs for data files must not match it
KEEP_ENTRIES = 16
PROBE_RECORDS = 3
SAME_MODEL_COSINE = 0.9  # same model: > 0.99 (numerics); another model's space: near 0


@dataclass
class MadeBy:
    model: str
    dim: int | None
    source: str  # "additional_data" (the file's own) or "sidecar"
    migration: str | None = None

    def as_dict(self) -> dict:
        return {"model": self.model, "dim": self.dim, "source": self.source, "migration": self.migration}


def sidecar_path(live: str | os.PathLike) -> Path:
    live = Path(live)
    return live.with_name(live.name + SIDECAR)


def _entries(live: Path) -> list[dict]:
    path = sidecar_path(live)
    try:
        value = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, orjson.JSONDecodeError) as e:
        log.warning("%s: unreadable (%s); treated as absent", path, e)
        return []
    entries = value.get("entries") if isinstance(value, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def from_sidecar(live: str | os.PathLike) -> MadeBy | None:
    """What the sidecar says of the file now at ``live`` (None: nothing that matches it)."""
    live = Path(live)
    entries = _entries(live)
    if not entries:
        return None
    try:
        st = os.stat(live)
    except OSError:
        return None
    sha = None
    for e in reversed(entries):
        if e.get("size") != st.st_size or e.get("mtime_ns") != st.st_mtime_ns:
            continue
        if e.get("inode") != st.st_ino:  # copied rather than linked back: the bytes decide
            sha = sha or durable.sha256_file(live)
            if e.get("sha256") != sha:
                continue
        if isinstance(e.get("model"), str):
            dim = e.get("dim")
            return MadeBy(e["model"], dim if isinstance(dim, int) else None, "sidecar", e.get("migration"))
    return None


def of(nf: nvdb.NanoFile) -> MadeBy | None:
    """Which model made this file's vectors, as far as anything records it."""
    own = apps.recorded_maker(nf)
    if own is not None:
        return MadeBy(own[0], own[1], "additional_data")
    return from_sidecar(nf.path)


def record(
    live: str | os.PathLike, new_file: str | os.PathLike, sha256: str, model: str, dim: int, migration_id: str
) -> None:
    """Add an entry for ``new_file`` (staged now, at ``live`` after cutover) to live's sidecar."""
    live = Path(live)
    st = os.stat(new_file)
    ident = (st.st_size, st.st_mtime_ns, st.st_ino)
    entries = [e for e in _entries(live) if (e.get("size"), e.get("mtime_ns"), e.get("inode")) != ident]
    entries.append(
        {
            "model": model,
            "dim": int(dim),
            "migration": migration_id,
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "inode": st.st_ino,
            "sha256": sha256,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
    )
    _write(live, entries[-KEEP_ENTRIES:])


def _write(live: Path, entries: list[dict]) -> None:
    doc = {"about": f"which embedding model made the vectors of {live.name} (written by migrator)", "entries": entries}
    try:
        like = os.stat(live)  # the sidecar gets the data file's mode and owner
    except FileNotFoundError:
        like = None
    durable.atomic_write(sidecar_path(live), [orjson.dumps(doc, option=orjson.OPT_INDENT_2)], like=like)


def forget(live: str | os.PathLike, migration_id: str, *, sync: bool = True) -> None:
    """Drop a migration's entries (it was rolled back); the sidecar goes when none is left.
    ``sync=False``: a removal is not made durable here, because the caller fsyncs the live
    file's directory (the sidecar's) before it records anything."""
    live = Path(live)
    path = sidecar_path(live)
    if not path.exists():
        return
    entries = _entries(live)
    kept = [e for e in entries if e.get("migration") != migration_id]
    if len(kept) == len(entries):
        return
    if not kept:
        if sync:
            durable.remove_if_exists(path)  # and its directory fsync'd
        else:
            path.unlink(missing_ok=True)
        return
    _write(live, kept)


def picked_rows(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})[:PROBE_RECORDS] if n else []


async def probe(endpoint, nf: nvdb.NanoFile, texts: list[str]) -> float | None:
    """Mean cosine between a few stored vectors and the same texts embedded now (None: no records)."""
    rows = picked_rows(nf.n)
    if not rows:
        return None
    stored = nf.matrix()[rows].astype(np.float64)
    got = (await endpoint.embed([texts[i] for i in rows])).vectors.astype(np.float64)
    if got.shape != stored.shape:
        return 0.0
    stored /= np.maximum(np.linalg.norm(stored, axis=1, keepdims=True), 1e-12)
    got /= np.maximum(np.linalg.norm(got, axis=1, keepdims=True), 1e-12)
    return float(np.mean(np.sum(stored * got, axis=1)))
