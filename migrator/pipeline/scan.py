"""Finding NanoVectorDB files under the roots and sizing up each one.

Walking never follows a symlinked directory, and a symlinked file is reported,
not read: a link can point outside ``--root``, into someone else's data.
"""

from __future__ import annotations

import collections
import fnmatch
import itertools
import multiprocessing
import os
import pickle
import re
import signal
import tempfile
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

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
    dev: int = 0  # its filesystem, as read (0: not read)
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


class Scanned:
    """What a scan found, in order, kept in a temporary file a batch at a time (pickled),
    with its counts in memory: memory holds a batch and the databases that cannot be
    migrated (each is named in the report), not every database found."""

    BATCH = 1024  # databases a pickle

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="migrator-scan-")
        self._batch: list[Found] = []
        self.count = 0
        self.todo = 0  # to migrate
        self.skipped = 0
        self.records = 0  # of those to migrate
        self.dims: set[int] = set()  # of those to migrate
        self.bad: list[Found] = []
        self.skipped_unrecorded = 0  # skipped, with no model recorded

    def add(self, f: Found) -> None:
        self.count += 1
        if f.status == MIGRATE:
            self.todo += 1
            self.records += f.records
            if f.dim:
                self.dims.add(f.dim)
        elif f.status == SKIP:
            self.skipped += 1
            self.skipped_unrecorded += f.made_by is None
        else:
            self.bad.append(f)
        self._batch.append(f)
        if len(self._batch) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._batch:
            pickle.dump(self._batch, self._file, protocol=pickle.HIGHEST_PROTOCOL)
            self._batch = []

    def batches(self) -> Iterator[list[Found]]:
        """Everything added, in order, a batch at a time (read back from the file)."""
        self._flush()
        self._file.seek(0)
        while True:
            try:
                yield pickle.load(self._file)
            except EOFError:
                return

    def __iter__(self) -> Iterator[Found]:
        for batch in self.batches():
            yield from batch

    def close(self) -> None:
        self._file.close()


def patterns(pattern: str) -> list[str]:
    """``--pattern``: one file-name glob, or several separated by commas."""
    out = [p.strip() for p in pattern.split(",") if p.strip()]
    if not out:
        raise UsageError(f"--pattern {pattern!r} names no file; give a glob like 'database.json'")
    return out


Item = tuple[bool, str]  # (is a directory, absolute path): a file to examine, or a tree to walk


def discover(roots: Sequence[str | Path], pattern: str) -> Iterator[Path]:
    """Every file under ``roots`` whose name matches ``pattern`` (globs separated by
    commas), sorted, each once."""
    items = _roots(roots)
    return (Path(p) for p in _files(items, _matcher(pattern), _overlapping(items)))


def _matcher(pattern: str) -> Callable[[str], object]:
    return re.compile("|".join(fnmatch.translate(g) for g in patterns(pattern))).match


def _roots(roots: Sequence[str | Path]) -> list[Item]:
    out = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise UsageError(f"--root {root}: no such directory")
        out.append((not root.is_file(), os.path.abspath(root)))
    return out


def _overlapping(roots: list[Item]) -> bool:
    """Whether a root is, or is inside, another directory root: only then can a walk find a
    file twice (it never enters a symlinked directory), and only then is a set of every
    path found kept, to give each once (memory: 100,000 paths are 15 MB)."""
    for i, (_, a) in enumerate(roots):
        for j, (b_is_dir, b) in enumerate(roots):
            if i != j and (a == b or (b_is_dir and a.startswith(b.rstrip(os.sep) + os.sep))):
                return True
    return False


def _files(items: Iterable[Item], match: Callable[[str], object], overlapping: bool) -> Iterator[str]:
    """The matching files of ``items`` in walk order, each once (``overlapping``: the roots
    may find a file twice, :func:`_overlapping`)."""
    seen: set[str] = set()
    for item in items:
        for p in _walk(item, match):
            if not overlapping:
                yield p
            elif p not in seen:
                seen.add(p)
                yield p


def _listing(top: str, match: Callable[[str], object]) -> tuple[list[str], list[str]]:
    """A directory's matching file names and its subdirectory names, each sorted: a
    symlinked directory is not one to enter, an unreadable directory holds nothing (as
    ``os.walk``, without its lstat of every directory: a tenth of `plan` at 100,000
    databases). Names only, the entries let go as they are read: DVD keeps every video in
    one directory, and 100,000 entries held for sorting took 26 MB, their names take 6."""
    files, subdirs = [], []
    try:
        with os.scandir(top) as it:
            for e in it:
                try:
                    is_dir = e.is_dir()  # as os.walk: a link to a directory is one, not a file
                except OSError:
                    is_dir = False
                if is_dir:
                    if not e.is_symlink():
                        subdirs.append(e.name)
                elif match(e.name) and not is_own_file(e.name):
                    files.append(e.name)
    except OSError:
        return [], []
    files.sort()
    subdirs.sort()
    return files, subdirs


def _walk(item: Item, match: Callable[[str], object]) -> Iterator[str]:
    """The matching files of an item: a directory's own files before its subdirectories'."""
    is_dir, path = item
    if not is_dir:
        yield path
        return
    files, subdirs = _listing(path, match)
    for f in files:
        yield os.path.join(path, f)
    for d in subdirs:
        yield from _walk((True, os.path.join(path, d)), match)


Part = tuple[str, list[str], list[str]]  # a directory, then file names and subdirectory names in it


def _frontier(items: list[Item], match: Callable[[str], object], enough: int) -> list[Part]:
    """The same files in the same order (:func:`_items`), with directories opened level by
    level until there are ``enough`` to share out (or none left to open). A level is kept
    as names under their directory, not a path each."""
    parts: list[Part] = [
        (os.path.dirname(path), [], [os.path.basename(path)])
        if is_dir
        else (os.path.dirname(path), [os.path.basename(path)], [])
        for is_dir, path in items
    ]
    while True:
        dirs = sum(len(subdirs) for _, _, subdirs in parts)
        if dirs == 0 or dirs >= enough:
            return parts
        opened: list[Part] = []
        for top, files, subdirs in parts:
            if files:
                opened.append((top, files, []))
            for d in subdirs:
                where = os.path.join(top, d)
                opened.append((where, *_listing(where, match)))
        parts = opened


def _items(parts: Iterable[Part]) -> Iterator[Item]:
    """The files and the directories still to walk, one by one, in order."""
    for top, files, subdirs in parts:
        for f in files:
            yield False, os.path.join(top, f)
        for d in subdirs:
            yield True, os.path.join(top, d)


def scan(roots: Sequence[str | Path], pattern: str, target_dim: int | None, **kw) -> Iterator[Found]:
    """:func:`examine` every file :func:`discover` finds, each real file once, in order.

    A tree of at least ``POOL_DIRS`` directories is walked and examined by a pool of
    processes, a slice of its directories a task, while this one gathers the answers in
    order: reading and parsing hold the GIL, so threads would not help.

    A file is given once even when several roots or followed symlinks lead to it; a set of
    the paths found is kept only where they can (memory holds no path per database else)."""
    given = _roots(roots)
    overlapping = _overlapping(given)
    if not (kw.get("follow_symlinks") or overlapping):
        yield from _examined(given, overlapping, pattern, target_dim, kw)
        return
    seen: set[str] = set()
    for found in _examined(given, overlapping, pattern, target_dim, kw):
        key = str(found.path)
        if key in seen:
            continue
        seen.add(key)
        yield found


POOL_DIRS = 1024  # directories; a smaller tree is read here (the pool's start, ~0.3 s, would not pay)
POOL_CHUNK = 128  # items (mostly directories) a task
POOL_AHEAD = 4  # tasks queued a process: the answers wait in order, not the whole tree


def _processes() -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cpus, 4))


def _pool_worker() -> None:
    """A terminal's Ctrl-C reaches the whole process group: the command decides what it means."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# A pool process's reads in flight on a cold tree. More threads fight this one for the GIL
# (16 made a warm task ~1.6x slower than 4); 4 was also the fastest cold (docs/BENCHMARKS.md)
WARM_THREADS = 4
_warm_pool: ThreadPoolExecutor | None = None


def _warmers() -> ThreadPoolExecutor:
    global _warm_pool
    if _warm_pool is None:
        _warm_pool = ThreadPoolExecutor(max_workers=WARM_THREADS, thread_name_prefix="migrator-warm")
    return _warm_pool


def _warm(path: str) -> None:
    """Have the kernel read a file ahead (its inode now, its bytes in the background)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO must not block it
    except OSError:
        return  # examine says what is wrong with it
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _examine_items(items: list[Item], pattern: str, target_dim: int | None, kw: dict) -> list[Found]:
    """A pool's task: the files of ``items``, each with what :func:`examine` found.

    On a cold tree every directory and file is a disk read, and one after another they
    leave the disk idle between them: the task's directories are listed on threads at
    once, and its files are read ahead on them while they are examined in order
    (100,000 databases after dropping the page cache: see docs/BENCHMARKS.md)."""
    match = _matcher(pattern)
    step = -(-len(items) // WARM_THREADS)
    slices = [items[i : i + step] for i in range(0, len(items), step)]
    paths = [p for walked in _warmers().map(_walk_and_warm, slices, [match] * len(slices)) for p in walked]
    return [examine(Path(p), target_dim, **kw) for p in paths]


def _walk_and_warm(items: list[Item], match: Callable[[str], object]) -> list[str]:
    """The files of ``items`` (a thread's slice of a task), each read ahead (:func:`_warm`)."""
    paths = [p for item in items for p in _walk(item, match)]
    for p in paths:
        _warm(p)
    return paths


def _examined(given: list[Item], overlapping: bool, pattern: str, target_dim: int | None, kw: dict) -> Iterator[Found]:
    """What :func:`examine` finds of every file of the roots ``given``, in walk order; a file
    the roots find twice (``overlapping``) may come twice from the pool: :func:`scan` keeps one."""
    match = _matcher(pattern)
    parts = _frontier(given, match, POOL_DIRS)
    workers = _processes()
    if sum(len(subdirs) for _, _, subdirs in parts) < POOL_DIRS or workers < 2:
        for p in _files(_items(parts), match, overlapping):
            yield examine(Path(p), target_dim, **kw)
        return
    # forkserver, not fork: `run` scans beside its event loop's threads, whose locks a fork copies
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_pool_worker) as pool:
        pending: collections.deque[Future[list[Found]]] = collections.deque()
        items = _items(parts)
        while chunk := list(itertools.islice(items, POOL_CHUNK)):
            pending.append(pool.submit(_examine_items, chunk, pattern, target_dim, kw))
            while len(pending) > POOL_AHEAD * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


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
    found = Found(path, MIGRATE, dim=nf.embedding_dim, records=nf.n, size=nf.size, mtime_ns=nf.mtime_ns, dev=nf.dev)
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
