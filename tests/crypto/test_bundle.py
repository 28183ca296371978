"""Evidence bundles verified offline with `crypto/` alone (DESIGN 7, issue 6).

The bundles here are built from keys and a Merkle tree in memory, exactly as a node builds
them, so every check of `verify_bundle` is exercised without a server or a database.
Agreement art. 4.4 (a request is signed by the head or a deputy) and art. 7.3 (consent
before any third party) are the rules the statement and consent checks trace to.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accord.crypto import Envelope, Receipt, VerificationError, issue_receipt
from accord.crypto.bundle import (
    Bundle,
    BundleVerificationError,
    LogEntry,
    LogEvent,
    log_origin,
    verify_bundle,
    witness_name,
)
from accord.crypto.checkpoint import Checkpoint, add_cosignature, sign_checkpoint
from accord.crypto.descriptor import NodeDescriptor, Signatory
from accord.crypto.merkle import MerkleTree, leaf_hash
from accord.crypto.receipts import Verdict

from .conftest import NOW, Party, send

HEAD = "Иванов Иван Иванович"


def descriptor(party: Party) -> NodeDescriptor:
    return NodeDescriptor(
        party=party.party_id,
        name=f"Узел {party.party_id}",
        endpoint="https://127.0.0.1:9443",
        seal=party.seal.verify_key(),
        encryption=party.encryption.recipient(),
        tls_certificate_pem="-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        tls_certificate_sha256="0" * 64,
        signatories=(Signatory(HEAD, "head", party.signatory.verify_key()),),
        created=NOW,
    )


@dataclasses.dataclass
class Made:
    data: bytes
    bundle: Bundle
    a: Party
    b: Party

    @property
    def trusted(self) -> list[NodeDescriptor]:
        return [descriptor(self.a), descriptor(self.b)]


def make_bundle(
    a: Party,
    b: Party,
    *,
    signers: Sequence[str] = ("signatory", "seal"),
    receipt_signer: str = "b",
    cosign: bool = True,
    other_message_entry: bool = False,
    consent_tokens: tuple[Envelope, ...] = (),
    consent: Callable[[Envelope], dict[str, tuple[Envelope, ...]]] | None = None,
    extra_receipts: Callable[[Envelope], tuple[Envelope, ...]] | None = None,
    legacy: bool = False,
) -> Made:
    """A bundle as a node exports it: every entry about the message chained to the one
    before it, up to the export's own entry (issue 12); with `legacy`, the first format,
    unchained and without the export's entry."""
    chained = not legacy
    sent = send(a, b, [])
    keys = {"signatory": a.signatory, "seal": a.seal}
    statement = sent.sealed.sign([keys[s] for s in signers])
    message_id = sent.sealed.statement.message_id
    receipt = issue_receipt(
        Receipt(
            message_id=message_id,
            sender=a.party_id,
            receiver=b.party_id,
            statement_sha256=statement.payload_sha256,
            envelope_sha256=statement.sha256,
            received_at=NOW + timedelta(seconds=2),
            verdict=Verdict.ACCEPTED,
        ),
        [b.seal if receipt_signer == "b" else a.seal],
    )
    events = [
        LogEvent("user.added", NOW, a.party_id, user="Аудитор", detail={"role": "auditor"}),
        LogEvent(
            "message.sent",
            NOW,
            a.party_id,
            message_id=message_id,
            sender=a.party_id,
            recipient=b.party_id,
            user="Глава",
            marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
            digests={"statement": statement.payload_sha256, "envelope": statement.sha256},
            chained=chained,
        ),
        LogEvent("message.read", NOW, a.party_id, message_id="другое-сообщение", user="Оператор"),
        LogEvent(
            "receipt.stored",
            NOW + timedelta(seconds=3),
            a.party_id,
            message_id=message_id,
            peer=b.party_id,
            verdict="accepted",
            digests={"receipt": receipt.sha256},
            chained=chained,
            prev=1 if chained else None,
        ),
        LogEvent("key.added", NOW, a.party_id, detail={"key_id": "ab" * 32}),
    ]
    if chained:
        events.append(
            LogEvent(
                "bundle.exported",
                NOW + timedelta(minutes=1),
                a.party_id,
                message_id=message_id,
                user="Аудитор",
                chained=True,
                prev=3,
            )
        )
    leaves = [e.to_leaf() for e in events]
    tree = MerkleTree(leaf_hash(leaf) for leaf in leaves)
    origin = log_origin(a.party_id)
    note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), origin, a.seal)
    if cosign:
        note = add_cosignature(note, witness_name(b.party_id), b.seal, NOW + timedelta(minutes=1))
    wanted = [1, 3] + ([] if legacy else [5]) + ([2] if other_message_entry else [])
    entries = tuple(LogEntry(i, leaves[i], tuple(tree.inclusion_proof(i))) for i in wanted)
    bundle = Bundle(
        message_id=message_id,
        exported_by=a.party_id,
        statement=statement,
        receipts=(receipt,),
        consent_tokens=consent_tokens,
        checkpoint=note.decode(),
        entries=entries,
    )
    if consent is not None:  # tokens, revocations, forwards that bind this statement
        bundle = dataclasses.replace(bundle, **consent(statement))
    if extra_receipts is not None:
        bundle = dataclasses.replace(bundle, receipts=(receipt, *extra_receipts(statement)))
    return Made(bundle.to_bytes(), bundle, a, b)


@pytest.fixture
def made(party_a: Party, party_b: Party) -> Made:
    return make_bundle(party_a, party_b)


def failures(made: Made, data: bytes | None = None, trusted=None) -> tuple[str, ...]:
    with pytest.raises(BundleVerificationError) as caught:
        verify_bundle(
            made.data if data is None else data, made.trusted if trusted is None else trusted
        )
    assert caught.value.failures
    return caught.value.failures


def test_valid_bundle_proves_statement_receipt_log_and_witness(made: Made) -> None:
    evidence = verify_bundle(made.data, made.trusted)
    text = "\n".join(evidence.proven)
    assert evidence.message_id == made.bundle.message_id
    assert f"signed by the seal of {made.a.party_id} and {HEAD} (head)" in text
    assert f"{made.b.party_id} signed a receipt" in text and "accepted it" in text
    assert "Log entry 1: message.sent by Глава" in text
    assert "Log entry 3: receipt.stored (verdict accepted)" in text
    assert f"{made.b.party_id} witnessed that checkpoint" in text
    assert "расследование дела № 17/2026" in text
    assert "every entry of" in text and "none was left out" in text
    assert evidence.warnings == ()
    assert evidence.checkpoint is not None and evidence.checkpoint.size == 6


def test_bundle_round_trips_byte_for_byte(made: Made) -> None:
    assert Bundle.from_bytes(made.data) == made.bundle
    assert Bundle.from_bytes(made.data).to_bytes() == made.data


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(position=st.integers(min_value=0), value=st.integers(min_value=1, max_value=255))
def test_attack_one_byte_flipped_anywhere_fails(made: Made, position: int, value: int) -> None:
    data = bytearray(made.data)
    at = position % len(data)
    data[at] ^= value
    try:
        evidence = verify_bundle(bytes(data), made.trusted)
    except BundleVerificationError:
        return
    # Issue 12: the one byte that may change without a failure is in a cosignature's
    # witness name; the line then stands for a Party the auditor did not pass, which is
    # reported and counts for nothing, and the real witness's cosignature is gone.
    assert any("whose descriptor was not passed" in w for w in evidence.warnings)
    assert not any("witnessed that checkpoint" in p for p in evidence.proven)


def test_attack_bundle_in_another_json_form_refused(made: Made) -> None:
    pretty = json.dumps(json.loads(made.data), indent=1, ensure_ascii=False).encode()
    assert "malformed" in failures(made, pretty)[0]


def test_attack_exporter_not_trusted_is_a_failure(made: Made) -> None:
    found = failures(made, trusted=[descriptor(made.b)])
    assert any(f"sender {made.a.party_id} is not trusted" in f for f in found)
    assert any(f"exporting node {made.a.party_id} is not trusted" in f for f in found)


def test_attack_request_without_head_or_deputy_fails(party_a: Party, party_b: Party) -> None:
    # Art. 4.4: a request is signed by the head of the requesting Party or his deputy.
    made = make_bundle(party_a, party_b, signers=("seal",))
    assert any("art. 4.4" in f for f in failures(made))


def test_attack_statement_signed_by_another_partys_key_fails(
    party_a: Party, party_b: Party
) -> None:
    made = make_bundle(party_a, party_b)
    extra = made.bundle.statement.add_signatures([party_b.seal])
    forged = dataclasses.replace(made.bundle, statement=extra).to_bytes()
    assert any("not its sender's trusted key" in f for f in failures(made, forged))


def test_attack_receipt_forged_by_the_sender_fails(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b, receipt_signer="a")
    assert any("a receipt does not verify" in f for f in failures(made))


def test_attack_log_entry_about_another_message_fails(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b, other_message_entry=True)
    assert any("log entry 2" in f and "another message" in f for f in failures(made))


def test_attack_entry_moved_to_another_index_fails(made: Made) -> None:
    first, second, _ = made.bundle.entries
    moved = dataclasses.replace(first, index=second.index)
    data = dataclasses.replace(made.bundle, entries=(moved,)).to_bytes()
    assert any("does not verify" in f for f in failures(made, data))


def test_cosignature_by_a_party_not_passed_is_reported_not_a_failure(
    party_a: Party, party_b: Party
) -> None:
    """Issue 12: a witness the auditor did not pass (`--trust`) neither breaks the
    bilateral check nor counts; the verifier says so."""
    made = make_bundle(party_a, party_b)
    stranger = Party("третья-сторона")
    note = add_cosignature(
        made.bundle.checkpoint, witness_name(stranger.party_id), stranger.seal, NOW
    )
    data = dataclasses.replace(made.bundle, checkpoint=note.decode()).to_bytes()
    evidence = verify_bundle(data, made.trusted)
    assert any("cosigned by третья-сторона" in w and "not passed" in w for w in evidence.warnings)
    assert not any("третья-сторона witnessed" in p for p in evidence.proven)


def test_attack_cosignature_under_a_trusted_witness_name_by_another_key_fails(
    party_a: Party, party_b: Party
) -> None:
    made = make_bundle(party_a, party_b)
    stranger = Party("третья-сторона")
    note = add_cosignature(
        made.bundle.checkpoint, witness_name(party_b.party_id), stranger.seal, NOW
    )
    data = dataclasses.replace(made.bundle, checkpoint=note.decode()).to_bytes()
    assert any("unknown key" in f for f in failures(made, data))


def test_attack_checkpoint_signed_by_the_witness_instead_fails(
    party_a: Party, party_b: Party
) -> None:
    made = make_bundle(party_a, party_b, cosign=False)
    origin = log_origin(party_a.party_id)
    checkpoint = Checkpoint.from_body(made.bundle.checkpoint.split("\n\n")[0] + "\n")
    forged = sign_checkpoint(checkpoint, origin, party_b.seal).decode()
    data = dataclasses.replace(made.bundle, checkpoint=forged).to_bytes()
    assert any("checkpoint does not verify" in f for f in failures(made, data))


def test_bundle_without_cosignature_verifies_with_a_warning(party_a: Party, party_b: Party) -> None:
    made = make_bundle(party_a, party_b, cosign=False)
    evidence = verify_bundle(made.data, made.trusted)
    assert any("No trusted witness" in w for w in evidence.warnings)


def test_attack_receipt_replayed_as_a_consent_token_is_refused(
    party_a: Party, party_b: Party
) -> None:
    # Art. 7.3: only a consent token of the originator is consent; the default verifier
    # (crypto.bundle.check_consent_token) refuses any other signed statement in its place.
    receipt = make_bundle(party_a, party_b).bundle.receipts[0]
    made = make_bundle(party_a, party_b, consent_tokens=(receipt,))
    assert any("consent token does not verify: payload type" in f for f in failures(made))


def test_consent_verifier_is_pluggable(party_a: Party, party_b: Party) -> None:
    receipt = make_bundle(party_a, party_b).bundle.receipts[0]
    made = make_bundle(party_a, party_b, consent_tokens=(receipt,))

    def refuse(envelope, statement_envelope, statement, descriptors):
        assert envelope == receipt and statement.message_id == made.bundle.message_id
        assert statement_envelope == made.bundle.statement
        raise VerificationError("срок истёк")

    with pytest.raises(BundleVerificationError, match="consent token does not verify: срок"):
        verify_bundle(made.data, made.trusted, consent=refuse)


def test_log_event_round_trip_and_strict_parse() -> None:
    event = LogEvent(
        "message.refused",
        NOW,
        "Росгвардия",
        message_id="сообщение-1",
        peer="МВД-РБ",
        verdict="refused",
        detail={"reason": "подпись не проверяется", "attempt": 2},
    )
    assert LogEvent.from_leaf(event.to_leaf()) == event
    payload = json.loads(event.to_leaf())
    payload["body"] = "секретный текст"
    with pytest.raises(VerificationError, match="unknown field"):
        LogEvent.from_leaf(
            json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        )


def test_log_event_has_no_room_for_long_content() -> None:
    with pytest.raises(VerificationError):
        LogEvent("message.sent", NOW, "A", detail={"reason": "х" * 501})


def test_log_and_witness_names_are_valid_note_key_names() -> None:
    assert log_origin("МВД+РБ 1") == "accord-audit:МВД%2BРБ%201"
    assert witness_name("A%B") == "accord-witness:A%25B"
    assert log_origin("A+") != log_origin("A%2B")
