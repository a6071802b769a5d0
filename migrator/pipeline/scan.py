"""Finding NanoVectorDB files under the roots and sizing up each one.

Walking never follows a symlinked directory, and a symlinked file is reported,
not read: a link can point outside ``--root``, into someone else's data.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from migrator import apps
from migrator.apps import provenance
from migrator.errors import BadDatabase, UsageError
from migrator.files import layout, nvdb
from migrator.files.layout import is_own_file

CHARS_PER_TOKEN = 4.7  # English prose with Qwen3's tokenizer (see docs): an estimate only

MIGRATE = "migrate"
SKIP = "skip"  # nothing to do (already at the target dimension)
BAD = "bad"  # cannot be migrated as it is: named, with why


@dataclass
class Found:
    path: Path
    status: str
    reason: str = ""
    dim: int | None = None
    records: int = 0
    chars: int = 0
    size: int = 0
    mtime_ns: int = 0
    profile: str | None = None
    tokens: int | None = None  # exact, from the server's /tokenize
    new_size: int = 0  # estimated size of the migrated file
    made_by: provenance.MadeBy | None = None  # which model made its vectors, where recorded
    unknown_model: bool = False  # at the target dimension, and nothing says which model made it
    texts: list[str] | None = field(default=None, repr=False)

    def est_tokens(self) -> int:
        return int(self.chars / CHARS_PER_TOKEN) + self.records  # + one EOS each

    def as_dict(self) -> dict:
        d = {
            "path": str(self.path),
            "status": self.status,
            "reason": self.reason or None,
            "dim": self.dim,
            "records": self.records,
            "chars": self.chars,
            "bytes": self.size,
            "profile": self.profile,
            "made_by": self.made_by.as_dict() if self.made_by else None,
        }
        if self.tokens is not None:
            d["tokens"] = self.tokens
        return d


DEFAULT_PATTERN = "database.json,vdb_*.json"  # DVD; LightRAG and nano-graphrag


def patterns(pattern: str) -> list[str]:
    """``--pattern``: one file-name glob, or several separated by commas."""
    out = [p.strip() for p in pattern.split(",") if p.strip()]
    if not out:
        raise UsageError(f"--pattern {pattern!r} names no file; give a glob like 'database.json'")
    return out


def discover(roots: Sequence[str | Path], pattern: str) -> Iterator[Path]:
    """Every file under ``roots`` whose name matches ``pattern`` (globs separated by
    commas), sorted, each once."""
    globs = patterns(pattern)
    seen: set[Path] = set()
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise UsageError(f"--root {root}: no such directory")
        if root.is_file():
            candidates = [root]
        else:
            candidates = []
            for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
                dirnames.sort()
                for name in sorted(filenames):
                    if any(fnmatch.fnmatchcase(name, g) for g in globs) and not is_own_file(name):
                        candidates.append(Path(dirpath) / name)
        for p in candidates:
            ap = Path(os.path.abspath(p))
            if ap not in seen:
                seen.add(ap)
                yield ap


def scan(roots: Sequence[str | Path], pattern: str, target_dim: int | None, **kw) -> Iterator[Found]:
    """:func:`examine` every file :func:`discover` finds, each real file once."""
    seen: set[Path] = set()
    for path in discover(roots, pattern):
        found = examine(path, target_dim, **kw)
        if found.path in seen:
            continue
        seen.add(found.path)
        yield found


def examine(
    path: Path,
    target_dim: int | None,
    *,
    spec: apps.Spec | None = None,
    target_model: str | None = None,
    keep_texts: bool = False,
    follow_symlinks: bool = False,
    check_vectors: bool = False,
    same_dim: bool = False,
    known_migrations: set[str] | None = None,
) -> Found:
    """Read one file and say whether and how it would be migrated. Never raises for bad content.

    A file at the target dimension is skipped when its recorded maker is
    ``target_model``, migrated when it is another model, and skipped as
    ``unknown_model`` when nothing records it (``same_dim``: migrated; the caller
    decides, see :func:`migrator.apps.provenance.probe`).

    The matrix is skipped, not decoded, unless ``check_vectors``: a scan reads
    records only, and `run` decodes the old vectors when it embeds the file."""
    if path.is_symlink():
        if not follow_symlinks:
            st = os.stat(path) if path.exists() else None
            return Found(
                path,
                BAD,
                "is a symlink (not followed: it may point outside --root; "
                "--follow-symlinks migrates the file it points to)",
                size=st.st_size if st else 0,
                mtime_ns=st.st_mtime_ns if st else 0,
            )
        target = Path(os.path.realpath(path))
        if not target.is_file():
            return Found(path, BAD, "is a symlink to nothing (dangling)")
        path = target
    if known_migrations is not None:
        foreign = sorted(layout.migrations_beside(path) - known_migrations)
        if foreign:
            st = os.stat(path)
            return Found(
                path,
                BAD,
                f"another job table's migration {foreign[0]} has its staged or backup "
                f"file beside it ({path.name}.migrator-{foreign[0]}.*); finish or roll "
                f"back that migration with its own --state-dir/--state-url first",
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
    try:
        nf = nvdb.read(path)
    except BadDatabase as e:
        try:
            st = os.stat(path)  # a failed file is tried again once it changes from this
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime_ns = 0
        return Found(path, BAD, e.problem + (f" ({e.hint})" if e.hint else ""), size=size, mtime_ns=mtime_ns)
    found = Found(path, MIGRATE, dim=nf.embedding_dim, records=nf.n, size=nf.size, mtime_ns=nf.mtime_ns)
    found.made_by = made_by = provenance.of(nf)
    if target_dim is not None and nf.embedding_dim == target_dim and not same_dim:
        if made_by is None:
            found.status, found.unknown_model = SKIP, True
            found.reason = (
                f"already at the target dimension {target_dim}, but nothing records which model made its vectors"
            )
            return found
        if target_model is None or made_by.model == target_model:
            found.status, found.reason = SKIP, f"already made by {made_by.model} at {target_dim} dims"
            return found
        found.reason = (
            f"made by {made_by.model}, not {target_model}: same dimension, another model's "
            f"vectors (they would match nothing)"
        )
    elif made_by is not None and target_model is not None and made_by.model != target_model:
        found.reason = f"made by {made_by.model}"
    try:
        prof = apps.choose(nf, spec)
        found.profile = prof.name  # also for a file refused below: whose it is, in messages
        texts = prof.texts(nf)
        if check_vectors:
            nf.check_matrix()  # decodes every old vector: a damaged file is not migrated
    except BadDatabase as e:
        found.status, found.reason = BAD, e.problem + (f" ({e.hint})" if e.hint else "")
        return found
    notes = prof.notes(nf, texts)
    if notes:
        found.reason = "; ".join(([found.reason] if found.reason else []) + notes)
    found.chars = sum(len(t) for t in texts)
    if keep_texts:
        found.texts = texts
    return found
