"""Messages: atomic outgoing and incoming writes, replay refusal, receipts, listings."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, text

from accord.storage import (
    Conflict,
    Database,
    Direction,
    DuplicateError,
    InvalidValue,
    Message,
    MessageEvent,
    MessagePart,
    MessageStatus,
    NewMessage,
    NotFound,
    OutboxEntry,
    PartRef,
    ReplayedMessage,
    ReplayEntry,
    SchemaMismatch,
    add_event,
    add_receipt,
    get_frames,
    get_message,
    get_messages,
    get_parts,
    get_parts_many,
    get_receipt,
    insert_outgoing,
    insert_outgoing_many,
    list_events,
    list_messages,
    prune_replay,
    record_incoming,
    record_incoming_many,
    set_status,
)
from tests.storage.helpers import (
    MARKING,
    OUR_PARTY,
    PEER_PARTY,
    PURPOSE,
    T0,
    at,
    digest,
    new_message,
    register_peer,
)


def _count(db: Database, model: type[object]) -> int:
    from sqlmodel import func, select

    with db.session(readonly=True) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def _counts(db: Database) -> dict[str, int]:
    return {
        m.__name__: _count(db, m)
        for m in (Message, MessagePart, OutboxEntry, MessageEvent, ReplayEntry)
    }


@pytest.fixture
def peer_db(db: Database) -> Database:
    with db.session() as session:
        register_peer(session)
    return db


def test_insert_outgoing_writes_message_parts_outbox_and_event(peer_db: Database) -> None:
    message = new_message("m-1", parts=3)
    with peer_db.session() as session:
        stored = insert_outgoing(session, message, now=T0)
        assert stored.status is MessageStatus.QUEUED
    with peer_db.session(readonly=True) as session:
        row = get_message(session, "m-1")
        assert (row.direction, row.sender, row.recipient) == (Direction.OUT, OUR_PARTY, PEER_PARTY)
        assert (row.purpose, row.marking, row.created, row.created_at) == (PURPOSE, MARKING, T0, T0)
        assert row.envelope == message.envelope
        assert row.envelope_sha256 == digest(message.envelope)
        assert row.header == message.header
        parts = get_parts(session, "m-1")
        assert [(p.index, p.blob_sha256, p.size) for p in parts] == [
            (i, p.blob_sha256, p.size) for i, p in enumerate(message.parts)
        ]
        outbox = session.get(OutboxEntry, ("m-1", PEER_PARTY))
        assert outbox is not None
        assert (outbox.attempts, outbox.next_attempt_at, outbox.lease_owner) == (0, T0, None)
        assert [(e.event, e.detail) for e in list_events(session, "m-1")] == [
            ("queued", {"peer": PEER_PARTY})
        ]


def test_insert_outgoing_to_unknown_peer_leaves_nothing(db: Database) -> None:
    with db.session() as session, pytest.raises(NotFound):
        insert_outgoing(session, new_message("m-1", recipient="ZZ-UNKNOWN"), now=T0)
    assert set(_counts(db).values()) == {0}


def test_insert_outgoing_is_undone_with_its_transaction(peer_db: Database) -> None:
    with pytest.raises(RuntimeError), peer_db.session() as session:
        insert_outgoing(session, new_message("m-1"), now=T0)
        raise RuntimeError("the node died before commit")
    assert set(_counts(peer_db).values()) == {0}


def test_reused_outgoing_message_id_is_duplicate(peer_db: Database) -> None:
    with peer_db.session() as session:
        insert_outgoing(session, new_message("m-1"), now=T0)
        with pytest.raises(DuplicateError):
            insert_outgoing(session, new_message("m-1", envelope=b"other"), now=at(1))
    assert _counts(peer_db) == {
        "Message": 1,
        "MessagePart": 2,
        "OutboxEntry": 1,
        "MessageEvent": 1,
        "ReplayEntry": 0,
    }


def test_record_incoming_writes_message_parts_replay_and_event(db: Database) -> None:
    message = new_message("in-1", sender=PEER_PARTY, recipient=OUR_PARTY, expires=at(3600))
    with db.session() as session:
        record_incoming(session, message, now=at(5))
    with db.session(readonly=True) as session:
        row = get_message(session, "in-1")
        assert (row.direction, row.status, row.sender) == (
            Direction.IN,
            MessageStatus.RECEIVED,
            PEER_PARTY,
        )
        assert row.expires == at(3600)
        assert len(get_parts(session, "in-1")) == 2
        replay = session.get(ReplayEntry, (PEER_PARTY, "in-1"))
        assert replay is not None
        assert (replay.envelope_sha256, replay.seen_at, replay.expires) == (
            digest(message.envelope),
            at(5),
            at(3600),
        )
        assert [e.event for e in list_events(session, "in-1")] == ["received"]


def test_replayed_message_is_refused_as_duplicate(db: Database) -> None:
    message = new_message("in-1", sender=PEER_PARTY, recipient=OUR_PARTY)
    with db.session() as session:
        record_incoming(session, message, now=T0)
        add_receipt(session, "in-1", envelope=b"signed receipt", verdict="accepted", now=T0)

    # The same delivery again (the sender never saw our answer): refused, and answered
    # with the original receipt.
    with db.session() as session:
        with pytest.raises(DuplicateError) as caught:
            record_incoming(session, message, now=at(60))
        assert isinstance(caught.value, ReplayedMessage)
        assert caught.value.envelope_sha256 == digest(message.envelope)
        assert caught.value.seen_at == T0
        assert get_receipt(session, "in-1").envelope == b"signed receipt"
    assert _counts(db)["MessageEvent"] == 1


def test_replay_with_other_content_is_refused_and_told_apart(db: Database) -> None:
    with db.session() as session:
        record_incoming(session, new_message("in-1", sender=PEER_PARTY), now=T0)
    forged = new_message("in-1", sender=PEER_PARTY, envelope=b"other content, same id")
    with db.session() as session, pytest.raises(ReplayedMessage) as caught:
        record_incoming(session, forged, now=at(1))
    assert caught.value.envelope_sha256 != digest(forged.envelope)
    with db.session(readonly=True) as session:
        assert get_message(session, "in-1").envelope == b"envelope in-1"


def test_replay_refused_after_the_message_is_deleted(db: Database) -> None:
    message = new_message("in-1", sender=PEER_PARTY)
    with db.session() as session:
        record_incoming(session, message, now=T0)
    with db.session() as session:
        session.exec(delete(Message).where(Message.message_id == "in-1"))  # type: ignore[arg-type]
    with db.session() as session, pytest.raises(ReplayedMessage):
        record_incoming(session, message, now=at(1))


def test_message_id_of_another_sender_is_conflict_not_duplicate(db: Database) -> None:
    with db.session() as session:
        record_incoming(session, new_message("in-1", sender=PEER_PARTY), now=T0)
    with db.session() as session, pytest.raises(Conflict) as caught:
        record_incoming(session, new_message("in-1", sender="KZ-MVD"), now=at(1))
    assert not isinstance(caught.value, DuplicateError)


def test_concurrent_duplicate_deliveries_are_recorded_once(db: Database) -> None:
    message = new_message("in-1", sender=PEER_PARTY)
    barrier = threading.Barrier(4)
    outcomes: list[str] = []
    lock = threading.Lock()

    def deliver() -> None:
        barrier.wait()
        try:
            with db.session() as session:
                record_incoming(session, message, now=T0)
            outcome = "recorded"
        except ReplayedMessage:
            outcome = "replay"
        except Exception as e:
            outcome = repr(e)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["recorded", "replay", "replay", "replay"]
    assert _counts(db)["Message"] == 1


def test_replay_refused_after_its_entry_is_pruned_while_the_message_is_kept(db: Database) -> None:
    message = new_message("in-1", sender=PEER_PARTY, expires=at(10))
    with db.session() as session:
        record_incoming(session, message, now=T0)
    with db.session() as session:
        assert prune_replay(session, now=at(11)) == 1
    with db.session() as session, pytest.raises(ReplayedMessage) as caught:
        record_incoming(session, message, now=at(12))
    assert caught.value.envelope_sha256 == digest(message.envelope)


def test_prune_replay_drops_only_expired_entries(db: Database) -> None:
    with db.session() as session:
        record_incoming(session, new_message("old", sender=PEER_PARTY, expires=at(10)), now=T0)
        record_incoming(session, new_message("new", sender=PEER_PARTY), now=T0, replay_until=at(99))
        record_incoming(session, new_message("ever", sender=PEER_PARTY), now=T0)
    with db.session() as session:
        assert prune_replay(session, now=at(50)) == 1
    with db.session(readonly=True) as session:
        assert session.get(ReplayEntry, (PEER_PARTY, "old")) is None
        assert session.get(ReplayEntry, (PEER_PARTY, "new")) is not None
        assert session.get(ReplayEntry, (PEER_PARTY, "ever")) is not None


def test_refused_incoming_message_is_recorded_with_its_status(db: Database) -> None:
    with db.session() as session:
        record_incoming(
            session, new_message("in-1", sender=PEER_PARTY), now=T0, status=MessageStatus.REFUSED
        )
        with pytest.raises(InvalidValue):
            record_incoming(
                session,
                new_message("in-2", sender=PEER_PARTY),
                now=T0,
                status=MessageStatus.DELIVERED,
            )
    with db.session(readonly=True) as session:
        assert get_message(session, "in-1").status is MessageStatus.REFUSED


def test_inbox_and_sent_listings_newest_first(peer_db: Database) -> None:
    with peer_db.session() as session:
        for n in range(5):
            record_incoming(session, new_message(f"in-{n}", sender=PEER_PARTY), now=at(n))
        for n in range(3):
            insert_outgoing(session, new_message(f"out-{n}"), now=at(10 + n))
    with peer_db.session(readonly=True) as session:
        inbox = [m.message_id for m in list_messages(session, Direction.IN)]
        assert inbox == ["in-4", "in-3", "in-2", "in-1", "in-0"]
        page = list_messages(session, Direction.IN, limit=2, offset=1)
        assert [m.message_id for m in page] == ["in-3", "in-2"]
        sent = [m.message_id for m in list_messages(session, Direction.OUT, limit=10)]
        assert sent == ["out-2", "out-1", "out-0"]
        assert list_messages(session, Direction.IN, offset=5) == []


def test_listing_bounds_refused(db: Database) -> None:
    with db.session(readonly=True) as session:
        for limit, offset in [(0, 0), (10_000, 0), (10, -1)]:
            with pytest.raises(InvalidValue):
                list_messages(session, Direction.IN, limit=limit, offset=offset)


def test_status_timeline(peer_db: Database) -> None:
    with peer_db.session() as session:
        insert_outgoing(session, new_message("m-1"), now=T0)
        add_event(session, "m-1", "signed", now=at(1), detail={"by": "Иванов И.И."})
        set_status(session, "m-1", MessageStatus.FAILED, now=at(2), detail={"why": "отказ"})
        with pytest.raises(NotFound):
            add_event(session, "nobody", "signed", now=at(3))
    with peer_db.session(readonly=True) as session:
        events = list_events(session, "m-1")
        assert [(e.event, e.at, e.detail) for e in events] == [
            ("queued", T0, {"peer": PEER_PARTY}),
            ("signed", at(1), {"by": "Иванов И.И."}),
            ("failed", at(2), {"why": "отказ"}),
        ]
        message = get_message(session, "m-1")
        assert (message.status, message.updated_at) == (MessageStatus.FAILED, at(2))


def test_receipt_is_idempotent_and_cannot_be_replaced(peer_db: Database) -> None:
    with peer_db.session() as session:
        insert_outgoing(session, new_message("m-1"), now=T0)
        with pytest.raises(NotFound):
            get_receipt(session, "m-1")
        add_receipt(session, "m-1", envelope=b"receipt", verdict="accepted", now=at(1))
        again = add_receipt(session, "m-1", envelope=b"receipt", verdict="accepted", now=at(2))
        assert again.received_at == at(1)
        with pytest.raises(DuplicateError):
            add_receipt(session, "m-1", envelope=b"another", verdict="refused", now=at(3))
        with pytest.raises(NotFound):
            add_receipt(session, "nobody", envelope=b"r", verdict="accepted", now=at(3))
    with peer_db.session(readonly=True) as session:
        receipt = get_receipt(session, "m-1")
        assert (receipt.envelope, receipt.verdict) == (b"receipt", "accepted")


def test_envelope_bytes_are_stored_verbatim(db: Database) -> None:
    envelope = bytes(range(256)) * 4 + "подпись".encode()
    with db.session() as session:
        record_incoming(session, new_message("in-1", sender=PEER_PARTY, envelope=envelope), now=T0)
    with db.session(readonly=True) as session:
        row = get_message(session, "in-1")
    assert row.envelope == envelope
    assert row.envelope_sha256 == digest(envelope)


@pytest.mark.parametrize(
    ("sha256", "size"), [("A" * 64, 1), ("a" * 63, 1), ("../etc/passwd", 1), ("a" * 64, -1)]
)
def test_malformed_part_reference_refused(sha256: str, size: int) -> None:
    with pytest.raises(InvalidValue):
        PartRef(sha256, size)


def test_naive_message_times_refused() -> None:
    with pytest.raises(InvalidValue):
        new_message("m", expires=T0.replace(tzinfo=None) + timedelta(days=1))


def test_status_unknown_to_this_release_is_schema_mismatch(db: Database) -> None:
    with db.session() as session:
        record_incoming(session, new_message("in-1", sender=PEER_PARTY), now=T0)
    # A newer release, sharing the PostgreSQL database, wrote a status this one lacks.
    with db.engine.begin() as connection:
        connection.execute(text("UPDATE messages SET status = 'archived'"))
    with db.session(readonly=True) as session, pytest.raises(SchemaMismatch):
        get_message(session, "in-1")


def test_small_part_is_stored_inline_with_its_message(db: Database) -> None:
    import dataclasses
    import hashlib

    from accord.storage import PartRef, get_parts

    body = "зашифрованное тело".encode()
    inline = PartRef(hashlib.sha256(body).hexdigest(), len(body), body)
    message = dataclasses.replace(new_message("inline-1"), parts=[inline])
    with db.session() as session:
        register_peer(session)
        insert_outgoing(session, message, now=T0)
    with db.session(readonly=True) as session:
        (part,) = get_parts(session, "inline-1")
    assert part.data == body
    assert part.blob_sha256 == inline.blob_sha256


def test_inline_part_that_does_not_match_its_digest_refused() -> None:
    import hashlib

    from accord.storage import DigestMismatch, PartRef

    with pytest.raises(DigestMismatch):
        PartRef(hashlib.sha256(b"signed").hexdigest(), 6, b"forged")


# --- Batch writes: the same guarantees per message, one statement per table ------------


def test_insert_outgoing_many_queues_every_message(peer_db: Database) -> None:
    messages = [new_message(f"m-{n}", parts=2) for n in range(3)]
    with peer_db.session() as session:
        assert insert_outgoing_many(session, messages, now=T0) == [None, None, None]
    assert _counts(peer_db) == {
        "Message": 3,
        "MessagePart": 6,
        "OutboxEntry": 3,
        "MessageEvent": 3,
        "ReplayEntry": 0,
    }
    with peer_db.session(readonly=True) as session:
        row = get_message(session, "m-1")
        assert (row.status, row.marking, row.purpose) == (MessageStatus.QUEUED, MARKING, PURPOSE)
        assert [(e.event, e.detail) for e in list_events(session, "m-1")] == [
            ("queued", {"peer": PEER_PARTY})
        ]


def test_insert_outgoing_many_bad_message_fails_alone(peer_db: Database) -> None:
    """DESIGN 6: one message whose peer is unknown, and one reusing an id, are refused
    alone; the rest of the batch is queued, and the refused ones leave nothing behind."""
    with peer_db.session() as session:
        insert_outgoing(session, new_message("m-old"), now=T0)
    batch = [
        new_message("m-1"),
        new_message("m-2", recipient="ZZ-UNKNOWN"),
        new_message("m-old", envelope=b"reused id"),
        new_message("m-3"),
        new_message("m-3", envelope=b"the same id twice in one batch"),
    ]
    with peer_db.session() as session:
        results = insert_outgoing_many(session, batch, now=at(1))
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NotFound",
        "DuplicateError",
        "NoneType",
        "DuplicateError",
    ]
    with peer_db.session(readonly=True) as session:
        assert get_message(session, "m-old").envelope == b"envelope m-old"
        assert get_message(session, "m-3").envelope == b"envelope m-3"
        with pytest.raises(NotFound):
            get_message(session, "m-2")
    assert _counts(peer_db)["OutboxEntry"] == 3


def _incoming(message_id: str, **kwargs: Any) -> NewMessage:
    return new_message(message_id, sender=PEER_PARTY, recipient=OUR_PARTY, **kwargs)


def test_record_incoming_many_records_messages_receipts_and_replay_entries(db: Database) -> None:
    batch = [_incoming(f"in-{n}", expires=at(3600)) for n in range(3)]
    receipts = [f"квитанция {n}".encode() for n in range(3)]
    with db.session() as session:
        assert record_incoming_many(session, batch, receipts=receipts, now=at(5)) == [None] * 3
    with db.session(readonly=True) as session:
        assert get_receipt(session, "in-2").envelope == "квитанция 2".encode()
        entry = session.get(ReplayEntry, (PEER_PARTY, "in-1"))
        assert entry is not None and (entry.seen_at, entry.expires) == (at(5), at(3600))
        assert [e.event for e in list_events(session, "in-0")] == ["received"]
        assert get_message(session, "in-0").direction is Direction.IN
    assert _counts(db)["MessagePart"] == 6


def test_attack_replays_inside_a_batch_are_refused_each_alone(db: Database) -> None:
    """Art. 7 / DESIGN 6: a batch mixing a redelivery, a replay of a recorded id with other
    content, an id another sender used, and the same message twice records only the fresh
    message once; each refusal names what it was."""
    original = _incoming("in-1")
    with db.session() as session:
        record_incoming(session, original, now=T0)
        add_receipt(session, "in-1", envelope=b"original receipt", verdict="accepted", now=T0)
        record_incoming(session, new_message("in-kz", sender="KZ-MVD"), now=T0)
    batch = [
        original,
        _incoming("in-1", envelope=b"forged content, same id"),
        _incoming("in-kz"),
        _incoming("in-2"),
        _incoming("in-2"),
    ]
    with db.session() as session:
        results = record_incoming_many(session, batch, receipts=[b"r"] * 5, now=at(1))
    redelivery, forged, other_sender, fresh, twice = results
    assert isinstance(redelivery, ReplayedMessage)
    assert redelivery.envelope_sha256 == digest(original.envelope)
    assert isinstance(forged, ReplayedMessage)
    assert forged.envelope_sha256 != digest(b"forged content, same id")
    assert isinstance(other_sender, Conflict) and not isinstance(other_sender, DuplicateError)
    assert fresh is None
    assert isinstance(twice, ReplayedMessage)
    with db.session(readonly=True) as session:
        assert get_receipt(session, "in-1").envelope == b"original receipt"
        assert get_message(session, "in-1").envelope == original.envelope
    assert _counts(db)["Message"] == 3


def test_attack_concurrent_batches_delivering_the_same_messages_record_them_once(
    db: Database,
) -> None:
    """Two replicas (or two requests) record the same batch at once: every message is
    recorded once, the other attempt sees a replay, never an error."""
    batch = [_incoming(f"in-{n}") for n in range(8)]
    barrier = threading.Barrier(3)
    outcomes: list[list[str]] = []
    lock = threading.Lock()

    def deliver() -> None:
        barrier.wait()
        with db.session() as session:
            results = record_incoming_many(session, batch, receipts=[b"r"] * 8, now=T0)
        with lock:
            outcomes.append([type(r).__name__ for r in results])

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == 3
    for n in range(8):
        assert sorted(o[n] for o in outcomes) == ["NoneType", "ReplayedMessage", "ReplayedMessage"]
    assert _counts(db)["Message"] == 8


def test_batch_reads_return_messages_and_parts_in_order(peer_db: Database) -> None:
    with peer_db.session() as session:
        insert_outgoing_many(session, [new_message(f"m-{n}", parts=3) for n in range(2)], now=T0)
    with peer_db.session(readonly=True) as session:
        rows = get_messages(session, ["m-0", "m-1", "m-unknown"])
        parts = get_parts_many(session, ["m-1", "m-0"])
    assert sorted(rows) == ["m-0", "m-1"]
    assert [p.index for p in parts["m-1"]] == [0, 1, 2]
    with peer_db.session(readonly=True) as session:
        frames = get_frames(session, ["m-1", "m-unknown"])
        assert get_frames(session, []) == {}
    assert frames == {"m-1": (rows["m-1"].envelope, rows["m-1"].header)}
    assert {p.message_id for p in parts["m-0"]} == {"m-0"}
