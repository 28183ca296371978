"""Peers' key-change statements, kept verbatim (issue 12: evidence after key changes).

A node verifies and applies each seal rotation or revocation a peer announces
(`gateway._keys.apply_peer_statement`); this table keeps the signed envelope exactly as
received, so that an evidence bundle exported by *any* node that holds a message carries
the rotation chain of every Party whose signature it contains, and verifies against the
Parties' current descriptors.

Invariants:
- One row per statement (its payload's SHA-256 is unique); rows are never changed or
  deleted: a statement is evidence for as long as what its keys signed.
- Only statements the node applied are kept (the caller verified them first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlmodel import Field, Session, col, select

from ._models import _ID, _SHA256, _Table
from ._types import UTCDateTime, require_aware

__all__ = ["PeerKeyStatement", "keep_peer_statement", "list_peer_statements"]


class PeerKeyStatement(_Table, table=True):
    """A key-change statement a peer announced and this node applied, as signed."""

    __tablename__ = "peer_key_statements"
    __table_args__ = (Index("ix_peer_key_statements_party", "party"),)

    statement_sha256: str = Field(primary_key=True, sa_type=_SHA256)
    party: str = Field(sa_type=_ID)
    payload_type: str = Field(sa_type=String(255))
    # The DSSE envelope exactly as received.
    envelope: str = Field(sa_type=Text)
    received_at: datetime = Field(sa_type=UTCDateTime)


def keep_peer_statement(
    session: Session,
    *,
    party: str,
    payload_type: str,
    statement_sha256: str,
    envelope: str,
    now: datetime,
) -> None:
    """Keep an applied statement of `party`, once (a redelivery adds nothing)."""
    if session.get(PeerKeyStatement, statement_sha256) is not None:
        return
    session.add(
        PeerKeyStatement(
            statement_sha256=statement_sha256,
            party=party,
            payload_type=payload_type,
            envelope=envelope,
            received_at=require_aware(now, "now"),
        )
    )
    session.flush()


def list_peer_statements(session: Session, parties: Iterable[str]) -> Sequence[PeerKeyStatement]:
    """The kept statements of `parties`, in the order they were received."""
    wanted = sorted(set(parties))
    if not wanted:
        return []
    return session.exec(
        select(PeerKeyStatement)
        .where(col(PeerKeyStatement.party).in_(wanted))
        .order_by(col(PeerKeyStatement.received_at), col(PeerKeyStatement.statement_sha256))
    ).all()
