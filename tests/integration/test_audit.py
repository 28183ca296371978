"""The audit trail end to end, with two real nodes (`accord serve` processes, mutual TLS):
events logged as messages flow, checkpoints cosigned by the peer over the peer API, an
evidence bundle exported with `accord bundle export` and verified offline with `accord
verify`, and `accord audit verify` naming a row changed behind the node's back (DESIGN 7,
issue 6; agreement art. 4.4 for the signed request).
"""

from __future__ import annotations

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
from accord.crypto.bundle import BundleVerificationError, verify_bundle
from accord.crypto.descriptor import NodeDescriptor, verify_descriptor
from accord.gateway.harness import accord_command
from accord.gateway.node.config import AuditConfig
from tests.integration._nodes import Cluster, NodeProcess, wait_until

PARTY_A, PARTY_B = "МВД-РБ", "Росгвардия"
HEAD, AUDITOR, OPERATOR_B = "Глава", "Аудитор", "Оператор Б"
HEAD_PASSPHRASE = "личный пароль главы"
SECRET_BODY = "Сведения о лице: Петров Пётр Петрович, дело № 42/2026"
# Checkpoints and witnessing within a test's patience.
FAST_AUDIT = AuditConfig(
    checkpoint_interval=0.3, checkpoint_burst=1, witness_interval=0.3, poll_interval=0.1
)


@dataclass
class Nodes:
    a: NodeProcess
    b: NodeProcess
    root: Path
    descriptors: dict[str, Path]


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> Iterator[Nodes]:
    cluster = cluster_factory()
    a, b = cluster.add(PARTY_A, PARTY_B)
    a.add_user(HEAD, role="signatory", clearance="CONFIDENTIAL", passphrase=HEAD_PASSPHRASE)
    a.add_user(AUDITOR, role="auditor")
    b.add_user(OPERATOR_B, role="operator", clearance="CONFIDENTIAL")
    b.add_user(AUDITOR, role="auditor")
    for node in (a, b):
        node.configure(audit=FAST_AUDIT)
    cluster.connect()
    descriptors = {}
    for node in (a, b):
        path = cluster.root / f"{node.party}.descriptor"
        path.write_bytes(node.descriptor or node.export())
        descriptors[node.party] = path
    cluster.start()
    yield Nodes(a, b, cluster.root, descriptors)


def _trusted(nodes: Nodes) -> list[NodeDescriptor]:
    return [
        verify_descriptor(Envelope.from_bytes(p.read_bytes())) for p in nodes.descriptors.values()
    ]


def accord(
    node: NodeProcess | None, user: str | None, *args: str
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    if node is not None and user is not None:
        env.update(
            ACCORD_NODE=node.url,
            ACCORD_CA=str(node.init.ca_file),
            ACCORD_TOKEN=node.users[user].token,
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


def _send_request(nodes: Nodes) -> str:
    response = nodes.a.send(
        HEAD,
        to=nodes.b,
        type="request",
        body=SECRET_BODY,
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        purpose="установление обстоятельств по делу № 42/2026 (статья 4 Соглашения)",
        fields={  # agreement art. 4.3
            "essence": "Хищение грузов на железнодорожном транспорте",
            "justification": "Уголовное дело № 42/2026 (ст. 4 Соглашения)",
            "assistance": "Сообщить сведения о получателе груза",
        },
    )
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    nodes.a.wait_for_status(message_id, "delivered")
    return message_id


def _bundle(node: NodeProcess, message_id: str) -> bytes:
    with node.client(AUDITOR) as client:
        response = client.get(f"/api/v1/messages/{message_id}/bundle")
    assert response.status_code == 200, response.text
    return response.content


def _witnessed_bundle(nodes: Nodes, node: NodeProcess, message_id: str) -> bytes:
    """A bundle whose checkpoint the other node has cosigned (witnessing is scheduled)."""

    def cosigned() -> bytes | None:
        data = _bundle(node, message_id)
        try:
            evidence = verify_bundle(data, _trusted(nodes))
        except BundleVerificationError:
            return None
        return data if any("witnessed that checkpoint" in p for p in evidence.proven) else None

    return wait_until(cosigned, what=f"a cosigned checkpoint at {node.party}", timeout=60)


@pytest.fixture(scope="module")
def message_id(nodes: Nodes) -> str:
    return _send_request(nodes)


def test_bundle_exported_and_verified_offline_by_the_cli(
    nodes: Nodes, message_id: str, tmp_path: Path
) -> None:
    _witnessed_bundle(nodes, nodes.a, message_id)
    bundle = tmp_path / "доказательства.json"
    exported = accord(nodes.a, AUDITOR, "bundle", "export", message_id, "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr
    data = bundle.read_bytes()
    assert SECRET_BODY.encode() not in data
    trust = [arg for p in nodes.descriptors.values() for arg in ("--trust", str(p))]
    # Offline: no node URL, no token, nothing but the bundle and the descriptors.
    verified = accord(None, None, "verify", str(bundle), *trust, "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = json.loads(verified.stdout)
    assert result["ok"] is True and result["failures"] == []
    proven = "\n".join(result["proven"])
    assert f"signed by the seal of {PARTY_A} and {HEAD}" in proven  # art. 4.4
    assert f"{PARTY_B} signed a receipt" in proven
    assert f"{PARTY_B} witnessed that checkpoint" in proven
    assert "message.sent by Глава" in proven and "receipt.stored" in proven
    human = accord(None, None, "verify", str(bundle), *trust)
    assert human.returncode == 0 and "PROVEN" in human.stdout


def test_attack_tampered_bundle_fails_cli_verify(
    nodes: Nodes, message_id: str, tmp_path: Path
) -> None:
    data = bytearray(_bundle(nodes.a, message_id))
    data[len(data) // 2] ^= 0x01
    bundle = tmp_path / "подделка.json"
    bundle.write_bytes(bytes(data))
    trust = [arg for p in nodes.descriptors.values() for arg in ("--trust", str(p))]
    result = accord(None, None, "verify", str(bundle), *trust, "--json")
    assert result.returncode == 1
    assert json.loads(result.stdout)["ok"] is False
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: the bundle does not verify")


def test_receiving_node_bundle_proves_receipt_in_its_own_log(nodes: Nodes, message_id: str) -> None:
    data = _witnessed_bundle(nodes, nodes.b, message_id)
    evidence = verify_bundle(data, _trusted(nodes))
    assert any("message.received" in p and "accepted" in p for p in evidence.proven)
    assert any(f"{PARTY_A} witnessed that checkpoint" in p for p in evidence.proven)


def test_audit_verify_cli_checks_log_checkpoints_and_cosignatures(
    nodes: Nodes, message_id: str
) -> None:
    _witnessed_bundle(nodes, nodes.a, message_id)
    result = accord(nodes.a, AUDITOR, "audit", "verify", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["problem"] is None
    assert report["checkpoints_verified"] >= 1 and report["cosignatures_verified"] >= 1


def test_attack_operator_cannot_read_the_audit_log(nodes: Nodes) -> None:
    result = accord(nodes.b, OPERATOR_B, "audit", "verify")
    assert result.returncode == 1
    assert "cannot read the audit log" in result.stderr


def test_auditor_sees_events_and_digests_never_content(nodes: Nodes, message_id: str) -> None:
    with nodes.a.client(AUDITOR) as client:
        refused = client.get(f"/api/v1/messages/{message_id}")
        leaves = client.get("/api/v1/audit/leaves", params={"limit": 1000})
    assert refused.status_code == 403
    assert leaves.status_code == 200
    assert SECRET_BODY not in leaves.text
    events = [leaf["event"] for leaf in leaves.json()]
    kinds = {e["kind"] for e in events}
    assert {"message.sent", "receipt.stored", "user.added", "peer.added"} <= kinds
    refusal = [e for e in events if e["kind"] == "read.refused"]
    assert refusal and refusal[-1]["user"] == AUDITOR


def _leaf_of(node: NodeProcess, message_id: str, kind: str) -> int:
    with node.database() as db, db.session(readonly=True) as session:
        rows = session.execute(
            text(
                'SELECT l."index", l.leaf FROM audit_leaves l JOIN audit_message_leaves m'
                ' ON m."index" = l."index" WHERE m.message_id = :m ORDER BY l."index"'
            ),
            {"m": message_id},
        ).all()
    return next(int(i) for i, leaf in rows if json.loads(bytes(leaf))["kind"] == kind)


def _tamper(node: NodeProcess, statements: list[tuple[str, dict[str, Any]]]) -> None:
    with node.database() as db, db.session() as session:
        for sql, params in statements:
            session.execute(text(sql), params)


@pytest.mark.parametrize("kind", ["edited", "deleted", "reordered", "inserted"])
def test_attack_row_changed_in_the_database_is_named_by_audit_verify(
    nodes: Nodes, message_id: str, kind: str
) -> None:
    node = nodes.a
    index = _leaf_of(node, message_id, "message.sent")
    with node.database() as db, db.session(readonly=True) as session:
        rows = {
            int(i): (bytes(leaf), bytes(h))
            for i, leaf, h in session.execute(
                text('SELECT "index", leaf, leaf_hash FROM audit_leaves')
            ).all()
        }
    size = max(rows) + 1
    leaf, hashed = rows[index]
    other = index - 1
    update = 'UPDATE audit_leaves SET leaf = :leaf, leaf_hash = :h WHERE "index" = :i'
    insert = (
        'INSERT INTO audit_leaves ("index", leaf, leaf_hash, appended_at)'
        " VALUES (:i, :leaf, :h, :t)"
    )
    tamper: list[tuple[str, dict[str, Any]]]
    expected = index
    if kind == "edited":
        forged = leaf.replace(b"CONFIDENTIAL", b"OFFICIAL")
        tamper = [
            (
                'UPDATE audit_leaves SET leaf = :leaf WHERE "index" = :i',
                {"leaf": forged, "i": index},
            )
        ]
    elif kind == "deleted":
        tamper = [('DELETE FROM audit_leaves WHERE "index" = :i', {"i": index})]
    elif kind == "reordered":
        tamper = [
            (update, {"leaf": rows[other][0], "h": rows[other][1], "i": index}),
            (update, {"leaf": leaf, "h": hashed, "i": other}),
        ]
        expected = other
    else:
        tamper = [
            (insert, {"i": size, "leaf": leaf, "h": hashed, "t": "2026-11-26 10:00:00+00:00"})
        ]
        expected = size
    _tamper(node, tamper)
    try:
        result = accord(node, AUDITOR, "audit", "verify", "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 1
        assert report["problem"]["kind"] == kind, report
        assert report["problem"]["index"] == expected, report
        human = accord(node, AUDITOR, "audit", "verify")
        (line,) = human.stderr.splitlines()
        assert f"{kind} at {expected}" in line
    finally:
        restore: list[tuple[str, dict[str, Any]]] = [
            ('DELETE FROM audit_leaves WHERE "index" >= 0', {})
        ]
        restore += [
            (insert, {"i": i, "leaf": lf, "h": h, "t": "2026-11-26 10:00:00+00:00"})
            for i, (lf, h) in sorted(rows.items())
        ]
        _tamper(node, restore)
    assert accord(node, AUDITOR, "audit", "verify").returncode == 0
