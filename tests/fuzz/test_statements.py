"""Fuzz properties of the signed-statement parsers (envelopes, messages, receipts,
consent tokens, revocations, forwards, descriptors, audit leaves, bundles).

For each parser:
- a valid object generated from its fields round-trips: parse(serialise(x)) == x, and
  the bytes are the same where the format is canonical;
- arbitrary bytes, and structured mutations of a valid payload (a field replaced by any
  JSON value, removed, or an unknown one added), either parse into a fully valid object
  or raise the one documented error, `VerificationError`; nothing else may escape (no
  KeyError, TypeError, RecursionError, UnicodeDecodeError, bare ValueError);
- a valid signed object changed in any byte never verifies.
Profiles and budgets: `tests/fuzz/_settings.py`.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.crypto import (
    Envelope,
    Receipt,
    Statement,
    Verdict,
    VerificationError,
    issue_receipt,
    verify_envelope,
    verify_message,
    verify_receipt,
)
from accord.crypto.bundle import Bundle, LogEntry, LogEvent
from accord.crypto.canonical import dumps, loads_canonical
from accord.crypto.consent import (
    ConsentRevocation,
    ConsentToken,
    ForwardStatement,
    issue_consent,
    issue_revocation,
    sign_forward,
    verify_consent,
    verify_revocation,
)
from accord.crypto.descriptor import NodeDescriptor, Signatory, verify_descriptor
from accord.crypto.envelope import sign_envelope
from accord.crypto.sealed import PartDigest, SealedMessage
from accord.crypto.tls import TlsIdentity

from ._objects import (
    KEYS,
    RECIPIENT,
    assert_valid_envelope,
    digests,
    envelopes,
    idents,
    is_hex64,
    is_ident,
    json_objects,
    json_values,
    lifetimes,
    markings,
    mutations,
    texts,
    times,
)
from ._settings import FUZZ, FUZZ_SLOW

SEAL, SIGNATORY, OTHER = KEYS[0], KEYS[1], KEYS[2]
NOW = datetime(2026, 12, 5, 13, 0, 0, tzinfo=UTC)


def _parses_or_refuses(parse: Any, data: Any) -> Any:
    """`parse(data)`, or None when it raised the documented `VerificationError`."""
    try:
        return parse(data)
    except VerificationError:
        return None


@st.composite
def field_mutations(draw: st.DrawFn, payload: dict[str, Any]) -> dict[str, Any]:
    """A payload with one field replaced by any JSON value, removed, or one added."""
    out = dict(payload)
    kind = draw(st.sampled_from(["replace", "replace", "remove", "add", "nest"]))
    key = draw(st.sampled_from(sorted(out)))
    if kind == "replace":
        out[key] = draw(json_values | st.sampled_from([True, False, 1, 0, -1, "", "\n"]))
    elif kind == "remove":
        del out[key]
    elif kind == "add":
        out[draw(texts)] = draw(json_values)
    else:
        # The same value with a trailing newline, an inner space, or wrapped in a list.
        value = out[key]
        if isinstance(value, str):
            out[key] = draw(st.sampled_from([value + "\n", " " + value, value + "\x00"]))
        else:
            out[key] = [value]
    return out


# --- Envelopes -----------------------------------------------------------------------------


@FUZZ
@given(envelopes())
def test_envelope_round_trip_is_byte_exact(envelope: Envelope) -> None:
    data = envelope.to_bytes()
    assert data == dumps(envelope.to_dict())
    parsed = Envelope.from_bytes(data)
    assert parsed == envelope
    assert parsed.to_bytes() == data
    assert Envelope.from_dict(envelope.to_dict()) == envelope


@FUZZ
@given(st.binary(max_size=600))
def test_envelope_arbitrary_bytes_parse_or_raise_verification_error(data: bytes) -> None:
    envelope = _parses_or_refuses(Envelope.from_bytes, data)
    if envelope is not None:
        assert_valid_envelope(envelope)
        assert envelope.to_bytes() == data


@FUZZ
@given(st.data())
def test_envelope_mutated_bytes_parse_or_raise_verification_error(data: st.DataObject) -> None:
    mutated = data.draw(mutations(data.draw(envelopes()).to_bytes()))
    envelope = _parses_or_refuses(Envelope.from_bytes, mutated)
    if envelope is not None:
        assert_valid_envelope(envelope)
        assert envelope.to_bytes() == mutated


@FUZZ
@given(st.data())
def test_envelope_fields_mutated_parse_or_raise_verification_error(data: st.DataObject) -> None:
    wire = data.draw(envelopes()).to_dict()
    wire["signatures"] = [data.draw(field_mutations(s)) for s in wire["signatures"][:1]]
    mutated = data.draw(field_mutations(wire))
    envelope = _parses_or_refuses(Envelope.from_dict, mutated)
    if envelope is not None:
        assert_valid_envelope(envelope)


@FUZZ
@given(json_objects, st.data())
def test_attack_signed_envelope_altered_never_verifies(payload: dict[str, Any], data: Any) -> None:
    signed = sign_envelope("application/vnd.accord.test+json", payload, [SEAL, SIGNATORY])
    mutated = data.draw(mutations(signed.to_bytes()))
    with pytest.raises(VerificationError):
        verify_envelope(
            Envelope.from_bytes(mutated),
            [SEAL.verify_key(), SIGNATORY.verify_key()],
            payload_type="application/vnd.accord.test+json",
            required=[SEAL.key_id, SIGNATORY.key_id],
        )


# --- Message statements --------------------------------------------------------------------


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    created = draw(times)
    part = st.builds(PartDigest, digests, st.integers(min_value=0, max_value=2**40))
    return Statement(
        message_id=draw(idents),
        sender=draw(idents),
        recipient=draw(idents),
        created=created,
        expires=created + draw(lifetimes()),
        marking=draw(markings | json_objects),
        purpose=draw(texts),
        type=draw(st.sampled_from(["request", "reply", "notice", "consent"]) | idents),
        in_reply_to=draw(st.none() | idents),
        body=draw(part),
        attachments=tuple(draw(st.lists(part, max_size=4))),
        key_commitment=draw(digests),
        extensions=draw(json_objects),
    )


def _statement_bytes(statement: Statement) -> bytes:
    return SealedMessage(statement, b"", b"").payload


def _assert_valid_statement(s: Statement) -> None:
    for name in ("message_id", "sender", "recipient", "type"):
        assert is_ident(getattr(s, name)), (name, getattr(s, name))
    assert s.in_reply_to is None or is_ident(s.in_reply_to)
    assert s.expires > s.created
    for part in s.parts:
        assert is_hex64(part.sha256) and type(part.size) is int and part.size >= 0
    assert is_hex64(s.key_commitment)
    assert isinstance(s.marking, dict) and isinstance(s.extensions, dict)
    # Canonical: a parsed statement writes back to the bytes that were signed.
    assert Statement.from_payload(loads_canonical(_statement_bytes(s))) == s


@FUZZ
@given(statements())
def test_statement_round_trip_is_byte_exact(statement: Statement) -> None:
    data = _statement_bytes(statement)
    assert data == dumps(statement.to_payload())
    assert Statement.from_payload(loads_canonical(data)) == statement


@FUZZ
@given(st.data())
def test_statement_fields_mutated_parse_or_raise_verification_error(data: Any) -> None:
    payload = data.draw(statements()).to_payload()
    if data.draw(st.booleans()):
        payload["body"] = data.draw(field_mutations(payload["body"]))
    else:
        payload = data.draw(field_mutations(payload))
    statement = _parses_or_refuses(Statement.from_payload, payload)
    if statement is not None:
        _assert_valid_statement(statement)
        assert statement.to_payload() == payload


@FUZZ_SLOW
@given(statements(), st.data())
def test_attack_signed_statement_altered_never_verifies(statement: Statement, data: Any) -> None:
    signed = SealedMessage(statement, b"", b"").sign([SEAL, SIGNATORY])
    mutated = data.draw(mutations(signed.to_bytes()))
    with pytest.raises(VerificationError):
        verify_message(
            Envelope.from_bytes(mutated),
            [SEAL.verify_key(), SIGNATORY.verify_key()],
            sender=statement.sender,
            recipient=statement.recipient,
            now=statement.created,
            required=[SEAL.key_id, SIGNATORY.key_id],
        )


# --- Receipts ------------------------------------------------------------------------------

receipts = st.builds(
    Receipt,
    message_id=idents,
    sender=idents,
    receiver=idents,
    statement_sha256=digests,
    envelope_sha256=digests,
    received_at=times,
    verdict=st.sampled_from(Verdict),
)


@FUZZ
@given(receipts)
def test_receipt_round_trip_is_byte_exact(receipt: Receipt) -> None:
    envelope = issue_receipt(receipt, [SEAL])
    assert Receipt.from_payload(loads_canonical(envelope.payload)) == receipt
    assert dumps(Receipt.from_payload(loads_canonical(envelope.payload)).to_payload()) == (
        envelope.payload
    )


@FUZZ
@given(receipts, st.data())
def test_receipt_fields_mutated_parse_or_raise_verification_error(
    receipt: Receipt, data: Any
) -> None:
    payload = data.draw(field_mutations(receipt.to_payload()))
    parsed = _parses_or_refuses(Receipt.from_payload, payload)
    if parsed is not None:
        for name in ("message_id", "sender", "receiver"):
            assert is_ident(getattr(parsed, name))
        assert is_hex64(parsed.statement_sha256) and is_hex64(parsed.envelope_sha256)
        assert parsed.to_payload() == payload


@FUZZ
@given(receipts, st.data())
def test_attack_receipt_altered_never_verifies(receipt: Receipt, data: Any) -> None:
    mutated = data.draw(mutations(issue_receipt(receipt, [SEAL]).to_bytes()))
    with pytest.raises(VerificationError):
        verify_receipt(
            Envelope.from_bytes(mutated),
            [SEAL.verify_key()],
            receiver=receipt.receiver,
            message_id=receipt.message_id,
            statement_sha256=receipt.statement_sha256,
        )


# --- Consent tokens, revocations, forward statements ---------------------------------------


@st.composite
def tokens(draw: st.DrawFn) -> ConsentToken:
    issued = draw(times)
    # The originator is neither the forwarder nor the third party (issue_consent checks).
    originator, forwarder = draw(st.lists(idents, min_size=2, max_size=2, unique=True))
    return ConsentToken(
        nonce=draw(digests),
        message_id=draw(idents),
        statement_sha256=draw(digests),
        originator=originator,
        forwarder=forwarder,
        third_party=draw(idents.filter(lambda p: p != originator)),
        purpose=draw(texts.filter(lambda t: t.strip())),
        marking=draw(markings),
        issued=issued,
        expires=issued + draw(lifetimes()),
    )


revocations = st.builds(ConsentRevocation, nonce=digests, originator=idents, revoked=times)
forwards = st.builds(
    ForwardStatement,
    forward_id=idents,
    message_id=idents,
    statement_sha256=digests,
    envelope_sha256=digests,
    consent_sha256=digests,
    header_sha256=digests,
    originator=idents,
    forwarder=idents,
    third_party=idents,
    purpose=texts,
    marking=markings,
    created=times,
)
STATEMENT_KINDS = {
    "consent token": (tokens(), ConsentToken),
    "revocation": (revocations, ConsentRevocation),
    "forward": (forwards, ForwardStatement),
    "receipt": (receipts, Receipt),
}


@pytest.mark.parametrize("kind", sorted(STATEMENT_KINDS))
@FUZZ
@given(data=st.data())
def test_consent_statements_round_trip_is_byte_exact(kind: str, data: Any) -> None:
    strategy, cls = STATEMENT_KINDS[kind]
    value = data.draw(strategy)
    payload = dumps(value.to_payload())
    parsed = cls.from_payload(loads_canonical(payload))
    assert parsed == value
    assert dumps(parsed.to_payload()) == payload


@pytest.mark.parametrize("kind", sorted(STATEMENT_KINDS))
@FUZZ
@given(data=st.data())
def test_consent_statements_fields_mutated_parse_or_raise_verification_error(
    kind: str, data: Any
) -> None:
    strategy, cls = STATEMENT_KINDS[kind]
    payload = data.draw(field_mutations(data.draw(strategy).to_payload()))
    parsed = _parses_or_refuses(cls.from_payload, payload)
    if parsed is not None:
        # Fully valid: every field checked, so it writes back to exactly what was read.
        assert parsed.to_payload() == payload
        for field in dataclasses.fields(parsed):
            value = getattr(parsed, field.name)
            if field.name.endswith(("sha256", "nonce")):
                assert is_hex64(value), (field.name, value)
            elif field.name in ("message_id", "originator", "forwarder", "third_party"):
                assert is_ident(value), (field.name, value)


@FUZZ
@given(tokens(), st.data())
def test_attack_consent_token_altered_never_verifies(token: ConsentToken, data: Any) -> None:
    mutated = data.draw(mutations(issue_consent(token, [SEAL, SIGNATORY]).to_bytes()))
    with pytest.raises(VerificationError):
        verify_consent(
            Envelope.from_bytes(mutated),
            originator=token.originator,
            seals={SEAL.key_id: SEAL.verify_key()},
            signatories={SIGNATORY.key_id: SIGNATORY.verify_key()},
            signatory_required=True,
            now=token.issued,
        )


@FUZZ
@given(revocations, st.data())
def test_attack_consent_revocation_altered_never_verifies(
    revocation: ConsentRevocation, data: Any
) -> None:
    mutated = data.draw(mutations(issue_revocation(revocation, [SEAL]).to_bytes()))
    with pytest.raises(VerificationError):
        verify_revocation(
            Envelope.from_bytes(mutated),
            originator=revocation.originator,
            seals={SEAL.key_id: SEAL.verify_key()},
        )


@FUZZ
@given(forwards, st.data())
def test_attack_forward_statement_altered_never_verifies(
    forward: ForwardStatement, data: Any
) -> None:
    from accord.crypto.consent import FORWARD_TYPE

    mutated = data.draw(mutations(sign_forward(forward, [SEAL]).to_bytes()))
    with pytest.raises(VerificationError):
        evidence = verify_envelope(
            Envelope.from_bytes(mutated), [SEAL.verify_key()], payload_type=FORWARD_TYPE
        )
        ForwardStatement.from_payload(evidence.statement)


# --- Descriptors -----------------------------------------------------------------------------

_TLS = TlsIdentity.generate("МВД-РБ", hosts=["127.0.0.1"])
_TLS_PEM = _TLS.certificate_pem.decode("ascii")


@st.composite
def descriptors(draw: st.DrawFn) -> NodeDescriptor:
    signatories = draw(
        st.lists(
            st.builds(Signatory, texts, texts, st.sampled_from([k.verify_key() for k in KEYS])),
            max_size=3,
        )
    )
    return NodeDescriptor(
        party=draw(idents),
        name=draw(texts),
        endpoint=draw(texts),
        seal=SEAL.verify_key(),
        encryption=RECIPIENT.recipient(),
        tls_certificate_pem=_TLS_PEM,
        tls_certificate_sha256=_TLS.fingerprint,
        signatories=tuple(signatories),
        created=draw(times),
        profile_sha256=draw(st.none() | digests),
    )


@FUZZ
@given(descriptors())
def test_descriptor_round_trip_is_byte_exact(descriptor: NodeDescriptor) -> None:
    envelope = descriptor.sign(SEAL)
    assert verify_descriptor(envelope, fingerprint=descriptor.fingerprint) == descriptor
    assert dumps(NodeDescriptor.from_payload(loads_canonical(envelope.payload)).to_payload()) == (
        envelope.payload
    )


@FUZZ
@given(descriptors(), st.data())
def test_descriptor_fields_mutated_parse_or_raise_verification_error(
    descriptor: NodeDescriptor, data: Any
) -> None:
    payload = descriptor.to_payload()
    target = data.draw(st.sampled_from(["top", "seal", "encryption", "signatory"]))
    if target == "top" or (target == "signatory" and not payload["signatories"]):
        payload = data.draw(field_mutations(payload))
    elif target == "signatory":
        payload["signatories"][0] = data.draw(field_mutations(payload["signatories"][0]))
    else:
        payload[target] = data.draw(field_mutations(payload[target]))
    parsed = _parses_or_refuses(NodeDescriptor.from_payload, payload)
    if parsed is not None:
        assert is_ident(parsed.party) and is_hex64(parsed.tls_certificate_sha256)
        assert NodeDescriptor.from_payload(parsed.to_payload()) == parsed
        if target == "top":
            # A public key object may leave out its key id (derived from the key), so only
            # the top-level fields must write back exactly.
            assert parsed.to_payload() == payload


@FUZZ_SLOW
@given(descriptors(), st.data())
def test_attack_descriptor_altered_never_verifies(descriptor: NodeDescriptor, data: Any) -> None:
    mutated = data.draw(mutations(descriptor.sign(SEAL).to_bytes()))
    with pytest.raises(VerificationError):
        verify_descriptor(Envelope.from_bytes(mutated), fingerprint=descriptor.fingerprint)


# --- Audit leaves and bundles -----------------------------------------------------------------

_opt = st.none() | idents
events = st.builds(
    LogEvent,
    kind=st.text(min_size=1, max_size=64),
    at=times,
    node=idents,
    message_id=_opt,
    sender=_opt,
    recipient=_opt,
    peer=_opt,
    user=st.none() | texts,
    digests=st.dictionaries(texts, digests, max_size=3),
    marking=st.none() | markings,
    verdict=st.none() | texts,
    detail=st.dictionaries(
        texts, texts | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1), max_size=3
    ),
)


@FUZZ
@given(events)
def test_log_event_round_trip_is_byte_exact(event: LogEvent) -> None:
    leaf = event.to_leaf()
    parsed = LogEvent.from_leaf(leaf)
    assert parsed == event
    assert parsed.to_leaf() == leaf


@FUZZ
@given(events, st.data())
def test_log_event_fields_mutated_parse_or_raise_verification_error(
    event: LogEvent, data: Any
) -> None:
    mutated = dumps(data.draw(field_mutations(event.to_payload())))
    parsed = _parses_or_refuses(LogEvent.from_leaf, mutated)
    if parsed is not None:
        assert parsed.to_leaf() == mutated
        assert is_ident(parsed.node)


@st.composite
def bundles(draw: st.DrawFn) -> Bundle:
    entry = st.builds(
        LogEntry,
        st.integers(min_value=0, max_value=2**53 - 1),
        st.binary(max_size=80),
        st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple),
    )
    few = st.lists(envelopes(max_signatures=2), max_size=2).map(tuple)
    return Bundle(
        message_id=draw(idents),
        exported_by=draw(idents),
        statement=draw(envelopes(max_signatures=3)),
        receipts=draw(few),
        consent_tokens=draw(few),
        checkpoint=draw(texts),
        entries=tuple(draw(st.lists(entry, max_size=3))),
        revocations=draw(few),
        forwards=draw(few),
    )


@FUZZ
@given(bundles())
def test_bundle_round_trip_is_byte_exact(bundle: Bundle) -> None:
    data = bundle.to_bytes()
    parsed = Bundle.from_bytes(data)
    assert parsed == bundle
    assert parsed.to_bytes() == data


@FUZZ
@given(bundles(), st.data())
def test_bundle_fields_mutated_parse_or_raise_verification_error(bundle: Bundle, data: Any) -> None:
    payload = bundle.to_payload()
    if data.draw(st.booleans()):
        payload["log"] = data.draw(field_mutations(payload["log"]))
    else:
        payload = data.draw(field_mutations(payload))
    mutated = dumps(payload)
    parsed = _parses_or_refuses(Bundle.from_bytes, mutated)
    if parsed is not None:
        assert parsed.to_bytes() == mutated
        assert is_ident(parsed.message_id) and is_ident(parsed.exported_by)


@FUZZ
@given(st.data())
def test_bundle_mutated_bytes_parse_or_raise_verification_error(data: Any) -> None:
    mutated = data.draw(mutations(data.draw(bundles()).to_bytes()))
    parsed = _parses_or_refuses(Bundle.from_bytes, mutated)
    if parsed is not None:
        assert parsed.to_bytes() == mutated


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_attack_deeply_nested_json_refused_as_malformed(depth: int) -> None:
    # Found by the fuzzers: the JSON decoder's RecursionError escaped every parser of
    # signed statements (and made the peer API answer 500 to a crafted envelope).
    for nested in (b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth):
        for parse in (loads_canonical, Envelope.from_bytes, Bundle.from_bytes, LogEvent.from_leaf):
            with pytest.raises(VerificationError):
                parse(nested)


def test_attack_audit_leaf_with_null_field_refused() -> None:
    # Found by the fuzzers: `"peer":null` (or empty digests) parsed as the leaf without it,
    # a second byte form of one audit event in a bundle that promises one.
    leaf = LogEvent("user.added", NOW, "МВД-РБ").to_payload()
    for extra in ({"peer": None}, {"digests": {}}, {"detail": {}}, {"marking": None}):
        with pytest.raises(VerificationError):
            LogEvent.from_leaf(dumps({**leaf, **extra}))


@pytest.mark.parametrize(
    "field", ["message_id", "sender", "receiver", "statement_sha256", "envelope_sha256"]
)
def test_attack_identifier_with_trailing_newline_refused(field: str) -> None:
    # Found by the fuzzers: `$` in the identifier and digest patterns also matched before
    # a final newline, so "МВД-РБ\n" parsed as a party id distinct from "МВД-РБ".
    payload = Receipt(
        "id-1", "МВД-РБ", "Росгвардия", "a" * 64, "b" * 64, NOW, Verdict.ACCEPTED
    ).to_payload()
    payload[field] += "\n"
    with pytest.raises(VerificationError):
        Receipt.from_payload(payload)


@pytest.mark.parametrize("payload_type", ["application/x\n", "t\n"])
def test_attack_payload_type_with_trailing_newline_refused(payload_type: str) -> None:
    wire = sign_envelope("t", {"a": 1}, [SEAL]).to_dict()
    with pytest.raises(VerificationError):
        Envelope.from_bytes(dumps({**wire, "payloadType": payload_type}))
    wire["signatures"][0]["keyid"] += "\n"
    with pytest.raises(VerificationError):
        Envelope.from_bytes(dumps(wire))


@FUZZ
@given(
    st.one_of(statements(), descriptors(), *(strategy for strategy, _ in STATEMENT_KINDS.values()))
)
def test_attack_version_true_for_one_refused(value: Any) -> None:
    # Found by the fuzzers: `data["v"] != 1` let JSON `true` pass as version 1 (True == 1
    # in Python), a second byte form of the same signed statement.
    payload = {**value.to_payload(), "v": True}
    with pytest.raises(VerificationError):
        type(value).from_payload(payload)
