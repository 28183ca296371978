"""The key lifecycle on real homes (issue 5; DESIGN 8): rotation, revocation, history,
passphrase change, doctor, and the attacks on key-change statements.

Two nodes, A and B, trust each other; what A queues for B is applied to B's registry the
way B's peer API does it (`apply_peer_statement`), without the network (the end-to-end
path over mutual TLS is in tests/integration/test_key_rotation.py).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accord.crypto import Envelope, KeyFileError, SigningKey, load_private_key
from accord.crypto.envelope import sign_envelope
from accord.crypto.rotation import ROTATION_TYPE, RotatedKind, RotationStatement
from accord.crypto.sealed import STATEMENT_TYPE
from accord.gateway.admin import home as _admin
from accord.gateway.admin.home import AdminError
from accord.gateway.keys import lifecycle as _keys
from accord.gateway.keys.lifecycle import KeyChangeRefused, apply_peer_statement, load_key_ring
from accord.gateway.keys.store import KeyStoreError, NodeKeys, load_signatory
from accord.storage import (
    KeyKind,
    KeyStatus,
    find_peer_by_certificate,
    get_key,
    get_peer,
    list_key_events,
    pending_announcements,
)
from accord.storage import list_keys as stored_keys
from accord.storage import revoke_key as store_revoke

from .test_admin import CHEAP, NOW, PARTY_A, PARTY_B, Node, make_node, open_db


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Node, Node]:
    a = make_node(tmp_path / "a", PARTY_A, port=9443)
    b = make_node(tmp_path / "b", PARTY_B, port=9543, passphrase="пароль узла Б".encode())
    a_desc = _admin.export_descriptor(a.home, a.passphrase, NOW)
    b_desc = _admin.export_descriptor(b.home, b.passphrase, NOW)
    _admin.add_peer(b.home, a_desc, fingerprint=a.init.fingerprint, now=NOW)
    _admin.add_peer(a.home, b_desc, fingerprint=b.init.fingerprint, now=NOW)
    return a, b


def queued(node: Node) -> list[Envelope]:
    with open_db(node) as db, db.session(readonly=True) as session:
        return [Envelope.from_bytes(a.envelope.encode()) for a in pending_announcements(session)]


def deliver(envelope: Envelope, to: Node, *, sender: str = PARTY_A, now=NOW) -> str:
    with open_db(to) as db, db.session() as session:
        return apply_peer_statement(session, sender, envelope, now)


def keys_of(node: Node, owner: str, kind: KeyKind) -> dict[str, KeyStatus]:
    with open_db(node) as db, db.session(readonly=True) as session:
        return {k.key_id: k.status for k in stored_keys(session, owner=owner, kind=kind)}


def rotate(node: Node, kind: str, *, now=NOW, days: float = 7):
    return _keys.rotate(
        node.home, kind, passphrase=node.passphrase, now=now, overlap=timedelta(days=days),
        kdf_cost=CHEAP,
    )  # fmt: skip


def test_seal_rotation_moves_the_old_key_to_its_overlap_and_announces_it(pair) -> None:
    a, b = pair
    old_seal = NodeKeys.load(a.home, a.passphrase).seal.key_id
    result = rotate(a, "seal", now=NOW + timedelta(hours=1))
    assert result.old_key_id == old_seal and result.announced_to == (PARTY_B,)
    # On A: the new seal is the key file in place, the old one is kept in keys/history.
    assert NodeKeys.load(a.home, a.passphrase).seal.key_id == result.new_key_id
    assert keys_of(a, PARTY_A, KeyKind.SEAL) == {
        old_seal: KeyStatus.OVERLAP, result.new_key_id: KeyStatus.ACTIVE,
    }  # fmt: skip
    with open_db(a) as db, db.session(readonly=True) as session:
        old = get_key(session, old_seal)
        assert old.not_after == NOW + timedelta(hours=1, days=7)
        assert old.store_ref is not None and "history" in old.store_ref
        assert load_private_key(Path(old.store_ref).read_bytes(), a.passphrase).key_id == old_seal
        events = [(e.event, e.key_id) for e in list_key_events(session, owner=PARTY_A)]
    assert ("rotated-out", old_seal) in events and ("rotated-in", result.new_key_id) in events
    # On B, once the statement arrives: the new seal is trusted, the old one in overlap.
    (statement,) = queued(a)
    assert statement.payload_type == ROTATION_TYPE
    assert deliver(statement, b, now=NOW + timedelta(hours=1)) == "applied"
    assert keys_of(b, PARTY_A, KeyKind.SEAL) == {
        old_seal: KeyStatus.OVERLAP, result.new_key_id: KeyStatus.ACTIVE,
    }  # fmt: skip
    # The new descriptor exports, signed by the new seal.
    descriptor = _admin.read_descriptor(
        _admin.export_descriptor(a.home, a.passphrase, NOW + timedelta(hours=2))
    )
    assert descriptor.seal.key_id == result.new_key_id


def test_attack_rotation_statement_replayed_after_a_later_rotation_is_refused(pair) -> None:
    a, b = pair
    first = rotate(a, "seal", now=NOW + timedelta(hours=1))
    (s1,) = queued(a)
    assert deliver(s1, b, now=NOW + timedelta(hours=1)) == "applied"
    # A redelivery (our answer was lost) is acknowledged and changes nothing.
    assert deliver(s1, b, now=NOW + timedelta(hours=1)) == "unchanged"
    with open_db(a) as db, db.session() as session:
        from accord.storage import mark_announcement

        for row in pending_announcements(session):
            assert row.id is not None
            mark_announcement(session, row.id, now=NOW + timedelta(hours=1))
    second = rotate(a, "seal", now=NOW + timedelta(hours=2))
    (s2,) = queued(a)
    assert deliver(s2, b, now=NOW + timedelta(hours=2)) == "applied"
    before = keys_of(b, PARTY_A, KeyKind.SEAL)
    with pytest.raises(KeyChangeRefused, match="superseded"):
        deliver(s1, b, now=NOW + timedelta(hours=3))
    assert keys_of(b, PARTY_A, KeyKind.SEAL) == before
    assert before[second.new_key_id] is KeyStatus.ACTIVE
    assert before[first.new_key_id] is KeyStatus.OVERLAP


def test_attack_forged_rotation_statement_is_refused(pair) -> None:
    a, b = pair
    a_seal = NodeKeys.load(a.home, a.passphrase).seal
    mallory, mallory_next = SigningKey.generate(), SigningKey.generate()
    # Mallory names A's seal as the old key but cannot sign with it.
    statement = RotationStatement(
        PARTY_A, RotatedKind.SEAL, a_seal.key_id, mallory_next.verify_key().to_dict(),
        NOW, NOW + timedelta(days=7), NOW,
    )  # fmt: skip
    forged = sign_envelope(ROTATION_TYPE, statement.to_payload(), [mallory, mallory_next])
    before = keys_of(b, PARTY_A, KeyKind.SEAL)
    with pytest.raises(KeyChangeRefused, match="missing required"):
        deliver(forged, b)
    # B's own seal speaking for A (a peer cannot rotate another Party's keys).
    with pytest.raises(KeyChangeRefused):
        deliver(forged, b, sender=PARTY_B)
    assert keys_of(b, PARTY_A, KeyKind.SEAL) == before


def test_attack_rotation_signed_by_a_revoked_key_is_refused(pair) -> None:
    a, b = pair
    old_seal = NodeKeys.load(a.home, a.passphrase).seal
    rotate(a, "seal", now=NOW + timedelta(hours=1))
    revoked = _keys.revoke(
        a.home, old_seal.key_id, reason="ключ похищен", passphrase=a.passphrase,
        now=NOW + timedelta(hours=2),
    )  # fmt: skip
    assert revoked.announced_to == (PARTY_B,)
    rotation, revocation = queued(a)
    deliver(rotation, b, now=NOW + timedelta(hours=1))
    assert deliver(revocation, b, now=NOW + timedelta(hours=2)) == "applied"
    with open_db(b) as db, db.session(readonly=True) as session:
        key = get_key(session, old_seal.key_id)
        assert (key.status, key.reason) == (KeyStatus.REVOKED, "ключ похищен")
    # The thief now announces a seal of his own, signed with the stolen key, backdated to
    # before the revocation.
    thief_next = SigningKey.generate()
    with open_db(b) as db, db.session(readonly=True) as session:
        active = [k.key_id for k in stored_keys(session, owner=PARTY_A, kind=KeyKind.SEAL)
                  if k.status is KeyStatus.ACTIVE]  # fmt: skip
    statement = RotationStatement(
        PARTY_A, RotatedKind.SEAL, old_seal.key_id, thief_next.verify_key().to_dict(),
        NOW + timedelta(minutes=30), NOW + timedelta(days=7), NOW + timedelta(minutes=30),
    )  # fmt: skip
    with pytest.raises(KeyChangeRefused, match="no key"):
        deliver(statement.sign(old_seal, thief_next), b, now=NOW + timedelta(hours=3))
    assert [k for k, s in keys_of(b, PARTY_A, KeyKind.SEAL).items() if s is KeyStatus.ACTIVE] == (
        active
    )


def test_revoking_the_active_seal_is_refused_until_rotated(pair) -> None:
    a, _ = pair
    seal = NodeKeys.load(a.home, a.passphrase).seal.key_id
    with pytest.raises(AdminError, match="Rotate it first"):
        _keys.revoke(a.home, seal, reason="тест", passphrase=a.passphrase, now=NOW)
    with pytest.raises(AdminError, match="reason"):
        _keys.revoke(a.home, seal, reason="  ", passphrase=a.passphrase, now=NOW)
    assert keys_of(a, PARTY_A, KeyKind.SEAL) == {seal: KeyStatus.ACTIVE}


def test_attack_revoked_seal_on_disk_signs_nothing(pair) -> None:
    a, _ = pair
    seal = NodeKeys.load(a.home, a.passphrase).seal.key_id
    with open_db(a) as db:
        with db.session() as session:
            store_revoke(session, seal, reason="похищен", now=NOW)
        with pytest.raises(KeyStoreError, match="revoked"):
            load_key_ring(a.home, db, a.passphrase, NOW)


def test_encryption_rotation_keeps_the_old_key_in_the_ring_for_the_window(pair) -> None:
    a, _ = pair
    old = NodeKeys.load(a.home, a.passphrase).encryption.key_id
    result = rotate(a, "encryption", now=NOW, days=3)
    with open_db(a) as db:
        ring = load_key_ring(a.home, db, a.passphrase, NOW + timedelta(days=1))
        assert ring.encryption.key_ids == (result.new_key_id, old)  # type: ignore[attr-defined]
        with db.session() as session:
            from accord.storage import expire_overlaps

            expire_overlaps(session, now=NOW + timedelta(days=3))
        ring = load_key_ring(a.home, db, a.passphrase, NOW + timedelta(days=3))
        assert ring.encryption.key_ids == (result.new_key_id,)  # type: ignore[attr-defined]


def test_seal_is_held_back_until_every_peer_heard_of_the_rotation(pair) -> None:
    """Messages sealed while the statement is on its way keep the old seal, which the peer
    still trusts: none is refused (rotation while messages are in flight)."""
    a, _ = pair
    old = NodeKeys.load(a.home, a.passphrase).seal.key_id
    result = rotate(a, "seal", now=NOW, days=4)
    with open_db(a) as db:
        assert load_key_ring(a.home, db, a.passphrase, NOW).seal.key_id == old
        # Half the window gone with a peer still unreachable: the new seal is used anyway.
        later = load_key_ring(a.home, db, a.passphrase, NOW + timedelta(days=2))
        assert later.seal.key_id == result.new_key_id
        with db.session() as session:
            from accord.storage import mark_announcement

            for row in pending_announcements(session):
                assert row.id is not None
                mark_announcement(session, row.id, now=NOW)
        assert load_key_ring(a.home, db, a.passphrase, NOW).seal.key_id == result.new_key_id


def test_tls_rotation_repins_the_peer_and_keeps_the_old_certificate_for_the_window(pair) -> None:
    a, b = pair
    old_cert = NodeKeys.load(a.home, a.passphrase).tls.fingerprint
    result = rotate(a, "tls", now=NOW)
    assert NodeKeys.load(a.home, a.passphrase).tls.fingerprint == result.new_key_id
    (statement,) = queued(a)
    assert deliver(statement, b) == "applied"
    with open_db(b) as db, db.session(readonly=True) as session:
        assert get_peer(session, PARTY_A).tls_cert_sha256 == result.new_key_id
        assert find_peer_by_certificate(session, old_cert).party_id == PARTY_A
        assert find_peer_by_certificate(session, result.new_key_id).party_id == PARTY_A
        pins = _keys.peer_certificates(session)
    assert {old_cert, result.new_key_id} <= set(pins)


def test_passphrase_change_reencrypts_every_node_key_or_none(pair) -> None:
    a, _ = pair
    rotate(a, "seal", now=NOW)  # a rotated-out key file must follow the passphrase too
    new = "новый пароль узла".encode()
    with pytest.raises(AdminError, match=r"wrong passphrase.*nothing was changed"):
        _keys.change_passphrase(a.home, old=b"wrong", new=new, now=NOW, kdf_cost=CHEAP)
    NodeKeys.load(a.home, a.passphrase)  # still the old passphrase
    count = _keys.change_passphrase(a.home, old=a.passphrase, new=new, now=NOW, kdf_cost=CHEAP)
    assert count == 4  # seal, encryption, TLS, and the rotated-out seal
    NodeKeys.load(a.home, new)
    with pytest.raises(KeyStoreError, match="wrong passphrase"):
        NodeKeys.load(a.home, a.passphrase)
    with open_db(a) as db, db.session(readonly=True) as session:
        history = [
            k for k in stored_keys(session, kind=KeyKind.SEAL) if k.status is KeyStatus.OVERLAP
        ]
        assert load_private_key(Path(history[0].store_ref or "").read_bytes(), new)
        with pytest.raises(KeyFileError):
            load_private_key(Path(history[0].store_ref or "").read_bytes(), a.passphrase)
        assert list_key_events(session)[-1].event == "passphrase-changed"
    leftovers = [p.name for p in a.home.root.rglob("*") if p.suffix in (".new", ".old")]
    assert leftovers == []


def test_keys_list_and_doctor_explain_expiry_and_revocation(pair) -> None:
    a, b = pair
    tls = NodeKeys.load(a.home, a.passphrase).tls
    soon = tls.not_after - timedelta(days=10)
    listed = {k.kind: k for k in _keys.key_status(a.home, now=soon) if k.status is KeyStatus.ACTIVE}
    assert listed[KeyKind.TLS].warning is not None and "expires in" in listed[KeyKind.TLS].warning
    assert listed[KeyKind.SEAL].warning is None
    assert listed[KeyKind.TLS].to_json()["not_after"] is not None
    with open_db(a) as db, db.session(readonly=True) as session:
        lines = _keys.expiry_warnings(session, PARTY_A, soon)
    assert any("this node's tls key" in line for line in lines)
    assert any(f"{PARTY_B}'s tls key" in line for line in lines)
    # Doctor on B about A: trusted, with every reason listed.
    findings = _keys.diagnose(b.home, now=NOW, peer=PARTY_A)
    assert all(f.ok for f in findings), findings
    checks = {f.check for f in findings}
    assert {"registry", "descriptor signature", "fingerprint", "TLS pin"} <= checks
    # After its certificate expired, doctor says why A is no longer trusted.
    expired = _keys.diagnose(b.home, now=tls.not_after + timedelta(days=1), peer=PARTY_A)
    bad = [f for f in expired if not f.ok]
    assert bad and all("EXPIRED" in f.detail for f in bad)
    unknown = _keys.diagnose(b.home, now=NOW, peer="неизвестный")
    assert [f.ok for f in unknown] == [False]


def test_old_message_verifies_with_the_history_after_two_rotations(pair) -> None:
    """Art. 13: art. 7 duties last five years after termination, so a message sealed under
    A's first seal verifies at B after two rotations, against B's key history."""
    a, b = pair
    first = NodeKeys.load(a.home, a.passphrase).seal
    payload = {"v": 1, "text": "старое сообщение"}
    old_message = sign_envelope(STATEMENT_TYPE, payload, [first])
    for hours in (1, 2):
        rotate(a, "seal", now=NOW + timedelta(hours=hours), days=1)
        statement = queued(a)[-1]
        deliver(statement, b, now=NOW + timedelta(hours=hours))
        with open_db(a) as db, db.session() as session:
            from accord.storage import mark_announcement

            for row in pending_announcements(session):
                assert row.id is not None
                mark_announcement(session, row.id, now=NOW)
    five_years = NOW + timedelta(days=5 * 366)
    with open_db(b) as db:
        with db.session() as session:
            from accord.storage import expire_overlaps

            expire_overlaps(session, now=five_years)
            history = _keys.key_history(session, PARTY_A)
    assert len(history.keys) == 3
    evidence = history.verify_at(
        old_message, payload_type=STATEMENT_TYPE, moment=NOW + timedelta(minutes=5)
    )
    assert evidence.key_ids == {first.key_id}
    with pytest.raises(Exception, match="0 trusted"):
        history.verify_at(old_message, payload_type=STATEMENT_TYPE, moment=five_years)


def test_key_database_is_one_transaction_when_rotation_fails(pair, monkeypatch) -> None:
    """A failure after the files were swapped puts them back: the store is as it was."""
    a, _ = pair
    before = NodeKeys.load(a.home, a.passphrase).seal.key_id

    swap = _keys._FileSwap.apply

    def swap_then_fail(self) -> None:
        swap(self)  # the files are in place; the transaction then fails
        raise RuntimeError("диск отключён")

    monkeypatch.setattr(_keys._FileSwap, "apply", swap_then_fail)
    with pytest.raises(RuntimeError):
        rotate(a, "seal")
    assert NodeKeys.load(a.home, a.passphrase).seal.key_id == before
    assert keys_of(a, PARTY_A, KeyKind.SEAL) == {before: KeyStatus.ACTIVE}
    assert not (a.home.seal_key.parent / "history").exists() or not any(
        (a.home.seal_key.parent / "history").iterdir()
    )
    assert not a.home.seal_key.with_name("seal.key.next").exists()


def test_attack_revoked_signatory_key_signs_nothing_new(pair) -> None:
    """Art. 4.4: a request is signed by the head or deputy; once their key is revoked
    (a lost token, a departed deputy) it cannot sign another."""
    a, _ = pair
    pw = "подпись заместителя".encode()
    user = _admin.add_user(
        a.home, "Петров П.П.", role="signatory", signatory_passphrase=pw, now=NOW,
        kdf_cost=CHEAP,
    )  # fmt: skip
    assert user.signatory_key_id is not None
    with open_db(a) as db:
        assert load_signatory(a.home, "Петров П.П.", pw, db=db).key_id == user.signatory_key_id
    result = _keys.revoke(
        a.home, user.signatory_key_id, reason="заместитель уволен", passphrase=a.passphrase,
        now=NOW + timedelta(hours=1),
    )  # fmt: skip
    assert result.kind is KeyKind.SIGNATORY and result.announced_to == (PARTY_B,)
    with open_db(a) as db, pytest.raises(KeyStoreError, match="revoked"):
        load_signatory(a.home, "Петров П.П.", pw, db=db)


class _DownTransport:
    """A peer transport whose peer is unreachable."""

    def __init__(self) -> None:
        self.calls = 0

    def client(self, peer):
        transport = self

        class _Client:
            async def post(self, *args, **kwargs):
                transport.calls += 1
                raise ConnectionError("сеть недоступна")

        return _Client()


def test_key_upkeep_retries_announcements_retires_overlaps_and_adopts_keys(pair, caplog) -> None:
    """The running node's chores, on a real node object with an injected clock: a peer
    that is down keeps the statement queued (with the error) and the old seal in use;
    once half the window has passed the new seal is adopted anyway; when the window ends
    the old seal is retired; a certificate near expiry is logged."""
    import asyncio
    import logging

    from accord.gateway.keys.upkeep import KeyUpkeep
    from accord.gateway.serve import load_node

    a, _ = pair
    old = NodeKeys.load(a.home, a.passphrase).seal.key_id
    start = datetime.now(UTC)  # load_node reads the keys at the real time
    result = rotate(a, "seal", now=start, days=4)
    node = load_node(a.home.root, a.passphrase)
    try:
        assert node.seal.key_id == old  # held back: B has not heard of the new seal
        clock = [start + timedelta(hours=1)]
        node.clock = lambda: clock[0]
        transport = _DownTransport()
        upkeep = KeyUpkeep(node, transport)  # type: ignore[arg-type]
        assert asyncio.run(upkeep.run_once()) == 0
        assert transport.calls == 1 and node.seal.key_id == old
        with open_db(a) as db, db.session(readonly=True) as session:
            (pending,) = pending_announcements(session)
            assert pending.attempts == 1 and "сеть недоступна" in (pending.last_error or "")
        clock[0] = start + timedelta(days=2, hours=1)
        asyncio.run(upkeep.run_once())
        assert node.seal.key_id == result.new_key_id
        tls_expiry = node.tls.not_after
        clock[0] = tls_expiry - timedelta(days=3)
        upkeep = KeyUpkeep(node, transport)  # type: ignore[arg-type]
        with caplog.at_level(logging.WARNING, logger="accord.keys"):
            asyncio.run(upkeep.run_once())
        assert any("key expiry" in r.message and "tls" in r.message for r in caplog.records)
        assert keys_of(a, PARTY_A, KeyKind.SEAL)[old] is KeyStatus.RETIRED
    finally:
        node.close()


def test_key_upkeep_hands_a_rotated_tls_identity_to_the_live_servers(pair) -> None:
    """Rotation without a restart (issue 5, ADR 0010): the upkeep task gives the running
    servers the TLS identities to load. While B has not heard of the rotation, peers are
    still presented the old certificate and local clients at once the home's new
    `tls/tls.crt`; once half the window has passed, peers get the new one too, and the
    delivery client (`PeerTransport`) is rebuilt for it."""
    import asyncio

    from accord.gateway.keys.upkeep import KeyUpkeep
    from accord.gateway.messages.delivery import PeerTransport
    from accord.gateway.serve import load_node

    a, _ = pair
    old = NodeKeys.load(a.home, a.passphrase).tls.fingerprint
    start = datetime.now(UTC)  # load_node reads the keys at the real time
    result = rotate(a, "tls", now=start, days=4)
    node = load_node(a.home.root, a.passphrase)
    try:
        assert node.tls.fingerprint == old  # held back for peers
        clock = [start + timedelta(hours=1)]
        node.clock = lambda: clock[0]
        handed: list[tuple[str, str]] = []
        upkeep = KeyUpkeep(
            node,
            _DownTransport(),  # type: ignore[arg-type]
            lambda peer, local: handed.append((peer.fingerprint, local.fingerprint)),
        )
        asyncio.run(upkeep.run_once())
        assert handed == [(old, result.new_key_id)]
        assert node.tls.fingerprint == old
        peer = node.peer_keys(PARTY_B)
        transport = PeerTransport(node)

        async def clients() -> tuple[object, object, object]:
            first, again = transport.client(peer), transport.client(peer)
            clock[0] = start + timedelta(days=2, hours=1)
            await upkeep.run_once()
            return first, again, transport.client(peer)

        first, again, after = asyncio.run(clients())
        assert handed[-1] == (result.new_key_id, result.new_key_id)
        assert node.tls.fingerprint == result.new_key_id
        assert first is again and after is not first
        asyncio.run(transport.aclose())
    finally:
        node.close()
