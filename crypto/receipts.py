"""Signed receipts: a node's non-repudiable answer to each delivery (DESIGN guarantee 5).

A receipt names the message, binds both the digest of its signed statement (stable when
co-signatures are added) and of the exact envelope received, the receiving party, the
time, and the verdict. It is signed by the receiver's seal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from ._wire import format_time, is_version, parse_hex64, parse_ident, parse_time, require_keys
from .envelope import Envelope, VerifiedEnvelope, sign_envelope, verify_envelope
from .errors import VerificationError
from .keys import Signer, VerifyKey

__all__ = [
    "RECEIPT_TYPE",
    "Receipt",
    "Verdict",
    "VerifiedReceipt",
    "issue_receipt",
    "verify_receipt",
]

RECEIPT_TYPE = "application/vnd.accord.receipt+json; version=1"
RECEIPT_VERSION = 1


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


@dataclass(frozen=True)
class Receipt:
    message_id: str
    sender: str
    receiver: str
    statement_sha256: str
    envelope_sha256: str
    received_at: datetime
    verdict: Verdict

    def to_payload(self) -> dict[str, Any]:
        return {
            "v": RECEIPT_VERSION,
            "message_id": self.message_id,
            "sender": self.sender,
            "receiver": self.receiver,
            "statement_sha256": self.statement_sha256,
            "envelope_sha256": self.envelope_sha256,
            "received_at": format_time(self.received_at),
            "verdict": self.verdict.value,
        }

    @classmethod
    def from_payload(cls, data: Any) -> Receipt:
        fields = {
            "v", "message_id", "sender", "receiver", "statement_sha256", "envelope_sha256",
            "received_at", "verdict",
        }  # fmt: skip
        data = require_keys(data, fields, set(), "receipt")
        if not is_version(data["v"], RECEIPT_VERSION):
            raise VerificationError(f"unsupported receipt version {data['v']!r}")
        try:
            verdict = Verdict(data["verdict"])
        except ValueError as e:
            raise VerificationError("receipt verdict must be accepted or refused") from e
        return cls(
            message_id=parse_ident(data["message_id"], "message_id"),
            sender=parse_ident(data["sender"], "sender"),
            receiver=parse_ident(data["receiver"], "receiver"),
            statement_sha256=parse_hex64(data["statement_sha256"], "statement_sha256"),
            envelope_sha256=parse_hex64(data["envelope_sha256"], "envelope_sha256"),
            received_at=parse_time(data["received_at"], "received_at"),
            verdict=verdict,
        )


def issue_receipt(receipt: Receipt, signers: Iterable[Signer]) -> Envelope:
    """Sign a receipt (normally with the receiving node's seal alone)."""
    return sign_envelope(RECEIPT_TYPE, receipt.to_payload(), signers)


@dataclass(frozen=True)
class VerifiedReceipt:
    receipt: Receipt
    evidence: VerifiedEnvelope


def verify_receipt(
    envelope: Envelope,
    receiver_keys: Iterable[VerifyKey] | Mapping[str, VerifyKey],
    *,
    receiver: str,
    message_id: str,
    statement_sha256: str,
) -> VerifiedReceipt:
    """Verify a receipt for a message we sent; return evidence or raise.

    1. Signed by the receiver's trusted key, and typed as a receipt.
    2. Issued by the party we sent to, for this message id.
    3. Bound to the statement we signed (a receipt for another version is refused).
    """
    evidence = verify_envelope(envelope, receiver_keys, payload_type=RECEIPT_TYPE)
    receipt = Receipt.from_payload(evidence.statement)
    if receipt.receiver != receiver or receipt.message_id != message_id:
        raise VerificationError("receipt is for another message or from another party")
    if receipt.statement_sha256 != statement_sha256:
        raise VerificationError("receipt does not bind the statement that was sent")
    return VerifiedReceipt(receipt, evidence)
