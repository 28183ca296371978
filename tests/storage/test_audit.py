"""The audit log: gapless appends, stored subtrees that serve proofs, checkpoints, and
`audit_verify` naming the first row changed behind the log's back."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from accord.crypto.checkpoint import (
    Checkpoint,
    sign_checkpoint,
    verify_checkpoint,
    verify_cosignature,
)
from accord.crypto.checkpoint import add_cosignature as cosign
from accord.crypto.keys import SigningKey
from accord.crypto.merkle import (
    CompactRange,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    root,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)
from accord.storage import (
    Conflict,
    Database,
    DigestMismatch,
    DuplicateError,
    InvalidValue,
    NotFound,
    Tamper,
    add_checkpoint,
    add_cosignature,
    append_leaf,
    append_leaves,
    audit_verify,
    get_checkpoint,
    get_leaf,
    latest_checkpoint,
    leaf_hashes,
    leaves_for_message,
    list_checkpoints,
    list_cosignatures,
    tree_head,
    tree_nodes,
    tree_root,
    tree_size,
)
from tests.storage.helpers import T0, at

ORIGIN = "audit.ru-mvd.example/log"


def event(i: int, kind: str = "send") -> bytes:
    """A log event as the gateway writes one: canonical JSON, no content."""
    record = {"event": kind, "message_id": f"m-{i}", "peer": "МВД-РБ", "n": i}
    return json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def fill(db: Database, n: int, kind: str = "send", first: int = 0) -> list[bytes]:
    leaves = [event(i, kind) for i in range(first, first + n)]
    with db.session() as session:
        for i, leaf in enumerate(leaves):
            assert append_leaf(session, leaf, at(i)) == first + i
    return leaves


def nodes_for(plan_nodes: tuple) -> list[tuple[int, int]]:
    return [(n.level, n.index) for n in plan_nodes]


def verify(db: Database):
    with db.session(readonly=True) as session:
        return audit_verify(session)


def sql(db: Database, statement: str, **params: object) -> None:
    with db.engine.begin() as connection:
        connection.execute(text(statement), params)


# --- Appends and the tree --------------------------------------------------------------


def test_appends_get_gapless_indexes_and_an_rfc6962_root(db: Database) -> None:
    leaves = fill(db, 37)
    hashes = [leaf_hash(x) for x in leaves]
    with db.session(readonly=True) as session:
        assert tree_size(session) == 37
        assert tree_head(session).root == root(hashes)
        assert leaf_hashes(session, 0, 37) == hashes
        assert leaf_hashes(session, 5, 9) == hashes[5:9]
        stored = get_leaf(session, 5)
        assert (stored.leaf, stored.leaf_hash, stored.appended_at) == (leaves[5], hashes[5], at(5))
        assert [tree_root(session, n) for n in range(38)] == [root(hashes[:n]) for n in range(38)]


def test_the_stored_frontier_is_the_compact_range(db: Database) -> None:
    leaves = fill(db, 23)
    compact = CompactRange()
    for leaf in leaves:
        compact.append(leaf_hash(leaf))
    with db.session(readonly=True) as session:
        assert tree_nodes(session, nodes_for(root_nodes(23))) == list(compact.frontier)
        assert tree_head(session).root == compact.root()


def test_proofs_from_stored_subtrees_verify(db: Database) -> None:
    # 300 leaves: subtrees at stored levels 0, 4 and 8, and folded ones between them.
    leaves = fill(db, 300)
    hashes = [leaf_hash(x) for x in leaves]
    with db.session(readonly=True) as session:
        head = tree_head(session)
        for index in (0, 1, 15, 16, 130, 255, 256, 299):
            plan = inclusion_plan(index, head.size)
            proof = plan.assemble(tree_nodes(session, nodes_for(plan.nodes)))
            verify_inclusion(hashes[index], index, head.size, proof, head.root)
        for old in (1, 7, 16, 100, 256, 257, 299, 300):
            plan = consistency_plan(old, head.size)
            proof = plan.assemble(tree_nodes(session, nodes_for(plan.nodes)))
            verify_consistency(old, head.size, tree_root(session, old), head.root, proof)


def test_reads_outside_the_tree_are_not_found(db: Database) -> None:
    fill(db, 20)
    with db.session(readonly=True) as session:
        for call in (
            lambda: tree_nodes(session, [(2, 5)]),
            lambda: tree_nodes(session, [(5, 0)]),
            lambda: leaf_hashes(session, 10, 21),
            lambda: leaf_hashes(session, 5, 4),
            lambda: tree_root(session, 21),
            lambda: get_leaf(session, 20),
            lambda: get_checkpoint(session, 20),
        ):
            with pytest.raises(NotFound):
                call()


def test_a_bulk_append_writes_what_single_appends_write(db: Database, tmp_path: Path) -> None:
    # 3 single appends, then 70 in one batch (crossing stored levels 4 and 8's
    # boundaries), against a second log of 73 single appends.
    leaves = [event(i) for i in range(73)]
    fill(db, 3)
    with db.session() as session:
        batch = [(leaf, at(i), [f"m-{i}", f"m-{i}"]) for i, leaf in enumerate(leaves[3:], 3)]
        assert append_leaves(session, batch) == list(range(3, 73))
        assert append_leaves(session, []) == []
    single = Database.open(f"sqlite:///{tmp_path / 'single.db'}")
    single.migrate()
    fill(single, 73)
    with (
        single,
        db.session(readonly=True) as bulk_s,
        single.session(readonly=True) as single_s,
    ):
        assert tree_head(bulk_s) == tree_head(single_s)
        every = [(level, i) for level in (0, 4) for i in range(73 >> level)]
        assert tree_nodes(bulk_s, every) == tree_nodes(single_s, every)
        assert [x.index for x in leaves_for_message(bulk_s, "m-40")] == [40]
    assert verify(db).ok


def test_a_bulk_append_with_one_bad_entry_appends_none(db: Database) -> None:
    fill(db, 2)
    with db.session() as session, pytest.raises(InvalidValue):
        append_leaves(
            session, [(event(2), T0, []), (b"x" * (64 * 1024 + 1), T0, []), (event(4), T0, [])]
        )
    with db.session(readonly=True) as session:
        assert tree_size(session) == 2
    assert verify(db).ok


def test_append_refuses_bad_input(db: Database) -> None:
    with db.session(readonly=True) as session, pytest.raises(InvalidValue):
        append_leaf(session, event(0), T0)
    with db.session() as session:
        with pytest.raises(InvalidValue):
            append_leaf(session, b"x" * (64 * 1024 + 1), T0)
        with pytest.raises(InvalidValue):
            append_leaf(session, "не байты", T0)  # type: ignore[arg-type]
        with pytest.raises(InvalidValue):
            append_leaf(session, event(0), T0.replace(tzinfo=None))
    with db.session(readonly=True) as session:
        assert tree_size(session) == 0


def test_a_rolled_back_append_gives_its_index_back(db: Database) -> None:
    fill(db, 3)
    with pytest.raises(RuntimeError), db.session() as session:
        assert append_leaf(session, event(99), T0) == 3
        raise RuntimeError("the transaction that appended fails")
    assert fill(db, 1, first=3) == [event(3)]
    assert verify(db).ok


def test_concurrent_appends_get_distinct_contiguous_indexes(db: Database) -> None:
    threads, per_thread = 4, 25
    barrier = threading.Barrier(threads)
    got: list[list[int]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def appender(number: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                with db.session() as session:
                    got[number].append(append_leaf(session, event(i, f"t{number}"), T0))
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    workers = [threading.Thread(target=appender, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    indexes = sorted(i for mine in got for i in mine)
    assert indexes == list(range(threads * per_thread))
    assert all(mine == sorted(mine) for mine in got)
    report = verify(db)
    assert report.ok, report.problem
    with db.session(readonly=True) as session:
        assert report.root == root(leaf_hashes(session, 0, threads * per_thread))


# --- Checkpoints and cosignatures ------------------------------------------------------


def test_checkpoints_and_cosignatures_are_stored_as_signed(db: Database) -> None:
    log_key, witness_key = SigningKey.generate(), SigningKey.generate()
    fill(db, 10)
    with db.session() as session:
        head = tree_head(session)
        note = sign_checkpoint(Checkpoint(ORIGIN, head.size, head.root), ORIGIN, log_key).decode()
        stored = add_checkpoint(session, size=head.size, root_hash=head.root, note=note, now=T0)
        assert add_checkpoint(session, size=10, root_hash=head.root, note=note, now=at(1)) == stored
        with pytest.raises(DuplicateError):
            add_checkpoint(session, size=10, root_hash=head.root, note=note + " ", now=T0)
        with pytest.raises(Conflict):
            add_checkpoint(session, size=9, root_hash=head.root, note=note, now=T0)
        with pytest.raises(NotFound):
            add_checkpoint(session, size=11, root_hash=head.root, note=note, now=T0)
        add_checkpoint(session, size=4, root_hash=tree_root(session, 4), note="n4", now=T0)
    # The peer witnesses it; its line is verified, then stored verbatim.
    cosigned = cosign(note, "by-mvd.example/witness", witness_key, 1_764_000_000)
    evidence = verify_cosignature(cosigned, "by-mvd.example/witness", witness_key.verify_key())
    with db.session() as session:
        line = evidence.line
        add_cosignature(
            session, checkpoint_size=10, witness="by-mvd.example/witness", line=line, now=T0
        )
        add_cosignature(
            session, checkpoint_size=10, witness="by-mvd.example/witness", line=line, now=T0
        )
        with pytest.raises(DuplicateError):
            add_cosignature(
                session, checkpoint_size=10, witness="by-mvd.example/witness", line="— x", now=T0
            )
        with pytest.raises(NotFound):
            add_cosignature(session, checkpoint_size=5, witness="w", line=line, now=T0)
        with pytest.raises(InvalidValue):
            add_cosignature(session, checkpoint_size=10, witness="w", line="a\nb", now=T0)
    with db.session(readonly=True) as session:
        latest = latest_checkpoint(session)
        assert latest is not None and latest.size == 10
        assert [c.size for c in list_checkpoints(session)] == [4, 10]
        assert [c.size for c in list_checkpoints(session, since=5)] == [10]
        (stored_line,) = list_cosignatures(session, 10)
        assert stored_line.received_at == T0
        # What an auditor gets back verifies: the note and the stored line, reassembled.
        bundle = latest.note + stored_line.line + "\n"
        verify_checkpoint(bundle, ORIGIN, ORIGIN, log_key.verify_key())
        verify_cosignature(bundle, "by-mvd.example/witness", witness_key.verify_key())
        assert verify(db).checkpoints_verified == 2


def test_no_checkpoint_before_the_first(db: Database) -> None:
    with db.session(readonly=True) as session:
        assert latest_checkpoint(session) is None
        assert tree_head(session).root == root([])
    report = verify(db)
    assert report.ok and report.size == 0 and report.root == root([])


# --- audit_verify ----------------------------------------------------------------------


def _checkpoint(db: Database, size: int) -> None:
    with db.session() as session:
        value = tree_root(session, size)
        add_checkpoint(session, size=size, root_hash=value, note=f"note {size}", now=T0)


@pytest.fixture
def logged(db: Database) -> Database:
    """A log of 50 events with checkpoints at sizes 0, 20 and 50."""
    fill(db, 50)
    for size in (0, 20, 50):
        _checkpoint(db, size)
    report = verify(db)
    assert report.ok, report.problem
    assert (report.size, report.checkpoints_verified) == (50, 3)
    return db


def _problem(db: Database) -> tuple[Tamper, int]:
    report = verify(db)
    assert report.problem is not None
    with pytest.raises(DigestMismatch):
        report.check()
    return report.problem.kind, report.problem.index


def test_leaf_edited_is_named(logged: Database) -> None:
    sql(logged, 'UPDATE audit_leaves SET leaf = :leaf WHERE "index" = 7', leaf=event(7, "read"))
    assert _problem(logged) == (Tamper.EDITED, 7)


def test_leaf_edited_with_its_hash_is_named(logged: Database) -> None:
    forged = event(7, "read")
    sql(
        logged,
        'UPDATE audit_leaves SET leaf = :leaf, leaf_hash = :hash WHERE "index" = 7',
        leaf=forged,
        hash=leaf_hash(forged),
    )
    assert _problem(logged) == (Tamper.EDITED, 7)


def test_last_leaf_edited_with_its_hash_is_named(logged: Database) -> None:
    # Leaf 49 is below no stored subtree but level 0 (48..49 is not a complete 16).
    forged = event(49, "read")
    statement = 'UPDATE audit_leaves SET leaf = :leaf, leaf_hash = :hash WHERE "index" = 49'
    sql(logged, statement, leaf=forged, hash=leaf_hash(forged))
    assert _problem(logged) == (Tamper.EDITED, 49)


def test_leaf_deleted_is_named(logged: Database) -> None:
    sql(logged, 'DELETE FROM audit_leaves WHERE "index" = 12')
    assert _problem(logged) == (Tamper.DELETED, 12)


def test_last_leaf_deleted_is_named(logged: Database) -> None:
    sql(logged, 'DELETE FROM audit_leaves WHERE "index" = 49')
    assert _problem(logged) == (Tamper.DELETED, 49)


def _shift(db: Database, first: int, by: int) -> None:
    """Renumber leaves from `first` on by `by`, in two steps so no index collides."""
    sql(db, 'UPDATE audit_leaves SET "index" = -"index" - 1000 WHERE "index" >= :f', f=first)
    sql(db, 'UPDATE audit_leaves SET "index" = -"index" - 1000 + :by WHERE "index" < 0', by=by)


def test_leaf_deleted_and_later_ones_renumbered_is_named(logged: Database) -> None:
    sql(logged, 'DELETE FROM audit_leaves WHERE "index" = 12')
    _shift(logged, 13, -1)
    assert _problem(logged) == (Tamper.DELETED, 12)


def test_leaf_inserted_and_later_ones_renumbered_is_named(logged: Database) -> None:
    _shift(logged, 12, +1)
    forged = event(1000, "forward")
    sql(
        logged,
        'INSERT INTO audit_leaves ("index", leaf, leaf_hash, appended_at)'
        " VALUES (12, :leaf, :hash, :at)",
        leaf=forged,
        hash=leaf_hash(forged),
        at=T0,
    )
    assert _problem(logged) == (Tamper.INSERTED, 12)


def test_leaf_inserted_at_the_end_is_named(logged: Database) -> None:
    forged = event(50, "forward")
    sql(
        logged,
        'INSERT INTO audit_leaves ("index", leaf, leaf_hash, appended_at)'
        " VALUES (50, :leaf, :hash, :at)",
        leaf=forged,
        hash=leaf_hash(forged),
        at=T0,
    )
    assert _problem(logged) == (Tamper.INSERTED, 50)


def _swap(db: Database, a: int, b: int, columns: str) -> None:
    with db.engine.begin() as connection:
        rows = {
            i: connection.execute(
                text(f'SELECT {columns} FROM audit_leaves WHERE "index" = :i'), {"i": i}
            ).one()
            for i in (a, b)
        }
        names = [c.strip() for c in columns.split(",")]
        assignments = ", ".join(f"{c} = :{c}" for c in names)
        for i, j in ((a, b), (b, a)):
            values = dict(zip(names, rows[j], strict=True))
            connection.execute(
                text(f'UPDATE audit_leaves SET {assignments} WHERE "index" = :i'),
                {"i": i, **values},
            )


def test_leaves_swapped_are_named_reordered(logged: Database) -> None:
    _swap(logged, 3, 9, "leaf")
    report = verify(logged)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.index) == (Tamper.REORDERED, 3)
    assert "9" in report.problem.detail


def test_leaves_swapped_with_their_hashes_are_named_reordered(logged: Database) -> None:
    _swap(logged, 3, 9, "leaf, leaf_hash")
    assert _problem(logged) == (Tamper.REORDERED, 3)


@pytest.mark.parametrize("first", [3, 15, 31, 45])
def test_attack_neighbours_swapped_with_their_hashes_named_reordered_not_deleted(
    logged: Database, first: int
) -> None:
    # An adjacent swap looks like a renumbering at its first index; the second row
    # holding the first's leaf tells them apart (found end to end, issue 6).
    _swap(logged, first, first + 1, "leaf, leaf_hash")
    report = verify(logged)
    assert report.problem is not None
    assert (report.problem.kind, report.problem.index) == (Tamper.REORDERED, first)
    assert str(first + 1) in report.problem.detail


def test_altered_subtree_hash_is_a_tree_problem(logged: Database) -> None:
    sql(logged, 'UPDATE audit_nodes SET hash = :h WHERE level = 4 AND "index" = 1', h=bytes(32))
    assert _problem(logged) == (Tamper.TREE, 16)


def test_altered_state_row_is_a_tree_problem(logged: Database) -> None:
    with logged.engine.begin() as connection:
        frontier = connection.execute(text("SELECT frontier FROM audit_state")).scalar_one()
        altered = bytes(frontier)[:-1] + bytes([bytes(frontier)[-1] ^ 1])
        connection.execute(text("UPDATE audit_state SET frontier = :f"), {"f": altered})
    assert _problem(logged) == (Tamper.TREE, 50)


def _rewrite(db: Database, leaves: list[bytes]) -> None:
    """Rewrite the whole log consistently (leaves, subtrees, state), but not checkpoints."""
    sql(db, "DELETE FROM audit_leaves")
    sql(db, "DELETE FROM audit_nodes")
    sql(db, "UPDATE audit_state SET size = 0, frontier = :empty", empty=b"")
    with db.session() as session:
        for leaf in leaves:
            append_leaf(session, leaf, T0)


def test_consistent_rewrite_is_caught_by_the_signed_checkpoint(logged: Database) -> None:
    history = [event(i) for i in range(50)]
    history[25] = event(25, "refusal-hidden")
    _rewrite(logged, history)
    report = verify(logged)
    assert report.problem is not None
    # The checkpoint of size 20 still verifies; the one of size 50 does not.
    assert (report.problem.kind, report.problem.index) == (Tamper.CHECKPOINT, 20)
    assert report.checkpoints_verified == 2


def test_truncated_log_is_caught_by_a_later_checkpoint(logged: Database) -> None:
    _rewrite(logged, [event(i) for i in range(40)])
    assert _problem(logged) == (Tamper.DELETED, 40)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A database on SQLite only: for what does not depend on the backend but needs many
    appends, which cost a few round trips each on PostgreSQL."""
    with Database.open(f"sqlite:///{tmp_path / 'accord.db'}") as database:
        database.migrate()
        yield database


def test_verification_crosses_chunks(sqlite_db: Database) -> None:
    # More than one chunk of 4096 leaves: a level-12 subtree and the chunk boundary.
    db = sqlite_db
    leaves = fill(db, 4096 + 40)
    _checkpoint(db, 4096)
    _checkpoint(db, 4100)
    report = verify(db)
    assert report.ok, report.problem
    assert report.root == root([leaf_hash(x) for x in leaves])
    assert report.checkpoints_verified == 2
    forged = event(4097, "read")
    statement = 'UPDATE audit_leaves SET leaf = :leaf, leaf_hash = :hash WHERE "index" = 4097'
    sql(db, statement, leaf=forged, hash=leaf_hash(forged))
    assert _problem(db) == (Tamper.EDITED, 4097)
    sql(db, 'UPDATE audit_nodes SET hash = :h WHERE level = 12 AND "index" = 0', h=bytes(32))
    assert _problem(db) == (Tamper.TREE, 0)
