"""Opening databases, sessions, error funnelling and timestamps, on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text

from accord.storage import (
    Conflict,
    Database,
    InvalidValue,
    KeyKind,
    MessagePart,
    NotFound,
    Peer,
    PeerStatus,
    StorageError,
    StorageUnavailable,
    add_key,
    get_key,
    get_peer,
)
from tests.storage.helpers import PEER_NAME, PEER_PARTY, T0, digest, register_peer


def test_connection_settings(db: Database) -> None:
    with db.session() as session:
        if db.dialect == "sqlite":
            pragma = {
                name: session.connection().exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout")
            }
            assert pragma == {
                "journal_mode": "wal",
                "foreign_keys": 1,
                "synchronous": 1,  # NORMAL
                "busy_timeout": 10_000,
            }
        else:
            assert db.dialect == "postgresql"
            assert db.engine.driver == "psycopg"
            assert session.connection().exec_driver_sql("SELECT 1").scalar() == 1


def test_write_sessions_lock_and_readonly_sessions_do_not(db: Database) -> None:
    if db.dialect == "sqlite":
        path = db.engine.url.database
        assert path is not None

        def can_take_write_lock() -> bool:
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
                return True
            except sqlite3.OperationalError:
                return False
            finally:
                other.close()

        with db.session() as session:
            session.connection()  # The first statement of the session begins it...
            assert not can_take_write_lock()  # ...and takes the write lock at once.
        with db.session(readonly=True) as session:
            session.connection()
            assert can_take_write_lock()
        assert can_take_write_lock()
    else:
        for readonly, expected in ((False, "off"), (True, "on")):
            with db.session(readonly=readonly) as session:
                result = session.connection().exec_driver_sql("SHOW transaction_read_only")
                assert result.scalar() == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
        ("sqlite:////var/lib/accord/accord.db", "sqlite+pysqlite:////var/lib/accord/accord.db"),
    ],
)
def test_open_maps_urls_to_the_supported_drivers(url: str, expected: str) -> None:
    db = Database.open(url)
    try:
        assert db.engine.url.render_as_string(hide_password=False) == expected
    finally:
        db.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/d", "postgresql+psycopg2://u@h/d", "sqlite://", "sqlite:///:memory:", "nonsense"],
)
def test_unsupported_database_url_refused(url: str) -> None:
    with pytest.raises(InvalidValue):
        Database.open(url)


def test_for_home_creates_the_embedded_database(tmp_path: Path) -> None:
    home = tmp_path / "узел"  # a Cyrillic path works too
    with Database.for_home(home) as db:
        db.migrate()
        assert (home / "accord.db").is_file()
        assert db.schema_version() == Database.schema_head()


def test_unreachable_postgresql_is_storage_unavailable() -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    with Database.open("postgresql://postgres@127.0.0.1:1/test") as db:
        with pytest.raises(StorageUnavailable) as caught, db.session() as session:
            session.connection()
        assert caught.value.__cause__ is not None


def test_session_commits_on_success(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
    with db.session(readonly=True) as session:
        assert get_peer(session, PEER_PARTY).name == PEER_NAME


def test_session_rolls_back_on_error(db: Database) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), db.session() as session:
        register_peer(session)
        raise Boom
    with db.session() as session, pytest.raises(NotFound):
        get_peer(session, PEER_PARTY)


def test_readonly_session_refuses_writes(db: Database) -> None:
    with pytest.raises(InvalidValue), db.session(readonly=True) as session:
        register_peer(session)
    with pytest.raises(StorageError), db.session(readonly=True) as session:
        session.connection().execute(text("DELETE FROM peers"))
    with db.session() as session, pytest.raises(NotFound):
        get_peer(session, PEER_PARTY)


def test_foreign_key_violation_is_funnelled_as_conflict(db: Database) -> None:
    # On SQLite this also proves that `PRAGMA foreign_keys=ON` is in force.
    with pytest.raises(Conflict) as caught, db.session() as session:
        session.add(MessagePart(message_id="nobody", index=0, blob_sha256=digest(b""), size=0))
    assert caught.value.__cause__ is not None


def test_timestamps_round_trip_as_aware_utc(db: Database) -> None:
    moscow = timezone(timedelta(hours=3))
    local = datetime(2025, 11, 25, 12, 30, 15, 123456, tzinfo=moscow)
    with db.session() as session:
        add_key(
            session,
            key_id="seal-1",
            kind=KeyKind.SEAL,
            owner="RU-MVD",
            public={"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg"},
            store_ref="pkcs11:token=accord;object=seal-1",
            not_before=local,
        )
    with db.session(readonly=True) as session:
        stored = get_key(session, "seal-1").not_before
    assert stored == local
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 9


def test_naive_timestamp_refused(db: Database) -> None:
    naive = datetime(2025, 11, 25, 9, 30)
    with db.session() as session, pytest.raises(InvalidValue):
        add_key(
            session,
            key_id="k",
            kind=KeyKind.TLS,
            owner="RU-MVD",
            public={},
            store_ref=None,
            not_before=naive,
        )
    # Bypassing the repository functions does not bypass the column type.
    with pytest.raises(InvalidValue), db.session() as session:
        session.add(
            Peer(
                party_id="X",
                name="Икс",
                endpoint_url="https://x.example",
                tls_cert_sha256=digest(b"x"),
                descriptor="{}",
                status=PeerStatus.ACTIVE,
                added_at=naive,
            )
        )


def test_cyrillic_text_round_trips(db: Database) -> None:
    name = "Государственный комитет судебных экспертиз — «Минск»"
    with db.session() as session:
        register_peer(session, party_id="BY-GKSE", name=name)
    with db.session(readonly=True) as session:
        peer = get_peer(session, "BY-GKSE")
    assert peer.name == name
    assert peer.added_at == T0


def _wait_until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        time.sleep(0.001)
    raise AssertionError("condition not reached")


def test_writer_lock_is_granted_first_come_first_served() -> None:
    """The group-commit thread takes the writer lock again the moment it lets it go; a
    fair lock makes the delivery worker's transactions wait their turn, not for ever."""
    from accord.storage._database import _FairRLock

    lock = _FairRLock()
    order: list[int] = []
    lock.acquire()
    lock.acquire()  # Re-entrant for its holder.
    threads = []
    for n in range(4):
        t = threading.Thread(target=lambda n=n: (lock.acquire(), order.append(n), lock.release()))
        t.start()
        threads.append(t)
        _wait_until(lambda n=n: lock._next_ticket == n + 2)
    lock.release()
    assert order == []
    lock.release()
    for t in threads:
        t.join(timeout=30)
    assert order == [0, 1, 2, 3]


def test_writer_lock_skips_a_waiter_that_gave_up() -> None:
    from accord.storage._database import _FairRLock

    lock = _FairRLock()
    lock.acquire()
    # A waiter interrupted while waiting leaves its ticket abandoned.
    with lock._cond:
        lock._abandoned.add(lock._next_ticket)
        lock._next_ticket += 1
    got: list[str] = []
    t = threading.Thread(target=lambda: (lock.acquire(), got.append("served"), lock.release()))
    t.start()
    _wait_until(lambda: lock._next_ticket == 3)
    lock.release()
    t.join(timeout=30)
    assert got == ["served"]
