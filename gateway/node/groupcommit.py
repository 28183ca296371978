"""Group commit: the writes of concurrent requests share one database transaction.

Every accepted message must be committed before the node answers for it. Committed one
by one, each pays a transaction's fixed cost (BEGIN, savepoints, COMMIT, and on SQLite the
single writer's turn). Under load, requests arrive faster than that; a writer thread takes
every write waiting in its queue and commits them together. With one request at a time
nothing waits: a batch of one is committed at once.

Two kinds of writes share a transaction:
- `submit(write)`: any function of a session, run in its own savepoint, so that one
  failing write fails alone.
- `submit_item(bulk, item)`: one item of a bulk write. Every item queued with the same
  `bulk` function is handed to it in one call, `bulk(session, items)`, which returns one
  outcome per item: a value, or an exception instance for an item that failed alone (the
  storage batch functions keep per-item atomicity themselves). One call writes the whole
  batch with a few statements, where per-item writes would pay a statement per row.
  A bulk function that raises fails all its items, in its own savepoint, and nothing else.
  A function that must record more in the same transaction (an audit-log leaf per stored
  message) does it inside `bulk`, after the storage call, for the items that succeeded.

Nothing is acknowledged before the transaction commits: futures are resolved only after
the COMMIT (durable as the database is configured: SQLite WAL with `synchronous=NORMAL`).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlmodel import Session

from accord.storage import Database

__all__ = ["BulkWrite", "GroupCommit"]

log = logging.getLogger("accord.commit")
T = TypeVar("T")
_STOP = object()

# `bulk(session, items)` -> one outcome per item: a value, or the exception for that item.
BulkWrite = Callable[[Session, Sequence[Any]], Sequence[Any]]


class GroupCommit:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, write: Callable[[Session], T]) -> Future[T]:
        """Queue `write` for the next shared transaction; the future resolves with its
        result once committed, or with its error (or the commit's)."""
        self._ensure_started()
        future: Future[T] = Future()
        self._queue.put((None, write, future))
        return future

    def submit_item(self, bulk: BulkWrite, item: Any) -> Future[Any]:
        """Queue one `item` for `bulk`, called once per transaction with every item queued
        for it; the future resolves with the item's outcome once committed."""
        self._ensure_started()
        future: Future[Any] = Future()
        self._queue.put((bulk, item, future))
        return future

    def run(self, write: Callable[[Session], T]) -> T:
        """Run `write` in a transaction shared with other waiting writes; block until it
        is committed and return its result, or raise its error (or the commit's)."""
        return self.submit(write).result()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    self._queue.put(_STOP)
                    break
                batch.append(item)
            self._commit(batch)

    def _commit(self, batch: list[tuple[BulkWrite | None, Any, Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        groups: dict[BulkWrite, list[tuple[Any, Future[Any]]]] = {}
        try:
            with self._db.session() as session:
                for bulk, write, future in batch:
                    if bulk is not None:
                        groups.setdefault(bulk, []).append((write, future))
                        continue
                    try:
                        with session.begin_nested():
                            outcomes.append((future, True, write(session)))
                    except Exception as e:
                        outcomes.append((future, False, e))
                for bulk, entries in groups.items():
                    outcomes.extend(_run_bulk(session, bulk, entries))
        except Exception as e:
            log.error("a group commit of %d write(s) failed: %s", len(batch), e)
            for _bulk, _write, future in batch:
                future.set_exception(e)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


def _run_bulk(
    session: Session, bulk: BulkWrite, entries: list[tuple[Any, Future[Any]]]
) -> list[tuple[Future[Any], bool, Any]]:
    items = [item for item, _ in entries]
    try:
        with session.begin_nested():
            results = list(bulk(session, items))
            if len(results) != len(items):
                # Undo its writes: which outcome belongs to which item is unknown.
                raise RuntimeError(f"a bulk write gave {len(results)} outcomes for {len(items)}")
    except Exception as e:
        return [(future, False, e) for _, future in entries]
    return [
        (future, not isinstance(result, BaseException), result)
        for (_, future), result in zip(entries, results, strict=True)
    ]
