"""Cases of the request workflow, their step history, need-to-know, agreement notices.

`storage` knows nothing of the agreement: the states and steps are the policy's names,
stored as text; the gateway asks `policy.workflow` whether a step is legal and then
stores its outcome here.

Invariants:
- A case and its first step are written together (`create_case`), and each later step
  together with the case's new state (`advance_case`), in one savepoint: the history
  always explains the state. Step numbers are gapless per case (1, 2, ...), and
  `advance_case` refuses (`Conflict`) a case changed since it was read, so two
  concurrent answers cannot both apply to the same state.
- A message belongs to at most one case: the request whose id it is, or the request its
  `in_reply_to` names.
- A case whose fact is confidential (art. 6.3) is visible only to users with recorded
  need-to-know (`case_access`) and to those the caller says see everything: the listing
  filters it in SQL, so pages stay whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, not_, or_
from sqlalchemy import exc as sa_exc
from sqlmodel import Session, col, select

from ._errors import Conflict, DuplicateError, InvalidValue, NotFound
from ._models import (
    AgreementNotice,
    Case,
    CaseAccess,
    CaseStep,
    Direction,
    Message,
    Receipt,
)
from ._types import as_enum, require_aware

__all__ = [
    "advance_case",
    "agreement_notice_times",
    "case_message_statuses",
    "case_of_message",
    "create_case",
    "get_case",
    "grant_case_access",
    "has_case_access",
    "list_case_steps",
    "list_visible_messages",
    "record_agreement_notice",
]

MAX_PAGE = 500


def create_case(
    session: Session, case: Case, *, kind: str, party: str, detail: Mapping[str, Any] | None = None
) -> Case:
    """Open a case and record its first step (the request itself, `kind`), atomically.
    `DuplicateError` if the case exists; `NotFound` unless its request message exists."""
    now = require_aware(case.updated_at, "updated_at")
    if session.get(Message, case.case_id) is None:
        raise NotFound(f"no message {case.case_id!r} to open a case for")
    if session.get(Case, case.case_id) is not None:
        raise DuplicateError(f"case {case.case_id!r} already exists")
    case.steps = 1
    try:
        with session.begin_nested():
            session.add(case)
            session.flush()
            session.add(
                CaseStep(
                    case_id=case.case_id,
                    seq=1,
                    kind=kind,
                    party=party,
                    message_id=case.case_id,
                    from_state=None,
                    to_state=case.state,
                    at=now,
                    detail=dict(detail or {}),
                )
            )
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"case {case.case_id!r} already exists") from e
    return case


def get_case(session: Session, case_id: str, *, for_update: bool = False) -> Case:
    """The case `case_id` (locked for update when asked); `NotFound` if unknown."""
    query = select(Case).where(Case.case_id == case_id)
    if for_update:
        query = query.with_for_update()
    case = session.exec(query).first()
    if case is None:
        raise NotFound(f"no case {case_id!r}")
    return case


def case_of_message(session: Session, message_id: str) -> Case | None:
    """The case a message belongs to: its own (a request), or its `in_reply_to`'s."""
    case = session.get(Case, message_id)
    if case is not None:
        return case
    message = session.get(Message, message_id)
    if message is None or message.in_reply_to is None:
        return None
    return session.get(Case, message.in_reply_to)


def advance_case(
    session: Session,
    case_id: str,
    *,
    expected_steps: int,
    changes: Mapping[str, Any],
    kind: str,
    party: str,
    message_id: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> Case:
    """Apply a step decided by the policy: set `changes` on the case and append the step.

    `expected_steps` is the step count the decision was made on; a case changed since
    is a `Conflict` (decide again). Atomic: the case and its step, or neither.
    """
    now = require_aware(now, "now")
    case = get_case(session, case_id, for_update=True)
    if case.steps != expected_steps:
        raise Conflict(f"case {case_id!r} changed while this step was decided: try again")
    allowed = set(Case.model_fields) - {"case_id", "requesting", "requested", "opened"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidValue(f"cannot change {', '.join(sorted(unknown))} of a case")
    previous = case.state
    with session.begin_nested():
        for key, value in changes.items():
            setattr(case, key, value)
        case.steps = expected_steps + 1
        case.updated_at = now
        session.add(case)
        session.add(
            CaseStep(
                case_id=case_id,
                seq=case.steps,
                kind=kind,
                party=party,
                message_id=message_id,
                from_state=previous,
                to_state=case.state,
                at=now,
                detail=dict(detail or {}),
            )
        )
        session.flush()
    return case


def list_case_steps(session: Session, case_id: str) -> Sequence[CaseStep]:
    """A case's history, first step first."""
    return session.exec(
        select(CaseStep).where(CaseStep.case_id == case_id).order_by(col(CaseStep.seq))
    ).all()


def case_message_statuses(session: Session, case_id: str) -> dict[str, str]:
    """The status of every message that carried a step of the case, in one query."""
    rows = session.exec(
        select(Message.message_id, Message.status)
        .join(CaseStep, col(CaseStep.message_id) == col(Message.message_id))
        .where(CaseStep.case_id == case_id)
    ).all()
    return {message_id: str(status) for message_id, status in rows}


def grant_case_access(
    session: Session, case_id: str, user_name: str, *, granted_by: str, now: datetime
) -> CaseAccess:
    """Record that `user_name` has need-to-know of the case (idempotent)."""
    get_case(session, case_id)
    existing = session.get(CaseAccess, (case_id, user_name))
    if existing is not None:
        return existing
    row = CaseAccess(
        case_id=case_id,
        user_name=user_name,
        granted_by=granted_by,
        granted_at=require_aware(now, "now"),
    )
    with session.begin_nested():
        session.add(row)
    return row


def has_case_access(session: Session, case_id: str, user_name: str) -> bool:
    return session.get(CaseAccess, (case_id, user_name)) is not None


def list_visible_messages(
    session: Session,
    direction: Direction,
    *,
    user_name: str,
    sees_all: bool,
    limit: int = 50,
    offset: int = 0,
) -> Sequence[Message]:
    """The inbox or outbox as `user_name` may see it, newest first: without the messages
    of confidential-fact cases (art. 6.3) the user has no recorded need-to-know of,
    unless `sees_all`."""
    if not 0 < limit <= MAX_PAGE or offset < 0:
        raise InvalidValue(f"limit must be in 1..{MAX_PAGE} and offset non-negative")
    query = select(Message).where(Message.direction == as_enum(Direction, direction))
    if not sees_all:
        hidden = exists().where(
            col(Case.confidential_fact).is_(True),
            or_(
                col(Case.case_id) == col(Message.message_id),
                col(Case.case_id) == col(Message.in_reply_to),
            ),
            not_(
                exists().where(
                    and_(
                        col(CaseAccess.case_id) == col(Case.case_id),
                        col(CaseAccess.user_name) == user_name,
                    )
                )
            ),
        )
        query = query.where(not_(hidden))
    return session.exec(
        query.order_by(col(Message.created_at).desc(), col(Message.message_id).desc())
        .limit(limit)
        .offset(offset)
    ).all()


def record_agreement_notice(
    session: Session,
    message_id: str,
    *,
    peer: str,
    direction: Direction,
    kind: str,
    now: datetime,
) -> AgreementNotice:
    """Record a notice about the agreement (art. 13) carried by `message_id`."""
    if session.get(Message, message_id) is None:
        raise NotFound(f"no message {message_id!r}")
    row = AgreementNotice(
        message_id=message_id,
        peer=peer,
        direction=as_enum(Direction, direction),
        kind=kind,
        recorded_at=require_aware(now, "now"),
    )
    try:
        with session.begin_nested():
            session.add(row)
    except sa_exc.IntegrityError as e:
        raise DuplicateError(f"notice {message_id!r} is already recorded") from e
    return row


def agreement_notice_times(session: Session, peer: str, kind: str) -> list[datetime | None]:
    """When each `kind` notice exchanged with `peer` was received by the other Party: for
    one we received, when we recorded it; for one we sent, when its signed receipt came
    back (None while it has not been delivered)."""
    rows = session.exec(
        select(AgreementNotice, Receipt)
        .join(Receipt, col(Receipt.message_id) == col(AgreementNotice.message_id), isouter=True)
        .where(AgreementNotice.peer == peer, AgreementNotice.kind == kind)
    ).all()
    times: list[datetime | None] = []
    for notice, receipt in rows:
        if notice.direction is Direction.IN:
            times.append(notice.recorded_at)
        else:
            times.append(None if receipt is None else receipt.received_at)
    return times
