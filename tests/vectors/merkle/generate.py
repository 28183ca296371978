"""Write the audit log's known-answer vectors: RFC 6962 trees and C2SP signed notes.

    python -m tests.vectors.merkle.generate          # rewrite tests/vectors/merkle/*.json
    python -m tests.vectors.merkle.generate --check  # exit 1 if the committed files drifted

Nothing here is computed by Accord's code: every hash, proof, key and signature below is
transcribed from the source named beside it, and the negative cases are derived from the
transcribed ones by the same mutations the upstream tests apply (flip a bit, shift an
index, append or prepend garbage...). Only hashlib is used, for the one upstream case that
hashes a leaf ("data"). The files are committed so that a reviewer sees the data and a
test sees the same bytes; `tests/crypto/test_merkle.py` checks they do not drift.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
U64 = 2**64

TD_MERKLE = "github.com/transparency-dev/merkle"
VERIFY_TEST = f"{TD_MERKLE} proof/verify_test.go"
PROOF_TEST = f"{TD_MERKLE} proof/proof_test.go"
HASHER_TEST = f"{TD_MERKLE} rfc6962/rfc6962_test.go"

SOURCES = {
    "leaves": (
        "The eight leaves of the RFC 6962 reference tree (the certificate-transparency"
        f" reference implementation's test data), as `leaves` in {VERIFY_TEST}."
    ),
    "roots": f"MTH of the first 1..8 leaves: `roots` in {VERIFY_TEST}.",
    "inclusion": (
        f"Valid audit paths: `inclusionProofs` in {VERIFY_TEST} (upstream counts leaves from 1;"
        " here from 0). Invalid ones: each valid path put through `corruptInclusionProof`"
        " of the same file (upstream also commits them as testdata/inclusion/*/*.json),"
        " plus the cases of TestVerifyInclusion and TestVerifyInclusionSingleEntry."
    ),
    "consistency": (
        f"Valid proofs: `consistencyProofs` in {VERIFY_TEST}. Invalid ones: each non-empty"
        " valid proof put through `corruptConsistencyProof` (testdata/consistency/*/*.json"
        " upstream), plus the table of TestVerifyConsistency. Where Accord is stricter"
        " than upstream (a root is always 32 bytes; the root of the empty tree is"
        " SHA-256 of nothing), `upstream_valid` keeps upstream's answer and `note` says why."
    ),
    "hasher": f"TestRFC6962Hasher in {HASHER_TEST}.",
    "inclusion_nodes": (
        f"TestInclusion in {PROOF_TEST}: the perfect subtrees of each audit path. Upstream"
        " lists node ids bottom-up with a [begin, end) run to rehash into one element;"
        " here each element lists its subtrees left to right (the run reversed)."
    ),
    "consistency_nodes": f"TestConsistency in {PROOF_TEST}, converted the same way.",
}


def dh(text: str) -> bytes:
    return bytes.fromhex(text)


LEAVES = [
    dh(""),
    dh("00"),
    dh("10"),
    dh("2021"),
    dh("3031"),
    dh("40414243"),
    dh("5051525354555657"),
    dh("606162636465666768696a6b6c6d6e6f"),
]
ROOTS = [
    dh("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
    dh("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
    dh("aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77"),
    dh("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    dh("4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4"),
    dh("76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef"),
    dh("ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"),
    dh("5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"),
]
# (1-based leaf, tree size, path), as upstream writes them.
INCLUSION = [
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        2,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = dh("abacaba000000000000000000000000000000000000000000060061e00123456")
EMPTY_HASH = dh("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
# The RFC 6962 leaf hash of the first, empty, leaf: upstream's roots[0].
EMPTY_LEAF_HASH = ROOTS[0]


def hx(items: list[bytes]) -> list[str]:
    return [i.hex() for i in items]


def inclusion_case(
    desc: str, index: int, size: int, leaf: bytes, root: bytes, proof: list[bytes], valid: bool
) -> dict[str, Any]:
    return {
        "desc": desc,
        "leaf_index": index,
        "tree_size": size,
        "leaf_hash": leaf.hex(),
        "root": root.hex(),
        "proof": hx(proof),
        "valid": valid,
    }


def corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """corruptInclusionProof of verify_test.go (uint64 arithmetic, as upstream)."""
    probes = [
        ("leafIndex - 1", (index - 1) % U64, size, root, leaf, proof),
        ("leafIndex + 1", index + 1, size, root, leaf, proof),
        ("leafIndex ^ 2", index ^ 2, size, root, leaf, proof),
        ("treeSize * 2", index, size * 2, root, leaf, proof),
        ("treeSize / 2", index, size // 2, root, leaf, proof),
        ("wrong leaf", index, size, root, b"WrongLeaf", proof),
        ("empty root", index, size, EMPTY_HASH, leaf, proof),
        ("random root", index, size, SOME_HASH, leaf, proof),
        ("trailing garbage", index, size, root, leaf, [*proof, b""]),
        ("trailing root", index, size, root, leaf, [*proof, root]),
        ("preceding garbage", index, size, root, leaf, [b"", *proof]),
        ("preceding root", index, size, root, leaf, [root, *proof]),
    ]
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 8]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 3", index, size, root, leaf, wrong))
    if proof:
        probes.append(("removed component", index, size, root, leaf, proof[:-1]))
    if len(proof) > 1:
        probes.append(
            ("inserted component", index, size, root, leaf, [proof[0], SOME_HASH, *proof[1:]])
        )
    return [(d, i, s, lf, r, p) for d, i, s, r, lf, p in probes]


def inclusion_cases() -> list[dict[str, Any]]:
    cases = []
    happy = [(1, 1, [])] + [(leaf, size, [dh(p) for p in path]) for leaf, size, path in INCLUSION]
    for leaf, size, path in happy:
        index, root = leaf - 1, ROOTS[size - 1]
        leaf_hash = EMPTY_LEAF_HASH if index == 0 else _leaf_hash(LEAVES[index])
        cases.append(inclusion_case("happy path", index, size, leaf_hash, root, path, True))
        for desc, i, s, lf, r, p in corrupt_inclusion(index, size, path, root, leaf_hash):
            cases.append(inclusion_case(desc, i, s, lf, r, p, False))
    # TestVerifyInclusion: index/size pairs no empty proof can satisfy.
    for index, size in [(0, 0), (0, 1), (1, 0), (2, 1)]:
        for leaf, root in [(SOME_HASH, b""), (b"", EMPTY_HASH), (SOME_HASH, EMPTY_HASH)]:
            cases.append(inclusion_case("impossible probe", index, size, leaf, root, [], False))
    # TestVerifyInclusionSingleEntry: a one-leaf tree's root is its leaf hash.
    data = _leaf_hash(b"data")
    for desc, root, leaf, valid in [
        ("single entry", data, data, True),
        ("single entry, empty leaf hash", data, b"", False),
        ("single entry, empty root", b"", data, False),
        ("single entry, both empty", b"", b"", False),
    ]:
        cases.append(inclusion_case(desc, 0, 1, leaf, root, [], valid))
    return cases


def _leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def consistency_case(
    desc: str,
    size1: int,
    size2: int,
    root1: bytes,
    root2: bytes,
    proof: list[bytes],
    valid: bool,
    upstream_valid: bool | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    case: dict[str, Any] = {
        "desc": desc,
        "size1": size1,
        "size2": size2,
        "root1": root1.hex(),
        "root2": root2.hex(),
        "proof": hx(proof),
        "valid": valid,
    }
    if upstream_valid is not None and upstream_valid != valid:
        case["upstream_valid"] = upstream_valid
        case["note"] = note
    return case


def corrupt_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, int, int, bytes, bytes, list[bytes]]]:
    """corruptConsistencyProof of verify_test.go."""
    probes = [
        ("size1 - 1", (size1 - 1) % U64, size2, root1, root2, proof),
        ("size1 + 1", size1 + 1, size2, root1, root2, proof),
        ("size1 ^ 2", size1 ^ 2, size2, root1, root2, proof),
        ("size2 * 2", size1, size2 * 2, root1, root2, proof),
        ("size2 / 2", size1, size2 // 2, root1, root2, proof),
        ("wrong root1", size1, size2, b"WrongRoot", root2, proof),
        ("wrong root2", size1, size2, root1, b"WrongRoot", proof),
        ("swapped roots", size1, size2, root2, root1, proof),
        ("empty proof", size1, size2, root1, root2, []),
        ("trailing garbage", size1, size2, root1, root2, [*proof, b""]),
        ("trailing root1", size1, size2, root1, root2, [*proof, root1]),
        ("trailing root2", size1, size2, root1, root2, [*proof, root2]),
        ("preceding garbage", size1, size2, root1, root2, [b"", *proof]),
        ("preceding root1", size1, size2, root1, root2, [root1, *proof]),
        ("preceding root2", size1, size2, root1, root2, [root2, *proof]),
        ("preceding proof[0]", size1, size2, root1, root2, [proof[0], *proof]),
    ]
    if proof:
        probes.append(("truncated proof", size1, size2, root1, root2, proof[:-1]))
    for i in range(len(proof)):
        wrong = list(proof)
        wrong[i] = bytes([wrong[i][0] ^ 16]) + wrong[i][1:]
        probes.append((f"modified proof[{i}] bit 4", size1, size2, root1, root2, wrong))
    return probes


def consistency_cases() -> list[dict[str, Any]]:
    cases = []
    for size1, size2, path in CONSISTENCY:
        proof = [dh(p) for p in path]
        root1, root2 = ROOTS[size1 - 1], ROOTS[size2 - 1]
        cases.append(consistency_case("happy path", size1, size2, root1, root2, proof, True))
        if proof:  # upstream corrupts non-trivial proofs only
            for desc, s1, s2, r1, r2, p in corrupt_consistency(size1, size2, root1, root2, proof):
                cases.append(consistency_case(desc, s1, s2, r1, r2, p, False))
    # The table of TestVerifyConsistency.
    any1, any2 = b"don't care 1", b"don't care 2"
    short = "Accord refuses roots that are not 32-byte hashes"
    empty = "Accord requires the empty tree's root to be SHA-256 of nothing"
    table = [
        ("same size, other root", 0, 0, any1, any2, [], False, False, None),
        ("same size, other root", 1, 1, any1, any2, [], False, False, None),
        ("always consistent", 0, 0, any1, any1, [], False, True, f"{short}; {empty}"),
        ("always consistent", 0, 1, any1, any2, [], False, True, f"{short}; {empty}"),
        ("always consistent", 1, 1, any2, any2, [], False, True, short),
        ("time travel", 1, 0, any1, any2, [], False, False, None),
        ("time travel", 2, 1, any1, any2, [], False, False, None),
        ("empty proof", 1, 2, any1, any2, [], False, False, None),
        ("roots differ", 0, 0, EMPTY_HASH, any2, [], False, False, None),
        ("roots differ", 1, 1, EMPTY_HASH, any2, [], False, False, None),
        ("non-empty trivial proof", 0, 0, EMPTY_HASH, EMPTY_HASH, [EMPTY_HASH], False, False, None),
        ("non-empty trivial proof", 0, 1, EMPTY_HASH, EMPTY_HASH, [EMPTY_HASH], False, False, None),
        ("non-empty trivial proof", 1, 1, EMPTY_HASH, EMPTY_HASH, [EMPTY_HASH], False, False, None),
    ]
    for desc, s1, s2, r1, r2, p, valid, upstream, note in table:
        cases.append(consistency_case(desc, s1, s2, r1, r2, p, valid, upstream, note))
    # The same "always consistent" cases with real hashes, which Accord accepts.
    cases.append(consistency_case("empty tree, itself", 0, 0, EMPTY_HASH, EMPTY_HASH, [], True))
    cases.append(consistency_case("empty tree, any tree", 0, 1, EMPTY_HASH, ROOTS[0], [], True))
    cases.append(consistency_case("a tree, itself", 1, 1, ROOTS[0], ROOTS[0], [], True))
    return cases


def hasher_cases() -> list[dict[str, Any]]:
    return [
        {"desc": "RFC6962 Empty", "kind": "empty", "want": EMPTY_HASH.hex()},
        {
            "desc": "RFC6962 Empty Leaf",
            "kind": "leaf",
            "leaf": "",
            "want": "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        },
        {
            "desc": "RFC6962 Leaf",
            "kind": "leaf",
            "leaf": b"L123456".hex(),
            "want": "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56",
        },
        {
            "desc": "RFC6962 Node",
            "kind": "node",
            "left": b"N123".hex(),
            "right": b"N456".hex(),
            "want": "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb",
        },
    ]


# Upstream's subtree lists, converted by hand: [[level, index], ...] per proof element,
# left to right. The letters are those of the diagrams in proof_test.go.
def E(*nodes: tuple[int, int]) -> list[list[int]]:
    return [list(n) for n in nodes]


INCLUSION_NODES: list[dict[str, Any]] = [
    *({"size": s, "index": i, "error": True} for s, i in [(0, 0), (0, 1), (1, 2), (0, 3), (7, 8)]),
    {"size": 1, "index": 0, "elements": []},
    {"size": 2, "index": 0, "elements": [E((0, 1))]},
    {"size": 2, "index": 1, "elements": [E((0, 0))]},
    {"size": 3, "index": 1, "elements": [E((0, 0)), E((0, 2))]},
    {"size": 7, "index": 0, "elements": [E((0, 1)), E((1, 1)), E((1, 2), (0, 6))]},
    {"size": 7, "index": 1, "elements": [E((0, 0)), E((1, 1)), E((1, 2), (0, 6))]},
    {"size": 7, "index": 2, "elements": [E((0, 3)), E((1, 0)), E((1, 2), (0, 6))]},
    {"size": 7, "index": 3, "elements": [E((0, 2)), E((1, 0)), E((1, 2), (0, 6))]},
    {"size": 7, "index": 4, "elements": [E((0, 5)), E((0, 6)), E((2, 0))]},
    {"size": 7, "index": 5, "elements": [E((0, 4)), E((0, 6)), E((2, 0))]},
    {"size": 7, "index": 6, "elements": [E((1, 2)), E((2, 0))]},
    {"size": 4, "index": 2, "elements": [E((0, 3)), E((1, 0))]},
    {"size": 5, "index": 3, "elements": [E((0, 2)), E((1, 0)), E((0, 4))]},
    {"size": 6, "index": 3, "elements": [E((0, 2)), E((1, 0)), E((1, 2))]},
    {"size": 6, "index": 4, "elements": [E((0, 5)), E((2, 0))]},
    {
        "size": 15,
        "index": 10,
        "elements": [E((0, 11)), E((1, 4)), E((1, 6), (0, 14)), E((3, 0))],
    },
    {
        "size": 31,
        "index": 24,
        "elements": [E((0, 25)), E((1, 13)), E((1, 14), (0, 30)), E((3, 2)), E((4, 0))],
    },
    {
        "size": 95,
        "index": 81,
        "elements": [
            E((0, 80)),
            E((1, 41)),
            E((2, 21)),
            E((2, 22), (1, 46), (0, 94)),
            E((4, 4)),
            E((6, 0)),
        ],
    },
]

CONSISTENCY_NODES: list[dict[str, Any]] = [
    {"size1": 5, "size2": 0, "error": True},
    {"size1": 9, "size2": 8, "error": True},
    {"size1": 1, "size2": 2, "elements": [E((0, 1))]},
    {"size1": 1, "size2": 4, "elements": [E((0, 1)), E((1, 1))]},
    {"size1": 1, "size2": 6, "elements": [E((0, 1)), E((1, 1)), E((1, 2))]},
    {"size1": 2, "size2": 3, "elements": [E((0, 2))]},
    {"size1": 2, "size2": 8, "elements": [E((1, 1)), E((2, 1))]},
    {"size1": 3, "size2": 7, "elements": [E((0, 2)), E((0, 3)), E((1, 0)), E((1, 2), (0, 6))]},
    {"size1": 4, "size2": 7, "elements": [E((1, 2), (0, 6))]},
    {"size1": 5, "size2": 7, "elements": [E((0, 4)), E((0, 5)), E((0, 6)), E((2, 0))]},
    {"size1": 6, "size2": 7, "elements": [E((1, 2)), E((0, 6)), E((2, 0))]},
    {"size1": 7, "size2": 8, "elements": [E((0, 6)), E((0, 7)), E((1, 2)), E((2, 0))]},
    *({"size1": n, "size2": n, "elements": []} for n in (1, 2, 3, 4, 5, 7, 8)),
    {"size1": 2, "size2": 4, "elements": [E((1, 1))]},
    {"size1": 3, "size2": 5, "elements": [E((0, 2)), E((0, 3)), E((1, 0)), E((0, 4))]},
    {"size1": 3, "size2": 6, "elements": [E((0, 2)), E((0, 3)), E((1, 0)), E((1, 2))]},
    {"size1": 4, "size2": 6, "elements": [E((1, 2))]},
    {"size1": 1, "size2": 7, "elements": [E((0, 1)), E((1, 1)), E((1, 2), (0, 6))]},
    {
        "size1": 10,
        "size2": 15,
        "elements": [E((1, 4)), E((1, 5)), E((1, 6), (0, 14)), E((3, 0))],
    },
    {
        "size1": 24,
        "size2": 31,
        "elements": [E((3, 2)), E((2, 6), (1, 14), (0, 30)), E((4, 0))],
    },
    {
        "size1": 81,
        "size2": 95,
        "elements": [
            E((0, 80)),
            E((0, 81)),
            E((1, 41)),
            E((2, 21)),
            E((2, 22), (1, 46), (0, 94)),
            E((4, 4)),
            E((6, 0)),
        ],
    },
]


# --- Signed notes ----------------------------------------------------------------------

EM = "\u2014"
NOTE_SOURCES = {
    "signed_note_spec": (
        "The worked example of c2sp.org/signed-note (its verifier key and note, section"
        " 'Verifier keys'). The version of the spec stored for this work no longer carries"
        " the section; the key and note are as several independent implementations quote"
        " them in their tests, one citing C2SP/C2SP signed-note.md at commit d4c16da."
        " They verify, so they are a real key and a real signature."
    ),
    "sumdb_note": (
        "The package example of golang.org/x/mod/sumdb/note (note.go): the PeterNeumann"
        " signer key, its verifier key, the text and the signed note that `note.Sign`"
        " prints. Ed25519 is deterministic, so signing the text must give these bytes."
    ),
    "ct_staging_checkpoint": (
        "A checkpoint of the public staging CT log arche2025h1.staging.ct.transparency.dev"
        " (size 1432088532), with one RFC 6962 TreeHeadSignature line (type 0x05, which"
        " Accord ignores as an unknown key of the same name), the log's Ed25519 note"
        " signature, and cosignature/v1 lines of four public witnesses; quoted verbatim"
        " in the tests of a third-party Python tlog library. The vkeys are those the log"
        " and the witnesses publish (remora.n621.de, witness.stagemole.eu,"
        " transparency.dev/DEV:witness-little-garden, witness1.smartit.nu/witness1)."
    ),
    "checkpoint_spec": (
        "The examples of c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature"
        " (example.com/behind-the-sofa); no key is published for them, so they are"
        " parsed, not verified."
    ),
}

CT_CHECKPOINT = (
    "arche2025h1.staging.ct.transparency.dev\n"
    "1432088532\n"
    "U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
    "\n"
    f"{EM} arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoG"
    "REPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=\n"
    f"{EM} arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkz"
    "bC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=\n"
    f"{EM} transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYT"
    "zwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==\n"
    f"{EM} witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/"
    "iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==\n"
    f"{EM} remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobW"
    "X9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==\n"
    f"{EM} witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+A"
    "JmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==\n"
)


def note_vectors() -> dict[str, Any]:
    sumdb_text = (
        "If you think cryptography is the answer to your problem,\n"
        "then you don't know what your problem is.\n"
    )
    return {
        "sources": NOTE_SOURCES,
        "signed_note_spec": {
            "vkey": "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
            "public_key": "e932791ae6e7a840a46164c904786426d5e7821dd8b29a00d61cae72afdd4da4",
            "text": "This is an example message.\n",
            "note": "This is an example message.\n\n"
            f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZ"
            "XsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n",
        },
        "sumdb_note": {
            "skey": "PRIVATE+KEY+PeterNeumann+c74f20a3+"
            "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz",
            "vkey": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
            "text": sumdb_text,
            "note": sumdb_text + "\n"
            f"{EM} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
            "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        },
        "ct_staging_checkpoint": {
            "note": CT_CHECKPOINT,
            "origin": "arche2025h1.staging.ct.transparency.dev",
            "size": 1432088532,
            "root": base64.b64decode("U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=").hex(),
            "log_vkey": "arche2025h1.staging.ct.transparency.dev+ba2f06c0+"
            "AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f",
            "witness_vkeys": [
                "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
                "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
                "transparency.dev/DEV:witness-little-garden+d8042a87+"
                "BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
                "witness1.smartit.nu/witness1+a48c820f+"
                "BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
            ],
        },
        "checkpoint_spec": {
            "note": "example.com/behind-the-sofa\n20852163\n"
            "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n"
            f"{EM} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4"
            "URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
            f"{EM} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEh"
            "ZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n",
            "origin": "example.com/behind-the-sofa",
            "size": 20852163,
            "cosigned_message": "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n"
            "20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        },
    }


def render() -> dict[str, bytes]:
    rfc6962 = {
        "sources": SOURCES,
        "leaves": hx(LEAVES),
        "roots": hx(ROOTS),
        "hasher": hasher_cases(),
        "inclusion": inclusion_cases(),
        "consistency": consistency_cases(),
        "inclusion_nodes": INCLUSION_NODES,
        "consistency_nodes": CONSISTENCY_NODES,
    }
    return {
        name: (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        for name, data in (("rfc6962.json", rfc6962), ("notes.json", note_vectors()))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail on drift instead of writing")
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        drift = [
            n for n, d in files.items() if not (HERE / n).exists() or (HERE / n).read_bytes() != d
        ]
        if drift:
            print("merkle vectors drifted: " + ", ".join(drift), file=sys.stderr)
            print(
                "run `python -m tests.vectors.merkle.generate` and review the diff", file=sys.stderr
            )
            return 1
        print(f"{len(files)} merkle vector files match the generator")
        return 0
    for name, data in files.items():
        (HERE / name).write_bytes(data)
    print(f"wrote {', '.join(files)} to {HERE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
