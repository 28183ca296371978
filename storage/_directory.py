"""Who the node knows: peers, keys and local users.

Invariants:
- Each function works inside the caller's session and flushes before returning, so a
  constraint violation surfaces here as `DuplicateError` or `Conflict`, not at commit.
- Only public key material is stored: `add_key` refuses a public document carrying a
  private-looking member and a key-store reference carrying a PEM private key.
- A token is looked up by its SHA-256 hex; disabled users are never returned by that
  lookup, so a caller cannot forget to check the flag.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from ._errors import DuplicateError, InvalidValue, NotFound
from ._models import (
    Key,
    KeyAnnouncement,
    KeyEvent,
    KeyKind,
    KeyStatus,
    Peer,
    PeerStatus,
    Role,
    User,
)
from ._types import as_enum, check_sha256, require_aware

__all__ = [
    "add_key",
    "add_peer",
    "add_user",
    "expire_overlaps",
    "find_peer_by_certificate",
    "find_user_by_token_hash",
    "get_key",
    "get_peer",
    "get_user",
    "list_key_events",
    "list_keys",
    "list_peers",
    "list_users",
    "mark_announcement",
    "overlap_key",
    "pending_announcements",
    "queue_announcement",
    "record_key_event",
    "retire_key",
    "revoke_key",
    "statement_applied",
]

# Members that hold private material in JWK (RFC 7517/8037) and in the usual ad hoc
# encodings; a public document must not contain them.
_PRIVATE_MEMBERS = frozenset(
    "d p q dp dq qi k private private_key privatekey secret secret_key seed sk".split()
)


def _insert(session: Session, row: Peer | Key | User, what: str) -> None:
    try:
        with session.begin_nested():
            session.add(row)
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"{what} already exists") from e


def add_peer(
    session: Session,
    *,
    party_id: str,
    name: str,
    endpoint_url: str,
    tls_cert_sha256: str,
    descriptor: str,
    now: datetime,
    status: PeerStatus = PeerStatus.PENDING,
) -> Peer:
    """Register a peer from its descriptor; `DuplicateError` if the party id or the pinned
    certificate is already registered."""
    peer = Peer(
        party_id=party_id,
        name=name,
        endpoint_url=endpoint_url,
        tls_cert_sha256=check_sha256(tls_cert_sha256, "tls_cert_sha256"),
        descriptor=descriptor,
        status=as_enum(PeerStatus, status),
        added_at=require_aware(now, "now"),
    )
    _insert(session, peer, f"peer {party_id!r} (or its certificate)")
    return peer


def get_peer(session: Session, party_id: str) -> Peer:
    """The peer `party_id`; `NotFound` if unknown."""
    peer = session.get(Peer, party_id)
    if peer is None:
        raise NotFound(f"no peer {party_id!r}")
    return peer


def find_peer_by_certificate(session: Session, tls_cert_sha256: str) -> Peer:
    """The peer whose pinned TLS certificate has this SHA-256 (its current one, or one
    announced by a TLS rotation or still in its overlap window); `NotFound` otherwise."""
    check_sha256(tls_cert_sha256, "tls_cert_sha256")
    peer = session.exec(select(Peer).where(Peer.tls_cert_sha256 == tls_cert_sha256)).first()
    if peer is not None:
        return peer
    key = session.get(Key, tls_cert_sha256)
    if key is not None and key.kind is KeyKind.TLS and key.store_ref is None and key.status.usable:
        peer = session.get(Peer, key.owner)
        if peer is not None:
            return peer
    raise NotFound("no peer pins this certificate")


def list_peers(session: Session) -> Sequence[Peer]:
    """All peers, by party id."""
    return session.exec(select(Peer).order_by(col(Peer.party_id))).all()


def _refuse_private_material(document: Any, where: str = "public") -> None:
    if isinstance(document, Mapping):
        for name, value in document.items():
            if str(name).lower() in _PRIVATE_MEMBERS:
                raise InvalidValue(f"{where}.{name} looks like private key material")
            _refuse_private_material(value, f"{where}.{name}")
    elif isinstance(document, list | tuple):
        for index, value in enumerate(document):
            _refuse_private_material(value, f"{where}[{index}]")


def add_key(
    session: Session,
    *,
    key_id: str,
    kind: KeyKind,
    owner: str,
    public: Mapping[str, Any],
    store_ref: str | None,
    not_before: datetime,
    not_after: datetime | None = None,
    status: KeyStatus = KeyStatus.ACTIVE,
) -> Key:
    """Record a public key (and where its private half is kept, for this node's keys)."""
    _refuse_private_material(public)
    if store_ref is not None and "PRIVATE KEY" in store_ref:
        raise InvalidValue("store_ref must reference a key store, not contain a key")
    key = Key(
        key_id=key_id,
        kind=as_enum(KeyKind, kind),
        owner=owner,
        public=dict(public),
        store_ref=store_ref,
        status=as_enum(KeyStatus, status),
        not_before=require_aware(not_before, "not_before"),
        not_after=None if not_after is None else require_aware(not_after, "not_after"),
    )
    _insert(session, key, f"key {key_id!r}")
    return key


def get_key(session: Session, key_id: str) -> Key:
    """The key `key_id`, whatever its status; `NotFound` if unknown."""
    key = session.get(Key, key_id)
    if key is None:
        raise NotFound(f"no key {key_id!r}")
    return key


def list_keys(
    session: Session,
    *,
    owner: str | None = None,
    kind: KeyKind | None = None,
    status: KeyStatus | None = None,
) -> Sequence[Key]:
    """Keys matching every filter given, oldest `not_before` first (the key history)."""
    query = select(Key)
    if owner is not None:
        query = query.where(Key.owner == owner)
    if kind is not None:
        query = query.where(Key.kind == as_enum(KeyKind, kind))
    if status is not None:
        query = query.where(Key.status == as_enum(KeyStatus, status))
    return session.exec(query.order_by(col(Key.not_before), col(Key.key_id))).all()


def retire_key(session: Session, key_id: str, *, now: datetime) -> Key:
    """Mark a key retired (rotated out): it no longer signs, but still verifies."""
    key = get_key(session, key_id)
    if key.status is KeyStatus.REVOKED:
        raise InvalidValue(f"key {key_id!r} is revoked; it cannot be retired")
    key.status = KeyStatus.RETIRED
    key.not_after = require_aware(now, "now")
    session.add(key)
    session.flush()
    return key


def overlap_key(session: Session, key_id: str, *, until: datetime) -> Key:
    """Mark a key rotated out: still accepted until `until` (the overlap window)."""
    key = get_key(session, key_id)
    if key.status is not KeyStatus.ACTIVE:
        raise InvalidValue(f"key {key_id!r} is {key.status.value}; only an active key rotates")
    key.status = KeyStatus.OVERLAP
    key.not_after = require_aware(until, "until")
    session.add(key)
    session.flush()
    return key


def expire_overlaps(session: Session, *, now: datetime) -> list[Key]:
    """Retire every key whose overlap window has ended by `now`; returns them."""
    now = require_aware(now, "now")
    ended = [
        k
        for k in session.exec(select(Key).where(Key.status == KeyStatus.OVERLAP)).all()
        if k.not_after is not None and k.not_after <= now
    ]
    for key in ended:
        key.status = KeyStatus.RETIRED
        session.add(key)
    session.flush()
    return ended


def revoke_key(session: Session, key_id: str, *, reason: str, now: datetime) -> Key:
    """Mark a key revoked from `now`, with the reason given by the admin."""
    key = get_key(session, key_id)
    key.status = KeyStatus.REVOKED
    key.revoked_at = require_aware(now, "now")
    key.reason = reason
    session.add(key)
    session.flush()
    return key


def add_user(
    session: Session,
    *,
    name: str,
    role: Role,
    clearance: str,
    token_sha256: str,
    now: datetime,
) -> User:
    """Create a local user; `DuplicateError` if the name or the token hash is taken."""
    user = User(
        name=name,
        role=as_enum(Role, role),
        clearance=clearance,
        token_sha256=check_sha256(token_sha256, "token_sha256"),
        created_at=require_aware(now, "now"),
        disabled=False,
    )
    _insert(session, user, f"user {name!r} (or its token)")
    return user


def get_user(session: Session, name: str) -> User:
    """The user `name`, enabled or not; `NotFound` if unknown."""
    user = session.exec(select(User).where(User.name == name)).first()
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def find_user_by_token_hash(session: Session, token_sha256: str) -> User | None:
    """The enabled user holding the token with this SHA-256 hex, else None."""
    check_sha256(token_sha256, "token_sha256")
    return session.exec(
        select(User).where(User.token_sha256 == token_sha256, col(User.disabled).is_(False))
    ).first()


def list_users(session: Session) -> Sequence[User]:
    """Every local user, by name."""
    return session.exec(select(User).order_by(col(User.name))).all()


# --- Key events and announcements ---------------------------------------------------------


def record_key_event(
    session: Session,
    *,
    event: str,
    key: Key,
    actor: str,
    now: datetime,
    reason: str | None = None,
    statement_sha256: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> KeyEvent:
    """Append one event to the key history (kept for ever, never updated)."""
    row = KeyEvent(
        at=require_aware(now, "now"),
        event=event,
        key_id=key.key_id,
        owner=key.owner,
        kind=key.kind,
        actor=actor,
        reason=reason,
        statement_sha256=(
            None if statement_sha256 is None else check_sha256(statement_sha256, "statement_sha256")
        ),
        detail=dict(detail or {}),
    )
    session.add(row)
    session.flush()
    return row


def list_key_events(
    session: Session, *, key_id: str | None = None, owner: str | None = None
) -> Sequence[KeyEvent]:
    """Key events, oldest first, optionally for one key or one owner."""
    query = select(KeyEvent)
    if key_id is not None:
        query = query.where(KeyEvent.key_id == key_id)
    if owner is not None:
        query = query.where(KeyEvent.owner == owner)
    return session.exec(query.order_by(col(KeyEvent.id))).all()


def statement_applied(session: Session, statement_sha256: str) -> bool:
    """Whether a key-change statement with this payload digest was already applied."""
    check_sha256(statement_sha256, "statement_sha256")
    query = select(KeyEvent.id).where(KeyEvent.statement_sha256 == statement_sha256)
    return session.exec(query).first() is not None


def queue_announcement(
    session: Session, *, peer: str, payload_type: str, envelope: str, now: datetime
) -> KeyAnnouncement:
    """Queue a signed key-change statement for delivery to `peer`."""
    row = KeyAnnouncement(
        peer=peer,
        payload_type=payload_type,
        envelope=envelope,
        created_at=require_aware(now, "now"),
    )
    session.add(row)
    session.flush()
    return row


def pending_announcements(
    session: Session, *, peer: str | None = None
) -> Sequence[KeyAnnouncement]:
    """Announcements not yet delivered, oldest first (a peer applies them in order)."""
    query = select(KeyAnnouncement).where(col(KeyAnnouncement.sent_at).is_(None))
    if peer is not None:
        query = query.where(KeyAnnouncement.peer == peer)
    return session.exec(query.order_by(col(KeyAnnouncement.id))).all()


def mark_announcement(
    session: Session, announcement_id: int, *, now: datetime, error: str | None = None
) -> KeyAnnouncement:
    """Record a delivery attempt: sent when `error` is None, else the error kept."""
    row = session.get(KeyAnnouncement, announcement_id)
    if row is None:
        raise NotFound(f"no key announcement {announcement_id}")
    row.attempts += 1
    if error is None:
        row.sent_at = require_aware(now, "now")
        row.last_error = None
    else:
        row.last_error = error[:2000]
    session.add(row)
    session.flush()
    return row
