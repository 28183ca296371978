"""Complete evidence (issue 12), against two real nodes (`accord serve`, mutual TLS).

- A thief of a stopped node's database deletes the tail of its audit log behind a
  checkpoint the peer cosigned, and rewrites the checkpoints, cosignatures, subtree hashes
  and state row so that the database is consistent again: `accord audit verify` still
  finds it, from the peer's record of what it cosigned.
- A bundle with a read or a receipt taken out fails `accord verify`: each log entry about
  the message names the one before it, up to the export's own entry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from accord.crypto import Envelope
from accord.crypto.bundle import BundleVerificationError, LogEvent, verify_bundle
from accord.crypto.canonical import dumps, loads_canonical
from accord.crypto.descriptor import NodeDescriptor, verify_descriptor
from accord.gateway.harness import accord_command
from accord.gateway.node.config import AuditConfig
from accord.storage import audit_verify, list_peer_statements, tree_nodes
from tests.integration._nodes import NODE_PASSPHRASE, Cluster, NodeProcess, wait_until

PARTY_A, PARTY_B = "МВД-РБ", "Росгвардия"
OPERATOR_A, OPERATOR_B, AUDITOR = "Оператор А", "Оператор Б", "Аудитор"
FAST_AUDIT = AuditConfig(
    checkpoint_interval=0.3, checkpoint_burst=1, witness_interval=0.3, poll_interval=0.1
)


@dataclass
class Nodes:
    a: NodeProcess
    b: NodeProcess
    descriptors: list[Path]


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> Iterator[Nodes]:
    cluster = cluster_factory()
    a, b = cluster.add(PARTY_A, PARTY_B)
    a.add_user(OPERATOR_A, role="operator", clearance="CONFIDENTIAL")
    b.add_user(OPERATOR_B, role="operator", clearance="CONFIDENTIAL")
    for node in (a, b):
        node.add_user(AUDITOR, role="auditor")
        node.configure(audit=FAST_AUDIT)
    cluster.connect()
    paths = []
    for node in (a, b):
        path = cluster.root / f"{node.party}.descriptor"
        path.write_bytes(node.descriptor or node.export())
        paths.append(path)
    cluster.start()
    yield Nodes(a, b, paths)


def _trusted(nodes: Nodes) -> list[NodeDescriptor]:
    return [verify_descriptor(Envelope.from_bytes(p.read_bytes())) for p in nodes.descriptors]


def accord(node: NodeProcess | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    if node is not None:
        env.update(
            ACCORD_NODE=node.url,
            ACCORD_CA=str(node.init.ca_file),
            ACCORD_TOKEN=node.users[AUDITOR].token,
        )
    return subprocess.run(
        [*accord_command(), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )


def _send(nodes: Nodes) -> str:
    response = nodes.a.send(OPERATOR_A, to=nodes.b, body="Уведомление по статье 6")
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    nodes.a.wait_for_status(message_id, "delivered")
    return message_id


def _leaves_about(node: NodeProcess, message_id: str) -> dict[int, str]:
    with node.database() as db, db.session(readonly=True) as session:
        rows = session.execute(
            text(
                'SELECT l."index", l.leaf FROM audit_leaves l JOIN audit_message_leaves m'
                ' ON m."index" = l."index" WHERE m.message_id = :m ORDER BY l."index"'
            ),
            {"m": message_id},
        ).all()
    return {int(i): json.loads(bytes(leaf))["kind"] for i, leaf in rows}


def _witnessed_size(witness: NodeProcess, party: str) -> int:
    with witness.database() as db, db.session(readonly=True) as session:
        size = session.execute(
            text("SELECT max(size) FROM witnessed_checkpoints WHERE party = :p"), {"p": party}
        ).scalar()
    return int(size or 0)


def _root_nodes(size: int) -> list[tuple[int, int]]:
    """The perfect subtrees whose fold is the root of `size` leaves (RFC 6962), left first:
    the state row's frontier."""
    nodes, begin = [], 0
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            nodes.append((level, begin >> level))
            begin += 1 << level
    return nodes


def _truncate(node: NodeProcess, keep: int) -> None:
    """What a thief of the stopped node's database does to hide the tail from `keep` on:
    every row of those leaves gone, the tree, checkpoints, cosignatures and state row
    rewritten to be the log of `keep` leaves, so that nothing inside the database shows."""
    with node.database() as db, db.session() as session:
        frontier = b"".join(tree_nodes(session, _root_nodes(keep)))
        for sql in (
            'DELETE FROM audit_leaves WHERE "index" >= :k',
            'DELETE FROM audit_message_leaves WHERE "index" >= :k',
            'DELETE FROM audit_nodes WHERE ("index" + 1) << level > :k',
            "DELETE FROM cosignatures WHERE checkpoint_size > :k",
            "DELETE FROM checkpoints WHERE size > :k",
        ):
            session.execute(text(sql), {"k": keep})
        session.execute(
            text("UPDATE audit_state SET size = :k, frontier = :f"), {"k": keep, "f": frontier}
        )
    with node.database() as db, db.session(readonly=True) as session:
        report = audit_verify(session)
    # The database alone no longer shows anything: only the peer's record can.
    assert report.ok and report.size == keep, report


def test_audit_tail_deleted_after_witnessed_checkpoint_detected(nodes: Nodes) -> None:
    message_id = _send(nodes)
    leaves = _leaves_about(nodes.a, message_id)
    sent = min(i for i, kind in leaves.items() if kind == "message.sent")
    receipt = max(i for i, kind in leaves.items() if kind == "receipt.stored")
    wait_until(
        lambda: _witnessed_size(nodes.b, PARTY_A) > receipt or None,
        what=f"{PARTY_B} to cosign {PARTY_A}'s log past the receipt",
        timeout=60,
    )
    before = accord(nodes.a, "audit", "verify", "--json")
    assert before.returncode == 0, before.stdout + before.stderr
    assert {"party": PARTY_B, "status": "consistent"}.items() <= json.loads(before.stdout)[
        "witnesses"
    ][0].items()
    witnessed = _witnessed_size(nodes.b, PARTY_A)
    nodes.a.stop()
    try:
        _truncate(nodes.a, sent)  # the message was never sent, as far as A's log shows
    finally:
        nodes.a.start()
    result = accord(nodes.a, "audit", "verify", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["problem"]["kind"] == "truncated"
    assert report["problem"]["index"] == sent
    assert f"{PARTY_B} cosigned a checkpoint of size" in report["problem"]["detail"]
    assert f"[{sent}, " in report["problem"]["detail"]
    assert _witnessed_size(nodes.b, PARTY_A) >= witnessed
    human = accord(nodes.a, "audit", "verify")
    assert human.returncode == 1
    (line,) = human.stderr.splitlines()
    assert "is inconsistent: truncated" in line and PARTY_B in line


# --- Bundles that leave something out ----------------------------------------------------


def _read_at_b(nodes: Nodes, message_id: str) -> None:
    with nodes.b.client(OPERATOR_B) as client:
        response = client.get(f"/api/v1/messages/{message_id}")
    assert response.status_code == 200, response.text


def _export(node: NodeProcess, message_id: str, path: Path) -> bytes:
    result = accord(node, "bundle", "export", message_id, "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path.read_bytes()


def _without(data: bytes, *, kind: str | None = None, receipts: bool = False) -> bytes:
    """The bundle with the log entries of `kind` (and/or its receipts) taken out, written
    back in its canonical form: every remaining byte still proven."""
    document = loads_canonical(data)
    assert isinstance(document, dict)
    if kind is not None:
        entries = document["log"]["entries"]
        kept = [e for e in entries if LogEvent.from_leaf(base64.b64decode(e["leaf"])).kind != kind]
        assert len(kept) < len(entries), f"the bundle has no {kind} entry"
        document["log"]["entries"] = kept
    if receipts:
        assert document["receipts"], "the bundle has no receipt"
        document["receipts"] = []
    return dumps(document)


def _verify_cli(nodes: Nodes, data: bytes, path: Path) -> dict[str, Any]:
    path.write_bytes(data)
    trust = [arg for p in nodes.descriptors for arg in ("--trust", str(p))]
    result = accord(None, "verify", str(path), *trust, "--json")
    report: dict[str, Any] = json.loads(result.stdout)
    assert (result.returncode == 0) is report["ok"], result.stderr
    return report


def test_bundle_with_read_event_removed_fails(nodes: Nodes, tmp_path: Path) -> None:
    message_id = _send(nodes)
    _read_at_b(nodes, message_id)
    data = _export(nodes.b, message_id, tmp_path / "b.json")
    whole = _verify_cli(nodes, data, tmp_path / "whole.json")
    assert whole["ok"], whole["failures"]
    assert any("every entry" in p and "none was left out" in p for p in whole["proven"])
    cut = _verify_cli(nodes, _without(data, kind="message.read"), tmp_path / "cut.json")
    assert cut["ok"] is False
    assert any("left out" in f for f in cut["failures"]), cut["failures"]


def test_bundle_with_receipt_removed_fails(nodes: Nodes, tmp_path: Path) -> None:
    message_id = _send(nodes)
    data = _export(nodes.a, message_id, tmp_path / "a.json")
    assert verify_bundle(data, _trusted(nodes)).message_id == message_id
    # The signed receipt taken out: the log's receipt.stored entry names it.
    no_receipt = _without(data, receipts=True)
    with pytest.raises(BundleVerificationError) as refused:
        verify_bundle(no_receipt, _trusted(nodes))
    assert any("receipt" in f and "not in the bundle" in f for f in refused.value.failures)
    # The receipt and its log entry taken out: the chain of entries breaks.
    both = _without(data, kind="receipt.stored", receipts=True)
    report = _verify_cli(nodes, both, tmp_path / "both.json")
    assert report["ok"] is False
    assert any("left out" in f for f in report["failures"]), report["failures"]


def test_cosignature_by_a_party_not_passed_is_reported_not_a_failure(
    nodes: Nodes, tmp_path: Path
) -> None:
    """Issue 12: an auditor who checks B's bundle with B's descriptor alone sees A's
    cosignature of B's checkpoint reported, not the bilateral check failed by it (A's
    statement aside, which needs A's descriptor). B's log: A's was truncated above, and
    B rightly refuses to cosign it since."""
    message_id = _send(nodes)

    def cosigned() -> bytes | None:
        data = _export(nodes.b, message_id, tmp_path / "b.json")
        return data if f"accord-witness:{PARTY_A}".encode() in data else None

    data = wait_until(cosigned, what=f"a bundle of {PARTY_B} cosigned by {PARTY_A}", timeout=60)
    b_only = [d for d in _trusted(nodes) if d.party == PARTY_B]
    with pytest.raises(BundleVerificationError) as refused:
        verify_bundle(data, b_only)
    failures = refused.value.failures
    assert any(f"sender {PARTY_A} is not trusted" in f for f in failures)
    assert not any("unknown key" in f or "cosignature" in f for f in failures), failures


# --- The whole log, exported and checked offline -------------------------------------------


def _log_verify(nodes: Nodes, data: bytes, path: Path) -> tuple[int, dict[str, Any]]:
    path.write_bytes(data)
    trust = [arg for p in nodes.descriptors for arg in ("--trust", str(p))]
    result = accord(None, "audit", "verify", str(path), *trust, "--json")
    return result.returncode, json.loads(result.stdout)


def test_exported_log_verifies_offline_and_tampering_fails(nodes: Nodes, tmp_path: Path) -> None:
    _send(nodes)
    path = tmp_path / "журнал-b.json"
    done = accord(nodes.b, "audit", "export", "-o", str(path))
    assert done.returncode == 0, done.stderr
    data = path.read_bytes()
    code, report = _log_verify(nodes, data, tmp_path / "whole.json")
    assert code == 0 and report["ok"], report["failures"]
    assert report["party"] == PARTY_B and report["size"] > 0
    assert any("checkpoint(s)" in p and "cosignature(s)" in p for p in report["proven"])
    human = accord(None, "audit", "verify", str(tmp_path / "whole.json"), "--trust",
                   str(nodes.descriptors[1]), "--trust", str(nodes.descriptors[0]))  # fmt: skip
    assert human.returncode == 0 and "PROVEN" in human.stdout

    document = loads_canonical(data)
    assert isinstance(document, dict)
    leaves = document["leaves"]
    event = loads_canonical(base64.b64decode(leaves[1]))
    assert isinstance(event, dict)
    altered = dict(document, leaves=[leaves[0], base64.b64encode(
        dumps({**event, "user": "кто-то другой"})).decode(), *leaves[2:]])  # fmt: skip
    removed = dict(document, leaves=[leaves[0], *leaves[2:]])
    # A checkpoint re-signed by a key no descriptor names (a thief's key under the
    # node's log name).
    from accord.crypto.bundle import log_origin
    from accord.crypto.checkpoint import Checkpoint, parse_note, sign_checkpoint
    from accord.crypto.keys import SigningKey

    origin = log_origin(PARTY_B)
    body = parse_note(document["checkpoints"][-1]).text
    resigned = sign_checkpoint(Checkpoint.from_body(body), origin, SigningKey.generate())
    forged = dict(document, checkpoints=[*document["checkpoints"][:-1], resigned.decode()])
    for name, tampered, words in (
        ("altered", altered, "do not hash to the root"),
        ("removed", removed, "do not hash to the root"),
        ("resigned", forged, "not signed by a seal"),
    ):
        code, report = _log_verify(nodes, dumps(tampered), tmp_path / f"{name}.json")
        assert code == 1 and report["ok"] is False, name
        assert any(words in f for f in report["failures"]), (name, report["failures"])


# --- Evidence after key changes (the last tests: they rotate A's seal) -------------------


def _rotate_seal(node: NodeProcess) -> str:
    env = dict(os.environ, ACCORD_PASSPHRASE=NODE_PASSPHRASE)
    done = subprocess.run(
        [*accord_command(), "keys", "rotate", "--home", str(node.home_dir), "--key", "seal",
         "--json"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    new: str = json.loads(done.stdout)["new_key_id"]
    return new


def _kept_statements(node: NodeProcess, party: str) -> int:
    with node.database() as db, db.session(readonly=True) as session:
        return len(list_peer_statements(session, [party]))


def test_bundle_from_the_recipient_verifies_after_the_sender_rotated_its_seal(
    nodes: Nodes, tmp_path: Path
) -> None:
    """Issue 12: B's bundle of a message A sealed before A rotated its seal verifies
    against A's *current* descriptor (B carries A's rotation as A signed it), and against
    A's old and current descriptors passed together."""
    message_id = _send(nodes)
    old_descriptor = tmp_path / "a-old.descriptor"
    old_descriptor.write_bytes(nodes.descriptors[0].read_bytes())
    new_seal = _rotate_seal(nodes.a)
    wait_until(
        lambda: _kept_statements(nodes.b, PARTY_A) > 0 or None,
        what=f"{PARTY_B} to apply {PARTY_A}'s rotation",
        timeout=60,
    )
    current = tmp_path / "a-current.descriptor"
    current.write_bytes(nodes.a.export())
    data = _export(nodes.b, message_id, tmp_path / "b.json")
    bundle = tmp_path / "bundle.json"
    bundle.write_bytes(data)
    for trust in ([current, nodes.descriptors[1]], [old_descriptor, current, nodes.descriptors[1]]):
        args = [arg for p in trust for arg in ("--trust", str(p))]
        result = accord(None, "verify", str(bundle), *args, "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["ok"], report["failures"]
        proven = "\n".join(report["proven"])
        assert f"{PARTY_A}'s seal" in proven and new_seal[:16] in proven
        assert f"Message {message_id}" in proven and "none was left out" in proven
