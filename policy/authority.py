"""Who may change a marking or consent, and which marking governs (agreement art. 4.4,
7.1, 7.3; DESIGN guarantee 4).

Authority over a message's marking and over consents to pass it on belongs to the
originating Party, exercised by a person cleared at or above the message's *current*
marking (and the new one), signed by a signatory (head or deputy) where the profile says
so; a profile may ask a second, different signatory to confirm a downgrade.

Each rule is a small policy object with one `check(request)` that raises `PolicyDenied`
(STYLE "policies are small objects"); `AllOf` combines them and refuses to be empty. The
same rules run on the originator's node (for its local user) and on every peer that
receives the signed result (for the signatures it carries): the facts they read are in
`AuthorityRequest`, which either side fills from what it verified.

Invariants:
- Nothing here reads a database or speaks HTTP; markings arrive parsed by the profile's
  scheme, signatures arrive as the key ids that verified under keys usable now (a
  revoked or expired key is not in them).
- The governing marking is folded from signed facts only (`governing`): the originator's
  signed statement, then its verified re-markings in signed order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .markings import Marking, MarkingScheme

__all__ = [
    "Action",
    "AllOf",
    "AuthorityRequest",
    "ClearedForCurrentMarking",
    "DowngradeSignatories",
    "OriginatorOnly",
    "PolicyDenied",
    "SignedBySignatory",
    "authority_policy",
    "governing",
    "is_downgrade",
    "stricter",
]


class PolicyDenied(Exception):
    """The agreement does not allow this action; the message says why and what to do."""


class Action(StrEnum):
    CONSENT = "consent"
    REVOKE = "revoke"
    REMARK = "remark"
    REQUEST = "request"


@dataclass(frozen=True)
class AuthorityRequest:
    """The facts an authority decision reads.

    `party` is the node deciding; `originator` the Party that sent the message; `current`
    the governing marking (signed statement and signed re-markings); `new` the marking a
    re-marking sets; `clearance` the acting person's (None when a peer checks signed
    facts: the person is the originator's to check); `signatories` the distinct
    signatory key ids whose signatures verified under keys usable now."""

    action: Action
    party: str
    originator: str
    current: Marking
    new: Marking | None = None
    clearance: str | None = None
    signatories: frozenset[str] = field(default_factory=frozenset)


class Policy:
    def check(self, request: AuthorityRequest) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class AllOf(Policy):
    """Every policy must pass; an empty all-of is an error, never a pass."""

    policies: Sequence[Policy]

    def __post_init__(self) -> None:
        if not self.policies:
            raise ValueError("an empty AllOf would allow everything")

    def check(self, request: AuthorityRequest) -> None:
        for policy in self.policies:
            policy.check(request)


@dataclass(frozen=True)
class OriginatorOnly(Policy):
    """Art. 7.1, 7.3: only the Party that provided the information changes its marking,
    consents to passing it on or withdraws that consent."""

    def check(self, request: AuthorityRequest) -> None:
        if request.action is Action.REQUEST:
            if request.originator == request.party:
                raise PolicyDenied("the originator needs no consent for its own information")
            return
        if request.originator != request.party:
            raise PolicyDenied(
                f"only the originator ({request.originator}) can "
                f"{_verb(request.action)} (art. 7.1, 7.3): ask it with `accord consent request`"
            )


@dataclass(frozen=True)
class ClearedForCurrentMarking(Policy):
    """The acting person is cleared at or above the message's current marking, and at or
    above the new one: a person who may not read a message decides nothing about it."""

    scheme: MarkingScheme

    def check(self, request: AuthorityRequest) -> None:
        if request.clearance is None:
            return
        for marking, which in ((request.current, "current"), (request.new, "new")):
            if marking is None:
                continue
            if not _cleared(self.scheme, request.clearance, marking):
                raise PolicyDenied(
                    f"your clearance {request.clearance} is below the message's {which} "
                    f"marking {marking.level}: only a person cleared for it may "
                    f"{_verb(request.action)}"
                )


@dataclass(frozen=True)
class SignedBySignatory(Policy):
    """Art. 4.4 as the profile applies it: the act is also signed by a signatory (head or
    deputy) whose key is usable now."""

    required: bool

    def check(self, request: AuthorityRequest) -> None:
        if self.required and not request.signatories:
            raise PolicyDenied(
                f"the agreement profile requires a signatory (head or deputy) to "
                f"{_verb(request.action)}, with a signing key that is neither revoked nor "
                "expired: act as a signatory with ACCORD_SIGNATORY_PASSPHRASE (--sign)"
            )


@dataclass(frozen=True)
class DowngradeSignatories(Policy):
    """A re-marking that lowers the level or drops a caveat is signed by at least `count`
    different signatories (the profile's four-eyes option)."""

    scheme: MarkingScheme
    count: int

    def check(self, request: AuthorityRequest) -> None:
        if request.action is not Action.REMARK or request.new is None or self.count <= 1:
            return
        if is_downgrade(self.scheme, request.current, request.new) and (
            len(request.signatories) < self.count
        ):
            raise PolicyDenied(
                f"lowering a marking needs {self.count} different signatories; it has "
                f"{len(request.signatories)}: a second signatory confirms it by running the "
                "same `accord remark` with --sign"
            )


def authority_policy(
    action: Action,
    scheme: MarkingScheme,
    *,
    signatory_required: bool,
    downgrade_signatories: int = 1,
) -> AllOf:
    """The whole rule for one action, as the profile sets it. A revocation only narrows
    what others may do, so it never waits for a signatory (it is never harder to withdraw
    a consent than to give it); a consent request is the holder's, not the originator's."""
    policies: list[Policy] = [OriginatorOnly(), ClearedForCurrentMarking(scheme)]
    if action in (Action.CONSENT, Action.REMARK):
        policies.append(SignedBySignatory(signatory_required))
    if action is Action.REMARK:
        policies.append(DowngradeSignatories(scheme, downgrade_signatories))
    return AllOf(policies)


def is_downgrade(scheme: MarkingScheme, current: Marking, new: Marking) -> bool:
    """A lower level, or a caveat dropped."""
    return scheme.rank(new.level) < scheme.rank(current.level) or bool(
        set(current.caveats) - set(new.caveats)
    )


def stricter(scheme: MarkingScheme, a: Marking, b: Marking) -> Marking:
    """The higher level of the two and the caveats of both: a second copy of a marking
    (a database column) can only ever restrict, never open."""
    level = a.level if scheme.rank(a.level) >= scheme.rank(b.level) else b.level
    return Marking(level, tuple(sorted(set(a.caveats) | set(b.caveats))))


def governing(signed: Marking, remarks: Iterable[tuple[datetime, str, Marking]]) -> Marking:
    """The marking that governs: the originator's signed one, replaced by each verified
    re-marking (signed creation time, message id, new marking) in signed order."""
    current = signed
    for _created, _message_id, marking in sorted(remarks, key=lambda r: (r[0], r[1])):
        current = marking
    return current


def _cleared(scheme: MarkingScheme, clearance: str, marking: Marking) -> bool:
    try:
        return scheme.may_read(clearance, marking)
    except ValueError:
        return False


def _verb(action: Action) -> str:
    return {
        Action.CONSENT: "consent to passing the message on",
        Action.REVOKE: "withdraw a consent",
        Action.REMARK: "change the message's marking",
        Action.REQUEST: "ask for a consent",
    }[action]
