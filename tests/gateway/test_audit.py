"""The audit trail of a node, in process: events recorded with the changes they describe,
checkpoints on the injected clock, cross-witnessing and forks, bundles and the whole-log
check (DESIGN 7, issue 6).

Two real nodes are made with `accord init`'s functions and opened as `accord serve` opens
them; the witness route's logic (`gateway._peer_audit.witness`) is called directly, over
an in-process transport, so each refusal can be checked against the stored evidence. The
mutual-TLS route itself runs in tests/integration/test_audit.py.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from accord.crypto import Envelope, KdfCost, MessageDraft, seal_message
from accord.crypto.bundle import LogEvent, log_origin, verify_bundle, witness_name
from accord.crypto.checkpoint import Checkpoint, sign_checkpoint, verify_cosignature
from accord.crypto.descriptor import verify_descriptor
from accord.crypto.merkle import MerkleTree, leaf_hash
from accord.gateway.admin.home import add_peer, export_descriptor, init_node
from accord.gateway.audit import log as _audit
from accord.gateway.audit.log import AuditScheduler, EventKind
from accord.gateway.audit.witness import Fork, Refused, Stale, witness
from accord.gateway.node.config import AuditConfig, Home
from accord.gateway.node.runtime import Node
from accord.gateway.serve import load_node
from accord.storage import (
    NewMessage,
    PartRef,
    insert_outgoing,
    latest_checkpoint,
    latest_witnessed,
    list_cosignatures,
    list_leaves,
    list_witness_evidence,
    tree_head,
    tree_root,
)

CHEAP = KdfCost(opslimit=1, memlimit=8192)
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PARTY_A, PARTY_B = "МВД-РБ", "Росгвардия"
PASS = "пароль узла".encode()


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Pair:
    a: Node
    b: Node
    clock: Clock
    descriptors: dict[str, bytes]


def _make(root: Path, party: str, port: int) -> None:
    init_node(
        root,
        party=party,
        name=f"Узел {party}",
        listen=f"127.0.0.1:{port}",
        passphrase=PASS,
        now=T0,
        kdf_cost=CHEAP,
    )


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    _make(tmp_path / "a", PARTY_A, 9443)
    _make(tmp_path / "b", PARTY_B, 9543)
    descriptors = {}
    for party, home in ((PARTY_A, tmp_path / "a"), (PARTY_B, tmp_path / "b")):
        descriptors[party] = export_descriptor(Home(home), PASS, T0)
    add_peer(Home(tmp_path / "a"), descriptors[PARTY_B], fingerprint=None, now=T0)
    add_peer(Home(tmp_path / "b"), descriptors[PARTY_A], fingerprint=None, now=T0)
    clock = Clock()
    a, b = load_node(tmp_path / "a", PASS), load_node(tmp_path / "b", PASS)
    a.clock = b.clock = clock
    try:
        yield Pair(a, b, clock, descriptors)
    finally:
        a.close()
        b.close()


class InProcess:
    """The witness route's logic, without the network: B answers A's requests."""

    def __init__(self, witness_node: Node, asking: str) -> None:
        self.witness_node, self.asking = witness_node, asking
        self.requests: list[dict[str, Any]] = []

    async def post_witness(self, peer: Any, document: dict[str, Any]) -> tuple[int, Any]:
        self.requests.append(document)
        try:
            return 200, {"cosignature": witness(self.witness_node, self.asking, document)}
        except Stale as e:
            return 409, {"error": "stale", "witnessed_size": e.witnessed_size}
        except Refused:
            return 403, {"error": "refused"}


def _append(node: Node, count: int, label: str = "событие") -> None:
    with node.db.session() as session:
        for i in range(count):
            _audit.record(
                session,
                _audit.event(EventKind.USER_CHANGED, node.party, node.clock(), user=f"{label} {i}"),
            )


def _cosign(pair: Pair) -> bool:
    transport = InProcess(pair.b, PARTY_A)
    return asyncio.run(_audit.request_cosignature(pair.a, transport, pair.a.peer_keys(PARTY_B)))


def _document(note: bytes | str, old_size: int, proof: list[bytes]) -> dict[str, Any]:
    text_note = note.decode() if isinstance(note, bytes) else note
    return {
        "checkpoint": text_note,
        "old_size": old_size,
        "proof": [base64.b64encode(p).decode() for p in proof],
    }


def _kinds(node: Node) -> list[str]:
    with node.db.session(readonly=True) as session:
        return [LogEvent.from_leaf(bytes(r.leaf)).kind for r in list_leaves(session, limit=1000)]


# --- Events ----------------------------------------------------------------------------


def test_init_users_keys_and_peers_are_in_the_log(pair: Pair) -> None:
    kinds = _kinds(pair.a)
    # init: the node's three keys and the admin; peer add: the peer and its keys.
    assert kinds[:4] == ["key.added", "key.added", "key.added", "user.added"]
    assert "peer.added" in kinds
    assert kinds.count("key.added") >= 5
    with pair.a.db.session(readonly=True) as session:
        events = [LogEvent.from_leaf(bytes(r.leaf)) for r in list_leaves(session)]
    peer = next(e for e in events if e.kind == "peer.added")
    assert peer.peer == PARTY_B and set(peer.digests) == {"descriptor", "fingerprint"}


def test_a_failed_change_leaves_no_log_entry(pair: Pair) -> None:
    """One transaction: an event recorded in a transaction that rolls back is gone."""
    before = _kinds(pair.a)
    with pytest.raises(RuntimeError), pair.a.db.session() as session:
        _audit.record(session, _audit.event(EventKind.USER_ADDED, PARTY_A, T0, user="x"))
        raise RuntimeError("the change failed")
    assert _kinds(pair.a) == before


# --- Checkpoints on the injected clock --------------------------------------------------


def test_scheduler_signs_after_a_burst_and_after_the_interval(pair: Pair) -> None:
    pair.a.config = pair.a.config.with_changes(
        audit=AuditConfig(checkpoint_interval=60, checkpoint_burst=10, witness_interval=60)
    )
    transport = InProcess(pair.b, PARTY_A)
    scheduler = AuditScheduler(pair.a, transport, lambda: [PARTY_B])
    first = asyncio.run(scheduler.step())
    assert first is not None  # the first round checkpoints what init and peer add logged
    assert transport.requests and transport.requests[0]["old_size"] == 0
    _append(pair.a, 3)
    pair.clock.advance(10)
    assert asyncio.run(scheduler.step()) is None  # neither a burst nor the interval yet
    _append(pair.a, 7)
    burst = asyncio.run(scheduler.step())
    assert burst is not None and burst.size == first.size + 10
    _append(pair.a, 1)
    pair.clock.advance(59)
    assert asyncio.run(scheduler.step()) is None
    pair.clock.advance(1)
    late = asyncio.run(scheduler.step())
    assert late is not None and late.size == burst.size + 1
    with pair.a.db.session(readonly=True) as session:
        assert [c.witness for c in list_cosignatures(session, late.size)] == [PARTY_B]


# --- Cross-witnessing --------------------------------------------------------------------


def test_witness_cosigns_consistent_checkpoints_and_the_log_verifies(pair: Pair) -> None:
    first = _audit.sign_checkpoint_if_due(pair.a)
    assert first is not None and _cosign(pair)
    _append(pair.a, 5)
    second = _audit.sign_checkpoint_if_due(pair.a)
    assert second is not None and _cosign(pair)
    with pair.b.db.session(readonly=True) as session:
        witnessed = latest_witnessed(session, PARTY_A)
    assert witnessed is not None and witnessed.size == second.size
    b_seal = pair.b.seal.verify_key()
    evidence = verify_cosignature(
        witnessed.note, witness_name(PARTY_B), b_seal, origin=log_origin(PARTY_A)
    )
    assert evidence.checkpoint.size == second.size
    # Routine cosignatures are kept as notes, not as leaves (no checkpoint ping-pong).
    assert "witness.cosigned" not in _kinds(pair.b)
    report = _audit.verify_log(pair.a)
    assert report["ok"] and report["cosignatures_verified"] == 2
    assert report["checkpoints_verified"] == 2


def test_witness_that_lost_track_answers_its_size_and_is_asked_again(pair: Pair) -> None:
    assert _audit.sign_checkpoint_if_due(pair.a) is not None and _cosign(pair)
    # A loses its record of B's cosignature (a restored backup): it asks from size 0.
    with pair.a.db.session() as session:
        session.execute(text("DELETE FROM cosignatures"))
    _append(pair.a, 2)
    assert _audit.sign_checkpoint_if_due(pair.a) is not None
    transport = InProcess(pair.b, PARTY_A)
    peer = pair.a.peer_keys(PARTY_B)
    assert asyncio.run(_audit.request_cosignature(pair.a, transport, peer))
    assert [r["old_size"] for r in transport.requests] == [0, transport.requests[1]["old_size"]]
    assert transport.requests[1]["old_size"] > 0


def _forged_tree(pair: Pair, size: int) -> MerkleTree:
    """A's seal signing another history: the leaves of another log of `size` entries."""
    leaves = [
        _audit.event(EventKind.USER_ADDED, PARTY_A, T0, user=f"подложный {i}").to_leaf()
        for i in range(size)
    ]
    return MerkleTree(leaf_hash(leaf) for leaf in leaves)


def test_attack_fork_same_size_different_root_is_refused_and_kept(pair: Pair) -> None:
    checkpoint = _audit.sign_checkpoint_if_due(pair.a)
    assert checkpoint is not None and _cosign(pair)
    forged = _forged_tree(pair, checkpoint.size)
    origin = log_origin(PARTY_A)
    note = sign_checkpoint(Checkpoint(origin, checkpoint.size, forged.root()), origin, pair.a.seal)
    with pytest.raises(Fork, match="two roots for size"):
        witness(pair.b, PARTY_A, _document(note, checkpoint.size, []))
    with pair.b.db.session(readonly=True) as session:
        (kept,) = list_witness_evidence(session, PARTY_A)
        assert latest_witnessed(session, PARTY_A).root_hash == checkpoint.root_hash  # type: ignore[union-attr]
    assert kept.note == note.decode() and kept.size == checkpoint.size
    assert "witness.fork" in _kinds(pair.b)
    assert _audit.verify_log(pair.b)["ok"]


def test_attack_fork_inconsistent_larger_tree_is_refused_and_kept(pair: Pair) -> None:
    checkpoint = _audit.sign_checkpoint_if_due(pair.a)
    assert checkpoint is not None and _cosign(pair)
    # A rewrote its history and grew it: the proof it can make is from its new tree.
    forged = _forged_tree(pair, checkpoint.size + 4)
    origin = log_origin(PARTY_A)
    note = sign_checkpoint(Checkpoint(origin, forged.size, forged.root()), origin, pair.a.seal)
    proof = forged.consistency_proof(checkpoint.size)
    with pytest.raises(Fork, match="not consistent with the cosigned size"):
        witness(pair.b, PARTY_A, _document(note, checkpoint.size, proof))
    with pair.b.db.session(readonly=True) as session:
        (kept,) = list_witness_evidence(session, PARTY_A)
        assert latest_witnessed(session, PARTY_A).size == checkpoint.size  # type: ignore[union-attr]
    assert kept.size == forged.size and "consistent" in kept.reason


def test_attack_rollback_to_a_smaller_checkpoint_is_refused(pair: Pair) -> None:
    small = _audit.sign_checkpoint_if_due(pair.a)
    assert small is not None and _cosign(pair)
    _append(pair.a, 3)
    assert _audit.sign_checkpoint_if_due(pair.a) is not None and _cosign(pair)
    # A checkpoint B already cosigned is answered with the same cosignature...
    line = witness(pair.b, PARTY_A, _document(small.note, 0, []))
    assert line.startswith(f"\u2014 {witness_name(PARTY_B)} ")
    # ...but a smaller one it never saw is a rollback.
    origin = log_origin(PARTY_A)
    with pair.a.db.session(readonly=True) as session:
        root = tree_root(session, small.size + 1)
    older = sign_checkpoint(Checkpoint(origin, small.size + 1, root), origin, pair.a.seal)
    with pytest.raises(Refused, match="older"):
        witness(pair.b, PARTY_A, _document(older, small.size, []))


def test_attack_checkpoint_signed_by_another_key_is_refused(pair: Pair) -> None:
    with pair.a.db.session(readonly=True) as session:
        head = tree_head(session)
    origin = log_origin(PARTY_A)
    # B's own seal signing a checkpoint of A's log: not A's key.
    note = sign_checkpoint(Checkpoint(origin, head.size, head.root), origin, pair.b.seal)
    with pytest.raises(Refused, match="not signed by a seal key"):
        witness(pair.b, PARTY_A, _document(note, 0, []))
    with pair.b.db.session(readonly=True) as session:
        assert list_witness_evidence(session) == []
        assert latest_witnessed(session, PARTY_A) is None


def test_witness_with_a_proof_from_another_size_answers_stale(pair: Pair) -> None:
    checkpoint = _audit.sign_checkpoint_if_due(pair.a)
    assert checkpoint is not None and _cosign(pair)
    _append(pair.a, 2)
    newer = _audit.sign_checkpoint_if_due(pair.a)
    assert newer is not None
    with pytest.raises(Stale) as caught:
        witness(pair.b, PARTY_A, _document(newer.note, 1, []))
    assert caught.value.witnessed_size == checkpoint.size


# --- The whole-log check and bundles ------------------------------------------------------


def test_attack_cosignature_line_rewritten_in_the_database_is_named(pair: Pair) -> None:
    checkpoint = _audit.sign_checkpoint_if_due(pair.a)
    assert checkpoint is not None and _cosign(pair)
    with pair.a.db.session() as session:
        line = list_cosignatures(session, checkpoint.size)[0].line
        forged = line[:-6] + ("AAAAA=" if not line.endswith("AAAAA=") else "BBBBB=")
        session.execute(text("UPDATE cosignatures SET line = :l"), {"l": forged})
    report = _audit.verify_log(pair.a)
    assert not report["ok"]
    assert report["problem"]["kind"] == "cosignature"
    assert report["problem"]["index"] == checkpoint.size


def test_attack_checkpoint_note_replaced_in_the_database_is_named(pair: Pair) -> None:
    checkpoint = _audit.sign_checkpoint_if_due(pair.a)
    assert checkpoint is not None
    origin = log_origin(PARTY_A)
    # Same size and root, signed by someone else's key.
    other = sign_checkpoint(
        Checkpoint(origin, checkpoint.size, bytes(checkpoint.root_hash)), origin, pair.b.seal
    )
    with pair.a.db.session() as session:
        session.execute(text("UPDATE checkpoints SET note = :n"), {"n": other.decode()})
    report = _audit.verify_log(pair.a)
    assert report["problem"] == {
        "kind": "checkpoint",
        "index": checkpoint.size,
        "detail": f"the checkpoint of size {checkpoint.size} is not signed by this node's seal",
    }


def _store_message(pair: Pair) -> str:
    a = pair.a
    draft = MessageDraft(
        message_id="5b0c4a8e-1d2f-4e3a-9b6c-7d8e9f0a1b2c",
        sender=PARTY_A,
        recipient=PARTY_B,
        created=T0,
        expires=T0 + timedelta(days=30),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="уведомление по статье 6 Соглашения",
        type="notice",
    )
    sealed = seal_message(
        draft,
        body="Текст, который не должен попасть в журнал".encode(),
        attachments=[],
        recipients=[a.peer_keys(PARTY_B).encryption],
    )
    envelope = sealed.sign([a.seal])
    st = sealed.statement
    message = NewMessage(
        message_id=st.message_id,
        sender=st.sender,
        recipient=st.recipient,
        type=st.type,
        marking=dict(st.marking),
        purpose=st.purpose,
        created=st.created,
        expires=st.expires,
        envelope=envelope.to_bytes(),
        header=sealed.header,
        parts=(PartRef(st.body.sha256, st.body.size, sealed.body),),
    )
    with a.db.session() as session:
        insert_outgoing(session, message, now=T0)
        _audit.record(
            session,
            _audit.message_event(EventKind.MESSAGE_SENT, PARTY_A, message, T0, user="Оператор"),
        )
    return st.message_id


def test_exported_bundle_verifies_offline_and_names_the_export(pair: Pair) -> None:
    message_id = _store_message(pair)
    data = _audit.export_bundle(pair.a, message_id, user="Аудитор")
    assert "не должен попасть".encode() not in data
    trusted = [verify_descriptor(Envelope.from_bytes(d)) for d in pair.descriptors.values()]
    evidence = verify_bundle(data, trusted)
    assert any("message.sent by Оператор" in p for p in evidence.proven)
    assert any("No receipt" in w for w in evidence.warnings)
    # The export logged itself (the last link of the message's chain, issue 12), then
    # signed the checkpoint its proofs need.
    with pair.a.db.session(readonly=True) as session:
        assert latest_checkpoint(session) is not None
    assert _kinds(pair.a)[-1] == "bundle.exported"


def test_bundle_of_an_unknown_message_is_refused(pair: Pair) -> None:
    with pytest.raises(_audit.ExportError, match="no message"):
        _audit.export_bundle(pair.a, "нет-такого")


# --- Reads: no content leaves the node without a record -----------------------------------


def _local_client(pair: Pair, role: str, name: str) -> Any:
    from fastapi.testclient import TestClient

    from accord.gateway.admin.home import add_user
    from accord.gateway.app import create_app

    token = add_user(pair.a.home, name, role=role, now=T0).token
    return TestClient(create_app(pair.a), headers={"Authorization": f"Bearer {token}"})


def _readable_message(pair: Pair) -> str:
    """A message stored at A that A's own users can open (sealed to A's key too)."""
    a = pair.a
    draft = MessageDraft(
        message_id="7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        sender=PARTY_A,
        recipient=PARTY_B,
        created=T0,
        expires=T0 + timedelta(days=3650),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="проверка журнала чтения",
        type="notice",
    )
    body = b'{"attachments":[],"fields":{},"text":"\xd0\xa2\xd0\xb5\xd0\xba\xd1\x81\xd1\x82","v":1}'
    sealed = seal_message(
        draft,
        body=body,
        attachments=[],
        recipients=[a.peer_keys(PARTY_B).encryption, a.encryption.recipient()],
    )
    envelope = sealed.sign([a.seal])
    st = sealed.statement
    message = NewMessage(
        message_id=st.message_id,
        sender=st.sender,
        recipient=st.recipient,
        type=st.type,
        marking=dict(st.marking),
        purpose=st.purpose,
        created=st.created,
        expires=st.expires,
        envelope=envelope.to_bytes(),
        header=sealed.header,
        parts=(PartRef(st.body.sha256, st.body.size, sealed.body),),
    )
    with a.db.session() as session:
        insert_outgoing(session, message, now=T0)
    return st.message_id


def _last_event(node: Node) -> LogEvent:
    with node.db.session(readonly=True) as session:
        rows = list_leaves(session, limit=10_000)
    return LogEvent.from_leaf(bytes(rows[-1].leaf))


def test_a_read_is_logged_with_its_reader(pair: Pair) -> None:
    message_id = _readable_message(pair)
    with _local_client(pair, "operator", "Оператор") as client:
        response = client.get(f"/api/v1/messages/{message_id}")
    assert response.status_code == 200 and response.json()["body"] == "Текст"
    read = _last_event(pair.a)
    assert (read.kind, read.message_id, read.user) == ("message.read", message_id, "Оператор")


def test_attack_auditor_reading_content_is_refused_and_logged(pair: Pair) -> None:
    message_id = _readable_message(pair)
    with _local_client(pair, "auditor", "Аудитор") as client:
        response = client.get(f"/api/v1/messages/{message_id}")
        leaves = client.get("/api/v1/audit/leaves", params={"limit": 1000})
    assert response.status_code == 403
    refused = _last_event(pair.a)
    assert (refused.kind, refused.user, refused.verdict) == ("read.refused", "Аудитор", "refused")
    assert leaves.status_code == 200 and "Текст" not in leaves.text


def test_attack_read_while_the_log_cannot_record_it_returns_no_content(pair: Pair) -> None:
    message_id = _readable_message(pair)
    with _local_client(pair, "operator", "Оператор") as client:
        # The log's state row damaged: appends fail, so the read must fail too.
        with pair.a.db.session() as session:
            session.execute(text("UPDATE audit_state SET frontier = :f"), {"f": b"\x00"})
        response = client.get(f"/api/v1/messages/{message_id}")
    assert response.status_code == 503
    assert "Текст" not in response.text and "audit log" in response.json()["detail"]
