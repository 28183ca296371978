"""Consent evidence in evidence bundles, verified offline with `crypto/` alone (issue 6).

Agreement art. 7.3: information received may be passed to a third party only with the
prior written consent of the Party that provided it, so a consent token proves something
only when the ORIGINATOR (the sender of the bundle's statement) signed it, for this very
message. Art. 7.2: a token whose third party is the holder itself is a consent to use the
content for another purpose. The default verifier is `crypto.bundle.check_consent_token`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accord.crypto import Envelope, Receipt, Verdict, issue_receipt
from accord.crypto.bundle import Bundle, BundleVerificationError, verify_bundle
from accord.crypto.consent import (
    ConsentRevocation,
    ConsentToken,
    ForwardStatement,
    issue_consent,
    issue_revocation,
    new_nonce,
    sign_forward,
)
from accord.crypto.keys import SigningKey

from .conftest import NOW, Party
from .test_bundle import Made, descriptor, make_bundle

PURPOSE = "проверка сведений по делу № 17/2026 третьей стороной"
MARKING = {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}


def token_for(a: Party, b: Party, c: Party, statement: Envelope, **changes) -> ConsentToken:
    values = {
        "nonce": new_nonce(),
        "message_id": "3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
        "statement_sha256": statement.payload_sha256,
        "originator": a.party_id,
        "forwarder": b.party_id,
        "third_party": c.party_id,
        "purpose": PURPOSE,
        "marking": MARKING,
        "issued": NOW + timedelta(hours=1),
        "expires": NOW + timedelta(days=7),
    }
    values.update(changes)
    return ConsentToken(**values)


def forward_for(
    a: Party, b: Party, c: Party, statement: Envelope, consent: Envelope, **changes
) -> ForwardStatement:
    values = {
        "forward_id": str(uuid.uuid4()),
        "message_id": "3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
        "statement_sha256": statement.payload_sha256,
        "envelope_sha256": statement.sha256,
        "consent_sha256": consent.sha256,
        "header_sha256": hashlib.sha256(b"age-header").hexdigest(),
        "originator": a.party_id,
        "forwarder": b.party_id,
        "third_party": c.party_id,
        "purpose": PURPOSE,
        "marking": MARKING,
        "created": NOW + timedelta(hours=2),
    }
    values.update(changes)
    return ForwardStatement(**values)


@dataclasses.dataclass
class World:
    made: Made
    c: Party
    token: Envelope

    @property
    def trusted(self):
        return [*self.made.trusted, descriptor(self.c)]

    def verify(self, data: bytes | None = None):
        return verify_bundle(self.made.data if data is None else data, self.trusted)

    def failures(self, data: bytes | None = None) -> tuple[str, ...]:
        with pytest.raises(BundleVerificationError) as caught:
            self.verify(data)
        return caught.value.failures


def world(
    a: Party,
    b: Party,
    c: Party,
    *,
    signers: tuple[SigningKey, ...] | None = None,
    revoke: bool = False,
    forward: bool = False,
    **token_changes,
) -> World:
    """A bundle of A's message to B, holding A's consent for B to pass it to C; with
    `revoke` A's revocation of it, with `forward` B's forward statement and C's receipt."""
    made_token: list[Envelope] = []

    def consent(statement: Envelope) -> dict[str, tuple[Envelope, ...]]:
        token = token_for(a, b, c, statement, **token_changes)
        envelope = issue_consent(token, signers or (a.seal, a.signatory))
        made_token.append(envelope)
        extra: dict[str, tuple[Envelope, ...]] = {"consent_tokens": (envelope,)}
        if revoke:
            revocation = ConsentRevocation(token.nonce, a.party_id, NOW + timedelta(hours=3))
            extra["revocations"] = (issue_revocation(revocation, [a.seal]),)
        if forward:
            fwd = forward_for(a, b, c, statement, envelope)
            extra["forwards"] = (sign_forward(fwd, [b.seal]),)
        return extra

    def third_party_receipt(statement: Envelope) -> tuple[Envelope, ...]:
        receipt = Receipt(
            message_id="3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
            sender=b.party_id,
            receiver=c.party_id,
            statement_sha256=statement.payload_sha256,
            envelope_sha256=statement.sha256,
            received_at=NOW + timedelta(hours=2, seconds=1),
            verdict=Verdict.ACCEPTED,
        )
        return (issue_receipt(receipt, [c.seal]),)

    made = make_bundle(
        a, b, consent=consent, extra_receipts=third_party_receipt if forward else None
    )
    return World(made, c, made_token[0])


def test_bundle_with_a_valid_consent_token_verifies_and_proves_it(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c)
    evidence = w.verify()
    text = "\n".join(evidence.proven)
    assert f"was signed by the seal of {party_a.party_id} and Иванов Иван Иванович (head)" in text
    assert (
        f"{party_b.party_id} may pass message 3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77 to the "
        f"third party {party_c.party_id} for the purpose «{PURPOSE}» (art. 7.3)"
    ) in text
    assert "marked CONFIDENTIAL/ORCON, valid until 2026-12-02T12:00:00" in text
    assert Bundle.from_bytes(w.made.data).to_bytes() == w.made.data
    assert b'"forwards"' not in w.made.data and b'"consent_revocations"' not in w.made.data


def test_use_consent_is_worded_as_a_consent_to_another_purpose(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    # Art. 7.2: the third party is the holder itself: use for another purpose.
    w = world(party_a, party_b, party_c, third_party=party_b.party_id)
    assert any("may use the content" in p and "(art. 7.2)" in p for p in w.verify().proven)


def test_consent_sealed_without_a_signatory_still_verifies(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, signers=(party_a.seal,))
    proof = next(p for p in w.verify().proven if p.startswith("Consent "))
    assert f"signed by the seal of {party_a.party_id} on" in proof


def test_attack_consent_token_signed_by_the_forwarder_instead_of_originator_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    # Art. 7.3: the consent is the providing Party's; the forwarder cannot grant it itself.
    w = world(party_a, party_b, party_c, signers=(party_b.seal,))
    assert any(
        "consent token does not verify" in f and f"not {party_a.party_id}'s" in f
        for f in w.failures()
    )


def test_attack_consent_token_issued_by_the_forwarder_in_its_own_name_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(
        party_a,
        party_b,
        party_c,
        signers=(party_b.seal,),
        originator=party_b.party_id,
        forwarder=party_c.party_id,
        third_party="четвёртая-сторона",
    )
    assert any("consent token does not verify" in f for f in w.failures())


def test_attack_consent_token_cosigned_by_the_forwarder_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, signers=(party_a.seal, party_b.seal))
    assert any("not a key of" in f or f"not {party_a.party_id}'s" in f for f in w.failures())


def test_attack_consent_token_signed_by_the_originators_head_alone_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, signers=(party_a.signatory,))
    assert any("not sealed by" in f for f in w.failures())


def test_attack_consent_token_for_another_message_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, statement_sha256="ab" * 32)
    assert any(
        "consent token does not verify" in f and "another message" in f for f in w.failures()
    )
    w = world(party_a, party_b, party_c, message_id="другое-сообщение")
    assert any("another message" in f for f in w.failures())


def test_attack_consent_token_with_one_byte_tampered_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c)
    payload = bytearray(w.token.payload)
    at = payload.index(PURPOSE.encode()[:4])
    payload[at] ^= 0x01
    tampered = dataclasses.replace(w.token, payload=bytes(payload))
    data = dataclasses.replace(w.made.bundle, consent_tokens=(tampered,)).to_bytes()
    assert any(
        "consent token does not verify" in f and "does not verify" in f for f in w.failures(data)
    )


def test_revocation_in_the_bundle_is_proven(party_a: Party, party_b: Party, party_c: Party) -> None:
    w = world(party_a, party_b, party_c, revoke=True)
    evidence = w.verify()
    assert any(
        p.startswith(f"{party_a.party_id} revoked consent") and "2026-11-25T15:00:00" in p
        for p in evidence.proven
    )


def test_attack_revocation_signed_by_the_forwarder_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, revoke=True)
    revocation = w.made.bundle.revocations[0]
    forged = issue_revocation(
        ConsentRevocation.from_payload(json.loads(revocation.payload)), [party_b.seal]
    )
    data = dataclasses.replace(w.made.bundle, revocations=(forged,)).to_bytes()
    assert any("revocation does not verify" in f for f in w.failures(data))


def test_forward_statement_and_third_party_receipt_are_proven(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    text = "\n".join(w.verify().proven)
    assert f"{party_b.party_id} sealed that it passed message" in text
    assert f"to {party_c.party_id} on 2026-11-25T14:00:00" in text
    assert f"{party_c.party_id} signed a receipt" in text and f"from {party_b.party_id}" in text


def test_attack_third_party_receipt_without_a_forward_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    data = dataclasses.replace(w.made.bundle, forwards=()).to_bytes()
    assert any("a receipt does not verify" in f for f in w.failures(data))


def test_attack_forward_statement_sealed_by_the_third_party_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    fwd = w.made.bundle.forwards[0]
    forged = sign_forward(ForwardStatement.from_payload(json.loads(fwd.payload)), [party_c.seal])
    data = dataclasses.replace(w.made.bundle, forwards=(forged,)).to_bytes()
    assert any("forward statement does not verify" in f for f in w.failures(data))


def test_attack_forward_without_its_consent_token_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    data = dataclasses.replace(w.made.bundle, consent_tokens=()).to_bytes()
    assert any("not in the bundle" in f for f in w.failures(data))


def test_attack_forward_to_another_third_party_than_consented_is_refused(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c, forward=True)
    statement = w.made.bundle.statement
    fwd = forward_for(party_a, party_b, party_c, statement, w.token, third_party="чужая-сторона")
    data = dataclasses.replace(
        w.made.bundle, forwards=(sign_forward(fwd, [party_b.seal]),), receipts=()
    ).to_bytes()
    assert any("another forwarder, third party or purpose" in f for f in w.failures(data))


def test_attack_empty_optional_lists_are_another_byte_form(
    party_a: Party, party_b: Party, party_c: Party
) -> None:
    w = world(party_a, party_b, party_c)
    data = w.made.data.replace(b'"exported_by"', b'"forwards":[],"exported_by"')
    assert any("malformed" in f for f in w.failures(data))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_attack_one_byte_flipped_anywhere_in_a_consent_bundle_fails(
    party_a: Party, party_b: Party, party_c: Party, position: int, value: int
) -> None:
    w = WORLD.get(id(party_a)) or WORLD.setdefault(
        id(party_a), world(party_a, party_b, party_c, revoke=True, forward=True)
    )
    w.verify()
    data = bytearray(w.made.data)
    data[position % len(data)] ^= value
    try:
        evidence = w.verify(bytes(data))
    except BundleVerificationError:
        return
    # Issue 12: only a cosignature's witness name may change without a failure; it then
    # names a Party the auditor did not pass, reported, and the real cosignature is gone.
    assert any("whose descriptor was not passed" in n for n in evidence.warnings)
    assert not any("witnessed that checkpoint" in p for p in evidence.proven)


WORLD: dict[int, World] = {}
