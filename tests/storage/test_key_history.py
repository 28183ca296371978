"""The key history: overlap windows, key events kept for ever, announcement queue."""

from __future__ import annotations

import pytest

from accord.storage import (
    Database,
    InvalidValue,
    KeyKind,
    KeyStatus,
    NotFound,
    add_key,
    expire_overlaps,
    find_peer_by_certificate,
    get_key,
    list_key_events,
    mark_announcement,
    overlap_key,
    pending_announcements,
    queue_announcement,
    record_key_event,
    revoke_key,
    statement_applied,
)
from tests.storage.helpers import PEER_PARTY, T0, at, digest, register_peer

PUBLIC = {"alg": "ed25519", "public": "AAAA"}


def _key(session, key_id: str, kind: KeyKind = KeyKind.SEAL, owner: str = PEER_PARTY):
    return add_key(
        session, key_id=key_id, kind=kind, owner=owner, public=PUBLIC, store_ref=None,
        not_before=T0,
    )  # fmt: skip


def test_overlap_then_retired_when_the_window_ends(db: Database) -> None:
    with db.session() as session:
        _key(session, digest(b"old"))
        overlap_key(session, digest(b"old"), until=at(7 * 24 * 3600))
        assert expire_overlaps(session, now=at(3600)) == []
        assert get_key(session, digest(b"old")).status is KeyStatus.OVERLAP
        ended = expire_overlaps(session, now=at(7 * 24 * 3600))
        assert [k.key_id for k in ended] == [digest(b"old")]
        assert get_key(session, digest(b"old")).status is KeyStatus.RETIRED


def test_attack_rotating_a_revoked_key_back_into_overlap_is_refused(db: Database) -> None:
    with db.session() as session:
        _key(session, digest(b"k"))
        revoke_key(session, digest(b"k"), reason="утечка ключа", now=at(10))
        with pytest.raises(InvalidValue, match="revoked"):
            overlap_key(session, digest(b"k"), until=at(100))


def test_key_events_are_kept_and_recognise_a_replayed_statement(db: Database) -> None:
    with db.session() as session:
        key = _key(session, digest(b"k"))
        record_key_event(
            session, event="peer-rotation-applied", key=key, actor=PEER_PARTY, now=at(5),
            reason="плановая смена", statement_sha256=digest(b"statement"),
        )  # fmt: skip
    with db.session(readonly=True) as session:
        (event,) = list_key_events(session, key_id=digest(b"k"))
        assert (event.event, event.actor, event.reason) == (
            "peer-rotation-applied", PEER_PARTY, "плановая смена",
        )  # fmt: skip
        assert statement_applied(session, digest(b"statement"))
        assert not statement_applied(session, digest(b"other"))


def test_a_rotated_tls_certificate_names_its_peer_while_usable(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        new_cert = digest(b"new-cert")
        with pytest.raises(NotFound):
            find_peer_by_certificate(session, new_cert)
        _key(session, new_cert, KeyKind.TLS)
        assert find_peer_by_certificate(session, new_cert).party_id == PEER_PARTY
        revoke_key(session, new_cert, reason="отозван", now=at(1))
        with pytest.raises(NotFound):
            find_peer_by_certificate(session, new_cert)


def test_announcements_queue_until_sent(db: Database) -> None:
    with db.session() as session:
        first = queue_announcement(
            session, peer=PEER_PARTY, payload_type="t", envelope="{}", now=T0
        )
        queue_announcement(session, peer="другой", payload_type="t", envelope="{}", now=T0)
        assert first.id is not None
        mark_announcement(session, first.id, now=at(1), error="peer down")
        assert [a.id for a in pending_announcements(session, peer=PEER_PARTY)] == [first.id]
        mark_announcement(session, first.id, now=at(2))
        assert pending_announcements(session, peer=PEER_PARTY) == []
        assert len(pending_announcements(session)) == 1
        assert first.attempts == 2 and first.sent_at == at(2)
