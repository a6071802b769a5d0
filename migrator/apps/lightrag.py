"""LightRAG's NanoVectorDB stores: what they hold beside the vectors, and its lock.

Facts (from LightRAG's source; docs/notes/stores-lightrag-nanographrag.md):

- ``vdb_entities.json``, ``vdb_relationships.json``, ``vdb_chunks.json`` in the
  working directory, or in ``<working_dir>/<workspace>/``.
- A record's ``content`` is exactly the string LightRAG handed its embedding
  function. It is re-embedded as stored, never rebuilt from the graph (its
  layout changed between versions, and it may have been cut to a token limit).
- Since 1.4.7 each record also keeps its raw vector in ``vector``: float16
  bytes, zlib-compressed, base64. LightRAG reads it at query time (the default
  chunk picker compares it with the query), so it is rewritten from the new
  vector, not left stale.
- Since PR #3986 (unreleased as of 1.5.7) ``additional_data`` names the model
  and dimension (``lightrag_embedding_model``, ``lightrag_embedding_dim``);
  LightRAG refuses to start when they differ from its configuration. They are
  written for every migrated file: that is the file's provenance, and it makes
  a LightRAG that still names the old model refuse instead of answering garbage.
- A LightRAG with PR #4011 holds ``.lightrag_storage.lock`` (an OS ``flock``) in
  ``<working_dir>/_lightrag_config/`` (earlier drafts: in the working dir) while it
  runs. Released versions keep no lock on disk; they save through a temp file
  ``<file>.tmp.<pid>.<tid>.<ns>``, and delete such files over an hour old at start.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import glob
import os
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from migrator.apps.base import Profile
from migrator.apps.configfiles import AppConfig, Wanted, edited, env_values, read_text, set_env, upward
from migrator.errors import LockHeld
from migrator.files.nvdb import NanoFile

FILES = ("vdb_entities.json", "vdb_relationships.json", "vdb_chunks.json")
MODEL_KEY = "lightrag_embedding_model"
DIM_KEY = "lightrag_embedding_dim"
VECTOR = "vector"
LOCK_NAME = ".lightrag_storage.lock"
CONFIG_DIR = "_lightrag_config"
TEMP_MARK = ".tmp."
TEMP_REAP_SECONDS = 3600  # LightRAG deletes its temp files older than this at start
# Only LightRAG keeps these beside its vector files (nano-graphrag has neither).
NEIGHBOURS = ("kv_store_doc_status.json", "vdb_relationships.json")


def encode_vector(vector: np.ndarray) -> str:
    """LightRAG's per-record copy: float16, little-endian, zlib, base64."""
    raw = np.ascontiguousarray(vector, dtype="<f2").tobytes()
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype="<f2").astype(np.float32)


def looks_like(nf: NanoFile) -> bool:
    ad = nf.additional_data
    if isinstance(ad, dict) and MODEL_KEY in ad:
        return True
    if nf.path.name not in FILES:
        return False
    if nf.data:
        # any record shaped like LightRAG's: one damaged record is then reported as such
        return any(isinstance(r.get("content"), str) for r in nf.data[:64])
    return any((nf.path.parent / name).exists() for name in NEIGHBOURS)


class LightRag(Profile):
    name = "lightrag"
    application = "lightrag"
    label = "LightRAG"
    title = "LightRAG"
    whole_directory = True  # one working dir: every vector file at one dimension
    settings_by_directory = True  # the server's .env is in or above its working dir

    def looks_like(self, nf: NanoFile) -> bool:
        return looks_like(nf)

    def made_by(self, nf: NanoFile) -> tuple[str, int | None] | None:
        return made_by(nf)

    def storage_locks(self, lives: list):
        return storage_locks(lives)

    rewrites_records = True

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        return self._checked(record.get("content"), "content", index, record, nf)

    def record(self, rec: dict, vector: np.ndarray) -> dict:
        if VECTOR not in rec:  # written by LightRAG < 1.4.7: it never reads one
            return rec
        return {**rec, VECTOR: encode_vector(vector)}

    def check_record(self, new: dict, old: dict, vector: np.ndarray) -> str | None:
        if (VECTOR in new) != (VECTOR in old):
            return f"'{VECTOR}' field {'added' if VECTOR in new else 'lost'}"
        if {k: v for k, v in new.items() if k != VECTOR} != {k: v for k, v in old.items() if k != VECTOR}:
            return "differs from the source record"
        if VECTOR in new:
            try:
                got = decode_vector(new[VECTOR])
            except (ValueError, TypeError, zlib.error):
                return f"'{VECTOR}' does not decode"
            if got.shape != vector.shape or not np.allclose(got, vector, atol=2e-3):
                return f"'{VECTOR}' is not the new vector"
        return None

    def additional_data(self, old: Any, model: str, dim: int) -> Any:
        base = old if isinstance(old, dict) else {}
        return {**base, MODEL_KEY: model, DIM_KEY: int(dim)}

    def config_report(self, dirs: list[Path], roots: list[Path], wanted: Wanted) -> list[AppConfig]:
        """The server's ``.env`` (its working directory or the two above): EMBEDDING_MODEL and
        EMBEDDING_DIM, and the document prefix EMBEDDING_ASYMMETRIC may add."""
        lines = lightrag_lines(wanted.model, wanted.dim, wanted.native_dim)
        out = []
        for p in find_lightrag(dirs):
            env = env_values(read_text(p) or "")
            dim_text = env.get("EMBEDDING_DIM", "")
            model = env.get("EMBEDDING_MODEL") or None
            cfg = AppConfig("lightrag", str(p), model, int(dim_text) if dim_text.isdigit() else None, lines)
            if env.get("EMBEDDING_ASYMMETRIC", "").lower() in ("true", "1", "yes"):
                prefix = env.get("EMBEDDING_DOCUMENT_PREFIX", "")
                if prefix and prefix != "NO_PREFIX":
                    cfg.warnings.append(
                        f"EMBEDDING_ASYMMETRIC=true: LightRAG embeds documents as "
                        f"{prefix!r} + content; migrate with --text-template "
                        f"'{prefix}{{content}}' so the new vectors match"
                    )
            out.append(cfg)
        return out or [
            AppConfig(
                "lightrag",
                None,
                lines=lines,
                notes=[
                    "no LightRAG .env found near the working dir; set these where the server reads its "
                    "settings (its .env or environment)"
                ],
            )
        ]

    def config_edit(self, cfg: AppConfig) -> str | None:
        return edited(cfg, set_env)

    def config_files(self, roots: list[Path], dirs: list[Path]) -> list[Path]:
        return find_lightrag(dirs)


PROFILE = LightRag()


# ------------------------------------------------------------------- its settings
def lightrag_lines(model: str, dim: int | None, native_dim: int | None = None) -> list[str]:
    lines = [f"EMBEDDING_MODEL={model}", f"EMBEDDING_DIM={dim}"]
    if native_dim and dim is not None and dim < native_dim:
        lines.append("EMBEDDING_SEND_DIM=true")
    return lines


def find_lightrag(dirs: list[Path]) -> list[Path]:
    found: list[Path] = []
    for start in dirs:
        for d in upward(Path(start).resolve(), 2):
            cand = d / ".env"
            if cand not in found and cand.is_file() and "EMBEDDING_" in (read_text(cand) or ""):
                found.append(cand)
    return found


def made_by(nf: NanoFile) -> tuple[str, int | None] | None:
    """The model (and dimension) LightRAG recorded for the file's vectors, if it did."""
    ad = nf.additional_data
    if isinstance(ad, dict) and isinstance(ad.get(MODEL_KEY), str):
        dim = ad.get(DIM_KEY)
        return ad[MODEL_KEY], dim if isinstance(dim, int) and not isinstance(dim, bool) else None
    return None


# ----------------------------------------------------------------- the lock
def lock_candidates(live: Path) -> list[Path]:
    """Where a LightRAG serving this file keeps its storage lock, if it has one: its
    working directory is the file's directory, or its parent (a workspace)."""
    out = []
    for d in (live.parent, live.parent.parent):
        out += [d / CONFIG_DIR / LOCK_NAME, d / LOCK_NAME]
    return out


def fresh_temp_files(live: Path, now: float | None = None) -> list[tuple[Path, float]]:
    """LightRAG temp files beside ``live`` young enough that a save may be under way."""
    now = time.time() if now is None else now
    out = []
    for name in glob.glob(glob.escape(str(live)) + TEMP_MARK + "*"):
        try:
            age = now - os.stat(name).st_mtime
        except OSError:
            continue
        if age < TEMP_REAP_SECONDS:
            out.append((Path(name), age))
    return out


def _holder(lock: Path) -> str:
    try:
        text = lock.read_text(errors="replace").strip()
    except OSError:
        return ""
    return f" (pid {text.split()[0]})" if text and text.split()[0].isdigit() else ""


@contextlib.contextmanager
def storage_locks(lives: list[str | Path]) -> Iterator[list[Path]]:
    """Hold every LightRAG storage lock guarding these files while files are swapped, so
    no LightRAG starts on a half-swapped working dir; refuse (LockHeld, nothing taken)
    when a LightRAG holds one, or is saving one of the files right now."""
    seen: set[Path] = set()
    locks: list[Path] = []
    for live in lives:
        live = Path(live)
        for cand in lock_candidates(live):
            if cand not in seen:
                seen.add(cand)
                if cand.is_file():
                    locks.append(cand)
        for temp, age in fresh_temp_files(live):
            raise LockHeld(
                f"{temp}: LightRAG is saving {live.name} ({age:.0f} s ago); stop LightRAG, "
                f"then run again (if none runs, delete that temp file)"
            )
    held: list[int] = []
    try:
        for lock in locks:
            fd = os.open(lock, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockHeld(
                    f"{lock}: a LightRAG server holds its storage lock{_holder(lock)}; "
                    f"stop it before the swap, then run again (nothing was swapped)"
                ) from None
            held.append(fd)
        yield locks
    finally:
        for fd in held:
            os.close(fd)  # closing the descriptor releases its flock
