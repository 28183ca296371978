"""Signed receipts: issued by the receiver, bound to the statement that was sent."""

from __future__ import annotations

import pytest

from accord.crypto import (
    Envelope,
    Receipt,
    Verdict,
    VerificationError,
    issue_receipt,
    verify_receipt,
)

from .conftest import NOW, send


def _receipt(sent, sender, receiver, **changes) -> Receipt:
    env = sent.sealed.sign([sender.seal])
    values = {
        "message_id": sent.sealed.statement.message_id,
        "sender": sender.party_id,
        "receiver": receiver.party_id,
        "statement_sha256": env.payload_sha256,
        "envelope_sha256": env.sha256,
        "received_at": NOW,
        "verdict": Verdict.ACCEPTED,
    }
    values.update(changes)
    return Receipt(**values)


def test_receipt_round_trip(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    r = _receipt(sent, party_a, party_b)
    env = Envelope.from_bytes(issue_receipt(r, [party_b.seal]).to_bytes())
    v = verify_receipt(
        env,
        [party_b.seal.verify_key()],
        receiver=party_b.party_id,
        message_id=r.message_id,
        statement_sha256=r.statement_sha256,
    )
    assert v.receipt == r
    assert v.evidence.key_ids == {party_b.seal.key_id}


def test_receipt_signed_by_sender_itself_refused(party_a, party_b) -> None:
    # The sender cannot manufacture the receiver's acknowledgement.
    sent = send(party_a, party_b, [])
    r = _receipt(sent, party_a, party_b)
    with pytest.raises(VerificationError):
        verify_receipt(
            issue_receipt(r, [party_a.seal]),
            [party_b.seal.verify_key()],
            receiver=party_b.party_id,
            message_id=r.message_id,
            statement_sha256=r.statement_sha256,
        )


def test_receipt_for_another_message_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    r = _receipt(sent, party_a, party_b, message_id="other-id")
    with pytest.raises(VerificationError, match="another message"):
        verify_receipt(
            issue_receipt(r, [party_b.seal]),
            [party_b.seal.verify_key()],
            receiver=party_b.party_id,
            message_id=sent.sealed.statement.message_id,
            statement_sha256=r.statement_sha256,
        )


def test_receipt_for_altered_statement_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    r = _receipt(sent, party_a, party_b, statement_sha256="0" * 64)
    with pytest.raises(VerificationError, match="does not bind"):
        verify_receipt(
            issue_receipt(r, [party_b.seal]),
            [party_b.seal.verify_key()],
            receiver=party_b.party_id,
            message_id=r.message_id,
            statement_sha256=sent.sealed.sign([party_a.seal]).payload_sha256,
        )


def test_message_envelope_presented_as_receipt_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    env = sent.sealed.sign([party_b.seal])
    with pytest.raises(VerificationError, match="payload type"):
        verify_receipt(
            env,
            [party_b.seal.verify_key()],
            receiver=party_b.party_id,
            message_id=sent.sealed.statement.message_id,
            statement_sha256=env.payload_sha256,
        )


def test_refused_verdict_round_trips(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    r = _receipt(sent, party_a, party_b, verdict=Verdict.REFUSED)
    v = verify_receipt(
        issue_receipt(r, [party_b.seal]),
        [party_b.seal.verify_key()],
        receiver=party_b.party_id,
        message_id=r.message_id,
        statement_sha256=r.statement_sha256,
    )
    assert v.receipt.verdict is Verdict.REFUSED
