"""Confidentiality markings of the default profile (agreement art. 7.1, 7.5).

The transmitting Party sets the marking; the signature binds it. Levels are ordered, lowest
first. Levels at or above the profile's ceiling are state secrets (art. 7.5): the gateway
refuses to carry them at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["DEFAULT_SCHEME", "Label", "LabelModel", "Marking", "MarkingError", "MarkingScheme"]


class MarkingError(ValueError):
    """A marking the profile does not allow; the message says what would be accepted."""


@dataclass(frozen=True)
class MarkingScheme:
    levels: tuple[str, ...]
    refused: tuple[str, ...]
    caveats: tuple[str, ...]
    name: str = "accord-default"

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

    def parse_for_sending(self, data: Any) -> Marking:
        """A marking a sender may set: in the scheme, and never a refused (state-secret)
        level (art. 7.5): the error says where such material goes instead."""
        if isinstance(data, Mapping) and isinstance(data.get("level"), str):
            level = data["level"]
            if level.upper() in self.refused or level in self.refused:
                raise MarkingError(self._unknown(level.upper()))
        return self.parse(data)


@dataclass(frozen=True)
class Marking:
    level: str
    caveats: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "caveats": list(self.caveats)}


@dataclass(frozen=True)
class LabelModel:
    """How a profile turns a marking into a STANAG 4774-style confidentiality label: the
    security policy identifier, the privacy mark, and which caveats are restrictive or
    permissive categories."""

    policy_id: str
    privacy_mark: str
    categories: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any, scheme: MarkingScheme) -> LabelModel:
        if not isinstance(data, Mapping):
            raise MarkingError("markings.label must be a table")
        policy_id = data.get("policy_id", f"urn:accord:policy:{scheme.name}")
        privacy_mark = data.get("privacy_mark", "")
        categories = data.get("categories", {})
        if not isinstance(policy_id, str) or not policy_id:
            raise MarkingError("markings.label.policy_id must be a non-empty string")
        if not isinstance(privacy_mark, str):
            raise MarkingError("markings.label.privacy_mark must be a string")
        if not isinstance(categories, Mapping):
            raise MarkingError("markings.label.categories must be a table")
        for caveat, kind in categories.items():
            if caveat not in scheme.caveats:
                raise MarkingError(f"markings.label.categories names an unknown caveat {caveat!r}")
            if kind not in ("restrictive", "permissive", "informative"):
                raise MarkingError(
                    f"markings.label.categories.{caveat} must be restrictive, permissive or "
                    "informative"
                )
        return cls(policy_id, privacy_mark, dict(categories))

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_id": self.policy_id,
            "privacy_mark": self.privacy_mark,
            "categories": dict(sorted(self.categories.items())),
        }

    def label(self, marking: Marking, *, originator: str, created: datetime) -> Label:
        categories = tuple((self.categories.get(c, "restrictive"), c) for c in marking.caveats)
        return Label(
            policy_id=self.policy_id,
            classification=marking.level,
            privacy_mark=self.privacy_mark,
            categories=categories,
            originator=originator,
            created=created,
        )


@dataclass(frozen=True)
class Label:
    """A STANAG 4774-style confidentiality label (policy id, classification, privacy mark,
    categories, originator, creation time), derived from a signed marking; a view for other
    systems, never a second source of truth."""

    policy_id: str
    classification: str
    privacy_mark: str
    categories: tuple[tuple[str, str], ...]
    originator: str
    created: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy_identifier": self.policy_id,
            "classification": self.classification,
            "privacy_mark": self.privacy_mark,
            "categories": [{"type": t, "tag_name": n} for t, n in self.categories],
            "originator_id": self.originator,
            "creation_datetime": self.created.isoformat(),
        }


DEFAULT_SCHEME = MarkingScheme(
    levels=("OFFICIAL", "RESTRICTED", "CONFIDENTIAL"),
    refused=("SECRET", "TOP SECRET", "TOP_SECRET", "TOP-SECRET"),
    caveats=("ORCON", "PURPOSE-BOUND", "CONFIDENTIAL-FACT"),
)
