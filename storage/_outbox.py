"""Leasing of the transactional outbox by delivery workers.

Invariants:
- A row is handed to at most one worker at a time. On PostgreSQL `lease_due` selects with
  `FOR UPDATE SKIP LOCKED`, so concurrent replicas each take different rows without
  waiting for one another; on SQLite the read-write session already holds the database's
  single write lock (`BEGIN IMMEDIATE`, see `_database`), which serialises leasers.
- A lease is identified by its owner and attempt number. `complete`, `retry_later` and
  `fail` act only if the row still carries that lease, else raise `LeaseLost`: a worker
  whose lease expired and was taken over cannot overwrite the new holder's outcome.
- The attempt counter is incremented when a row is leased, so a worker killed mid-send
  still counts as an attempt; an expired lease makes the row due again (at-least-once
  delivery; the receiver deduplicates by message id).
- Each outcome updates the message's status and timeline in the same transaction.
- Call `lease_due` in its own short session: the lease is visible to other workers only
  once that session commits, and the row locks are held until then.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from ._errors import InvalidValue, LeaseLost
from ._models import Message, MessageEvent, MessageStatus, OutboxEntry
from ._types import require_aware

__all__ = ["complete", "fail", "lease_due", "retry_later"]


def lease_due(
    session: Session, owner: str, now: datetime, limit: int, lease_seconds: float
) -> list[OutboxEntry]:
    """Lease up to `limit` due outbox rows to `owner` for `lease_seconds`, oldest due first.

    The returned rows carry the lease (`lease_owner`, `attempts`, `leased_until`); pass
    each one back to `complete`, `retry_later` or `fail`.
    """
    now = require_aware(now, "now")
    if not owner:
        raise InvalidValue("a lease owner must be named")
    if limit <= 0 or lease_seconds <= 0:
        raise InvalidValue("limit and lease_seconds must be positive")
    if session.info.get("accord_readonly"):
        raise InvalidValue("leasing writes: use a read-write session")
    rows = list(
        session.exec(
            select(OutboxEntry)
            .where(
                col(OutboxEntry.next_attempt_at) <= now,
                or_(
                    col(OutboxEntry.leased_until).is_(None),
                    col(OutboxEntry.leased_until) <= now,
                ),
            )
            .order_by(
                col(OutboxEntry.next_attempt_at),
                col(OutboxEntry.message_id),
                col(OutboxEntry.peer),
            )
            .limit(limit)
            # PostgreSQL: skip rows another transaction is leasing right now. SQLite
            # renders no FOR UPDATE; its write lock already excludes other leasers.
            .with_for_update(skip_locked=True)
        ).all()
    )
    until = now + timedelta(seconds=lease_seconds)
    for row in rows:
        row.attempts += 1
        row.leased_until = until
        row.lease_owner = owner
        session.add(row)
    _set_statuses(session, [row.message_id for row in rows], MessageStatus.SENDING, now)
    session.flush()
    return rows


def _held(session: Session, lease: OutboxEntry) -> OutboxEntry:
    """The row of `lease`, locked, if it still carries that lease; else `LeaseLost`."""
    # Read the lease before the query: if `lease` is this session's own copy of the row,
    # the query refreshes it in place.
    owner, attempts = lease.lease_owner, lease.attempts
    row = session.exec(
        select(OutboxEntry)
        .where(OutboxEntry.message_id == lease.message_id, OutboxEntry.peer == lease.peer)
        .with_for_update()
        # Re-read the row even if this session already holds a (possibly stale) copy.
        .execution_options(populate_existing=True)
    ).first()
    if row is None or owner is None or row.lease_owner != owner or row.attempts != attempts:
        raise LeaseLost(f"the lease of {lease.message_id!r} to {lease.peer!r} is no longer held")
    return row


def release_leases(session: Session, owner: str) -> int:
    """Release every lease held by `owner`: a restarted worker takes back what its previous
    incarnation (killed mid-delivery) held, instead of waiting for the leases to expire.
    Returns how many rows were released."""
    rows = list(
        session.exec(select(OutboxEntry).where(OutboxEntry.lease_owner == owner).with_for_update())
    )
    for row in rows:
        row.lease_owner = None
        row.leased_until = None
        session.add(row)
    session.flush()
    return len(rows)


def complete(session: Session, lease: OutboxEntry, *, now: datetime) -> None:
    """The peer accepted the delivery: drop the row, mark the message delivered."""
    now = require_aware(now, "now")
    row = _held(session, lease)
    session.delete(row)
    _set_statuses(session, [row.message_id], MessageStatus.DELIVERED, now)
    _record(session, row, MessageStatus.DELIVERED.value, now, {"attempts": row.attempts})


def retry_later(
    session: Session, lease: OutboxEntry, *, next_attempt_at: datetime, error: str, now: datetime
) -> None:
    """The attempt failed: release the lease and make the row due at `next_attempt_at`."""
    now = require_aware(now, "now")
    row = _held(session, lease)
    row.next_attempt_at = require_aware(next_attempt_at, "next_attempt_at")
    row.leased_until = None
    row.lease_owner = None
    row.last_error = error
    session.add(row)
    _set_statuses(session, [row.message_id], MessageStatus.QUEUED, now)
    _record(
        session,
        row,
        "retry",
        now,
        {
            "attempts": row.attempts,
            "error": error,
            "next_attempt_at": row.next_attempt_at.isoformat(),
        },
    )


def fail(session: Session, lease: OutboxEntry, *, error: str, now: datetime) -> None:
    """Give up on the delivery: drop the row, mark the message failed."""
    now = require_aware(now, "now")
    row = _held(session, lease)
    session.delete(row)
    _set_statuses(session, [row.message_id], MessageStatus.FAILED, now)
    _record(
        session, row, MessageStatus.FAILED.value, now, {"attempts": row.attempts, "error": error}
    )


def _record(
    session: Session, row: OutboxEntry, event: str, now: datetime, detail: dict[str, object]
) -> None:
    session.add(
        MessageEvent(
            message_id=row.message_id, at=now, event=event, detail={"peer": row.peer, **detail}
        )
    )
    session.flush()


def _set_statuses(
    session: Session, message_ids: Sequence[str], status: MessageStatus, now: datetime
) -> None:
    if message_ids:
        session.exec(
            update(Message)
            .where(col(Message.message_id).in_(message_ids))
            .values(status=status, updated_at=now)
        )
