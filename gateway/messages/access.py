"""Authority on a node: the marking that governs a message, and the signatory keys that
count, both read from verified signed facts (DESIGN guarantee 4; policy/authority.py).

- `governing_marking`: the originator's signed statement, then every re-marking held here
  that verifies as the originator's own for exactly that statement, in signed order; a
  database column is only ever a second copy that may restrict, never open (an edited
  `marking` column gives nobody more).
- `usable_signatories`: of the key ids that verified on a signed act, the signatory keys
  of its Party that are usable *now* (not revoked, retired or past their `not_after`), read
  from the key history at the moment of the decision: a key revoked a moment ago signs
  nothing more, here or at a peer.

Invariants:
- Decisions raise `policy.authority.PolicyDenied` (for local users) or
  `crypto.VerificationError` (towards peers); nothing here answers HTTP.
- A re-marking that does not verify is ignored for reads and logged, never applied.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from accord.crypto import Envelope, VerificationError, VerifyKey, verify_envelope
from accord.crypto.sealed import STATEMENT_TYPE, Statement
from accord.gateway.node.runtime import Node
from accord.gateway.workflow import cases as _workflow
from accord.policy import Marking, MarkingError
from accord.policy.authority import governing, stricter
from accord.storage import (
    Key,
    KeyKind,
    Message,
    MessageStatus,
    NotFound,
    Role,
    User,
    get_message,
    list_keys,
)

__all__ = [
    "METADATA_ROLES",
    "REMARK",
    "NotKnown",
    "governing_marking",
    "known_message",
    "may_know",
    "signed_remark",
    "usable_signatories",
]

log = logging.getLogger("accord.authority")
REMARK = "remark"
# Roles that see a message's metadata (status, case, provenance, consents, bundle) by
# their role, whatever its marking: never its content (DESIGN 9, "auditors verify
# without reading content").
METADATA_ROLES = (Role.AUDITOR, Role.ADMIN)


class NotKnown(Exception):
    """The message is missing, or this user may not know of it: the two answer alike."""

    def __init__(self, message_id: str) -> None:
        super().__init__(f"no message {message_id} on this node")


def _owner_keys(session: Session, owner: str) -> dict[str, VerifyKey]:
    """Every seal and signatory key `owner` ever had: signed history stays verifiable."""
    return {
        k.key_id: VerifyKey.from_dict(k.public)
        for k in list_keys(session, owner=owner)
        if k.kind in (KeyKind.SEAL, KeyKind.SIGNATORY)
    }


def signed_remark(
    envelope: Envelope, keys: dict[str, VerifyKey], *, originator: str, target: Message
) -> tuple[datetime, str, dict[str, object]]:
    """A stored re-marking, verified: signed by the originator's keys, a `remark`
    statement of the originator naming exactly `target`'s signed statement. Returns its
    signed creation time, its message id and the new marking (unparsed)."""
    evidence = verify_envelope(envelope, keys, payload_type=STATEMENT_TYPE)
    st = Statement.from_payload(evidence.statement)
    change = st.extensions.get("remark")
    if (
        st.type != REMARK
        or st.sender != originator
        or not isinstance(change, dict)
        or change.get("message_id") != target.message_id
        or change.get("statement_sha256") != Envelope.from_bytes(target.envelope).payload_sha256
        or not isinstance(change.get("marking"), dict)
    ):
        raise VerificationError("not the originator's re-marking of this message")
    return st.created, st.message_id, change["marking"]


def governing_marking(node: Node, row: Message) -> Marking:
    """The marking that governs reads and every clearance check of `row`.

    1. The originator's signed statement verifies under its keys (the stored envelope is
       not trusted blindly); its marking is the start.
    2. Each re-marking held here (outgoing once queued, or received) that verifies as
       the originator's own for that statement replaces it, in signed order.
    3. The `marking` column may only make it stricter: a restriction written there is
       honoured, an opening is not.
    Raises `VerificationError` when the statement itself does not verify or its marking
    is not the profile's: such a message governs nothing and is read by no one."""
    scheme = node.profile.scheme
    with node.db.session(readonly=True) as session:
        keys = _owner_keys(session, row.sender)
        remark_rows = session.exec(
            select(Message).where(
                col(Message.type) == REMARK,
                col(Message.in_reply_to) == row.message_id,
                col(Message.sender) == row.sender,
                col(Message.status) != MessageStatus.DRAFT,
            )
        ).all()
    evidence = verify_envelope(  # 1
        Envelope.from_bytes(row.envelope), keys, payload_type=STATEMENT_TYPE
    )
    statement = Statement.from_payload(evidence.statement)
    try:
        signed = scheme.parse(statement.marking)
    except MarkingError as e:
        raise VerificationError(f"the signed marking is not the profile's: {e}") from e
    remarks: list[tuple[datetime, str, Marking]] = []
    for r in remark_rows:  # 2
        try:
            created, remark_id, marking = signed_remark(
                Envelope.from_bytes(r.envelope), keys, originator=row.sender, target=row
            )
            remarks.append((created, remark_id, scheme.parse(marking)))
        except (VerificationError, MarkingError) as e:
            log.error("re-marking %s of %s ignored: %s", r.message_id, row.message_id, e)
    current = governing(signed, remarks)
    try:  # 3
        column = scheme.parse(row.marking)
    except MarkingError:
        return current
    return stricter(scheme, current, column)


def usable_signatories(
    node: Node, key_ids: Iterable[str], now: datetime, *, owner: str | None = None
) -> frozenset[str]:
    """Of `key_ids` (keys whose signatures verified), the signatory keys that are usable at
    `now`: current or in a rotation's overlap, and not past `not_after`; with `owner`, only
    that peer's. Read from the key history at the moment of the decision, not from a
    cache: a key revoked a moment ago counts for nothing."""
    wanted = set(key_ids)
    if not wanted:
        return frozenset()
    with node.db.session(readonly=True) as session:
        rows = session.exec(select(Key).where(col(Key.key_id).in_(wanted))).all()
    return frozenset(
        k.key_id
        for k in rows
        if k.kind is KeyKind.SIGNATORY
        and (owner is None or k.owner == owner)
        and k.status.usable
        and (k.not_after is None or k.not_after > now)
    )


def may_know(node: Node, session: Session, user: User, row: Message) -> bool:
    """Need-to-know of anything about `row` (its status, case, provenance, consents,
    bundle): auditors know by role (metadata only, never content); for everyone else the
    confidential fact of a request (art. 6.3) hides it without access to its case; then
    admins know by role (metadata only), operators and signatories only within their
    clearance of the governing marking."""
    if user.role is Role.AUDITOR:  # oversight sees every message's metadata, by role
        return True
    if not _workflow.is_visible(session, user, row.message_id):
        return False
    if user.role is Role.ADMIN:
        return True
    try:
        return node.profile.scheme.may_read(user.clearance, governing_marking(node, row))
    except (MarkingError, VerificationError):
        return False


def known_message(node: Node, user: User, message_id: str) -> Message:
    """The message if `user` may know of it; `NotKnown` alike when it is missing or not."""
    with node.db.session(readonly=True) as session:
        try:
            row = get_message(session, message_id)
        except NotFound as e:
            raise NotKnown(message_id) from e
        if not may_know(node, session, user, row):
            raise NotKnown(message_id)
    return row
