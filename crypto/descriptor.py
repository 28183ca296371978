"""Node descriptors: a Party's signed statement of who it is and which keys it holds.

`accord peer export` writes one; `accord peer add` and `accord verify --trust` read it.

Invariants:
- A descriptor is a DSSE envelope of type `application/vnd.accord.descriptor+json;
  version=1`, signed by the seal key it names (proof of possession). That signature proves
  nothing about *who* holds the key: trust comes from comparing the fingerprint out of
  band, which is why `fingerprint` covers exactly the identity-defining fields.
- The fingerprint is SHA-256 over canonical JSON of the party id, the seal and encryption
  key ids and the TLS certificate digest, shown as grouped hex for people to compare.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ._wire import (
    format_time,
    is_version,
    parse_hex64,
    parse_ident,
    parse_text,
    parse_time,
    require_keys,
)
from .canonical import dumps, loads_canonical
from .envelope import Envelope, sign_envelope, verify_envelope
from .errors import VerificationError
from .keys import RecipientKey, Signer, VerifyKey
from .tls import certificate_fingerprint

__all__ = ["DESCRIPTOR_TYPE", "NodeDescriptor", "format_fingerprint", "verify_descriptor"]

DESCRIPTOR_TYPE = "application/vnd.accord.descriptor+json; version=1"
DESCRIPTOR_VERSION = 1


def format_fingerprint(hex_digest: str, group: int = 4, groups: int = 16) -> str:
    """Grouped upper-case hex, 64 bits per line of four groups: easy to read aloud."""
    text = hex_digest[: group * groups].upper()
    return " ".join(text[i : i + group] for i in range(0, len(text), group))


@dataclass(frozen=True)
class Signatory:
    """A person who signs for the Party (art. 4.4): name, role, public key."""

    name: str
    role: str
    key: VerifyKey

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "key": self.key.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Signatory:
        data = require_keys(data, {"name", "role", "key"}, set(), "signatory")
        try:
            key = VerifyKey.from_dict(data["key"])
        except ValueError as e:
            raise VerificationError(f"signatory key: {e}") from e
        return cls(
            parse_text(data["name"], "signatory name", max_len=200),
            parse_text(data["role"], "signatory role", max_len=100),
            key,
        )


@dataclass(frozen=True)
class NodeDescriptor:
    party: str
    name: str
    endpoint: str
    seal: VerifyKey
    encryption: RecipientKey
    tls_certificate_pem: str
    tls_certificate_sha256: str
    signatories: tuple[Signatory, ...]
    created: datetime
    profile_sha256: str | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 hex of the identity-defining fields."""
        return hashlib.sha256(
            dumps(
                {
                    "party": self.party,
                    "seal": self.seal.key_id,
                    "encryption": self.encryption.key_id,
                    "tls": self.tls_certificate_sha256,
                }
            )
        ).hexdigest()

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": DESCRIPTOR_VERSION,
            "party": self.party,
            "name": self.name,
            "endpoint": self.endpoint,
            "seal": self.seal.to_dict(),
            "encryption": self.encryption.to_dict(),
            "tls_certificate_pem": self.tls_certificate_pem,
            "tls_certificate_sha256": self.tls_certificate_sha256,
            "signatories": [s.to_dict() for s in self.signatories],
            "created": format_time(self.created),
            "profile_sha256": self.profile_sha256,
        }

    def sign(self, seal: Signer) -> Envelope:
        if seal.key_id != self.seal.key_id:
            raise ValueError("a descriptor is signed by the seal key it names")
        return sign_envelope(DESCRIPTOR_TYPE, self.to_payload(), [seal])

    @classmethod
    def from_payload(cls, data: Any) -> NodeDescriptor:
        fields = {
            "v", "party", "name", "endpoint", "seal", "encryption", "tls_certificate_pem",
            "tls_certificate_sha256", "signatories", "created", "profile_sha256",
        }  # fmt: skip
        data = require_keys(data, fields, set(), "descriptor")
        if not is_version(data["v"], DESCRIPTOR_VERSION):
            raise VerificationError(f"unsupported descriptor version {data['v']!r}")
        if not isinstance(data["signatories"], list):
            raise VerificationError("signatories must be a list")
        try:
            seal = VerifyKey.from_dict(data["seal"])
            encryption = RecipientKey.from_dict(data["encryption"])
        except ValueError as e:
            raise VerificationError(f"descriptor key: {e}") from e
        pem = parse_text(data["tls_certificate_pem"], "tls_certificate_pem", max_len=16384)
        profile = data["profile_sha256"]
        return cls(
            party=parse_ident(data["party"], "party"),
            name=parse_text(data["name"], "name", max_len=500),
            endpoint=parse_text(data["endpoint"], "endpoint", max_len=500),
            seal=seal,
            encryption=encryption,
            tls_certificate_pem=pem,
            tls_certificate_sha256=parse_hex64(
                data["tls_certificate_sha256"], "tls_certificate_sha256"
            ),
            signatories=tuple(Signatory.from_dict(s) for s in data["signatories"]),
            created=parse_time(data["created"], "created"),
            profile_sha256=None if profile is None else parse_hex64(profile, "profile_sha256"),
        )


def verify_descriptor(envelope: Envelope, *, fingerprint: str | None = None) -> NodeDescriptor:
    """Parse a descriptor and check its self-signature and, if given, its fingerprint.

    1. The payload is a descriptor, signed by the seal key it names (possession).
    2. The TLS certificate digest is the digest of the certificate it carries.
    3. If the caller compared a fingerprint out of band, it must match exactly (spaces and
       case are ignored); a mismatch means someone else's keys.
    """
    # The key that verifies a descriptor is inside it, so its payload is parsed (strictly)
    # before its signature is checked; nothing parsed is used until both hold.
    if envelope.payload_type != DESCRIPTOR_TYPE:
        raise VerificationError("not a node descriptor")
    descriptor = NodeDescriptor.from_payload(loads_canonical(envelope.payload))
    verify_envelope(
        envelope, [descriptor.seal], payload_type=DESCRIPTOR_TYPE, required=[descriptor.seal.key_id]
    )
    try:
        actual_tls = certificate_fingerprint(descriptor.tls_certificate_pem.encode("ascii"))
    except Exception as e:
        raise VerificationError("descriptor carries an unreadable TLS certificate") from e
    if actual_tls != descriptor.tls_certificate_sha256:
        raise VerificationError("descriptor's TLS certificate does not match its digest")
    if fingerprint is not None:
        wanted = "".join(fingerprint.split()).lower()
        if len(wanted) < 32 or not descriptor.fingerprint.startswith(wanted):
            raise VerificationError(
                "fingerprint mismatch: these are not the keys you compared; do not trust them"
            )
    return descriptor
