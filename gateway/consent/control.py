"""Consent to transfer (art. 7.3) and to use for another purpose (art. 7.2), on a node.

On the originator's node a user grants a consent for a message it sent: the node issues a
consent token (crypto/consent.py), signed by its seal and, where the profile requires it,
by the user's signatory key, records it, and sends it to the forwarding Party as a
`consent` message (the token rides in the signed statement's extensions, so the peer API
checks it before anything is stored). A revocation travels the same way. The holder of a
message asks for a consent with a `consent-request` message.

On the forwarder's node an incoming token is verified (originator's seal, names this node
as forwarder, binds a message this node received from that originator) and recorded; it
is what `accord forward` (gateway/_forward.py) and `accord consent use` look for.

Invariants:
- A consent is granted only by the originator's node, for a message it sent; a token
  received is recorded only from the originator that signed it.
- Record and control message are written in one transaction: a consent exists locally
  only if its token is on its way to the forwarder.
- A consent is used at most once (`granted` to `used` by one conditional update), and a
  revoked or expired one is never used.
- Every grant, revocation, use and refusal is an audit event (`_audit_event`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel
from sqlalchemy import update
from sqlmodel import Session, col, select

from accord.crypto import (
    Envelope,
    KeyFileError,
    MessageDraft,
    Signer,
    VerificationError,
    canonical_json,
    new_message_id,
    seal_message,
    verify_envelope,
)
from accord.crypto.canonical import loads_canonical
from accord.crypto.consent import (
    CONSENT_TYPE,
    ConsentRevocation,
    ConsentToken,
    issue_consent,
    issue_revocation,
    new_nonce,
    verify_consent,
    verify_revocation,
)
from accord.crypto.sealed import Statement
from accord.gateway.api.local.messages import current_user
from accord.gateway.audit import log as _audit
from accord.gateway.audit.log import EventKind
from accord.gateway.keys.store import KeyStoreError, load_signatory
from accord.gateway.messages.access import (
    METADATA_ROLES,
    NotKnown,
    governing_marking,
    known_message,
    usable_signatories,
)
from accord.gateway.messages.parts import message_row
from accord.gateway.node.runtime import Node, PeerUnknown
from accord.policy import Marking, MarkingError
from accord.policy.authority import (
    Action,
    AuthorityRequest,
    PolicyDenied,
    authority_policy,
    is_downgrade,
)
from accord.storage import (
    ConsentRecord,
    Direction,
    Message,
    MessageStatus,
    NewMessage,
    NotFound,
    PartRef,
    Role,
    StorageError,
    User,
    add_event,
    get_message,
    insert_draft,
    insert_outgoing,
    queue_draft,
)

__all__ = [
    "CONTROL_TYPES",
    "ConsentRefused",
    "check_incoming_control",
    "consent_router",
    "grant_consent",
    "record_incoming_control",
    "remark_message",
    "request_consent",
    "revoke_consent",
    "use_for_purpose",
]

log = logging.getLogger("accord.consent")
audit_log = logging.getLogger("accord.audit")

CONSENT, REVOCATION, CONSENT_REQUEST = "consent", "consent-revocation", "consent-request"
REMARK = "remark"
CONTROL_TYPES = (CONSENT, REVOCATION, CONSENT_REQUEST, REMARK)
GRANTED, USED, REVOKED = "granted", "used", "revoked"
USERS = (Role.OPERATOR, Role.SIGNATORY)


class ConsentRefused(Exception):
    """A consent action was refused; the message says why and what to do (local users)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


_EVENT_KINDS = {
    "consent-granted": EventKind.CONSENT_GRANTED,
    "consent-revoked": EventKind.CONSENT_REVOKED,
    "consent-received": EventKind.CONSENT_RECEIVED,
    "consent-refused": EventKind.CONSENT_REFUSED,
    "use": EventKind.CONSENT_USED,
    "use-consented": EventKind.CONSENT_USED,
    "use-refused": EventKind.USE_REFUSED,
    "remarked": EventKind.MESSAGE_REMARKED,
    "forward-accepted": EventKind.FORWARDED,
    "forward-refused": EventKind.FORWARD_REFUSED,
    "forward-in-accepted": EventKind.FORWARD_RECEIVED,
    "forward-in-refused": EventKind.FORWARD_IN_REFUSED,
}


def _audit_event(
    node: Node, event: str, detail: Mapping[str, Any], *, session: Session | None = None
) -> None:
    """An audit event of art. 7 (consent granted, revoked, used, refused; forward refused
    or accepted; re-marking): a leaf of the node's Merkle log (DESIGN 7). Given the
    `session` of the change it records, in that transaction; otherwise in its own, after
    the change committed (a refusal changes nothing else)."""
    audit_log.info("%s %s", event, dict(detail))
    message_id = detail.get("message_id")
    entry = _audit.event(
        _EVENT_KINDS.get(event, EventKind.CONSENT_USED),
        node.party,
        node.clock(),
        message_id=message_id if isinstance(message_id, str) else None,
        detail=_audit.flat_detail(
            {"event": event, **{k: v for k, v in detail.items() if k != "message_id"}}
        ),
    )
    if session is not None:
        _audit.record(session, entry)
    else:
        _audit.record_alone(node, entry)


def consent_row(
    token: ConsentToken, envelope: Envelope, *, status: str, now: datetime
) -> ConsentRecord:
    """The row recording a consent token (the signed envelope as received or issued);
    a token recorded as `USED` was used at `now`."""
    return ConsentRecord(
        nonce=token.nonce,
        message_id=token.message_id,
        statement_sha256=token.statement_sha256,
        originator=token.originator,
        forwarder=token.forwarder,
        third_party=token.third_party,
        purpose=token.purpose,
        issued=token.issued,
        expires=token.expires,
        envelope=envelope.to_bytes(),
        status=status,
        recorded_at=now,
        used_at=now if status == USED else None,
    )


@dataclass(frozen=True)
class Granted:
    nonce: str
    message_id: str
    forwarder: str
    third_party: str
    purpose: str
    expires: datetime
    control_message_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "nonce": self.nonce,
            "message_id": self.message_id,
            "forwarder": self.forwarder,
            "third_party": self.third_party,
            "purpose": self.purpose,
            "expires": self.expires.isoformat(),
            "status": GRANTED,
            "sent_as": self.control_message_id,
        }


# --- The originator's side --------------------------------------------------------------


def grant_consent(
    node: Node,
    user: User,
    message_id: str,
    *,
    third_party: str,
    purpose: str,
    expires: datetime,
    forwarder: str | None = None,
    signatory: Signer | None = None,
) -> Granted:
    """Issue, record and send a consent token for a message this node originated.

    1. Only the originator's node grants (art. 7.3 "the Party provided this information").
    2. The third party is not the originator; a third party equal to the forwarder is a
       consent to use for another purpose (art. 7.2).
    3. The purpose is stated; the expiry is in the future and within the profile's limit.
    4. The person is cleared for the message's current (governing) marking, and the
       profile may require a signatory (head or deputy) besides the seal, with a key that
       is neither revoked nor expired (policy/authority.py).
    """
    now = node.clock()
    _require_user(user)
    row = _own_message(node, message_id)  # 1
    signers = _authorize(node, Action.CONSENT, row, user, signatory=signatory)  # 4
    forwarder = forwarder or row.recipient
    if forwarder == node.party:
        raise ConsentRefused(
            "--forwarder is the Party that received the message, not this one", 422
        )
    if third_party == node.party:  # 2
        raise ConsentRefused("the originator needs no consent for its own information", 422)
    if not purpose.strip():  # 3
        raise ConsentRefused("state the permitted purpose with --purpose (art. 7.2)", 422)
    if expires <= now:
        raise ConsentRefused("--expires must be in the future", 422)
    if expires > now + node.profile.consent_max_period:
        raise ConsentRefused(
            "--expires is beyond the profile's longest consent "
            f"({node.profile.consent_max_period.days} days): give an earlier date",
            422,
        )
    envelope = Envelope.from_bytes(row.envelope)
    token = ConsentToken(
        nonce=new_nonce(),
        message_id=message_id,
        statement_sha256=envelope.payload_sha256,
        originator=node.party,
        forwarder=forwarder,
        third_party=third_party,
        purpose=purpose,
        marking=dict(_signed_marking(envelope)),
        issued=now,
        expires=expires,
    )
    signed = issue_consent(token, [node.seal, *signers])
    text = (
        f"Согласие на передачу сообщения {message_id} третьей стороне «{third_party}» "
        f"для цели «{purpose}» до {expires:%d.%m.%Y} (ст. 7.3 Соглашения)."
        if not token.is_use_consent
        else f"Согласие на использование сообщения {message_id} для цели «{purpose}» "
        f"до {expires:%d.%m.%Y} (ст. 7.2 Соглашения)."
    )
    control = _control_message(
        node, forwarder, CONSENT, row, text, {"consent": signed.to_dict()}, now
    )
    record = consent_row(token, signed, status=GRANTED, now=now)
    with node.db.session() as session:
        session.add(record)
        insert_outgoing(session, control, now=now)
        add_event(
            session,
            message_id,
            "consent-granted",
            now=now,
            detail={"nonce": token.nonce, "to": third_party, "by": user.name},
        )
    node.wake_worker()
    _audit_event(
        node,
        "consent-granted",
        {
            "message_id": message_id,
            "nonce": token.nonce,
            "forwarder": forwarder,
            "third_party": third_party,
            "purpose": purpose,
            "by": user.name,
        },
    )
    return Granted(
        token.nonce, message_id, forwarder, third_party, purpose, expires, control.message_id
    )


def revoke_consent(node: Node, user: User, nonce: str) -> dict[str, Any]:
    """Withdraw a consent this node granted, before it is used; the forwarder is told."""
    now = node.clock()
    _require_user(user)
    with node.db.session(readonly=True) as session:
        record = session.get(ConsentRecord, nonce)
        row = None if record is None else session.get(Message, record.message_id)
    if record is None or record.originator != node.party or row is None:
        raise ConsentRefused(
            f"no consent {nonce} granted by this node: see `accord consent list`", 404
        )
    _authorize(node, Action.REVOKE, row, user)
    if record.status == USED:
        raise ConsentRefused(
            f"consent {nonce} was already used at {record.used_at}: a revocation cannot undo a "
            "transfer that happened; ask the third party under art. 7 instead"
        )
    if record.status == REVOKED:
        raise ConsentRefused(f"consent {nonce} is already revoked")
    revocation = issue_revocation(ConsentRevocation(nonce, node.party, now), [node.seal])
    # The revocation carries the token it withdraws, so that the third party, which has
    # never seen the token, can record it as revoked and refuse a forward under it.
    extensions = {
        "revocation": revocation.to_dict(),
        "consent": Envelope.from_bytes(record.envelope).to_dict(),
    }
    text = f"Согласие {nonce[:16]}… на передачу сообщения {record.message_id} отозвано."
    control = _control_message(node, record.forwarder, REVOCATION, row, text, extensions, now)
    # Art. 7.3, DESIGN 4: the forwarder may misbehave, so the third party named in the
    # token is told too (docs/policy.md, "Revocation binds the third party").
    told = [control]
    if record.third_party not in (record.forwarder, node.party):
        try:
            told.append(
                _control_message(node, record.third_party, REVOCATION, row, text, extensions, now)
            )
        except ConsentRefused:
            log.warning(
                "consent %s revoked, but its third party %s is not an active peer: it cannot "
                "be told",
                nonce,
                record.third_party,
            )
    with node.db.session() as session:
        changed = session.execute(
            update(ConsentRecord)
            .where(col(ConsentRecord.nonce) == nonce, col(ConsentRecord.status) == GRANTED)
            .values(status=REVOKED, revoked_at=now, revocation=revocation.to_bytes())
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            raise ConsentRefused(f"consent {nonce} changed meanwhile: list it again")
        for message in told:
            insert_outgoing(session, message, now=now)
        add_event(
            session,
            record.message_id,
            "consent-revoked",
            now=now,
            detail={"nonce": nonce, "by": user.name},
        )
    node.wake_worker()
    _audit_event(
        node, "consent-revoked", {"message_id": record.message_id, "nonce": nonce, "by": user.name}
    )
    return {
        "nonce": nonce,
        "status": REVOKED,
        "sent_as": control.message_id,
        "third_party_told": told[1].message_id if len(told) > 1 else None,
    }


def remark_message(
    node: Node, user: User, message_id: str, marking: Any, *, signatory: Signer | None = None
) -> dict[str, Any]:
    """Change the marking of a message this node originated (art. 7.1: the transmitting
    Party determines confidentiality). The re-marking is a new statement signed by this
    node's seal (and the signatory, where the profile says so), sent to the recipient as a
    `remark` message; the original statement and its signature stay as they were.

    1. Only the originator's node re-marks; the new marking is the profile's and below
       its ceiling (art. 7.5).
    2. The person is cleared for the *current* (governing) marking and the new one, and
       signs as a signatory where the profile requires it (policy/authority.py).
    3. Where the profile asks two signatories for a downgrade, the first one's re-marking
       waits as a draft (`pending-approval`, nothing changes yet); a different signatory
       running the same re-marking adds their signature, and only then it takes effect
       here and is sent."""
    now = node.clock()
    _require_user(user)
    row = _own_message(node, message_id)  # 1
    try:
        new = node.profile.scheme.parse_for_sending(marking)
    except MarkingError as e:
        raise ConsentRefused(str(e), 422) from e
    current = _current_marking(node, row)
    mine = _authorize(node, Action.REMARK, row, user, new=new, signatory=signatory)  # 2
    envelope = Envelope.from_bytes(row.envelope)
    change = {
        "message_id": message_id,
        "statement_sha256": envelope.payload_sha256,
        "marking": new.to_dict(),
    }
    second = node.profile.downgrade_signatories > 1 and is_downgrade(
        node.profile.scheme, current, new
    )
    if second:  # 3
        pending = _pending_remark(node, message_id, change)
        if pending is None:
            return _propose_remark(node, user, row, new, change, mine, now)
        return _confirm_remark(node, user, row, current, new, pending, mine, now)
    text = f"Изменена маркировка сообщения {message_id}: {new.level} (ст. 7.1 Соглашения)."
    control = _control_message(
        node, row.recipient, REMARK, row, text, {"remark": change}, now, signers=mine
    )
    with node.db.session() as session:
        insert_outgoing(session, control, now=now)
        _apply_remark(session, node, user, message_id, new, control.message_id, now)
    node.wake_worker()
    _audit_event(node, "remarked", {"message_id": message_id, "to": new.to_dict()})
    return {"message_id": message_id, "marking": new.to_dict(), "sent_as": control.message_id}


def _apply_remark(
    session: Session,
    node: Node,
    user: User,
    message_id: str,
    new: Marking,
    sent_as: str,
    now: datetime,
) -> None:
    stored = session.get(Message, message_id)
    if stored is None:
        raise ConsentRefused(f"no message {message_id} on this node", 404)
    old = dict(stored.marking)
    stored.marking = new.to_dict()
    session.add(stored)
    add_event(
        session,
        message_id,
        "remarked",
        now=now,
        detail={"from": old, "to": new.to_dict(), "by": user.name, "sent_as": sent_as},
    )


def _pending_remark(node: Node, message_id: str, change: dict[str, Any]) -> Message | None:
    """The draft re-marking of `message_id` to the same marking that waits for a second
    signatory, if there is one."""
    with node.db.session(readonly=True) as session:
        drafts = session.exec(
            select(Message).where(
                col(Message.type) == REMARK,
                col(Message.in_reply_to) == message_id,
                col(Message.sender) == node.party,
                col(Message.status) == MessageStatus.DRAFT,
            )
        ).all()
    for draft in drafts:
        st = Statement.from_payload(loads_canonical(Envelope.from_bytes(draft.envelope).payload))
        if st.extensions.get("remark") == change:
            return draft
    return None


def _propose_remark(
    node: Node,
    user: User,
    row: Message,
    new: Marking,
    change: dict[str, Any],
    signers: list[Signer],
    now: datetime,
) -> dict[str, Any]:
    """The first of two signatories of a downgrade: kept as a draft, nothing changes."""
    text = f"Изменена маркировка сообщения {row.message_id}: {new.level} (ст. 7.1 Соглашения)."
    control = _control_message(
        node, row.recipient, REMARK, row, text, {"remark": change}, now, signers=signers
    )
    with node.db.session() as session:
        insert_draft(session, control, now=now)
        add_event(
            session,
            row.message_id,
            "remark-proposed",
            now=now,
            detail={"to": new.to_dict(), "by": user.name, "draft": control.message_id},
        )
    _audit_event(
        node,
        "remarked",
        {"message_id": row.message_id, "to": new.to_dict(), "pending": control.message_id},
    )
    return {
        "message_id": row.message_id,
        "marking": new.to_dict(),
        "status": "pending-approval",
        "draft": control.message_id,
    }


def _confirm_remark(
    node: Node,
    user: User,
    row: Message,
    current: Marking,
    new: Marking,
    pending: Message,
    signers: list[Signer],
    now: datetime,
) -> dict[str, Any]:
    """The second signatory of a downgrade: a different person adds their signature to
    the proposal; then it takes effect here and is sent."""
    draft = Envelope.from_bytes(pending.envelope)
    before = usable_signatories(node, {s.keyid for s in draft.signatures}, now)
    mine = frozenset(s.key_id for s in signers)
    if mine <= before:
        raise ConsentRefused(
            f"you already signed this downgrade of {row.message_id}: a second, different "
            "signatory confirms it by running the same `accord remark` with --sign",
            403,
        )
    request = AuthorityRequest(
        Action.REMARK, node.party, row.sender, current, new, user.clearance, before | mine
    )
    try:
        _policy(node, Action.REMARK).check(request)
    except PolicyDenied as e:
        raise ConsentRefused(str(e), 403) from e
    signed = draft.add_signatures(signers)
    with node.db.session() as session:
        queue_draft(
            session,
            pending.message_id,
            envelope=signed.to_bytes(),
            now=now,
            detail={"by": user.name, "second_signatory": True},
        )
        _apply_remark(session, node, user, row.message_id, new, pending.message_id, now)
    node.wake_worker()
    _audit_event(node, "remarked", {"message_id": row.message_id, "to": new.to_dict()})
    return {"message_id": row.message_id, "marking": new.to_dict(), "sent_as": pending.message_id}


def _policy(node: Node, action: Action, *, downgrade: bool = True) -> Any:
    """The profile's authority rule for `action`; without `downgrade`, all of it but the
    count of signatories a downgrade needs."""
    profile = node.profile
    return authority_policy(
        action,
        profile.scheme,
        signatory_required=(
            profile.remark_signatory_required
            if action is Action.REMARK
            else profile.consent_signatory_required
        ),
        downgrade_signatories=profile.downgrade_signatories if downgrade else 1,
    )


def _current_marking(node: Node, row: Message) -> Marking:
    try:
        return governing_marking(node, row)
    except VerificationError as e:
        raise ConsentRefused(
            f"message {row.message_id} does not verify here ({e.reason}): report it to the admin",
            409,
        ) from e


def _authorize(
    node: Node,
    action: Action,
    row: Message,
    user: User,
    *,
    new: Marking | None = None,
    signatory: Signer | None = None,
) -> list[Signer]:
    """The local user's authority over `row` (policy/authority.py), for one signature:
    the signatory's key must be usable now. A re-marking by two signatories is checked
    here for everything but the second signature (`_confirm_remark`). Returns the
    signatory signers to add."""
    now = node.clock()
    signers = [signatory] if signatory is not None else []
    usable = usable_signatories(node, [s.key_id for s in signers], now)
    if signatory is not None and not usable:
        raise ConsentRefused(
            f"your signing key {signatory.key_id[:16]}… is revoked or expired in the key "
            "history and signs nothing: ask an admin for a new signatory key",
            403,
        )
    request = AuthorityRequest(
        action, node.party, row.sender, _current_marking(node, row), new, user.clearance, usable
    )
    policy = _policy(node, action, downgrade=False)
    try:
        policy.check(request)
    except PolicyDenied as e:
        raise ConsentRefused(str(e), 403) from e
    return signers


def _signed_marking(envelope: Envelope) -> Mapping[str, Any]:
    return Statement.from_payload(loads_canonical(envelope.payload)).marking


# --- The holder's side --------------------------------------------------------------------


def request_consent(
    node: Node, user: User, message_id: str, *, third_party: str, purpose: str
) -> dict[str, Any]:
    """Ask the originator of a received message for a consent (travels as a message)."""
    now = node.clock()
    _require_user(user)
    row = _received_message(node, message_id)
    _authorize(node, Action.REQUEST, row, user)
    if not purpose.strip():
        raise ConsentRefused("state the purpose you ask consent for with --purpose", 422)
    envelope = Envelope.from_bytes(row.envelope)
    ask = {
        "message_id": message_id,
        "statement_sha256": envelope.payload_sha256,
        "third_party": third_party,
        "purpose": purpose,
    }
    text = (
        f"Просим согласия на передачу сообщения {message_id} третьей стороне «{third_party}» "
        f"для цели «{purpose}» (ст. 7.3 Соглашения)."
        if third_party != node.party
        else f"Просим согласия на использование сообщения {message_id} для цели «{purpose}» "
        "(ст. 7.2 Соглашения)."
    )
    control = _control_message(
        node, row.sender, CONSENT_REQUEST, row, text, {"consent_request": ask}, now
    )
    with node.db.session() as session:
        insert_outgoing(session, control, now=now)
        add_event(
            session,
            message_id,
            "consent-requested",
            now=now,
            detail={"third_party": third_party, "by": user.name},
        )
    node.wake_worker()
    return {"message_id": control.message_id, "status": "queued"}


def usable_consent(
    session: Session, node: Node, message_id: str, third_party: str, purpose: str | None
) -> ConsentRecord:
    """The recorded consent that covers passing `message_id` to `third_party` now, or a
    `ConsentRefused` that says exactly why none does."""
    now = node.clock()
    rows = session.exec(
        select(ConsentRecord).where(
            col(ConsentRecord.message_id) == message_id,
            col(ConsentRecord.forwarder) == node.party,
        )
    ).all()
    if not rows:
        raise ConsentRefused(
            f"no consent of the originator is recorded for message {message_id} (art. 7.3): "
            "ask for one with `accord consent request`",
            403,
        )
    for_party = [r for r in rows if r.third_party == third_party]
    if not for_party:
        named = ", ".join(sorted({r.third_party for r in rows}))
        raise ConsentRefused(
            f"the originator's consent for message {message_id} names {named}, not "
            f"{third_party}: ask for a consent for {third_party}",
            403,
        )
    if purpose is not None:
        for_party = [r for r in for_party if r.purpose == purpose] or _refuse_purpose(
            message_id, for_party
        )
    live = [r for r in for_party if r.status == GRANTED and r.expires > now]
    if live:
        return live[0]
    raise ConsentRefused(
        f"the consent for message {message_id} to {third_party} {_why_not(for_party)}: ask "
        "the originator for a new one",
        403,
    )


def _why_not(records: list[ConsentRecord]) -> str:
    """Why none of `records` covers a transfer now, each by its own state: a used
    consent is never reported as expired, and an expiry date is only ever the date of a
    consent that did expire."""
    used = [r for r in records if r.status == USED]
    revoked = [r for r in records if r.status == REVOKED]
    expired = [r for r in records if r.status == GRANTED]
    reasons = []
    if used:
        reasons.append("was already used: a consent covers one transfer")
    if revoked:
        reasons.append("was revoked by the originator")
    if expired:
        reasons.append(f"expired ({max(r.expires for r in expired):%Y-%m-%d %H:%M} UTC)")
    if len(reasons) == 1:
        return reasons[0]
    counted = [f"{len(used)} already used"] if used else []
    if revoked:
        counted.append(f"{len(revoked)} revoked by the originator")
    if expired:
        last = max(r.expires for r in expired)
        counted.append(f"{len(expired)} expired (the last at {last:%Y-%m-%d %H:%M} UTC)")
    return "is not usable: of its consents " + ", ".join(counted)


def _refuse_purpose(message_id: str, rows: list[ConsentRecord]) -> list[ConsentRecord]:
    allowed = "; ".join(sorted({f"«{r.purpose}»" for r in rows}))
    raise ConsentRefused(
        f"the consent for message {message_id} permits only {allowed}: ask for a consent for "
        "this purpose (art. 7.2)",
        403,
    )


def use_for_purpose(node: Node, user: User, message_id: str, purpose: str) -> dict[str, Any]:
    """Record a use of received content (art. 7.2): for its stated purpose as is, for any
    other only under a consent of the originator naming this node and that purpose."""
    now = node.clock()
    _require_user(user)
    row = _received_message(node, message_id)
    try:  # a use is made by a person who may read it (clearance, art. 6.3)
        known_message(node, user, message_id)
    except NotKnown as e:
        raise ConsentRefused(str(e), 404) from e
    if purpose == row.purpose:
        with node.db.session() as session:
            add_event(
                session, message_id, "used", now=now, detail={"purpose": purpose, "by": user.name}
            )
            _audit_event(
                node, "use", {"message_id": message_id, "purpose": purpose}, session=session
            )
        return {"message_id": message_id, "purpose": purpose, "consent": None}
    try:
        with node.db.session() as session:
            record = usable_consent(session, node, message_id, node.party, purpose)
            _mark_used(session, record.nonce, now)
            add_event(
                session,
                message_id,
                "used-with-consent",
                now=now,
                detail={"purpose": purpose, "nonce": record.nonce, "by": user.name},
            )
            _audit_event(
                node,
                "use-consented",
                {"message_id": message_id, "purpose": purpose, "nonce": record.nonce},
                session=session,
            )
    except ConsentRefused as e:
        _audit_event(
            node, "use-refused", {"message_id": message_id, "purpose": purpose, "reason": str(e)}
        )
        _timeline(node, message_id, "use-refused", {"purpose": purpose, "reason": str(e)})
        raise
    return {"message_id": message_id, "purpose": purpose, "consent": record.nonce}


def _mark_used(session: Session, nonce: str, now: datetime) -> None:
    changed = session.execute(
        update(ConsentRecord)
        .where(col(ConsentRecord.nonce) == nonce, col(ConsentRecord.status) == GRANTED)
        .values(status=USED, used_at=now)
    )
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise ConsentRefused("the consent was used or revoked meanwhile: ask for a new one", 403)


def list_consents(node: Node, message_id: str | None = None) -> list[dict[str, Any]]:
    with node.db.session(readonly=True) as session:
        query = select(ConsentRecord).order_by(col(ConsentRecord.recorded_at))
        if message_id is not None:
            query = query.where(col(ConsentRecord.message_id) == message_id)
        rows = session.exec(query).all()
    return [
        {
            "nonce": r.nonce,
            "message_id": r.message_id,
            "originator": r.originator,
            "forwarder": r.forwarder,
            "third_party": r.third_party,
            "purpose": r.purpose,
            "issued": r.issued.isoformat(),
            "expires": r.expires.isoformat(),
            "status": r.status,
        }
        for r in rows
    ]


# --- Control messages through the peer API -------------------------------------------------


def check_incoming_control(
    node: Node, party: str, statement: Statement, *, signed_by: frozenset[str] = frozenset()
) -> None:
    """Peer API, before anything is stored: a `consent` or `consent-revocation` message
    must carry a token or revocation that verifies as the sending originator's own, names
    this node as the forwarder (or, for a revocation, the third party) and binds a message
    this node holds from it; a `remark` must come from the originator, signed by as many
    of its signatories (keys usable now) as the profile asks (`signed_by`: the key ids
    that verified on the control message). Raises `VerificationError` (a uniform refusal
    to the peer; the reason goes to the log)."""
    if statement.type == CONSENT:
        _incoming_token(node, party, statement)
    elif statement.type == REVOCATION:
        _incoming_revocation(node, party, statement)
    elif statement.type == REMARK:
        _incoming_remark(node, party, statement, signed_by=signed_by)


def record_incoming_control(session: Session, node: Node, message: NewMessage) -> None:
    """Peer API, in the transaction that records the control message: record the token,
    or apply the revocation."""
    if message.type not in (CONSENT, REVOCATION, REMARK):
        return
    statement = Statement.from_payload(
        loads_canonical(Envelope.from_bytes(message.envelope).payload)
    )
    now = node.clock()
    if message.type == REMARK:
        target, new = _incoming_remark(node, message.sender, statement)
        row = session.get(Message, target)
        if row is not None:
            old = dict(row.marking)
            row.marking = new
            session.add(row)
            session.flush()
            add_event(
                session,
                target,
                "remarked",
                now=now,
                detail={"from": old, "to": new, "statement": message.message_id},
            )
            _audit_event(node, "remarked", {"message_id": target, "to": new}, session=session)
        return
    if message.type == CONSENT:
        token, raw = _incoming_token(node, message.sender, statement)
        if session.get(ConsentRecord, token.nonce) is None:
            session.add(consent_row(token, raw, status=GRANTED, now=now))
            session.flush()
            add_event(
                session,
                token.message_id,
                "consent-received",
                now=now,
                detail={"nonce": token.nonce, "to": token.third_party},
            )
            _audit_event(
                node,
                "consent-received",
                {"message_id": token.message_id, "nonce": token.nonce},
                session=session,
            )
        return
    revocation, raw, carried = _incoming_revocation(node, message.sender, statement)
    record = session.get(ConsentRecord, revocation.nonce)
    if record is None and carried is not None and carried[0].third_party == node.party:
        # The third party learns of the token by its revocation: kept as revoked, so
        # that a forward under it is refused here (`_forward._check_fresh`).
        tombstone = consent_row(carried[0], carried[1], status=REVOKED, now=now)
        tombstone.revoked_at, tombstone.revocation = now, raw.to_bytes()
        session.add(tombstone)
        session.flush()
        _audit_event(
            node,
            "consent-revoked",
            {"message_id": carried[0].message_id, "nonce": revocation.nonce, "as": "third party"},
            session=session,
        )
        return
    if record is None or record.originator != message.sender:
        return
    if record.status == GRANTED:
        record.status, record.revoked_at, record.revocation = REVOKED, now, raw.to_bytes()
        session.add(record)
        session.flush()
        add_event(
            session, record.message_id, "consent-revoked", now=now, detail={"nonce": record.nonce}
        )
        _audit_event(
            node,
            "consent-revoked",
            {"message_id": record.message_id, "nonce": record.nonce},
            session=session,
        )
    else:
        log.warning("revocation of consent %s arrived when it was %s", record.nonce, record.status)


def _incoming_token(node: Node, party: str, statement: Statement) -> tuple[ConsentToken, Envelope]:
    try:
        raw = Envelope.from_dict(statement.extensions.get("consent"))
        keys = node.peer_keys(party)
    except PeerUnknown as e:
        raise VerificationError(f"{party} is not an active peer") from e
    verified = verify_consent(
        raw,
        originator=party,
        seals=keys.seals,
        signatories=keys.signatories,
        signatory_required=node.profile.consent_signatory_required,
        now=node.clock(),
    )
    token = verified.token
    if node.profile.consent_signatory_required and not usable_signatories(
        node, verified.evidence.key_ids, node.clock(), owner=party
    ):
        raise VerificationError("the consent token's signatory key is revoked or expired")
    if token.forwarder != node.party:
        raise VerificationError("the consent token names another forwarding Party")
    with node.db.session(readonly=True) as session:
        row = session.get(Message, token.message_id)
    if (
        row is None
        or row.direction is not Direction.IN
        or row.sender != party
        or Envelope.from_bytes(row.envelope).payload_sha256 != token.statement_sha256
    ):
        raise VerificationError("the consent token is for a message this node did not receive")
    return token, raw


def _incoming_remark(
    node: Node, party: str, statement: Statement, *, signed_by: frozenset[str] | None = None
) -> tuple[str, dict[str, Any]]:
    """A re-marking counts only from the originator of the message it names (art. 7.1),
    for the exact statement this node holds, only with a marking the profile carries, and
    (checked before anything is stored, when `signed_by` is given) only signed by the
    originator's signatories the profile asks for, with keys usable now."""
    change = statement.extensions.get("remark")
    if not isinstance(change, dict):
        raise VerificationError("a remark message must carry the new marking")
    target = change.get("message_id")
    with node.db.session(readonly=True) as session:
        row = session.get(Message, target) if isinstance(target, str) else None
    if (
        row is None
        or row.sender != party
        or Envelope.from_bytes(row.envelope).payload_sha256 != change.get("statement_sha256")
    ):
        raise VerificationError("a re-marking must come from the originator of a message held here")
    try:
        new = node.profile.scheme.parse_for_sending(change.get("marking"))
    except MarkingError as e:
        raise VerificationError(f"the new marking is not the profile's: {e}") from e
    if signed_by is not None:
        signatories = usable_signatories(node, signed_by, node.clock(), owner=party)
        request = AuthorityRequest(
            Action.REMARK, party, row.sender, governing_marking(node, row), new, None, signatories
        )
        try:
            _policy(node, Action.REMARK).check(request)
        except PolicyDenied as e:
            raise VerificationError(f"the re-marking lacks its authority: {e}") from e
    return row.message_id, new.to_dict()


def _incoming_revocation(
    node: Node, party: str, statement: Statement
) -> tuple[ConsentRevocation, Envelope, tuple[ConsentToken, Envelope] | None]:
    """A revocation counts only if the originator's seal signed it; the token it carries
    (if any) must be that originator's own, sealed by it, for the same nonce."""
    try:
        raw = Envelope.from_dict(statement.extensions.get("revocation"))
        keys = node.peer_keys(party)
    except PeerUnknown as e:
        raise VerificationError(f"{party} is not an active peer") from e
    revocation = verify_revocation(raw, originator=party, seals=keys.seals)
    carried = statement.extensions.get("consent")
    if carried is None:
        return revocation, raw, None
    envelope = Envelope.from_dict(carried)
    evidence = verify_envelope(envelope, keys.verify_keys, payload_type=CONSENT_TYPE)
    if not evidence.key_ids & keys.seals.keys():
        raise VerificationError("the revoked token is not sealed by the originator")
    token = ConsentToken.from_payload(evidence.statement)
    if token.originator != party or token.nonce != revocation.nonce:
        raise VerificationError("the revocation carries another token")
    return revocation, raw, (token, envelope)


def _control_message(
    node: Node,
    to: str,
    kind: str,
    about: Message,
    text: str,
    extensions: dict[str, Any],
    now: datetime,
    *,
    signers: Sequence[Signer] = (),
) -> NewMessage:
    """A sealed, signed control message to `to` (consent, revocation or request) about the
    message `about`, marked as that message is (its purpose says what it is about); a
    re-marking is also signed by its `signers` (signatories)."""
    try:
        peer = node.peer_keys(to)
    except PeerUnknown as e:
        raise ConsentRefused(
            f"{to!r} is not an active peer of this node: see `accord peer add`"
        ) from e
    draft = MessageDraft(
        message_id=new_message_id(),
        sender=node.party,
        recipient=to,
        created=now,
        expires=now + node.profile.consent_max_period,
        marking=dict(about.marking),
        purpose=f"ст. 7 Соглашения: {kind} по сообщению {about.message_id}",
        type=kind,
        in_reply_to=about.message_id,
        extensions=extensions,
    )
    body = canonical_json({"v": 1, "text": text, "fields": {}, "attachments": []})
    sealed = seal_message(
        draft, body=body, recipients=[peer.encryption, node.encryption.recipient()]
    )
    envelope = sealed.sign([node.seal, *signers])
    st = sealed.statement
    return message_row(
        st,
        envelope=envelope.to_bytes(),
        header=sealed.header,
        parts=(PartRef(st.body.sha256, st.body.size, sealed.body),),
    )


# --- Helpers and the local API ------------------------------------------------------------


def _require_user(user: User) -> None:
    if user.role not in USERS:
        raise ConsentRefused(
            f"a user with role {user.role.value} cannot act on consents: an operator or a "
            "signatory can",
            403,
        )


def _own_message(node: Node, message_id: str) -> Message:
    with node.db.session(readonly=True) as session:
        try:
            row = get_message(session, message_id)
        except NotFound as e:
            raise ConsentRefused(f"no message {message_id} on this node", 404) from e
    if row.direction is not Direction.OUT or row.sender != node.party:
        raise ConsentRefused(
            f"only the originator ({row.sender}) can consent to passing message {message_id} "
            "on (art. 7.3): ask it with `accord consent request`",
            403,
        )
    if row.status.value == "draft":
        raise ConsentRefused(f"message {message_id} is a draft: sign and send it first")
    return row


def _received_message(node: Node, message_id: str) -> Message:
    with node.db.session(readonly=True) as session:
        try:
            row = get_message(session, message_id)
        except NotFound as e:
            raise ConsentRefused(f"no message {message_id} on this node", 404) from e
    if row.direction is not Direction.IN or row.recipient != node.party:
        raise ConsentRefused(
            f"message {message_id} was not received by this node from its originator", 409
        )
    return row


def _timeline(node: Node, message_id: str, event: str, detail: dict[str, Any]) -> None:
    try:
        with node.db.session() as session:
            add_event(session, message_id, event, now=node.clock(), detail=detail)
    except StorageError:
        log.exception("could not record %s on %s", event, message_id)


def _knows_of(node: Node, user: User, message_id: str) -> bool:
    """Whether a consent row may be listed to `user`: need-to-know of its message; a
    consent whose message is not held here (the originator's record of a message since
    removed, a third party's revoked token) only to signatories, auditors and admins."""
    try:
        known_message(node, user, message_id)
    except NotKnown:
        with node.db.session(readonly=True) as session:
            held = session.get(Message, message_id) is not None
        return not held and user.role in (Role.SIGNATORY, *METADATA_ROLES)
    return True


def _problem(e: ConsentRefused) -> HTTPException:
    return HTTPException(status_code=e.status, detail=str(e))


class GrantBody(BaseModel):
    to: str
    purpose: str
    expires: datetime
    forwarder: str | None = None
    signatory_passphrase: str | None = None


class RequestBody(BaseModel):
    to: str
    purpose: str


class UseBody(BaseModel):
    purpose: str


class MarkingBody(BaseModel):
    level: str
    caveats: list[str] = []
    signatory_passphrase: str | None = None


CurrentUser = Annotated[User, Depends(current_user)]


def _signatory(node: Node, user: User, passphrase: str | None) -> Signer | None:
    """The user's signatory key, opened with their passphrase, if one was given; it must
    be their current key in the key history (a revoked one signs nothing)."""
    if passphrase is None:
        return None
    if user.role is not Role.SIGNATORY:
        raise HTTPException(403, "only a signatory has a signing key")
    try:
        return load_signatory(node.home, user.name, passphrase.encode("utf-8"), db=node.db)
    except (KeyStoreError, KeyFileError, OSError) as e:
        raise HTTPException(403, f"cannot use your signing key: {e}") from e


def consent_router(node: Node) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/messages/{message_id}/consents", status_code=201)
    def grant(message_id: str, body: GrantBody, user: CurrentUser) -> dict[str, Any]:
        """The originator grants a consent to pass the message on (art. 7.3)."""
        signatory = _signatory(node, user, body.signatory_passphrase)
        expires = (
            body.expires
            if body.expires.tzinfo
            else body.expires.replace(tzinfo=node.clock().tzinfo)
        )
        try:
            granted = grant_consent(
                node,
                user,
                message_id,
                third_party=body.to,
                purpose=body.purpose,
                expires=expires,
                forwarder=body.forwarder,
                signatory=signatory,
            )
        except ConsentRefused as e:
            _audit_event(node, "consent-refused", {"message_id": message_id, "reason": str(e)})
            raise _problem(e) from e
        return granted.to_dict()

    @router.get("/messages/{message_id}/consents")
    def consents_of(message_id: str, user: CurrentUser) -> list[dict[str, Any]]:
        try:  # need-to-know: clearance and art. 6.3; forbidden answers as missing
            known_message(node, user, message_id)
        except NotKnown as e:
            raise HTTPException(404, str(e)) from e
        return list_consents(node, message_id)

    @router.get("/consents")
    def consents(user: CurrentUser) -> list[dict[str, Any]]:
        return [c for c in list_consents(node) if _knows_of(node, user, c["message_id"])]

    @router.post("/consents/{nonce}/revoke")
    def revoke(nonce: str, user: CurrentUser) -> dict[str, Any]:
        try:
            return revoke_consent(node, user, nonce)
        except ConsentRefused as e:
            raise _problem(e) from e

    @router.post("/messages/{message_id}/consent-requests", status_code=201)
    def ask(message_id: str, body: RequestBody, user: CurrentUser) -> dict[str, Any]:
        try:
            return request_consent(
                node, user, message_id, third_party=body.to, purpose=body.purpose
            )
        except ConsentRefused as e:
            raise _problem(e) from e

    @router.post("/messages/{message_id}/uses", status_code=201)
    def use(message_id: str, body: UseBody, user: CurrentUser) -> dict[str, Any]:
        try:
            return use_for_purpose(node, user, message_id, body.purpose)
        except ConsentRefused as e:
            raise _problem(e) from e

    @router.post("/messages/{message_id}/marking")
    def remark(message_id: str, body: MarkingBody, user: CurrentUser) -> dict[str, Any]:
        """The originator changes a message's marking by a new signed statement (art. 7.1)."""
        signatory = _signatory(node, user, body.signatory_passphrase)
        marking = {"level": body.level, "caveats": body.caveats}
        try:
            return remark_message(node, user, message_id, marking, signatory=signatory)
        except ConsentRefused as e:
            raise _problem(e) from e

    return router
