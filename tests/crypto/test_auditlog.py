"""`crypto.auditlog`: a whole exported log checked offline with `crypto/` alone (issue 12)."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from accord.crypto.auditlog import LogExport, LogVerificationError, verify_log_export
from accord.crypto.bundle import LogEvent, log_origin, witness_name
from accord.crypto.checkpoint import Checkpoint, add_cosignature, sign_checkpoint
from accord.crypto.descriptor import NodeDescriptor
from accord.crypto.merkle import MerkleTree, leaf_hash

from .conftest import NOW, Party
from .test_bundle import descriptor


def _export(a: Party, b: Party, *, past: int = 0, cosigner: Party | None = None) -> LogExport:
    events = [
        LogEvent("user.added", NOW, a.party_id, user="Аудитор", chained=True),
        LogEvent("message.sent", NOW, a.party_id, message_id="m", chained=True),
        LogEvent("message.read", NOW, a.party_id, message_id="m", chained=True, prev=1),
        LogEvent("message.sent", NOW, a.party_id, message_id="n", chained=True),
    ]
    leaves = [e.to_leaf() for e in events]
    origin = log_origin(a.party_id)
    tree = MerkleTree(leaf_hash(leaf) for leaf in leaves)
    notes = []
    for size in (2, 4):
        note = sign_checkpoint(Checkpoint(origin, size, tree.root(size)), origin, a.seal)
        witness = cosigner or b
        note = add_cosignature(note, witness_name(witness.party_id), witness.seal, NOW)
        notes.append(note.decode())
    extra = [
        LogEvent("user.added", NOW + timedelta(1), a.party_id, user=f"u{i}").to_leaf()
        for i in range(past)
    ]
    return LogExport(a.party_id, tuple(leaves + extra), tuple(notes))


def test_export_verifies_and_notes_the_unsigned_tail(party_a: Party, party_b: Party) -> None:
    trusted = [descriptor(party_a), descriptor(party_b)]
    evidence = verify_log_export(_export(party_a, party_b).to_bytes(), trusted)
    assert evidence.size == 4 and evidence.warnings == ()
    assert any("2 checkpoint(s)" in p and "2 cosignature(s)" in p for p in evidence.proven)
    tail = verify_log_export(_export(party_a, party_b, past=3).to_bytes(), trusted)
    assert any("last 3" in w for w in tail.warnings)


def _failures(export: LogExport, trusted: list[NodeDescriptor]) -> tuple[str, ...]:
    with pytest.raises(LogVerificationError) as refused:
        verify_log_export(export.to_bytes(), trusted)
    return refused.value.failures


def test_attack_leaf_altered_removed_or_cosigned_by_unknown_key_fails(
    party_a: Party, party_b: Party
) -> None:
    trusted = [descriptor(party_a), descriptor(party_b)]
    export = _export(party_a, party_b)
    forged = LogEvent("message.read", NOW, party_a.party_id, message_id="m", chained=True, prev=1)
    altered = dataclasses.replace(
        export,
        leaves=(
            *export.leaves[:2],
            dataclasses.replace(forged, user="x").to_leaf(),
            export.leaves[3],
        ),
    )
    assert any("do not hash to the root" in f for f in _failures(altered, trusted))
    removed = dataclasses.replace(export, leaves=export.leaves[:3])
    assert any("covers more leaves" in f for f in _failures(removed, trusted))
    stranger = Party("чужой")
    impostor = _export(party_a, party_b, cosigner=dataclasses.replace(stranger,
                       party_id=party_b.party_id))  # fmt: skip
    assert any("unknown key" in f for f in _failures(impostor, trusted))
    assert any("not trusted" in f for f in _failures(export, [descriptor(party_b)]))


def test_cosignature_by_a_party_not_passed_is_reported(party_a: Party, party_b: Party) -> None:
    evidence = verify_log_export(_export(party_a, party_b).to_bytes(), [descriptor(party_a)])
    assert any("not passed" in w for w in evidence.warnings)


def test_attack_chained_event_naming_a_wrong_predecessor_fails(
    party_a: Party, party_b: Party
) -> None:
    export = _export(party_a, party_b)
    wrong = LogEvent("message.sent", NOW, party_a.party_id, message_id="n", chained=True, prev=2)
    leaves = (*export.leaves[:3], wrong.to_leaf())
    origin = log_origin(party_a.party_id)
    tree = MerkleTree(leaf_hash(leaf) for leaf in leaves)
    note = sign_checkpoint(Checkpoint(origin, 4, tree.root()), origin, party_a.seal).decode()
    bad = dataclasses.replace(export, leaves=leaves, checkpoints=(note,))
    found = _failures(bad, [descriptor(party_a), descriptor(party_b)])
    assert any("leaf 3" in f and "previous one" in f for f in found)
