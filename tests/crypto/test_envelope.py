"""DSSE envelopes: PAE, several signatures, evidence, and the attacks on them."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.crypto import (
    Envelope,
    Signature,
    SigningKey,
    VerificationError,
    canonical_json,
    pae,
    sign_envelope,
    verify_envelope,
)
from accord.crypto.canonical import loads_canonical
from accord.crypto.envelope import _from_plain_wire

T = "application/vnd.accord.test+json; version=1"
PAYLOAD = {"текст": "Запрос о содействии", "n": 1}


@pytest.fixture
def seal() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def signatory() -> SigningKey:
    return SigningKey.generate()


def test_pae_matches_dsse_spec_example() -> None:
    # The example of the DSSE v1 protocol document.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_sign_and_verify_returns_evidence(seal, signatory) -> None:
    env = sign_envelope(T, PAYLOAD, [signatory, seal])
    ev = verify_envelope(
        Envelope.from_bytes(env.to_bytes()),
        [seal.verify_key(), signatory.verify_key()],
        payload_type=T,
        required=[seal.key_id, signatory.key_id],
    )
    assert ev.key_ids == {seal.key_id, signatory.key_id}
    assert ev.statement == PAYLOAD
    assert ev.payload == canonical_json(PAYLOAD)
    assert ev.envelope_sha256 == env.sha256
    assert ev.payload_sha256 == env.payload_sha256


def test_cosignature_keeps_payload_digest(seal, signatory) -> None:
    draft = sign_envelope(T, PAYLOAD, [signatory])
    both = draft.add_signatures([seal])
    assert both.payload_sha256 == draft.payload_sha256
    assert both.sha256 != draft.sha256
    ev = verify_envelope(
        both, [seal.verify_key(), signatory.verify_key()], payload_type=T, threshold=2
    )
    assert len(ev.key_ids) == 2


def test_payload_type_confusion_refused(seal) -> None:
    env = sign_envelope("application/vnd.accord.receipt+json; version=1", PAYLOAD, [seal])
    with pytest.raises(VerificationError, match="payload type"):
        verify_envelope(env, [seal.verify_key()], payload_type=T)


def test_signature_by_untrusted_key_proves_nothing(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    with pytest.raises(VerificationError, match="0 trusted"):
        verify_envelope(env, [SigningKey.generate().verify_key()], payload_type=T)


def test_stripped_required_signature_refused(seal, signatory) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    with pytest.raises(VerificationError, match="missing required"):
        verify_envelope(
            env,
            [seal.verify_key(), signatory.verify_key()],
            payload_type=T,
            required=[signatory.key_id],
        )


def test_payload_altered_after_signing_refused(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    forged = Envelope(env.payload_type, canonical_json(dict(PAYLOAD, n=2)), env.signatures)
    with pytest.raises(VerificationError, match="does not verify"):
        verify_envelope(forged, [seal.verify_key()], payload_type=T)


def test_bad_cosignature_by_trusted_key_fails_whole_envelope(seal, signatory) -> None:
    env = sign_envelope(T, PAYLOAD, [seal, signatory])
    sigs = list(env.signatures)
    sigs[1] = type(sigs[1])(sigs[1].keyid, bytes(64))
    forged = Envelope(env.payload_type, env.payload, tuple(sigs))
    with pytest.raises(VerificationError):
        verify_envelope(forged, [seal.verify_key(), signatory.verify_key()], payload_type=T)


def test_signature_moved_to_other_payload_type_refused(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    other = "application/vnd.accord.other+json; version=1"
    moved = Envelope(other, env.payload, env.signatures)
    with pytest.raises(VerificationError):
        verify_envelope(moved, [seal.verify_key()], payload_type=other)


def test_non_canonical_envelope_refused(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    loose = json.dumps(env.to_dict(), indent=1).encode()
    with pytest.raises(VerificationError, match="canonical"):
        Envelope.from_bytes(loose)


def test_non_canonical_payload_refused(seal) -> None:
    loose = b'{ "n": 1 }'
    with pytest.raises(VerificationError):
        sign_envelope(T, loose, [seal])
    sig = seal.sign(pae(T, loose))
    doc = {
        "payload": base64.b64encode(loose).decode(),
        "payloadType": T,
        "signatures": [{"keyid": seal.key_id, "sig": base64.b64encode(sig).decode()}],
    }
    env = Envelope.from_bytes(canonical_json(doc))
    with pytest.raises(VerificationError, match="canonical"):
        verify_envelope(env, [seal.verify_key()], payload_type=T)


def test_duplicate_json_keys_refused() -> None:
    with pytest.raises(VerificationError, match="duplicate"):
        Envelope.from_bytes(b'{"payload":"","payload":"","payloadType":"t","signatures":[]}')


def test_duplicate_signer_refused(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal])
    with pytest.raises(VerificationError, match="same key"):
        Envelope(env.payload_type, env.payload, env.signatures * 2)


def test_envelope_without_signatures_cannot_exist() -> None:
    with pytest.raises(VerificationError):
        Envelope(T, b"{}", ())


def test_non_canonical_base64_refused(seal) -> None:
    env = sign_envelope(T, PAYLOAD, [seal]).to_dict()
    env["payload"] = env["payload"].rstrip("=") + "\n"
    with pytest.raises(VerificationError):
        Envelope.from_dict(env)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"payload": "", "payloadType": T},
        {"payload": 1, "payloadType": T, "signatures": []},
        {"payload": "", "payloadType": T, "signatures": [{"keyid": "x", "sig": ""}]},
        {"payload": "", "payloadType": "", "signatures": []},
        {"payload": "", "payloadType": T, "signatures": "no", "extra": 1},
    ],
)
def test_malformed_envelopes_refused(doc) -> None:
    with pytest.raises(VerificationError):
        Envelope.from_bytes(canonical_json(doc))


def test_floats_refused_in_payloads(seal) -> None:
    with pytest.raises(ValueError, match="float"):
        sign_envelope(T, {"x": 1.5}, [seal])


# --- The wire parser's fast path agrees with the general one --------------------------

_SIGNERS = [SigningKey(bytes([i]) * 32) for i in range(1, 4)]


def _general_from_bytes(data: bytes) -> Envelope:
    envelope = Envelope.from_dict(loads_canonical(data))
    envelope.__dict__["_canonical"] = bytes(data)
    return envelope


def _outcome(parse, data: bytes) -> tuple[object, ...]:
    try:
        envelope = parse(data)
    except VerificationError as e:
        return ("refused", str(e))
    return ("accepted", envelope.payload_type, envelope.payload, envelope.signatures)


def test_envelopes_we_write_take_the_fast_path(seal, signatory) -> None:
    # Otherwise the comparison below would only ever exercise the general parser.
    for signers in ([seal], [seal, signatory], _SIGNERS):
        wire = sign_envelope(T, PAYLOAD, signers).to_bytes()
        assert _from_plain_wire(Envelope, wire) is not None
        assert _outcome(Envelope.from_bytes, wire) == _outcome(_general_from_bytes, wire)


_JSON_BYTES = b'"\\,:{}[]=+/ Aa0\x7f\n\xd0\xff'


def test_every_single_byte_edit_gets_the_general_parsers_verdict(seal, signatory) -> None:
    # Whitespace slipped between tokens, a key renamed or reordered, a signature cut or
    # spliced, an escape in the payload type: every one-byte insertion, deletion and
    # replacement of a real envelope, by both parsers.
    for payload_type in (T, 'a"b\\c'):
        wire = sign_envelope(payload_type, PAYLOAD, [seal, signatory]).to_bytes()
        for at in range(len(wire) + 1):
            edited = [wire[:at] + bytes([b]) + wire[at:] for b in _JSON_BYTES]
            if at < len(wire):
                edited.append(wire[:at] + wire[at + 1 :])
                edited += [wire[:at] + bytes([b]) + wire[at + 1 :] for b in _JSON_BYTES]
            for data in edited:
                assert _outcome(Envelope.from_bytes, data) == _outcome(_general_from_bytes, data)


@settings(max_examples=600, deadline=None)
@given(
    payload_type=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7F), max_size=12),
    payload=st.binary(max_size=12),
    signers=st.integers(1, 3),
    edits=st.lists(
        st.tuples(
            st.sampled_from(["flip", "delete", "insert"]),
            st.integers(0, 10_000),
            st.sampled_from(list(_JSON_BYTES)),
        ),
        max_size=3,
    ),
)
def test_fast_path_accepts_and_refuses_what_the_general_parser_does(
    payload_type: str, payload: bytes, signers: int, edits: list[tuple[str, int, int]]
) -> None:
    # Forged and malformed wire bytes (altered, cut, spliced) get the same verdict and the
    # same error from both parsers: the fast path adds no accepted form.
    signatures = [
        {"keyid": s.key_id, "sig": base64.b64encode(s.sign(payload)).decode()}
        for s in _SIGNERS[:signers]
    ]
    doc = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": signatures,
    }
    wire = bytearray(canonical_json(doc))
    for op, at, byte in edits:
        at %= len(wire) + 1
        if op == "insert":
            wire.insert(at, byte)
        elif at < len(wire):
            if op == "delete":
                del wire[at]
            else:
                wire[at] ^= byte
    data = bytes(wire)
    assert _outcome(Envelope.from_bytes, data) == _outcome(_general_from_bytes, data)


@settings(max_examples=300, deadline=None)
@given(
    payload_type=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1),
    payload=st.binary(max_size=40),
    signers=st.integers(1, 3),
)
def test_written_form_is_the_canonical_json_of_the_envelope(
    payload_type: str, payload: bytes, signers: int
) -> None:
    # The direct writer and the JSON encoder give the same bytes, quotes and backslashes
    # in the payload type included; a leading space is refused by both alike.
    try:
        envelope = Envelope(
            payload_type,
            payload,
            tuple(Signature(s.key_id, s.sign(payload)) for s in _SIGNERS[:signers]),
        )
    except VerificationError:
        assert payload_type.startswith(" ")
        return
    assert envelope.to_bytes() == canonical_json(envelope.to_dict())
    assert Envelope.from_bytes(envelope.to_bytes()) == envelope
