"""Appending audit events that chain per message (issue 12: a bundle proves it is whole).

Each event about a message names the index of the previous event about the same message
in this log, so an evidence bundle that leaves one out breaks the chain. The previous
index must be read in the same critical section as the append: `append_chained` takes
the log's lock (the `audit_state` row, as `append_leaves` does) *before* it looks the
index up, so two concurrent events about one message never name the same predecessor,
on one node or across replicas. Storage knows no leaf format: the caller builds each
leaf from the index it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import Session

from ._audit import _MESSAGE_LEAVES, _lock_state, _require_writable, append_leaves

__all__ = ["LeafBuilder", "append_chained"]

# Builds an event's leaf bytes from the index of the previous event about its message
# (None for the first, or for an event about no message).
LeafBuilder = Callable[[int | None], bytes]


def append_chained(
    session: Session, entries: Sequence[tuple[LeafBuilder, datetime, str | None]]
) -> list[int]:
    """Append events `(build, appended_at, message_id)`, in order, each leaf built from
    the index of the previous event about its message (earlier ones of this batch
    included); return their consecutive indexes, as `append_leaves` does."""
    _require_writable(session)
    if not entries:
        return []
    connection = session.connection()
    first, _ = _lock_state(connection)  # the lock first: the lookup below is under it
    ids = sorted({m for _, _, m in entries if m})
    last: dict[str, int] = {}
    if ids:
        rows = connection.execute(
            select(_MESSAGE_LEAVES.c.message_id, func.max(_MESSAGE_LEAVES.c.index))
            .where(_MESSAGE_LEAVES.c.message_id.in_(ids))
            .group_by(_MESSAGE_LEAVES.c.message_id)
        )
        last = {str(m): int(i) for m, i in rows}
    built: list[tuple[bytes, datetime, Sequence[str]]] = []
    for offset, (build, at, message_id) in enumerate(entries):
        built.append((build(last.get(message_id) if message_id else None), at,
                      [message_id] if message_id else []))  # fmt: skip
        if message_id:
            last[message_id] = first + offset
    indexes = append_leaves(session, built)
    if indexes[0] != first:  # the lock is held: nothing else can have appended
        raise RuntimeError("the audit log moved under its own lock")
    return indexes
