"""Outbox leasing: due rows, lease expiry, outcomes, and no row leased twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from accord.storage import (
    Database,
    DuplicateError,
    InvalidValue,
    LeaseLost,
    MessageStatus,
    OutboxEntry,
    Outcome,
    add_receipt,
    complete,
    fail,
    get_message,
    get_receipt,
    insert_outgoing,
    lease_due,
    list_events,
    retry_later,
    settle,
)
from tests.storage.helpers import PEER_PARTY, T0, at, new_message, register_peer

LEASE = 30.0


@pytest.fixture
def queued(db: Database) -> Database:
    """A database with a peer and five queued messages, due at T0+0..4 s."""
    with db.session() as session:
        register_peer(session)
        for n in range(5):
            insert_outgoing(session, new_message(f"m-{n}"), now=T0, first_attempt_at=at(n))
    return db


def _lease(db: Database, owner: str, seconds: float, limit: int = 10) -> list[OutboxEntry]:
    with db.session() as session:
        return lease_due(session, owner, at(seconds), limit, LEASE)


def test_lease_takes_due_rows_oldest_first(queued: Database) -> None:
    leased = _lease(queued, "worker-a", 2.5)
    assert [e.message_id for e in leased] == ["m-0", "m-1", "m-2"]
    assert {(e.lease_owner, e.attempts, e.leased_until) for e in leased} == {
        ("worker-a", 1, at(2.5 + LEASE))
    }
    with queued.session(readonly=True) as session:
        assert get_message(session, "m-0").status is MessageStatus.SENDING
        assert get_message(session, "m-4").status is MessageStatus.QUEUED
    # Leased rows are not due for anyone else while the lease runs.
    assert [e.message_id for e in _lease(queued, "worker-b", 4)] == ["m-3", "m-4"]
    assert _lease(queued, "worker-b", 5) == []


def test_lease_respects_the_limit(queued: Database) -> None:
    assert [e.message_id for e in _lease(queued, "w", 10, limit=2)] == ["m-0", "m-1"]


def test_expired_lease_is_taken_again_and_counts_the_attempt(queued: Database) -> None:
    first = _lease(queued, "worker-a", 0, limit=1)
    # worker-a was killed mid-send; once its lease runs out the row is due again.
    assert _lease(queued, "worker-b", LEASE - 1, limit=1)[0].message_id == "m-1"
    again = _lease(queued, "worker-b", LEASE, limit=1)
    assert [(e.message_id, e.attempts, e.lease_owner) for e in again] == [("m-0", 2, "worker-b")]
    # The first worker comes back: its lease is gone.
    with queued.session() as session, pytest.raises(LeaseLost):
        complete(session, first[0], now=at(LEASE + 1))
    with queued.session() as session:
        complete(session, again[0], now=at(LEASE + 2))


def test_complete_marks_delivered_and_removes_the_row(queued: Database) -> None:
    (entry,) = _lease(queued, "w", 0)
    with queued.session() as session:
        complete(session, entry, now=at(1))
    with queued.session(readonly=True) as session:
        assert session.get(OutboxEntry, ("m-0", PEER_PARTY)) is None
        message = get_message(session, "m-0")
        assert (message.status, message.updated_at) == (MessageStatus.DELIVERED, at(1))
        assert [(e.event, e.detail) for e in list_events(session, "m-0")] == [
            ("queued", {"peer": PEER_PARTY}),
            ("delivered", {"peer": PEER_PARTY, "attempts": 1}),
        ]
    with queued.session() as session, pytest.raises(LeaseLost):
        complete(session, entry, now=at(2))


def test_retry_later_releases_and_reschedules(queued: Database) -> None:
    (entry,) = _lease(queued, "w", 0)
    with queued.session() as session:
        retry_later(
            session, entry, next_attempt_at=at(60), error="пир недоступен: timeout", now=at(1)
        )
    with queued.session(readonly=True) as session:
        row = session.get(OutboxEntry, ("m-0", PEER_PARTY))
        assert row is not None
        assert (row.attempts, row.next_attempt_at, row.lease_owner, row.leased_until) == (
            1,
            at(60),
            None,
            None,
        )
        assert row.last_error == "пир недоступен: timeout"
        assert get_message(session, "m-0").status is MessageStatus.QUEUED
        assert list_events(session, "m-0")[-1].event == "retry"
    assert "m-0" not in [e.message_id for e in _lease(queued, "w", 59)]
    assert [(e.message_id, e.attempts) for e in _lease(queued, "w", 60)] == [("m-0", 2)]
    # The released lease cannot be used again.
    with queued.session() as session, pytest.raises(LeaseLost):
        complete(session, entry, now=at(61))


def test_fail_gives_up(queued: Database) -> None:
    (entry,) = _lease(queued, "w", 0)
    with queued.session() as session:
        fail(session, entry, error="отказ пира", now=at(1))
    with queued.session(readonly=True) as session:
        assert session.get(OutboxEntry, ("m-0", PEER_PARTY)) is None
        assert get_message(session, "m-0").status is MessageStatus.FAILED
        last = list_events(session, "m-0")[-1]
        assert (last.event, last.detail["error"]) == ("failed", "отказ пира")


def test_lease_refused_in_readonly_session(queued: Database) -> None:
    with queued.session(readonly=True) as session, pytest.raises(InvalidValue):
        lease_due(session, "w", at(10), 10, LEASE)


def test_lease_arguments_checked(queued: Database) -> None:
    with queued.session() as session:
        for owner, limit, seconds in [("", 1, 1.0), ("w", 0, 1.0), ("w", 1, 0.0)]:
            with pytest.raises(InvalidValue):
                lease_due(session, owner, at(10), limit, seconds)
        with pytest.raises(InvalidValue):
            lease_due(session, "w", at(10).replace(tzinfo=None), 1, 1.0)


def test_concurrent_leasers_never_share_a_row(db: Database) -> None:
    total = 60
    with db.session() as session:
        register_peer(session)
        for n in range(total):
            insert_outgoing(session, new_message(f"m-{n:03d}", parts=0), now=T0)

    barrier = threading.Barrier(2)
    taken: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def leaser(owner: str) -> None:
        try:
            barrier.wait()
            while True:
                with db.session() as session:
                    rows = lease_due(session, owner, at(1), 4, LEASE)
                    # Hold the transaction (and on PostgreSQL the row locks) a moment so
                    # the two leasers overlap.
                    time.sleep(0.005)
                if not rows:
                    return
                taken[owner].extend(r.message_id for r in rows)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=leaser, args=(owner,)) for owner in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    counts = Counter(taken["a"] + taken["b"])
    assert [m for m, n in counts.items() if n > 1] == []
    assert len(counts) == total
    if db.dialect == "postgresql":
        # SKIP LOCKED lets both make progress at once. (SQLite serialises them and its busy
        # handler is not fair, so one of them may take everything there.)
        assert taken["a"]
        assert taken["b"]


@pytest.mark.postgres
def test_postgresql_leaser_skips_rows_locked_by_an_open_lease(postgres_migrated_url: str) -> None:
    # Deterministic form of the test above: worker A has selected its rows and not yet
    # committed; worker B, at the same instant, must take other rows without waiting.
    with Database.open(postgres_migrated_url) as db:
        with db.session() as session:
            register_peer(session)
            for n in range(4):
                insert_outgoing(session, new_message(f"m-{n}"), now=T0)
        with db.session() as session_a:
            held = lease_due(session_a, "a", at(1), 2, LEASE)
            started = time.monotonic()
            with db.session() as session_b:
                other = lease_due(session_b, "b", at(1), 10, LEASE)
            assert time.monotonic() - started < 5
        assert [r.message_id for r in held] == ["m-0", "m-1"]
        assert [r.message_id for r in other] == ["m-2", "m-3"]


def test_restarted_worker_takes_back_its_leases(queued: Database) -> None:
    # A worker killed mid-delivery (kill -9) held leases; its next run releases them at
    # once instead of waiting for them to expire. Another owner's leases stay held.
    from accord.storage import release_leases

    _lease(queued, "node-a", 1.5)  # m-0, m-1
    _lease(queued, "node-b", 2.5)  # m-2
    with queued.session() as session:
        assert release_leases(session, "node-a") == 2
    assert [e.message_id for e in _lease(queued, "node-a", 3)] == ["m-0", "m-1", "m-3"]
    with queued.session() as session:
        assert release_leases(session, "nobody") == 0


def test_settle_applies_a_whole_batch_in_one_transaction(queued: Database) -> None:
    """DESIGN 5 and 6: delivered (receipt stored), retried and given-up rows of one batch
    are settled together; a row whose lease another worker holds is left alone."""
    leased = _lease(queued, "w", 10, limit=4)
    stolen = _lease(queued, "other", 10, limit=1)[0]
    d0, d1, r2, f3 = leased
    outcomes = [
        Outcome(lease=d0, kind="delivered", receipt="квитанция m-0".encode()),
        Outcome(lease=d1, kind="delivered", receipt=b"receipt m-1"),
        Outcome(lease=r2, kind="retry", error="пир недоступен", next_attempt_at=at(100)),
        Outcome(lease=f3, kind="failed", error="refused by the peer"),
        # A forged claim on the row another worker leased.
        Outcome(
            lease=OutboxEntry(
                message_id=stolen.message_id,
                peer=stolen.peer,
                attempts=stolen.attempts,
                next_attempt_at=stolen.next_attempt_at,
                lease_owner="w",
            ),
            kind="delivered",
        ),
    ]
    with queued.session() as session:
        results = settle(session, outcomes, now=at(11))
    assert [type(r).__name__ for r in results] == ["NoneType"] * 4 + ["LeaseLost"]
    with queued.session(readonly=True) as session:
        statuses = {m: get_message(session, m).status for m in ("m-0", "m-1", "m-2", "m-3", "m-4")}
        assert statuses == {
            "m-0": MessageStatus.DELIVERED,
            "m-1": MessageStatus.DELIVERED,
            "m-2": MessageStatus.QUEUED,
            "m-3": MessageStatus.FAILED,
            "m-4": MessageStatus.SENDING,
        }
        assert get_receipt(session, "m-0").envelope == "квитанция m-0".encode()
        retried = session.get(OutboxEntry, ("m-2", PEER_PARTY))
        assert retried is not None
        assert (retried.next_attempt_at, retried.lease_owner, retried.last_error) == (
            at(100),
            None,
            "пир недоступен",
        )
        assert session.get(OutboxEntry, ("m-0", PEER_PARTY)) is None
        assert session.get(OutboxEntry, ("m-3", PEER_PARTY)) is None
        still = session.get(OutboxEntry, ("m-4", PEER_PARTY))
        assert still is not None and still.lease_owner == "other"
        assert [e.event for e in list_events(session, "m-4")] == ["queued"]
        assert list_events(session, "m-3")[-1].detail == {
            "peer": PEER_PARTY,
            "attempts": 1,
            "error": "refused by the peer",
        }


def test_attack_settling_with_a_different_receipt_is_refused(queued: Database) -> None:
    """A stored receipt is evidence (DESIGN 5): a second, different one for the same
    message is not stored over it, and the row is left for its lease to expire."""
    (first,) = _lease(queued, "w", 0, limit=1)
    with queued.session() as session:
        settle(session, [Outcome(lease=first, kind="retry", next_attempt_at=at(1))], now=at(0))
        add_receipt(session, "m-0", envelope=b"the original", verdict="accepted", now=at(0))
    (again,) = _lease(queued, "w", 1, limit=1)
    with queued.session() as session:
        (result,) = settle(
            session, [Outcome(lease=again, kind="delivered", receipt=b"another")], now=at(2)
        )
    assert isinstance(result, DuplicateError)
    with queued.session(readonly=True) as session:
        assert get_receipt(session, "m-0").envelope == b"the original"
        assert get_message(session, "m-0").status is MessageStatus.SENDING


def test_settle_refuses_a_lease_twice_in_one_batch(queued: Database) -> None:
    (entry,) = _lease(queued, "w", 0, limit=1)
    with queued.session() as session, pytest.raises(InvalidValue):
        settle(
            session,
            [Outcome(lease=entry, kind="delivered"), Outcome(lease=entry, kind="failed")],
            now=at(1),
        )
