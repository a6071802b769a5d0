"""Group commit: every write a run makes to the job table, from one thread.

A commit of the job table costs several fsyncs (rollback journal,
``synchronous=FULL``). One per database, or per batch, would cap a run at a few
hundred databases a second, however fast the server. So the runner hands each
change to :class:`Journal` as a small function of a SQLAlchemy connection;
the journal's thread runs everything waiting in one transaction, commits once
and then resolves each change's future. Changes commit in the order they were
submitted, and a change whose future has resolved is durable.

Most changes are one row per database; :meth:`Journal.execute` queues a
statement and its parameters, and a run of the same statement goes to SQLite as
one ``executemany``. Nothing waits on those rows (a database is staged, or being
embedded, whether or not its row says so yet), so a group of them alone waits
up to ``LAZY_LINGER`` for company; a change someone waits on (a claim, a batch's
done-mark) commits within ``LINGER``, taking what lingered with it. With small
databases, committing every few rows cost more fsyncs than their files did.

The runner never waits on a future unless it must (a batch of vectors is
acknowledged only once durable); the rule that makes this safe is that a
change describing a file is submitted only after that file is durable.

**Lock order.** Every worker's group commits update the one ``migrations`` row
(the records and tokens embedded) and their databases' rows. Taken in
submission order, a transaction could hold the migration row and then wait for a
database row that another worker had just claimed (a lease run out), while that
worker's transaction, holding the database row, waited for the migration row:
PostgreSQL's deadlock, seen once in about 130 runs of the multi-worker test.
So the counters are *deferred* (:meth:`Journal.execute_last`, :func:`defer`): a
transaction takes database rows first, in any order, and the migration row
last, just before it commits, never waiting for anything while it holds it.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DatabaseError, DBAPIError
from sqlalchemy.sql.expression import Executable

from migrator.jobs.store import StateStore, unreadable

Change = Callable[[Connection], Any]


class _Statement:
    __slots__ = ("statement", "params", "last", "lazy")

    def __init__(self, statement: Executable, params: dict, last: bool = False, lazy: bool = False):
        self.statement, self.params, self.last, self.lazy = statement, params, last, lazy


_Queued = Change | _Statement  # what a group holds: a change, or a statement with its parameters

_DEFERRED = "migrator.deferred"


def defer(conn: Connection, statement: Executable, params: dict) -> None:
    """From inside a change: run ``statement`` at the end of this transaction (lock order)."""
    conn.info.setdefault(_DEFERRED, []).append(_Statement(statement, params, last=True))


RETRIES_IF_VICTIM = 3  # a transaction PostgreSQL aborted to break a deadlock is run again
MAX_GROUP = 512  # changes in one transaction at most
LINGER = 0.002  # seconds a lone change waits for company before it commits
LAZY_LINGER = 0.05  # ... and a group of rows nobody waits for (Journal.execute)


def _victim(e: DBAPIError) -> bool:
    """Was this transaction aborted to break a deadlock (or a serialization conflict)?"""
    return getattr(getattr(e, "orig", None), "sqlstate", None) in ("40P01", "40001")


class Journal:
    """A thread that owns every write to the job table during a run."""

    def __init__(self, store: StateStore, *, name: str = "migrator-journal"):
        self.store = store
        self._q: queue.SimpleQueue[tuple[_Queued, Future] | None] = queue.SimpleQueue()
        self._broken: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self.commits = 0

    def submit(self, change: _Queued) -> Future:
        """Queue ``change``; the future resolves (to its result) once it is committed."""
        fut: Future = Future()
        if self._broken is not None:
            fut.set_exception(self._broken)
        else:
            self._q.put((change, fut))
        return fut

    def execute(self, statement: Executable, params: dict) -> Future:
        """Queue one statement with its parameters, which nobody waits for (it may linger:
        ``LAZY_LINGER``). Consecutive ones of the same statement run as one ``executemany``
        (the hot path: one row per database)."""
        return self.submit(_Statement(statement, params, lazy=True))

    def execute_last(self, statement: Executable, params: dict) -> Future:
        """Queue a statement that runs at the end of its transaction, after every other one
        (the migration row's counters: see "Lock order"); nobody waits for it either."""
        return self.submit(_Statement(statement, params, last=True, lazy=True))

    @property
    def broken(self) -> BaseException | None:
        """Why the journal stopped committing (None: it did not)."""
        return self._broken

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        self._q.put(None)
        self._thread.join()

    def _loop(self) -> None:
        closing = False
        while not closing:
            first = self._q.get()
            if first is None:
                return
            group = [first]
            # let the changes of the next few moments join this commit: a little while if
            # someone waits on one of them, longer if nobody does
            lazy = _lazy(first)
            deadline = time.monotonic() + (LAZY_LINGER if lazy else LINGER)
            while len(group) < MAX_GROUP:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        item = self._q.get(timeout=left)
                    except queue.Empty:
                        break
                if item is None:
                    closing = True
                    break
                group.append(item)
                if lazy and not _lazy(item):  # someone waits: what is queued goes now
                    lazy, deadline = False, min(deadline, time.monotonic() + LINGER)
            self._commit(group)

    def _commit(self, group: list[tuple[_Queued, Future]]) -> None:
        if self._broken is not None:
            for _, fut in group:
                fut.set_exception(self._broken)
            return
        for attempt in range(RETRIES_IF_VICTIM + 1):
            try:
                results = self._run_group(group)
                break
            except DBAPIError as e:
                # PostgreSQL broke a deadlock between workers by aborting this transaction:
                # nothing of it was kept, so running the same changes again is safe
                if _victim(e) and attempt < RETRIES_IF_VICTIM:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                self._give_up(group, unreadable(self.store.location, e) if isinstance(e, DatabaseError) else e)
                return
            except BaseException as e:  # noqa: BLE001 - handed to every waiter
                self._give_up(group, e)
                return
        self.commits += 1
        for (_, fut), result in zip(group, results):
            fut.set_result(result)

    def _give_up(self, group: list[tuple[_Queued, Future]], e: BaseException) -> None:
        # later changes may build on these (staged after prepared): none may commit now
        self._broken = e
        for _, fut in group:
            fut.set_exception(e)

    def _run_group(self, group: list[tuple[_Queued, Future]]) -> list:
        results: list = []
        with self.store.engine.begin() as conn:  # errors as they are: _commit sorts them
            conn.info[_DEFERRED] = []
            try:
                changes = [c for c, _ in group]
                last = [c for c in changes if isinstance(c, _Statement) and c.last]
                _run_in_order([c for c in changes if not (isinstance(c, _Statement) and c.last)], conn, results)
                # then the deferred ones (the migration row), just before the commit
                _run_in_order(last + conn.info[_DEFERRED], conn, [])
            finally:
                conn.info.pop(_DEFERRED, None)
        # results in the order of the group (a deferred statement's is None)
        out, it = [], iter(results)
        for c, _ in group:
            out.append(None if isinstance(c, _Statement) and c.last else next(it))
        return out


def _lazy(item: tuple[_Queued, Future]) -> bool:
    change = item[0]
    return isinstance(change, _Statement) and change.lazy


def _run_in_order(changes: list, conn: Connection, results: list) -> None:
    i = 0
    while i < len(changes):
        change = changes[i]
        if isinstance(change, _Statement):
            j = i + 1
            while j < len(changes) and isinstance(changes[j], _Statement) and changes[j].statement is change.statement:
                j += 1
            conn.execute(change.statement, [c.params for c in changes[i:j]])
            results.extend([None] * (j - i))
            i = j
        else:
            results.append(change(conn))
            i += 1
