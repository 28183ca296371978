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
- The batch writes (`insert_outgoing_many`, `record_incoming_many`) keep the same
  guarantees per message as the single ones: each message is written whole or not at all,
  and one message's failure leaves the others of the batch unaffected. They write a whole
  batch with one Core statement per table (no ORM unit of work: its per-row flush cost
  was most of a node's CPU under load), inside one savepoint; should the batch break a
  constraint (a concurrent replica, a reused id), the savepoint is undone and each message
  is written alone, so the constraint names the message that broke it.
- Existence is asked of the database's constraints, not checked before writing: an
  unknown peer is a foreign-key violation, a reused message id a primary-key violation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy import select as core_select
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
    "get_frames",
    "get_message",
    "get_messages",
    "get_parts",
    "get_parts_many",
    "get_receipt",
    "insert_draft",
    "insert_outgoing",
    "insert_outgoing_many",
    "list_events",
    "list_messages",
    "prune_replay",
    "queue_draft",
    "record_incoming",
    "record_incoming_many",
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


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


_MESSAGES = _table(Message)
_PARTS = _table(MessagePart)
_OUTBOX = _table(OutboxEntry)
_EVENTS = _table(MessageEvent)
_REPLAY = _table(ReplayEntry)
_RECEIPTS = _table(Receipt)


def _message_values(
    message: NewMessage, direction: Direction, status: MessageStatus, now: datetime
) -> dict[str, Any]:
    return {
        "message_id": message.message_id,
        "direction": direction,
        "sender": message.sender,
        "recipient": message.recipient,
        "type": message.type,
        "marking": dict(message.marking),
        "purpose": message.purpose,
        "created": message.created,
        "expires": message.expires,
        "envelope": message.envelope,
        "envelope_sha256": hashlib.sha256(message.envelope).hexdigest(),
        "header": message.header,
        "status": status,
        "in_reply_to": message.in_reply_to,
        "created_at": now,
        "updated_at": now,
    }


def _part_values(message: NewMessage) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message.message_id,
            "index": i,
            "blob_sha256": p.blob_sha256,
            "size": p.size,
            "data": p.data,
        }
        for i, p in enumerate(message.parts)
    ]


def _event_values(
    message_id: str, event: str, now: datetime, detail: Mapping[str, Any]
) -> dict[str, Any]:
    return {"message_id": message_id, "at": now, "event": str(event), "detail": dict(detail)}


def _insert(session: Session, table: Table, rows: list[dict[str, Any]]) -> None:
    """One INSERT for all `rows` (executemany), skipped when there are none."""
    if rows:
        session.execute(insert(table), rows)


def _as_row(values: dict[str, Any]) -> Message:
    """The stored message as an object, built from what was inserted (no reload)."""
    return Message(**values)


def _write_outgoing(
    session: Session,
    messages: Sequence[NewMessage],
    *,
    now: datetime,
    peer: str | None,
    attempt_at: datetime,
) -> list[dict[str, Any]]:
    """Insert the rows of `messages`, parent rows first: SQLite checks foreign keys per
    statement. No savepoint here: the caller holds one. Returns the message rows' values."""
    values = [_message_values(m, Direction.OUT, MessageStatus.QUEUED, now) for m in messages]
    _insert(session, _MESSAGES, values)
    _insert(session, _PARTS, [p for m in messages for p in _part_values(m)])
    _insert(
        session,
        _OUTBOX,
        [
            {
                "message_id": m.message_id,
                "peer": m.recipient if peer is None else peer,
                "attempts": 0,
                "next_attempt_at": attempt_at,
            }
            for m in messages
        ],
    )
    _insert(
        session,
        _EVENTS,
        [
            _event_values(
                m.message_id,
                MessageStatus.QUEUED.value,
                now,
                {"peer": m.recipient if peer is None else peer},
            )
            for m in messages
        ],
    )
    return values


def insert_outgoing_many(
    session: Session, messages: Sequence[NewMessage], *, now: datetime
) -> list[NotFound | DuplicateError | None]:
    """Queue several outgoing messages at once, each for delivery to its recipient, due now.

    Returns, in order, None for each message queued, or the error that refused it alone
    (`NotFound` for an unregistered peer, `DuplicateError` for a reused message id); the
    others are queued all the same. (No row objects are built: under load, building them
    cost more than the inserts.) A message id given twice in `messages` is a
    `DuplicateError` for the second. Atomic per message, as `insert_outgoing`.
    """
    now = require_aware(now, "now")
    if not messages:
        return []
    if len({m.message_id for m in messages}) == len(messages):
        try:
            with session.begin_nested():
                _write_outgoing(session, messages, now=now, peer=None, attempt_at=now)
            return [None] * len(messages)
        except sa_exc.IntegrityError:
            pass  # Someone in the batch broke a constraint: find out who, one by one.
    results: list[NotFound | DuplicateError | None] = []
    for message in messages:
        try:
            insert_outgoing(session, message, now=now)
            results.append(None)
        except (NotFound, DuplicateError) as e:
            results.append(e)
    return results


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
    target = message.recipient if peer is None else peer
    attempt_at = now if first_attempt_at is None else require_aware(first_attempt_at)
    try:
        with session.begin_nested():
            (values,) = _write_outgoing(
                session, [message], now=now, peer=target, attempt_at=attempt_at
            )
    except sa_exc.IntegrityError as e:
        # Only now is it worth asking which constraint answered.
        if session.get(Peer, target) is None:
            raise NotFound(f"no peer {target!r} to deliver to") from e
        raise DuplicateError(f"message {message.message_id!r} already exists") from e
    return _as_row(values)


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


def _known(
    session: Session, messages: Sequence[NewMessage]
) -> tuple[dict[tuple[str, str], tuple[str, datetime]], dict[str, tuple[Any, ...]]]:
    """Two queries for a whole batch: the replay entries of its (sender, id) pairs, and
    the stored messages that use its ids."""
    pairs = [(m.sender, m.message_id) for m in messages]
    replay = session.execute(
        core_select(
            _REPLAY.c.sender, _REPLAY.c.message_id, _REPLAY.c.envelope_sha256, _REPLAY.c.seen_at
        ).where(tuple_(_REPLAY.c.sender, _REPLAY.c.message_id).in_(pairs))
    ).all()
    kept = session.execute(
        core_select(
            _MESSAGES.c.message_id,
            _MESSAGES.c.direction,
            _MESSAGES.c.sender,
            _MESSAGES.c.envelope_sha256,
            _MESSAGES.c.created_at,
        ).where(_MESSAGES.c.message_id.in_([m.message_id for m in messages]))
    ).all()
    return (
        {(r.sender, r.message_id): (r.envelope_sha256, r.seen_at) for r in replay},
        {r.message_id: tuple(r) for r in kept},
    )


def _replay(message: NewMessage, envelope_sha256: str, seen_at: datetime) -> ReplayedMessage:
    return ReplayedMessage(
        sender=message.sender,
        message_id=message.message_id,
        envelope_sha256=envelope_sha256,
        seen_at=seen_at,
    )


def record_incoming_many(
    session: Session,
    messages: Sequence[NewMessage],
    *,
    now: datetime,
    receipts: Sequence[bytes] | None = None,
    verdict: str = "accepted",
) -> list[ReplayedMessage | Conflict | None]:
    """Record a batch of verified incoming messages as received, each with the receipt
    this node answers it with (`receipts[i]` for `messages[i]`, stored with `verdict`).

    Returns, in order, None for each message recorded, or the error that refused it alone:
    `ReplayedMessage` for a (sender, id) already recorded (also earlier in the same
    batch: compare `envelope_sha256` to tell a redelivery from a replay), `Conflict` for
    an id another sender already used. The replay check is two queries for the whole
    batch; the writes are one statement per table. Atomic per message, as
    `record_incoming` with `add_receipt`; replay entries are kept until each message's
    own expiry.
    """
    now = require_aware(now, "now")
    if receipts is not None and len(receipts) != len(messages):
        raise InvalidValue("one receipt per message")
    if not messages:
        return []
    replay, kept = _known(session, messages)
    results: list[ReplayedMessage | Conflict | None] = []
    fresh: list[int] = []
    in_batch: dict[str, tuple[str, str]] = {}
    for i, m in enumerate(messages):
        sha = hashlib.sha256(m.envelope).hexdigest()
        seen = replay.get((m.sender, m.message_id))
        stored = kept.get(m.message_id)
        first = in_batch.get(m.message_id)
        if seen is not None:
            results.append(_replay(m, seen[0], seen[1]))
        elif stored is not None and stored[1] == Direction.IN and stored[2] == m.sender:
            results.append(_replay(m, stored[3], stored[4]))
        elif stored is not None or (first is not None and first[0] != m.sender):
            results.append(
                Conflict(f"message id {m.message_id!r} is already used by another message")
            )
        elif first is not None:
            results.append(_replay(m, first[1], now))
        else:
            in_batch[m.message_id] = (m.sender, sha)
            fresh.append(i)
            results.append(None)
    try:
        with session.begin_nested():
            _write_incoming(session, messages, fresh, now=now, receipts=receipts, verdict=verdict)
    except sa_exc.IntegrityError:
        # A concurrent replica recorded one of them first: one by one, each alone.
        for i in fresh:
            m = messages[i]
            try:
                with session.begin_nested():
                    record_incoming(session, m, now=now)
                    if receipts is not None:
                        add_receipt(
                            session, m.message_id, envelope=receipts[i], verdict=verdict, now=now
                        )
            except (ReplayedMessage, Conflict) as e:
                results[i] = e
    return results


def _write_incoming(
    session: Session,
    messages: Sequence[NewMessage],
    fresh: Sequence[int],
    *,
    now: datetime,
    receipts: Sequence[bytes] | None,
    verdict: str,
) -> None:
    batch = [messages[i] for i in fresh]
    if not batch:
        return
    values = [_message_values(m, Direction.IN, MessageStatus.RECEIVED, now) for m in batch]
    _insert(
        session,
        _REPLAY,
        [
            {
                "sender": m.sender,
                "message_id": m.message_id,
                "envelope_sha256": v["envelope_sha256"],
                "seen_at": now,
                "expires": m.expires,
            }
            for m, v in zip(batch, values, strict=True)
        ],
    )
    _insert(session, _MESSAGES, values)
    _insert(session, _PARTS, [p for m in batch for p in _part_values(m)])
    _insert(
        session,
        _EVENTS,
        [
            _event_values(m.message_id, MessageStatus.RECEIVED.value, now, {"sender": m.sender})
            for m in batch
        ],
    )
    if receipts is not None:
        _insert(
            session,
            _RECEIPTS,
            [
                {
                    "message_id": messages[i].message_id,
                    "envelope": receipts[i],
                    "verdict": verdict,
                    "received_at": now,
                }
                for i in fresh
            ],
        )


def get_messages(session: Session, message_ids: Sequence[str]) -> dict[str, Message]:
    """The stored messages among `message_ids`, by id, in one query (unknown ids are
    absent)."""
    if not message_ids:
        return {}
    rows = session.exec(select(Message).where(col(Message.message_id).in_(message_ids))).all()
    return {r.message_id: r for r in rows}


def get_frames(
    session: Session, message_ids: Sequence[str]
) -> dict[str, tuple[bytes, bytes | None]]:
    """The signed envelope and the age header of each stored message among `message_ids`,
    by id, in one query (unknown ids are absent): what a delivery batch puts on the wire,
    read without building whole message rows."""
    if not message_ids:
        return {}
    rows = session.execute(
        core_select(_MESSAGES.c.message_id, _MESSAGES.c.envelope, _MESSAGES.c.header).where(
            _MESSAGES.c.message_id.in_(message_ids)
        )
    )
    return {r.message_id: (bytes(r.envelope), None if r.header is None else bytes(r.header))
            for r in rows}  # fmt: skip


def get_parts_many(session: Session, message_ids: Sequence[str]) -> dict[str, list[MessagePart]]:
    """The parts of each of `message_ids`, in order (body first), in one query."""
    parts: dict[str, list[MessagePart]] = {m: [] for m in message_ids}
    if not message_ids:
        return parts
    rows = session.exec(
        select(MessagePart)
        .where(col(MessagePart.message_id).in_(message_ids))
        .order_by(col(MessagePart.message_id), col(MessagePart.index))
    ).all()
    for row in rows:
        parts[row.message_id].append(row)
    return parts


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
