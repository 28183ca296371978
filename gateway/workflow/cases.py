"""The request workflow on the node: both nodes drive the same case with the same steps.

The policy (`policy.workflow`, `policy.lifecycle`) decides; this module carries its
decisions in messages and in the store:

- Sending: `plan_outgoing` checks a request (art. 4.3 fields, the agreement still in
  force, art. 13.1) or a step on a case (the state allows it, the user's Party takes it,
  refusals carry reasons, art. 7.4 transfers) before anything is sealed, and says what
  the signed statement carries (`extensions["workflow"]`: the case and the step) and
  what the encrypted body carries (the art. 4.3 fields, the written reasons).
  `record_outgoing` applies it again, authoritatively, in the transaction that stores
  the message, so the message and the case's new state are committed together.
- Receiving: `inspect_incoming` reads the step a peer's verified message carries and
  opens its body when the agreement needs to see content (a request's art. 4.3 fields,
  a refusal's reasons); `record_incoming_step` applies it in the transaction that
  records the message. A step the case does not allow is refused, and the message with
  it: the peer sees the same uniform refusal as for a bad signature.
- Art. 6.3: a case whose requester asked for the confidentiality of the fact of the
  request (caveat CONFIDENTIAL-FACT) is visible only to signatories and users granted
  need-to-know; to anyone else its messages answer as if they did not exist, and the
  log and audit events name it only by a digest.

Every refusal to a local user says what was wrong and what to do (`WorkflowRefused`,
with the HTTP status the local API answers).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from accord.crypto import MessageOpener
from accord.crypto.canonical import loads_canonical
from accord.crypto.sealed import VerifiedMessage
from accord.gateway.audit import log as _audit
from accord.gateway.audit.log import EventKind
from accord.gateway.node.runtime import Node
from accord.policy import Marking
from accord.policy.lifecycle import Lifecycle
from accord.policy.workflow import (
    SIGNATORY_KINDS,
    Case,
    CaseState,
    Kind,
    Periods,
    ReasonsRequired,
    RequestFields,
    Side,
    Step,
    WorkflowError,
    apply,
    check_transfer,
    open_case,
)
from accord.storage import Case as CaseRow
from accord.storage import (
    Direction,
    MessageStatus,
    NotFound,
    PartRef,
    Role,
    User,
    advance_case,
    agreement_notice_times,
    case_message_statuses,
    case_of_message,
    create_case,
    get_case,
    get_message,
    grant_case_access,
    has_case_access,
    list_case_steps,
    record_agreement_notice,
)

__all__ = [
    "CONFIDENTIAL_FACT",
    "TERMINATION",
    "Incoming",
    "Outgoing",
    "WorkflowRefused",
    "agreement_view",
    "case_summary",
    "case_view",
    "grant_access",
    "inspect_delivery",
    "inspect_incoming",
    "is_visible",
    "periods_of",
    "plan_outgoing",
    "record_incoming_step",
    "record_outgoing",
    "reply_defaults",
]

log = logging.getLogger("accord.workflow")
audit_log = logging.getLogger("accord.audit.workflow")

CONFIDENTIAL_FACT = "CONFIDENTIAL-FACT"
TERMINATION = "termination-notice"
REQUEST = "request"


class WorkflowRefused(Exception):
    """A workflow step refused; `status` is the local API's answer, the text the reason."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


def periods_of(node: Node) -> Periods:
    """The agreement profile's periods (art. 4.2, 13): every node carries a profile."""
    return node.profile


# --- Cases between the policy's objects and the store's rows ---------------------------


def _policy_case(row: CaseRow) -> Case:
    return Case(
        case_id=row.case_id,
        requesting=row.requesting,
        requested=row.requested,
        state=CaseState(row.state),
        opened=row.opened,
        urgent_oral=row.urgent_oral,
        confirmation_due=row.confirmation_due,
        confirmed_at=row.confirmed_at,
        partially_refused=row.partially_refused,
        conditions_accepted=row.conditions_accepted,
        disclosure_noticed_at=row.disclosure_noticed_at,
        confidential_fact=row.confidential_fact,
        steps=row.steps,
    )


def _changes(before: Case, after: Case) -> dict[str, Any]:
    names = (
        "state",
        "confirmed_at",
        "partially_refused",
        "conditions_accepted",
        "disclosure_noticed_at",
    )
    return {
        n: (getattr(after, n).value if n == "state" else getattr(after, n))
        for n in names
        if getattr(after, n) != getattr(before, n)
    }


def _ref(case: Case | CaseRow) -> str:
    """How logs and audit events name a case: by id, or by a digest of it when the
    fact of the request is confidential (art. 6.3: metadata minimised in logs)."""
    if case.confidential_fact:
        return "sha256:" + hashlib.sha256(case.case_id.encode("utf-8")).hexdigest()[:16]
    return case.case_id


_AUDIT_KINDS = {
    "opened": EventKind.CASE_OPENED,
    "step": EventKind.CASE_STEP,
    "access-granted": EventKind.CASE_ACCESS_GRANTED,
}


def _audit_event(
    session: Session, local: str, now: datetime, event: str, case: Case | CaseRow, **detail: Any
) -> dict[str, Any]:
    """The audit event of a workflow step (DESIGN 7): a leaf of the node's log, appended
    in `session`'s transaction (the one that moves the case), and returned.

    The event never holds content, and names a confidential-fact case only by a digest
    (art. 6.3): no message id, no parties.
    """
    record: dict[str, Any] = {"event": f"workflow.{event}", "case": _ref(case)}
    if not case.confidential_fact:
        record.update({k: v for k, v in detail.items() if v is not None})
    else:
        # Only what an auditor needs to follow the state machine: no parties, no ids.
        record.update({k: detail[k] for k in ("kind", "state") if k in detail})
    audit_log.info("%s", record)
    _audit.record(
        session,
        _audit.event(
            _AUDIT_KINDS.get(event, EventKind.CASE_STEP),
            local,
            now,
            detail=_audit.flat_detail(record),
        ),
    )
    return record


# --- Visibility (art. 6.3) ---------------------------------------------------------------


def _sees_all(user: User) -> bool:
    # The head and deputies sign requests and decide on refusals (art. 4.4, 5): they have
    # need-to-know of every case of their Party.
    return user.role is Role.SIGNATORY


def is_visible(session: Session, user: User, message_id: str) -> bool:
    """Whether `user` may know that `message_id` exists (art. 6.3)."""
    case = case_of_message(session, message_id)
    if case is None or not case.confidential_fact or _sees_all(user):
        return True
    return has_case_access(session, case.case_id, user.name)


def _visible_case(session: Session, user: User, case_id: str) -> CaseRow:
    """The case, or the same `WorkflowRefused` 404 whether it is unknown or hidden."""
    try:
        row = get_case(session, case_id)
    except NotFound:
        row = None
    if row is None or (
        row.confidential_fact
        and not _sees_all(user)
        and not has_case_access(session, case_id, user.name)
    ):
        raise WorkflowRefused(
            f"no case {case_id} on this node: check the request's message id with "
            "`accord inbox` or `accord outbox`",
            404,
        )
    return row


def grant_access(
    session: Session, user: User, case_id: str, target: str, *, now: datetime, local: str
) -> dict[str, Any]:
    """A signatory records that `target` has need-to-know of a case (art. 6.3)."""
    if user.role is not Role.SIGNATORY:
        raise WorkflowRefused(
            "only a signatory (head or deputy) grants need-to-know of a case: ask one", 403
        )
    row = _visible_case(session, user, case_id)
    grant_case_access(session, case_id, target, granted_by=user.name, now=now)
    _audit_event(session, local, now, "access-granted", row, user=target, by=user.name)
    return {"case_id": case_id, "user": target, "granted_by": user.name}


def case_view(session: Session, user: User, case_id: str, *, now: datetime) -> dict[str, Any]:
    """A case's state, overdue flag, what each side may do next, and its history."""
    row = _visible_case(session, user, case_id)
    case = _policy_case(row)
    steps = list_case_steps(session, case_id)
    statuses = case_message_statuses(session, case_id)
    view = case.to_dict(now)
    view["allowed"] = {side.value: [k.value for k in case.allowed(side)] for side in Side}
    view["steps"] = [
        {
            "seq": s.seq,
            "kind": s.kind,
            "party": s.party,
            "message_id": s.message_id,
            "from": s.from_state,
            "to": s.to_state,
            "at": s.at.isoformat(),
            "detail": s.detail,
            # A step the peer refused shows as its message's `failed`: the two copies of
            # the case then differ by that step (docs/workflow.md, "Concurrent steps").
            "message_status": statuses.get(s.message_id),
        }
        for s in steps
    ]
    return view


def case_summary(session: Session, message_id: str, *, now: datetime) -> dict[str, Any] | None:
    """The state and overdue flag of the case a message belongs to, for `status`."""
    row = case_of_message(session, message_id)
    if row is None:
        return None
    case = _policy_case(row)
    return {"case_id": case.case_id, "state": case.state.value, "overdue": case.overdue(now)}


# --- Sending ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Outgoing:
    """What a message means to the workflow, decided before it is sealed."""

    kind: str  # "request", a `Kind` value, or "termination-notice"
    case_id: str | None = None
    extensions: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    signatory_required: bool = False
    may_wait_as_draft: bool = False
    urgent_oral: bool = False
    confidential_fact: bool = False
    reasons: str | None = None
    despite_disclosure: bool = False
    confidential: bool = False
    expected_steps: int | None = None


def reply_defaults(session: Session, user: User, meta: Mapping[str, Any]) -> dict[str, Any]:
    """A step's meta with the recipient, type and purpose taken from its case when the
    user left them out (`accord reply ID --kind ...` names only the case)."""
    workflow = meta.get("workflow")
    if not isinstance(workflow, Mapping):
        return dict(meta)
    case_id = meta.get("in_reply_to")
    if not isinstance(case_id, str) or not case_id:
        raise WorkflowRefused("a workflow step names its case: the request's message id", 422)
    row = _visible_case(session, user, case_id)
    request = get_message(session, case_id)
    filled = dict(meta)
    party = request.recipient if request.direction is Direction.OUT else request.sender
    filled.setdefault("to", party)
    filled["to"] = filled["to"] or party
    filled.setdefault("type", "reply")
    if not filled.get("purpose"):
        # Art. 7.2: the answer serves the purpose the request stated.
        filled["purpose"] = request.purpose
    if row.confidential_fact:
        marking = dict(filled.get("marking") or {"level": "OFFICIAL", "caveats": []})
        caveats = list(marking.get("caveats") or [])
        if CONFIDENTIAL_FACT not in caveats:
            # Every message of a confidential case keeps the fact confidential.
            caveats.append(CONFIDENTIAL_FACT)
        marking["caveats"] = caveats
        filled["marking"] = marking
    return filled


def plan_outgoing(
    session: Session,
    *,
    party: str,
    user: User,
    meta: Mapping[str, Any],
    message_type: str,
    to: str,
    marking: Marking,
    lowest_level: str,
    now: datetime,
    periods: Periods,
) -> Outgoing | None:
    """Check what the agreement says about this message before it is sealed.

    1. A request: its art. 4.3 fields are all there and name the right Parties, and the
       agreement with `to` still accepts new requests (art. 13.1).
    2. A termination notice (art. 13.1): only a signatory gives it, once.
    3. A step on a case: the case is visible to the user, the step is the user's Party's
       to take, the case's state allows it, a refusal states its reasons (art. 5.3), and
       confidential information after a disclosure notice is held back (art. 7.4).
    Anything else (a plain notice or reply) is not part of the workflow: None.
    """
    workflow = meta.get("workflow")
    agreement = meta.get("agreement")
    confidential_fact = CONFIDENTIAL_FACT in marking.caveats
    if message_type == REQUEST:  # 1
        if workflow is not None or agreement is not None:
            raise WorkflowRefused("a request opens a case; answer one with `accord reply`", 422)
        try:
            parsed = RequestFields.parse(meta.get("fields") or {}, requesting=party, requested=to)
        except WorkflowError as e:
            raise WorkflowRefused(str(e), 422) from e
        try:
            _lifecycle(session, to, periods).check_new_request(now)
        except WorkflowError as e:
            raise WorkflowRefused(str(e), 409) from e
        urgent = bool(meta.get("urgent_oral"))
        return Outgoing(
            kind=REQUEST,
            extensions={"urgent_oral": True} if urgent else {},
            fields=parsed.to_dict(),
            may_wait_as_draft=not urgent,
            urgent_oral=urgent,
            confidential_fact=confidential_fact,
        )
    if agreement is not None:  # 2
        if agreement != {"kind": TERMINATION} or message_type != "notice":
            raise WorkflowRefused("an agreement notice is a notice of kind termination-notice", 422)
        if user.role is not Role.SIGNATORY:
            raise WorkflowRefused(
                "the written notice of termination (art. 13.1) is signed by the head or a "
                "deputy: ask a signatory",
                403,
            )
        given = agreement_notice_times(session, to, TERMINATION)
        if given:
            raise WorkflowRefused(
                f"notice of termination of the agreement with {to} was already given: the "
                "period of art. 13.1 runs from the first one received",
                409,
            )
        return Outgoing(
            kind=TERMINATION,
            extensions={"agreement": {"kind": TERMINATION}},
            signatory_required=True,
        )
    if workflow is None:
        return None
    if not isinstance(workflow, Mapping):  # 3
        raise WorkflowRefused("workflow must be an object with a kind", 422)
    try:
        kind = Kind(str(workflow.get("kind")))
    except ValueError as e:
        raise WorkflowRefused(
            f"unknown step {workflow.get('kind')!r}: use one of "
            + ", ".join(k.value for k in Kind),
            422,
        ) from e
    case_id = str(meta.get("in_reply_to"))
    row = _visible_case(session, user, case_id)
    if get_message(session, case_id).status is MessageStatus.DRAFT:
        raise WorkflowRefused(
            f"request {case_id} is still a draft the other Party has not received: a "
            "signatory signs it first (`accord sign`)",
            409,
        )
    case = _policy_case(row)
    if to != (case.requested if party == case.requesting else case.requesting):
        raise WorkflowRefused(f"the steps of case {case_id} go to the other Party, not {to}", 422)
    reasons = workflow.get("reasons")
    if reasons is not None and not isinstance(reasons, str):
        raise WorkflowRefused("--reasons must be text", 422)
    side = case.side_of(party)
    step = Step(kind, side, now, reasons)
    confidential = marking.level != lowest_level
    despite = bool(workflow.get("despite_disclosure"))
    try:
        apply(case, step)
        check_transfer(case, side, confidential=confidential, unsafe_override=despite)
    except WorkflowError as e:
        # A missing reason is the user's to add (422); a step the case or the Party may
        # not take now conflicts with the case's state (409).
        raise WorkflowRefused(str(e), 422 if isinstance(e, ReasonsRequired) else 409) from e
    if kind in SIGNATORY_KINDS and user.role is not Role.SIGNATORY:
        raise WorkflowRefused(
            "a written confirmation is signed by the head or a deputy (art. 4.2, 4.4): ask "
            "a signatory to run `accord confirm`",
            403,
        )
    fields: dict[str, Any] = {}
    if reasons is not None and reasons.strip():
        fields["reasons"] = reasons
    return Outgoing(
        kind=kind.value,
        case_id=case_id,
        extensions={"workflow": {"case": case_id, "kind": kind.value}},
        fields=fields,
        signatory_required=kind in SIGNATORY_KINDS,
        confidential_fact=case.confidential_fact,
        reasons=reasons,
        despite_disclosure=despite,
        confidential=confidential,
        expected_steps=case.steps,
    )


def _lifecycle(session: Session, peer: str, periods: Periods) -> Lifecycle:
    return Lifecycle.from_notices(peer, agreement_notice_times(session, peer, TERMINATION), periods)


def record_outgoing(
    session: Session,
    plan: Outgoing,
    *,
    message_id: str,
    party: str,
    recipient: str,
    user: User,
    now: datetime,
    periods: Periods,
) -> None:
    """Apply the plan in the transaction that stores message `message_id`: open the
    request's case, advance the case by the step, or record the termination notice. The
    decision is taken again here, on the case as it is now (`Conflict` if it changed)."""
    if plan.kind == REQUEST:
        case = open_case(
            message_id,
            requesting=party,
            requested=recipient,
            # The request's signed creation time (statements carry whole seconds): the
            # peer counts the confirmation window from the very same instant.
            now=now.replace(microsecond=0),
            periods=periods,
            urgent_oral=plan.urgent_oral,
            confidential_fact=plan.confidential_fact,
        )
        _create(session, case, party=party, local=party, now=now)
        grant_case_access(session, message_id, user.name, granted_by=user.name, now=now)
        return
    if plan.kind == TERMINATION:
        record_agreement_notice(
            session, message_id, peer=recipient, direction=Direction.OUT, kind=TERMINATION, now=now
        )
        log.warning("notice of termination of the agreement sent to %s", recipient)
        return
    assert plan.case_id is not None and plan.expected_steps is not None
    _advance(
        session,
        plan.case_id,
        Kind(plan.kind),
        party=party,
        local=party,
        message_id=message_id,
        now=now,
        reasons=plan.reasons,
        expected_steps=plan.expected_steps,
        detail={"by": user.name, "despite_disclosure": True} if plan.despite_disclosure else {},
    )


def _create(session: Session, case: Case, *, party: str, local: str, now: datetime) -> None:
    row = CaseRow(
        case_id=case.case_id,
        requesting=case.requesting,
        requested=case.requested,
        state=case.state.value,
        opened=case.opened,
        urgent_oral=case.urgent_oral,
        confirmation_due=case.confirmation_due,
        confidential_fact=case.confidential_fact,
        updated_at=now,
    )
    create_case(session, row, kind=REQUEST, party=party, detail={"urgent_oral": case.urgent_oral})
    _audit_event(
        session,
        local,
        now,
        "opened",
        case,
        kind=REQUEST,
        state=case.state.value,
        requesting=case.requesting,
        requested=case.requested,
        due=None if case.confirmation_due is None else case.confirmation_due.isoformat(),
    )


def _advance(
    session: Session,
    case_id: str,
    kind: Kind,
    *,
    party: str,
    local: str,
    message_id: str,
    now: datetime,
    reasons: str | None,
    expected_steps: int | None,
    detail: Mapping[str, Any],
) -> Case:
    row = get_case(session, case_id, for_update=True)
    before = _policy_case(row)
    after = apply(before, Step(kind, before.side_of(party), now, reasons))
    advance_case(
        session,
        case_id,
        expected_steps=before.steps if expected_steps is None else expected_steps,
        changes=_changes(before, after),
        kind=kind.value,
        party=party,
        message_id=message_id,
        now=now,
        detail=detail,
    )
    _audit_event(
        session, local, now, "step", after, kind=kind.value, state=after.state.value, party=party
    )
    return after


# --- Receiving --------------------------------------------------------------------------


@dataclass(frozen=True)
class Incoming:
    """What a peer's verified message means to the workflow."""

    kind: str
    sender: str
    recipient: str
    case_id: str | None = None
    reasons: str | None = None
    urgent_oral: bool = False
    confidential_fact: bool = False
    created: datetime | None = None


def inspect_incoming(
    session: Session,
    *,
    statement_type: str,
    sender: str,
    recipient: str,
    marking_caveats: Sequence[str],
    extensions: Mapping[str, Any],
    in_reply_to: str | None,
    signed_by_signatory: bool,
    open_body: Callable[[], Mapping[str, Any]],
    now: datetime,
    periods: Periods,
    created: datetime | None = None,
) -> Incoming | None:
    """Read the step a peer's verified message carries, or raise `WorkflowError` (the
    caller refuses the message uniformly and logs the reason).

    1. A request: its body holds the art. 4.3 fields naming the right Parties; it is
       signed by a signatory unless registered as urgent and oral (art. 4.2, 4.4); the
       agreement still accepts new requests from this peer (art. 13.1).
    2. A termination notice: signed by a signatory (a written notice of the Party).
    3. A step: it names the case it answers (its `in_reply_to`); a refusal's body states
       its reasons (art. 5.3); a confirmation is signed by a signatory (art. 4.4); the
       case allows it now (checked again when it is recorded).
    """
    workflow = extensions.get("workflow")
    agreement = extensions.get("agreement")
    urgent = extensions.get("urgent_oral") is True
    if statement_type == REQUEST:  # 1
        if workflow is not None or agreement is not None:
            raise WorkflowError("a request carries no workflow step")
        RequestFields.parse(open_body().get("fields"), requesting=sender, requested=recipient)
        if not urgent and not signed_by_signatory:
            raise WorkflowError("a written request is signed by a signatory (art. 4.4)")
        _lifecycle(session, sender, periods).check_new_request(now)
        return Incoming(
            REQUEST,
            sender,
            recipient,
            urgent_oral=urgent,
            confidential_fact=CONFIDENTIAL_FACT in marking_caveats,
            # Both nodes count the confirmation window from the same instant: the time
            # the requester signed into the request (within the allowed clock skew).
            created=min(created, now) if created is not None else None,
        )
    if agreement is not None:  # 2
        if agreement != {"kind": TERMINATION} or statement_type != "notice":
            raise WorkflowError("unknown agreement notice")
        if not signed_by_signatory:
            raise WorkflowError("a notice of termination is signed by a signatory (art. 13.1)")
        return Incoming(TERMINATION, sender, recipient)
    if workflow is None:
        return None
    if not isinstance(workflow, Mapping) or set(workflow) != {"case", "kind"}:  # 3
        raise WorkflowError("malformed workflow step")
    try:
        kind = Kind(workflow["kind"])
    except ValueError as e:
        raise WorkflowError(f"unknown workflow step {workflow['kind']!r}") from e
    case_id = workflow["case"]
    if case_id != in_reply_to:
        raise WorkflowError("a workflow step must reply to its case's request")
    reasons: str | None = None
    if kind.value in ("refusal", "partial-refusal"):
        fields = open_body().get("fields")
        value = fields.get("reasons") if isinstance(fields, Mapping) else None
        reasons = value if isinstance(value, str) else None
    if kind in SIGNATORY_KINDS and not signed_by_signatory:
        raise WorkflowError("a written confirmation is signed by a signatory (art. 4.4)")
    try:
        row = get_case(session, case_id)
    except NotFound as e:
        raise WorkflowError("a step on a case this node never had") from e
    case = _policy_case(row)
    apply(case, Step(kind, case.side_of(sender), now, reasons))
    return Incoming(kind.value, sender, recipient, case_id=case_id, reasons=reasons)


def record_incoming_step(
    session: Session, incoming: Incoming, *, message_id: str, now: datetime, periods: Periods
) -> None:
    """Apply the peer's step in the transaction that records its message; raise
    `WorkflowError` (refusing the message with it) if the case no longer allows it."""
    if incoming.kind == REQUEST:
        case = open_case(
            message_id,
            requesting=incoming.sender,
            requested=incoming.recipient,
            now=incoming.created or now,
            periods=periods,
            urgent_oral=incoming.urgent_oral,
            confidential_fact=incoming.confidential_fact,
        )
        _create(session, case, party=incoming.sender, local=incoming.recipient, now=now)
        return
    if incoming.kind == TERMINATION:
        record_agreement_notice(
            session,
            message_id,
            peer=incoming.sender,
            direction=Direction.IN,
            kind=TERMINATION,
            now=now,
        )
        log.warning("notice of termination of the agreement received from %s", incoming.sender)
        return
    assert incoming.case_id is not None
    _advance(
        session,
        incoming.case_id,
        Kind(incoming.kind),
        party=incoming.sender,
        local=incoming.recipient,
        message_id=message_id,
        now=now,
        reasons=incoming.reasons,
        expected_steps=None,
        detail={},
    )


def agreement_view(
    session: Session, peers: Sequence[str], *, now: datetime, periods: Periods
) -> list[dict[str, Any]]:
    """Where the agreement stands with each peer (art. 13)."""
    return [
        Lifecycle.from_notices(p, agreement_notice_times(session, p, TERMINATION), periods).to_dict(
            now
        )
        for p in peers
    ]


def inspect_delivery(
    node: Node, party: str, verified: VerifiedMessage, header: bytes, parts: Sequence[PartRef]
) -> Incoming | None:
    """`inspect_incoming` for a message a peer delivered: the body is opened with this
    node's key only when the agreement needs its content (a request's fields, a
    refusal's reasons), and only after every part matched its signed digest."""
    st = verified.statement
    keys = node.peer_keys(party)
    signed = bool(verified.evidence.key_ids & keys.signatories.keys())

    def open_body() -> Mapping[str, Any]:
        body = parts[0]
        if body.data is not None:
            payload = body.data
        else:
            with node.blobs.open(body.blob_sha256) as f:
                payload = f.read()
        opened = loads_canonical(
            MessageOpener(verified, header, node.encryption).open_body(payload)
        )
        if not isinstance(opened, Mapping):
            raise WorkflowError("the body is not an object")
        return opened

    caveats = st.marking.get("caveats") if isinstance(st.marking, Mapping) else None
    with node.db.session(readonly=True) as session:
        return inspect_incoming(
            session,
            statement_type=st.type,
            sender=st.sender,
            recipient=st.recipient,
            marking_caveats=[c for c in caveats or [] if isinstance(c, str)],
            extensions=st.extensions,
            in_reply_to=st.in_reply_to,
            signed_by_signatory=signed,
            open_body=open_body,
            now=node.clock(),
            periods=periods_of(node),
            created=st.created,
        )
