"""The NanoVectorDB file format: read it strictly and lazily, write it faithfully.

A file is one JSON object ``{"embedding_dim", "data", "matrix", ["additional_data"]}``
where ``matrix`` is base64 of a row-major float32 matrix (len(data) x embedding_dim)
and each record in ``data`` carries ``__id__`` plus application fields.

Reading never loads the matrix: :func:`read` walks the top-level object,
parses every other value, and only notes where the matrix string lies in the
file (when its length is implied by ``data`` and ``embedding_dim`` it is not
even scanned: the reader seeks past it). The vectors are decoded on demand,
in chunks, so memory holds the records, not the vectors, whatever the file's
size.

:func:`read` and :func:`parse` raise :class:`~migrator.errors.BadDatabase`
(naming the file and what is wrong) for anything that is not such a file, and
nothing else for bad content. :func:`render` streams the new file: every
top-level key in its original order, every record and ``additional_data`` as
they were, a new ``embedding_dim`` and ``matrix``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

import numpy as np
import orjson

from migrator.errors import BadDatabase

ID = "__id__"
REQUIRED = ("embedding_dim", "data", "matrix")
FLOAT32 = np.dtype("<f4")
BLOCK_BYTES = 4 << 20  # vectors decoded at a time
WHOLE_FILE = 64 << 20  # files up to this size may be read into memory at once
# Files up to this size are parsed in one orjson call; in a larger one the walker skips the
# matrix (a seek) instead of orjson building it as a string and the search for it (3x slower).
WHOLE_READ = 1 << 20
_CHUNK = 1 << 16  # header reads: a DVD file's records fit in one or two chunks
_WS = b" \t\r\n"
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
HINT_CHECK_BYTES = 4096  # the matrix's last characters read to confirm its implied end
_SIGNIFICANT = re.compile(rb'["\\\[\]{}]')
_DAMAGED = "the file is damaged; restore it from a backup"
_NOT_NVDB = "not a NanoVectorDB file"


def b64decode_strict(text: bytes | str) -> bytes:
    """base64 that refuses anything but the alphabet and correct padding (C speed:
    ``base64.b64decode(validate=True)`` checks with a regex first, 4x slower)."""
    return binascii.a2b_base64(text, strict_mode=True)


def b64_len(nbytes: int) -> int:
    return 4 * math.ceil(nbytes / 3)


@dataclass
class NanoFile:
    """A NanoVectorDB file: its records and metadata in memory, its vectors on disk."""

    path: Path
    embedding_dim: int
    data: list[dict]
    keys: list[str]  # top-level keys in file order
    values: dict = field(repr=False)  # every top-level value but the matrix
    matrix_offset: int = 0  # where the base64 text starts (after the quote)
    matrix_len: int = 0  # its length in characters
    codec: str = "orjson"  # which JSON library could read it (and must write it)
    size: int = 0
    mtime_ns: int = 0  # as read (0 when parsed from memory)
    dev: int = 0  # the filesystem it was read from (0 when parsed from memory)
    _raw: bytes | None = field(default=None, repr=False)  # when parsed from memory

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def additional_data(self) -> Any:
        return self.values.get("additional_data")

    def keys_with(self, values: dict) -> list[str]:
        """Top-level keys of this file with ``values`` put in: a key it lacks comes last
        (where nano-vectordb puts ``additional_data``)."""
        return self.keys + [k for k in values if k not in self.keys]

    def _open(self) -> IO[bytes]:
        return io.BytesIO(self._raw) if self._raw is not None else open(self.path, "rb")

    def matrix_blocks(self, rows: int | None = None) -> Iterator[np.ndarray]:
        """The stored vectors, ``rows`` at a time (default: about 4 MiB), float32."""
        if self.n == 0:
            return
        row_bytes = self.embedding_dim * 4
        rows = rows or max(1, BLOCK_BYTES // row_bytes)
        read_chars = 4 * math.ceil(max(1, rows) * row_bytes / 3)  # whole base64 quanta
        want = self.n * row_bytes
        got = 0
        carry = b""
        with self._open() as f:
            f.seek(self.matrix_offset)
            left = self.matrix_len
            while left > 0:
                text = f.read(min(left, read_chars))
                if not text:
                    raise BadDatabase(self.path, "the file ends inside 'matrix'", hint=_DAMAGED)
                left -= len(text)
                if left > 0 and len(text) % 4:
                    extra = f.read(4 - len(text) % 4)
                    left -= len(extra)
                    text += extra
                try:
                    raw = b64decode_strict(text)
                except (binascii.Error, ValueError) as e:
                    raise BadDatabase(self.path, f"'matrix' is not valid base64 ({e})", hint=_DAMAGED) from None
                raw = carry + raw
                whole = len(raw) - len(raw) % row_bytes
                got += whole
                if got > want:
                    break
                if whole:
                    yield np.frombuffer(raw[:whole], dtype=FLOAT32).reshape(-1, self.embedding_dim)
                carry = raw[whole:]
        if got != want or carry:
            raise BadDatabase(
                self.path,
                f"'matrix' holds {got + len(carry)} bytes, expected {self.n} records x {self.embedding_dim} dims x 4",
                hint=_DAMAGED,
            )

    def matrix(self) -> np.ndarray:
        """All stored vectors at once, shape (n, embedding_dim). For small files and tests."""
        blocks = list(self.matrix_blocks())
        if not blocks:
            return np.zeros((0, self.embedding_dim), dtype=FLOAT32)
        return np.concatenate(blocks)

    def check_matrix(self) -> None:
        """Raise BadDatabase unless 'matrix' is strict base64 of exactly n x dim float32s.

        The length was checked when the file was parsed; this checks every character
        without decoding: ``bytes.translate`` deletes the alphabet at about 7x the speed
        of ``a2b_base64``, and every 4 bytes are a float32, so text that is strict base64
        of the right length decodes to vectors. What is left must be the padding alone."""
        if self.n == 0:
            return
        pad = (3 - (self.n * self.embedding_dim * 4) % 3) % 3
        body = self.matrix_len - pad
        with self._open() as f:
            f.seek(self.matrix_offset)
            left = body
            while left > 0:
                text = f.read(min(left, BLOCK_BYTES))
                if not text:
                    raise BadDatabase(self.path, "the file ends inside 'matrix'", hint=_DAMAGED)
                left -= len(text)
                if text.translate(None, _B64_ALPHABET):
                    bad = next(c for c in text if c not in _B64_ALPHABET)
                    raise BadDatabase(self.path, f"'matrix' is not valid base64 (it holds {chr(bad)!r})", hint=_DAMAGED)
            tail = f.read(pad)
        if tail != b"=" * pad:
            raise BadDatabase(self.path, "'matrix' is not valid base64 (its padding is wrong)", hint=_DAMAGED)


# ------------------------------------------------------------------ reading
class _Reader:
    """Walks one top-level JSON object in a binary file, value by value."""

    def __init__(self, f: IO[bytes], path: Path):
        self.f, self.path = f, path
        self.buf = bytearray()
        self.base = 0  # file offset of buf[0]
        self.pos = 0  # index into buf

    def _more(self) -> bool:
        chunk = self.f.read(_CHUNK)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _compact(self) -> None:
        if self.pos:
            del self.buf[: self.pos]
            self.base += self.pos
            self.pos = 0

    def peek(self) -> int | None:
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            self._compact()
            if not self._more():
                return None

    def expect(self, char: bytes, what: str) -> None:
        c = self.peek()
        if c != char[0]:
            found = "the end of the file" if c is None else repr(chr(c))
            raise BadDatabase(
                self.path,
                f"not valid JSON: expected {what}, found {found} at byte {self.base + self.pos}",
                hint=_DAMAGED,
            )
        self.pos += 1

    def _search(self, pattern: re.Pattern, i: int, inside: str) -> re.Match:
        while True:
            m = pattern.search(self.buf, i)
            if m is not None:
                return m
            i = len(self.buf)
            if not self._more():
                raise BadDatabase(self.path, f"not valid JSON: the file ends inside {inside}", hint=_DAMAGED)

    def value_bytes(self) -> bytes:
        """The raw bytes of the next JSON value (object, array, string or scalar)."""
        if self.peek() is None:
            raise BadDatabase(self.path, "not valid JSON: the file ends too early", hint=_DAMAGED)
        self._compact()
        first = self.buf[0]
        if first not in b'{["':
            try:
                m = self._search(_DELIMITER, 0, "a value")
                end = m.start()
            except BadDatabase:
                end = len(self.buf)
            self.pos = end
            return bytes(self.buf[:end])
        depth, i = 0, 0
        while True:
            m = self._search(_SIGNIFICANT, i, "a value")
            c, i = m.group(), m.end()
            if c == b'"':
                i = self._string_end(i)
                if depth == 0:
                    break
            elif c in (b"{", b"["):
                depth += 1
            elif c in (b"}", b"]"):
                depth -= 1
                if depth <= 0:
                    break
            else:  # a backslash outside any string
                raise BadDatabase(self.path, "not valid JSON", hint=_DAMAGED)
        self.pos = i
        return bytes(self.buf[:i])

    def value_before(self, follower: re.Pattern, tries: int = 4) -> tuple[Any, str] | None:
        """Fast path: the next value, when it is followed by ``follower`` (nano-vectordb
        writes ``"data": [...], "matrix": "..."``): one regex search and one orjson parse
        instead of a token walk. None when the guess does not hold (nothing consumed)."""
        if self.peek() is None:
            return None
        self._compact()
        i = 0
        for _ in range(tries):
            m = follower.search(self.buf, i)
            while m is None:
                if len(self.buf) > _FAST_PATH_LIMIT or not self._more():
                    return None
                m = follower.search(self.buf, i)
            try:
                value = orjson.loads(bytes(self.buf[: m.start()]))
            except orjson.JSONDecodeError:
                i = m.end()  # the pattern was inside the value: try the next one
                continue
            self.pos = m.start()
            return value, "orjson"
        return None

    def _string_end(self, i: int) -> int:
        """Index just past the closing quote of a string whose body starts at ``i``."""
        while True:
            q = self._search(_QUOTE, i, "a string").start()
            k = q - 1
            while self.buf[k] == 0x5C:  # backslashes before the quote
                k -= 1
            if (q - 1 - k) % 2 == 0:
                return q + 1
            i = q + 1

    def skip_string(self, length_hint: int | None) -> tuple[int, int]:
        """Past a string value without keeping it: (file offset of its body, length).

        With ``length_hint`` (the matrix's implied length) it seeks straight to the
        closing quote; otherwise it scans for it. The body must hold no escapes."""
        self.expect(b'"', "a string")
        self._compact()
        body = self.base
        if length_hint is not None:
            end = body + length_hint
            # The implied end holds a quote, and the text before it is base64: a matrix
            # shorter than implied ends earlier, and its closing quote and the JSON after
            # it are not base64 (a quote found there belongs to a later value).
            tail = min(length_hint, HINT_CHECK_BYTES)
            self.f.seek(end - tail)
            before = self.f.read(tail + 1)
            if (
                len(before) == tail + 1
                and before[-1:] == b'"'
                and not before[:-1].translate(None, _B64_ALPHABET + b"=")
            ):
                self.buf, self.base, self.pos = bytearray(), end + 1, 0
                return body, length_hint
            self.f.seek(self.base + len(self.buf))  # not where implied: scan for it
        while True:
            q = self.buf.find(b'"', self.pos)
            stop = q if q >= 0 else len(self.buf)
            if self.buf.find(b"\\", self.pos, stop) >= 0:
                raise BadDatabase(self.path, "'matrix' is not valid base64 (it holds escapes)", hint=_DAMAGED)
            if q >= 0:
                self.pos = q + 1
                return body, self.base + q - body
            self.pos = len(self.buf)
            self._compact()
            if not self._more():
                raise BadDatabase(self.path, "not valid JSON: the file ends inside 'matrix'", hint=_DAMAGED)


_DELIMITER = re.compile(rb"[,}\]\s]")
_BEFORE_MATRIX = re.compile(rb',\s*"matrix"\s*:')
_BEFORE_END = re.compile(rb"\s*\}\s*\Z")  # the last value of the top-level object
_FAST_PATH_LIMIT = 256 << 20
_QUOTE = re.compile(rb'"')


def _where_not_utf8(raw: bytes, offset: int) -> str:
    """Name the record that holds a non-UTF-8 byte, if the value is a list of records."""
    try:
        value = json.loads(raw.decode("utf-8", "surrogateescape"))
    except (ValueError, RecursionError):
        return f"bad byte at offset {offset} of a value"
    if isinstance(value, list):
        for i, rec in enumerate(value):
            try:
                json.dumps(rec, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                rid = rec.get(ID) if isinstance(rec, dict) else None
                return (
                    f"record #{i}"
                    + (f" (__id__ {rid!r})" if isinstance(rid, str) else "")
                    + " holds bytes that are not UTF-8"
                )
    return f"bad byte at offset {offset} of a value"


def _loads(raw: bytes, path: Path) -> tuple[Any, str]:
    try:
        return orjson.loads(raw), "orjson"
    except orjson.JSONDecodeError:
        pass
    # Python's json writes NaN/Infinity and accepts huge ints; orjson does not.
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadDatabase(
            path,
            f"not UTF-8 text ({_where_not_utf8(raw, e.start)})",
            hint="NanoVectorDB files are UTF-8 JSON; fix or remove that record",
        ) from None
    try:
        return json.loads(text), "json"
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise BadDatabase(path, "not valid JSON", hint=_DAMAGED) from None


def _walk(f: IO[bytes], path: Path, size: int) -> NanoFile:
    if size == 0:
        raise BadDatabase(path, "file is empty (0 bytes)", hint="restore it from a backup or delete it")
    r = _Reader(f, path)
    head = r.peek()
    if head is None:
        raise BadDatabase(path, "file holds only white space", hint=_NOT_NVDB)
    if head != ord("{"):
        if head >= 0x80:
            raise BadDatabase(
                path,
                f"not UTF-8 JSON text (starts with byte 0x{head:02x})",
                hint="NanoVectorDB files are UTF-8 JSON; is this the right file?",
            )
        if head in b'["0123456789-tfn':
            raise BadDatabase(path, "JSON top level is not an object", hint=_NOT_NVDB)
        raise BadDatabase(path, "not valid JSON (does not start with '{')", hint=_DAMAGED)
    r.pos += 1
    keys: list[str] = []
    values: dict = {}
    codec = "orjson"
    matrix_at: tuple[int, int] | None = None
    if r.peek() == ord("}"):
        r.pos += 1
    else:
        while True:
            key, _ = _loads(r.value_bytes(), path)
            if not isinstance(key, str):
                raise BadDatabase(path, "not valid JSON (an object key is not a string)", hint=_DAMAGED)
            r.expect(b":", "':'")
            if key == "matrix" and r.peek() == ord('"'):
                hint = None
                if isinstance(values.get("embedding_dim"), int) and isinstance(values.get("data"), list):
                    hint = b64_len(len(values["data"]) * values["embedding_dim"] * 4) if values["data"] else 0
                matrix_at = r.skip_string(hint)
                values.pop("matrix", None)
            else:
                if key == "data":
                    fast = r.value_before(_BEFORE_MATRIX)
                elif matrix_at is not None:  # after the matrix: the rest is small, try "last value"
                    fast = r.value_before(_BEFORE_END)
                else:
                    fast = None
                value, used = fast or _loads(r.value_bytes(), path)
                if used == "json":
                    codec = "json"
                values[key] = value
                if key == "matrix":
                    matrix_at = None
            if key in keys:
                keys.remove(key)
            keys.append(key)
            c = r.peek()
            if c == ord(","):
                r.pos += 1
                continue
            if c == ord("}"):
                r.pos += 1
                break
            raise BadDatabase(
                path, "not valid JSON" + (": the file ends too early" if c is None else ""), hint=_DAMAGED
            )
    if r.peek() is not None:
        raise BadDatabase(path, "not valid JSON (extra data after the object)", hint=_DAMAGED)
    return _nanofile(path, keys, values, matrix_at, codec, size)


def _whole(raw: bytes, path: Path) -> NanoFile | None:
    """The usual file in one orjson call; None for anything the walker must decide.

    The walker's answer exactly, when this gives one: the top level is an object that
    orjson reads (so no NaN, no huge integer: those need Python's json, as the walker
    finds), and its 'matrix' is a string found exactly once in the file between quotes,
    so that occurrence is the top-level value and its offset is where the text starts
    (base64 holds neither quotes nor backslashes, so the file's bytes are the string's).
    A top-level key given twice keeps its last value either way, and here its first
    place, as Python's json (and so nano-vectordb) reads it; the walker moves it last."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    m = doc.get("matrix") if isinstance(doc, dict) else None
    if not isinstance(m, str) or not m or not m.isascii():
        return None
    needle = b'"' + m.encode("ascii") + b'"'
    at = raw.find(needle)
    if at < 0 or raw.find(needle, at + 1) >= 0:
        return None
    values = {k: v for k, v in doc.items() if k != "matrix"}
    return _nanofile(path, list(doc), values, (at + 1, len(m)), "orjson", len(raw))


def _nanofile(
    path: Path, keys: list[str], values: dict, matrix_at: tuple[int, int] | None, codec: str, size: int
) -> NanoFile:
    """Check what was read is a NanoVectorDB file, and make it one."""
    missing = [k for k in REQUIRED if k not in keys]
    if missing:
        raise BadDatabase(path, f"missing key(s) {', '.join(missing)}", hint=_NOT_NVDB)
    dim, data = values["embedding_dim"], values["data"]
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise BadDatabase(path, f"'embedding_dim' is {dim!r}, not a positive integer", hint=_NOT_NVDB)
    if not isinstance(data, list):
        raise BadDatabase(path, "'data' is not a list", hint=_NOT_NVDB)
    if matrix_at is None:
        raise BadDatabase(path, "'matrix' is not a base64 string", hint=_NOT_NVDB)
    seen: dict[str, int] = {}
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise BadDatabase(path, f"record #{i} is not an object", hint=_NOT_NVDB)
        rid = rec.get(ID)
        if not isinstance(rid, str):
            raise BadDatabase(path, f"record #{i} has no string '__id__'", hint=_NOT_NVDB)
        if rid in seen:
            raise BadDatabase(
                path,
                f"records #{seen[rid]} and #{i} share __id__ {rid!r}",
                hint="duplicate ids make the file ambiguous; deduplicate it first",
            )
        seen[rid] = i
    offset, length = matrix_at
    expected = b64_len(len(data) * dim * 4) if data else 0
    if length != expected:
        raise BadDatabase(
            path,
            f"'matrix' is {length} base64 characters, expected {expected} for {len(data)} records x {dim} dims",
            hint=_DAMAGED,
        )
    return NanoFile(
        path=path,
        embedding_dim=dim,
        data=data,
        keys=keys,
        values=values,
        matrix_offset=offset,
        matrix_len=length,
        codec=codec,
        size=size,
    )


def _parsed(raw: bytes, path: Path) -> NanoFile:
    """The bytes of a whole file: in one orjson call if small, else walked (its matrix skipped)."""
    whole = _whole(raw, path) if len(raw) <= WHOLE_READ else None
    return whole or _walk(io.BytesIO(raw), path, len(raw))


def parse(raw: bytes, path: str | os.PathLike) -> NanoFile:
    """Validate the bytes of a NanoVectorDB file held in memory."""
    nf = _parsed(raw, Path(path))
    nf._raw = raw
    return nf


def read(path: str | os.PathLike) -> NanoFile:
    """Open a NanoVectorDB file: records and metadata parsed, vectors left on disk."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            # a small file read whole; a large one walked from disk, its matrix never read
            nf = _parsed(f.read(), path) if st.st_size <= WHOLE_READ else _walk(f, path, st.st_size)
            nf.mtime_ns, nf.dev = st.st_mtime_ns, st.st_dev
            return nf
    except IsADirectoryError:
        raise BadDatabase(path, "is a directory, not a file") from None
    except PermissionError:
        raise BadDatabase(
            path, "cannot be read (permission denied)", hint="run as a user who can read and write it"
        ) from None
    except FileNotFoundError:
        raise BadDatabase(path, "no such file (deleted?)") from None
    except OSError as e:
        raise BadDatabase(path, f"cannot be read ({e.strerror})") from None


# ------------------------------------------------------------------ writing
def dumps(obj: Any, codec: str) -> bytes:
    """Serialise like the file was: orjson where it reads back identically, else json."""
    if codec == "orjson":
        try:
            return orjson.dumps(obj)
        except (orjson.JSONEncodeError, TypeError):
            pass
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class MatrixEncoder:
    """Streams float32 blocks as base64, checking their shape; keeps a hash of the raw bytes."""

    def __init__(self, n: int, dim: int):
        self.n, self.dim, self.rows = n, dim, 0
        self.sha = hashlib.sha256()

    def encode(self, blocks: Iterable[np.ndarray]) -> Iterator[bytes]:
        carry = b""
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=FLOAT32)
            if block.ndim != 2 or block.shape[1] != self.dim:
                raise ValueError(f"a block of shape {block.shape}, expected (*, {self.dim})")
            self.rows += block.shape[0]
            if self.rows > self.n:
                raise ValueError(f"more than {self.n} vectors")
            raw = block.tobytes()
            self.sha.update(raw)
            raw = carry + raw
            cut = len(raw) - len(raw) % 3
            carry = raw[cut:]
            if cut:
                yield base64.b64encode(raw[:cut])
        if self.rows != self.n:
            raise ValueError(f"{self.rows} vectors, expected {self.n}")
        if carry:
            yield base64.b64encode(carry)


def render(
    src: NanoFile,
    blocks: Iterable[np.ndarray] | np.ndarray,
    dim: int | None = None,
    encoder: MatrixEncoder | None = None,
    *,
    records: Iterable[dict] | None = None,
    values: dict | None = None,
) -> Iterator[bytes]:
    """The bytes of ``src`` with new vectors, streamed: same keys in the same order, same
    records and additional data, ``embedding_dim`` = the vectors' width.

    ``records`` (streamed, one per source record) replaces the records; ``values``
    replaces top-level values by key, a key the file lacks coming last (where
    nano-vectordb puts ``additional_data``)."""
    if isinstance(blocks, np.ndarray):
        dim = dim or int(blocks.shape[1])
        blocks = [blocks]
    if dim is None:
        raise ValueError("dim is needed when vectors come as an iterator")
    enc = encoder or MatrixEncoder(src.n, dim)
    values = values or {}
    keys = src.keys_with(values)
    yield b"{"
    for i, key in enumerate(keys):
        yield (b"," if i else b"") + dumps(key, "orjson") + b":"
        if key == "embedding_dim":
            yield str(int(dim)).encode()
        elif key == "matrix":
            yield b'"'
            yield from enc.encode(blocks)
            yield b'"'
        elif key == "data" and records is not None:
            yield from _stream_list(records, src.n, src.codec)
        else:
            yield dumps(values[key] if key in values else src.values[key], src.codec)
    yield b"}"


def _stream_list(items: Iterable[Any], n: int, codec: str) -> Iterator[bytes]:
    count = 0
    parts: list[bytes] = [b"["]
    for item in items:
        parts.append((b"," if count else b"") + dumps(item, codec))
        count += 1
        if len(parts) >= 256:
            yield b"".join(parts)
            parts = []
    if count != n:
        raise ValueError(f"{count} records, expected {n}")
    parts.append(b"]")
    yield b"".join(parts)


def same_payload(a: NanoFile, b: NanoFile) -> bool:
    """True when records and additional data (everything but the vectors) are identical."""
    if a.n != b.n:
        return False
    ka = [k for k in a.keys if k not in ("embedding_dim", "matrix")]
    kb = [k for k in b.keys if k not in ("embedding_dim", "matrix")]
    if ka != kb:
        return False
    codec = "orjson" if a.codec == b.codec == "orjson" else "json"  # orjson: 10x faster, as strict
    return all(dumps(a.values[k], codec) == dumps(b.values[k], codec) for k in ka)
