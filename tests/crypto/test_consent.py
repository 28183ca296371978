"""Consent tokens and the third party's forward checklist (agreement art. 7.3, DESIGN
guarantee 4), with the named attacks on them. The stateful checks (revoked, replayed) are
the node's and are tested in tests/gateway/test_forward.py."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from accord.crypto import Envelope, MessageOpener, SigningKey, VerificationError, verify_message
from accord.crypto.consent import (
    ConsentRevocation,
    ConsentToken,
    ForwardStatement,
    issue_consent,
    issue_revocation,
    new_nonce,
    sign_forward,
    verify_consent,
    verify_forward,
    verify_revocation,
)

from .conftest import BODY, NOW, send

PURPOSE = "передача материалов в прокуратуру по делу № 17/2026"
DOC = "Протокол допроса свидетеля.\n".encode() * 4000


@pytest.fixture
def world(party_a, party_b, party_c):
    """A sent A→B, signed; B holds it and C is the third party."""
    sent = send(party_a, party_b, [DOC])
    envelope = sent.sealed.sign([party_a.signatory, party_a.seal])
    return party_a, party_b, party_c, sent, envelope


def token_for(a, b, c, envelope: Envelope, **changes) -> ConsentToken:
    values = {
        "nonce": new_nonce(),
        "message_id": "3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
        "statement_sha256": envelope.payload_sha256,
        "originator": a.party_id,
        "forwarder": b.party_id,
        "third_party": c.party_id,
        "purpose": PURPOSE,
        "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        "issued": NOW,
        "expires": NOW + timedelta(days=7),
    }
    values.update(changes)
    return ConsentToken(**values)


def forward_bundle(a, b, c, sent, envelope, consent: Envelope, **changes):
    """What B ships: the re-wrapped header and B's sealed forward statement."""
    at_b = verify_message(envelope, a.trusted(), sender=a.party_id, recipient=b.party_id, now=NOW)
    header = MessageOpener(at_b, sent.sealed.header, b.encryption).rewrap(
        [c.encryption.recipient()]
    )
    values = {
        "forward_id": str(uuid.uuid4()),
        "message_id": at_b.statement.message_id,
        "statement_sha256": envelope.payload_sha256,
        "envelope_sha256": envelope.sha256,
        "consent_sha256": consent.sha256,
        "header_sha256": hashlib.sha256(header).hexdigest(),
        "originator": a.party_id,
        "forwarder": b.party_id,
        "third_party": c.party_id,
        "purpose": PURPOSE,
        "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        "created": NOW,
    }
    values.update(changes)
    return header, sign_forward(ForwardStatement(**values), [b.seal])


def check(a, b, c, envelope, consent, forward, header, *, now=NOW, **kw):
    return verify_forward(
        message=envelope,
        consent=consent,
        forward=forward,
        header=header,
        originator=a.party_id,
        originator_seals={a.seal.key_id: a.seal.verify_key()},
        originator_signatories={a.signatory.key_id: a.signatory.verify_key()},
        forwarder=b.party_id,
        forwarder_seals={b.seal.key_id: b.seal.verify_key()},
        third_party=c.party_id,
        now=now,
        identity=c.encryption,
        **kw,
    )


def test_consented_forward_verifies_and_opens_the_originators_ciphertext(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    evidence = check(a, b, c, envelope, consent, forward, header)
    # The third party proves the originator's signature over exactly what it decrypts.
    assert evidence.message.evidence.key_ids == {a.seal.key_id, a.signatory.key_id}
    assert evidence.consent.token.third_party == "третья-сторона"
    assert evidence.opener is not None
    assert evidence.opener.open_body(sent.sealed.body) == BODY
    out = io.BytesIO()
    evidence.opener.open_attachment(0, io.BytesIO(sent.attachments[0]), out)
    assert out.getvalue() == DOC


def test_attack_consent_token_for_another_message_is_refused(world, party_a, party_b) -> None:
    a, b, c, sent, envelope = world
    other = send(a, b, [], message_id=str(uuid.uuid4())).sealed.sign([a.seal])
    consent = issue_consent(
        token_for(a, b, c, other, message_id="3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77"), [a.seal]
    )
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="another message"):
        check(a, b, c, envelope, consent, forward, header)


def test_attack_consent_token_for_another_third_party_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope, third_party="Прокуратура"), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="another third party"):
        check(a, b, c, envelope, consent, forward, header)


def test_attack_consent_token_for_another_purpose_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope, purpose="научные цели"), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="another purpose"):
        check(a, b, c, envelope, consent, forward, header)


def test_attack_expired_consent_token_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="expired"):
        check(a, b, c, envelope, consent, forward, header, now=NOW + timedelta(days=7))


def test_attack_forged_consent_token_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    # The forwarder widens the token's purpose and keeps the originator's signature.
    forged = Envelope(
        consent.payload_type,
        consent.payload.replace("прокуратуру".encode(), "газету!!!!!".encode()),
        consent.signatures,
    )
    header, forward = forward_bundle(a, b, c, sent, envelope, forged)
    with pytest.raises(VerificationError, match="does not verify"):
        check(a, b, c, envelope, forged, forward, header)


def test_attack_consent_token_issued_by_the_forwarder_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [b.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="trusted signature"):
        check(a, b, c, envelope, consent, forward, header)


def test_attack_consent_token_signed_by_a_signatory_alone_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.signatory])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="not sealed by the originator"):
        check(a, b, c, envelope, consent, forward, header)


def test_signatory_required_by_the_profile_is_enforced(world) -> None:
    a, b, c, sent, envelope = world
    sealed_only = issue_consent(token_for(a, b, c, envelope), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, sealed_only)
    with pytest.raises(VerificationError, match="signatory"):
        check(a, b, c, envelope, sealed_only, forward, header, signatory_required=True)
    both = issue_consent(token_for(a, b, c, envelope), [a.seal, a.signatory])
    header, forward = forward_bundle(a, b, c, sent, envelope, both)
    evidence = check(a, b, c, envelope, both, forward, header, signatory_required=True)
    assert a.signatory.key_id in evidence.consent.evidence.key_ids


def test_attack_marking_stripped_on_the_way_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    # The forwarder declares a lower marking than the originator signed.
    header, forward = forward_bundle(
        a, b, c, sent, envelope, consent, marking={"level": "OFFICIAL", "caveats": []}
    )
    with pytest.raises(VerificationError, match="marking"):
        check(a, b, c, envelope, consent, forward, header)


def test_attack_marking_stripped_inside_the_statement_breaks_the_signature(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    stripped = Envelope(
        envelope.payload_type,
        envelope.payload.replace(b'"CONFIDENTIAL"', b'"OFFICIAL"    '),
        envelope.signatures,
    )
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError):
        check(a, b, c, stripped, consent, forward, header)


def test_attack_forward_signed_by_someone_else_than_the_forwarder_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    header, _ = forward_bundle(a, b, c, sent, envelope, consent)
    intruder = SigningKey.generate()
    _, forward = forward_bundle(a, b, c, sent, envelope, consent)
    forged = sign_forward(ForwardStatement.from_payload(json.loads(forward.payload)), [intruder])
    with pytest.raises(VerificationError):
        check(a, b, c, envelope, consent, forged, header)


def test_attack_header_wrapping_another_key_is_refused(world, party_c) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    # B re-wraps a different message's key: it does not match A's signed commitment.
    other = send(a, b, [DOC], message_id=str(uuid.uuid4()))
    at_b = verify_message(
        other.sealed.sign([a.seal]), a.trusted(), sender=a.party_id, recipient=b.party_id, now=NOW
    )
    wrong = MessageOpener(at_b, other.sealed.header, b.encryption).rewrap(
        [c.encryption.recipient()]
    )
    _, forward = forward_bundle(
        a, b, c, sent, envelope, consent, header_sha256=hashlib.sha256(wrong).hexdigest()
    )
    with pytest.raises(VerificationError, match="commitment"):
        check(a, b, c, envelope, consent, forward, wrong)


def test_attack_header_swapped_after_signing_is_refused(world) -> None:
    a, b, c, sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    header, forward = forward_bundle(a, b, c, sent, envelope, consent)
    with pytest.raises(VerificationError, match="does not bind"):
        check(a, b, c, envelope, consent, forward, header + b"\n")


def test_attack_consent_token_replayed_as_a_message_is_refused(world) -> None:
    a, b, c, _sent, envelope = world
    consent = issue_consent(token_for(a, b, c, envelope), [a.seal])
    with pytest.raises(VerificationError, match="payload type"):
        verify_message(consent, a.trusted(), sender=a.party_id, recipient=b.party_id, now=NOW)


def test_revocation_verifies_only_under_the_originators_seal(world) -> None:
    a, b, _c, _sent, _envelope = world
    nonce = new_nonce()
    revocation = issue_revocation(ConsentRevocation(nonce, a.party_id, NOW), [a.seal])
    seals = {a.seal.key_id: a.seal.verify_key()}
    assert verify_revocation(revocation, originator=a.party_id, seals=seals).nonce == nonce
    by_forwarder = issue_revocation(ConsentRevocation(nonce, a.party_id, NOW), [b.seal])
    with pytest.raises(VerificationError):
        verify_revocation(by_forwarder, originator=a.party_id, seals=seals)


def test_token_round_trips_and_rejects_a_future_issue_time(world) -> None:
    a, b, c, _sent, envelope = world
    token = token_for(a, b, c, envelope)
    assert ConsentToken.from_payload(token.to_payload()) == token
    future = issue_consent(replace(token, issued=NOW + timedelta(hours=1)), [a.seal])
    with pytest.raises(VerificationError, match="future"):
        verify_consent(
            future,
            originator=a.party_id,
            seals={a.seal.key_id: a.seal.verify_key()},
            now=NOW,
        )
