"""RFC 6962 Merkle trees: known answers, proofs of every shape, and tampered proofs refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.crypto.errors import VerificationError
from accord.crypto.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ConsistencyEvidence,
    InclusionEvidence,
    MerkleTree,
    NodeId,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_nodes,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "merkle"
RFC6962 = json.loads((VECTORS / "rfc6962.json").read_text(encoding="utf-8"))
LEAVES = [bytes.fromhex(x) for x in RFC6962["leaves"]]
ROOTS = [bytes.fromhex(x) for x in RFC6962["roots"]]
LEAF_HASHES = [leaf_hash(x) for x in LEAVES]


def h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


def leaves_of(n: int) -> list[bytes]:
    return [leaf_hash(f"событие {i}".encode()) for i in range(n)]


# --- Committed vectors -----------------------------------------------------------------


def test_vectors_do_not_drift() -> None:
    from tests.vectors.merkle.generate import render

    for name, data in render().items():
        assert (VECTORS / name).read_bytes() == data, f"{name} drifted from its generator"


@pytest.mark.parametrize("case", RFC6962["hasher"], ids=lambda c: c["desc"])
def test_hasher_known_answers(case: dict) -> None:
    if case["kind"] == "empty":
        got = root([])
    elif case["kind"] == "leaf":
        got = leaf_hash(bytes.fromhex(case["leaf"]))
    else:
        got = node_hash(bytes.fromhex(case["left"]), bytes.fromhex(case["right"]))
    assert got.hex() == case["want"]


def test_reference_roots_for_every_size_1_to_8() -> None:
    assert [root(LEAF_HASHES[:n]) for n in range(1, 9)] == ROOTS
    assert root([]) == EMPTY_ROOT
    tree = MerkleTree(LEAF_HASHES)
    assert [tree.root(n) for n in range(1, 9)] == ROOTS


@pytest.mark.parametrize(
    "case",
    RFC6962["inclusion"],
    ids=lambda c: f"{c['leaf_index']}of{c['tree_size']}-{c['desc']}",
)
def test_inclusion_vectors(case: dict) -> None:
    args = (
        bytes.fromhex(case["leaf_hash"]),
        case["leaf_index"],
        case["tree_size"],
        h(case["proof"]),
        bytes.fromhex(case["root"]),
    )
    if case["valid"]:
        evidence = verify_inclusion(*args)
        assert (evidence.index, evidence.size) == (case["leaf_index"], case["tree_size"])
    else:
        with pytest.raises(VerificationError):
            verify_inclusion(*args)


@pytest.mark.parametrize(
    "case", RFC6962["consistency"], ids=lambda c: f"{c['size1']}to{c['size2']}-{c['desc']}"
)
def test_consistency_vectors(case: dict) -> None:
    args = (
        case["size1"],
        case["size2"],
        bytes.fromhex(case["root1"]),
        bytes.fromhex(case["root2"]),
        h(case["proof"]),
    )
    if case["valid"]:
        assert isinstance(verify_consistency(*args), ConsistencyEvidence)
    else:
        with pytest.raises(VerificationError):
            verify_consistency(*args)


def test_reference_proofs_are_the_ones_we_generate() -> None:
    for case in RFC6962["inclusion"]:
        if case["valid"] and case["desc"] == "happy path":
            index, size = case["leaf_index"], case["tree_size"]
            assert inclusion_proof(index, LEAF_HASHES[:size]) == h(case["proof"])
    for case in RFC6962["consistency"]:
        if case["valid"] and case["desc"] == "happy path":
            old, new = case["size1"], case["size2"]
            assert consistency_proof(old, LEAF_HASHES[:new]) == h(case["proof"])


def _elements(plan_elements: tuple[tuple[NodeId, ...], ...]) -> list[list[list[int]]]:
    return [[[n.level, n.index] for n in element] for element in plan_elements]


@pytest.mark.parametrize(
    "case", RFC6962["inclusion_nodes"], ids=lambda c: f"{c['index']}of{c['size']}"
)
def test_inclusion_plans_name_upstream_subtrees(case: dict) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            inclusion_plan(case["index"], case["size"])
    else:
        assert _elements(inclusion_plan(case["index"], case["size"]).elements) == case["elements"]


@pytest.mark.parametrize(
    "case", RFC6962["consistency_nodes"], ids=lambda c: f"{c['size1']}to{c['size2']}"
)
def test_consistency_plans_name_upstream_subtrees(case: dict) -> None:
    if case.get("error"):
        with pytest.raises(ValueError):
            consistency_plan(case["size1"], case["size2"])
    else:
        plan = consistency_plan(case["size1"], case["size2"])
        assert _elements(plan.elements) == case["elements"]


# --- Generation ------------------------------------------------------------------------


def test_every_proof_of_small_trees_verifies_and_the_tree_agrees() -> None:
    hashes = leaves_of(40)
    tree = MerkleTree()
    compact = CompactRange()
    for n in range(1, len(hashes) + 1):
        tree.append(hashes[n - 1])
        completed = compact.append(hashes[n - 1])
        assert completed[0] == (NodeId(0, n - 1), hashes[n - 1])
        assert all(tree.node(node) == value for node, value in completed)
        head = root(hashes[:n])
        assert tree.root() == compact.root() == head
        assert [tree.node(node) for node in root_nodes(n)] == list(compact.frontier)
        for i in range(n):
            proof = inclusion_proof(i, hashes[:n])
            assert tree.inclusion_proof(i) == proof
            assert verify_inclusion(hashes[i], i, n, proof, head) == InclusionEvidence(
                hashes[i], i, n, head
            )
        for old in range(n + 1):
            proof = consistency_proof(old, hashes[:n])
            assert tree.consistency_proof(old) == proof
            verify_consistency(old, n, root(hashes[:old]), head, proof)


def test_compact_range_resumes_from_its_frontier() -> None:
    hashes = leaves_of(21)
    compact = CompactRange()
    for x in hashes[:13]:
        compact.append(x)
    resumed = CompactRange.from_frontier(compact.size, compact.frontier)
    for x in hashes[13:]:
        resumed.append(x)
    assert resumed.root() == root(hashes)
    with pytest.raises(ValueError):
        CompactRange.from_frontier(13, compact.frontier[:-1])


def test_plan_assembles_from_a_mapping_or_the_node_order() -> None:
    hashes = leaves_of(95)
    tree = MerkleTree(hashes)
    plan = inclusion_plan(81, 95)
    by_order = plan.assemble([tree.node(n) for n in plan.nodes])
    by_node = plan.assemble({n: tree.node(n) for n in plan.nodes})
    assert by_order == by_node == inclusion_proof(81, hashes)
    with pytest.raises(ValueError):
        plan.assemble([tree.node(n) for n in plan.nodes][:-1])
    with pytest.raises(ValueError):
        plan.assemble({})


def test_past_sizes_and_refused_arguments() -> None:
    tree = MerkleTree(leaves_of(10))
    with pytest.raises(ValueError):
        tree.root(11)
    with pytest.raises(ValueError):
        tree.node(NodeId(1, 5))
    with pytest.raises(ValueError):
        consistency_plan(-1, 3)
    with pytest.raises(ValueError):
        inclusion_plan(True, 3)
    with pytest.raises(ValueError):
        MerkleTree([b"short"])
    assert tree.consistency_proof(3, 7) == consistency_proof(3, leaves_of(10)[:7])


def test_proof_of_a_million_leaves_needs_about_twenty_subtrees() -> None:
    plan = inclusion_plan(654_321, 1_000_000)
    assert len(plan.elements) == 20
    assert len(plan.nodes) <= 2 * 20
    assert len(consistency_plan(999_999, 1_000_000).nodes) <= 2 * 20


# --- Properties ------------------------------------------------------------------------


def _flip(value: bytes, bit: int) -> bytes:
    return bytes([value[0] ^ (1 << bit)]) + value[1:]


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=300))
def test_random_inclusion_proofs_verify_and_any_change_fails(
    data: st.DataObject, size: int
) -> None:
    hashes = leaves_of(size)
    tree = MerkleTree(hashes)
    head = tree.root()
    index = data.draw(st.integers(0, size - 1), label="index")
    proof = tree.inclusion_proof(index)
    verify_inclusion(hashes[index], index, size, proof, head)

    def refused(**changes: object) -> None:
        args = {"leaf_hash": hashes[index], "index": index, "size": size, "proof": proof}
        args |= {"root": head} | changes
        with pytest.raises(VerificationError):
            verify_inclusion(**args)  # type: ignore[arg-type]

    bit = data.draw(st.integers(0, 7), label="bit")
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="element")
        changed = list(proof)
        changed[position] = _flip(changed[position], bit)
        refused(proof=changed)
        refused(proof=proof[:-1])
    refused(proof=[*proof, head])
    refused(leaf_hash=_flip(hashes[index], bit))
    refused(root=_flip(head, bit))
    other = data.draw(st.integers(0, 2 * size).filter(lambda i: i != index), label="other index")
    refused(index=other)
    # The root does not commit to the size (a checkpoint signs both), so a size that gives
    # the same path shape would pass; these never do (upstream's probes, and one more
    # level for a perfect tree).
    for other_size in {2 * size, size // 2, size + (size & (size - 1) == 0)} - {size}:
        refused(size=other_size)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), size=st.integers(min_value=1, max_value=300))
def test_random_consistency_proofs_verify_and_any_change_fails(
    data: st.DataObject, size: int
) -> None:
    hashes = leaves_of(size)
    tree = MerkleTree(hashes)
    old = data.draw(st.integers(0, size), label="old size")
    old_root, new_root = tree.root(old), tree.root()
    proof = tree.consistency_proof(old)
    verify_consistency(old, size, old_root, new_root, proof)

    def refused(**changes: object) -> None:
        args = {"old_size": old, "new_size": size, "old_root": old_root, "new_root": new_root}
        args |= {"proof": proof} | changes
        with pytest.raises(VerificationError):
            verify_consistency(**args)  # type: ignore[arg-type]

    bit = data.draw(st.integers(0, 7), label="bit")
    refused(old_root=_flip(old_root, bit))
    if old > 0:
        # (An empty tree is a prefix of every tree, so from size 0 any new root passes.)
        refused(new_root=_flip(new_root, bit))
    refused(proof=[*proof, new_root])
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1), label="element")
        changed = list(proof)
        changed[position] = _flip(changed[position], bit)
        refused(proof=changed)
        refused(proof=proof[:-1])
    if 0 < old < size:
        # As for inclusion, sizes are bound through the shape of the proof: upstream's
        # probes (old size +-1 and ^2, new size *2 and /2) all change it.
        for other_old in {old - 1, old + 1, old ^ 2} - {old}:
            refused(old_size=other_old)
        for other_new in {2 * size, size // 2} - {size}:
            refused(new_size=other_new)
