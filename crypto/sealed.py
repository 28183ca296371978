"""Sealed messages: a signed statement over age-encrypted parts.

A message is three things:
- the *statement*, a canonical JSON object signed in a DSSE envelope (by the node's seal
  and, where the agreement says so, a signatory): message id, sender, recipient, times,
  marking, purpose, type, reply link, the SHA-256 and size of every encrypted part, and a
  commitment to the file key;
- one *age header* (X25519 recipient stanzas and the header MAC) wrapping the file key;
- the *parts*: the body and each attachment, each a standard age payload (its own nonce,
  64 KiB ChaCha20-Poly1305 STREAM chunks) under that one file key, so `header + part` is
  an ordinary age file that the `age` tool decrypts with the node's identity.

Invariants:
- Signatures cover ciphertext digests, never plaintext: anyone holding the sender's public
  keys verifies a message without decrypting it (auditors never need content).
- The header is not signed, so a consented forward can re-wrap the same file key for a
  third party and ship the originator's parts and envelope unchanged; the signed key
  commitment proves that the re-wrapped key is the originator's own (DESIGN guarantee 4).
- Opening checks the key commitment before releasing anything, and every part against its
  signed digest while decrypting; any failure is the one `VerificationError`.
- Plaintext is hashed at most once (when a reader asks for its digest); sealing hashes
  only ciphertext, on a second thread, while encrypting.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

from . import _age, _primitives
from ._wire import (
    format_time,
    is_version,
    parse_hex64,
    parse_ident,
    parse_int,
    parse_text,
    parse_time,
    require_keys,
)
from .canonical import canonical_string, dumps
from .envelope import Envelope, VerifiedEnvelope, _sign_canonical, verify_envelope
from .errors import VerificationError
from .keys import DecryptionKey, RecipientKey, Signer, VerifyKey

__all__ = [
    "STATEMENT_TYPE",
    "MessageDraft",
    "MessageOpener",
    "OpenedPart",
    "PartDigest",
    "SealedMessage",
    "Statement",
    "VerifiedMessage",
    "new_message_id",
    "seal_message",
    "verify_message",
]

STATEMENT_TYPE = "application/vnd.accord.message+json; version=1"
STATEMENT_VERSION = 1
MAX_CLOCK_SKEW = timedelta(minutes=5)
MAX_ATTACHMENTS = 256
_COMMITMENT_INFO = b"accord/v1 file-key commitment"
# The exact keys of a statement and of a part digest: a parsed object with any other set
# goes to `require_keys` for the error that names what is missing or unknown.
_STATEMENT_FIELDS = frozenset({
    "v", "message_id", "sender", "recipient", "created", "expires", "marking", "purpose",
    "type", "in_reply_to", "body", "attachments", "key_commitment", "extensions",
})  # fmt: skip
_PART_FIELDS = frozenset({"sha256", "size"})


def new_message_id() -> str:
    return str(uuid.uuid4())


def _key_commitment(file_key: bytes) -> str:
    # A binding commitment to the file key: ChaCha20-Poly1305 alone is not key-committing,
    # so without it a forwarder could wrap a different key that also opens (partitioning
    # attacks). HKDF with its own label is independent of age's "header" and "payload" keys.
    return _primitives.hkdf_sha256(file_key, b"", _COMMITMENT_INFO).hex()


@dataclass(frozen=True)
class PartDigest:
    """The signed digest of one encrypted part (an age payload as on the wire)."""

    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size}

    @classmethod
    def from_dict(cls, data: Any, what: str) -> PartDigest:
        if type(data) is not dict or data.keys() != _PART_FIELDS:
            data = require_keys(data, set(_PART_FIELDS), set(), what)
        return cls(
            parse_hex64(data["sha256"], f"{what}.sha256"), parse_int(data["size"], f"{what}.size")
        )

    def check(self, sha256: str, size: int) -> None:
        """Raise unless received ciphertext has exactly this digest and size."""
        if sha256 != self.sha256 or size != self.size:
            raise VerificationError("an encrypted part does not match its signed digest")


@dataclass(frozen=True)
class MessageDraft:
    """What a sender decides about a message; sealing adds the digests."""

    message_id: str
    sender: str
    recipient: str
    created: datetime
    expires: datetime
    marking: Mapping[str, Any]
    purpose: str
    type: str
    in_reply_to: str | None = None
    # Profile-defined fields that must be bound by the signature but are not content
    # (for example a case reference or the urgent-oral flag); never plaintext content.
    extensions: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Statement:
    """The signed part of a message. Build it with `seal_message` or `from_payload`."""

    message_id: str
    sender: str
    recipient: str
    created: datetime
    expires: datetime
    marking: Mapping[str, Any]
    purpose: str
    type: str
    in_reply_to: str | None
    body: PartDigest
    attachments: tuple[PartDigest, ...]
    key_commitment: str
    extensions: Mapping[str, Any]

    @property
    def parts(self) -> tuple[PartDigest, ...]:
        """The body then the attachments: index 0 is the body."""
        return (self.body, *self.attachments)

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": STATEMENT_VERSION,
            "message_id": self.message_id,
            "sender": self.sender,
            "recipient": self.recipient,
            "created": format_time(self.created),
            "expires": format_time(self.expires),
            "marking": dict(self.marking),
            "purpose": self.purpose,
            "type": self.type,
            "in_reply_to": self.in_reply_to,
            "body": self.body.to_dict(),
            "attachments": [a.to_dict() for a in self.attachments],
            "key_commitment": self.key_commitment,
            "extensions": dict(self.extensions),
        }

    @classmethod
    def from_payload(cls, data: Any) -> Statement:
        """Parse a verified payload into a statement; raise `VerificationError` if malformed."""
        if type(data) is not dict or data.keys() != _STATEMENT_FIELDS:
            data = require_keys(data, set(_STATEMENT_FIELDS), set(), "statement")
        if not is_version(data["v"], STATEMENT_VERSION):
            raise VerificationError(f"unsupported statement version {data['v']!r}")
        if not isinstance(data["marking"], dict) or not isinstance(data["extensions"], dict):
            raise VerificationError("marking and extensions must be JSON objects")
        attachments = data["attachments"]
        if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
            raise VerificationError(f"attachments must be a list of at most {MAX_ATTACHMENTS}")
        in_reply_to = data["in_reply_to"]
        created = parse_time(data["created"], "created")
        expires = parse_time(data["expires"], "expires")
        if expires <= created:
            raise VerificationError("a statement must expire after it was created")
        return cls(
            message_id=parse_ident(data["message_id"], "message_id"),
            sender=parse_ident(data["sender"], "sender"),
            recipient=parse_ident(data["recipient"], "recipient"),
            created=created,
            expires=expires,
            marking=data["marking"],
            purpose=parse_text(data["purpose"], "purpose"),
            type=parse_ident(data["type"], "type"),
            in_reply_to=None if in_reply_to is None else parse_ident(in_reply_to, "in_reply_to"),
            body=PartDigest.from_dict(data["body"], "body"),
            attachments=tuple(
                PartDigest.from_dict(a, f"attachments[{i}]") for i, a in enumerate(attachments)
            ),
            key_commitment=parse_hex64(data["key_commitment"], "key_commitment"),
            extensions=data["extensions"],
        )


@dataclass(frozen=True)
class SealedMessage:
    """A sealed, not yet signed, message: statement, shared age header, body payload.

    The attachments' payloads went to the destinations given to `seal_message`.
    """

    statement: Statement
    header: bytes
    body: bytes

    @property
    def payload(self) -> bytes:
        """The statement exactly as it is signed (canonical JSON), written once."""
        # Kept in the instance dict by hand: functools.cached_property takes a lock on every
        # first read in Python 3.11.
        payload: bytes | None = self.__dict__.get("_payload")
        if payload is None:
            payload = self.__dict__["_payload"] = _statement_json(self.statement)
        return payload

    def sign(self, signers: Iterable[Signer]) -> Envelope:
        return _sign_canonical(STATEMENT_TYPE, self.payload, signers)


_MAX_SAFE_INTEGER = 2**53 - 1


def _statement_json(statement: Statement) -> bytes:
    """`dumps(statement.to_payload())`, written field by field around the two free-form
    objects: a canonical object is its members in key order, each value canonical, so only
    `marking` and `extensions` need the general serialiser (and its checks). A statement
    holding anything but the types `seal_message` gives it goes to `dumps` whole;
    `tests/crypto/test_sealed.py` compares both on generated statements."""
    s = statement
    parts = (s.body, *s.attachments)
    texts = (s.message_id, s.sender, s.recipient, s.purpose, s.type, s.key_commitment)
    if not (
        all(type(t) is str for t in texts)
        and (s.in_reply_to is None or type(s.in_reply_to) is str)
        and all(
            type(p) is PartDigest
            and type(p.sha256) is str
            and type(p.size) is int
            and 0 <= p.size <= _MAX_SAFE_INTEGER
            for p in parts
        )
    ):
        return dumps(s.to_payload())
    q = canonical_string
    digests = [f'{{"sha256":{q(p.sha256)},"size":{p.size}}}' for p in parts]
    text = (
        f'{{"attachments":[{",".join(digests[1:])}],"body":{digests[0]},'
        f'"created":"{format_time(s.created)}","expires":"{format_time(s.expires)}",'
        f'"extensions":{_object_json(s.extensions)},'
        f'"in_reply_to":{"null" if s.in_reply_to is None else q(s.in_reply_to)},'
        f'"key_commitment":{q(s.key_commitment)},'
        f'"marking":{_object_json(s.marking)},'
        f'"message_id":{q(s.message_id)},"purpose":{q(s.purpose)},'
        f'"recipient":{q(s.recipient)},"sender":{q(s.sender)},"type":{q(s.type)},'
        f'"v":{STATEMENT_VERSION}}}'
    )
    return text.encode("utf-8")


def _object_json(value: Mapping[str, Any]) -> str:
    # Most statements carry no extensions: "{}" needs no walk and no encoder.
    if type(value) is dict and not value:
        return "{}"
    return dumps(dict(value)).decode("utf-8")


def _check_draft(draft: MessageDraft) -> None:
    """Refuse, before any work or signature, a draft whose statement no receiver would
    parse: the same field parsers `Statement.from_payload` applies, on the draft itself."""
    for name in ("message_id", "sender", "recipient", "type"):
        parse_ident(getattr(draft, name), name)
    if draft.in_reply_to is not None:
        parse_ident(draft.in_reply_to, "in_reply_to")
    parse_text(draft.purpose, "purpose")
    for value in (draft.marking, draft.extensions):
        # A dict, the usual case, before the (slower) abstract Mapping check.
        if type(value) is not dict and not isinstance(value, Mapping):
            raise VerificationError("marking and extensions must be mappings")
    if draft.created.tzinfo is None or draft.expires.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    # Statements carry whole seconds (aware times compare across zones).
    if draft.expires.replace(microsecond=0) <= draft.created.replace(microsecond=0):
        raise VerificationError("a statement must expire after it was created")


def seal_message(
    draft: MessageDraft,
    *,
    body: bytes | Callable[[Sequence[OpenedPart]], bytes],
    attachments: Sequence[tuple[BinaryIO, BinaryIO]] = (),
    recipients: Sequence[RecipientKey],
    rng: Callable[[int], bytes] | None = None,
) -> SealedMessage:
    """Encrypt the body and stream each attachment (source, destination) to `recipients`.

    1. One fresh file key for the whole message, wrapped once for every recipient.
    2. Each part is encrypted with its own nonce; its ciphertext digest is computed while
       it is written, never by a second pass.
    3. The statement binds every digest and the key commitment; nothing is signed here, so
       a draft can wait for a signatory (art. 4.4) before the seal is added.

    When `body` is a callable, the attachments are sealed first, hashing their plaintext
    once on the way, and the callable builds the body from those digests (a manifest
    inside the encrypted body, so that the recipient checks every file end to end while
    auditors, who see only the statement, learn nothing of the content).

    `rng` replaces the CSPRNG for the file key, ephemeral keys and nonces; only the seeded
    test-vector generator passes one.
    """
    if not recipients:
        raise ValueError("a message needs at least one recipient key")
    _check_draft(draft)
    if len(attachments) > MAX_ATTACHMENTS:
        raise ValueError(f"at most {MAX_ATTACHMENTS} attachments")
    random = rng or _primitives.random_bytes
    file_key = _age.new_file_key(rng=random)
    header = _age.encode_header(file_key, [r._public for r in recipients], rng=random)
    parts = []
    opened = []
    for src, dst in attachments:
        reader = _HashingReader(src) if callable(body) else src
        a = _age.encrypt_payload(cast(BinaryIO, reader), dst, file_key, rng=random)
        parts.append(PartDigest(a.sha256.hex(), a.size))
        if isinstance(reader, _HashingReader):
            opened.append(OpenedPart(a.plaintext_size, reader.hexdigest()))
    plaintext = body(opened) if callable(body) else body
    body_payload, info = _age.encrypt_payload_bytes(plaintext, file_key, rng=random)
    statement = Statement(
        message_id=draft.message_id,
        sender=draft.sender,
        recipient=draft.recipient,
        created=draft.created,
        expires=draft.expires,
        marking=dict(draft.marking),
        purpose=draft.purpose,
        type=draft.type,
        in_reply_to=draft.in_reply_to,
        body=PartDigest(info.sha256.hex(), info.size),
        attachments=tuple(parts),
        key_commitment=_key_commitment(file_key),
        extensions=dict(draft.extensions),
    )
    return SealedMessage(statement, header, body_payload)


@dataclass(frozen=True)
class VerifiedMessage:
    """Evidence that a message's statement verified, and the statement itself."""

    statement: Statement
    evidence: VerifiedEnvelope


def verify_message(
    envelope: Envelope,
    sender_keys: Iterable[VerifyKey] | Mapping[str, VerifyKey],
    *,
    sender: str,
    recipient: str,
    now: datetime,
    required: Collection[str] = (),
) -> VerifiedMessage:
    """Verify a message's envelope and statement without decrypting anything.

    1. The envelope is a message statement signed by the sender's trusted keys, including
       every `required` key (for example the seal, and a signatory for a request).
    2. The statement names the expected sender (a peer cannot speak for another party).
    3. It names the expected recipient (a message for another node is not accepted here).
    4. It is not expired and was not created in the future beyond the allowed clock skew.
    """
    evidence = verify_envelope(
        envelope, sender_keys, payload_type=STATEMENT_TYPE, required=required
    )
    statement = Statement.from_payload(evidence.statement)
    if statement.sender != sender:  # 2
        raise VerificationError(f"statement claims sender {statement.sender!r}, not {sender!r}")
    if statement.recipient != recipient:  # 3
        raise VerificationError(
            f"message is addressed to {statement.recipient!r}, not {recipient!r}"
        )
    if now >= statement.expires:  # 4
        raise VerificationError(f"message expired at {format_time(statement.expires)}")
    if statement.created > now + MAX_CLOCK_SKEW:
        raise VerificationError("message was created in the future: check both clocks")
    return VerifiedMessage(statement, evidence)


@dataclass(frozen=True)
class OpenedPart:
    """What a reader learns about a decrypted part: its plaintext size and digest."""

    size: int
    sha256: str | None


class _HashingReader(io.RawIOBase):
    """Reads from `src` while hashing what it reads (the plaintext, once)."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._src.read(len(view))
        n = len(data)
        view[:n] = data
        self._hash.update(data)
        return n

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class _HashingWriter(io.RawIOBase):
    """Passes writes through to `dst` while hashing them (the plaintext, once)."""

    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst
        self._hash = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._hash.update(data)
        self._dst.write(data)
        return len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class MessageOpener:
    """Decrypts a verified message's parts with this node's identity.

    Construction unwraps the file key and checks it against the signed commitment; the
    opener then decrypts parts, each checked against its signed digest as it streams.
    """

    def __init__(self, message: VerifiedMessage, header: bytes, identity: DecryptionKey) -> None:
        self._statement = message.statement
        try:
            parsed = _age.parse_header(io.BytesIO(header))
            file_key = identity._unwrap_age(parsed)
        except _age.AgeError as e:
            raise VerificationError(f"cannot unwrap the message key ({e.kind})") from e
        commitment = _key_commitment(file_key)
        if not _primitives.hmac_equal(commitment.encode(), self._statement.key_commitment.encode()):
            raise VerificationError("the message key does not match the signed commitment")
        self._file_key = file_key

    def open_body(self, payload: bytes) -> bytes:
        part = self._statement.body
        if len(payload) != part.size:
            raise VerificationError("the body does not match its signed size")
        try:
            return _age.decrypt_payload_bytes(
                payload, self._file_key, expected_sha256=bytes.fromhex(part.sha256)
            )
        except _age.AgeError as e:
            raise VerificationError(f"the body failed to open ({e.kind})") from e

    def open_attachment(
        self, index: int, src: BinaryIO, dst: BinaryIO, *, plaintext_digest: bool = True
    ) -> OpenedPart:
        """Decrypt attachment `index` (0-based) from `src` into `dst`.

        On `VerificationError`, whatever reached `dst` must be discarded by the caller
        (write to a temporary file and rename only on success).
        """
        if not 0 <= index < len(self._statement.attachments):
            raise IndexError(f"the message has {len(self._statement.attachments)} attachment(s)")
        part = self._statement.attachments[index]
        if plaintext_digest:
            writer = _HashingWriter(dst)
            size = self._decrypt(part, src, writer)  # type: ignore[arg-type]
            return OpenedPart(size, writer.hexdigest())
        return OpenedPart(self._decrypt(part, src, dst), None)

    def rewrap(self, recipients: Sequence[RecipientKey]) -> bytes:
        """A new header wrapping this message's file key for other recipients.

        Only for a consented forward (art. 7.3): the parts and the envelope stay the
        originator's, and the commitment lets the third party check the key.
        """
        if not recipients:
            raise ValueError("rewrap needs at least one recipient key")
        return _age.encode_header(self._file_key, [r._public for r in recipients])

    def _decrypt(self, part: PartDigest, src: BinaryIO, dst: BinaryIO) -> int:
        try:
            info = _age.decrypt_payload(
                src, dst, self._file_key, expected_sha256=bytes.fromhex(part.sha256)
            )
        except _age.AgeError as e:
            raise VerificationError(f"an encrypted part failed to open ({e.kind})") from e
        if info.size != part.size:
            raise VerificationError("an encrypted part does not match its signed size")
        return info.plaintext_size
