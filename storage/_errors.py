"""The storage errors, grouped by who must act.

Invariants:
- Every failure that leaves `storage` is a `StorageError`; exceptions of SQLAlchemy, the
  database drivers, alembic and the file system are funnelled into one of the subclasses
  below with `raise ... from e`, so the cause stays in the traceback and the log.
- The caller must act on `InvalidValue`, `NotFound` and `Conflict` (and its subclasses);
  the operator (or time) must act on `StorageUnavailable` and `SchemaMismatch`; the data
  itself is wrong on `DigestMismatch`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import exc as sa_exc

__all__ = [
    "Conflict",
    "DigestMismatch",
    "DuplicateError",
    "InvalidValue",
    "LeaseLost",
    "NotFound",
    "ReplayedMessage",
    "SchemaMismatch",
    "StorageError",
    "StorageUnavailable",
    "funnel",
]


class StorageError(Exception):
    """The root of every error raised by `storage`."""


class InvalidValue(StorageError, ValueError):
    """The caller passed a malformed value (a digest that is not 64 lowercase hex, a naive
    datetime, private key material where only public material belongs, ...) or misused
    the API (a write in a read-only session)."""


class NotFound(StorageError, LookupError):
    """The record or blob the caller asked for does not exist."""


class Conflict(StorageError):
    """The write clashes with what is already stored (a constraint of the schema)."""


class DuplicateError(Conflict):
    """A record with the same identity already exists."""


class ReplayedMessage(DuplicateError):
    """The (sender, message id) of an incoming message was already recorded.

    It carries the digest of the envelope seen first, so the caller can tell an honest
    redelivery (same digest: answer with the original receipt, `get_receipt`) from a
    replay of the identifier with other content.
    """

    def __init__(
        self, *, sender: str, message_id: str, envelope_sha256: str, seen_at: datetime
    ) -> None:
        super().__init__(f"message {message_id!r} from {sender!r} was already received")
        self.sender = sender
        self.message_id = message_id
        self.envelope_sha256 = envelope_sha256
        self.seen_at = seen_at


class LeaseLost(Conflict):
    """The outbox row is no longer leased by this owner (its lease expired and another
    worker took it, or it was already completed)."""


class DigestMismatch(StorageError):
    """Bytes do not hash to the SHA-256 digest they were stored or announced under."""


class StorageUnavailable(StorageError):
    """The database or the disk cannot be used right now (unreachable server, locked
    database, I/O error). Retry later or ask the operator."""


class SchemaMismatch(StorageError):
    """The database schema is not one this code knows (run `Database.migrate()`, or the
    database was migrated by a newer release)."""


def funnel(error: sa_exc.SQLAlchemyError) -> StorageError:
    """Map a SQLAlchemy error to the storage error a caller can act on."""
    original = getattr(error, "orig", None)
    if isinstance(original, StorageError):
        # Raised by one of our column types while binding a parameter.
        return original
    if isinstance(error, sa_exc.IntegrityError):
        return Conflict(f"the write conflicts with stored data: {original or error}")
    if isinstance(
        error,
        sa_exc.OperationalError
        | sa_exc.InterfaceError
        | sa_exc.DisconnectionError
        | sa_exc.TimeoutError,
    ):
        return StorageUnavailable(f"database unavailable: {original or error}")
    return StorageError(f"database error: {original or error}")
