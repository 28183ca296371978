"""The database of a node: engine, sessions and schema migrations.

Invariants:
- Two backends only: an embedded SQLite file (the default, `home/accord.db`) and
  PostgreSQL through psycopg 3. Any other URL is refused when the database is opened.
- Every SQLite connection runs in WAL mode with `foreign_keys=ON`, `synchronous=NORMAL`
  and a busy timeout. The driver's own transaction handling is switched off and the
  `BEGIN` is ours: a read-write session starts with `BEGIN IMMEDIATE`, so it holds the
  single write lock from its first statement and never fails half-way with a lock
  upgrade error; a read-only session starts a deferred `BEGIN` and never blocks writers
  (WAL). A read-only session refuses to flush ORM changes, and the database refuses
  other writes (`PRAGMA query_only` on SQLite, `SET TRANSACTION READ ONLY` on PostgreSQL).
- `Database.session()` commits when its block ends normally and rolls back otherwise;
  every SQLAlchemy or driver error leaving it is a `StorageError`. Statement parameters
  (envelopes, token hashes) are kept out of error messages and so out of the logs.
- The schema changes only through the alembic revisions shipped in
  `storage/migrations`, run programmatically by `migrate()` (no `alembic.ini`). On
  PostgreSQL the upgrade holds an advisory lock, so replicas starting together migrate
  once; within a process a lock keeps alembic's global proxies to one migration at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import ConnectionPoolEntry
from sqlmodel import Session

from ._errors import InvalidValue, SchemaMismatch, StorageError, StorageUnavailable, funnel

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["Database"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_BUSY_TIMEOUT_MS = 10_000
_READONLY_OPTION = "accord_readonly"
# An arbitrary constant naming the advisory lock that serialises migrations.
_MIGRATION_LOCK_ID = 0x41CC0D
# Alembic installs its `context` and `op` proxies as module globals while it runs, so two
# migrations in one process (two nodes in a test, two threads) must not overlap.
_ALEMBIC_LOCK = threading.Lock()


def _json_dumps(value: Any) -> str:
    # Readable UTF-8 (Cyrillic stays Cyrillic) and compact.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _normalise_url(url: str | URL) -> URL:
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError) as e:
        raise InvalidValue(f"not a database URL: {e}") from e
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if parsed.database in (None, "", ":memory:") or (parsed.query.get("mode") == "memory"):
            raise InvalidValue("an in-memory SQLite database cannot be shared; use a file")
        return parsed.set(drivername="sqlite+pysqlite")
    raise InvalidValue(
        f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://..."
    )


def _alembic_config(connection: Connection | None = None) -> Config:
    # Alembic is imported when the schema is looked at, not with the package: a running
    # node and most CLI commands never need it after start-up (memory and start time).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class _FairRLock:
    """A re-entrant lock granted in the order it was asked for (a ticket lock). A thread
    interrupted while it waits (KeyboardInterrupt) gives up its ticket, so the threads
    behind it are still served."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._next_ticket = 0
        self._serving = 0
        self._abandoned: set[int] = set()

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return
            ticket = self._next_ticket
            self._next_ticket += 1
            try:
                while self._serving != ticket:
                    self._cond.wait()
            except BaseException:
                self._abandoned.add(ticket)
                self._advance()
                raise
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._serving += 1
                self._advance()

    def _advance(self) -> None:
        # Called with the condition held: skip the tickets of threads that gave up.
        if self._owner is None:
            while self._serving in self._abandoned:
                self._abandoned.discard(self._serving)
                self._serving += 1
        self._cond.notify_all()


class Database:
    """A node's database. Open it with `Database.open(url)` or `Database.for_home(home)`."""

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine made by `open`; prefer the two constructors."""
        self._engine = engine
        self._readonly_engine = engine.execution_options(**{_READONLY_OPTION: True})
        # SQLite has one writer at a time. Threads of this process queue on this lock for
        # it, and so are woken the moment it is free, rather than in SQLite's busy
        # handler, which sleeps in steps of up to 100 ms. Other processes (a CLI command
        # beside a running node) still meet the busy timeout. The lock is fair (first
        # come, first served): with a plain lock the group-commit thread, which takes it
        # again the moment it lets it go, starved the delivery worker under load.
        self._writer = _FairRLock() if engine.dialect.name == "sqlite" else None

    @classmethod
    def open(cls, url: str | URL) -> Database:
        """Open the database at `url`: `sqlite:///PATH` or `postgresql://...`.

        Nothing is connected yet; the first session connects. Call `migrate()` before use.
        """
        parsed = _normalise_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(
                parsed,
                connect_args={"timeout": _BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
                json_serializer=_json_dumps,
                hide_parameters=True,
            )
            event.listen(engine, "connect", _sqlite_on_connect)
            event.listen(engine, "begin", _sqlite_on_begin)
        else:
            engine = create_engine(
                parsed,
                pool_pre_ping=True,
                connect_args={"connect_timeout": 10},
                json_serializer=_json_dumps,
                hide_parameters=True,
            )
            event.listen(engine, "begin", _postgresql_on_begin)
        return cls(engine)

    @classmethod
    def for_home(cls, home: Path) -> Database:
        """Open (creating the folder if needed) the embedded database `home/accord.db`."""
        try:
            home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise StorageUnavailable(f"cannot create the node home {home}: {e}") from e
        return cls.open(URL.create("sqlite", database=str(home / "accord.db")))

    @property
    def dialect(self) -> str:
        """`"sqlite"` or `"postgresql"`."""
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for tools (schema comparison, backups); use `session()`."""
        return self._engine

    @contextlib.contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A unit of work: committed if the block ends normally, rolled back otherwise.

        A read-only session never takes SQLite's write lock and refuses writes
        (`InvalidValue` for ORM changes, a `StorageError` from the database otherwise).
        Objects loaded in the session stay readable after it ends.
        """
        session = (_ReadOnlySession if readonly else Session)(
            self._readonly_engine if readonly else self._engine,
            expire_on_commit=False,
            info={_READONLY_OPTION: readonly},
        )
        writer = None if readonly else self._writer
        if writer is not None:
            writer.acquire()
        try:
            try:
                yield session
                # Also for a read-only session: a rollback would expire the objects it
                # loaded, and it wrote nothing. One that never began a transaction
                # (its caller needed nothing from the store) has nothing to end: a
                # commit would still run the flush machinery, 3% of a busy node's CPU.
                if not readonly or session.in_transaction():
                    session.commit()
            except BaseException:
                with contextlib.suppress(sa_exc.SQLAlchemyError):
                    session.rollback()
                raise
            finally:
                session.close()
        except sa_exc.SQLAlchemyError as e:
            raise funnel(e) from e
        finally:
            if writer is not None:
                writer.release()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to `revision` (the newest by default); idempotent."""
        from alembic import command
        from alembic.util import CommandError

        try:
            with _ALEMBIC_LOCK, self._engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK_ID}
                    )
                command.upgrade(_alembic_config(connection), revision)
        except CommandError as e:
            raise SchemaMismatch(f"cannot migrate the database to {revision!r}: {e}") from e
        except sa_exc.SQLAlchemyError as e:
            raise funnel(e) from e

    def schema_version(self) -> str | None:
        """The alembic revision the database is at; None for an empty database."""
        from alembic.runtime.migration import MigrationContext

        try:
            with self._readonly_engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except sa_exc.SQLAlchemyError as e:
            raise funnel(e) from e

    @staticmethod
    def schema_head() -> str:
        """The newest revision this code ships (what `migrate()` upgrades to)."""
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
        if head is None:
            raise StorageError("no migrations are shipped with storage")
        return head

    def close(self) -> None:
        """Close every pooled connection."""
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Take transaction control away from the sqlite3 module: it would otherwise issue its
    # own deferred BEGIN before writes and none before reads (see `_sqlite_on_begin`).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS:d}")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # `query_only` is a property of the connection, so it is set again on every begin.
    if connection.get_execution_options().get(_READONLY_OPTION):
        connection.exec_driver_sql("PRAGMA query_only=ON")
        connection.exec_driver_sql("BEGIN")
    else:
        connection.exec_driver_sql("PRAGMA query_only=OFF")
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise InvalidValue("a read-only session cannot write; use db.session()")


class _ReadOnlySession(Session):
    """A session that refuses to flush ORM changes. The listener is set once on the
    class: set on each session, it cost more than the query of a short read."""


event.listen(_ReadOnlySession, "before_flush", _refuse_flush)


def _postgresql_on_begin(connection: Connection) -> None:
    if connection.get_execution_options().get(_READONLY_OPTION):
        connection.exec_driver_sql("SET TRANSACTION READ ONLY")
