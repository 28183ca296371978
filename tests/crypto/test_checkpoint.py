"""C2SP checkpoints, signed notes and cosignatures: round trips, known answers from other
implementations, strict parsing, and every tampering refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from accord.crypto.checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    MAX_SIGNATURES,
    Checkpoint,
    Note,
    NoteKey,
    NoteSignature,
    _cosigned_message,
    add_cosignature,
    note_key_id,
    parse_note,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from accord.crypto.errors import VerificationError
from accord.crypto.keys import SigningKey
from accord.crypto.merkle import leaf_hash, root

NOTES = json.loads(
    (Path(__file__).resolve().parents[1] / "vectors" / "merkle" / "notes.json").read_text("utf-8")
)
ORIGIN = "audit.ru-mvd.example/log"
LOG_NAME = ORIGIN
WITNESS = "audit.by-mvd.example/witness"
T = 1_764_000_000
EM = "\u2014"


@pytest.fixture(scope="module")
def log_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture(scope="module")
def witness_key() -> SigningKey:
    return SigningKey.generate()


def head(size: int = 3) -> Checkpoint:
    return Checkpoint(ORIGIN, size, root([leaf_hash(b"%d" % i) for i in range(size)]))


def signed(log_key: SigningKey, checkpoint: Checkpoint | None = None) -> bytes:
    return sign_checkpoint(checkpoint or head(), LOG_NAME, log_key)


def cosigned(log_key: SigningKey, witness_key: SigningKey) -> bytes:
    return add_cosignature(signed(log_key), WITNESS, witness_key, T)


# --- Round trips -----------------------------------------------------------------------


def test_checkpoint_round_trip(log_key: SigningKey) -> None:
    note = signed(log_key)
    text = note.decode()
    assert text.startswith(f"{ORIGIN}\n3\n{base64.b64encode(head().root).decode()}\n\n{EM} ")
    evidence = verify_checkpoint(note, ORIGIN, LOG_NAME, log_key.verify_key())
    assert evidence.checkpoint == head()
    assert evidence.key_id == note_key_id(LOG_NAME, ED25519, log_key.verify_key())
    assert parse_note(note).to_bytes() == note
    assert verify_checkpoint(text, ORIGIN, LOG_NAME, log_key.verify_key()) == evidence


def test_cosignature_round_trip(log_key: SigningKey, witness_key: SigningKey) -> None:
    note = cosigned(log_key, witness_key)
    evidence = verify_cosignature(note, WITNESS, witness_key.verify_key(), origin=ORIGIN)
    assert evidence.timestamp == T
    assert evidence.signed_at == datetime.fromtimestamp(T, UTC)
    assert evidence.checkpoint == head()
    assert note.decode().endswith(evidence.line + "\n")
    # The log's signature still verifies beside the cosignature.
    verify_checkpoint(note, ORIGIN, LOG_NAME, log_key.verify_key())
    # A datetime works as well as POSIX seconds.
    at = add_cosignature(signed(log_key), WITNESS, witness_key, datetime.fromtimestamp(T, UTC))
    assert at == note


def test_extension_lines_are_signed_and_kept(log_key: SigningKey) -> None:
    checkpoint = Checkpoint(ORIGIN, 3, head().root, ("— extension line", "другая"))
    note = signed(log_key, checkpoint)
    assert verify_checkpoint(note, ORIGIN, LOG_NAME, log_key.verify_key()).checkpoint == checkpoint
    dropped = note.replace("другая\n".encode(), b"")
    with pytest.raises(VerificationError):
        verify_checkpoint(dropped, ORIGIN, LOG_NAME, log_key.verify_key())


def test_cyrillic_origin_and_key_names_are_handled(
    log_key: SigningKey, witness_key: SigningKey
) -> None:
    # Origins and key names may be any Unicode but spaces and "+" (signed-note, tlog-checkpoint).
    origin, name, witness = "журнал.мвд.рф/аудит", "мвд.рф/журнал", "мвд.бел/свидетель"
    checkpoint = Checkpoint(origin, 0, root([]))
    note = add_cosignature(sign_checkpoint(checkpoint, name, log_key), witness, witness_key, T)
    assert verify_checkpoint(note, origin, name, log_key.verify_key()).checkpoint == checkpoint
    assert verify_cosignature(note, witness, witness_key.verify_key()).timestamp == T
    with pytest.raises(VerificationError):
        verify_checkpoint(note, "журнал.мвд.рф/аудит2", name, log_key.verify_key())


def test_the_empty_tree_has_a_checkpoint(log_key: SigningKey) -> None:
    note = signed(log_key, Checkpoint(ORIGIN, 0, root([])))
    assert b"\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n" in note
    assert verify_checkpoint(note, ORIGIN, LOG_NAME, log_key.verify_key()).checkpoint.size == 0


# --- Tampering -------------------------------------------------------------------------


def _replace_line(note: bytes, number: int, value: str) -> bytes:
    lines = note.decode().split("\n")
    lines[number] = value
    return "\n".join(lines).encode()


@pytest.mark.parametrize(
    ("attack", "line", "value"),
    [
        ("checkpoint_size_rolled_back", 1, "2"),
        ("checkpoint_size_inflated", 1, "30"),
        ("checkpoint_root_swapped", 2, base64.b64encode(bytes(32)).decode()),
        ("checkpoint_origin_swapped", 0, "audit.other.example/log"),
    ],
)
def test_tampered_body_refused(log_key: SigningKey, attack: str, line: int, value: str) -> None:
    tampered = _replace_line(signed(log_key), line, value)
    with pytest.raises(VerificationError):
        verify_checkpoint(tampered, ORIGIN, LOG_NAME, log_key.verify_key())
    with pytest.raises(VerificationError):
        verify_checkpoint(tampered, "audit.other.example/log", LOG_NAME, log_key.verify_key())


def _flip_signature(note: bytes, which: int = -1, byte: int = 40) -> bytes:
    parsed = parse_note(note)
    signatures = list(parsed.signatures)
    s = signatures[which]
    bad = bytearray(s.signature)
    bad[byte] ^= 1
    signatures[which] = NoteSignature(s.name, s.key_id, bytes(bad))
    return Note(parsed.text, tuple(signatures)).to_bytes()


def test_log_signature_bit_flip_refused(log_key: SigningKey) -> None:
    with pytest.raises(VerificationError, match="does not verify"):
        verify_checkpoint(_flip_signature(signed(log_key)), ORIGIN, LOG_NAME, log_key.verify_key())


def test_cosignature_bit_flip_and_timestamp_change_refused(
    log_key: SigningKey, witness_key: SigningKey
) -> None:
    note = cosigned(log_key, witness_key)
    with pytest.raises(VerificationError):
        verify_cosignature(_flip_signature(note), WITNESS, witness_key.verify_key())
    # The timestamp is signed: moving it (byte 7 of the signature field) is refused.
    with pytest.raises(VerificationError):
        verify_cosignature(_flip_signature(note, byte=7), WITNESS, witness_key.verify_key())


def test_cosignature_over_another_checkpoint_refused(
    log_key: SigningKey, witness_key: SigningKey
) -> None:
    # A witness line lifted onto another checkpoint of the same log.
    line = parse_note(cosigned(log_key, witness_key)).signatures[-1]
    other = parse_note(signed(log_key, head(4)))
    moved = Note(other.text, (*other.signatures, line)).to_bytes()
    verify_checkpoint(moved, ORIGIN, LOG_NAME, log_key.verify_key())
    with pytest.raises(VerificationError):
        verify_cosignature(moved, WITNESS, witness_key.verify_key())


def test_wrong_keys_and_names_refused(log_key: SigningKey, witness_key: SigningKey) -> None:
    note = cosigned(log_key, witness_key)
    other = SigningKey.generate().verify_key()
    for name, key in [(LOG_NAME, other), ("audit.other.example", log_key.verify_key())]:
        with pytest.raises(VerificationError, match="not signed"):
            verify_checkpoint(note, ORIGIN, name, key)
    with pytest.raises(VerificationError, match="not cosigned"):
        verify_cosignature(note, WITNESS, other)
    with pytest.raises(VerificationError, match="origin"):
        verify_cosignature(note, WITNESS, witness_key.verify_key(), origin="x.example/log")


def test_a_cosignature_is_not_a_log_signature_with_the_same_key(log_key: SigningKey) -> None:
    # One Ed25519 key in both roles: the key ids differ (0x01 and 0x04), so neither line
    # passes for the other.
    note = add_cosignature(signed(log_key), LOG_NAME, log_key, T)
    only_cosignature = Note(parse_note(note).text, parse_note(note).signatures[1:]).to_bytes()
    with pytest.raises(VerificationError, match="not signed"):
        verify_checkpoint(only_cosignature, ORIGIN, LOG_NAME, log_key.verify_key())
    only_signature = signed(log_key)
    with pytest.raises(VerificationError, match="not cosigned"):
        verify_cosignature(only_signature, LOG_NAME, log_key.verify_key())


def test_unknown_key_lines_are_ignored(log_key: SigningKey, witness_key: SigningKey) -> None:
    note = parse_note(cosigned(log_key, witness_key))
    log_id = note_key_id(LOG_NAME, ED25519, log_key.verify_key())
    strangers = (
        # Another key entirely.
        NoteSignature("stranger.example/key", b"\x01\x02\x03\x04", bytes(64)),
        # The log's name with another key id (a rotated key, another signature type).
        NoteSignature(LOG_NAME, b"\xff\xff\xff\xff", bytes(70)),
        # The log's key id under another name.
        NoteSignature("impostor.example", log_id, bytes(64)),
    )
    noisy = Note(note.text, (strangers[0], *note.signatures, *strangers[1:])).to_bytes()
    verify_checkpoint(noisy, ORIGIN, LOG_NAME, log_key.verify_key())
    assert verify_cosignature(noisy, WITNESS, witness_key.verify_key()).timestamp == T


def test_known_key_with_a_bad_signature_refuses_the_note(log_key: SigningKey) -> None:
    note = parse_note(signed(log_key))
    good = note.signatures[0]
    truncated = NoteSignature(good.name, good.key_id, good.signature[:63])
    with pytest.raises(VerificationError):
        verify_checkpoint(
            Note(note.text, (truncated,)).to_bytes(), ORIGIN, LOG_NAME, log_key.verify_key()
        )


def test_the_same_key_twice_is_malformed(log_key: SigningKey) -> None:
    note = parse_note(signed(log_key))
    twice = Note(note.text, note.signatures * 2).to_bytes()
    with pytest.raises(VerificationError, match="twice"):
        parse_note(twice)


# --- Strict parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attack", "edit"),
    [
        ("note_crlf_line_endings", lambda t: t.replace("\n", "\r\n")),
        ("note_tab_in_text", lambda t: t.replace("\n3\n", "\n3\t\n")),
        ("note_nul_in_text", lambda t: t.replace(ORIGIN, ORIGIN + "\x00")),
        ("note_no_blank_line", lambda t: t.replace("\n\n", "\n")),
        ("note_no_signatures", lambda t: t[: t.index("\n\n") + 2]),
        ("note_signature_without_newline", lambda t: t[:-1]),
        ("note_text_after_signatures", lambda t: t + "trailing\n"),
        ("note_hyphen_for_em_dash", lambda t: t.replace(EM, "-")),
        ("note_two_spaces", lambda t: t.replace(f"{EM} ", f"{EM}  ")),
        ("note_noncanonical_base64", lambda t: t.replace("=\n", "\n")),
        ("note_plus_in_key_name", lambda t: t.replace(f"{EM} {LOG_NAME}", f"{EM} a+b")),
        ("note_space_in_key_name", lambda t: t.replace(f"{EM} {LOG_NAME}", f"{EM} a\u00a0b")),
    ],
)
def test_malformed_notes_refused(log_key: SigningKey, attack: str, edit: object) -> None:
    text = signed(log_key).decode()
    assert callable(edit)
    with pytest.raises(VerificationError):
        verify_checkpoint(edit(text), ORIGIN, LOG_NAME, log_key.verify_key())


def test_parse_refuses_bad_utf8_and_oversized_notes(log_key: SigningKey) -> None:
    with pytest.raises(VerificationError, match="UTF-8"):
        parse_note(b"\xff\xfe\n\n" + signed(log_key))
    with pytest.raises(VerificationError, match="too large"):
        parse_note(b"x" * (1 << 20) + signed(log_key))
    with pytest.raises(VerificationError):
        parse_note("\udc80\n\n— a AAAAAAA=\n")


def test_signature_count_limit(log_key: SigningKey) -> None:
    note = parse_note(signed(log_key))
    others = [
        NoteSignature(f"w{i}.example", b"\x00\x00\x00\x01", bytes(64)).line + "\n"
        for i in range(MAX_SIGNATURES)
    ]
    mine = note.signatures[0].line + "\n"
    # At least 16 must be accepted (signed-note); more than the limit are refused.
    assert len(parse_note(note.text + "\n" + "".join(others[:15]) + mine).signatures) == 16
    with pytest.raises(VerificationError, match="more than"):
        parse_note(note.text + "\n" + "".join(others) + mine)
    with pytest.raises(ValueError):
        Note(note.text, ())
    with pytest.raises(ValueError):
        Note(note.text.rstrip("\n"), note.signatures)


def test_a_signature_is_a_key_id_and_at_least_one_byte() -> None:
    with pytest.raises(VerificationError):
        NoteSignature.from_line(f"{EM} a.example {base64.b64encode(b'1234').decode()}")
    assert NoteSignature.from_line(f"{EM} a.example MTIzNDU=").signature == b"5"


@pytest.mark.parametrize(
    ("attack", "body"),
    [
        ("checkpoint_size_leading_zero", f"{ORIGIN}\n03\n{'A' * 43}=\n"),
        ("checkpoint_size_negative", f"{ORIGIN}\n-3\n{'A' * 43}=\n"),
        ("checkpoint_size_arabic_digits", f"{ORIGIN}\n\u0663\n{'A' * 43}=\n"),
        ("checkpoint_size_too_large", f"{ORIGIN}\n{2**64}\n{'A' * 43}=\n"),
        ("checkpoint_root_short", f"{ORIGIN}\n3\n{'A' * 40}==\n"),
        ("checkpoint_root_noncanonical", f"{ORIGIN}\n3\n{'A' * 42}B=\n"),
        ("checkpoint_two_lines", f"{ORIGIN}\n3\n"),
        ("checkpoint_empty_origin", f"\n3\n{'A' * 43}=\n"),
        ("checkpoint_empty_extension", f"{ORIGIN}\n3\n{'A' * 43}=\n\next\n"),
        ("checkpoint_no_final_newline", f"{ORIGIN}\n3\n{'A' * 43}="),
    ],
)
def test_malformed_checkpoint_bodies_refused(attack: str, body: str) -> None:
    with pytest.raises(VerificationError):
        Checkpoint.from_body(body)


def test_checkpoint_fields_checked_when_made() -> None:
    good = head()
    for bad in [
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": True},
        {"root": b"short"},
        {"extensions": ("",)},
    ]:
        with pytest.raises(ValueError):
            Checkpoint(**{**good.__dict__, **bad})


def test_cosigning_refuses_bad_input(log_key: SigningKey, witness_key: SigningKey) -> None:
    note = cosigned(log_key, witness_key)
    with pytest.raises(ValueError, match="already"):
        add_cosignature(note, WITNESS, witness_key, T + 1)
    for timestamp in (-1, 2**63, datetime(2026, 1, 1)):  # naive on purpose
        with pytest.raises(ValueError):
            add_cosignature(signed(log_key), WITNESS, witness_key, timestamp)
    not_a_checkpoint = NOTES["signed_note_spec"]["note"]
    with pytest.raises(VerificationError):
        add_cosignature(not_a_checkpoint, WITNESS, witness_key, T)
    with pytest.raises(ValueError):
        sign_checkpoint(head(), "bad name", log_key)


def test_cosignature_timestamp_beyond_int64_refused(
    log_key: SigningKey, witness_key: SigningKey
) -> None:
    note = parse_note(signed(log_key))
    too_late = 2**63
    signature = witness_key.sign(_cosigned_message(note.text, too_late))
    key_id = note_key_id(WITNESS, COSIGNATURE_V1, witness_key.verify_key())
    line = NoteSignature(WITNESS, key_id, too_late.to_bytes(8, "big") + signature)
    with pytest.raises(VerificationError, match="out of range"):
        verify_cosignature(Note(note.text, (line,)).to_bytes(), WITNESS, witness_key.verify_key())


# --- Known answers from the specifications and other implementations ---------------------


def test_signed_note_spec_example_verifies() -> None:
    vector = NOTES["signed_note_spec"]
    key = NoteKey.from_vkey(vector["vkey"])
    assert base64.b64decode(key.key.to_dict()["public"]).hex() == vector["public_key"]
    assert key.to_vkey() == vector["vkey"]
    note = parse_note(vector["note"])
    assert note.text == vector["text"]
    assert note.to_bytes().decode() == vector["note"]
    (line,) = note.signatures
    assert (line.name, line.key_id) == (key.name, key.key_id)
    assert key.key.verify(note.text.encode(), line.signature)
    assert not key.key.verify(note.text.replace("example", "exampl3").encode(), line.signature)


def test_go_sumdb_note_example_is_reproduced_byte_for_byte() -> None:
    vector = NOTES["sumdb_note"]
    _, _, name, key_id, material = vector["skey"].split("+", 4)
    seed = base64.b64decode(material)
    assert seed[0] == ED25519
    signer = SigningKey(seed[1:])
    key = NoteKey(name, signer.verify_key())
    assert key.to_vkey() == vector["vkey"]
    assert key.key_id.hex() == key_id
    line = NoteSignature(name, key.key_id, signer.sign(vector["text"].encode()))
    assert Note(vector["text"], (line,)).to_bytes().decode() == vector["note"]


def test_real_ct_checkpoint_and_its_witness_cosignatures_verify() -> None:
    vector = NOTES["ct_staging_checkpoint"]
    log = NoteKey.from_vkey(vector["log_vkey"])
    evidence = verify_checkpoint(vector["note"], vector["origin"], log.name, log.key)
    assert evidence.checkpoint.size == vector["size"]
    assert evidence.checkpoint.root.hex() == vector["root"]
    # The first line, an RFC 6962 TreeHeadSignature (type 0x05) under the log's name, has
    # another key id and was ignored.
    assert parse_note(vector["note"]).signatures[0].key_id != log.key_id
    stamps = set()
    for vkey in vector["witness_vkeys"]:
        witness = NoteKey.from_vkey(vkey)
        assert witness.signature_type == COSIGNATURE_V1
        cosig = verify_cosignature(
            vector["note"], witness.name, witness.key, origin=vector["origin"]
        )
        stamps.add(cosig.timestamp)
    assert len(stamps) == 1  # the four witnesses cosigned within the same second
    moved = vector["note"].replace("\n1432088532\n", "\n1432088533\n")
    with pytest.raises(VerificationError):
        verify_checkpoint(moved, vector["origin"], log.name, log.key)
    with pytest.raises(VerificationError):
        witness = NoteKey.from_vkey(vector["witness_vkeys"][0])
        verify_cosignature(moved, witness.name, witness.key)


def test_tlog_spec_examples_parse_and_the_cosigned_message_matches() -> None:
    vector = NOTES["checkpoint_spec"]
    note = parse_note(vector["note"])
    checkpoint = Checkpoint.from_body(note.text)
    assert (checkpoint.origin, checkpoint.size) == (vector["origin"], vector["size"])
    assert note.to_bytes().decode() == vector["note"]
    witness_line = note.signatures[1]
    timestamp = int.from_bytes(witness_line.signature[:8], "big")
    assert timestamp == 1679315147
    assert _cosigned_message(note.text, timestamp).decode() == vector["cosigned_message"]


def test_vkeys_round_trip_and_refuse_a_wrong_id(log_key: SigningKey) -> None:
    key = NoteKey("мвд.рф/журнал", log_key.verify_key())
    assert NoteKey.from_vkey(key.to_vkey()) == key
    cosigner = NoteKey(WITNESS, log_key.verify_key(), COSIGNATURE_V1)
    assert (
        NoteKey.from_vkey(cosigner.to_vkey()).key_id
        != NoteKey(WITNESS, log_key.verify_key()).key_id
    )
    name, key_id, material = key.to_vkey().split("+", 2)
    for bad in [f"{name}+00000000+{material}", f"{name}+{key_id}", f"a b+{key_id}+{material}"]:
        with pytest.raises(VerificationError):
            NoteKey.from_vkey(bad)
