"""Signed checkpoints of the audit log and their cosignatures, in the C2SP formats.

A checkpoint is a C2SP signed note (c2sp.org/signed-note) whose text is a tree head
(c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size>
    <base64 root hash>
    [extension lines]

    — <log key name> base64(key id || Ed25519 signature over the text)
    — <witness name> base64(key id || timestamp || Ed25519 signature)   (c2sp.org/tlog-cosignature)

A node signs the checkpoints of its own log; the peer witnesses them (after checking a
consistency proof from the last size it cosigned) and returns a cosignature line, so
neither Party can show one history to an auditor and another to its peer.

Invariants:
- Parsing is strict and total: `parse_note` returns a `Note` whose every field is checked
  (UTF-8, no control character but newline, the text separated from one to
  `MAX_SIGNATURES` well-formed signature lines by the last empty line, canonical base64,
  key names without spaces or "+", no key signing twice), or raises `VerificationError`.
- A key is the pair (name, key id). Signature lines of any other pair are ignored, even
  when they share the name or the id with a trusted key (signed-note, "Signatures"); a
  line of a trusted key that fails to verify refuses the whole note.
- Key ids are SHA-256(name || 0x0A || type || 32-byte public key)[:4], with type 0x01 for
  the log's Ed25519 note signatures and 0x04 for cosignature/v1, so one Ed25519 key
  never yields a signature valid in the other role.
- A cosignature/v1 signs "cosignature/v1\\ntime <t>\\n" followed by the whole checkpoint
  text, never the note text alone; its timestamp is at most 2**63 - 1.
- Origins and key names may be any Unicode (Cyrillic included) within these rules; the
  body is UTF-8 and signatures cover its exact bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import VerificationError
from .keys import Signer, VerifyKey

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "MAX_SIGNATURES",
    "Checkpoint",
    "CheckpointEvidence",
    "CosignatureEvidence",
    "Note",
    "NoteKey",
    "NoteSignature",
    "add_cosignature",
    "note_key_id",
    "parse_note",
    "sign_checkpoint",
    "verify_checkpoint",
    "verify_cosignature",
]

# Signature type bytes of c2sp.org/signed-note.
ED25519 = 0x01
COSIGNATURE_V1 = 0x04

# signed-note: verifiers SHOULD limit the signatures of a note and MUST accept 16.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20
MAX_TIMESTAMP = 2**63 - 1
MAX_TREE_SIZE = 2**64 - 1

_EM_DASH = "\u2014"
_ROOT_SIZE = 32
_ED25519_SIG_SIZE = 64
_COSIGNATURE_HEADER = b"cosignature/v1\n"


# --- Keys ------------------------------------------------------------------------------


def _raw_public(key: VerifyKey) -> bytes:
    return base64.b64decode(key.to_dict()["public"])


def _bad_name(name: object) -> str | None:
    """Why `name` cannot be a key name, or None (signed-note, "Format")."""
    if not isinstance(name, str) or not name:
        return "a key name must be a non-empty string"
    if "+" in name or any(c.isspace() for c in name):
        return "a key name must not contain spaces or '+'"
    if any(ord(c) < 0x20 for c in name):
        return "a key name must not contain control characters"
    return None


def note_key_id(name: str, signature_type: int, key: VerifyKey) -> bytes:
    """The 4-byte id of a note key: SHA-256(name || 0x0A || type || public key)[:4]."""
    problem = _bad_name(name)
    if problem:
        raise ValueError(problem)
    if signature_type not in (ED25519, COSIGNATURE_V1):
        raise ValueError("only Ed25519 (0x01) and cosignature/v1 (0x04) keys are supported")
    material = name.encode("utf-8") + b"\n" + bytes([signature_type]) + _raw_public(key)
    return hashlib.sha256(material).digest()[:4]


@dataclass(frozen=True)
class NoteKey:
    """A named note key, as a signed-note verifier key (vkey) names it."""

    name: str
    key: VerifyKey
    signature_type: int = ED25519

    def __post_init__(self) -> None:
        note_key_id(self.name, self.signature_type, self.key)  # validates

    @property
    def key_id(self) -> bytes:
        return note_key_id(self.name, self.signature_type, self.key)

    def to_vkey(self) -> str:
        """The vkey text: <name>+<hex key id>+base64(type || public key)."""
        material = bytes([self.signature_type]) + _raw_public(self.key)
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(material).decode('ascii')}"

    @classmethod
    def from_vkey(cls, text: str) -> NoteKey:
        """Parse a vkey; the stated id must be the one its name and key derive."""
        parts = text.split("+", 2) if isinstance(text, str) else []
        if len(parts) != 3 or len(parts[1]) != 8:
            raise VerificationError("not a verifier key (name+id+key)")
        name, key_id, material = parts
        data = _unb64(material, "verifier key")
        if len(data) != 33 or data[0] not in (ED25519, COSIGNATURE_V1):
            raise VerificationError("verifier key is not an Ed25519 or cosignature/v1 key")
        if _bad_name(name):
            raise VerificationError("verifier key has an invalid name")
        try:
            key = cls(name, VerifyKey(data[1:]), data[0])
        except ValueError as e:
            raise VerificationError(f"verifier key is invalid: {e}") from e
        if key.key_id.hex() != key_id:
            raise VerificationError("verifier key id does not match its name and key")
        return key


# --- Notes -----------------------------------------------------------------------------


def _unb64(text: str, what: str) -> bytes:
    """Strict standard base64: padded, canonical, nothing else."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise VerificationError(f"{what} is not valid base64") from e
    if base64.b64encode(data).decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64")
    return data


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: `— <name> base64(key id || signature)`."""

    name: str
    key_id: bytes
    signature: bytes

    def __post_init__(self) -> None:
        problem = _bad_name(self.name)
        if problem:
            raise ValueError(problem)
        if len(self.key_id) != 4 or not self.signature:
            raise ValueError("a note signature is a 4-byte key id and a non-empty signature")

    @property
    def line(self) -> str:
        """The line as it appears in a note, without its final newline."""
        return f"{_EM_DASH} {self.name} {_b64(self.key_id + self.signature)}"

    @classmethod
    def from_line(cls, line: str) -> NoteSignature:
        """Parse one signature line (with or without its final newline)."""
        if not isinstance(line, str):
            raise VerificationError("a signature line is text")
        line = line.removesuffix("\n")
        prefix = _EM_DASH + " "
        if not line.startswith(prefix):
            raise VerificationError("a signature line starts with an em dash and a space")
        parts = line[len(prefix) :].split(" ")
        if len(parts) != 2:
            raise VerificationError("a signature line is '— <name> <base64>'")
        name, blob = parts
        if _bad_name(name) or any(ord(c) < 0x20 for c in line):
            raise VerificationError("a signature line has an invalid key name")
        data = _unb64(blob, "signature")
        if len(data) < 5:
            raise VerificationError("a signature is a key id and at least one byte")
        return cls(name, data[:4], data[4:])


def _check_text(text: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise VerificationError("a note must not contain control characters but newline")


@dataclass(frozen=True)
class Note:
    """A parsed signed note: its text (with the final newline) and its signature lines.

    Nothing in `text` may be trusted before a verify function has checked a signature."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.endswith("\n"):
            raise ValueError("a note text ends with a newline")
        if any(ord(c) < 0x20 and c != "\n" for c in self.text):
            raise ValueError("a note text has no control characters but newline")
        if not 1 <= len(self.signatures) <= MAX_SIGNATURES:
            raise ValueError(f"a note has 1 to {MAX_SIGNATURES} signatures")

    def to_bytes(self) -> bytes:
        lines = "".join(s.line + "\n" for s in self.signatures)
        return (self.text + "\n" + lines).encode("utf-8")


def parse_note(data: bytes | str) -> Note:
    """Parse a signed note strictly (c2sp.org/signed-note); raise `VerificationError`.

    1. Valid UTF-8, at most `MAX_NOTE_BYTES`, no control character but newline (no CR:
       a note is signed byte for byte, so line endings cannot be normalised).
    2. The text is everything up to and including the newline before the last empty line;
       it ends with a newline and may itself contain empty lines.
    3. After it, one to `MAX_SIGNATURES` signature lines, each ending with a newline.
    4. No (key name, key id) pair signs twice.
    """
    if isinstance(data, bytes):
        if len(data) > MAX_NOTE_BYTES:
            raise VerificationError("note is too large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise VerificationError("note is not valid UTF-8") from e
    elif isinstance(data, str):
        text = data
        try:
            if len(text.encode("utf-8")) > MAX_NOTE_BYTES:
                raise VerificationError("note is too large")
        except UnicodeEncodeError as e:
            raise VerificationError("note is not valid Unicode text") from e
    else:
        raise VerificationError("a note is bytes or text")
    _check_text(text)
    split = text.rfind("\n\n")
    if split < 0:
        raise VerificationError("note has no empty line before its signatures")
    body, block = text[: split + 1], text[split + 2 :]
    if not block or not block.endswith("\n"):
        raise VerificationError("note has no signature lines, or they do not end in newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"note has more than {MAX_SIGNATURES} signatures")
    signatures = tuple(NoteSignature.from_line(line) for line in lines)
    keys = [(s.name, s.key_id) for s in signatures]
    if len(set(keys)) != len(keys):
        raise VerificationError("note is signed twice by the same key")
    return Note(body, signatures)


# --- Checkpoints -----------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and its RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError("a checkpoint origin must be a non-empty string")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError("a checkpoint size must be an integer")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise ValueError("a checkpoint size must be between 0 and 2**64 - 1")
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_SIZE:
            raise ValueError(f"a checkpoint root is {_ROOT_SIZE} bytes")
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line or any(ord(c) < 0x20 for c in line):
                raise ValueError("checkpoint lines must be non-empty, without control characters")
        try:
            self.origin.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError("a checkpoint origin must be valid Unicode") from e

    def body(self) -> str:
        """The note text: origin, size, base64 root and extension lines, each ending in newline."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_body(cls, text: str) -> Checkpoint:
        """Parse a note text as a checkpoint (c2sp.org/tlog-checkpoint, "Note text")."""
        if not text.endswith("\n"):
            raise VerificationError("checkpoint text must end with a newline")
        _check_text(text)
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise VerificationError("checkpoint text is at least three non-empty lines")
        origin, size_text, root_text, *extensions = lines
        # The size is ASCII decimal without leading zeroes ("0" for the empty tree).
        if not (size_text.isascii() and size_text.isdigit()) or (
            size_text.startswith("0") and size_text != "0"
        ):
            raise VerificationError("checkpoint size is not a canonical decimal number")
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise VerificationError("checkpoint size is out of range")
        root = _unb64(root_text, "checkpoint root")
        if len(root) != _ROOT_SIZE:
            raise VerificationError(f"checkpoint root is not {_ROOT_SIZE} bytes")
        try:
            return cls(origin, size, root, tuple(extensions))
        except ValueError as e:
            raise VerificationError(f"checkpoint text is invalid: {e}") from e


@dataclass(frozen=True)
class CheckpointEvidence:
    """The log key (`key_name`, `key_id`) signed `checkpoint` in `note`."""

    checkpoint: Checkpoint
    key_name: str
    key_id: bytes
    note: Note


@dataclass(frozen=True)
class CosignatureEvidence:
    """Witness (`witness_name`, `key_id`) cosigned `checkpoint` at `timestamp` (POSIX s)."""

    checkpoint: Checkpoint
    witness_name: str
    key_id: bytes
    timestamp: int
    line: str

    @property
    def signed_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)


def _cosigned_message(body: str, timestamp: int) -> bytes:
    # tlog-cosignature, "Ed25519 signed message": header line, time line, whole body.
    return _COSIGNATURE_HEADER + b"time %d\n" % timestamp + body.encode("utf-8")


def sign_checkpoint(checkpoint: Checkpoint, name: str, signer: Signer) -> bytes:
    """The checkpoint as a note signed by the log key `name` (signature type 0x01)."""
    key_id = note_key_id(name, ED25519, signer.verify_key())
    body = checkpoint.body()
    signature = signer.sign(body.encode("utf-8"))
    return Note(body, (NoteSignature(name, key_id, signature),)).to_bytes()


def add_cosignature(
    note: bytes | str, name: str, signer: Signer, timestamp: int | datetime
) -> bytes:
    """The note with a cosignature/v1 line of witness `name` added.

    This only signs. A witness must first have verified the log's signature
    (`verify_checkpoint`) and a consistency proof from the last checkpoint it cosigned:
    the cosignature states that this is the largest consistent tree it has seen.
    """
    if isinstance(timestamp, datetime):
        if timestamp.utcoffset() is None:
            raise ValueError("a cosignature time must be timezone-aware")
        timestamp = int(timestamp.timestamp())
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise ValueError("a cosignature timestamp is POSIX seconds")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise ValueError("a cosignature timestamp must be between 0 and 2**63 - 1")
    parsed = parse_note(note)
    Checkpoint.from_body(parsed.text)
    key_id = note_key_id(name, COSIGNATURE_V1, signer.verify_key())
    if any(s.name == name and s.key_id == key_id for s in parsed.signatures):
        raise ValueError(f"the note is already cosigned by {name}")
    signature = signer.sign(_cosigned_message(parsed.text, timestamp))
    line = NoteSignature(name, key_id, timestamp.to_bytes(8, "big") + signature)
    return Note(parsed.text, (*parsed.signatures, line)).to_bytes()


def _lines_of(note: Note, name: str, key_id: bytes) -> Sequence[NoteSignature]:
    return [s for s in note.signatures if s.name == name and s.key_id == key_id]


def verify_checkpoint(
    note_text: bytes | str, origin: str, log_key_name: str, log_key: VerifyKey
) -> CheckpointEvidence:
    """Verify a checkpoint signed by a log; return evidence or raise `VerificationError`.

    1. The note parses strictly (`parse_note`).
    2. The log key is the pair (log_key_name, Ed25519 key id of log_key); lines of other
       keys are ignored (key rotation, cosignatures, other signature types).
    3. At least one line of the log key is present, and every one of them verifies over
       the exact note text: a known key's bad signature refuses the note.
    4. Only then is the text read, and it must be a well-formed checkpoint.
    5. Its origin is the expected one: a checkpoint of another log signed with the same
       key is not this log's.
    """
    note = parse_note(note_text)
    try:
        key_id = note_key_id(log_key_name, ED25519, log_key)
    except ValueError as e:
        raise VerificationError(f"log key name is invalid: {e}") from e
    lines = _lines_of(note, log_key_name, key_id)
    if not lines:
        raise VerificationError(f"checkpoint is not signed by the log key {log_key_name}")
    message = note.text.encode("utf-8")
    for line in lines:
        if len(line.signature) != _ED25519_SIG_SIZE or not log_key.verify(message, line.signature):
            raise VerificationError(f"the signature of {log_key_name} does not verify")
    checkpoint = Checkpoint.from_body(note.text)
    if checkpoint.origin != origin:
        raise VerificationError("checkpoint is for another log (origin mismatch)")
    return CheckpointEvidence(checkpoint, log_key_name, key_id, note)


def verify_cosignature(
    note_text: bytes | str,
    witness_name: str,
    witness_key: VerifyKey,
    *,
    origin: str | None = None,
) -> CosignatureEvidence:
    """Verify a witness's cosignature/v1 of a checkpoint; return evidence or raise.

    1. The note parses strictly and its text is a well-formed checkpoint (of `origin`,
       when given).
    2. The witness key is the pair (witness_name, cosignature/v1 key id of witness_key);
       exactly one line of it must be present.
    3. The line is an 8-byte big-endian timestamp (at most 2**63 - 1) and a 64-byte
       Ed25519 signature over "cosignature/v1\\ntime <timestamp>\\n" and the whole text.

    This does not check the log's own signature: call `verify_checkpoint` too.
    """
    note = parse_note(note_text)
    checkpoint = Checkpoint.from_body(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise VerificationError("checkpoint is for another log (origin mismatch)")
    try:
        key_id = note_key_id(witness_name, COSIGNATURE_V1, witness_key)
    except ValueError as e:
        raise VerificationError(f"witness name is invalid: {e}") from e
    lines = _lines_of(note, witness_name, key_id)
    if not lines:
        raise VerificationError(f"checkpoint is not cosigned by {witness_name}")
    (line,) = lines  # parse_note refuses a key that signs twice
    if len(line.signature) != 8 + _ED25519_SIG_SIZE:
        raise VerificationError("a cosignature is an 8-byte timestamp and a 64-byte signature")
    timestamp = int.from_bytes(line.signature[:8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise VerificationError("cosignature timestamp is out of range")
    if not witness_key.verify(_cosigned_message(note.text, timestamp), line.signature[8:]):
        raise VerificationError(f"the cosignature of {witness_name} does not verify")
    return CosignatureEvidence(checkpoint, witness_name, key_id, timestamp, line.line)
