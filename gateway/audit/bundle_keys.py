"""The key changes of an evidence bundle (issue 5, history; issue 6; agreement art. 13).

`key_change_evidence` reads, in the export's session, the rotation and revocation
statements of this node's seals, exactly as signed and announced to its peers (the
`key_announcements` outbox keeps each envelope verbatim), with the public key of each
rotated-out seal from the key history. With them an auditor who trusts this node's
*current* descriptor verifies what its earlier seals signed: `crypto.rotation.
trace_seal_chain` walks the chain back from the current seal, offline.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import Session, col, select

from accord.crypto import Envelope, VerificationError, VerifyKey
from accord.crypto.canonical import loads_canonical
from accord.crypto.rotation import (
    REVOCATION_TYPE,
    ROTATION_TYPE,
    KeyChange,
    RevocationStatement,
    RotatedKind,
    RotationStatement,
)
from accord.storage import Key, KeyAnnouncement, KeyKind, list_peer_statements

__all__ = ["key_change_evidence", "peer_key_change_evidence"]


def peer_key_change_evidence(session: Session, parties: Iterable[str]) -> tuple[KeyChange, ...]:
    """Every seal rotation and revocation of the peers `parties` that this node applied,
    as the peer signed it (`storage.list_peer_statements`, issue 12), with the public key
    of each rotated-out seal from the key history: a bundle exported here then verifies
    against those Parties' current descriptors too."""
    wanted = set(parties)
    seals = {
        k.key_id: k
        for k in session.exec(
            select(Key).where(col(Key.owner).in_(sorted(wanted)), col(Key.kind) == KeyKind.SEAL)
        ).all()
    }
    changes: dict[str, KeyChange] = {}
    for row in list_peer_statements(session, wanted):
        if row.payload_type not in (ROTATION_TYPE, REVOCATION_TYPE):
            continue
        envelope = Envelope.from_bytes(row.envelope.encode("utf-8"))
        change = _seal_change(envelope, row.party, seals)
        if change is not None:
            changes.setdefault(envelope.sha256, change)
    return tuple(changes.values())


def _seal_change(envelope: Envelope, party: str, seals: dict[str, Key]) -> KeyChange | None:
    """The statement as a bundle's key change when it rotates or revokes a seal of
    `party` that `seals` holds, else None."""
    try:
        payload = loads_canonical(envelope.payload)
        if envelope.payload_type == ROTATION_TYPE:
            rotation = RotationStatement.from_payload(payload)
            old = seals.get(rotation.old_key_id)
            if rotation.kind is not RotatedKind.SEAL or rotation.party != party or old is None:
                return None
            return KeyChange(envelope, VerifyKey.from_dict(old.public))
        revocation = RevocationStatement.from_payload(payload)
        if revocation.party == party and revocation.key_id in seals:
            return KeyChange(envelope)
    except (VerificationError, ValueError):
        pass  # not ours to vouch for: the verifier would refuse it anyway
    return None


def key_change_evidence(session: Session, party: str) -> tuple[KeyChange, ...]:
    """Every seal rotation and seal revocation `party` (this node) signed, oldest first,
    each once. Empty when the seal was never rotated: the bundle then keeps its first form."""
    seals = {
        k.key_id: k
        for k in session.exec(
            select(Key).where(col(Key.owner) == party, col(Key.kind) == KeyKind.SEAL)
        ).all()
    }
    rows = session.exec(
        select(KeyAnnouncement)
        .where(col(KeyAnnouncement.payload_type).in_([ROTATION_TYPE, REVOCATION_TYPE]))
        .order_by(col(KeyAnnouncement.created_at), col(KeyAnnouncement.id))
    ).all()
    changes: dict[str, KeyChange] = {}
    for row in rows:
        envelope = Envelope.from_bytes(row.envelope.encode("utf-8"))
        if envelope.sha256 in changes:
            continue  # the same statement, queued for another peer
        try:
            payload = loads_canonical(envelope.payload)
            if envelope.payload_type == ROTATION_TYPE:
                rotation = RotationStatement.from_payload(payload)
                old = seals.get(rotation.old_key_id)
                if rotation.kind is not RotatedKind.SEAL or rotation.party != party or old is None:
                    continue
                changes[envelope.sha256] = KeyChange(envelope, VerifyKey.from_dict(old.public))
            else:
                revocation = RevocationStatement.from_payload(payload)
                if revocation.party == party and revocation.key_id in seals:
                    changes[envelope.sha256] = KeyChange(envelope)
        except (VerificationError, ValueError):
            continue  # not ours to vouch for: the verifier would refuse it anyway
    return tuple(changes.values())
