"""Fuzz properties of the non-JSON parsers: checkpoints and cosignatures (signed notes),
age headers and payloads, a sealed message's parts, the delivery stream and the upload
form.

Each parser either returns a fully valid object or raises its one documented error:
`VerificationError` (notes, checkpoints, sealed parts), `AgeError` (age headers and
payloads), `StreamError` (the delivery stream), `UploadError` (the upload form). Valid
objects round-trip, byte for byte where the format is canonical; a valid signed or
authenticated object changed anywhere never verifies or opens.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.crypto import (
    DecryptionKey,
    MessageDraft,
    MessageOpener,
    VerificationError,
    _age,
    seal_message,
    verify_message,
)
from accord.crypto.checkpoint import (
    Checkpoint,
    Note,
    NoteKey,
    add_cosignature,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from accord.crypto.sealed import PartDigest, SealedMessage, Statement
from accord.gateway.messages.stream import END, MAGIC, StreamError, frame_lengths
from accord.gateway.messages.upload import QueueReader, UploadError, parse_upload

from ._objects import KEYS, RECIPIENT, digests, idents, json_objects, mutations, texts
from ._settings import FUZZ, FUZZ_SLOW
from ._targets import Frame, read_delivery

LOG, WITNESS = KEYS[0], KEYS[1]
NOW = datetime(2026, 12, 5, 13, 0, 0, tzinfo=UTC)
UPLOAD_TIMEOUT = 30.0


def _refuses(error: type[Exception], parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except error:
        return None


# --- Checkpoints and cosignatures ----------------------------------------------------------

_line = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=0x20), min_size=1, max_size=30
)
_name = _line.filter(lambda n: "+" not in n and not any(c.isspace() for c in n))
checkpoints = st.builds(
    Checkpoint,
    origin=_line,
    size=st.integers(min_value=0, max_value=2**64 - 1),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(_line, max_size=3).map(tuple),
)


@FUZZ
@given(checkpoints, _name, _name)
def test_checkpoint_note_round_trip_is_byte_exact(
    checkpoint: Checkpoint, log_name: str, witness: str
) -> None:
    assert Checkpoint.from_body(checkpoint.body()) == checkpoint
    note = sign_checkpoint(checkpoint, log_name, LOG)
    if witness != log_name:
        note = add_cosignature(note, witness, WITNESS, NOW)
    parsed = parse_note(note)
    assert parsed.to_bytes() == note
    assert parse_note(note.decode("utf-8")) == parsed
    evidence = verify_checkpoint(note, checkpoint.origin, log_name, LOG.verify_key())
    assert evidence.checkpoint == checkpoint
    vkey = NoteKey(log_name, LOG.verify_key()).to_vkey()
    assert NoteKey.from_vkey(vkey).to_vkey() == vkey


def _assert_valid_note(note: Note, data: bytes) -> None:
    assert note.to_bytes() == data
    assert note.text.endswith("\n")
    assert all(ord(c) >= 0x20 or c == "\n" for c in note.text)
    assert 1 <= len(note.signatures) <= 100


@FUZZ
@given(st.binary(max_size=400))
def test_note_arbitrary_bytes_parse_or_raise_verification_error(data: bytes) -> None:
    note = _refuses(VerificationError, parse_note, data)
    if note is not None:
        _assert_valid_note(note, data)
    _refuses(VerificationError, Checkpoint.from_body, data.decode("utf-8", "replace"))
    _refuses(VerificationError, NoteKey.from_vkey, data.decode("utf-8", "replace"))


@FUZZ
@given(checkpoints, st.data())
def test_attack_checkpoint_or_cosignature_altered_never_verifies(
    checkpoint: Checkpoint, data: Any
) -> None:
    note = add_cosignature(sign_checkpoint(checkpoint, "log", LOG), "witness", WITNESS, NOW)
    mutated = data.draw(mutations(note))
    parsed = _refuses(VerificationError, parse_note, mutated)
    if parsed is not None:
        _assert_valid_note(parsed, mutated)
    # The log's signature, or the witness's, or both fail on every changed note (a change
    # in a signature line the verifier ignores is a line of another key: then the key's
    # own line is missing, which also fails).
    failures = 0
    try:
        verify_checkpoint(mutated, checkpoint.origin, "log", LOG.verify_key())
    except VerificationError:
        failures += 1
    try:
        verify_cosignature(mutated, "witness", WITNESS.verify_key(), origin=checkpoint.origin)
    except VerificationError:
        failures += 1
    assert failures >= 1


# --- age headers and payloads ------------------------------------------------------------------

_arg = st.from_regex(r"[\x21-\x7e]{1,12}", fullmatch=True)
stanzas = st.builds(
    _age.Stanza, _arg, st.lists(_arg, max_size=3).map(tuple), st.binary(max_size=150)
)


@FUZZ
@given(st.lists(stanzas, min_size=1, max_size=4), st.binary(min_size=32, max_size=32))
def test_age_header_round_trip_is_byte_exact(stanzas: list[Any], mac: bytes) -> None:
    header = _age.Header(tuple(stanzas), mac, b"")
    raw = header.encode()
    stream = io.BytesIO(raw + b"payload")
    parsed = _age.parse_header(stream)
    assert parsed.raw == raw and parsed.encode() == raw
    assert parsed.stanzas == header.stanzas and parsed.mac == mac
    assert stream.read() == b"payload"  # left at the first byte of the payload


def _real_header(file_key: bytes) -> bytes:
    second = DecryptionKey(bytes([0x43]) * 32).recipient()._public
    return _age.encode_header(file_key, [RECIPIENT.recipient()._public, second])


@FUZZ
@given(st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: _age._VERSION_LINE + b))
def test_age_header_arbitrary_bytes_parse_or_raise_age_error(data: bytes) -> None:
    header = _refuses(_age.AgeError, _age.parse_header, io.BytesIO(data))
    if header is not None:
        assert data.startswith(header.raw) and header.encode() == header.raw
        _refuses(_age.AgeError, RECIPIENT._unwrap_age, header)


@FUZZ
@given(st.binary(min_size=16, max_size=16), st.data())
def test_attack_age_header_altered_never_unwraps(file_key: bytes, data: Any) -> None:
    raw = _real_header(file_key)
    assert RECIPIENT._unwrap_age(_age.parse_header(io.BytesIO(raw))) == (file_key)
    mutated = data.draw(mutations(raw))
    with pytest.raises(_age.AgeError):
        header = _age.parse_header(io.BytesIO(mutated))
        # A mutation past the header (in what would be the payload) leaves it intact.
        if header.raw == raw:
            raise _age.AgeError("header", "unchanged")
        RECIPIENT._unwrap_age(header)


@FUZZ
@given(st.binary(max_size=3 * 65536 + 10), st.binary(min_size=16, max_size=16), st.data())
def test_age_payload_round_trip_and_alteration(plain: bytes, file_key: bytes, data: Any) -> None:
    payload, info = _age.encrypt_payload_bytes(plain, file_key)
    assert _age.decrypt_payload_bytes(payload, file_key, expected_sha256=info.sha256) == plain
    out = io.BytesIO()
    assert _age.decrypt_payload(io.BytesIO(payload), out, file_key).size == info.size
    assert out.getvalue() == plain
    mutated = data.draw(mutations(payload))
    with pytest.raises(_age.AgeError):
        _age.decrypt_payload_bytes(mutated, file_key)
    with pytest.raises(_age.AgeError):
        _age.decrypt_payload(io.BytesIO(mutated), io.BytesIO(), file_key)


@FUZZ
@given(st.binary(max_size=400), st.binary(min_size=16, max_size=16))
def test_age_payload_arbitrary_bytes_raise_age_error(data: bytes, file_key: bytes) -> None:
    with pytest.raises(_age.AgeError):
        _age.decrypt_payload_bytes(data, file_key)
    with pytest.raises(_age.AgeError):
        _age.decrypt_payload(io.BytesIO(data), io.BytesIO(), file_key)


# --- A sealed message's parts --------------------------------------------------------------


def _sealed(body: bytes, attachments: Sequence[bytes]) -> tuple[Any, list[bytes]]:
    draft = MessageDraft(
        message_id="3f1c2e9a-0b7d-4c53-9a41-6f0e2d1b8c77",
        sender="МВД-РБ",
        recipient="Росгвардия",
        created=NOW,
        expires=NOW + timedelta(days=1),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="проверка",
        type="notice",
    )
    sinks = [io.BytesIO() for _ in attachments]
    sealed = seal_message(
        draft,
        body=body,
        attachments=[(io.BytesIO(a), s) for a, s in zip(attachments, sinks, strict=True)],
        recipients=[RECIPIENT.recipient()],
    )
    verified = verify_message(
        sealed.sign([LOG]), [LOG.verify_key()], sender="МВД-РБ", recipient="Росгвардия", now=NOW
    )
    return (sealed, verified), [s.getvalue() for s in sinks]


@FUZZ_SLOW
@given(st.binary(max_size=2000), st.lists(st.binary(max_size=70_000), max_size=2), st.data())
def test_attack_sealed_part_altered_never_opens(
    body: bytes, attachments: list[bytes], data: Any
) -> None:
    (sealed, verified), payloads = _sealed(body, attachments)
    opener = MessageOpener(verified, sealed.header, RECIPIENT)
    assert opener.open_body(sealed.body) == body
    for i, (payload, plain) in enumerate(zip(payloads, attachments, strict=True)):
        out = io.BytesIO()
        opener.open_attachment(i, io.BytesIO(payload), out)
        assert out.getvalue() == plain
    which = data.draw(st.integers(min_value=-1, max_value=len(payloads)))
    if which == -1:  # the header
        with pytest.raises(VerificationError):
            MessageOpener(verified, data.draw(mutations(sealed.header)), RECIPIENT)
    elif which == len(payloads):  # the body
        with pytest.raises(VerificationError):
            opener.open_body(data.draw(mutations(sealed.body)))
    else:
        with pytest.raises(VerificationError):
            opener.open_attachment(
                which, io.BytesIO(data.draw(mutations(payloads[which]))), io.BytesIO()
            )


# --- The delivery stream -------------------------------------------------------------------


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    sizes = draw(st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=3))
    parts = tuple(draw(st.binary(min_size=n, max_size=n)) for n in sizes)
    created = NOW
    statement = Statement(
        message_id=draw(idents),
        sender=draw(idents),
        recipient=draw(idents),
        created=created,
        expires=created + timedelta(days=1),
        marking=draw(json_objects),
        purpose=draw(texts),
        type="notice",
        in_reply_to=None,
        body=PartDigest(draw(digests), sizes[0]),
        attachments=tuple(PartDigest(draw(digests), n) for n in sizes[1:]),
        key_commitment=draw(digests),
        extensions={},
    )
    envelope = SealedMessage(statement, b"", b"").sign([LOG]).to_bytes()
    return Frame(envelope, draw(st.binary(max_size=200)), parts)


def _stream(batch: Sequence[Frame]) -> bytes:
    return (
        MAGIC
        + b"".join(frame_lengths(f.envelope, f.header) + b"".join(f.parts) for f in batch)
        + END
    )


@FUZZ
@given(
    st.lists(frames(), max_size=3), st.lists(st.integers(min_value=1, max_value=500), max_size=8)
)
def test_delivery_stream_round_trip(batch: list[Frame], chunks: list[int]) -> None:
    assert read_delivery(_stream(batch), chunks or [65536]) == batch


@FUZZ
@given(
    st.binary(max_size=300) | st.binary(max_size=300).map(lambda b: MAGIC + b),
    st.lists(st.integers(min_value=1, max_value=64), max_size=4),
)
def test_delivery_stream_arbitrary_bytes_parse_or_raise_stream_error(
    data: bytes, chunks: list[int]
) -> None:
    _refuses(StreamError, read_delivery, data, chunks or [65536])


@FUZZ
@given(st.lists(frames(), min_size=1, max_size=2), st.data())
def test_delivery_stream_mutated_parse_or_raise_stream_error(batch: list[Frame], data: Any) -> None:
    mutated = data.draw(mutations(_stream(batch)))
    result = _refuses(StreamError, read_delivery, mutated)
    if result is not None:
        # What was read is a stream of its own: written again, it is the bytes read.
        assert mutated.startswith(_stream(result)[: -len(END)])


# --- The upload form -----------------------------------------------------------------------


def _run_upload(content_type: str, body: bytes, chunks: Sequence[int]) -> Any:
    """`parse_upload` as the local API drives it, with a job that reads every attachment
    on its own thread and returns the meta and the attachments' bytes."""

    def start(meta: dict[str, Any], readers: list[QueueReader]) -> Future[Any]:
        future: Future[Any] = Future()

        def run() -> None:
            try:
                future.set_result((meta, [r.read() for r in readers]))
            except BaseException as e:
                future.set_exception(e)

        threading.Thread(target=run, daemon=True).start()
        return future

    async def pieces() -> AsyncIterator[bytes]:
        at = 0
        for n in chunks:
            yield body[at : at + n]
            at += n
        yield body[at:]

    async def run() -> Any:
        # Bounded: a parser that leaves a reader waiting must fail the test, not hang it.
        upload = parse_upload(content_type, pieces(), max_bytes=1 << 20, start=start)
        return await asyncio.wait_for(upload, UPLOAD_TIMEOUT)

    try:
        return asyncio.run(run())
    except TimeoutError:
        raise AssertionError("the upload never finished: a reader was left waiting") from None


def _form(boundary: str, meta: bytes, attachments: Sequence[tuple[str, bytes]]) -> bytes:
    b = boundary.encode()
    out = b"--" + b + b'\r\nContent-Disposition: form-data; name="meta"\r\n'
    out += b"Content-Type: application/json\r\n\r\n" + meta + b"\r\n"
    for name, data in attachments:
        out += b"--" + b + b'\r\nContent-Disposition: form-data; name="attachment"; '
        out += b'filename="' + name.encode() + b'"\r\n\r\n' + data + b"\r\n"
    return out + b"--" + b + b"--\r\n"


_boundary = st.from_regex(r"[A-Za-z0-9'()+_,.=-]{1,40}", fullmatch=True)
_files = st.lists(
    st.tuples(st.from_regex(r"[a-z0-9.]{1,12}", fullmatch=True), st.binary(max_size=3000)),
    max_size=3,
)


@FUZZ_SLOW
@given(_boundary, json_objects, _files, st.lists(st.integers(min_value=1, max_value=700)))
def test_upload_form_round_trip(
    boundary: str, meta: dict[str, Any], files: list[tuple[str, bytes]], chunks: list[int]
) -> None:
    # A boundary must not occur in the data it separates.
    marker = b"\r\n--" + boundary.encode()
    meta = {**meta, "attachments": [name for name, _ in files]}
    meta_bytes = json.dumps(meta, ensure_ascii=False).encode()
    if any(marker in part for part in (meta_bytes, *(d for _, d in files))):
        return
    body = _form(boundary, meta_bytes, files)
    got_meta, got_files = _run_upload(f"multipart/form-data; boundary={boundary}", body, chunks)
    assert got_meta == meta
    assert got_files == [data for _, data in files]


@FUZZ_SLOW
@given(
    _boundary,
    json_objects | st.just({"attachments": 5}) | st.just({"attachments": "ab"}),
    _files,
    st.data(),
)
def test_upload_form_mutated_parse_or_raise_upload_error(
    boundary: str, meta: dict[str, Any], files: list[tuple[str, bytes]], data: Any
) -> None:
    meta_bytes = json.dumps({"attachments": [n for n, _ in files], **meta}).encode()
    body = data.draw(mutations(_form(boundary, meta_bytes, files)))
    content_type = data.draw(
        st.just(f"multipart/form-data; boundary={boundary}")
        | st.text(max_size=60)
        | st.just("multipart/form-data; boundary=")
    )
    _refuses(UploadError, _run_upload, content_type, body, [data.draw(st.integers(1, 200))])


@FUZZ_SLOW
@given(st.binary(max_size=300), st.sampled_from(["x", "----WebKitFormBoundary7MA4YWxk"]))
def test_upload_form_arbitrary_bytes_parse_or_raise_upload_error(
    data: bytes, boundary: str
) -> None:
    _refuses(UploadError, _run_upload, f"multipart/form-data; boundary={boundary}", data, [])


_UPLOAD_ATTACKS = {
    "not_multipart": b"--x\r\nbad header line\r\n\r\n",
    "garbage_before_boundary": b"garbage",
    "attachments_not_a_list": (
        b'--x\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{"attachments": 5}\r\n--x--\r\n'
    ),
    "meta_nested_too_deeply": (
        b'--x\r\nContent-Disposition: form-data; name="meta"\r\n\r\n'
        + b"[" * 50_000
        + b"\r\n--x--\r\n"
    ),
    "ends_inside_attachment": (
        b'--x\r\nContent-Disposition: form-data; name="meta"\r\n\r\n{"attachments": ["a"]}'
        b'\r\n--x\r\nContent-Disposition: form-data; name="attachment"; filename="a"\r\n\r\n'
        b"no closing boundary"
    ),
    "meta_not_utf8": (
        b'--x\r\nContent-Disposition: form-data; name="meta"\r\n\r\n\xff\xfe\r\n--x--\r\n'
    ),
}


@pytest.mark.parametrize("attack", sorted(_UPLOAD_ATTACKS))
def test_attack_malformed_multipart_refused_as_upload_error(attack: str) -> None:
    # Found by the fuzzers: python-multipart's parse errors, a non-list `attachments` and
    # a deeply nested meta escaped as MultipartParseError, TypeError and RecursionError
    # (the local API answered 500); a body that ended inside an attachment left its
    # reader, the sealing thread and the request waiting for ever.
    with pytest.raises(UploadError):
        _run_upload("multipart/form-data; boundary=x", _UPLOAD_ATTACKS[attack], [])
