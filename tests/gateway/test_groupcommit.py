"""Group commit: concurrent writes share a transaction, and a failing write fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from gateway._groupcommit import GroupCommit
from storage import Database, Peer, PeerStatus, add_peer
from tests.storage.helpers import T0


def _add(name: str):
    def write(session):
        add_peer(
            session,
            party_id=name,
            name=f"Сторона {name}",
            endpoint_url="https://127.0.0.1:1",
            tls_cert_sha256=f"{abs(hash(name)) % 10**60:064d}",
            descriptor="{}",
            now=T0,
            status=PeerStatus.ACTIVE,
        )
        return name

    return write


def test_concurrent_writes_are_all_committed(db: Database) -> None:
    commits = GroupCommit(db)
    try:
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda i: commits.run(_add(f"p{i}")), range(64)))
    finally:
        commits.close()
    assert results == [f"p{i}" for i in range(64)]
    with db.session(readonly=True) as session:
        assert len(session.exec(select(Peer)).all()) == 64


def test_failing_write_fails_alone(db: Database) -> None:
    commits = GroupCommit(db)
    barrier = threading.Barrier(3)
    outcomes: dict[str, object] = {}

    def submit(name: str, write) -> None:
        barrier.wait()
        try:
            outcomes[name] = commits.run(write)
        except Exception as e:
            outcomes[name] = e

    def broken(session):
        session.add(
            Peer(
                party_id="half-written",
                name="x",
                endpoint_url="u",
                tls_cert_sha256="1" * 64,
                descriptor="{}",
                status=PeerStatus.ACTIVE,
                added_at=T0,
            )
        )
        session.flush()
        raise RuntimeError("this write fails after flushing a row")

    threads = [
        threading.Thread(target=submit, args=("a", _add("a"))),
        threading.Thread(target=submit, args=("bad", broken)),
        threading.Thread(target=submit, args=("b", _add("b"))),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        commits.close()
    assert outcomes["a"] == "a" and outcomes["b"] == "b"
    assert isinstance(outcomes["bad"], RuntimeError)
    with db.session(readonly=True) as session:
        names = {p.party_id for p in session.exec(select(Peer)).all()}
    # The failed write's flushed row was rolled back with its savepoint; nothing half-written.
    assert names == {"a", "b"}


def test_error_reaches_the_caller(db: Database) -> None:
    commits = GroupCommit(db)
    try:
        with pytest.raises(ZeroDivisionError):
            commits.run(lambda session: 1 // 0)
    finally:
        commits.close()
