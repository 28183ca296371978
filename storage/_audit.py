"""The append-only audit log (DESIGN guarantee 7): leaves, stored subtree hashes,
checkpoints and their cosignatures.

Every security-relevant event is one leaf: its canonical JSON (what happened, never the
content), appended at the next index. The leaves form an RFC 6962 Merkle tree whose
checkpoints the node signs and its peers cosign; `crypto.merkle` and `crypto.checkpoint`
make and check the proofs and signatures, this module only stores and recomputes.

Invariants:
- Indexes are 0, 1, 2, ... without gaps. `append_leaf` locks the single `audit_state` row
  (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's write lock, which every read-write
  session takes at `BEGIN IMMEDIATE`), so two appenders never get the same index, on one
  node or across replicas. The lock is held until the caller's transaction ends: append
  last and commit soon.
- An append is O(log n): it hashes the leaf into the stored frontier (one 32-byte hash per
  set bit of the size) and writes the leaf, at most a few subtree hashes and the state
  row. The root of the current tree is a fold of the frontier.
- `audit_nodes` keeps the hash of every complete perfect subtree at level 0 (a copy of
  each leaf hash, apart from the leaf row) and at every level that is a multiple of
  `NODE_STRIDE`. Any other subtree hash is at most 2**(NODE_STRIDE - 1) stored hashes
  folded together, so a proof over 10**6 leaves reads a few dozen rows (`tree_nodes`).
- Hashes are computed here with `hashlib` (storage imports nothing of `crypto`), by the
  same RFC 6962 rules; the tests check both sides agree.
- Nothing here updates or deletes a leaf, node, checkpoint or cosignature. Tampering
  with the tables directly is what `audit_verify` finds: it recomputes the whole tree
  from the leaf bytes and names the first inconsistency (index and kind).
- A checkpoint is stored only for a tree head this log has: its root must be the root of
  the stored tree at its size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Table, bindparam, func, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from ._errors import Conflict, DigestMismatch, DuplicateError, InvalidValue, NotFound
from ._models import (
    AuditCheckpoint,
    AuditCosignature,
    AuditLeaf,
    AuditMessageLeaf,
    AuditNode,
    AuditState,
    WitnessedCheckpoint,
    WitnessEvidence,
)
from ._types import require_aware

__all__ = [
    "MAX_LEAF_BYTES",
    "NODE_STRIDE",
    "AuditProblem",
    "AuditReport",
    "Tamper",
    "TreeHead",
    "add_checkpoint",
    "add_cosignature",
    "add_witness_evidence",
    "append_leaf",
    "append_leaves",
    "audit_verify",
    "get_checkpoint",
    "get_leaf",
    "get_witnessed",
    "last_cosigned_size",
    "latest_checkpoint",
    "latest_witnessed",
    "leaf_hashes",
    "leaves_for_message",
    "list_all_cosignatures",
    "list_checkpoints",
    "list_cosignatures",
    "list_leaves",
    "list_witness_evidence",
    "record_witnessed",
    "tree_head",
    "tree_nodes",
    "tree_root",
    "tree_size",
]

# Events are small records; anything bigger is almost certainly content, which must
# never enter the log.
MAX_LEAF_BYTES = 64 * 1024
NODE_STRIDE = 4
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_STATE_ID = 1
# audit_verify reads the leaves in aligned chunks of 2**_CHUNK_LEVEL (a stored level).
_CHUNK_LEVEL = 12
_CHUNK = 1 << _CHUNK_LEVEL
_sha256 = hashlib.sha256


def _leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _reduce(hashes: list[bytes]) -> list[bytes]:
    """The parents of the complete pairs of one level (an odd last hash is dropped)."""
    pairs = iter(hashes)
    # An odd last hash is not a pair: zip drops it, on purpose.
    return [
        _sha256(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs, strict=False)
    ]


def _fold(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = _node_hash(h, result)
    return result


def _root_nodes(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees (level, index) whose right fold is the root of `size` leaves."""
    nodes, begin = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            nodes.append((level, begin >> level))
            begin += 1 << level
    return nodes


def _stored(level: int) -> bool:
    return level % NODE_STRIDE == 0


def _split_frontier(size: int, blob: bytes) -> list[bytes]:
    if len(blob) != HASH_SIZE * size.bit_count():
        raise DigestMismatch(
            "the audit log's state row is damaged (frontier length); run audit_verify"
        )
    return [blob[i : i + HASH_SIZE] for i in range(0, len(blob), HASH_SIZE)]


# --- Appending -------------------------------------------------------------------------


def _require_writable(session: Session) -> None:
    if session.info.get("accord_readonly"):
        raise InvalidValue("appending to the audit log writes: use a read-write session")


# Appends run often (every send, receipt, read, refusal...), so their statements are built
# once, on the tables, and executed on the session's connection without the ORM.
_LEAVES: Table = AuditLeaf.__table__  # type: ignore[attr-defined]
_NODES: Table = AuditNode.__table__  # type: ignore[attr-defined]
_STATE: Table = AuditState.__table__  # type: ignore[attr-defined]
_CHECKPOINTS: Table = AuditCheckpoint.__table__  # type: ignore[attr-defined]
_MESSAGE_LEAVES: Table = AuditMessageLeaf.__table__  # type: ignore[attr-defined]
_INSERT_MESSAGE_LEAVES = insert(_MESSAGE_LEAVES)
_LOCK_STATE = (
    select(_STATE.c.size, _STATE.c.frontier).where(_STATE.c.id == _STATE_ID).with_for_update()
)
_INSERT_LEAF = insert(_LEAVES)
_READ_NODES = select(_NODES.c.index, _NODES.c.hash).where(
    _NODES.c.level == bindparam("level"),
    _NODES.c.index.in_(bindparam("indexes", expanding=True)),
)
_INSERT_NODES = insert(_NODES)
_UPDATE_STATE = (
    update(_STATE)
    .where(_STATE.c.id == _STATE_ID)
    .values(size=bindparam("new_size"), frontier=bindparam("new_frontier"))
)


def _lock_state(connection: Connection) -> tuple[int, bytes]:
    """The state row's size and frontier, locked for this transaction (the row is created
    if a database lacks it)."""
    state = connection.execute(_LOCK_STATE).first()
    if state is None:
        make = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
        connection.execute(
            make(_STATE)
            .values(id=_STATE_ID, size=0, frontier=b"")
            .on_conflict_do_nothing(index_elements=["id"])
        )
        state = connection.execute(_LOCK_STATE).one()
    return int(state[0]), bytes(state[1])


def append_leaf(
    session: Session, leaf: bytes, now: datetime, *, message_ids: Sequence[str] = ()
) -> int:
    """Append one event to the log and return its index (0 for the first).

    `leaf` is the event's canonical JSON, never message content. The index is assigned
    under the log's lock, so concurrent appenders get distinct, gapless indexes once their
    transactions commit; a rolled-back transaction gives its index back. `message_ids`
    names the messages the event is about, so that `leaves_for_message` finds it.
    """
    return append_leaves(session, [(leaf, now, message_ids)])[0]


def append_leaves(
    session: Session, entries: Sequence[tuple[bytes, datetime, Sequence[str]]]
) -> list[int]:
    """Append several events, in order, each `(leaf, appended_at, message_ids)` as for
    `append_leaf`, and return their consecutive indexes.

    One lock of the state row and one statement per table for the whole batch (a busy
    node appends a leaf for every message sent, delivered and received), with the same
    rows, hashes and gapless indexes as that many `append_leaf` calls. Every entry is
    checked before anything is written: one bad entry appends none of them."""
    _require_writable(session)
    checked = []
    for leaf, now, message_ids in entries:
        now = require_aware(now, "now")
        if not isinstance(leaf, bytes):
            raise InvalidValue("an audit leaf is bytes (the event's canonical JSON)")
        if len(leaf) > MAX_LEAF_BYTES:
            raise InvalidValue(
                f"an audit leaf is at most {MAX_LEAF_BYTES} bytes: log events, not content"
            )
        checked.append((leaf, now, message_ids))
    if not checked:
        return []
    connection = session.connection()
    first, stored_frontier = _lock_state(connection)
    frontier = _split_frontier(first, stored_frontier)
    leaves: list[dict[str, Any]] = []
    nodes: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for index, (leaf, now, message_ids) in enumerate(checked, start=first):
        hashed = current = _leaf_hash(leaf)
        nodes.append({"level": 0, "index": index, "hash": current})
        level = 0
        # Each set low bit of the old size is a left sibling waiting in the frontier.
        while index >> level & 1:
            current = _node_hash(frontier.pop(), current)
            level += 1
            if _stored(level):
                nodes.append({"level": level, "index": index >> level, "hash": current})
        frontier.append(current)
        leaves.append({"index": index, "leaf": leaf, "leaf_hash": hashed, "appended_at": now})
        links.extend({"message_id": m, "index": index} for m in dict.fromkeys(message_ids))
    size = first + len(checked)
    connection.execute(_INSERT_LEAF, leaves)
    connection.execute(_INSERT_NODES, nodes)
    connection.execute(_UPDATE_STATE, {"new_size": size, "new_frontier": b"".join(frontier)})
    if links:
        connection.execute(_INSERT_MESSAGE_LEAVES, links)
    return list(range(first, size))


# --- Reading the tree ------------------------------------------------------------------


@dataclass(frozen=True)
class TreeHead:
    """The log's size and the RFC 6962 root of its leaves."""

    size: int
    root: bytes


def _state(session: Session) -> tuple[int, list[bytes]]:
    state = (
        session.connection()
        .execute(select(_STATE.c.size, _STATE.c.frontier).where(_STATE.c.id == _STATE_ID))
        .first()
    )
    if state is None:
        return 0, []
    return int(state[0]), _split_frontier(int(state[0]), bytes(state[1]))


def tree_size(session: Session) -> int:
    """How many leaves the log has."""
    return _state(session)[0]


def tree_head(session: Session) -> TreeHead:
    """The current size and root, from the stored frontier (no leaf is read)."""
    size, frontier = _state(session)
    return TreeHead(size, _fold(frontier))


def _check_range(start: int, end: int, size: int) -> None:
    for value in (start, end):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue("leaf indexes are integers")
    if not 0 <= start <= end <= size:
        raise NotFound(f"leaves [{start}, {end}) are not in a log of {size} leaves")


def leaf_hashes(session: Session, start: int, end: int) -> list[bytes]:
    """The leaf hashes of indexes [start, end), in order."""
    _check_range(start, end, tree_size(session))
    hashes = [
        bytes(h)
        for (h,) in session.connection().execute(
            select(_LEAVES.c.leaf_hash)
            .where(_LEAVES.c.index >= start, _LEAVES.c.index < end)
            .order_by(_LEAVES.c.index)
        )
    ]
    if len(hashes) != end - start:
        raise DigestMismatch(f"leaves are missing in [{start}, {end}); run audit_verify")
    return hashes


def list_leaves(session: Session, *, start: int = 0, limit: int = 500) -> Sequence[AuditLeaf]:
    """Leaf rows from index `start`, in order, at most `limit` of them."""
    if start < 0 or not 0 < limit <= 10_000:
        raise InvalidValue("start must be non-negative and limit in 1..10000")
    return session.exec(
        select(AuditLeaf)
        .where(col(AuditLeaf.index) >= start)
        .order_by(col(AuditLeaf.index))
        .limit(limit)
    ).all()


def leaves_for_message(session: Session, message_id: str) -> Sequence[AuditLeaf]:
    """The leaves appended about `message_id`, in log order."""
    return session.exec(
        select(AuditLeaf)
        .join(AuditMessageLeaf, col(AuditMessageLeaf.index) == col(AuditLeaf.index))
        .where(AuditMessageLeaf.message_id == message_id)
        .order_by(col(AuditLeaf.index))
    ).all()


def get_leaf(session: Session, index: int) -> AuditLeaf:
    """One leaf row (its bytes, hash and append time)."""
    leaf = session.get(AuditLeaf, index)
    if leaf is None:
        raise NotFound(f"no audit leaf {index}")
    return leaf


def _stored_range(session: Session, level: int, start: int, end: int) -> list[bytes]:
    """The stored hashes of level `level`, indexes [start, end), in order."""
    rows = (
        session.connection()
        .execute(
            select(_NODES.c.index, _NODES.c.hash)
            .where(_NODES.c.level == level, _NODES.c.index >= start, _NODES.c.index < end)
            .order_by(_NODES.c.index)
        )
        .all()
    )
    if len(rows) != end - start or (rows and (rows[0][0], rows[-1][0]) != (start, end - 1)):
        raise DigestMismatch(
            f"stored subtree hashes are missing at level {level}; run audit_verify"
        )
    return [bytes(h) for _, h in rows]


def tree_nodes(session: Session, nodes: Sequence[tuple[int, int]]) -> list[bytes]:
    """The hashes of complete perfect subtrees (level, index), in the order asked.

    Pass a `crypto.merkle` proof plan's `nodes` here as (level, index) pairs, then
    `plan.assemble(hashes)`. Each hash is a stored one, or folded from at most
    2**(NODE_STRIDE - 1) stored ones below it; one query reads each stored level.
    """
    size = tree_size(session)
    wanted: dict[int, set[int]] = {}
    spans = []
    for level, index in nodes:
        if level < 0 or index < 0 or (index + 1) << level > size:
            raise NotFound(f"subtree ({level}, {index}) is not complete in a log of {size}")
        base = level - level % NODE_STRIDE
        first, count = index << (level - base), 1 << (level - base)
        wanted.setdefault(base, set()).update(range(first, first + count))
        spans.append((level, base, first, count))
    found: dict[tuple[int, int], bytes] = {}
    connection = session.connection()
    for base, indexes in wanted.items():
        rows = connection.execute(_READ_NODES, {"level": base, "indexes": sorted(indexes)})
        found.update(((base, int(index)), bytes(h)) for index, h in rows)
    result = []
    for level, base, first, count in spans:
        try:
            hashes = [found[base, i] for i in range(first, first + count)]
        except KeyError as e:
            raise DigestMismatch(
                f"stored subtree hashes are missing at level {base}; run audit_verify"
            ) from e
        for _ in range(level - base):
            hashes = _reduce(hashes)
        result.append(hashes[0])
    return result


def tree_root(session: Session, size: int) -> bytes:
    """The root of the first `size` leaves (any size up to the current one)."""
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= tree_size(session):
        raise NotFound(f"the log has no tree of size {size}")
    return _fold(tree_nodes(session, _root_nodes(size)))


# --- Checkpoints and cosignatures ------------------------------------------------------


def add_checkpoint(
    session: Session, *, size: int, root_hash: bytes, note: str, now: datetime
) -> AuditCheckpoint:
    """Store a checkpoint this node signed. Its root must be the log's root at `size`
    (`Conflict` otherwise); storing the same note again is a no-op, another note for the
    same size is a `DuplicateError`."""
    now = require_aware(now, "now")
    _require_writable(session)
    if not isinstance(note, str) or not note:
        raise InvalidValue("a checkpoint note is the signed note's text")
    if tree_root(session, size) != root_hash:
        raise Conflict(f"the checkpoint's root is not the log's root at size {size}")
    # Two signers of one node (its schedule, an export; or two replicas) may store the
    # same checkpoint at once: the insert yields to a row already there, then the stored
    # note decides (Ed25519 is deterministic, so the same tree head gives the same note).
    connection = session.connection()
    make = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    connection.execute(
        make(_CHECKPOINTS)
        .values(size=size, root_hash=root_hash, note=note, created_at=now)
        .on_conflict_do_nothing(index_elements=["size"])
    )
    existing = session.get(AuditCheckpoint, size)
    if existing is None:
        raise Conflict(f"the checkpoint of size {size} was not stored")
    if existing.note != note:
        raise DuplicateError(f"another checkpoint is stored for size {size}")
    return existing


def get_checkpoint(session: Session, size: int) -> AuditCheckpoint:
    checkpoint = session.get(AuditCheckpoint, size)
    if checkpoint is None:
        raise NotFound(f"no checkpoint of size {size}")
    return checkpoint


def latest_checkpoint(session: Session) -> AuditCheckpoint | None:
    """The checkpoint of the largest size, or None before the first one."""
    return session.exec(
        select(AuditCheckpoint).order_by(col(AuditCheckpoint.size).desc()).limit(1)
    ).first()


def list_checkpoints(
    session: Session, *, since: int = 0, limit: int = 500
) -> Sequence[AuditCheckpoint]:
    """Checkpoints of size >= `since`, smallest first."""
    return session.exec(
        select(AuditCheckpoint)
        .where(col(AuditCheckpoint.size) >= since)
        .order_by(col(AuditCheckpoint.size))
        .limit(limit)
    ).all()


def add_cosignature(
    session: Session, *, checkpoint_size: int, witness: str, line: str, now: datetime
) -> AuditCosignature:
    """Store a peer's cosignature line of one of our checkpoints (verified by the caller
    with `crypto.checkpoint.verify_cosignature`). The same line again is a no-op; another
    line from the same witness for the same checkpoint is a `DuplicateError`."""
    now = require_aware(now, "now")
    _require_writable(session)
    if not witness or not isinstance(line, str) or not line or "\n" in line:
        raise InvalidValue("a cosignature is a witness name and one signature line")
    get_checkpoint(session, checkpoint_size)
    existing = session.get(AuditCosignature, (checkpoint_size, witness))
    if existing is not None:
        if existing.line == line:
            return existing
        raise DuplicateError(f"{witness} already cosigned checkpoint {checkpoint_size}")
    cosignature = AuditCosignature(
        checkpoint_size=checkpoint_size, witness=witness, line=line, received_at=now
    )
    session.add(cosignature)
    session.flush()
    return cosignature


def list_cosignatures(session: Session, checkpoint_size: int) -> Sequence[AuditCosignature]:
    return session.exec(
        select(AuditCosignature)
        .where(AuditCosignature.checkpoint_size == checkpoint_size)
        .order_by(col(AuditCosignature.witness))
    ).all()


def last_cosigned_size(session: Session, witness: str) -> int:
    """The largest checkpoint size `witness` cosigned (0 when it never did)."""
    size = session.exec(
        select(func.max(AuditCosignature.checkpoint_size)).where(
            AuditCosignature.witness == witness
        )
    ).first()
    return 0 if size is None else int(size)


def list_all_cosignatures(session: Session) -> Sequence[AuditCosignature]:
    """Every cosignature of every checkpoint, by checkpoint size then witness."""
    return session.exec(
        select(AuditCosignature).order_by(
            col(AuditCosignature.checkpoint_size), col(AuditCosignature.witness)
        )
    ).all()


# --- Witnessing peers' logs ------------------------------------------------------------


def latest_witnessed(session: Session, party: str) -> WitnessedCheckpoint | None:
    """The largest checkpoint of `party`'s log this node cosigned, or None."""
    return session.exec(
        select(WitnessedCheckpoint)
        .where(WitnessedCheckpoint.party == party)
        .order_by(col(WitnessedCheckpoint.size).desc())
        .limit(1)
    ).first()


def get_witnessed(session: Session, party: str, size: int) -> WitnessedCheckpoint | None:
    """The checkpoint of `party`'s log of `size` leaves this node cosigned, or None."""
    return session.get(WitnessedCheckpoint, (party, size))


def record_witnessed(
    session: Session, *, party: str, size: int, root_hash: bytes, note: str, now: datetime
) -> WitnessedCheckpoint:
    """Keep a peer's checkpoint this node cosigned (the note with our cosignature).

    A witness only ever cosigns growth: a size not above the largest one already
    witnessed is a `Conflict`, another root for a witnessed size a `DuplicateError`.
    """
    now = require_aware(now, "now")
    _require_writable(session)
    if len(root_hash) != HASH_SIZE or not note:
        raise InvalidValue("a witnessed checkpoint is a 32-byte root and its signed note")
    existing = get_witnessed(session, party, size)
    if existing is not None:
        if existing.root_hash == root_hash:
            return existing
        raise DuplicateError(f"another root of {party}'s log at size {size} was cosigned")
    latest = latest_witnessed(session, party)
    if latest is not None and latest.size >= size:
        raise Conflict(f"{party}'s log was already witnessed at size {latest.size}")
    row = WitnessedCheckpoint(
        party=party, size=size, root_hash=root_hash, note=note, cosigned_at=now
    )
    session.add(row)
    session.flush()
    return row


def add_witness_evidence(
    session: Session,
    *,
    party: str,
    size: int,
    root_hash: bytes,
    note: str,
    reason: str,
    now: datetime,
) -> WitnessEvidence:
    """Keep a peer's signed checkpoint that contradicts what this node cosigned."""
    now = require_aware(now, "now")
    _require_writable(session)
    row = WitnessEvidence(
        party=party, size=size, root_hash=root_hash, note=note, reason=reason, detected_at=now
    )
    session.add(row)
    session.flush()
    return row


def list_witness_evidence(session: Session, party: str | None = None) -> Sequence[WitnessEvidence]:
    query = select(WitnessEvidence).order_by(col(WitnessEvidence.id))
    if party is not None:
        query = query.where(WitnessEvidence.party == party)
    return session.exec(query).all()


# --- Verification ----------------------------------------------------------------------


class Tamper(StrEnum):
    """What kind of inconsistency `audit_verify` found first."""

    EDITED = "edited"  # the leaf at this index is not the one appended here
    DELETED = "deleted"  # the leaf appended at this index is gone
    REORDERED = "reordered"  # the leaf at this index was appended at another index
    INSERTED = "inserted"  # the leaf at this index was never appended through the log
    TREE = "tree"  # a stored subtree hash or the state row disagrees with the leaves
    CHECKPOINT = "checkpoint"  # a signed checkpoint's root disagrees with the leaves


@dataclass(frozen=True)
class AuditProblem:
    """The first inconsistency: its kind, the first leaf index it affects, and why."""

    kind: Tamper
    index: int
    detail: str


@dataclass(frozen=True)
class AuditReport:
    """What `audit_verify` recomputed, and the first problem if there is one.

    `root` is the root recomputed from the leaf bytes over [0, `size`) when there is no
    problem; `checkpoints_verified` counts the stored checkpoints whose root matched.
    """

    size: int
    root: bytes | None
    checkpoints_verified: int
    problem: AuditProblem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def check(self) -> None:
        """Raise `DigestMismatch` naming the problem, if there is one."""
        if self.problem is not None:
            p = self.problem
            raise DigestMismatch(f"audit log {p.kind.value} at leaf {p.index}: {p.detail}")


@dataclass
class _Upper:
    """The recomputed levels above one chunk (level `_CHUNK_LEVEL` and up), kept whole:
    n / 4096 hashes at the bottom level."""

    levels: list[list[bytes]] = field(default_factory=lambda: [[]])

    def add(self, chunk_root: bytes) -> Iterator[tuple[int, int, bytes]]:
        """Add a complete chunk; yield the stored-level subtrees it completes above it."""
        self.levels[0].append(chunk_root)
        depth = 0
        while len(self.levels[depth]) % 2 == 0:
            below = self.levels[depth]
            if depth + 1 == len(self.levels):
                self.levels.append([])
            parent = _node_hash(below[-2], below[-1])
            self.levels[depth + 1].append(parent)
            depth += 1
            if _stored(_CHUNK_LEVEL + depth):
                yield _CHUNK_LEVEL + depth, len(self.levels[depth]) - 1, parent

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level - _CHUNK_LEVEL][index]


def _leaf_rows(session: Session, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
    """The leaf rows of [start, end) in index order, as the driver returns them.

    `audit_verify` reads every leaf of the log; SQLAlchemy's row objects would cost it
    twice what the driver's tuples do, and these columns need no type conversion (both
    drivers return integers and bytes).
    """
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    result = connection.exec_driver_sql(
        f'SELECT "index", leaf, leaf_hash FROM audit_leaves'  # noqa: S608 - no input in it
        f' WHERE "index" >= {mark} AND "index" < {mark} ORDER BY "index"',
        (start, end),
    )
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _find(session: Session, value: bytes, *, exclude: int, in_tree: bool) -> int | None:
    """The first other index whose leaf hash (the row's, or the tree's copy) is `value`."""
    if in_tree:
        query = select(_NODES.c.index).where(
            _NODES.c.level == 0, _NODES.c.hash == value, _NODES.c.index != exclude
        )
        query = query.order_by(_NODES.c.index)
    else:
        query = select(_LEAVES.c.index).where(
            _LEAVES.c.leaf_hash == value, _LEAVES.c.index != exclude
        )
        query = query.order_by(_LEAVES.c.index)
    found = session.connection().execute(query.limit(1)).scalar()
    return None if found is None else int(found)


def _tree_copies(session: Session, start: int, end: int) -> dict[int, bytes]:
    rows = session.connection().execute(
        select(_NODES.c.index, _NODES.c.hash).where(
            _NODES.c.level == 0, _NODES.c.index >= start, _NODES.c.index < end
        )
    )
    return {int(i): bytes(h) for i, h in rows}


def _row_hashes(session: Session, start: int, end: int) -> dict[int, bytes]:
    rows = session.connection().execute(
        select(_LEAVES.c.index, _LEAVES.c.leaf_hash).where(
            _LEAVES.c.index >= start, _LEAVES.c.index < end
        )
    )
    return {int(i): bytes(h) for i, h in rows}


def _localise(
    session: Session, start: int, end: int, size: int, subtree: tuple[int, int] | None
) -> AuditProblem | None:
    """Compare self-consistent leaf rows in [start, end) with the tree's copies of their
    hashes, and name the first one that differs and how (a renumbering shows as one leaf
    moved by one). With `subtree` given, the stored hash of that subtree disagreed with
    these leaves: if no leaf differs, the subtree hash itself was altered."""
    rows = _row_hashes(session, start, min(end + 1, size + 1))
    tree = _tree_copies(session, start, min(end + 1, size))
    for i in range(start, end):
        mine, expected = rows.get(i), tree.get(i)
        if expected is None:
            return AuditProblem(Tamper.TREE, i, "the tree's copy of this leaf hash is missing")
        if mine == expected:
            continue
        if mine is not None and mine == tree.get(i + 1) and rows.get(i + 1) == expected:
            # Two neighbours swapped, not a renumbering: each holds the other's leaf.
            return AuditProblem(Tamper.REORDERED, i, f"this is the leaf appended at {i + 1}")
        if mine is not None and mine == tree.get(i + 1):
            return AuditProblem(
                Tamper.DELETED,
                i,
                "the leaf appended here is gone and the later ones were renumbered",
            )
        if rows.get(i + 1) == expected:
            return AuditProblem(
                Tamper.INSERTED, i, "a leaf was inserted here and the later ones were renumbered"
            )
        other = None if mine is None else _find(session, mine, exclude=i, in_tree=True)
        if other is not None:
            return AuditProblem(Tamper.REORDERED, i, f"this is the leaf appended at {other}")
        return AuditProblem(Tamper.EDITED, i, "the leaf and its hash were rewritten")
    if subtree is not None:
        level, index = subtree
        return AuditProblem(
            Tamper.TREE, start, f"the stored hash of subtree ({level}, {index}) was altered"
        )
    return None


def audit_verify(session: Session) -> AuditReport:
    """Recompute the whole log from its leaf bytes and check everything stored against it.

    In leaf order, chunk by chunk, and stopping at the first problem:
    1. Every index below the log's size has a leaf row, and no row lies beyond it
       (`DELETED`, `INSERTED`).
    2. Every leaf's stored hash is SHA-256(0x00 || leaf bytes); a mismatch whose hash
       belongs to another row is a `REORDERED` leaf, else an `EDITED` one.
    3. Every stored subtree hash equals the one recomputed from the leaves; where one
       differs (or for the last few leaves, below every stored subtree), the rows are
       compared with the tree's own copies of the leaf hashes to name the leaf: rows
       rewritten together with their hashes, or renumbered to hide a deletion or an
       insertion. If the rows agree with those copies, the subtree hash was altered.
    4. Every stored checkpoint's root equals the recomputed root at its size
       (`CHECKPOINT`: the tables were rewritten consistently, but not the signed past).
    5. The state row (size, frontier) equals the recomputed tree (`TREE`).
    """
    size, frontier = _state(session)
    checkpoints = [
        (int(size_), bytes(root_))
        for size_, root_ in session.connection().execute(
            select(_CHECKPOINTS.c.size, _CHECKPOINTS.c.root_hash).order_by(_CHECKPOINTS.c.size)
        )
    ]
    upper = _Upper()
    position = 0  # the next checkpoint to verify
    verified_size = 0  # the largest size a verified checkpoint covers

    def report(problem: AuditProblem | None, root: bytes | None = None) -> AuditReport:
        return AuditReport(size, root, position, problem)

    def recomputed(tree_size: int, start: int, levels: list[list[bytes]]) -> list[bytes]:
        """The frontier at `tree_size`: chunk levels below the chunk, `upper` above it."""
        return [
            upper.node(level, index)
            if level >= _CHUNK_LEVEL
            else levels[level][index - (start >> level)]
            for level, index in _root_nodes(tree_size)
        ]

    def check_checkpoints(limit: int, start: int, levels: list[list[bytes]]) -> AuditProblem | None:
        nonlocal position, verified_size
        while position < len(checkpoints) and checkpoints[position][0] <= limit:
            checkpoint_size, checkpoint_root = checkpoints[position]
            if _fold(recomputed(checkpoint_size, start, levels)) != checkpoint_root:
                return AuditProblem(
                    Tamper.CHECKPOINT,
                    verified_size,
                    f"the leaves in [{verified_size}, {checkpoint_size}) are not those"
                    f" the checkpoint of size {checkpoint_size} signed",
                )
            position, verified_size = position + 1, checkpoint_size
        return None

    problem = check_checkpoints(0, 0, [[]])
    if problem is not None:
        return report(problem)
    for start in range(0, size, _CHUNK):
        end = min(start + _CHUNK, size)
        rows = _leaf_rows(session, start, end)
        # Steps 1-2, up to the first bad row. It may not be the first problem: a stored
        # subtree before it may reveal a renumbering, and the earlier problem wins.
        hashes: list[bytes] = []
        row_problem = None
        # The usual case first, in bulk: every row present (the indexes are unique and
        # sorted, so the count and both ends say so) and every stored hash right.
        if len(rows) == end - start and rows[0][0] == start and rows[-1][0] == end - 1:
            computed = [_sha256(b"\x00" + leaf).digest() for _, leaf, _ in rows]
            if computed == [claimed for _, _, claimed in rows]:
                hashes, rows = computed, []
        for index, leaf, claimed in rows:
            expected = start + len(hashes)
            if index != expected:
                row_problem = AuditProblem(Tamper.DELETED, expected, "the leaf row is missing")
                break
            actual = _leaf_hash(leaf)
            if actual != claimed:
                other = _find(session, actual, exclude=index, in_tree=False)
                row_problem = (
                    AuditProblem(Tamper.REORDERED, index, f"this is the leaf appended at {other}")
                    if other is not None
                    else AuditProblem(
                        Tamper.EDITED, index, "the leaf bytes do not match their stored hash"
                    )
                )
                break
            hashes.append(actual)
        else:
            if start + len(hashes) < end:
                missing = start + len(hashes)
                row_problem = AuditProblem(Tamper.DELETED, missing, "the leaf row is missing")
        good_end = start + len(hashes)
        # Step 3 within the chunk, on the levels recomputed from the good rows.
        levels = [hashes]
        for _ in range(_CHUNK_LEVEL):
            levels.append(_reduce(levels[-1]))
        tree_problem = None
        for level in range(NODE_STRIDE, _CHUNK_LEVEL + 1, NODE_STRIDE):
            mine = levels[level]
            first = start >> level
            stored = _stored_or_none(session, level, first, first + len(mine))
            if stored != mine:
                bad = first + next(
                    (k for k in range(len(mine)) if stored is None or stored[k] != mine[k]), 0
                )
                tree_problem = _localise(
                    session, bad << level, (bad + 1) << level, size, (level, bad)
                )
                break
        if tree_problem is None and end == size:
            # The log's last leaves lie below every stored subtree but level 0.
            covered = max(start, good_end - good_end % (1 << NODE_STRIDE))
            tree_problem = _localise(session, covered, good_end, size, None)
        problem = min(
            (p for p in (row_problem, tree_problem) if p is not None),
            key=lambda p: p.index,
            default=None,
        )
        if problem is None and end - start == _CHUNK:
            for level, index, value in upper.add(levels[_CHUNK_LEVEL][0]):
                if _stored_or_none(session, level, index, index + 1) != [value]:
                    problem = AuditProblem(
                        Tamper.TREE,
                        index << level,
                        f"the stored hash of subtree ({level}, {index}) was altered",
                    )
                    break
        # Step 4 for the checkpoints this chunk completes, up to the first problem.
        limit = end if problem is None else problem.index
        problem = check_checkpoints(limit, start, levels) or problem
        if problem is not None:
            return report(problem)
        if end == size and recomputed(size, start, levels) != frontier:
            return report(AuditProblem(Tamper.TREE, size, "the state row's frontier was altered"))
    # Steps 1 and 4 beyond the size: rows the log never appended, checkpoints of leaves
    # it no longer has (the state row was rolled back).
    beyond = (
        session.connection()
        .execute(select(func.min(_LEAVES.c.index)).where(_LEAVES.c.index >= size))
        .scalar()
    )
    if beyond is not None:
        return report(
            AuditProblem(Tamper.INSERTED, int(beyond), "this leaf was not appended through the log")
        )
    if position < len(checkpoints):
        return report(
            AuditProblem(
                Tamper.DELETED,
                size,
                f"the checkpoint of size {checkpoints[position][0]} covers leaves the log"
                " no longer has",
            )
        )
    return report(None, _fold(frontier))


def _stored_or_none(session: Session, level: int, start: int, end: int) -> list[bytes] | None:
    try:
        return _stored_range(session, level, start, end)
    except DigestMismatch:
        return None
