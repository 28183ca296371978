"""Sealed messages end to end, and the named attacks on them."""

from __future__ import annotations

import io
from datetime import UTC, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accord.crypto import (
    Envelope,
    MessageOpener,
    PartDigest,
    Statement,
    VerificationError,
    canonical_json,
    verify_message,
)
from accord.crypto.sealed import _statement_json

from .conftest import BODY, NOW, send

CHUNK = 64 * 1024
SEALED_CHUNK = CHUNK + 16
DOC = "Справка о результатах проверки.\n".encode() * 5000  # about 2.6 chunks


def receive(
    sent, sender, recipient, *, envelope=None, header=None, body=None, attachments=None, now=NOW
):
    """The receiving node's whole pipeline: parse, verify, open every part."""
    env_bytes = (
        envelope
        if envelope is not None
        else sent.sealed.sign([sender.signatory, sender.seal]).to_bytes()
    )
    verified = verify_message(
        Envelope.from_bytes(env_bytes),
        sender.trusted(),
        sender=sender.party_id,
        recipient=recipient.party_id,
        now=now,
        # A request carries both signatures (art. 4.4); both are required, so neither can
        # be stripped or have its key id altered.
        required=[sender.seal.key_id, sender.signatory.key_id],
    )
    opener = MessageOpener(
        verified, header if header is not None else sent.sealed.header, recipient.encryption
    )
    plain_body = opener.open_body(body if body is not None else sent.sealed.body)
    outs = []
    for i, blob in enumerate(attachments if attachments is not None else sent.attachments):
        out = io.BytesIO()
        opener.open_attachment(i, io.BytesIO(blob), out)
        outs.append(out.getvalue())
    return verified, plain_body, outs


def test_round_trip_with_attachments(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC, b"", "вложение".encode()])
    verified, body, atts = receive(sent, party_a, party_b)
    assert body == BODY
    assert atts == [DOC, b"", "вложение".encode()]
    st_ = verified.statement
    assert st_.sender == "МВД-РБ" and st_.recipient == "Росгвардия"
    assert st_.marking == {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}
    assert verified.evidence.key_ids == {party_a.seal.key_id, party_a.signatory.key_id}


def test_plaintext_digest_reported_once(party_a, party_b) -> None:
    import hashlib

    sent = send(party_a, party_b, [DOC])
    verified, _, _ = receive(sent, party_a, party_b)
    opener = MessageOpener(verified, sent.sealed.header, party_b.encryption)
    opened = opener.open_attachment(0, io.BytesIO(sent.attachments[0]), io.BytesIO())
    assert opened.size == len(DOC)
    assert opened.sha256 == hashlib.sha256(DOC).hexdigest()


def test_statement_signs_ciphertext_digests_only(party_a, party_b) -> None:
    import hashlib

    sent = send(party_a, party_b, [DOC])
    payload = sent.sealed.payload
    assert hashlib.sha256(DOC).hexdigest().encode() not in payload
    assert hashlib.sha256(BODY).hexdigest().encode() not in payload
    assert "содействие".encode() not in payload
    assert (
        sent.sealed.statement.attachments[0].sha256
        == hashlib.sha256(sent.attachments[0]).hexdigest()
    )


def test_verify_without_decryption_key(party_a, party_b) -> None:
    # An auditor holds public keys only.
    sent = send(party_a, party_b, [DOC])
    env = sent.sealed.sign([party_a.seal])
    v = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    v.statement.attachments[0].check(
        __import__("hashlib").sha256(sent.attachments[0]).hexdigest(), len(sent.attachments[0])
    )


def test_wrong_recipient_key_cannot_open(party_a, party_b, party_c) -> None:
    sent = send(party_a, party_b, [])
    with pytest.raises(VerificationError, match="unwrap"):
        receive(sent, party_a, party_b, header=send(party_a, party_c, []).sealed.header)
    env = sent.sealed.sign([party_a.seal])
    verified = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    with pytest.raises(VerificationError, match="unwrap"):
        MessageOpener(verified, sent.sealed.header, party_c.encryption)


def test_wrong_trusted_key_refused(party_a, party_b, party_c) -> None:
    sent = send(party_a, party_b, [])
    env = sent.sealed.sign([party_a.seal])
    with pytest.raises(VerificationError):
        verify_message(
            env, party_c.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
        )


def test_expired_statement_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [], expires=NOW + timedelta(hours=1))
    with pytest.raises(VerificationError, match="expired"):
        receive(sent, party_a, party_b, now=NOW + timedelta(hours=1))


def test_statement_from_the_future_refused(party_a, party_b) -> None:
    sent = send(
        party_a, party_b, [], created=NOW + timedelta(hours=1), expires=NOW + timedelta(days=1)
    )
    with pytest.raises(VerificationError, match="future"):
        receive(sent, party_a, party_b)


def test_recipient_mismatch_refused(party_a, party_b, party_c) -> None:
    sent = send(party_a, party_b, [])
    with pytest.raises(VerificationError, match="addressed to"):
        receive(sent, party_a, party_c)


def test_sender_impersonation_refused(party_a, party_b, party_c) -> None:
    # Party C's node signs a statement that claims to come from Party A.
    sent = send(party_c, party_b, [], sender=party_a.party_id)
    env = sent.sealed.sign([party_c.seal]).to_bytes()
    with pytest.raises(VerificationError, match="claims sender"):
        verify_message(
            Envelope.from_bytes(env),
            party_c.trusted(),
            sender=party_c.party_id,
            recipient=party_b.party_id,
            now=NOW,
        )


def test_label_downgraded_after_signing_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    env = sent.sealed.sign([party_a.seal])
    payload = sent.sealed.statement.to_payload()
    payload["marking"] = {"level": "OFFICIAL", "caveats": []}
    forged = Envelope(env.payload_type, canonical_json(payload), env.signatures)
    with pytest.raises(VerificationError, match="does not verify"):
        receive(sent, party_a, party_b, envelope=forged.to_bytes())


def test_purpose_changed_after_signing_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [])
    env = sent.sealed.sign([party_a.seal])
    payload = dict(sent.sealed.statement.to_payload(), purpose="иная цель")
    forged = Envelope(env.payload_type, canonical_json(payload), env.signatures)
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, envelope=forged.to_bytes())


def test_swapped_attachment_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC, "другой документ".encode()])
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, attachments=[sent.attachments[1], sent.attachments[0]])


def test_attachment_from_another_message_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC])
    other = send(party_a, party_b, [DOC])
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, attachments=other.attachments)


def test_truncated_attachment_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC])
    for cut in (1, 16, SEALED_CHUNK, len(sent.attachments[0]) - 17):
        with pytest.raises(VerificationError):
            receive(sent, party_a, party_b, attachments=[sent.attachments[0][:-cut]])


def test_attachment_chunks_reordered_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC])
    blob = sent.attachments[0]
    nonce, c0, c1, rest = (
        blob[:16],
        blob[16 : 16 + SEALED_CHUNK],
        blob[16 + SEALED_CHUNK : 16 + 2 * SEALED_CHUNK],
        blob[16 + 2 * SEALED_CHUNK :],
    )
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, attachments=[nonce + c1 + c0 + rest])


def test_attachment_chunk_duplicated_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC])
    blob = sent.attachments[0]
    c0 = blob[16 : 16 + SEALED_CHUNK]
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, attachments=[blob[:16] + c0 + blob[16:]])


def test_trailing_data_after_attachment_refused(party_a, party_b) -> None:
    sent = send(party_a, party_b, [DOC])
    with pytest.raises(VerificationError):
        receive(sent, party_a, party_b, attachments=[sent.attachments[0] + b"\x00"])


def test_rewrap_for_third_party_keeps_originator_proof(party_a, party_b, party_c) -> None:
    # Guarantee 4: B forwards A's message to C with A's consent; C proves A's signature over
    # exactly what it decrypts.
    sent = send(party_a, party_b, [DOC])
    env = sent.sealed.sign([party_a.signatory, party_a.seal])
    at_b = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    header_for_c = MessageOpener(at_b, sent.sealed.header, party_b.encryption).rewrap(
        [party_c.encryption.recipient()]
    )
    at_c = verify_message(
        Envelope.from_bytes(env.to_bytes()),
        party_a.trusted(),
        sender=party_a.party_id,
        recipient=party_b.party_id,
        now=NOW,
    )
    opener = MessageOpener(at_c, header_for_c, party_c.encryption)
    assert opener.open_body(sent.sealed.body) == BODY
    out = io.BytesIO()
    opener.open_attachment(0, io.BytesIO(sent.attachments[0]), out)
    assert out.getvalue() == DOC


def test_forwarder_substituting_content_key_refused(party_a, party_b, party_c) -> None:
    # B re-wraps a different file key (of its own message) for C: the commitment catches it.
    sent = send(party_a, party_b, [])
    own = send(party_b, party_c, [])
    env = sent.sealed.sign([party_a.seal])
    at_c = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    with pytest.raises(VerificationError, match="commitment"):
        MessageOpener(at_c, own.sealed.header, party_c.encryption)


def test_forwarder_substituting_content_refused(party_a, party_b, party_c) -> None:
    # B knows the file key, so it could encrypt other content under it: the signed
    # ciphertext digest catches it.
    import accord.crypto._age as age

    sent = send(party_a, party_b, [])
    env = sent.sealed.sign([party_a.seal])
    at_b = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    opener = MessageOpener(at_b, sent.sealed.header, party_b.encryption)
    forged = io.BytesIO()
    age.encrypt_payload(io.BytesIO("подмена".encode()), forged, opener._file_key)
    with pytest.raises(VerificationError):
        opener.open_body(forged.getvalue())


SMALL_DOC = "Документ".encode() * 20000  # about 2.4 chunks


@pytest.fixture(scope="module")
def fixed_message():
    from .conftest import Party

    a, b = Party("A-сторона"), Party("B-сторона")
    sent = send(a, b, [SMALL_DOC])
    env = sent.sealed.sign([a.signatory, a.seal]).to_bytes()
    return a, b, sent, env


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_any_flipped_bit_anywhere_is_refused(fixed_message, data) -> None:
    a, b, sent, env = fixed_message
    parts = {
        "envelope": env,
        "header": sent.sealed.header,
        "body": sent.sealed.body,
        "attachment": sent.attachments[0],
    }
    where = data.draw(st.sampled_from(sorted(parts)))
    blob = bytearray(parts[where])
    i = data.draw(st.integers(0, len(blob) - 1))
    blob[i] ^= 1 << data.draw(st.integers(0, 7))
    kwargs = {
        where if where != "attachment" else "attachments": bytes(blob)
        if where != "attachment"
        else [bytes(blob)]
    }
    with pytest.raises(VerificationError):
        receive(sent, a, b, **kwargs)


def test_body_manifest_built_from_attachment_plaintext_digests(party_a, party_b) -> None:
    # The body can carry the attachments' plaintext digests (computed once, while sealing),
    # so the recipient checks each file end to end; the statement still shows none of it.
    import hashlib
    import json

    from accord.crypto import seal_message

    from .conftest import draft

    out = io.BytesIO()
    sealed = seal_message(
        draft(party_a, party_b),
        body=lambda opened: json.dumps([[o.size, o.sha256] for o in opened]).encode(),
        attachments=[(io.BytesIO(DOC), out)],
        recipients=[party_b.encryption.recipient()],
    )
    env = sealed.sign([party_a.signatory, party_a.seal])
    verified = verify_message(
        env, party_a.trusted(), sender=party_a.party_id, recipient=party_b.party_id, now=NOW
    )
    body = MessageOpener(verified, sealed.header, party_b.encryption).open_body(sealed.body)
    assert json.loads(body) == [[len(DOC), hashlib.sha256(DOC).hexdigest()]]
    assert hashlib.sha256(DOC).hexdigest().encode() not in sealed.payload


# --- The statement writer is the canonical serialiser ---------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)
_digests = st.builds(PartDigest, st.text(max_size=8), st.integers(0, 2**53 + 1) | st.booleans())


@settings(max_examples=400, deadline=None)
@given(
    texts=st.lists(st.text(max_size=10), min_size=7, max_size=7),
    in_reply_to=st.none() | st.text(max_size=5),
    times=st.tuples(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC))),
    digests=st.lists(_digests, min_size=1, max_size=3),
    marking=st.dictionaries(st.text(max_size=4), _json_values, max_size=3),
    extensions=st.dictionaries(st.text(max_size=4), _json_values, max_size=3),
)
def test_signed_statement_bytes_are_its_canonical_json(
    texts, in_reply_to, times, digests, marking, extensions
) -> None:
    # What a sender signs is exactly what a receiver's canonical check rebuilds: any
    # difference (an escape, a key order, a number) would make every message unreadable.
    statement = Statement(
        message_id=texts[0],
        sender=texts[1],
        recipient=texts[2],
        created=times[0],
        expires=times[1],
        marking=marking,
        purpose=texts[3],
        type=texts[4],
        in_reply_to=in_reply_to,
        body=digests[0],
        attachments=tuple(digests[1:]),
        key_commitment=texts[5],
        extensions=extensions,
    )
    try:
        expected = canonical_json(statement.to_payload())
    except ValueError as e:  # lone surrogates, integers out of range, booleans as sizes
        with pytest.raises(type(e)):
            _statement_json(statement)
        return
    assert _statement_json(statement) == expected
