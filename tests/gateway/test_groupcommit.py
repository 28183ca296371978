"""Group commit: concurrent writes share a transaction, and a failing write fails alone."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlmodel import select

from accord.gateway.node.groupcommit import GroupCommit
from accord.storage import Database, Peer, PeerStatus, add_peer
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


def test_bulk_items_are_written_by_one_call_per_transaction(db: Database) -> None:
    """Items queued for the same bulk write are handed to it together; every item gets
    its own outcome, and nothing is answered before the commit."""
    calls: list[int] = []

    def bulk(session, names):
        calls.append(len(names))
        for name in names:
            _add(name)(session)
        return [f"stored {name}" for name in names]

    commits = GroupCommit(db)
    try:
        with ThreadPoolExecutor(16) as pool:
            futures = [commits.submit_item(bulk, f"p{i}") for i in range(40)]
            results = list(pool.map(lambda f: f.result(timeout=30), futures))
    finally:
        commits.close()
    assert results == [f"stored p{i}" for i in range(40)]
    assert sum(calls) == 40 and len(calls) < 40
    with db.session(readonly=True) as session:
        assert len(session.exec(select(Peer)).all()) == 40


def test_bulk_outcome_that_is_an_error_fails_its_item_alone(db: Database) -> None:
    def bulk(session, names):
        return [ValueError(f"отказ {n}") if n == "bad" else n for n in names]

    commits = GroupCommit(db)
    try:
        good, bad = commits.submit_item(bulk, "good"), commits.submit_item(bulk, "bad")
        assert good.result(timeout=30) == "good"
        with pytest.raises(ValueError, match="отказ bad"):
            bad.result(timeout=30)
    finally:
        commits.close()


def test_raising_bulk_write_is_undone_and_other_writes_commit(db: Database) -> None:
    """A bulk write that raises after writing rows fails all its items, its rows are
    rolled back with its savepoint, and the plain writes of the same transaction commit."""

    def bulk(session, names):
        for name in names:
            _add(name)(session)
        raise RuntimeError("the bulk write fails after writing")

    commits = GroupCommit(db)
    futures = []
    try:
        # Driven directly, so that both kinds are in one transaction for certain.
        from concurrent.futures import Future

        batch = [(None, _add("plain"), Future()), (bulk, "half", Future()), (bulk, "b2", Future())]
        commits._commit(batch)
        futures = [f for _, _, f in batch]
    finally:
        commits.close()
    assert futures[0].result() == "plain"
    for f in futures[1:]:
        with pytest.raises(RuntimeError):
            f.result()
    with db.session(readonly=True) as session:
        assert {p.party_id for p in session.exec(select(Peer)).all()} == {"plain"}
