"""Storage of an Accord node: its database (tables, sessions, migrations) and blob store.

`storage` knows tables and files, nothing of HTTP, policy or cryptography: it imports
none of `gateway`, `policy` or `crypto`, and holds keys only as public JSON and key-store
references, never private key bytes.

Invariants kept by the package (each module states its own in detail):
- One database schema, created and upgraded only by the shipped alembic revisions
  (`Database.migrate()`), identical on SQLite and PostgreSQL and equal to the models.
- Timestamps are timezone-aware UTC on the way in and on the way out.
- Signed bytes are stored verbatim; a stored digest is the SHA-256 of the bytes it names.
- Writes that must happen together (a message with its parts, outbox row, replay entry
  and first event) happen in one transaction or not at all.
- Every failure raised is a `StorageError`; foreign exceptions are chained as the cause.
- The audit log only grows: leaves get gapless indexes under a lock, and `audit_verify`
  recomputes it from the leaf bytes to find any row changed behind its back.

Typical use::

    db = Database.for_home(home)
    db.migrate()
    with db.session() as session:
        insert_outgoing(session, message, now=clock())
"""

from ._audit import (
    AuditProblem,
    AuditReport,
    Tamper,
    TreeHead,
    add_checkpoint,
    add_cosignature,
    append_leaf,
    audit_verify,
    get_checkpoint,
    get_leaf,
    latest_checkpoint,
    leaf_hashes,
    list_checkpoints,
    list_cosignatures,
    tree_head,
    tree_nodes,
    tree_root,
    tree_size,
)
from ._blobs import BlobStore, BlobWriter
from ._database import Database
from ._directory import (
    add_key,
    add_peer,
    add_user,
    find_peer_by_certificate,
    find_user_by_token_hash,
    get_key,
    get_peer,
    get_user,
    list_keys,
    list_peers,
    list_users,
    retire_key,
    revoke_key,
)
from ._errors import (
    Conflict,
    DigestMismatch,
    DuplicateError,
    InvalidValue,
    LeaseLost,
    NotFound,
    ReplayedMessage,
    SchemaMismatch,
    StorageError,
    StorageUnavailable,
)
from ._messages import (
    NewMessage,
    PartRef,
    add_event,
    add_receipt,
    get_message,
    get_messages,
    get_parts,
    get_parts_many,
    get_receipt,
    insert_draft,
    insert_outgoing,
    insert_outgoing_many,
    list_events,
    list_messages,
    prune_replay,
    queue_draft,
    record_incoming,
    record_incoming_many,
    set_status,
)
from ._models import (
    AuditCheckpoint,
    AuditCosignature,
    AuditLeaf,
    Direction,
    Key,
    KeyKind,
    KeyStatus,
    Message,
    MessageEvent,
    MessagePart,
    MessageStatus,
    OutboxEntry,
    Peer,
    PeerStatus,
    Receipt,
    ReplayEntry,
    Role,
    User,
)
from ._outbox import Outcome, complete, fail, lease_due, release_leases, retry_later, settle

__all__ = [
    "AuditCheckpoint",
    "AuditCosignature",
    "AuditLeaf",
    "AuditProblem",
    "AuditReport",
    "BlobStore",
    "BlobWriter",
    "Conflict",
    "Database",
    "DigestMismatch",
    "Direction",
    "DuplicateError",
    "InvalidValue",
    "Key",
    "KeyKind",
    "KeyStatus",
    "LeaseLost",
    "Message",
    "MessageEvent",
    "MessagePart",
    "MessageStatus",
    "NewMessage",
    "NotFound",
    "OutboxEntry",
    "Outcome",
    "PartRef",
    "Peer",
    "PeerStatus",
    "Receipt",
    "ReplayEntry",
    "ReplayedMessage",
    "Role",
    "SchemaMismatch",
    "StorageError",
    "StorageUnavailable",
    "Tamper",
    "TreeHead",
    "User",
    "add_checkpoint",
    "add_cosignature",
    "add_event",
    "add_key",
    "add_peer",
    "add_receipt",
    "add_user",
    "append_leaf",
    "audit_verify",
    "complete",
    "fail",
    "find_peer_by_certificate",
    "find_user_by_token_hash",
    "get_checkpoint",
    "get_key",
    "get_leaf",
    "get_message",
    "get_messages",
    "get_parts",
    "get_parts_many",
    "get_peer",
    "get_receipt",
    "get_user",
    "insert_draft",
    "insert_outgoing",
    "insert_outgoing_many",
    "latest_checkpoint",
    "leaf_hashes",
    "lease_due",
    "list_checkpoints",
    "list_cosignatures",
    "list_events",
    "list_keys",
    "list_messages",
    "list_peers",
    "list_users",
    "prune_replay",
    "queue_draft",
    "record_incoming",
    "record_incoming_many",
    "release_leases",
    "retire_key",
    "retry_later",
    "revoke_key",
    "set_status",
    "settle",
    "tree_head",
    "tree_nodes",
    "tree_root",
    "tree_size",
]
