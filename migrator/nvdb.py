"""The NanoVectorDB file format: read it strictly, write it faithfully.

A file is one JSON object ``{"embedding_dim", "data", "matrix", ["additional_data"]}``
where ``matrix`` is base64 of a row-major float32 matrix (len(data) x embedding_dim)
and each record in ``data`` carries ``__id__`` plus application fields.

:func:`read` raises :class:`~migrator.errors.BadDatabase` (naming the file and
what is wrong) for anything that is not such a file; it never raises anything
else for bad content. :func:`render` produces the new file: every top-level key
in its original order, every record and ``additional_data`` as they were, a new
``embedding_dim`` and ``matrix``.
"""
from __future__ import annotations

import base64
import binascii
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .errors import BadDatabase

ID = "__id__"
REQUIRED = ("embedding_dim", "data", "matrix")
FLOAT32 = np.dtype("<f4")


def _b64_len(nbytes: int) -> int:
    return 4 * math.ceil(nbytes / 3)


@dataclass
class NanoFile:
    """A parsed NanoVectorDB file. The matrix is decoded only on demand."""

    path: Path
    embedding_dim: int
    data: list[dict]
    matrix_b64: str
    top: dict = field(repr=False)  # the whole top-level object, key order kept
    codec: str = "orjson"          # which JSON library could read it (and must write it)
    size: int = 0

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def additional_data(self) -> Any:
        return self.top.get("additional_data")

    def matrix(self) -> np.ndarray:
        """The stored vectors, shape (n, embedding_dim), float32."""
        if self.n == 0:
            return np.zeros((0, self.embedding_dim), dtype=FLOAT32)
        try:
            raw = base64.b64decode(self.matrix_b64, validate=True)
        except (binascii.Error, ValueError) as e:
            raise BadDatabase(self.path, f"'matrix' is not valid base64 ({e})",
                              hint="the file is damaged; restore it from a backup") from None
        if len(raw) != self.n * self.embedding_dim * 4:
            raise BadDatabase(self.path, f"'matrix' holds {len(raw)} bytes, expected "
                              f"{self.n} records x {self.embedding_dim} dims x 4",
                              hint="the file is damaged; restore it from a backup")
        return np.frombuffer(raw, dtype=FLOAT32).reshape(self.n, self.embedding_dim)


def _loads(raw: bytes, path: Path) -> tuple[Any, str]:
    try:
        return orjson.loads(raw), "orjson"
    except orjson.JSONDecodeError:
        pass
    # Python's json writes NaN/Infinity and accepts huge ints; orjson does not.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadDatabase(path, f"not UTF-8 text (bad byte at offset {e.start})",
                          hint="NanoVectorDB files are UTF-8 JSON; is this the right file?") from None
    try:
        return json.loads(text), "json"
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise BadDatabase(path, f"not valid JSON{where}",
                          hint="truncated or damaged; restore it from a backup") from None


def parse(raw: bytes, path: str | os.PathLike) -> NanoFile:
    """Validate and wrap the bytes of a NanoVectorDB file."""
    path = Path(path)
    if not raw:
        raise BadDatabase(path, "file is empty (0 bytes)", hint="restore it from a backup or delete it")
    top, codec = _loads(raw, path)
    if not isinstance(top, dict):
        raise BadDatabase(path, f"JSON top level is a {type(top).__name__}, not an object",
                          hint="not a NanoVectorDB file")
    missing = [k for k in REQUIRED if k not in top]
    if missing:
        raise BadDatabase(path, f"missing key(s) {', '.join(missing)}", hint="not a NanoVectorDB file")
    dim, data, matrix = top["embedding_dim"], top["data"], top["matrix"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise BadDatabase(path, f"'embedding_dim' is {dim!r}, not a positive integer",
                          hint="not a NanoVectorDB file")
    if not isinstance(data, list):
        raise BadDatabase(path, "'data' is not a list", hint="not a NanoVectorDB file")
    if not isinstance(matrix, str):
        raise BadDatabase(path, "'matrix' is not a base64 string", hint="not a NanoVectorDB file")
    seen: dict[str, int] = {}
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise BadDatabase(path, f"record #{i} is not an object", hint="not a NanoVectorDB file")
        rid = rec.get(ID)
        if not isinstance(rid, str):
            raise BadDatabase(path, f"record #{i} has no string '__id__'", hint="not a NanoVectorDB file")
        if rid in seen:
            raise BadDatabase(path, f"records #{seen[rid]} and #{i} share __id__ {rid!r}",
                              hint="duplicate ids make the file ambiguous; deduplicate it first")
        seen[rid] = i
    expected = _b64_len(len(data) * dim * 4) if data else None
    if data and len(matrix) != expected:
        raise BadDatabase(path, f"'matrix' is {len(matrix)} base64 characters, expected {expected} "
                          f"for {len(data)} records x {dim} dims",
                          hint="the file is damaged; restore it from a backup")
    if not data and matrix not in ("", None):
        if len(base64.b64decode(matrix + "=" * (-len(matrix) % 4), validate=False)) != 0:
            raise BadDatabase(path, "'matrix' holds vectors but 'data' is empty",
                              hint="the file is damaged; restore it from a backup")
    return NanoFile(path=path, embedding_dim=dim, data=data, matrix_b64=matrix, top=top,
                    codec=codec, size=len(raw))


def read(path: str | os.PathLike) -> NanoFile:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise BadDatabase(path, "is a directory, not a file") from None
    except PermissionError:
        raise BadDatabase(path, "cannot be read (permission denied)",
                          hint="run as a user who can read and write it") from None
    except OSError as e:
        raise BadDatabase(path, f"cannot be read ({e.strerror})") from None
    return parse(raw, path)


def dumps(obj: Any, codec: str) -> bytes:
    """Serialise like the file was: orjson where it reads back identically, else json."""
    if codec == "orjson":
        try:
            return orjson.dumps(obj)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def encode_matrix(vectors: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype=FLOAT32).tobytes()).decode("ascii")


def render(src: NanoFile, vectors: np.ndarray) -> bytes:
    """The bytes of ``src`` with new vectors: same keys in the same order, same records
    and additional data, ``embedding_dim`` = vectors' width."""
    if vectors.ndim != 2 or vectors.shape[0] != src.n:
        raise ValueError(f"need {src.n} vectors, got shape {vectors.shape}")
    out = {}
    for key, value in src.top.items():
        if key == "embedding_dim":
            out[key] = int(vectors.shape[1])
        elif key == "matrix":
            out[key] = encode_matrix(vectors) if src.n else ""
        else:
            out[key] = value
    return dumps(out, src.codec)


def same_payload(a: NanoFile, b: NanoFile) -> bool:
    """True when records and additional data (everything but the vectors) are identical."""
    if a.n != b.n:
        return False
    ka = [k for k in a.top if k not in ("embedding_dim", "matrix")]
    kb = [k for k in b.top if k not in ("embedding_dim", "matrix")]
    if ka != kb:
        return False
    return all(dumps(a.top[k], "json") == dumps(b.top[k], "json") for k in ka)
