"""Column types that behave the same on SQLite and PostgreSQL.

Invariants:
- `UTCDateTime` accepts only timezone-aware datetimes and always returns aware UTC ones.
  PostgreSQL stores `timestamptz`; SQLite stores the naive UTC wall time as text in a
  fixed-width format, so that text order is time order on both databases.
- `EnumText` stores the value of a `StrEnum` as plain text (no database ENUM type, so a
  new status needs no migration). It refuses values outside the enum when binding
  (`InvalidValue`) and when reading (`SchemaMismatch`: a newer release wrote the row).
- `JSON_DOCUMENT` is `jsonb` on PostgreSQL and JSON text on SQLite. It holds documents
  the node only reads back (markings, event details, public keys), never bytes a
  signature covers: those are stored verbatim as bytes or text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from ._errors import InvalidValue, SchemaMismatch

__all__ = [
    "JSON_DOCUMENT",
    "EnumText",
    "UTCDateTime",
    "as_enum",
    "check_sha256",
    "require_aware",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

E = TypeVar("E", bound=StrEnum)

JSON_DOCUMENT: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def check_sha256(digest: str, what: str = "digest") -> str:
    """Return `digest` if it is 64 lowercase hex characters, else raise `InvalidValue`."""
    if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
        raise InvalidValue(f"{what} must be a SHA-256 digest in 64 lowercase hex characters")
    return digest


def as_enum(enum_class: type[E], value: E | str) -> E:
    """`value` as a member of `enum_class`, or `InvalidValue`."""
    try:
        return enum_class(value)
    except ValueError as e:
        raise InvalidValue(f"{value!r} is not a valid {enum_class.__name__}") from e


def require_aware(value: datetime, what: str = "timestamp") -> datetime:
    """Return `value` in UTC, refusing naive datetimes (their zone is a guess)."""
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise InvalidValue(f"{what} must be a timezone-aware datetime")
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp (see the module invariants)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = require_aware(value)
        if dialect.name == "sqlite":
            # SQLite has no time zones: store the UTC wall time.
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EnumText(TypeDecorator[E]):
    """The value of a `StrEnum`, stored as text of at most `length` characters."""

    impl = String
    cache_ok = True

    def __init__(self, enum_class: type[E], length: int = 16) -> None:
        super().__init__(length)
        # Named after the constructor argument so that SQLAlchemy's statement cache key
        # tells two enums apart.
        self.enum_class = enum_class
        self.length = length

    def process_bind_param(self, value: E | str | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return as_enum(self.enum_class, value).value

    def process_result_value(self, value: str | None, dialect: Dialect) -> E | None:
        if value is None:
            return None
        try:
            return self.enum_class(value)
        except ValueError as e:
            raise SchemaMismatch(
                f"unknown {self.enum_class.__name__} {value!r} in the database"
                " (written by a newer release?)"
            ) from e
