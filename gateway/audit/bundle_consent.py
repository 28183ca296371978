"""The consent evidence of a message, for its evidence bundle (agreement art. 7.3; issue 6).

`consent_evidence` reads, in the export's session, what this node recorded about the
consents given for one message: the originator's consent tokens as signed (issued here,
received here as forwarder, or received with a forward as third party), the originator's
revocations of them, and the sealed forward statements of transfers made under them
(sent from here or accepted here). Only tokens that bind the exact statement the bundle
carries are included: a token for another version of the message is not evidence about
this one. `crypto.bundle.check_consent_token` and `verify_bundle` check them offline.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from accord.crypto import Envelope
from accord.storage import ConsentRecord, ForwardRecord

__all__ = ["ConsentEvidence", "consent_evidence"]


@dataclass(frozen=True)
class ConsentEvidence:
    tokens: tuple[Envelope, ...]
    revocations: tuple[Envelope, ...]
    forwards: tuple[Envelope, ...]


def consent_evidence(session: Session, message_id: str, statement: Envelope) -> ConsentEvidence:
    """Tokens, revocations and forward statements recorded for `message_id`, in a stable
    order (tokens by issue time and nonce, forwards by time and id)."""
    digest = statement.payload_sha256
    consents = session.exec(
        select(ConsentRecord)
        .where(col(ConsentRecord.message_id) == message_id)
        .order_by(col(ConsentRecord.issued), col(ConsentRecord.nonce))
    ).all()
    forwards = session.exec(
        select(ForwardRecord)
        .where(col(ForwardRecord.message_id) == message_id)
        .order_by(col(ForwardRecord.created_at), col(ForwardRecord.forward_id))
    ).all()
    tokens: dict[str, Envelope] = {}
    revocations: list[Envelope] = []
    for c in consents:
        if c.statement_sha256 != digest:
            continue
        tokens[c.nonce] = Envelope.from_bytes(c.envelope)
        if c.revocation is not None:
            revocations.append(Envelope.from_bytes(c.revocation))
    statements: list[Envelope] = []
    for f in forwards:
        tokens.setdefault(f.consent_nonce, Envelope.from_bytes(f.consent))
        statements.append(Envelope.from_bytes(f.statement))
    return ConsentEvidence(tuple(tokens.values()), tuple(revocations), tuple(statements))
