"""Group commit: the writes of concurrent requests share one database transaction.

Every accepted message must be committed before the node answers for it. Committed one
by one, each pays a transaction's fixed cost (BEGIN, savepoints, COMMIT, and on SQLite the
single writer's turn). Under load, requests arrive faster than that; a writer thread takes
every write waiting in its queue and commits them together, each in its own savepoint so
that one failing write fails alone. With one request at a time nothing waits: a batch of
one is committed at once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlmodel import Session

from storage import Database

__all__ = ["GroupCommit"]

log = logging.getLogger("accord.commit")
T = TypeVar("T")
_STOP = object()


class GroupCommit:
    def __init__(self, db: Database, *, max_batch: int = 256) -> None:
        self._db = db
        self._max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, write: Callable[[Session], T]) -> T:
        """Run `write` in a transaction shared with other waiting writes; block until it
        is committed and return its result, or raise its error (or the commit's)."""
        self._ensure_started()
        future: Future[T] = Future()
        self._queue.put((write, future))
        return future.result()

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

    def _commit(self, batch: list[tuple[Callable[[Session], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []
        try:
            with self._db.session() as session:
                for write, _future in batch:
                    try:
                        with session.begin_nested():
                            outcomes.append((True, write(session)))
                    except Exception as e:
                        outcomes.append((False, e))
        except Exception as e:
            log.error("a group commit of %d write(s) failed: %s", len(batch), e)
            for _write, future in batch:
                future.set_exception(e)
            return
        for (ok, value), (_write, future) in zip(outcomes, batch, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
