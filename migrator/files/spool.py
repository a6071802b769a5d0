"""A large database's new vectors while it is embedded: one append-only file beside it.

Each answered batch is appended to ``<live>.migrator-<id>.spool`` and fsync'd
(the directory too, when the append created the file); only then is its small
done-mark (rows, byte offset, CRC-32) committed to the job table. So vectors
never pass through the job table and its lock, and staging reads them back from
a local file, not from the database.

Bytes appended but never committed (a kill between the fsync and the commit)
are dead space no done-mark points at; the file goes when the database is
staged, cut over or rolled back. A done-mark whose bytes are missing or do not
match its CRC says the spool was damaged: the batches are embedded again.

Appends to one spool come from one process at a time (a database is leased to
one worker) and, inside it, under :class:`Spools`' lock for that file; each also
holds an exclusive ``flock`` on it, for a worker whose lease was taken over while
it was still appending. So an offset read before the write is where the write lands.
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import zlib

from migrator.errors import DiskError
from migrator.files import durable


class Damaged(Exception):
    """A done-mark points at bytes the spool does not hold."""


def append(path: str, data: bytes, *, first: bool = True) -> tuple[int, int]:
    """Append ``data`` durably; returns (offset it starts at, its CRC-32). The caller holds
    the file's lock (:class:`Spools`). ``first``: this process has not appended to it yet, so
    its directory entry is fsync'd too (a killed run may have created the file and died
    before its directory was)."""
    created = first or not os.path.exists(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            # another worker that lost its lease on the database may still be appending: the
            # offset read here must be where this write lands (a CRC still catches what a
            # filesystem without locks lets through)
            fcntl.flock(fd, fcntl.LOCK_EX)
            offset = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:  # the name itself must survive a power cut
            durable.fsync_dir(os.path.dirname(path))
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskError(
                f"{path}: no space left for a batch of vectors; nothing was replaced (free some space and run again)"
            ) from e
        raise
    return offset, zlib.crc32(data)


class Reader:
    """Reads committed batches back from one spool (opened on first use)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def read(self, offset: int, size: int, crc: int) -> bytes:
        """The ``size`` bytes at ``offset``, if they are the ones committed; else :class:`Damaged`."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDONLY)
            data = os.pread(self._fd, size, offset)
        except FileNotFoundError:
            raise Damaged(f"{self.path} is gone") from None
        if len(data) != size or zlib.crc32(data) != crc:
            raise Damaged(f"{self.path}: the bytes at offset {offset} are not the ones committed")
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def holds(path: str, end: int) -> bool:
    """The spool has at least ``end`` bytes (a done-mark's bytes may be there)."""
    try:
        return os.stat(path).st_size >= end
    except FileNotFoundError:
        return False


class Spools:
    """The per-file locks of one run's appends."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._synced: set[str] = set()  # spools whose directory entry this run has fsync'd
        self._guard = threading.Lock()

    def append(self, path: str, data: bytes) -> tuple[int, int]:
        with self._guard:
            lock = self._locks.setdefault(path, threading.Lock())
        with lock:
            out = append(path, data, first=path not in self._synced)
            self._synced.add(path)  # under the file's lock: no append passes the first one
            return out

    def forget(self, path: str) -> None:
        """The database is staged: its lock goes (the file itself is removed by the caller)."""
        with self._guard:
            self._locks.pop(path, None)
            self._synced.discard(path)
