"""Confidentiality markings of the default profile (agreement art. 7.1, 7.5).

The transmitting Party sets the marking; the signature binds it. Levels are ordered, lowest
first. Levels at or above the profile's ceiling are state secrets (art. 7.5): the gateway
refuses to carry them at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_SCHEME", "Marking", "MarkingError", "MarkingScheme"]


class MarkingError(ValueError):
    """A marking the profile does not allow; the message says what would be accepted."""


@dataclass(frozen=True)
class MarkingScheme:
    levels: tuple[str, ...]
    refused: tuple[str, ...]
    caveats: tuple[str, ...]

    def rank(self, level: str) -> int:
        try:
            return self.levels.index(level)
        except ValueError as e:
            raise MarkingError(self._unknown(level)) from e

    def _unknown(self, level: str) -> str:
        if level.upper() in self.refused:
            return (
                f"{level} is a state-secret level (agreement art. 7.5): it is transferred under "
                "the separate state-secrets agreements, never through this gateway"
            )
        return f"unknown marking level {level!r}: use one of {', '.join(self.levels)}"

    def parse(self, data: Any) -> Marking:
        if not isinstance(data, Mapping):
            raise MarkingError("a marking is an object with a level and caveats")
        level = data.get("level")
        caveats = data.get("caveats", [])
        if not isinstance(level, str):
            raise MarkingError("a marking needs a level")
        self.rank(level)
        if not isinstance(caveats, Sequence) or isinstance(caveats, str):
            raise MarkingError("caveats must be a list")
        for c in caveats:
            if c not in self.caveats:
                raise MarkingError(f"unknown caveat {c!r}: use any of {', '.join(self.caveats)}")
        return Marking(level, tuple(sorted(set(caveats))))

    def may_read(self, clearance: str, marking: Marking) -> bool:
        return self.rank(clearance) >= self.rank(marking.level)


@dataclass(frozen=True)
class Marking:
    level: str
    caveats: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "caveats": list(self.caveats)}


DEFAULT_SCHEME = MarkingScheme(
    levels=("OFFICIAL", "RESTRICTED", "CONFIDENTIAL"),
    refused=("SECRET", "TOP SECRET", "TOP_SECRET", "TOP-SECRET"),
    caveats=("ORCON", "PURPOSE-BOUND", "CONFIDENTIAL-FACT"),
)
