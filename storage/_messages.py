"""Messages, their parts, receipts, status timeline and the replay store.

Invariants:
- `insert_outgoing` writes the message, its parts, its outbox row and its first event in
  one savepoint: after it returns all four exist, after it raises none does (DESIGN 6,
  the transactional outbox). The caller's session commits them together.
- `record_incoming` writes the message, its parts, its replay entry and its first event
  the same way, and raises `ReplayedMessage` (a `DuplicateError`) if the (sender, message
  id) pair was already recorded, also when a concurrent replica recorded it first.
- `envelope_sha256` is computed here from the envelope bytes, never taken from the
  caller, so it always names the bytes stored beside it.
- Part indexes are the positions in the sequence given: 0 is the body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from ._errors import (
    Conflict,
    DigestMismatch,
    DuplicateError,
    InvalidValue,
    NotFound,
    ReplayedMessage,
)
from ._models import (
    Direction,
    Message,
    MessageEvent,
    MessagePart,
    MessageStatus,
    OutboxEntry,
    Peer,
    Receipt,
    ReplayEntry,
)
from ._types import as_enum, check_sha256, require_aware

__all__ = [
    "MAX_PAGE",
    "NewMessage",
    "PartRef",
    "add_event",
    "add_receipt",
    "get_message",
    "get_parts",
    "get_receipt",
    "insert_draft",
    "insert_outgoing",
    "list_events",
    "list_messages",
    "prune_replay",
    "queue_draft",
    "record_incoming",
    "set_status",
]

MAX_PAGE = 500


@dataclass(frozen=True, slots=True)
class PartRef:
    """An encrypted part: its ciphertext digest and size, and either the bytes themselves
    (`data`, kept inline in the database) or nothing (the part is in the blob store)."""

    blob_sha256: str
    size: int
    data: bytes | None = None

    def __post_init__(self) -> None:
        check_sha256(self.blob_sha256, "blob_sha256")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 0:
            raise InvalidValue("a part size must be a non-negative integer")
        if self.data is not None and (
            len(self.data) != self.size or hashlib.sha256(self.data).hexdigest() != self.blob_sha256
        ):
            raise DigestMismatch("inline part data does not match its digest and size")


@dataclass(frozen=True, slots=True, kw_only=True)
class NewMessage:
    """What the node knows of a statement when it stores it (outgoing or incoming).

    The routing fields (sender, recipient, type, marking, purpose, times) are copies of
    the signed payload, which the gateway has verified or produced; `envelope` is the
    signed statement envelope, stored byte for byte.
    """

    message_id: str
    sender: str
    recipient: str
    type: str
    marking: Mapping[str, Any]
    purpose: str
    created: datetime
    envelope: bytes
    header: bytes | None = None
    expires: datetime | None = None
    in_reply_to: str | None = None
    parts: Sequence[PartRef] = field(default=())

    def __post_init__(self) -> None:
        if not self.message_id:
            raise InvalidValue("message_id must not be empty")
        if not isinstance(self.envelope, bytes):
            raise InvalidValue("envelope must be bytes")
        require_aware(self.created, "created")
        if self.expires is not None:
            require_aware(self.expires, "expires")


def _row(
    message: NewMessage, direction: Direction, status: MessageStatus, now: datetime
) -> Message:
    return Message(
        message_id=message.message_id,
        direction=direction,
        sender=message.sender,
        recipient=message.recipient,
        type=message.type,
        marking=dict(message.marking),
        purpose=message.purpose,
        created=message.created,
        expires=message.expires,
        envelope=message.envelope,
        envelope_sha256=hashlib.sha256(message.envelope).hexdigest(),
        header=message.header,
        status=status,
        in_reply_to=message.in_reply_to,
        created_at=now,
        updated_at=now,
    )


def _parts(message: NewMessage) -> list[MessagePart]:
    return [
        MessagePart(
            message_id=message.message_id,
            index=i,
            blob_sha256=p.blob_sha256,
            size=p.size,
            data=p.data,
        )
        for i, p in enumerate(message.parts)
    ]


def _event(message_id: str, event: str, now: datetime, detail: Mapping[str, Any]) -> MessageEvent:
    # str() turns a StrEnum member into plain text: drivers may adapt enums by name.
    return MessageEvent(message_id=message_id, at=now, event=str(event), detail=dict(detail))


def insert_outgoing(
    session: Session,
    message: NewMessage,
    *,
    now: datetime,
    peer: str | None = None,
    first_attempt_at: datetime | None = None,
) -> Message:
    """Queue an outgoing message for delivery to `peer` (default: its recipient).

    Atomic: message, parts, outbox row and the `queued` event, or nothing. Raises
    `NotFound` for an unregistered peer and `DuplicateError` for a reused message id.
    """
    now = require_aware(now, "now")
    peer = message.recipient if peer is None else peer
    attempt_at = now if first_attempt_at is None else require_aware(first_attempt_at)
    if session.get(Peer, peer) is None:
        raise NotFound(f"no peer {peer!r} to deliver to")
    if session.get(Message, message.message_id) is not None:
        raise DuplicateError(f"message {message.message_id!r} already exists")
    row = _row(message, Direction.OUT, MessageStatus.QUEUED, now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()  # The parent rows first: SQLite checks foreign keys per row.
            session.add_all(_parts(message))
            session.add(
                OutboxEntry(message_id=message.message_id, peer=peer, next_attempt_at=attempt_at)
            )
            session.add(_event(message.message_id, MessageStatus.QUEUED.value, now, {"peer": peer}))
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"message {message.message_id!r} already exists") from e
    return row


def insert_draft(session: Session, message: NewMessage, *, now: datetime) -> Message:
    """Keep an outgoing message as a draft: sealed, not yet signed by a signatory (art. 4.4).

    Atomic: message, parts and the `draft` event. Nothing is queued until `queue_draft`.
    """
    now = require_aware(now, "now")
    if session.get(Peer, message.recipient) is None:
        raise NotFound(f"no peer {message.recipient!r} to deliver to")
    if session.get(Message, message.message_id) is not None:
        raise DuplicateError(f"message {message.message_id!r} already exists")
    row = _row(message, Direction.OUT, MessageStatus.DRAFT, now)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
            session.add_all(_parts(message))
            session.add(_event(message.message_id, MessageStatus.DRAFT.value, now, {}))
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"message {message.message_id!r} already exists") from e
    return row


def queue_draft(
    session: Session,
    message_id: str,
    *,
    envelope: bytes,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> Message:
    """Replace a draft's envelope by its signed form and queue it, in one savepoint.

    `Conflict` unless the message is an outgoing draft.
    """
    now = require_aware(now, "now")
    row = session.exec(
        select(Message).where(Message.message_id == message_id).with_for_update()
    ).first()
    if row is None:
        raise NotFound(f"no message {message_id!r}")
    if row.direction is not Direction.OUT or row.status is not MessageStatus.DRAFT:
        raise Conflict(f"message {message_id!r} is not a draft (it is {row.status.value})")
    with session.begin_nested():
        row.envelope = envelope
        row.envelope_sha256 = hashlib.sha256(envelope).hexdigest()
        row.status = MessageStatus.QUEUED
        row.updated_at = now
        session.add(row)
        session.add(OutboxEntry(message_id=message_id, peer=row.recipient, next_attempt_at=now))
        session.add(_event(message_id, "signed", now, dict(detail or {})))
        session.add(_event(message_id, MessageStatus.QUEUED.value, now, {"peer": row.recipient}))
    return row


def _replayed(session: Session, sender: str, message_id: str) -> ReplayedMessage | None:
    """The refusal of (sender, message_id) if it was seen: in the replay store, or still in
    the messages after its replay entry was pruned."""
    seen = session.get(ReplayEntry, (sender, message_id))
    if seen is not None:
        return ReplayedMessage(
            sender=sender,
            message_id=message_id,
            envelope_sha256=seen.envelope_sha256,
            seen_at=seen.seen_at,
        )
    kept = session.get(Message, message_id)
    if kept is not None and kept.direction is Direction.IN and kept.sender == sender:
        return ReplayedMessage(
            sender=sender,
            message_id=message_id,
            envelope_sha256=kept.envelope_sha256,
            seen_at=kept.created_at,
        )
    return None


def record_incoming(
    session: Session,
    message: NewMessage,
    *,
    now: datetime,
    replay_until: datetime | None = None,
    status: MessageStatus = MessageStatus.RECEIVED,
) -> Message:
    """Record a verified incoming message, refusing a replay of its (sender, id).

    Atomic: message, parts, replay entry and the first event (`status`: received or
    refused), or nothing. The replay entry is kept until `replay_until`, by default the
    message's own expiry, and for ever when neither is set. Store the receipt you answer
    with in the same session (`add_receipt`), so a redelivery is answered with it.

    Raises `ReplayedMessage` if the pair was already recorded (compare its
    `envelope_sha256` to tell a redelivery from a replay with other content), and
    `Conflict` if another sender already used this message id.
    """
    now = require_aware(now, "now")
    status = as_enum(MessageStatus, status)
    if status not in (MessageStatus.RECEIVED, MessageStatus.REFUSED):
        raise InvalidValue("an incoming message is recorded as received or refused")
    expires = replay_until if replay_until is not None else message.expires
    if expires is not None:
        expires = require_aware(expires, "replay_until")
    replayed = _replayed(session, message.sender, message.message_id)
    if replayed is not None:
        raise replayed
    if session.get(Message, message.message_id) is not None:
        raise Conflict(f"message id {message.message_id!r} is already used by another message")
    row = _row(message, Direction.IN, status, now)
    try:
        with session.begin_nested():
            session.add(
                ReplayEntry(
                    sender=message.sender,
                    message_id=message.message_id,
                    envelope_sha256=row.envelope_sha256,
                    seen_at=now,
                    expires=expires,
                )
            )
            session.add(row)
            session.flush()
            session.add_all(_parts(message))
            session.add(_event(message.message_id, status.value, now, {"sender": message.sender}))
    except sa_exc.IntegrityError as e:
        # Another replica recorded the same message between our check and our insert.
        replayed = _replayed(session, message.sender, message.message_id)
        if replayed is not None:
            raise replayed from e
        raise Conflict(f"message id {message.message_id!r} is already used") from e
    return row


def get_message(session: Session, message_id: str) -> Message:
    """The message `message_id`; `NotFound` if unknown."""
    message = session.get(Message, message_id)
    if message is None:
        raise NotFound(f"no message {message_id!r}")
    return message


def get_parts(session: Session, message_id: str) -> Sequence[MessagePart]:
    """The parts of a message in order (body first); empty for an unknown message."""
    return session.exec(
        select(MessagePart)
        .where(MessagePart.message_id == message_id)
        .order_by(col(MessagePart.index))
    ).all()


def list_messages(
    session: Session, direction: Direction, *, limit: int = 50, offset: int = 0
) -> Sequence[Message]:
    """The inbox (`Direction.IN`) or the sent messages (`Direction.OUT`), newest first."""
    if not 0 < limit <= MAX_PAGE or offset < 0:
        raise InvalidValue(f"limit must be in 1..{MAX_PAGE} and offset non-negative")
    return session.exec(
        select(Message)
        .where(Message.direction == as_enum(Direction, direction))
        .order_by(col(Message.created_at).desc(), col(Message.message_id).desc())
        .limit(limit)
        .offset(offset)
    ).all()


def add_event(
    session: Session,
    message_id: str,
    event: str,
    *,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> MessageEvent:
    """Append a step to a message's timeline (`NotFound` for an unknown message)."""
    get_message(session, message_id)
    row = _event(message_id, event, require_aware(now, "now"), detail or {})
    session.add(row)
    session.flush()
    return row


def list_events(session: Session, message_id: str) -> Sequence[MessageEvent]:
    """A message's timeline, oldest first."""
    return session.exec(
        select(MessageEvent)
        .where(MessageEvent.message_id == message_id)
        .order_by(col(MessageEvent.at), col(MessageEvent.id))
    ).all()


def set_status(
    session: Session,
    message_id: str,
    status: MessageStatus,
    *,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> Message:
    """Change a message's status and record the change in its timeline."""
    now = require_aware(now, "now")
    message = get_message(session, message_id)
    message.status = as_enum(MessageStatus, status)
    message.updated_at = now
    session.add(message)
    session.add(_event(message_id, message.status.value, now, detail or {}))
    session.flush()
    return message


def add_receipt(
    session: Session, message_id: str, *, envelope: bytes, verdict: str, now: datetime
) -> Receipt:
    """Store the signed receipt of a message (received from the peer, or issued here).

    Idempotent for the same envelope; `DuplicateError` if a different receipt is stored.
    """
    get_message(session, message_id)
    existing = session.get(Receipt, message_id)
    if existing is not None:
        if existing.envelope == envelope:
            return existing
        raise DuplicateError(f"message {message_id!r} already has a different receipt")
    receipt = Receipt(
        message_id=message_id,
        envelope=envelope,
        verdict=verdict,
        received_at=require_aware(now, "now"),
    )
    try:
        with session.begin_nested():
            session.add(receipt)
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"message {message_id!r} already has a receipt") from e
    return receipt


def get_receipt(session: Session, message_id: str) -> Receipt:
    """The receipt of a message; `NotFound` if none is stored."""
    receipt = session.get(Receipt, message_id)
    if receipt is None:
        raise NotFound(f"no receipt for message {message_id!r}")
    return receipt


def prune_replay(session: Session, *, now: datetime) -> int:
    """Delete replay entries whose expiry has passed; returns how many."""
    result = session.exec(
        delete(ReplayEntry).where(
            col(ReplayEntry.expires).is_not(None),
            col(ReplayEntry.expires) < require_aware(now, "now"),
        )
    )
    return int(result.rowcount)
