"""RFC 6962 / RFC 9162 Merkle trees: hashes, proofs, and their verification.

This is the append-only log behind the audit trail (DESIGN guarantee 7). An auditor's
offline verifier needs only this module (and `checkpoint` for the signed tree heads).

Invariants:
- Hashing is RFC 6962 section 2.1 (RFC 9162 section 2.1.1): a leaf hashes as
  SHA-256(0x00 || leaf), an interior node as SHA-256(0x01 || left || right), and the empty
  tree as SHA-256(""). The two prefixes keep a leaf from ever passing for a node (second
  preimage), and the tree shape is the RFC's (left subtree = the largest power of two
  strictly smaller than the size), so every size, not only powers of two, has one root.
- A `NodeId(level, index)` names a *perfect* subtree: the 2**level leaves from
  index * 2**level. Perfect subtrees never change once complete, so they can be stored;
  every root and proof element is one of them or a right-edge fold of a few of them.
- `verify_inclusion` and `verify_consistency` follow RFC 9162 sections 2.1.3.2 and
  2.1.4.2 step by step; they raise `VerificationError` on any failure (wrong size, index,
  root, a proof element of the wrong length, one too many or too few) and return evidence
  on success, never a bool.
- Proof *generation* is split in two: a `ProofPlan` says which perfect subtrees a proof
  needs (pure arithmetic on sizes), and a node source supplies their hashes: a list of
  leaf hashes, a `MerkleTree` kept in memory, or a database that stores subtree hashes
  (`storage.tree_nodes`, given (level, index) pairs). The plan for a tree of 10**6
  leaves names about 20 nodes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .errors import VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "ConsistencyEvidence",
    "InclusionEvidence",
    "MerkleTree",
    "NodeId",
    "ProofPlan",
    "consistency_plan",
    "consistency_proof",
    "inclusion_plan",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """The RFC 6962 hash of one leaf: SHA-256(0x00 || leaf)."""
    return _sha256(_LEAF_PREFIX + bytes(leaf)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 6962 hash of an interior node: SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


@dataclass(frozen=True, order=True, slots=True)
class NodeId:
    """A perfect subtree: the 2**level leaves starting at index * 2**level."""

    level: int
    index: int

    @property
    def begin(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


# --- Tree arithmetic -------------------------------------------------------------------


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n > 1): RFC 9162's k."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_nodes(begin: int, end: int) -> tuple[NodeId, ...]:
    """The perfect subtrees whose right fold is MTH(D[begin:end]), left to right.

    MTH splits off the largest power of two k < n on the left; every range a proof or a
    root asks for starts at a multiple of that k, so each piece is an aligned subtree.
    """
    nodes = []
    while begin < end:
        k = 1 << ((end - begin).bit_length() - 1)
        level = k.bit_length() - 1
        if begin % k:
            raise AssertionError("unaligned subtree range")  # pragma: no cover
        nodes.append(NodeId(level, begin >> level))
        begin += k
    return tuple(nodes)


def _fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of a right-edge decomposition: h0 . (h1 . (h2 ...))."""
    result = hashes[-1]
    for h in reversed(hashes[:-1]):
        result = _sha256(_NODE_PREFIX + h + result).digest()
    return result


def _check_size(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


@dataclass(frozen=True)
class ProofPlan:
    """The perfect subtrees a proof is made of.

    `elements[i]` lists, left to right, the subtrees whose right fold is proof element i
    (one subtree, except at the right edge of a tree whose size is not a power of two).
    `nodes` lists every subtree once; `assemble` takes their hashes in that order.
    """

    elements: tuple[tuple[NodeId, ...], ...]

    @property
    def nodes(self) -> tuple[NodeId, ...]:
        return tuple(dict.fromkeys(n for element in self.elements for n in element))

    def assemble(self, hashes: Sequence[bytes] | Mapping[NodeId, bytes]) -> list[bytes]:
        """The proof, from the hashes of `nodes` (a sequence in that order, or a mapping)."""
        if isinstance(hashes, Mapping):
            lookup = dict(hashes)
        else:
            nodes = self.nodes
            if len(hashes) != len(nodes):
                raise ValueError(f"the plan needs {len(nodes)} node hashes, got {len(hashes)}")
            lookup = dict(zip(nodes, hashes, strict=True))
        proof = []
        for element in self.elements:
            parts = []
            for node in element:
                value = lookup.get(node)
                if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                    raise ValueError(f"no {HASH_SIZE}-byte hash for node {node}")
                parts.append(value)
            proof.append(_fold(parts))
        return proof


def root_nodes(size: int) -> tuple[NodeId, ...]:
    """The perfect subtrees whose right fold is the root of a tree of `size` leaves."""
    return _range_nodes(0, _check_size(size, "size"))


def inclusion_plan(index: int, size: int) -> ProofPlan:
    """The subtrees of the audit path of leaf `index` in a tree of `size` (RFC 9162 2.1.3.1)."""
    _check_size(index, "index")
    _check_size(size, "size")
    if index >= size:
        raise ValueError(f"leaf {index} is not in a tree of {size} leaves")
    # PATH(m, D[n]) recurses into the half holding m and appends the other half's MTH, so
    # the proof lists siblings bottom-up: collect them top-down, then reverse.
    elements = []
    begin, end = 0, size
    while end - begin > 1:
        k = _split(end - begin)
        if index < begin + k:
            elements.append(_range_nodes(begin + k, end))
            end = begin + k
        else:
            elements.append(_range_nodes(begin, begin + k))
            begin += k
    return ProofPlan(tuple(reversed(elements)))


def consistency_plan(old_size: int, new_size: int) -> ProofPlan:
    """The subtrees of the proof that `old_size` is a prefix of `new_size` (RFC 9162 2.1.4.1)."""
    _check_size(old_size, "old_size")
    _check_size(new_size, "new_size")
    if old_size > new_size:
        raise ValueError(f"a tree of {old_size} leaves cannot be a prefix of {new_size}")
    if old_size in (0, new_size):
        return ProofPlan(())
    # SUBPROOF(m, D[n], b), unrolled: m is relative to [begin, end); `complete` is b.
    elements = []
    begin, end, m, complete = 0, new_size, old_size, True
    while True:
        n = end - begin
        if m == n:
            if not complete:
                elements.append(_range_nodes(begin, end))
            break
        k = _split(n)
        if m <= k:
            elements.append(_range_nodes(begin + k, end))
            end = begin + k
        else:
            elements.append(_range_nodes(begin, begin + k))
            begin += k
            m -= k
            complete = False
    return ProofPlan(tuple(reversed(elements)))


# --- Node sources ----------------------------------------------------------------------


def _reduce(hashes: list[bytes]) -> list[bytes]:
    """One level up: the parents of the complete pairs (an odd last hash is dropped)."""
    pairs = iter(hashes)
    # An odd last hash is not a pair: zip drops it, on purpose.
    return [
        _sha256(_NODE_PREFIX + left + right).digest()
        for left, right in zip(pairs, pairs, strict=False)
    ]


def _check_hashes(leaf_hashes: Sequence[bytes]) -> None:
    for h in leaf_hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE} bytes")


class _ListSource:
    """Perfect subtree hashes computed on demand from a list of leaf hashes."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        _check_hashes(leaf_hashes)
        self._leaves = leaf_hashes

    def hashes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        result = {}
        for node in nodes:
            level = list(self._leaves[node.begin : node.end])
            for _ in range(node.level):
                level = _reduce(level)
            result[node] = level[0]
        return result


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of the leaf hashes (any number of them; the empty tree hashes to EMPTY_ROOT)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    nodes = root_nodes(len(leaf_hashes))
    found = _ListSource(leaf_hashes).hashes(nodes)
    return _fold([found[n] for n in nodes])


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf `index` in the tree of `leaf_hashes`.

    This hashes about len(leaf_hashes) nodes; for many proofs over one large tree keep a
    `MerkleTree`, or fetch the plan's nodes from storage.
    """
    plan = inclusion_plan(index, len(leaf_hashes))
    return plan.assemble(_ListSource(leaf_hashes).hashes(plan.nodes))


def consistency_proof(old_size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """The proof that the first `old_size` leaves are a prefix of the tree of `leaf_hashes`."""
    plan = consistency_plan(old_size, len(leaf_hashes))
    return plan.assemble(_ListSource(leaf_hashes).hashes(plan.nodes))


class MerkleTree:
    """A whole tree in memory: every perfect subtree hash, so proofs cost O(log n).

    Building it from n leaf hashes hashes n - 1 nodes once; `append` is amortised O(1).
    Roots and proofs are available for every size up to the current one.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        leaves = list(leaf_hashes)
        _check_hashes(leaves)
        self._levels = [leaves]
        while len(self._levels[-1]) > 1:
            self._levels.append(_reduce(self._levels[-1]))

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, leaf_hash: bytes) -> None:
        _check_hashes([leaf_hash])
        self._levels[0].append(leaf_hash)
        level = 0
        while len(self._levels[level]) % 2 == 0:
            below = self._levels[level]
            parent = node_hash(below[-2], below[-1])
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(parent)
            level += 1

    def node(self, node: NodeId) -> bytes:
        """The hash of a complete perfect subtree."""
        if node.level >= len(self._levels) or node.index >= len(self._levels[node.level]):
            raise ValueError(f"subtree {node} is not complete in a tree of {self.size}")
        return self._levels[node.level][node.index]

    def _size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if _check_size(size, "size") > self.size:
            raise ValueError(f"the tree has only {self.size} leaves, not {size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        nodes = root_nodes(self._size(size))
        return _fold([self.node(n) for n in nodes]) if nodes else EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        plan = inclusion_plan(index, self._size(size))
        return plan.assemble([self.node(n) for n in plan.nodes])

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        plan = consistency_plan(old_size, self._size(new_size))
        return plan.assemble([self.node(n) for n in plan.nodes])


class CompactRange:
    """The frontier of a growing tree: one hash per set bit of its size, O(log n) in all.

    It holds the roots of the perfect subtrees that `root_nodes(size)` names, left to
    right, so the current root is a fold of at most 64 hashes, and `append` hashes one
    leaf into it in O(log n), returning the perfect subtrees it completed (storage keeps
    them for proofs).
    """

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Resume from a stored frontier; its length must be the popcount of `size`."""
        _check_size(size, "size")
        _check_hashes(hashes)
        if len(hashes) != size.bit_count():
            raise ValueError(f"a frontier of size {size} has {size.bit_count()} hashes")
        compact = cls()
        compact._size = size
        compact._hashes = list(hashes)
        return compact

    @property
    def size(self) -> int:
        return self._size

    @property
    def frontier(self) -> tuple[bytes, ...]:
        return tuple(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[NodeId, bytes]]:
        """Add the next leaf hash; return the subtrees it completed, the leaf first."""
        _check_hashes([leaf_hash])
        index = self._size
        completed = [(NodeId(0, index), leaf_hash)]
        current, level = leaf_hash, 0
        # Each set low bit of the old size is a left sibling waiting for this subtree.
        while (index >> level) & 1:
            current = node_hash(self._hashes.pop(), current)
            level += 1
            completed.append((NodeId(level, index >> level), current))
        self._hashes.append(current)
        self._size += 1
        return completed

    def root(self) -> bytes:
        return _fold(self._hashes) if self._hashes else EMPTY_ROOT


# --- Verification ----------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionEvidence:
    """Leaf `leaf_hash` is at `index` in the tree of `size` leaves with root `root`."""

    leaf_hash: bytes
    index: int
    size: int
    root: bytes


@dataclass(frozen=True)
class ConsistencyEvidence:
    """The tree (`old_size`, `old_root`) is a prefix of the tree (`new_size`, `new_root`)."""

    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes


def _require_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise VerificationError(f"{what} is not a {HASH_SIZE}-byte hash")
    return value


def _require_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise VerificationError(f"{what} is not a non-negative integer")
    return value


def _require_proof(proof: Sequence[bytes]) -> list[bytes]:
    return [_require_hash(p, f"proof element {i}") for i, p in enumerate(proof)]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> InclusionEvidence:
    """Check an audit path (RFC 9162 section 2.1.3.2); raise `VerificationError` or return
    evidence. Every input is checked, so a proof from an untrusted peer can go in as is."""
    leaf_hash = _require_hash(leaf_hash, "leaf hash")
    root = _require_hash(root, "root")
    index = _require_count(index, "leaf index")
    size = _require_count(size, "tree size")
    path = _require_proof(proof)
    # 1. The leaf must be inside the tree.
    if index >= size:
        raise VerificationError(f"leaf index {index} is outside a tree of {size} leaves")
    # 2-3. fn walks the leaf's position up the tree, sn the last leaf's; r the running hash.
    fn, sn, r = index, size - 1, leaf_hash
    # 4. Combine with each element, left or right as the bits of fn and sn say.
    for p in path:
        # 4a. A proof that goes on past the root (trailing elements) is refused.
        if sn == 0:
            raise VerificationError("inclusion proof is longer than the tree is high")
        # 4b. fn is a right child, or the last node of its level (its sibling was hoisted).
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        # 4c.
        fn >>= 1
        sn >>= 1
    # 5. The path must reach exactly the root (no element missing) and give its hash.
    if sn != 0:
        raise VerificationError("inclusion proof is shorter than the tree is high")
    if r != root:
        raise VerificationError("inclusion proof does not lead to the root")
    return InclusionEvidence(leaf_hash, index, size, root)


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> ConsistencyEvidence:
    """Check that the old tree is a prefix of the new one (RFC 9162 section 2.1.4.2); raise
    `VerificationError` or return evidence."""
    old_root = _require_hash(old_root, "old root")
    new_root = _require_hash(new_root, "new root")
    old_size = _require_count(old_size, "old tree size")
    new_size = _require_count(new_size, "new tree size")
    path = _require_proof(proof)
    evidence = ConsistencyEvidence(old_size, new_size, old_root, new_root)
    # 0. Trivial cases, where the proof must be empty: a log never shrinks; an empty tree
    #    (whose root is the hash of nothing) is a prefix of every tree; a tree is consistent
    #    with itself only if its root did not change (a rewrite at the same size).
    if old_size > new_size:
        raise VerificationError(f"the tree shrank from {old_size} to {new_size} leaves")
    if old_size == 0 or old_size == new_size:
        if path:
            raise VerificationError("a trivial consistency proof must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise VerificationError("the root of an empty tree is not the empty hash")
        if old_size == new_size and old_root != new_root:
            raise VerificationError("two different roots for the same tree size")
        return evidence
    # 1. A real proof is never empty.
    if not path:
        raise VerificationError("consistency proof is empty")
    # 2. If the old tree is a perfect subtree, its root is the proof's implicit first node.
    if old_size & (old_size - 1) == 0:
        path = [old_root, *path]
    # 3-4. fn and sn are the last leaves of the two trees; skip the levels where the old
    #      tree's last node is a right child, which the proof does not repeat.
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # 5. Both running hashes start at the first element.
    fr = sr = path[0]
    # 6. Each further element extends the old root, the new root, or both.
    for c in path[1:]:
        # 6a. Trailing elements past the new root are refused.
        if sn == 0:
            raise VerificationError("consistency proof is longer than the tree is high")
        # 6b.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        # 6c.
        fn >>= 1
        sn >>= 1
    # 7. Both roots must come out, and the path must reach the top of the new tree.
    if sn != 0:
        raise VerificationError("consistency proof is shorter than the tree is high")
    if fr != old_root:
        raise VerificationError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise VerificationError("consistency proof does not lead to the new root")
    return evidence
