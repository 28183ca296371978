"""Rotation and revocation statements, key history, and the attacks on them (DESIGN 8).

Agreement art. 13 keeps the art. 7 duties for five years after termination, so a message
must still verify with the key that was valid when it was signed, after any number of
rotations.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from accord.crypto import DecryptionKey, Envelope, MessageOpener, SigningKey, VerificationError
from accord.crypto.keys import DecryptionKeyRing
from accord.crypto.rotation import (
    REVOCATION_TYPE,
    ROTATION_TYPE,
    HistoricKey,
    KeyHistory,
    RevocationStatement,
    RotatedKind,
    RotationStatement,
    verify_revocation,
    verify_rotation,
)
from accord.crypto.sealed import STATEMENT_TYPE, verify_message
from accord.crypto.tls import TlsIdentity

from .conftest import NOW, Party, send

PARTY = "МВД-РБ"
WEEK = timedelta(days=7)


def _rotation(old: SigningKey, new: SigningKey, *, issued=NOW, party=PARTY):
    return RotationStatement(
        party=party,
        kind=RotatedKind.SEAL,
        old_key_id=old.key_id,
        new_key=new.verify_key().to_dict(),
        effective=issued,
        overlap_until=issued + WEEK,
        issued=issued,
    )


def _history(*keys: HistoricKey) -> KeyHistory:
    return KeyHistory(PARTY, tuple(keys))


def test_seal_rotation_verifies_and_names_old_and_new_keys() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(old, new).sign(old, new)
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    verified = verify_rotation(
        Envelope.from_bytes(envelope.to_bytes()), party=PARTY, history=history, now=NOW
    )
    assert isinstance(verified.statement, RotationStatement)
    assert verified.statement.old_key_id == old.key_id
    assert verified.statement.new_key_id == new.key_id
    assert verified.evidence.key_ids == {old.key_id}
    assert envelope.payload_type == ROTATION_TYPE


def test_tls_rotation_carries_the_new_certificate() -> None:
    seal = SigningKey.generate()
    old_tls = TlsIdentity.generate("узел-а", hosts=["127.0.0.1"], now=NOW)
    new_tls = TlsIdentity.generate("узел-а", hosts=["127.0.0.1"], now=NOW)
    statement = RotationStatement(
        party=PARTY,
        kind=RotatedKind.TLS,
        old_key_id=old_tls.fingerprint,
        new_key={
            "alg": "x509",
            "sha256": new_tls.fingerprint,
            "certificate_pem": new_tls.certificate_pem.decode("ascii"),
        },
        effective=NOW,
        overlap_until=NOW + WEEK,
        issued=NOW,
    )
    verified = verify_rotation(
        statement.sign(seal),
        party=PARTY,
        history=_history(HistoricKey(seal.verify_key(), NOW - WEEK)),
        now=NOW,
    )
    assert verified.statement.new_key_id == new_tls.fingerprint  # type: ignore[union-attr]


def test_attack_rotation_statement_forged_by_another_key_is_refused() -> None:
    old, new, mallory = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    # Mallory claims Party's old seal is replaced by her key, signing with her own key and
    # the key id of the real one.
    forged = _rotation(old, new)
    envelope = forged.sign(old, new)
    tampered = Envelope(
        envelope.payload_type,
        envelope.payload,
        tuple(
            type(s)(s.keyid, mallory.sign(b"x" * 10) if s.keyid == old.key_id else s.sig)
            for s in envelope.signatures
        ),
    )
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="does not verify"):
        verify_rotation(tampered, party=PARTY, history=history, now=NOW)


def test_attack_rotation_signed_only_by_an_unknown_key_is_refused() -> None:
    old, mallory, new = SigningKey.generate(), SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(mallory, new).sign(mallory, new)
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="missing required"):
        verify_rotation(envelope, party=PARTY, history=history, now=NOW)


def test_attack_seal_rotation_without_proof_of_possession_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(old, new).sign(old, new)
    # Strip the new key's signature: the announcer would not prove it holds the new key.
    stripped = Envelope(envelope.payload_type, envelope.payload, envelope.signatures[:1])
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="missing required"):
        verify_rotation(stripped, party=PARTY, history=history, now=NOW)


def test_attack_rotation_signed_by_a_revoked_key_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    revoked = HistoricKey(old.verify_key(), NOW - WEEK, revoked_at=NOW - timedelta(days=1))
    # Signed after the revocation: refused.
    envelope = _rotation(old, new).sign(old, new)
    with pytest.raises(VerificationError, match="no key"):
        verify_rotation(envelope, party=PARTY, history=_history(revoked), now=NOW)
    # Backdated to before the revocation by whoever stole the key: still refused, since a
    # key-change statement is acted upon now and the key is revoked now.
    backdated = _rotation(old, new, issued=NOW - timedelta(days=2)).sign(old, new)
    with pytest.raises(VerificationError, match="no key"):
        verify_rotation(backdated, party=PARTY, history=_history(revoked), now=NOW)


def test_attack_rotation_of_another_party_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(old, new, party="Росгвардия").sign(old, new)
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="not"):
        verify_rotation(envelope, party=PARTY, history=history, now=NOW)


def test_attack_rotation_passed_off_as_revocation_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(old, new).sign(old, new)
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="payload type"):
        verify_revocation(envelope, party=PARTY, history=history, now=NOW)


def test_attack_rotation_from_the_future_is_refused() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    envelope = _rotation(old, new, issued=NOW + timedelta(hours=1)).sign(old, new)
    history = _history(HistoricKey(old.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="future"):
        verify_rotation(envelope, party=PARTY, history=history, now=NOW)


def test_rotation_with_an_overlap_longer_than_a_year_cannot_exist() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(VerificationError, match="year"):
        RotationStatement(PARTY, RotatedKind.SEAL, old.key_id, new.verify_key().to_dict(),
                          NOW, NOW + timedelta(days=400), NOW)  # fmt: skip


def test_revocation_signed_by_another_current_seal_verifies() -> None:
    old, current = SigningKey.generate(), SigningKey.generate()
    statement = RevocationStatement(PARTY, old.key_id, NOW, "ключ скомпрометирован", NOW)
    envelope = statement.sign(current)
    assert envelope.payload_type == REVOCATION_TYPE
    history = _history(
        HistoricKey(old.verify_key(), NOW - WEEK), HistoricKey(current.verify_key(), NOW - WEEK)
    )
    verified = verify_revocation(envelope, party=PARTY, history=history, now=NOW)
    assert verified.statement.reason == "ключ скомпрометирован"  # type: ignore[union-attr]


def test_attack_revocation_signed_by_the_revoked_key_itself_is_refused() -> None:
    stolen = SigningKey.generate()
    statement = RevocationStatement(PARTY, stolen.key_id, NOW, "сам себя", NOW)
    with pytest.raises(ValueError, match="another"):
        statement.sign(stolen)
    # Forged the hard way: an envelope signed by the revoked key alone.
    from accord.crypto.envelope import sign_envelope

    envelope = sign_envelope(REVOCATION_TYPE, statement.to_payload(), [stolen])
    history = _history(HistoricKey(stolen.verify_key(), NOW - WEEK))
    with pytest.raises(VerificationError, match="no other current seal"):
        verify_revocation(envelope, party=PARTY, history=history, now=NOW)


def test_old_message_verifies_after_two_rotations_and_later_claims_are_refused() -> None:
    """A message sealed under the first seal still verifies after two rotations, with the
    key valid at its creation time (art. 13: five years of art. 7 duties)."""
    sender, receiver = Party(PARTY), Party("Росгвардия")
    first_seal = sender.seal
    sent = send(sender, receiver, [], created=NOW - timedelta(days=30))
    envelope = sent.sealed.sign([sender.signatory, first_seal])
    second, third = SigningKey.generate(), SigningKey.generate()
    t1, t2 = NOW - timedelta(days=20), NOW - timedelta(days=10)
    history = _history(
        HistoricKey(first_seal.verify_key(), NOW - timedelta(days=60), not_after=t1 + WEEK),
        HistoricKey(second.verify_key(), t1, not_after=t2 + WEEK),
        HistoricKey(third.verify_key(), t2),
    )
    statement = verify_message(
        envelope,
        history.valid_at(NOW - timedelta(days=30))
        | {sender.signatory.key_id: sender.signatory.verify_key()},
        sender=PARTY,
        recipient="Росгвардия",
        now=NOW,
    ).statement
    evidence = history.verify_at(envelope, payload_type=STATEMENT_TYPE, moment=statement.created)
    assert evidence.key_ids == {first_seal.key_id}
    # The same first seal claiming to sign today, long after its overlap ended: refused.
    late = send(sender, receiver, [], created=NOW).sealed.sign([first_seal])
    with pytest.raises(VerificationError, match="0 trusted signature"):
        history.verify_at(late, payload_type=STATEMENT_TYPE, moment=NOW)


def test_attack_message_claiming_a_time_after_revocation_is_refused() -> None:
    sender, receiver = Party(PARTY), Party("Росгвардия")
    revoked_at = NOW - timedelta(days=1)
    history = _history(HistoricKey(sender.seal.verify_key(), NOW - WEEK, revoked_at=revoked_at))
    before = send(sender, receiver, [], created=revoked_at - timedelta(hours=1))
    after = send(sender, receiver, [], created=revoked_at)
    ok = history.verify_at(
        before.sealed.sign([sender.seal]), payload_type=STATEMENT_TYPE,
        moment=revoked_at - timedelta(hours=1),
    )  # fmt: skip
    assert ok.key_ids == {sender.seal.key_id}
    with pytest.raises(VerificationError):
        history.verify_at(after.sealed.sign([sender.seal]), payload_type=STATEMENT_TYPE,
                          moment=revoked_at)  # fmt: skip


def test_message_in_flight_to_the_old_encryption_key_opens_with_the_ring() -> None:
    sender, receiver = Party(PARTY), Party("Росгвардия")
    sent = send(sender, receiver, [])
    envelope = sent.sealed.sign([sender.signatory, sender.seal])
    verified = verify_message(
        envelope, sender.trusted(), sender=PARTY, recipient="Росгвардия", now=NOW
    )
    ring = DecryptionKeyRing(DecryptionKey.generate(), [receiver.encryption])
    assert ring.key_ids[1] == receiver.encryption.key_id
    opener = MessageOpener(verified, sent.sealed.header, ring)
    assert opener.open_body(sent.sealed.body).decode().startswith("Прошу")
    with pytest.raises(TypeError):
        ring.to_encrypted_file(b"x")
    # Once the window is over the old key leaves the ring, and the message no longer opens.
    with pytest.raises(VerificationError, match="unwrap"):
        MessageOpener(verified, sent.sealed.header, DecryptionKeyRing(DecryptionKey.generate()))


def test_attack_rotation_naming_another_new_key_id_cannot_be_parsed() -> None:
    old, new = SigningKey.generate(), SigningKey.generate()
    payload = _rotation(old, new).to_payload()
    payload["new_key_id"] = SigningKey.generate().key_id
    with pytest.raises(VerificationError, match="new_key_id"):
        RotationStatement.from_payload(payload)
