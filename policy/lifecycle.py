"""The agreement's lifecycle with one peer (art. 13), as a pure function of time.

Art. 13.1: the agreement acts until 6 months (the profile's `termination_notice`) have
passed from the date one Party *received* the other's written notice of its intention to
terminate. Art. 13.2: the provisions of art. 7 (confidentiality, purpose, consent, advance
notice of disclosure) stay in effect for 5 years (`survival_period`) after termination.

Invariants:
- Time comes in as `now`; the receipt time of the notice comes from the caller (the
  receiving node's record of it, or the signed receipt the notifying node got back).
- A notice not yet received does not start the period: the agreement stays in force.
- Of several notices the earliest received one counts (the period cannot be restarted).
- Nothing here relaxes a duty early: `article7_in_force` is true from signature until
  the survival period has fully run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from .workflow import REFERENCE_PERIODS, Periods, WorkflowError

__all__ = ["AgreementPhase", "AgreementTerminated", "Lifecycle"]


class AgreementTerminated(WorkflowError):
    """A new request after the agreement ended (art. 13.1)."""


class AgreementPhase(StrEnum):
    IN_FORCE = "in-force"
    NOTICE_GIVEN = "notice-given"  # terminating: the notice period runs
    TERMINATED = "terminated"  # art. 7 duties survive (art. 13.2)
    EXPIRED = "expired"  # the survival period has run as well


@dataclass(frozen=True)
class Lifecycle:
    """The agreement with `peer`, given when a termination notice was received (if ever)."""

    peer: str
    notice_received: datetime | None = None
    periods: Periods = REFERENCE_PERIODS

    @classmethod
    def from_notices(
        cls, peer: str, received: Iterable[datetime | None], periods: Periods = REFERENCE_PERIODS
    ) -> Lifecycle:
        times = [t for t in received if t is not None]
        return cls(peer, min(times) if times else None, periods)

    @property
    def terminates_at(self) -> datetime | None:
        if self.notice_received is None:
            return None
        return self.notice_received + self.periods.termination_notice

    @property
    def duties_end_at(self) -> datetime | None:
        end = self.terminates_at
        return None if end is None else end + self.periods.survival_period

    def phase(self, now: datetime) -> AgreementPhase:
        end, duties = self.terminates_at, self.duties_end_at
        if end is None or duties is None:
            return AgreementPhase.IN_FORCE
        if now < end:
            return AgreementPhase.NOTICE_GIVEN
        if now < duties:
            return AgreementPhase.TERMINATED
        return AgreementPhase.EXPIRED

    def in_force(self, now: datetime) -> bool:
        return self.phase(now) in (AgreementPhase.IN_FORCE, AgreementPhase.NOTICE_GIVEN)

    def article7_in_force(self, now: datetime) -> bool:
        """Art. 7 duties bind while the agreement acts and for the survival period after."""
        return self.phase(now) is not AgreementPhase.EXPIRED

    def check_new_request(self, now: datetime) -> None:
        """Raise `AgreementTerminated` once the notice period has run (art. 13.1)."""
        if not self.in_force(now):
            raise AgreementTerminated(
                f"the agreement with {self.peer} ended on "
                f"{self.terminates_at:%Y-%m-%d} (art. 13.1: six months after the notice of "
                "termination was received): no new requests are accepted. Art. 7 duties "
                "still apply to what was exchanged"
            )

    def to_dict(self, now: datetime) -> dict[str, Any]:
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "peer": self.peer,
            "phase": self.phase(now).value,
            "notice_received": iso(self.notice_received),
            "terminates_at": iso(self.terminates_at),
            "article7_until": iso(self.duties_end_at),
            "accepts_new_requests": self.in_force(now),
        }
