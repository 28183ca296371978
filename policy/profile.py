"""The agreement profile: the parts of a bilateral agreement that the gateway enforces.

A profile is a TOML file (`deploy/profiles/`); the reference agreement's is the default.
It names the Parties and their coordinating subdivisions (art. 10), the working language
(art. 9), the marking scheme and the level from which the gateway refuses to carry
anything (art. 7.1, 7.5), the written-confirmation window of urgent oral requests
(art. 4.2), the termination notice period (art. 13.1), the survival of the art. 7 duties
(art. 13.2), whether a consent token also needs a signatory (art. 7.3), and who signs a
re-marking (art. 7.1): a signatory, and a second one for a downgrade where the profile
says so (`[remarking]`, see policy/authority.py).

Invariants:
- `Profile.parse` returns a fully checked, typed profile or raises one `ProfileError` that
  names the field; no other code reads the TOML.
- `Profile.digest` is the SHA-256 of the canonical JSON (RFC 8785) of the parsed profile,
  so two nodes agree on it whatever the file's comments, layout or key order; both nodes
  of a pair must hold the same digest to talk at all.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from accord.crypto import canonical_json

from .markings import LabelModel, MarkingScheme

__all__ = [
    "DEFAULT_PROFILE_PATH",
    "Duration",
    "Party",
    "Profile",
    "ProfileError",
    "default_profile",
    "load_profile",
    "profile_or_default",
]

# The shipped profiles (the repository's deploy/profiles) are the package data of
# `accord.profiles`, so an installed wheel finds them wherever it is installed.
DEFAULT_PROFILE_PATH = Path(str(resources.files("accord.profiles").joinpath("reference.toml")))
PROFILES_DIR = DEFAULT_PROFILE_PATH.parent
_MEAN_DAYS_PER_YEAR = 365.2425  # the Gregorian calendar's
_DURATION_UNITS = ("years", "months", "days")


class ProfileError(ValueError):
    """A profile file is unusable; the message names the field and what would be accepted."""


@dataclass(frozen=True)
class Duration:
    """A calendar duration (years, months, days), as the agreement states its periods."""

    years: int = 0
    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, data: Any, what: str) -> Duration:
        if not isinstance(data, Mapping) or not data:
            raise ProfileError(f"{what} must be a table such as {{ days = 3 }} or {{ months = 6 }}")
        unknown = set(data) - set(_DURATION_UNITS)
        if unknown:
            raise ProfileError(
                f"{what}: unknown unit(s) {sorted(unknown)}: use years, months, days"
            )
        values = {k: data.get(k, 0) for k in _DURATION_UNITS}
        for unit, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ProfileError(f"{what}.{unit} must be a whole number >= 0")
        duration = cls(**values)
        if duration.approximate <= timedelta(0):
            raise ProfileError(f"{what} must be longer than zero")
        return duration

    def after(self, start: datetime) -> datetime:
        """The exact calendar instant this long after `start` (a month after 31 January is
        the last day of February)."""
        months = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + months // 12, months % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    @property
    def approximate(self) -> timedelta:
        """The duration in whole days, counting mean Gregorian months and years (6 months
        = 183 days, 5 years = 1826 days); `after` is exact and is what deadlines use."""
        days = self.days + (self.years + self.months / 12) * _MEAN_DAYS_PER_YEAR
        return timedelta(days=round(days))

    def to_dict(self) -> dict[str, int]:
        return {"years": self.years, "months": self.months, "days": self.days}


@dataclass(frozen=True)
class Party:
    """A Party and its designated coordinating subdivisions (art. 10)."""

    id: str
    name: str
    subdivisions: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "subdivisions": list(self.subdivisions)}


@dataclass(frozen=True)
class Profile:
    """One agreement, parsed. Build it with `parse`, `load_profile` or `default_profile`."""

    id: str
    title: str
    working_language: str
    parties: tuple[Party, ...]
    scheme: MarkingScheme
    label: LabelModel
    confirmation: Duration
    termination: Duration
    survival: Duration
    consent_signatory_required: bool
    consent_max_validity: Duration
    # Art. 7.1 with 4.4: a re-marking is also signed by a signatory; a downgrade by this
    # many different signatories (2: a second person confirms it).
    remark_signatory_required: bool = False
    downgrade_signatories: int = 1

    # -- The typed periods the workflow reads ---------------------------------------------

    @property
    def confirmation_window(self) -> timedelta:
        """Art. 4.2: an urgent oral request is confirmed in writing within this window."""
        return self.confirmation.approximate

    @property
    def termination_notice(self) -> timedelta:
        """Art. 13.1: termination takes effect this long after the notice is received."""
        return self.termination.approximate

    @property
    def survival_period(self) -> timedelta:
        """Art. 13.2: the art. 7 duties keep applying this long after termination."""
        return self.survival.approximate

    @property
    def consent_max_period(self) -> timedelta:
        return self.consent_max_validity.approximate

    @property
    def ceiling(self) -> str | None:
        """The lowest level the gateway refuses to carry (art. 7.5), if the scheme names one."""
        return self.scheme.refused[0] if self.scheme.refused else None

    def party(self, party_id: str) -> Party:
        for p in self.parties:
            if p.id == party_id:
                return p
        raise ProfileError(
            f"{party_id!r} is not a Party of the agreement {self.id}: the Parties are "
            f"{', '.join(p.id for p in self.parties)}"
        )

    def is_party(self, party_id: str) -> bool:
        return any(p.id == party_id for p in self.parties)

    # -- Identity ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": 1,
            "id": self.id,
            "title": self.title,
            "working_language": self.working_language,
            "parties": [p.to_dict() for p in self.parties],
            "markings": {
                "scheme": self.scheme.name,
                "levels": list(self.scheme.levels),
                "refused": list(self.scheme.refused),
                "caveats": list(self.scheme.caveats),
                "label": self.label.to_dict(),
            },
            "periods": {
                "confirmation_window": self.confirmation.to_dict(),
                "termination_notice": self.termination.to_dict(),
                "survival_period": self.survival.to_dict(),
            },
            "consent": {
                "signatory_required": self.consent_signatory_required,
                "max_validity": self.consent_max_validity.to_dict(),
            },
            "remarking": {
                "signatory_required": self.remark_signatory_required,
                "downgrade_signatories": self.downgrade_signatories,
            },
        }

    @cached_property
    def digest(self) -> str:
        """SHA-256 hex of the profile's canonical JSON: what two nodes compare."""
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

    # -- Parsing ----------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, where: str = "profile") -> Profile:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ProfileError(f"{where} is not valid TOML: {e}") from e
        try:
            return cls._from_dict(data)
        except ProfileError as e:
            raise ProfileError(f"{where}: {e}") from e

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any]) -> Profile:
        head = _table(data, "profile")
        parties = data.get("parties")
        if not isinstance(parties, list) or len(parties) < 2:
            raise ProfileError("[[parties]] must name at least the two Parties of the agreement")
        parsed = tuple(_party(p, i) for i, p in enumerate(parties))
        ids = [p.id for p in parsed]
        if len(set(ids)) != len(ids):
            raise ProfileError("each Party id must appear once in [[parties]]")
        markings = _table(data, "markings")
        scheme = MarkingScheme(
            levels=_strings(markings, "levels", "markings", nonempty=True),
            refused=_strings(markings, "refused", "markings"),
            caveats=_strings(markings, "caveats", "markings"),
            name=_text(markings, "scheme", "markings"),
        )
        if set(scheme.levels) & {r.upper() for r in scheme.refused}:
            raise ProfileError("markings: a level cannot be both carried and refused")
        label = LabelModel.parse(markings.get("label", {}), scheme)
        periods = _table(data, "periods")
        consent = _table(data, "consent")
        required = consent.get("signatory_required", False)
        if not isinstance(required, bool):
            raise ProfileError("consent.signatory_required must be true or false")
        remarking = data.get("remarking", {})
        if not isinstance(remarking, Mapping):
            raise ProfileError("[remarking] must be a table")
        unknown = set(remarking) - {"signatory_required", "downgrade_signatories"}
        if unknown:
            raise ProfileError(
                f"remarking: unknown key(s) {sorted(unknown)}: use signatory_required, "
                "downgrade_signatories"
            )
        remark_signatory = remarking.get("signatory_required", False)
        if not isinstance(remark_signatory, bool):
            raise ProfileError("remarking.signatory_required must be true or false")
        downgrade = remarking.get("downgrade_signatories", 1)
        if not isinstance(downgrade, int) or isinstance(downgrade, bool) or not 1 <= downgrade <= 2:
            raise ProfileError("remarking.downgrade_signatories must be 1 or 2")
        if downgrade > 1 and not remark_signatory:
            raise ProfileError(
                "remarking.downgrade_signatories = 2 needs remarking.signatory_required = true"
            )
        return cls(
            id=_text(head, "id", "profile"),
            title=_text(head, "title", "profile"),
            working_language=_text(head, "working_language", "profile"),
            parties=parsed,
            scheme=scheme,
            label=label,
            confirmation=Duration.parse(
                periods.get("confirmation_window"), "periods.confirmation_window"
            ),
            termination=Duration.parse(
                periods.get("termination_notice"), "periods.termination_notice"
            ),
            survival=Duration.parse(periods.get("survival_period"), "periods.survival_period"),
            consent_signatory_required=required,
            consent_max_validity=Duration.parse(
                consent.get("max_validity", {"days": 365}), "consent.max_validity"
            ),
            remark_signatory_required=remark_signatory,
            downgrade_signatories=downgrade,
        )


def load_profile(path: Path) -> Profile:
    """Read and parse a profile file; a missing or bad file is a `ProfileError`."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ProfileError(f"cannot read the profile {path}: {e}. Check the path") from e
    return Profile.parse(text, str(path))


def profile_or_default(path: Path) -> Profile:
    """The profile at `path` (a node home's copy), or the reference one if there is none."""
    return load_profile(path) if path.exists() else default_profile()


@functools.cache
def default_profile() -> Profile:
    """The reference agreement's profile (deploy/profiles/reference.toml), read once."""
    return load_profile(DEFAULT_PROFILE_PATH)


def _table(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, Mapping):
        raise ProfileError(f"the [{key}] table is missing")
    return value


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ProfileError(f"{where}.{key} must be a non-empty string")
    return value


def _strings(
    data: Mapping[str, Any], key: str, where: str, *, nonempty: bool = False
) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ProfileError(f"{where}.{key} must be a list of non-empty strings")
    if nonempty and not value:
        raise ProfileError(f"{where}.{key} must not be empty")
    if len(set(value)) != len(value):
        raise ProfileError(f"{where}.{key} lists a value twice")
    return tuple(value)


def _party(data: Any, index: int) -> Party:
    where = f"parties[{index}]"
    if not isinstance(data, Mapping):
        raise ProfileError(f"{where} must be a table")
    subdivisions = _strings(data, "subdivisions", where, nonempty=True)
    return Party(_text(data, "id", where), _text(data, "name", where), subdivisions)
