"""The tables of a node, as SQLModel classes.

Invariants:
- These classes and the alembic revisions in `storage/migrations/versions` describe the
  same schema; `tests/storage/test_migrations.py` runs alembic's autogenerate comparison
  on SQLite and PostgreSQL and fails on any difference.
- The tables live in their own `MetaData` (not `SQLModel.metadata`), with a naming
  convention, so that no other SQLModel class in the process leaks into a migration.
- Every timestamp is an aware UTC datetime (`UTCDateTime`); every digest is the SHA-256
  hex of the exact bytes it names (the audit log's Merkle hashes, which are domain-separated
  RFC 6962 hashes rather than plain digests, are raw 32 bytes); every enum is stored as
  its text value.
- Signed bytes (statement envelopes, receipts, peer descriptors) are stored verbatim,
  never re-serialised, so their signatures still verify when read back.
- No column holds private key bytes: keys are public JSON plus a key-store reference.
- Replay entries have no foreign key to messages: they outlive the message they name, so
  a replay is refused even after the message is deleted.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from ._types import JSON_DOCUMENT, EnumText, UTCDateTime

__all__ = [
    "AgreementNotice",
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditLeaf",
    "AuditMessageLeaf",
    "AuditNode",
    "AuditState",
    "Case",
    "CaseAccess",
    "CaseStep",
    "ConsentRecord",
    "Direction",
    "ForwardRecord",
    "Key",
    "KeyAnnouncement",
    "KeyEvent",
    "KeyKind",
    "KeyStatus",
    "Message",
    "MessageEvent",
    "MessagePart",
    "MessageStatus",
    "OutboxEntry",
    "Peer",
    "PeerStatus",
    "Receipt",
    "ReplayEntry",
    "Role",
    "User",
    "WitnessEvidence",
    "WitnessedCheckpoint",
    "metadata",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
_registry = registry(metadata=metadata)

# Ids of parties, keys and messages are short printable identifiers; free text (purposes,
# reasons, errors, descriptors) is unbounded.
_ID = String(200)
_SHA256 = String(64)


class PeerStatus(StrEnum):
    """Where a peer stands in onboarding (DESIGN 8: fingerprint compared out of band)."""

    PENDING = "pending"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REMOVED = "removed"


class KeyKind(StrEnum):
    SEAL = "seal"
    SIGNATORY = "signatory"
    ENCRYPTION = "encryption"
    TLS = "tls"


class KeyStatus(StrEnum):
    """Where a key stands. `overlap`: rotated out, still accepted (and, for an encryption
    key, still decrypting) until its `not_after`; afterwards it counts as retired."""

    ACTIVE = "active"
    OVERLAP = "overlap"
    RETIRED = "retired"
    REVOKED = "revoked"

    @property
    def usable(self) -> bool:
        """Still accepted: the current key, or a rotated-out one in its overlap window."""
        return self in (KeyStatus.ACTIVE, KeyStatus.OVERLAP)


class Role(StrEnum):
    OPERATOR = "operator"
    SIGNATORY = "signatory"
    ADMIN = "admin"
    AUDITOR = "auditor"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class MessageStatus(StrEnum):
    """The life of a message. Outgoing: draft, queued, sending, then delivered or failed.
    Incoming: received, or refused when the node answered with a refusing receipt."""

    DRAFT = "draft"
    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    RECEIVED = "received"
    REFUSED = "refused"


class _Table(SQLModel, registry=_registry):
    """Base of the tables: binds them to this package's `metadata`."""


class Peer(_Table, table=True):
    """A Party's node this node exchanges with, onboarded from its signed descriptor."""

    __tablename__ = "peers"

    party_id: str = Field(primary_key=True, sa_type=_ID)
    name: str = Field(sa_type=Text)
    endpoint_url: str = Field(sa_type=Text)
    # SHA-256 of the DER certificate pinned for mutual TLS (DESIGN 9).
    tls_cert_sha256: str = Field(sa_type=_SHA256, unique=True)
    # The signed node descriptor, exactly as received (its signature covers these bytes).
    descriptor: str = Field(sa_type=Text)
    status: PeerStatus = Field(sa_type=EnumText(PeerStatus))
    added_at: datetime = Field(sa_type=UTCDateTime)


class Key(_Table, table=True):
    """A public key of this node, of one of its users or of a peer, with its history."""

    __tablename__ = "keys"
    __table_args__ = (Index("ix_keys_owner_kind", "owner", "kind"),)

    key_id: str = Field(primary_key=True, sa_type=_ID)
    kind: KeyKind = Field(sa_type=EnumText(KeyKind))
    # A party id (seal, encryption and TLS keys) or a local user name (signatory keys).
    owner: str = Field(sa_type=_ID)
    public: dict[str, Any] = Field(sa_type=JSON_DOCUMENT)
    # Where the private half lives (a file path or a `pkcs11:` URI); None for peers' keys.
    store_ref: str | None = Field(default=None, sa_type=Text)
    status: KeyStatus = Field(sa_type=EnumText(KeyStatus))
    not_before: datetime = Field(sa_type=UTCDateTime)
    not_after: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reason: str | None = Field(default=None, sa_type=Text)


class User(_Table, table=True):
    """A local user. The API token is stored as the SHA-256 hex of the token: tokens are 32
    random bytes, so a slow password hash would add nothing."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("name"),
        Index("ix_users_token_sha256", "token_sha256", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    name: str = Field(sa_type=Text)
    role: Role = Field(sa_type=EnumText(Role))
    clearance: str = Field(sa_type=Text)
    token_sha256: str = Field(sa_type=_SHA256)
    created_at: datetime = Field(sa_type=UTCDateTime)
    disabled: bool = Field(default=False, sa_type=Boolean)


class Message(_Table, table=True):
    """A statement sent or received. Its content is in the blob store (`MessagePart`)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_direction_created_at", "direction", "created_at"),
        Index("ix_messages_in_reply_to", "in_reply_to"),
    )

    message_id: str = Field(primary_key=True, sa_type=_ID)
    direction: Direction = Field(sa_type=EnumText(Direction, 8))
    sender: str = Field(sa_type=_ID)
    recipient: str = Field(sa_type=_ID)
    type: str = Field(sa_type=String(64))
    # A copy of the marking inside the signed payload, for routing and listing only.
    marking: dict[str, Any] = Field(sa_type=JSON_DOCUMENT)
    purpose: str = Field(sa_type=Text)
    created: datetime = Field(sa_type=UTCDateTime)
    expires: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The signed statement envelope, exactly as received or sent.
    envelope: bytes = Field(sa_type=LargeBinary)
    envelope_sha256: str = Field(sa_type=_SHA256)
    # The age header of the body (the file key wrapped to the recipient).
    header: bytes | None = Field(default=None, sa_type=LargeBinary)
    status: MessageStatus = Field(sa_type=EnumText(MessageStatus))
    in_reply_to: str | None = Field(default=None, sa_type=_ID)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class MessagePart(_Table, table=True):
    """One encrypted part of a message; index 0 is the body, then the attachments."""

    __tablename__ = "message_parts"

    message_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    index: int = Field(primary_key=True, sa_type=Integer)
    # SHA-256 of the ciphertext blob (the digest the signature covers).
    blob_sha256: str = Field(sa_type=_SHA256, index=True)
    size: int = Field(sa_type=BigInteger)
    # A small part (a message body) is kept inline, committed with its message, instead of
    # as a blob file: one durable write per message instead of two, and no file to fsync.
    data: bytes | None = Field(default=None, sa_type=LargeBinary)


class Receipt(_Table, table=True):
    """The signed receipt of a message: the one the peer returned for an outgoing message,
    the one this node issued for an incoming message (answered again on redelivery)."""

    __tablename__ = "receipts"

    message_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    envelope: bytes = Field(sa_type=LargeBinary)
    verdict: str = Field(sa_type=String(32))
    received_at: datetime = Field(sa_type=UTCDateTime)


class MessageEvent(_Table, table=True):
    """One step of a message's status timeline."""

    __tablename__ = "message_events"
    __table_args__ = (Index("ix_message_events_message_id_at", "message_id", "at"),)

    id: int | None = Field(
        default=None,
        primary_key=True,
        sa_type=BigInteger().with_variant(Integer(), "sqlite"),
    )
    message_id: str = Field(
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    at: datetime = Field(sa_type=UTCDateTime)
    event: str = Field(sa_type=String(64))
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class OutboxEntry(_Table, table=True):
    """A pending delivery of an outgoing message to one peer (the transactional outbox).

    A row is due when `next_attempt_at <= now` and it is not leased (`leased_until` is
    null or past). The row is deleted when the delivery completes or is given up.
    """

    __tablename__ = "outbox"

    message_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    peer: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("peers.party_id")],
    )
    attempts: int = Field(default=0, sa_type=Integer)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, index=True)
    leased_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lease_owner: str | None = Field(default=None, sa_type=_ID)
    last_error: str | None = Field(default=None, sa_type=Text)


class ReplayEntry(_Table, table=True):
    """A (sender, message id) already received; refused if seen again until `expires`
    (null: kept for ever)."""

    __tablename__ = "replay"

    sender: str = Field(primary_key=True, sa_type=_ID)
    message_id: str = Field(primary_key=True, sa_type=_ID)
    envelope_sha256: str = Field(sa_type=_SHA256)
    seen_at: datetime = Field(sa_type=UTCDateTime)
    expires: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)


# --- The audit log (DESIGN 7; see `_audit` for the invariants it keeps) ----------------

# Leaf and tree indexes count from 0 without bound; on SQLite a single integer primary key
# is the rowid, which is what makes appends and range scans cheap.
_INDEX = BigInteger().with_variant(Integer(), "sqlite")


class AuditLeaf(_Table, table=True):
    """One event of the append-only audit log: its canonical JSON (never content) and its
    RFC 6962 leaf hash, SHA-256(0x00 || leaf), as raw 32 bytes."""

    __tablename__ = "audit_leaves"

    index: int = Field(primary_key=True, sa_type=_INDEX, sa_column_kwargs={"autoincrement": False})
    leaf: bytes = Field(sa_type=LargeBinary)
    leaf_hash: bytes = Field(sa_type=LargeBinary)
    appended_at: datetime = Field(sa_type=UTCDateTime)


class AuditNode(_Table, table=True):
    """The hash of a complete perfect subtree of the log: the 2**level leaves from
    index * 2**level. Stored for level 0 (a copy of every leaf hash, kept apart from the
    leaves) and for every level that is a multiple of 4; proofs fold the rest."""

    __tablename__ = "audit_nodes"

    level: int = Field(primary_key=True, sa_type=Integer)
    index: int = Field(primary_key=True, sa_type=BigInteger)
    hash: bytes = Field(sa_type=LargeBinary)


class AuditState(_Table, table=True):
    """The log's one state row: its size and frontier (the roots of the perfect subtrees
    that make up the tree, left to right, 32 bytes each). Appenders lock this row."""

    __tablename__ = "audit_state"

    id: int = Field(primary_key=True, sa_type=Integer, sa_column_kwargs={"autoincrement": False})
    size: int = Field(sa_type=BigInteger)
    frontier: bytes = Field(sa_type=LargeBinary)


class AuditCheckpoint(_Table, table=True):
    """A checkpoint this node signed: the tree head at `size`, and the signed note exactly
    as signed (C2SP tlog-checkpoint)."""

    __tablename__ = "checkpoints"

    size: int = Field(primary_key=True, sa_type=_INDEX, sa_column_kwargs={"autoincrement": False})
    root_hash: bytes = Field(sa_type=LargeBinary)
    note: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime)


class AuditCosignature(_Table, table=True):
    """A peer's cosignature of one of our checkpoints: its signature line, verbatim."""

    __tablename__ = "cosignatures"

    checkpoint_size: int = Field(
        primary_key=True,
        sa_type=_INDEX,
        sa_column_args=[ForeignKey("checkpoints.size")],
    )
    witness: str = Field(primary_key=True, sa_type=_ID)
    line: str = Field(sa_type=Text)
    received_at: datetime = Field(sa_type=UTCDateTime)


# --- The request workflow (agreement art. 4 to 6, 7.4, 13; see `_cases`) ---------------


class Case(_Table, table=True):
    """Where one request for assistance stands (the case's id is the request's message
    id). States and steps are the policy's names, stored as text."""

    __tablename__ = "cases"

    case_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    requesting: str = Field(sa_type=_ID)
    requested: str = Field(sa_type=_ID)
    state: str = Field(sa_type=String(32))
    opened: datetime = Field(sa_type=UTCDateTime)
    urgent_oral: bool = Field(default=False, sa_type=Boolean)
    confirmation_due: datetime | None = Field(default=None, sa_type=UTCDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    partially_refused: bool = Field(default=False, sa_type=Boolean)
    conditions_accepted: bool = Field(default=False, sa_type=Boolean)
    disclosure_noticed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Art. 6.3: the requester asked that the fact of the request stay confidential.
    confidential_fact: bool = Field(default=False, sa_type=Boolean)
    steps: int = Field(default=0, sa_type=Integer)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class CaseStep(_Table, table=True):
    """One transition of a case, with the message that carried it (history, both ways)."""

    __tablename__ = "case_steps"
    __table_args__ = (UniqueConstraint("case_id", "seq"),)

    id: int | None = Field(
        default=None,
        primary_key=True,
        sa_type=BigInteger().with_variant(Integer(), "sqlite"),
    )
    case_id: str = Field(
        sa_type=_ID,
        sa_column_args=[ForeignKey("cases.case_id", ondelete="CASCADE")],
    )
    seq: int = Field(sa_type=Integer)
    kind: str = Field(sa_type=String(32))
    party: str = Field(sa_type=_ID)
    message_id: str = Field(sa_type=_ID)
    from_state: str | None = Field(default=None, sa_type=String(32))
    to_state: str = Field(sa_type=String(32))
    at: datetime = Field(sa_type=UTCDateTime)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class CaseAccess(_Table, table=True):
    """A local user with need-to-know of a case whose very existence is confidential
    (art. 6.3). Signatories (head and deputies) always have it."""

    __tablename__ = "case_access"

    case_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("cases.case_id", ondelete="CASCADE")],
    )
    user_name: str = Field(primary_key=True, sa_type=_ID)
    granted_by: str = Field(sa_type=_ID)
    granted_at: datetime = Field(sa_type=UTCDateTime)


class AgreementNotice(_Table, table=True):
    """A notice about the agreement itself (art. 13: termination), sent or received."""

    __tablename__ = "agreement_notices"

    message_id: str = Field(
        primary_key=True,
        sa_type=_ID,
        sa_column_args=[ForeignKey("messages.message_id", ondelete="CASCADE")],
    )
    peer: str = Field(sa_type=_ID, index=True)
    direction: Direction = Field(sa_type=EnumText(Direction, 8))
    kind: str = Field(sa_type=String(32))
    recorded_at: datetime = Field(sa_type=UTCDateTime)


# --- Consent to transfer and forwarded messages (agreement art. 7.2, 7.3) ---------------


class ConsentRecord(_Table, table=True):
    """A consent token as signed by the originator, verbatim, and where it stands:
    `granted`, then `used` by one forward (or one use for another purpose) or `revoked`.
    On the originator's node the tokens it issued; on the forwarder's, the tokens it
    received. No foreign key to messages: the record outlives any message row."""

    __tablename__ = "consents"

    nonce: str = Field(primary_key=True, sa_type=_SHA256)
    message_id: str = Field(sa_type=_ID, index=True)
    statement_sha256: str = Field(sa_type=_SHA256)
    originator: str = Field(sa_type=_ID)
    forwarder: str = Field(sa_type=_ID)
    third_party: str = Field(sa_type=_ID)
    purpose: str = Field(sa_type=Text)
    issued: datetime = Field(sa_type=UTCDateTime)
    expires: datetime = Field(sa_type=UTCDateTime)
    envelope: bytes = Field(sa_type=LargeBinary)
    status: str = Field(sa_type=String(16))
    recorded_at: datetime = Field(sa_type=UTCDateTime)
    used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revocation: bytes | None = Field(default=None, sa_type=LargeBinary)


class ForwardRecord(_Table, table=True):
    """A consented forward: sent (`out`, on the forwarder's node) or accepted (`in`, on the
    third party's). The forwarder's signed forward statement, the consent token and the
    re-wrapped header are stored verbatim; a consent nonce forwards at most once each way."""

    __tablename__ = "forwards"
    __table_args__ = (UniqueConstraint("direction", "consent_nonce"),)

    forward_id: str = Field(primary_key=True, sa_type=_ID)
    direction: Direction = Field(sa_type=EnumText(Direction, 8))
    message_id: str = Field(sa_type=_ID, index=True)
    consent_nonce: str = Field(sa_type=_SHA256)
    forwarder: str = Field(sa_type=_ID)
    third_party: str = Field(sa_type=_ID)
    statement: bytes = Field(sa_type=LargeBinary)
    consent: bytes = Field(sa_type=LargeBinary)
    header: bytes = Field(sa_type=LargeBinary)
    receipt: bytes | None = Field(default=None, sa_type=LargeBinary)
    created_at: datetime = Field(sa_type=UTCDateTime)


# --- The log wired into the node, and witnessing (revision 0007_audit) ----------------


class AuditMessageLeaf(_Table, table=True):
    """Which audit leaves name which message: the index an evidence bundle is built from.
    A lookup aid only: the leaf itself names the message, and its inclusion proof is what
    an auditor checks."""

    __tablename__ = "audit_message_leaves"

    message_id: str = Field(primary_key=True, sa_type=_ID)
    index: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )


class WitnessedCheckpoint(_Table, table=True):
    """A checkpoint of a peer's log that this node cosigned, as the peer's signed note.
    The largest one per peer is what the next checkpoint must be consistent with."""

    __tablename__ = "witnessed_checkpoints"

    party: str = Field(primary_key=True, sa_type=_ID)
    size: int = Field(
        primary_key=True, sa_type=BigInteger, sa_column_kwargs={"autoincrement": False}
    )
    root_hash: bytes = Field(sa_type=LargeBinary)
    note: str = Field(sa_type=Text)
    cosigned_at: datetime = Field(sa_type=UTCDateTime)


class WitnessEvidence(_Table, table=True):
    """A checkpoint a peer signed that contradicts one this node cosigned (a fork): the
    peer's signed note, kept verbatim as proof, and why it was refused."""

    __tablename__ = "witness_evidence"

    id: int | None = Field(default=None, primary_key=True, sa_type=_INDEX)
    party: str = Field(sa_type=_ID, index=True)
    size: int = Field(sa_type=BigInteger)
    root_hash: bytes = Field(sa_type=LargeBinary)
    note: str = Field(sa_type=Text)
    reason: str = Field(sa_type=Text)
    detected_at: datetime = Field(sa_type=UTCDateTime)


# --- Key lifecycle (issue 5; see `_directory` and `gateway._keys`) ----------------------


class KeyEvent(_Table, table=True):
    """One event in the life of a key, kept for ever: generated, rotated in or out,
    revoked, a peer's rotation or revocation applied, a passphrase changed. `actor` is the
    local admin (or the peer) who caused it; `statement_sha256` names the signed statement
    that announced it, so a replayed statement is recognised."""

    __tablename__ = "key_events"
    __table_args__ = (
        Index("ix_key_events_key_id", "key_id"),
        Index("ix_key_events_statement_sha256", "statement_sha256"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=_INDEX)
    at: datetime = Field(sa_type=UTCDateTime)
    event: str = Field(sa_type=String(64))
    key_id: str = Field(sa_type=_ID)
    owner: str = Field(sa_type=_ID)
    kind: KeyKind = Field(sa_type=EnumText(KeyKind))
    actor: str = Field(sa_type=_ID)
    reason: str | None = Field(default=None, sa_type=Text)
    statement_sha256: str | None = Field(default=None, sa_type=_SHA256)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSON_DOCUMENT)


class KeyAnnouncement(_Table, table=True):
    """A signed rotation or revocation statement waiting to reach one peer (an outbox of
    its own: a node that is stopped when its admin rotates sends it at the next start)."""

    __tablename__ = "key_announcements"
    __table_args__ = (Index("ix_key_announcements_peer_sent_at", "peer", "sent_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=_INDEX)
    peer: str = Field(sa_type=_ID)
    payload_type: str = Field(sa_type=String(255))
    # The DSSE envelope exactly as signed.
    envelope: str = Field(sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime)
    attempts: int = Field(default=0, sa_type=Integer)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
