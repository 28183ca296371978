"""Small parsers shared by the statement types: times, digests, identifiers.

Every parser raises `VerificationError`, so a malformed field of a signed statement is
reported like any other failure to verify.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from .errors import VerificationError

# Matched with `fullmatch`: `$` would also match before a final newline, letting
# "МВД-РБ\n" pass as a party id and a digest carry a 65th character.
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Identifiers (message ids, party ids) are printable and short; Cyrillic is allowed in
# party ids because profiles name Parties in the working language (art. 9).
_IDENT = re.compile(r"[^\x00-\x20\x7f/\\]{1,128}")


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC at whole seconds: the one textual form of a time in statements."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    # isoformat is the fast C formatter (and pads the year to four digits, as RFC 3339
    # requires); "+00:00" becomes "Z", and timespec drops the fraction of a second.
    return moment.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def is_version(value: Any, expected: int) -> bool:
    """Whether a statement's "v" is the integer `expected`: JSON `true` is not version 1,
    although True == 1 in Python (it would be a second byte form of one statement)."""
    return type(value) is int and value == expected


def parse_time(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise VerificationError(f"{field} must be a UTC time like 2026-01-31T12:00:00Z")
    try:
        # The pattern above fixes the form; fromisoformat is the fast, strict C parser, and
        # reads the final "Z" as UTC (Python 3.11).
        return datetime.fromisoformat(value)
    except ValueError as e:
        raise VerificationError(f"{field} is not a valid time") from e


def parse_hex64(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise VerificationError(f"{field} must be 64 lowercase hex digits")
    return value


def parse_ident(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise VerificationError(f"{field} must be a printable identifier of 1 to 128 characters")
    return value


def parse_text(value: Any, field: str, *, max_len: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > max_len:
        raise VerificationError(f"{field} must be text of at most {max_len} characters")
    return value


def parse_int(value: Any, field: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VerificationError(f"{field} must be a non-negative integer")
    return value


def require_keys(data: Any, required: set[str], optional: set[str], what: str) -> dict[str, Any]:
    """`data` must be an object with all `required` keys and nothing outside both sets."""
    if not isinstance(data, dict):
        raise VerificationError(f"{what} must be a JSON object")
    keys = set(data)
    if missing := required - keys:
        raise VerificationError(f"{what} lacks {', '.join(sorted(missing))}")
    if unknown := keys - required - optional:
        raise VerificationError(f"{what} has unknown field(s) {', '.join(sorted(unknown))}")
    return data
