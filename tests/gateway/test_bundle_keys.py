"""Evidence bundles that verify after seal rotations (issue 5 "history", issue 6).

An auditor holds a Party's *current* descriptor; a message its earlier seal signed
years ago must still verify (agreement art. 13 keeps the art. 7 duties for five years
after termination). The bundle carries the Party's seal rotations and revocations
(`key_changes`); `verify_bundle` walks them back from the trusted seal. Nodes are made
in process as in test_audit.py (no node processes), the rotation and revocation by
`gateway._keys` as `accord keys rotate` and `accord keys revoke` run them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from accord.crypto import Envelope, MessageDraft, SigningKey, seal_message
from accord.crypto._wire import format_time
from accord.crypto.bundle import Bundle, BundleVerificationError, verify_bundle
from accord.crypto.canonical import dumps, loads_canonical
from accord.crypto.descriptor import NodeDescriptor, verify_descriptor
from accord.crypto.envelope import sign_envelope
from accord.crypto.keys import Signer
from accord.crypto.rotation import ROTATION_TYPE, KeyChange, RotationStatement
from accord.gateway.admin.home import export_descriptor
from accord.gateway.audit import log as _audit
from accord.gateway.keys import lifecycle as _keys
from accord.gateway.node.runtime import Node
from accord.gateway.serve import load_node
from accord.storage import (
    NewMessage,
    PartRef,
    insert_outgoing,
    mark_announcement,
    pending_announcements,
)

from .test_audit import CHEAP, PARTY_A, PARTY_B, PASS, T0, Pair
from .test_audit import pair as pair

HOUR = timedelta(hours=1)


def _store(node: Node, signer: Signer, created: datetime, message_id: str) -> str:
    """A notice from A to B created at `created`, sealed by `signer`, logged as sent."""
    draft = MessageDraft(
        message_id=message_id,
        sender=PARTY_A,
        recipient=PARTY_B,
        created=created,
        expires=created + timedelta(days=30),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="уведомление по статье 6 Соглашения",
        type="notice",
    )
    sealed = seal_message(
        draft,
        body="Сведения о происшествии".encode(),
        attachments=[],
        recipients=[node.peer_keys(PARTY_B).encryption],
    )
    envelope = sealed.sign([signer])
    st = sealed.statement
    message = NewMessage(
        message_id=st.message_id,
        sender=st.sender,
        recipient=st.recipient,
        type=st.type,
        marking=dict(st.marking),
        purpose=st.purpose,
        created=st.created,
        expires=st.expires,
        envelope=envelope.to_bytes(),
        header=sealed.header,
        parts=(PartRef(st.body.sha256, st.body.size, sealed.body),),
    )
    with node.db.session() as session:
        insert_outgoing(session, message, now=created)
        _audit.record(
            session,
            _audit.message_event(_audit.EventKind.MESSAGE_SENT, PARTY_A, message, created),
        )
    return st.message_id


def _rotate(pair: Pair, at: datetime, *, days: float = 1) -> str:
    result = _keys.rotate(
        pair.a.home, "seal", passphrase=PASS, now=at, overlap=timedelta(days=days),
        kdf_cost=CHEAP,
    )  # fmt: skip
    with pair.a.db.session() as session:  # B heard of it: the new seal signs from now on
        for row in pending_announcements(session):
            assert row.id is not None
            mark_announcement(session, row.id, now=at)
    return result.new_key_id


@pytest.fixture
def reopened(pair: Pair) -> Iterator[list[Node]]:
    """Nodes of A reopened after a rotation (closed at the end)."""
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        n.close()


def _reopen(pair: Pair, nodes: list[Node]) -> Node:
    node = load_node(pair.a.home.root, PASS)
    node.clock = pair.clock
    nodes.append(node)
    return node


def _trusted(pair: Pair, now: datetime) -> list[NodeDescriptor]:
    """The descriptors an auditor holds now: A's current one (after its rotations), B's."""
    current = export_descriptor(pair.a.home, PASS, now)
    return [verify_descriptor(Envelope.from_bytes(d)) for d in (current, pair.descriptors[PARTY_B])]


def _with(data: bytes, changes: tuple[KeyChange, ...]) -> bytes:
    return dataclasses.replace(Bundle.from_bytes(data), key_changes=changes).to_bytes()


MID_1 = "0f0e0d0c-1111-4222-8333-944455556666"
MID_2 = "0f0e0d0c-1111-4222-8333-944455557777"


def test_message_signed_before_a_seal_rotation_verifies_against_the_new_descriptor(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """Issue 5 (history), art. 13: the old seal is linked to the current one by the
    rotation statement both seals signed."""
    old_seal = pair.a.seal.key_id
    _store(pair.a, pair.a.seal, T0, MID_1)
    without = _audit.export_bundle(pair.a, MID_1)
    assert b"key_changes" not in without  # no rotation: the bundle keeps its first form
    new_seal = _rotate(pair, T0 + HOUR)
    pair.clock.now = T0 + 2 * HOUR
    a = _reopen(pair, reopened)
    data = _audit.export_bundle(a, MID_1)
    bundle = Bundle.from_bytes(data)
    assert len(bundle.key_changes) == 1
    assert bundle.key_changes[0].old_key is not None
    assert bundle.key_changes[0].old_key.key_id == old_seal
    evidence = verify_bundle(data, _trusted(pair, T0 + 2 * HOUR))
    assert (
        f"{PARTY_A}'s seal {old_seal[:16]}… was rotated to {new_seal[:16]}… on "
        f"{format_time(T0 + HOUR)}, signed by both seals; {old_seal[:16]}… signed for "
        f"{PARTY_A} until {format_time(T0 + HOUR + timedelta(days=1))}."
    ) in evidence.proven
    assert any(f"the earlier seal {old_seal[:16]}… of {PARTY_A}" in p for p in evidence.proven)


def test_attack_old_message_without_the_rotation_chain_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    _store(pair.a, pair.a.seal, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    pair.clock.now = T0 + 2 * HOUR
    data = _with(_audit.export_bundle(_reopen(pair, reopened), MID_1), ())
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(data, _trusted(pair, T0 + 2 * HOUR))
    assert any("statement does not verify" in f for f in e.value.failures)


def _rotation_resigned(change: KeyChange, signers: list[Signer], **changes: object) -> KeyChange:
    statement = RotationStatement.from_payload(loads_canonical(change.envelope.payload))
    forged = dataclasses.replace(statement, **changes)  # type: ignore[arg-type]
    return KeyChange(sign_envelope(ROTATION_TYPE, forged.to_payload(), signers), change.old_key)


def test_attack_rotation_link_signed_only_by_the_old_seal_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """Whoever holds the old seal (a thief) cannot link it to the trusted seal alone: the
    trusted new seal's proof of possession is required."""
    _store(pair.a, pair.a.seal, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    pair.clock.now = T0 + 2 * HOUR
    data = _audit.export_bundle(_reopen(pair, reopened), MID_1)
    (change,) = Bundle.from_bytes(data).key_changes
    forged = _rotation_resigned(change, [pair.a.seal])
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(_with(data, (forged,)), _trusted(pair, T0 + 2 * HOUR))
    assert any("old and the new seal alone" in f for f in e.value.failures)
    assert any("statement does not verify" in f for f in e.value.failures)


def test_attack_rotation_link_with_a_stretched_overlap_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """The overlap window rewritten to keep the old seal alive, signatures kept: forged."""
    _store(pair.a, pair.a.seal, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    pair.clock.now = T0 + 2 * HOUR
    data = _audit.export_bundle(_reopen(pair, reopened), MID_1)
    (change,) = Bundle.from_bytes(data).key_changes
    signed = RotationStatement.from_payload(loads_canonical(change.envelope.payload))
    stretched = dataclasses.replace(signed, overlap_until=signed.overlap_until + timedelta(days=90))
    forged_envelope = dataclasses.replace(
        change.envelope,
        payload=dumps(stretched.to_payload()),
    )
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(
            _with(data, (KeyChange(forged_envelope, change.old_key),)),
            _trusted(pair, T0 + 2 * HOUR),
        )
    assert any("rotation of" in f and "does not verify" in f for f in e.value.failures)


def test_attack_rotation_link_to_an_impostor_key_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """A thief of the old seal announces a rotation to a key of its own, signed by both:
    it links to no seal the auditor trusts, so the bundle is refused."""
    _store(pair.a, pair.a.seal, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    pair.clock.now = T0 + 2 * HOUR
    data = _audit.export_bundle(_reopen(pair, reopened), MID_1)
    (change,) = Bundle.from_bytes(data).key_changes
    impostor = SigningKey.generate()
    forged = _rotation_resigned(
        change, [pair.a.seal, impostor], new_key=impostor.verify_key().to_dict()
    )
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(_with(data, (forged,)), _trusted(pair, T0 + 2 * HOUR))
    assert any("links to no seal of a trusted descriptor" in f for f in e.value.failures)


def test_attack_message_dated_after_the_old_seals_revocation_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """Issue 5: a revoked key signs nothing new; what it signed before stays verifiable."""
    old = pair.a.seal
    _store(pair.a, old, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    _keys.revoke(
        pair.a.home, old.key_id, reason="ключ печати скомпрометирован", passphrase=PASS,
        now=T0 + 2 * HOUR,
    )  # fmt: skip
    pair.clock.now = T0 + 3 * HOUR
    a = _reopen(pair, reopened)
    _store(a, old, T0 + 3 * HOUR, MID_2)  # the stolen seal, after its revocation
    trusted = _trusted(pair, T0 + 3 * HOUR)
    before = verify_bundle(_audit.export_bundle(a, MID_1), trusted)
    assert any("revoked its seal" in p and "скомпрометирован" in p for p in before.proven)
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(_audit.export_bundle(a, MID_2), trusted)
    assert any("was revoked on" in f for f in e.value.failures)


def test_attack_message_dated_after_the_overlap_window_is_refused(
    pair: Pair,
    reopened: list[Node],
) -> None:
    old = pair.a.seal
    _rotate(pair, T0 + HOUR, days=1)
    pair.clock.now = T0 + timedelta(days=3)
    a = _reopen(pair, reopened)
    _store(a, old, T0 + timedelta(days=3), MID_2)
    with pytest.raises(BundleVerificationError) as e:
        verify_bundle(_audit.export_bundle(a, MID_2), _trusted(pair, T0 + timedelta(days=3)))
    assert any("was rotated out" in f for f in e.value.failures)


def test_old_message_verifies_after_two_rotations_and_not_with_a_link_missing(
    pair: Pair,
    reopened: list[Node],
) -> None:
    """Issue 5's test: an old message verified after two rotations."""
    _store(pair.a, pair.a.seal, T0, MID_1)
    _rotate(pair, T0 + HOUR)
    _rotate(pair, T0 + 30 * HOUR)
    pair.clock.now = T0 + 31 * HOUR
    data = _audit.export_bundle(_reopen(pair, reopened), MID_1)
    trusted = _trusted(pair, T0 + 31 * HOUR)
    evidence = verify_bundle(data, trusted)
    assert len([p for p in evidence.proven if "was rotated to" in p]) == 2
    first, second = Bundle.from_bytes(data).key_changes
    for kept in ((first,), (second,)):
        with pytest.raises(BundleVerificationError) as e:
            verify_bundle(_with(data, kept), trusted)
        assert any("statement does not verify" in f for f in e.value.failures)
