"""Durable, atomic file operations on a real (possibly shared) filesystem.

Every write the tool makes to a user's directory goes through here: a file is
written under a temporary name in the same directory, flushed and fsync'd,
given the original's mode (and owner, when we may), renamed into place with
``os.replace`` and the directory is fsync'd, so a reader (or a crash) sees the
complete old file or the complete new one, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from migrator import crashpoints
from migrator.errors import DiskError

TMP_MARK = ".migrator-partial-"
_CHUNK = 1 << 20


#: A file changed this recently when it was stat'ed may change again within the same clock
#: tick (the kernel stamps ctime from a coarse clock): its stat then proves nothing.
SETTLED_NS = 2_000_000_000


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells a file apart without reading it: size, mtime, ctime and inode. Any write
    changes ctime, and nothing can set it back."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def settled(st: os.stat_result) -> bool:
    """Its last change is older than SETTLED_NS: the same stat later means the same bytes."""
    return time.time_ns() - st.st_ctime_ns > SETTLED_NS


def unchanged(path: str | os.PathLike, recorded: tuple[int | None, ...]) -> os.stat_result | None:
    """The file's stat if it still has the identity ``recorded`` (size, mtime, ctime, inode);
    None if it differs, is gone, or nothing was recorded (then hash it)."""
    if any(v is None for v in recorded):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if identity(st) == recorded else None


def is_recorded(path: str | os.PathLike, recorded: tuple[int | None, ...], sha256: str | None) -> bool:
    """The file is the one recorded: by its stat where that proves it (:func:`unchanged`),
    else by reading it for its hash."""
    return unchanged(path, recorded) is not None or sha256_if_exists(path) == sha256


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so that a rename or create in it survives power loss."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems (and Windows) refuse directory fsync
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_if_exists(path: str | os.PathLike) -> str | None:
    """sha256 hex of the file, or None when there is no such file."""
    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class FileIdentity:
    """What makes a file 'the one we scanned': size, mtime and content hash."""

    size: int
    mtime_ns: int
    sha256: str

    @classmethod
    def of(cls, path: str | os.PathLike, *, st: os.stat_result | None = None) -> "FileIdentity":
        st = st or os.stat(path)
        return cls(st.st_size, st.st_mtime_ns, sha256_file(path))

    def same_stat(self, st: os.stat_result) -> bool:
        return st.st_size == self.size and st.st_mtime_ns == self.mtime_ns


def temp_path_for(target: Path) -> Path:
    return target.with_name(f".{target.name}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def apply_owner_and_mode(fd_or_path: int | str | os.PathLike, like: os.stat_result) -> None:
    """Give a file (an open descriptor, or a path) the owner, where allowed, and the
    permission bits of ``like``. Owner first: chown clears set-id bits."""
    if hasattr(os, "chown"):
        try:
            os.chown(fd_or_path, like.st_uid, like.st_gid)
        except PermissionError:
            pass  # not root: the file stays ours, its mode still matches
    os.chmod(fd_or_path, like.st_mode & 0o7777)


def atomic_write(
    target: str | os.PathLike, chunks: Iterable[bytes], *, like: os.stat_result | None = None
) -> tuple[int, str]:
    """Write ``chunks`` to ``target`` atomically and durably.

    Returns (bytes written, sha256 hex). On any failure the temporary file is
    removed and ``target`` is untouched; ENOSPC/EDQUOT become :class:`DiskError`.
    """
    target = Path(target)
    tmp = temp_path_for(target)
    h = hashlib.sha256()
    size = 0
    try:
        # Create private first, then widen to the original's mode, so that a
        # backup or stage of a private file is never readable by others.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
                h.update(chunk)
                size += len(chunk)
            f.flush()
            if like is not None:  # before the fsync, so the mode is durable with the data
                apply_owner_and_mode(f.fileno(), like)
            os.fsync(f.fileno())
        crashpoints.reached("write.partial")
        os.replace(tmp, target)
        fsync_dir(target.parent)
    except BaseException as e:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # a generator reading the job table must let go of it now
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskError(
                f"{target}: no space left while writing; nothing was replaced (free some space and run again)"
            ) from e
        raise
    return size, h.hexdigest()


def durable_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Copy ``src`` to ``dst`` atomically with its mode and times; returns sha256."""
    st = os.stat(src)

    def chunks():
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                yield chunk

    _, digest = atomic_write(dst, chunks(), like=st)
    shutil.copystat(src, dst)
    return digest


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """Make ``dst`` hold exactly the bytes of ``src`` (a hard link when the filesystem
    allows, a durable copy otherwise). ``dst`` must not exist. Returns 'link' or 'copy'."""
    try:
        os.link(src, dst)
        fsync_dir(os.path.dirname(os.path.abspath(dst)))
        return "link"
    except OSError as e:
        if e.errno in (errno.EEXIST,):
            raise
        durable_copy(src, dst)
        return "copy"


def _pid_alive(pid: int) -> bool:
    """Whether a process of this host may still be writing: a zombie (killed, not yet reaped,
    as an orphan can stay under an init that does not reap) writes nothing."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[-1][:1] != b"Z"
    except OSError:  # no /proc here, or it is gone: as kill(0) said
        return True


def remove_stale_partials(target: str | os.PathLike) -> int:
    """Delete temporary files a killed writer left beside ``target``; returns how many."""
    target = Path(target)
    removed = 0
    # ours are ".<name>...migrator-partial-<pid>-<hex>": for the live name and for every
    # file kept beside it (".<name>.migrator-<id>.staged.migrator-partial-...")
    prefix = f".{target.name}"
    try:
        names = [
            e.name for e in os.scandir(target.parent) if e.name.startswith(prefix) and TMP_MARK in e.name[len(prefix) :]
        ]
    except FileNotFoundError:
        return 0
    for name in names:
        p = target.parent / name
        pid = name.rsplit(TMP_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and _pid_alive(int(pid)) and int(pid) != os.getpid():
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def remove_if_exists(path: str | os.PathLike) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return True


def free_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
