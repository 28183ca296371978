"""Seal chains in evidence bundles, with `crypto/` alone (issue 5 "history"; art. 13).

The recipient and forwarder B rotated its seal after it signed its receipt, its forward
statement and its cosignature of A's checkpoint. An auditor holding B's current
descriptor verifies them through B's rotation statement in the bundle's key changes,
each only for a signature dated inside the old seal's validity interval.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from accord.crypto.bundle import Bundle, BundleVerificationError, verify_bundle
from accord.crypto.envelope import sign_envelope
from accord.crypto.keys import SigningKey
from accord.crypto.rotation import (
    REVOCATION_TYPE,
    KeyChange,
    RevocationStatement,
    RotatedKind,
    RotationStatement,
)

from .conftest import NOW, Party
from .test_bundle import descriptor
from .test_bundle_consent import World, world


def _rotation(b: Party, new: SigningKey, *, effective, overlap=timedelta(days=1)) -> KeyChange:
    statement = RotationStatement(
        party=b.party_id,
        kind=RotatedKind.SEAL,
        old_key_id=b.seal.key_id,
        new_key=new.verify_key().to_dict(),
        effective=effective,
        overlap_until=effective + overlap,
        issued=effective,
    )
    return KeyChange(statement.sign(b.seal, new), b.seal.verify_key())


def _after_rotation(w: World, b: Party, new: SigningKey, changes: tuple[KeyChange, ...]):
    data = dataclasses.replace(Bundle.from_bytes(w.made.data), key_changes=changes).to_bytes()
    trusted = [descriptor(w.made.a), descriptor(dataclasses.replace(b, seal=new)), descriptor(w.c)]
    return data, trusted


def _failures(data: bytes, trusted) -> tuple[str, ...]:
    try:
        verify_bundle(data, trusted)
    except BundleVerificationError as e:
        return e.failures
    raise AssertionError("the bundle verified")


def test_peer_receipt_forward_and_cosignature_by_an_earlier_seal_verify_through_its_chain(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    change = _rotation(party_b, new, effective=NOW + timedelta(days=1))
    data, trusted = _after_rotation(w, party_b, new, (change,))
    evidence = verify_bundle(data, trusted)
    text = "\n".join(evidence.proven)
    assert f"{party_b.party_id}'s seal {party_b.seal.key_id[:16]}… was rotated to" in text
    assert f"{party_b.party_id} signed a receipt" in text
    assert f"{party_b.party_id} sealed that it passed message" in text
    assert f"{party_b.party_id} witnessed that checkpoint" in text


def test_attack_peer_signatures_by_an_earlier_seal_without_its_chain_are_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    data, trusted = _after_rotation(w, party_b, new, ())
    failures = "\n".join(_failures(data, trusted))
    assert "a receipt does not verify" in failures
    assert "a forward statement does not verify" in failures
    assert "unknown key" in failures


def test_attack_receipt_dated_after_the_overlap_window_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    """B's old seal was rotated out (overlap ended) an hour before NOW; a receipt dated
    after that, signed with it, proves nothing."""
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    change = _rotation(party_b, new, effective=NOW - timedelta(hours=2), overlap=timedelta(hours=1))
    data, trusted = _after_rotation(w, party_b, new, (change,))
    failures = "\n".join(_failures(data, trusted))
    assert "a receipt does not verify" in failures and "was rotated out" in failures


def test_attack_revocation_signed_by_the_revoked_seal_itself_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    """A revocation counts only when another seal of the chain signed it: a seal
    "revoking" itself (to fix a date of its choosing) proves nothing."""
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    change = _rotation(party_b, new, effective=NOW + timedelta(days=1))
    statement = RevocationStatement(
        party=party_b.party_id,
        key_id=party_b.seal.key_id,
        revoked_at=NOW + timedelta(days=1, hours=1),
        reason="ключ утрачен",
        issued=NOW + timedelta(days=1, hours=1),
    )
    forged = KeyChange(sign_envelope(REVOCATION_TYPE, statement.to_payload(), [party_b.seal]))
    data, trusted = _after_rotation(w, party_b, new, (change, forged))
    failures = "\n".join(_failures(data, trusted))
    assert f"a revocation of {party_b.party_id} does not verify" in failures


def _exporter_rotated(w: World, a: Party, new: SigningKey, changes: tuple[KeyChange, ...]):
    data = dataclasses.replace(Bundle.from_bytes(w.made.data), key_changes=changes).to_bytes()
    trusted = [descriptor(dataclasses.replace(a, seal=new)), descriptor(w.made.b), descriptor(w.c)]
    return data, trusted


def test_checkpoint_by_the_exporters_earlier_unrevoked_seal_verifies_with_a_note(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    """A signs with its old seal until B heard of the rotation: its statement, consent
    token and checkpoint of that time verify against A's current descriptor."""
    w = world(party_a, party_b, party_c)
    new = SigningKey.generate()
    change = _rotation(party_a, new, effective=NOW + timedelta(days=1))
    data, trusted = _exporter_rotated(w, party_a, new, (change,))
    evidence = verify_bundle(data, trusted)
    text = "\n".join(evidence.proven)
    assert f"signed by the earlier seal {party_a.seal.key_id[:16]}… of {party_a.party_id}" in text
    assert any(p.startswith("Consent ") and "the earlier seal" in p for p in evidence.proven)
    assert any("checkpoint is signed by" in n and "earlier seal" in n for n in evidence.warnings)


def test_attack_checkpoint_by_the_exporters_revoked_seal_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    """A checkpoint has no date: once the seal that signed it is revoked, it proves
    nothing (while the statement, dated before the revocation, still verifies)."""
    w = world(party_a, party_b, party_c)
    new = SigningKey.generate()
    change = _rotation(party_a, new, effective=NOW + timedelta(days=1))
    revocation = RevocationStatement(
        party=party_a.party_id,
        key_id=party_a.seal.key_id,
        revoked_at=NOW + timedelta(days=1, hours=1),
        reason="ключ печати скомпрометирован",
        issued=NOW + timedelta(days=1, hours=1),
    )
    revoked = KeyChange(revocation.sign(new))
    data, trusted = _exporter_rotated(w, party_a, new, (change, revoked))
    try:
        verify_bundle(data, trusted)
    except BundleVerificationError as e:
        assert any("log checkpoint does not verify" in f for f in e.failures)
        assert not any("statement does not verify" in f for f in e.failures)
        assert any("revoked its seal" in p for p in e.proven)
    else:
        raise AssertionError("the bundle verified")


def test_attack_two_rotations_to_the_same_seal_are_refused_as_a_fork(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    """Two different old seals both claiming to lead to B's current seal: the chain is
    ambiguous, so neither link is trusted."""
    w = world(party_a, party_b, party_c, forward=True)
    new = SigningKey.generate()
    honest = _rotation(party_b, new, effective=NOW + timedelta(days=1))
    other = Party(party_b.party_id)
    fork = _rotation(other, new, effective=NOW + timedelta(days=1))
    data, trusted = _after_rotation(w, party_b, new, (honest, fork))
    failures = "\n".join(_failures(data, trusted))
    assert "a fork, refused" in failures
    assert "a receipt does not verify" in failures
