"""Write the seed corpus of the byte-level fuzz targets (tests/fuzz/corpus/<target>/).

    python -m tests.fuzz.make_corpus [--check]

Seeds are valid inputs built from fixed keys (Ed25519 signing is deterministic), so the
files are the same on every run; `--check` fails if the committed corpus has drifted.
The fuzzers mutate these seeds: a parser reached only through valid framing (a statement
inside an envelope inside a delivery stream) is found from them in seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from accord.crypto import Receipt, Verdict, issue_receipt
from accord.crypto.bundle import Bundle, LogEntry, LogEvent, log_origin
from accord.crypto.checkpoint import Checkpoint, add_cosignature, sign_checkpoint
from accord.crypto.envelope import sign_envelope
from accord.crypto.merkle import MerkleTree, leaf_hash
from accord.crypto.sealed import PartDigest, SealedMessage, Statement
from accord.gateway.messages.stream import END, MAGIC, frame_lengths

from ._objects import KEYS

CORPUS = Path(__file__).parent / "corpus"
NOW = datetime(2026, 12, 5, 13, 0, 0, tzinfo=UTC)
SEAL, SIGNATORY, PEER = KEYS[0], KEYS[1], KEYS[2]


def _statement(message_id: str, sizes: list[int]) -> Statement:
    return Statement(
        message_id=message_id,
        sender="МВД-РБ",
        recipient="Росгвардия",
        created=NOW,
        expires=NOW + timedelta(days=30),
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        purpose="расследование дела № 17/2026",
        type="request",
        in_reply_to=None,
        body=PartDigest(hashlib.sha256(b"b" * sizes[0]).hexdigest(), sizes[0]),
        attachments=tuple(
            PartDigest(hashlib.sha256(b"a" * n).hexdigest(), n) for n in sizes[1:]
        ),
        key_commitment="c" * 64,
        extensions={"case": "17/2026"},
    )


def seeds() -> dict[str, dict[str, bytes]]:
    one = SealedMessage(_statement("3f1c2e9a-0b7d", [40]), b"", b"").sign([SIGNATORY, SEAL])
    two = SealedMessage(_statement("9a41-6f0e2d1b", [24, 70, 0]), b"", b"").sign([SEAL])
    receipt = issue_receipt(
        Receipt("3f1c2e9a-0b7d", "МВД-РБ", "Росгвардия", one.payload_sha256, one.sha256,
                NOW, Verdict.ACCEPTED),
        [PEER],
    )  # fmt: skip
    other = sign_envelope('type "quoted"\\', {"a": [1, None, True, "ж"]}, [SEAL])
    header = b"age-encryption.org/v1\n-> X25519 AAAA\nAAAA\n--- AAAA\n"

    def frame(envelope: bytes, parts: list[bytes]) -> bytes:
        return frame_lengths(envelope, header) + b"".join(parts)

    events = [
        LogEvent("message.sent", NOW, "МВД-РБ", message_id="3f1c2e9a-0b7d", sender="МВД-РБ",
                 digests={"statement": one.payload_sha256}),
        LogEvent("receipt.stored", NOW, "МВД-РБ", message_id="3f1c2e9a-0b7d", verdict="accepted"),
    ]  # fmt: skip
    leaves = [e.to_leaf() for e in events]
    tree = MerkleTree(leaf_hash(leaf) for leaf in leaves)
    origin = log_origin("МВД-РБ")
    note = sign_checkpoint(Checkpoint(origin, tree.size, tree.root()), origin, SEAL)
    note = add_cosignature(note, "witness", PEER, NOW)
    bundle = Bundle(
        message_id="3f1c2e9a-0b7d",
        exported_by="МВД-РБ",
        statement=one,
        receipts=(receipt,),
        consent_tokens=(),
        checkpoint=note.decode(),
        entries=tuple(LogEntry(i, leaves[i], tuple(tree.inclusion_proof(i))) for i in (0, 1)),
    )
    return {
        "envelope": {
            "statement": one.to_bytes(),
            "receipt": receipt.to_bytes(),
            "escaped_type": other.to_bytes(),
        },
        "delivery": {
            "one": MAGIC + frame(one.to_bytes(), [b"b" * 40]) + END,
            "two": MAGIC
            + frame(one.to_bytes(), [b"b" * 40])
            + frame(two.to_bytes(), [b"b" * 24, b"a" * 70, b""])
            + END,
            "empty": MAGIC + END,
        },
        "bundle": {"bundle": bundle.to_bytes()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the corpus drifted")
    args = parser.parse_args(argv)
    drift = []
    for target, files in seeds().items():
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = folder / name
            if args.check:
                if not path.exists() or path.read_bytes() != data:
                    drift.append(str(path))
            else:
                path.write_bytes(data)
    if drift:
        print("corpus drifted (run python -m tests.fuzz.make_corpus):", *drift, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
