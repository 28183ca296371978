"""Signed envelopes: DSSE over canonical JSON payloads, several signatures per envelope.

Invariants:
- A signature covers DSSE's pre-authentication encoding (PAE) of the payload type and the
  exact payload bytes: "DSSEv1" SP len(type) SP type SP len(payload) SP payload. The
  "DSSEv1" marker is the domain separator and version; the payload type names Accord's
  statement kind and its version, so a receipt can never pass for a message.
- Payloads are RFC 8785 canonical JSON, serialised once at signing; verification works on
  the bytes as received, and parsing refuses any non-canonical form.
- An `Envelope` in memory is well formed: it came from `from_bytes` (which checks
  everything) or from `sign_envelope`. It is not yet *verified*: only `verify_envelope`
  says whose signatures hold, and it returns that as evidence or raises.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_ascii_strings, dumps, loads_canonical
from .errors import SigningError, VerificationError
from .keys import Signer, VerifyKey

__all__ = [
    "Envelope",
    "Signature",
    "VerifiedEnvelope",
    "pae",
    "sign_envelope",
    "verify_envelope",
]

# Matched with `fullmatch`: `$` would also match before a final newline.
_PAYLOAD_TYPE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")
_KEY_ID = re.compile(r"[0-9a-f]{64}")
SIGNATURE_SIZE = 64
MAX_SIGNATURES = 16


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("ascii")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope. Build it with `sign_envelope` or `from_bytes`, never by hand."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        # The same checks guard both construction paths, so no ill-formed envelope exists.
        if not _PAYLOAD_TYPE.fullmatch(self.payload_type):
            raise VerificationError("payload type must be 1 to 255 printable ASCII characters")
        if not self.signatures:
            raise VerificationError("an envelope carries at least one signature")
        if len(self.signatures) > MAX_SIGNATURES:
            raise VerificationError(f"more than {MAX_SIGNATURES} signatures")
        seen: set[str] = set()
        for s in self.signatures:
            if not _KEY_ID.fullmatch(s.keyid):
                raise VerificationError("signature key id must be 64 lowercase hex digits")
            if len(s.sig) != SIGNATURE_SIZE:
                raise VerificationError("an Ed25519 signature is 64 bytes")
            if s.keyid in seen:
                raise VerificationError("two signatures by the same key")
            seen.add(s.keyid)

    # -- Wire form --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": base64.b64encode(self.payload).decode("ascii"),
            "payloadType": self.payload_type,
            "signatures": [
                {"keyid": s.keyid, "sig": base64.b64encode(s.sig).decode("ascii")}
                for s in self.signatures
            ],
        }

    # An envelope is immutable, so its byte form and digests are computed once and kept in
    # the instance dict (as `from_bytes` keeps the bytes it proved canonical). Plain
    # properties, not functools.cached_property, which takes a lock on every first read in
    # Python 3.11.

    def to_bytes(self) -> bytes:
        """The envelope as canonical JSON: the form that is stored, sent and digested."""
        canonical: bytes | None = self.__dict__.get("_canonical")
        if canonical is None:
            canonical = self.__dict__["_canonical"] = self._write()
        return canonical

    def _write(self) -> bytes:
        # Its values are ASCII strings this class checked (payload type, hex key ids,
        # base64), so the standard library's form is the RFC 8785 form without the value
        # walk; and when the payload type needs no escape (no '"' or '\\'), that form is
        # the plain one `_from_plain_wire` reads, written here directly.
        if '"' in self.payload_type or "\\" in self.payload_type:
            return canonical_ascii_strings(self.to_dict())
        signatures = b",".join(
            b'{"keyid":"%s","sig":"%s"}' % (s.keyid.encode("ascii"), _b64encode(s.sig))
            for s in self.signatures
        )
        return b'{"payload":"%s","payloadType":"%s","signatures":[%s]}' % (
            _b64encode(self.payload),
            self.payload_type.encode("ascii"),
            signatures,
        )

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        if not isinstance(data, dict) or set(data) != {"payload", "payloadType", "signatures"}:
            raise VerificationError("envelope must have exactly payload, payloadType, signatures")
        payload_type, sigs = data["payloadType"], data["signatures"]
        if not isinstance(payload_type, str) or not isinstance(sigs, list):
            raise VerificationError("envelope fields have the wrong types")
        signatures = []
        for item in sigs:
            if not isinstance(item, dict) or set(item) != {"keyid", "sig"}:
                raise VerificationError("each signature has exactly keyid and sig")
            if not isinstance(item["keyid"], str):
                raise VerificationError("signature keyid must be a string")
            signatures.append(Signature(item["keyid"], _b64decode(item["sig"])))
        return cls(payload_type, _b64decode(data["payload"]), tuple(signatures))

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse an envelope; it must be canonical JSON. Raises `VerificationError`."""
        envelope = _from_plain_wire(cls, data)
        if envelope is None:
            envelope = cls.from_dict(loads_canonical(data))
        # The bytes were proven canonical: they are the envelope's one byte form.
        envelope.__dict__["_canonical"] = bytes(data)
        return envelope

    @property
    def sha256(self) -> str:
        """Digest of the whole envelope (payload and signatures) as stored and sent."""
        digest: str | None = self.__dict__.get("_sha256")
        if digest is None:
            digest = self.__dict__["_sha256"] = hashlib.sha256(self.to_bytes()).hexdigest()
        return digest

    @property
    def payload_sha256(self) -> str:
        """Digest of the signed payload alone: stable when co-signatures are added."""
        digest: str | None = self.__dict__.get("_payload_sha256")
        if digest is None:
            digest = self.__dict__["_payload_sha256"] = hashlib.sha256(self.payload).hexdigest()
        return digest

    def add_signatures(self, signers: Iterable[Signer]) -> Envelope:
        """Co-sign: the same payload with further signatures (a seal after a signatory)."""
        extra = tuple(_sign_one(s, self.payload_type, self.payload) for s in signers)
        return Envelope(self.payload_type, self.payload, self.signatures + extra)


# The canonical wire form of an envelope whose strings need no JSON escape, which is every
# envelope Accord writes: the keys in RFC 8785 order, no whitespace, canonical base64, and
# each signature a fixed-size object ({"keyid":"<64 hex>","sig":"<88 base64>"}, 173
# bytes, comma-separated). For such bytes the JSON parse and the canonical re-encoding
# prove nothing more, so `_from_plain_wire` reads them directly.
_WIRE_PREFIX = b'{"payload":"'
_WIRE_SIGNATURE = rb'\{"keyid":"[0-9a-f]{64}","sig":"[A-Za-z0-9+/]{86}=="\}'
_WIRE_SIGNATURE_SIZE = 173
_WIRE_REST = re.compile(
    rb'","payloadType":"(?P<payload_type>[\x21\x23-\x5b\x5d-\x7e][\x20\x21\x23-\x5b\x5d-\x7e]*)",'
    rb'"signatures":\[(?P<signatures>' + _WIRE_SIGNATURE + rb"(?:," + _WIRE_SIGNATURE + rb")*)\]\}"
)


def _from_plain_wire(cls: type[Envelope], data: bytes) -> Envelope | None:
    """The envelope in `data` if it is in the plain canonical form above, else None.

    It only ever accepts: any doubt (another shape, an escape, bad base64, an envelope that
    breaks an invariant) returns None, and the general parser gives the verdict and its
    error. What it accepts, the general parser accepts identically: a JSON string of
    base64 or of printable ASCII other than '"' and '\\' is written without escapes, so the
    bytes are the canonical form of the object read (`tests/crypto/test_envelope.py`
    compares both parsers on every one-byte edit of real envelopes).
    """
    if not data.startswith(_WIRE_PREFIX):
        return None
    end = data.find(b'"', len(_WIRE_PREFIX))
    rest = _WIRE_REST.fullmatch(data, end) if end > 0 else None
    if rest is None:
        return None
    listed = rest["signatures"]
    try:
        signatures = tuple(
            Signature(
                listed[i + 10 : i + 74].decode("ascii"),
                _canonical_b64decode(listed[i + 83 : i + 171]),
            )
            for i in range(0, len(listed), _WIRE_SIGNATURE_SIZE + 1)
        )
        payload = _canonical_b64decode(data[len(_WIRE_PREFIX) : end])
        return cls(rest["payload_type"].decode("ascii"), payload, signatures)
    except (VerificationError, binascii.Error):
        return None


def _b64encode(data: bytes) -> bytes:
    return binascii.b2a_base64(data, newline=False)


def _canonical_b64decode(text: bytes) -> bytes:
    """Strict base64 (the alphabet, then padding only at the end) that re-encodes to
    `text`; raises `binascii.Error` or `VerificationError` otherwise."""
    raw = binascii.a2b_base64(text, strict_mode=True)
    if binascii.b2a_base64(raw, newline=False) != text:
        raise VerificationError("non-canonical base64")
    return raw


def _b64decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise VerificationError("expected a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise VerificationError("invalid base64") from e
    # Only the canonical encoding is accepted, so one envelope has one byte form.
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError("non-canonical base64")
    return raw


def _sign_one(signer: Signer, payload_type: str, payload: bytes) -> Signature:
    try:
        sig = signer.sign(pae(payload_type, payload))
    except Exception as e:
        raise SigningError(f"signer {signer.key_id[:16]} failed: {e}") from e
    return Signature(signer.key_id, sig)


def sign_envelope(
    payload_type: str, payload: Mapping[str, Any] | bytes, signers: Iterable[Signer]
) -> Envelope:
    """Serialise `payload` once (canonical JSON) and sign it with every signer, in order."""
    if isinstance(payload, bytes):
        body = payload
        loads_canonical(body)  # a pre-serialised payload must already be canonical
    else:
        body = dumps(dict(payload))
    return _sign_canonical(payload_type, body, signers)


def _sign_canonical(payload_type: str, body: bytes, signers: Iterable[Signer]) -> Envelope:
    """Sign bytes this package serialised itself (so known to be canonical)."""
    signatures = tuple(_sign_one(s, payload_type, body) for s in signers)
    return Envelope(payload_type, body, signatures)


@dataclass(frozen=True)
class VerifiedEnvelope:
    """Evidence that an envelope verified: which trusted keys signed which payload."""

    payload_type: str
    payload: bytes
    statement: Mapping[str, Any]
    payload_sha256: str
    envelope_sha256: str
    key_ids: frozenset[str]


def verify_envelope(
    envelope: Envelope,
    trusted: Iterable[VerifyKey] | Mapping[str, VerifyKey],
    *,
    payload_type: str,
    required: Collection[str] = (),
    threshold: int = 1,
) -> VerifiedEnvelope:
    """Verify `envelope`; return evidence or raise `VerificationError`.

    1. The payload type must be the one the caller expects (type confusion: a receipt or a
       consent token replayed as a message).
    2. Every signature by a trusted key must verify; one bad signature by a trusted key
       fails the whole envelope (a stripped or altered co-signature is never ignored).
    3. Signatures by keys the caller does not trust prove nothing and are not counted.
    4. Every `required` key must have signed, and at least `threshold` trusted keys did.
    5. The payload is parsed only after its signatures verified, and must be canonical.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    # A list is the usual argument: test for it before the (slower) abstract Mapping.
    if not isinstance(trusted, list | tuple) and isinstance(trusted, Mapping):
        keys = dict(trusted)
    else:
        keys = {k.key_id: k for k in trusted}
    if envelope.payload_type != payload_type:  # 1
        raise VerificationError(
            f"payload type {envelope.payload_type!r} where {payload_type!r} was expected"
        )
    message = pae(envelope.payload_type, envelope.payload)
    verified: set[str] = set()
    for s in envelope.signatures:
        key = keys.get(s.keyid)
        if key is None:  # 3
            continue
        if not key.verify(message, s.sig):  # 2
            raise VerificationError(f"signature by key {s.keyid[:16]} does not verify")
        verified.add(s.keyid)
    missing = set(required) - verified
    if missing:  # 4
        raise VerificationError(
            "missing required signature(s) by " + ", ".join(sorted(k[:16] for k in missing))
        )
    if len(verified) < threshold:
        raise VerificationError(
            f"{len(verified)} trusted signature(s) verified, {threshold} required"
        )
    statement = loads_canonical(envelope.payload)  # 5
    if not isinstance(statement, dict):
        raise VerificationError("payload must be a JSON object")
    return VerifiedEnvelope(
        payload_type=envelope.payload_type,
        payload=envelope.payload,
        statement=statement,
        payload_sha256=envelope.payload_sha256,
        envelope_sha256=envelope.sha256,
        key_ids=frozenset(verified),
    )
