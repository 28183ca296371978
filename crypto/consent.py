"""Consent tokens and consented forwards (agreement art. 7.2, 7.3; DESIGN guarantee 4).

Three signed statements, each a DSSE envelope with its own payload type (so none can be
replayed as another):

- a *consent token*, signed by the originator's seal (and a signatory where the profile
  says so): the digest of the message's signed statement, its id, the originator, the
  Party allowed to pass it on (the forwarder), the third party, the permitted purpose,
  the marking the originator set, the issue time, the expiry and a random nonce that
  names the token. A token whose third party is the forwarder itself is a consent to use
  the content for another purpose (art. 7.2) rather than to transfer it;
- a *revocation*, signed by the originator's seal, naming the nonce of a token it issued;
- a *forward statement*, signed by the forwarder's seal: which message (its statement and
  envelope digests), to which third party, under which consent (the token's envelope
  digest), with which re-wrapped age header (its digest) and when.

Invariants:
- `verify_forward` is the third party's whole cryptographic checklist and either raises
  `VerificationError` or returns the evidence of every step; it never returns a bool.
- A token binds the statement digest, not the envelope: co-signatures added later do not
  change it, and no other message, version or marking can match it.
- Nothing here is stateful: whether a token was revoked or already used is the node's
  record (the caller checks it); this module proves who signed what.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from . import _primitives
from ._wire import (
    format_time,
    is_version,
    parse_hex64,
    parse_ident,
    parse_text,
    parse_time,
    require_keys,
)
from .envelope import Envelope, VerifiedEnvelope, sign_envelope, verify_envelope
from .errors import VerificationError
from .keys import DecryptionKey, Signer, VerifyKey
from .sealed import MessageOpener, VerifiedMessage, verify_message

__all__ = [
    "CONSENT_TYPE",
    "FORWARD_TYPE",
    "REVOCATION_TYPE",
    "ConsentRevocation",
    "ConsentToken",
    "ForwardStatement",
    "VerifiedConsent",
    "VerifiedForward",
    "issue_consent",
    "issue_revocation",
    "new_nonce",
    "sign_forward",
    "verify_consent",
    "verify_consent_offline",
    "verify_forward",
    "verify_revocation",
]

CONSENT_TYPE = "application/vnd.accord.consent+json; version=1"
REVOCATION_TYPE = "application/vnd.accord.consent-revocation+json; version=1"
FORWARD_TYPE = "application/vnd.accord.forward+json; version=1"
_VERSION = 1
MAX_CLOCK_SKEW = timedelta(minutes=5)


def new_nonce() -> str:
    """A fresh 256-bit nonce: the token's unique name."""
    return _primitives.random_bytes(32).hex()


def _marking(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what} must be a JSON object")
    return value


@dataclass(frozen=True)
class ConsentToken:
    """The originator's prior consent to pass one message to one third party (art. 7.3)."""

    nonce: str
    message_id: str
    statement_sha256: str
    originator: str
    forwarder: str
    third_party: str
    purpose: str
    marking: Mapping[str, Any]
    issued: datetime
    expires: datetime

    @property
    def is_use_consent(self) -> bool:
        """A consent to use the content for another purpose (art. 7.2), not to transfer it."""
        return self.third_party == self.forwarder

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "nonce": self.nonce,
            "message_id": self.message_id,
            "statement_sha256": self.statement_sha256,
            "originator": self.originator,
            "forwarder": self.forwarder,
            "third_party": self.third_party,
            "purpose": self.purpose,
            "marking": dict(self.marking),
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
        }

    @classmethod
    def from_payload(cls, data: Any) -> ConsentToken:
        fields = {
            "v", "nonce", "message_id", "statement_sha256", "originator", "forwarder",
            "third_party", "purpose", "marking", "issued", "expires",
        }  # fmt: skip
        data = require_keys(data, fields, set(), "consent token")
        if not is_version(data["v"], _VERSION):
            raise VerificationError(f"unsupported consent token version {data['v']!r}")
        issued = parse_time(data["issued"], "issued")
        expires = parse_time(data["expires"], "expires")
        if expires <= issued:
            raise VerificationError("a consent token must expire after it was issued")
        purpose = parse_text(data["purpose"], "purpose")
        if not purpose.strip():
            raise VerificationError("a consent token must name the permitted purpose")
        return cls(
            nonce=parse_hex64(data["nonce"], "nonce"),
            message_id=parse_ident(data["message_id"], "message_id"),
            statement_sha256=parse_hex64(data["statement_sha256"], "statement_sha256"),
            originator=parse_ident(data["originator"], "originator"),
            forwarder=parse_ident(data["forwarder"], "forwarder"),
            third_party=parse_ident(data["third_party"], "third_party"),
            purpose=purpose,
            marking=_marking(data["marking"], "marking"),
            issued=issued,
            expires=expires,
        )


def issue_consent(token: ConsentToken, signers: Iterable[Signer]) -> Envelope:
    """Sign a consent token: the originator's seal, and a signatory if the profile says so."""
    ConsentToken.from_payload(token.to_payload())  # a token that would not parse is not signed
    if token.originator in (token.forwarder, token.third_party) and not token.is_use_consent:
        raise ValueError("the originator cannot be the forwarder or the third party")
    return sign_envelope(CONSENT_TYPE, token.to_payload(), signers)


@dataclass(frozen=True)
class VerifiedConsent:
    """Evidence that a consent token verified: the token, and who signed it."""

    token: ConsentToken
    evidence: VerifiedEnvelope


def verify_consent(
    envelope: Envelope,
    *,
    originator: str,
    seals: Mapping[str, VerifyKey],
    signatories: Mapping[str, VerifyKey] = {},
    signatory_required: bool = False,
    now: datetime,
) -> VerifiedConsent:
    """Verify a consent token as its originator's, valid at `now`; raise or return evidence.

    1. The envelope is a consent token (not a message, receipt or revocation replayed).
    2. It is signed by a seal of the originator the caller trusts: a token signed by the
       forwarder or anyone else proves nothing.
    3. Where the profile requires it, also by one of the originator's signatories.
    4. The token names that originator.
    5. It was not issued in the future and has not expired.
    Whether it covers a given forward is `ConsentToken`'s fields, checked by `verify_forward`.
    """
    evidence = verify_envelope(
        envelope, dict(seals) | dict(signatories), payload_type=CONSENT_TYPE
    )  # 1
    if not evidence.key_ids & seals.keys():  # 2
        raise VerificationError("the consent token is not sealed by the originator's node")
    if signatory_required and not evidence.key_ids & signatories.keys():  # 3
        raise VerificationError("the consent token lacks the originator's signatory signature")
    token = ConsentToken.from_payload(evidence.statement)
    if token.originator != originator:  # 4
        raise VerificationError(f"the consent token names {token.originator!r} as originator")
    if token.issued > now + MAX_CLOCK_SKEW:  # 5
        raise VerificationError("the consent token was issued in the future: check both clocks")
    if now >= token.expires:
        raise VerificationError(f"the consent token expired at {format_time(token.expires)}")
    return VerifiedConsent(token, evidence)


def verify_consent_offline(
    envelope: Envelope,
    *,
    originator: str,
    message_id: str,
    statement_sha256: str,
    seals: Mapping[str, VerifyKey],
    signatories: Mapping[str, VerifyKey] = {},
) -> VerifiedConsent:
    """Verify a consent token as evidence, after the fact (an auditor's evidence bundle).

    1. The envelope is a consent token (not a message, receipt or revocation replayed).
    2. Every signature on it is by a key of the originator the caller trusts (its seals
       and signatories), and verifies: a closed piece of evidence carries no signature
       nobody can vouch for, and a token signed by the forwarder or anyone else is refused.
    3. The originator's seal is among them (art. 7.3: the Party's consent, not a person's).
    4. The token names that originator, this message id and this statement digest.
    No clock: a token that expired since it was used is still evidence of the consent it
    gave; its validity period is the token's `issued` and `expires`, for the reader to weigh.
    """
    trusted = dict(seals) | dict(signatories)
    if envelope.payload_type != CONSENT_TYPE:  # 1
        raise VerificationError(f"payload type {envelope.payload_type!r} is not a consent token")
    if {s.keyid for s in envelope.signatures} - trusted.keys():  # 2
        raise VerificationError(
            f"the consent token carries a signature by a key that is not {originator}'s: "
            "only the originator can consent (art. 7.3)"
        )
    evidence = verify_envelope(envelope, trusted, payload_type=CONSENT_TYPE)
    if not evidence.key_ids & seals.keys():  # 3
        raise VerificationError(f"the consent token is not sealed by {originator}'s node")
    token = ConsentToken.from_payload(evidence.statement)
    if token.originator != originator:  # 4
        raise VerificationError(
            f"the consent token names {token.originator!r} as originator, not the sender "
            f"{originator!r}"
        )
    if token.message_id != message_id or token.statement_sha256 != statement_sha256:
        raise VerificationError("the consent token is for another message")
    return VerifiedConsent(token, evidence)


@dataclass(frozen=True)
class ConsentRevocation:
    """The originator withdraws a consent it gave, before it is used."""

    nonce: str
    originator: str
    revoked: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "nonce": self.nonce,
            "originator": self.originator,
            "revoked": format_time(self.revoked),
        }

    @classmethod
    def from_payload(cls, data: Any) -> ConsentRevocation:
        data = require_keys(data, {"v", "nonce", "originator", "revoked"}, set(), "revocation")
        if not is_version(data["v"], _VERSION):
            raise VerificationError(f"unsupported revocation version {data['v']!r}")
        return cls(
            nonce=parse_hex64(data["nonce"], "nonce"),
            originator=parse_ident(data["originator"], "originator"),
            revoked=parse_time(data["revoked"], "revoked"),
        )


def issue_revocation(revocation: ConsentRevocation, signers: Iterable[Signer]) -> Envelope:
    return sign_envelope(REVOCATION_TYPE, revocation.to_payload(), signers)


def verify_revocation(
    envelope: Envelope, *, originator: str, seals: Mapping[str, VerifyKey]
) -> ConsentRevocation:
    """A revocation counts only if the originator's seal signed it and it names them."""
    evidence = verify_envelope(envelope, seals, payload_type=REVOCATION_TYPE)
    revocation = ConsentRevocation.from_payload(evidence.statement)
    if revocation.originator != originator:
        raise VerificationError(f"the revocation names {revocation.originator!r} as originator")
    return revocation


@dataclass(frozen=True)
class ForwardStatement:
    """The forwarder's signed account of one consented forward."""

    forward_id: str
    message_id: str
    statement_sha256: str
    envelope_sha256: str
    consent_sha256: str
    header_sha256: str
    originator: str
    forwarder: str
    third_party: str
    purpose: str
    marking: Mapping[str, Any]
    created: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": _VERSION,
            "forward_id": self.forward_id,
            "message_id": self.message_id,
            "statement_sha256": self.statement_sha256,
            "envelope_sha256": self.envelope_sha256,
            "consent_sha256": self.consent_sha256,
            "header_sha256": self.header_sha256,
            "originator": self.originator,
            "forwarder": self.forwarder,
            "third_party": self.third_party,
            "purpose": self.purpose,
            "marking": dict(self.marking),
            "created": format_time(self.created),
        }

    @classmethod
    def from_payload(cls, data: Any) -> ForwardStatement:
        fields = {
            "v", "forward_id", "message_id", "statement_sha256", "envelope_sha256",
            "consent_sha256", "header_sha256", "originator", "forwarder", "third_party",
            "purpose", "marking", "created",
        }  # fmt: skip
        data = require_keys(data, fields, set(), "forward statement")
        if not is_version(data["v"], _VERSION):
            raise VerificationError(f"unsupported forward statement version {data['v']!r}")
        return cls(
            forward_id=parse_ident(data["forward_id"], "forward_id"),
            message_id=parse_ident(data["message_id"], "message_id"),
            statement_sha256=parse_hex64(data["statement_sha256"], "statement_sha256"),
            envelope_sha256=parse_hex64(data["envelope_sha256"], "envelope_sha256"),
            consent_sha256=parse_hex64(data["consent_sha256"], "consent_sha256"),
            header_sha256=parse_hex64(data["header_sha256"], "header_sha256"),
            originator=parse_ident(data["originator"], "originator"),
            forwarder=parse_ident(data["forwarder"], "forwarder"),
            third_party=parse_ident(data["third_party"], "third_party"),
            purpose=parse_text(data["purpose"], "purpose"),
            marking=_marking(data["marking"], "marking"),
            created=parse_time(data["created"], "created"),
        )


def sign_forward(statement: ForwardStatement, signers: Iterable[Signer]) -> Envelope:
    """The forwarder's seal over a forward statement."""
    ForwardStatement.from_payload(statement.to_payload())
    return sign_envelope(FORWARD_TYPE, statement.to_payload(), signers)


@dataclass(frozen=True)
class VerifiedForward:
    """Evidence of every step of `verify_forward`."""

    message: VerifiedMessage
    consent: VerifiedConsent
    forward: ForwardStatement
    forward_evidence: VerifiedEnvelope
    opener: MessageOpener | None


def verify_forward(
    *,
    message: Envelope,
    consent: Envelope,
    forward: Envelope,
    header: bytes,
    originator: str,
    originator_seals: Mapping[str, VerifyKey],
    originator_signatories: Mapping[str, VerifyKey] = {},
    forwarder: str,
    forwarder_seals: Mapping[str, VerifyKey],
    third_party: str,
    now: datetime,
    signatory_required: bool = False,
    message_required: Collection[str] = (),
    identity: DecryptionKey | None = None,
) -> VerifiedForward:
    """The third party's checklist for forwarded content (art. 7.3); raise or return evidence.

    1. The forward statement is signed by the forwarder's seal (the connected peer), and
       names that forwarder and this third party.
    2. The originator's message envelope verifies under the originator's keys, is
       addressed to the forwarder (the Party that received it) and has not expired.
    3. The forward statement binds exactly that envelope and statement, the consent
       envelope and the re-wrapped header that came with it (nothing swapped on the way).
    4. The consent token verifies as the originator's own (a token signed by the
       forwarder is refused), unexpired, and signed by a signatory where required.
    5. The token covers this forward: this message's statement digest and id, this
       forwarder, this third party, and the purpose the forward declares.
    6. The marking the forwarder declares and the token's marking both equal the signed
       marking (a marking stripped or lowered on the way is refused).
    7. With `identity`, the re-wrapped key opens and matches the originator's signed key
       commitment, so the parts are the originator's ciphertext under the originator's key.
    """
    fwd_evidence = verify_envelope(forward, forwarder_seals, payload_type=FORWARD_TYPE)  # 1
    statement = ForwardStatement.from_payload(fwd_evidence.statement)
    if statement.forwarder != forwarder or statement.third_party != third_party:
        raise VerificationError("the forward statement names another forwarder or third party")
    if statement.originator != originator:
        raise VerificationError("the forward statement names another originator")
    verified = verify_message(  # 2
        message,
        dict(originator_seals) | dict(originator_signatories),
        sender=originator,
        recipient=forwarder,
        now=now,
        required=message_required,
    )
    if not verified.evidence.key_ids & originator_seals.keys():
        raise VerificationError("the message is not sealed by the originator's node")
    st = verified.statement
    if (  # 3
        statement.message_id != st.message_id
        or statement.statement_sha256 != message.payload_sha256
        or statement.envelope_sha256 != message.sha256
        or statement.consent_sha256 != consent.sha256
        or statement.header_sha256 != hashlib.sha256(header).hexdigest()
    ):
        raise VerificationError("the forward statement does not bind what came with it")
    granted = verify_consent(  # 4
        consent,
        originator=originator,
        seals=originator_seals,
        signatories=originator_signatories,
        signatory_required=signatory_required,
        now=now,
    )
    token = granted.token
    if token.statement_sha256 != message.payload_sha256 or token.message_id != st.message_id:
        raise VerificationError("the consent token is for another message")  # 5
    if token.forwarder != forwarder:
        raise VerificationError("the consent token names another forwarding Party")
    if token.third_party != third_party:
        raise VerificationError("the consent token names another third party")
    if token.purpose != statement.purpose:
        raise VerificationError("the consent token permits another purpose")
    if dict(statement.marking) != dict(st.marking) or dict(token.marking) != dict(st.marking):
        raise VerificationError("the declared marking differs from the originator's signed one")
    opener = None
    if identity is not None:  # 7
        opener = MessageOpener(verified, header, identity)
    return VerifiedForward(verified, granted, statement, fwd_evidence, opener)
