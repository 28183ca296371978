"""The request workflow of the agreement (art. 4 to 6, 7.4) as a pure state machine.

One *case* per request for assistance. Both Parties' nodes hold the same case and drive it
with the same transitions, each carried by a signed message, so that the two copies agree:
the sending node applies a transition when its user answers, the receiving node applies
the peer's transition when the message arrives and refuses an illegal one.

Invariants:
- Nothing here reads a clock or a database: time comes in as `now`, periods from an
  object with the `Periods` attributes (the profile's, or `REFERENCE_PERIODS`).
- `Case` is immutable; `apply` returns a new case or raises a `WorkflowError` that says
  what is allowed instead. A refused transition changes nothing.
- `REFUSED` and `COMPLETED` are final for the execution of the request; only the
  requesting Party's advance notice of disclosure (art. 7.4) may still follow a result,
  since art. 7 duties outlive the execution.
- A full or partial refusal without written reasons is itself refused (art. 5.3).
- Who may take a step is fixed by the step: the requested Party answers (acknowledges,
  asks, delays, proposes conditions, refuses, delivers), the requesting Party confirms,
  informs, accepts or declines conditions and notifies disclosure; consultations go both
  ways (art. 5.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "ACTORS",
    "REASONED",
    "REFERENCE_PERIODS",
    "REQUEST_FIELDS",
    "SIGNATORY_KINDS",
    "TRANSITIONS",
    "AgreementPeriods",
    "Case",
    "CaseState",
    "IllegalTransition",
    "Kind",
    "Periods",
    "ReasonsRequired",
    "RequestFields",
    "RequestFieldsMissing",
    "Side",
    "Step",
    "TransferWithheld",
    "WorkflowError",
    "WrongParty",
    "apply",
    "check_transfer",
    "open_case",
]


class Periods(Protocol):
    """The agreement's periods, as a profile exposes them (art. 4.2, 13.1, 13.2)."""

    @property
    def confirmation_window(self) -> timedelta: ...

    @property
    def termination_notice(self) -> timedelta: ...

    @property
    def survival_period(self) -> timedelta: ...


@dataclass(frozen=True)
class AgreementPeriods:
    """Periods given as plain values; `REFERENCE_PERIODS` holds the reference agreement's."""

    confirmation_window: timedelta
    termination_notice: timedelta
    survival_period: timedelta


# Art. 4.2: "no more than 3 days later". Art. 13.1: 6 months, art. 13.2: 5 years. A
# timedelta has no months or years: 184 days is the longest any 6 calendar months last
# (July to December), and 1827 days the longest any 5 years last (two leap days), so the
# node never ends the agreement, or art. 7 duties, before the calendar does.
REFERENCE_PERIODS = AgreementPeriods(
    confirmation_window=timedelta(days=3),
    termination_notice=timedelta(days=184),
    survival_period=timedelta(days=1827),
)


class WorkflowError(ValueError):
    """A step the agreement does not allow; the message says what would be allowed."""


class IllegalTransition(WorkflowError):
    """The case's state does not allow this step."""

    def __init__(self, message: str, *, state: CaseState, kind: Kind, allowed: tuple[Kind, ...]):
        super().__init__(message)
        self.state = state
        self.kind = kind
        self.allowed = allowed


class WrongParty(WorkflowError):
    """The step belongs to the other Party."""


class ReasonsRequired(WorkflowError):
    """A full or partial refusal without written reasons (art. 5.3)."""


class TransferWithheld(WorkflowError):
    """Confidential information held back after an advance notice of disclosure (art. 7.4)."""


class RequestFieldsMissing(WorkflowError):
    """A request without the content art. 4.3 requires."""


class CaseState(StrEnum):
    AWAITING_CONFIRMATION = "awaiting-confirmation"  # urgent oral request (art. 4.2)
    REGISTERED = "registered"  # written request received (art. 4.2, 4.4)
    IN_EXECUTION = "in-execution"  # acknowledged, being executed (art. 6.1)
    CONFIRMATION_REQUESTED = "confirmation-requested"  # doubt (art. 4.2, second paragraph)
    INFO_REQUESTED = "info-requested"  # additional information asked (art. 6.2)
    CONDITIONS_PROPOSED = "conditions-proposed"  # consultations on conditions (art. 5.2)
    REFUSED = "refused"  # full refusal with reasons (art. 5.3), final
    COMPLETED = "completed"  # result delivered (art. 6.4), final


class Kind(StrEnum):
    """A step of the workflow, carried by one signed message."""

    # The requested Party.
    ACKNOWLEDGE = "acknowledge"
    CONFIRMATION_REQUEST = "confirmation-request"
    INFO_REQUEST = "info-request"
    DELAY = "delay"
    CONDITIONS = "conditions"
    PARTIAL_REFUSAL = "partial-refusal"
    REFUSAL = "refusal"
    RESULT = "result"
    # The requesting Party.
    CONFIRM = "confirm"
    INFORMATION = "information"
    ACCEPT_CONDITIONS = "accept-conditions"
    DECLINE_CONDITIONS = "decline-conditions"
    DISCLOSURE_NOTICE = "disclosure-notice"
    # Either Party.
    CONSULTATION = "consultation"


class Side(StrEnum):
    REQUESTING = "requesting"
    REQUESTED = "requested"


_BOTH = frozenset(Side)
_REQUESTED = frozenset({Side.REQUESTED})
_REQUESTING = frozenset({Side.REQUESTING})

ACTORS: Mapping[Kind, frozenset[Side]] = {
    Kind.ACKNOWLEDGE: _REQUESTED,
    Kind.CONFIRMATION_REQUEST: _REQUESTED,
    Kind.INFO_REQUEST: _REQUESTED,
    Kind.DELAY: _REQUESTED,
    Kind.CONDITIONS: _REQUESTED,
    Kind.PARTIAL_REFUSAL: _REQUESTED,
    Kind.REFUSAL: _REQUESTED,
    Kind.RESULT: _REQUESTED,
    Kind.CONFIRM: _REQUESTING,
    Kind.INFORMATION: _REQUESTING,
    Kind.ACCEPT_CONDITIONS: _REQUESTING,
    Kind.DECLINE_CONDITIONS: _REQUESTING,
    Kind.DISCLOSURE_NOTICE: _REQUESTING,
    Kind.CONSULTATION: _BOTH,
}
"""Who takes each step."""

REASONED = frozenset({Kind.REFUSAL, Kind.PARTIAL_REFUSAL})
"""Steps that must carry written reasons (art. 5.3)."""

SIGNATORY_KINDS = frozenset({Kind.CONFIRM})
"""Steps signed by the head of the requesting Party or a deputy, as the written request
itself is (art. 4.4: "transmitted or confirmed in writing, is signed")."""

_S = CaseState
_K = Kind
# The steps each state allows, and where each leads. A step absent from a state's row is
# refused there. Steps that leave the state as it is (delays, consultations, further
# partial refusals) are listed with the state itself.
_ACTIVE: dict[Kind, CaseState] = {
    _K.INFO_REQUEST: _S.INFO_REQUESTED,  # art. 6.2
    _K.DELAY: _S.IN_EXECUTION,  # art. 6.1
    _K.CONDITIONS: _S.CONDITIONS_PROPOSED,  # art. 5.2
    _K.CONSULTATION: _S.IN_EXECUTION,  # art. 5.2
    _K.PARTIAL_REFUSAL: _S.IN_EXECUTION,  # art. 5.1, 5.3: the rest is still executed
    _K.REFUSAL: _S.REFUSED,  # art. 5.1, 5.3
    _K.RESULT: _S.COMPLETED,  # art. 6.4
    _K.DISCLOSURE_NOTICE: _S.IN_EXECUTION,  # art. 7.4
}
TRANSITIONS: Mapping[CaseState, Mapping[Kind, CaseState]] = {
    # An urgent oral request (art. 4.2): the requested Party may already act on it (that
    # is why it was made orally), but nothing leaves it in return until it is confirmed
    # in writing and signed (art. 4.4): no result, no conditions, no partial refusal.
    _S.AWAITING_CONFIRMATION: {
        _K.CONFIRM: _S.REGISTERED,
        _K.DELAY: _S.AWAITING_CONFIRMATION,
        _K.CONSULTATION: _S.AWAITING_CONFIRMATION,
        _K.REFUSAL: _S.REFUSED,
        _K.DISCLOSURE_NOTICE: _S.AWAITING_CONFIRMATION,
    },
    _S.REGISTERED: {
        _K.ACKNOWLEDGE: _S.IN_EXECUTION,  # art. 6.1
        _K.CONFIRMATION_REQUEST: _S.CONFIRMATION_REQUESTED,  # art. 4.2
        **_ACTIVE,
        _K.DELAY: _S.REGISTERED,
        _K.CONSULTATION: _S.REGISTERED,
        _K.DISCLOSURE_NOTICE: _S.REGISTERED,
    },
    _S.IN_EXECUTION: {
        _K.CONFIRMATION_REQUEST: _S.CONFIRMATION_REQUESTED,  # doubt may arise later too
        **_ACTIVE,
    },
    _S.CONFIRMATION_REQUESTED: {
        _K.CONFIRM: _S.IN_EXECUTION,
        _K.DELAY: _S.CONFIRMATION_REQUESTED,
        _K.CONSULTATION: _S.CONFIRMATION_REQUESTED,
        _K.REFUSAL: _S.REFUSED,
        _K.DISCLOSURE_NOTICE: _S.CONFIRMATION_REQUESTED,
    },
    _S.INFO_REQUESTED: {
        _K.INFORMATION: _S.IN_EXECUTION,  # art. 6.2
        _K.INFO_REQUEST: _S.INFO_REQUESTED,
        _K.DELAY: _S.INFO_REQUESTED,
        _K.CONSULTATION: _S.INFO_REQUESTED,
        _K.REFUSAL: _S.REFUSED,
        _K.DISCLOSURE_NOTICE: _S.INFO_REQUESTED,
    },
    _S.CONDITIONS_PROPOSED: {
        _K.ACCEPT_CONDITIONS: _S.IN_EXECUTION,  # art. 5.2: the requester complies
        _K.DECLINE_CONDITIONS: _S.IN_EXECUTION,  # the requested Party decides again
        _K.CONDITIONS: _S.CONDITIONS_PROPOSED,  # a revised proposal
        _K.CONSULTATION: _S.CONDITIONS_PROPOSED,
        _K.DELAY: _S.CONDITIONS_PROPOSED,
        _K.REFUSAL: _S.REFUSED,
        _K.DISCLOSURE_NOTICE: _S.CONDITIONS_PROPOSED,
    },
    _S.REFUSED: {},
    # Results obtained may be disclosed by law only after advance notice (art. 7.4).
    _S.COMPLETED: {_K.DISCLOSURE_NOTICE: _S.COMPLETED},
}
FINAL = frozenset({CaseState.REFUSED, CaseState.COMPLETED})


@dataclass(frozen=True)
class Step:
    """One transition as a Party takes it: what, by whom, when, and its written reasons."""

    kind: Kind
    side: Side
    at: datetime
    reasons: str | None = None


@dataclass(frozen=True)
class Case:
    """Where one request stands. Build with `open_case`, advance with `apply`."""

    case_id: str
    requesting: str
    requested: str
    state: CaseState
    opened: datetime
    urgent_oral: bool = False
    confirmation_due: datetime | None = None
    confirmed_at: datetime | None = None
    partially_refused: bool = False
    conditions_accepted: bool = False
    disclosure_noticed_at: datetime | None = None
    confidential_fact: bool = False
    steps: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def overdue(self, now: datetime) -> bool:
        """An urgent oral request not confirmed in writing within the window (art. 4.2).

        Stays flagged once the deadline has passed without confirmation, whatever the
        state, so that both Parties see it; a late confirmation clears the state but the
        lateness stays visible through `confirmed_late`.
        """
        return (
            self.confirmation_due is not None
            and self.confirmed_at is None
            and now >= self.confirmation_due
        )

    @property
    def confirmed_late(self) -> bool:
        return (
            self.confirmation_due is not None
            and self.confirmed_at is not None
            and self.confirmed_at >= self.confirmation_due
        )

    def side_of(self, party: str) -> Side:
        if party == self.requesting:
            return Side.REQUESTING
        if party == self.requested:
            return Side.REQUESTED
        raise WrongParty(f"{party!r} is neither Party to case {self.case_id}")

    def allowed(self, side: Side | None = None) -> tuple[Kind, ...]:
        """The steps this state allows (to `side`, when given), in a stable order."""
        return tuple(
            k for k in Kind if k in TRANSITIONS[self.state] and (side is None or side in ACTORS[k])
        )

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "requesting": self.requesting,
            "requested": self.requested,
            "state": self.state.value,
            "opened": self.opened.isoformat(),
            "urgent_oral": self.urgent_oral,
            "confirmation_due": _iso(self.confirmation_due),
            "confirmed_at": _iso(self.confirmed_at),
            "confirmed_late": self.confirmed_late,
            "overdue": self.overdue(now),
            "partially_refused": self.partially_refused,
            "conditions_accepted": self.conditions_accepted,
            "disclosure_noticed_at": _iso(self.disclosure_noticed_at),
            "confidential_fact": self.confidential_fact,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def open_case(
    case_id: str,
    *,
    requesting: str,
    requested: str,
    now: datetime,
    periods: Periods = REFERENCE_PERIODS,
    urgent_oral: bool = False,
    confidential_fact: bool = False,
) -> Case:
    """A new case for a request just made: registered when written (art. 4.2, 4.4), or
    awaiting written confirmation within the profile's window when urgent and oral."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if requesting == requested:
        raise WorkflowError("a Party does not request assistance from itself")
    return Case(
        case_id=case_id,
        requesting=requesting,
        requested=requested,
        state=CaseState.AWAITING_CONFIRMATION if urgent_oral else CaseState.REGISTERED,
        opened=now,
        urgent_oral=urgent_oral,
        confirmation_due=now + periods.confirmation_window if urgent_oral else None,
        confidential_fact=confidential_fact,
    )


def apply(case: Case, step: Step) -> Case:
    """The case after `step`, or a `WorkflowError` saying what is allowed instead.

    1. The step belongs to the side taking it (`WrongParty`).
    2. The case's state allows it (`IllegalTransition`, listing the steps allowed).
    3. A full or partial refusal carries written reasons (`ReasonsRequired`, art. 5.3).
    """
    kind, side = Kind(step.kind), Side(step.side)
    if side not in ACTORS[kind]:  # 1
        other = "requested" if side is Side.REQUESTING else "requesting"
        raise WrongParty(
            f"{kind.value} is a step of the {other} Party, not of the {side.value} Party "
            f"(case {case.case_id})"
        )
    row = TRANSITIONS[case.state]
    if kind not in row:  # 2
        allowed = case.allowed(side)
        awaited = tuple(k for k in case.allowed() if side not in ACTORS[k])
        if case.final and not allowed:
            hint = "the case is closed: nothing more can be sent on it"
        elif allowed:
            hint = "allowed now: " + ", ".join(k.value for k in allowed)
        else:
            hint = "nothing is up to the " + side.value + " Party now"
        if awaited and not case.final:
            hint += "; awaited from the other Party: " + ", ".join(k.value for k in awaited)
        raise IllegalTransition(
            f"case {case.case_id} is {case.state.value}: {kind.value} is not allowed ({hint})",
            state=case.state,
            kind=kind,
            allowed=allowed,
        )
    if kind in REASONED and not (step.reasons or "").strip():  # 3
        raise ReasonsRequired(
            f"a {kind.value} must state its reasons in writing (agreement art. 5.3): "
            "add --reasons TEXT"
        )
    changes: dict[str, Any] = {"state": row[kind], "steps": case.steps + 1}
    if kind is Kind.CONFIRM and case.confirmed_at is None and case.urgent_oral:
        changes["confirmed_at"] = step.at
    if kind is Kind.PARTIAL_REFUSAL:
        changes["partially_refused"] = True
    if kind is Kind.ACCEPT_CONDITIONS:
        changes["conditions_accepted"] = True
    if kind is Kind.DISCLOSURE_NOTICE and case.disclosure_noticed_at is None:
        changes["disclosure_noticed_at"] = step.at
    return replace(case, **changes)


def check_transfer(case: Case, side: Side, *, confidential: bool, unsafe_override: bool) -> None:
    """Art. 7.4: after the requesting Party's advance notice that it must use or disclose
    the results by law, the requested Party may refuse to transfer confidential
    information on that case. The node holds such a transfer back unless the sender
    decides, explicitly, to send it anyway (`unsafe_override`, recorded by the caller)."""
    if (
        side is Side.REQUESTED
        and confidential
        and case.disclosure_noticed_at is not None
        and not unsafe_override
    ):
        raise TransferWithheld(
            f"the requesting Party {case.requesting} gave advance notice of disclosure "
            f"required by its law on case {case.case_id} (agreement art. 7.4): confidential "
            "information is held back. Send it at OFFICIAL level, refuse with --reasons, "
            "or decide to send anyway with --despite-disclosure"
        )


REQUEST_FIELDS = (
    ("essence", "--essence", "the essence of the case"),
    ("justification", "--justification", "the purpose and justification of the request"),
    ("assistance", "--assistance", "the content of the requested assistance"),
)


@dataclass(frozen=True)
class RequestFields:
    """The content of a request (art. 4.3), parsed: every required field is present."""

    requesting_party: str
    requested_party: str
    essence: str
    justification: str
    assistance: str
    other: str

    @classmethod
    def parse(cls, fields: Any, *, requesting: str, requested: str) -> RequestFields:
        """Parse the fields of a request from `requesting` to `requested`; raise
        `RequestFieldsMissing` naming what is missing or inconsistent."""
        if not isinstance(fields, Mapping):
            raise RequestFieldsMissing("a request's fields are an object (art. 4.3)")
        missing = [
            option
            for key, option, _what in REQUEST_FIELDS
            if not isinstance(fields.get(key), str) or not fields[key].strip()
        ]
        if missing:
            raise RequestFieldsMissing(
                f"a request must state {', '.join(missing)} (agreement art. 4.3). Add them, "
                "or send it with --type notice"
            )
        other = fields.get("other", "")
        if not isinstance(other, str):
            raise RequestFieldsMissing("--other must be text")
        for key, expected in (("requesting_party", requesting), ("requested_party", requested)):
            given = fields.get(key, expected)
            if given != expected:
                raise RequestFieldsMissing(
                    f"the request names {given!r} as {key.replace('_', ' ')}, but it is "
                    f"{expected!r} (art. 4.3)"
                )
        return cls(
            requesting_party=requesting,
            requested_party=requested,
            essence=fields["essence"],
            justification=fields["justification"],
            assistance=fields["assistance"],
            other=other,
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "requesting_party": self.requesting_party,
            "requested_party": self.requested_party,
            "essence": self.essence,
            "justification": self.justification,
            "assistance": self.assistance,
            "other": self.other,
        }
