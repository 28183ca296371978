"""Issue 12's authority attacks, replayed against real node processes on loopback with
real mutual TLS, on SQLite and on PostgreSQL (docs/security.md, "Authority").

A (МВД-РБ) originates, B (Росгвардия) receives and may forward, C (Прокуратура-РБ) is the
third party. A has a head (signatory) and an operator cleared only for OFFICIAL; B has a
reader cleared only for OFFICIAL. Each test is named after the attack it replays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlmodel import select

from accord.gateway.consent.control import ConsentRefused
from accord.gateway.consent.forward import _prepare, _ship
from accord.gateway.keys import lifecycle as _keys
from accord.gateway.node.config import Home
from accord.gateway.serve import load_node
from accord.storage import ConsentRecord, Key, KeyKind
from tests.integration._nodes import NODE_PASSPHRASE, Cluster, NodeProcess, wait_until

pytestmark = pytest.mark.integration

A, B, C = "МВД-РБ", "Росгвардия", "Прокуратура-РБ"
HEAD, HEAD_PASSPHRASE = "Глава А", "подпись главы А"
LOW_A, OPERATOR_A = "оператор-официал", "оператор А"
LOW_B, OPERATOR_B, OPERATOR_C = "читатель-официал", "оператор Б", "оператор В"
PURPOSE = "передача материалов в прокуратуру"
CONFIDENTIAL_ORCON = {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b, c = cluster.add(A, B, C)
    a.add_user(HEAD, role="signatory", clearance="CONFIDENTIAL", passphrase=HEAD_PASSPHRASE)
    a.add_user(LOW_A, role="operator", clearance="OFFICIAL")
    a.add_user(OPERATOR_A, role="operator", clearance="CONFIDENTIAL")
    b.add_user(LOW_B, role="operator", clearance="OFFICIAL")
    b.add_user(OPERATOR_B, role="operator", clearance="CONFIDENTIAL")
    c.add_user(OPERATOR_C, role="operator", clearance="CONFIDENTIAL")
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, c=c, cluster=cluster)


def _send(nodes: SimpleNamespace) -> str:
    """A CONFIDENTIAL/ORCON notice from A, delivered to B."""
    response = nodes.a.send(
        OPERATOR_A, to=nodes.b, marking=CONFIDENTIAL_ORCON, purpose="расследование",
        body="Протокол допроса свидетеля.",
    )  # fmt: skip
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    nodes.a.wait_for_status(message_id, "delivered")
    return message_id


def _post(node: NodeProcess, user: str, path: str, body: dict[str, Any]) -> Any:
    with node.client(user) as client:
        return client.post(f"/api/v1{path}", json=body)


def _expires() -> str:
    return (datetime.now(UTC) + timedelta(days=7)).isoformat()


def test_operator_downgrades_confidential_message_refused(nodes: SimpleNamespace) -> None:
    """Attack 1: an operator cleared only for OFFICIAL re-marks a CONFIDENTIAL/ORCON
    message to OFFICIAL; refused, and B's OFFICIAL reader still reads nothing."""
    message_id = _send(nodes)
    outbox = nodes.a.box_ids("outbox")
    answer = _post(
        nodes.a, LOW_A, f"/messages/{message_id}/marking", {"level": "OFFICIAL", "caveats": []}
    )
    assert answer.status_code == 403, answer.text
    assert "current marking CONFIDENTIAL" in answer.json()["detail"]
    assert nodes.a.box_ids("outbox") == outbox  # no re-marking left A
    with nodes.b.client(LOW_B) as client:
        assert client.get(f"/api/v1/messages/{message_id}").status_code == 403


def test_operator_grants_consent_for_confidential_message_refused(
    nodes: SimpleNamespace,
) -> None:
    """Attack 2: an operator cleared for OFFICIAL consents to passing a CONFIDENTIAL
    message on: refused, nothing reaches the forwarder."""
    message_id = _send(nodes)
    outbox = nodes.a.box_ids("outbox")
    answer = _post(
        nodes.a, LOW_A, f"/messages/{message_id}/consents",
        {"to": C, "purpose": PURPOSE, "expires": _expires()},
    )  # fmt: skip
    assert answer.status_code == 403, answer.text
    assert "current marking" in answer.json()["detail"]
    assert nodes.a.box_ids("outbox") == outbox
    with nodes.b.client(OPERATOR_B) as client:
        assert client.get(f"/api/v1/messages/{message_id}/consents").json() == []


def test_forwarder_with_real_keys_ships_under_a_revoked_token_refused_by_the_third_party(
    nodes: SimpleNamespace,
) -> None:
    """Attack 3: A consents, then revokes; B ignores the revocation and, with its real
    keys over real mutual TLS, ships a hand-built forward stream carrying the revoked
    token to C. C refuses it (uniform 403) and stores nothing."""
    message_id = _send(nodes)
    granted = _post(
        nodes.a, HEAD, f"/messages/{message_id}/consents",
        {"to": C, "purpose": PURPOSE, "expires": _expires(),
         "signatory_passphrase": HEAD_PASSPHRASE},
    )  # fmt: skip
    assert granted.status_code == 201, granted.text
    nonce = granted.json()["nonce"]
    nodes.a.wait_for_status(granted.json()["sent_as"], "delivered")
    revoked = _post(nodes.a, OPERATOR_A, f"/consents/{nonce}/revoke", {})
    assert revoked.status_code == 200, revoked.text
    nodes.a.wait_for_status(revoked.json()["sent_as"], "delivered")
    nodes.a.wait_for_status(revoked.json()["third_party_told"], "delivered")

    def revoked_at_c() -> bool:
        with nodes.c.client("admin") as client:
            rows = client.get("/api/v1/consents").json()
        return [(r["nonce"], r["status"]) for r in rows] == [(nonce, "revoked")]

    wait_until(revoked_at_c, what="C to record the revoked token")

    # B misbehaves: its own record is reset, and its node's keys ship the forward.
    forwarder = load_node(nodes.b.home_dir, NODE_PASSPHRASE.encode("utf-8"))
    try:
        with forwarder.db.session() as session:
            record = session.get(ConsentRecord, nonce)
            assert record is not None and record.status == "revoked"
            record.status = "granted"
            session.add(record)
        prepared = _prepare(forwarder, message_id, C, None)
        with pytest.raises(ConsentRefused, match=r"refused the forward \(HTTP 403\)"):
            asyncio.run(_ship(forwarder, prepared))
    finally:
        forwarder.close()
    assert message_id not in nodes.c.box_ids("inbox")


def test_peer_seal_revoked_on_a_running_node_is_refused_at_once(nodes: SimpleNamespace) -> None:
    """B's admin revokes A's seal while B runs; from the moment the command returns, a
    message signed by it is refused (no cache keeps trusting it). Last: A's messages to B
    fail from here on."""
    _send(nodes)  # B has just verified (and remembered) A's seal
    with nodes.b.database() as db, db.session(readonly=True) as session:
        seals = session.exec(select(Key).where(Key.owner == A, Key.kind == KeyKind.SEAL)).all()
    for seal in seals:
        _keys.revoke(
            Home(nodes.b.home_dir), seal.key_id, reason="печать скомпрометирована",
            passphrase=None, now=datetime.now(UTC),
        )  # fmt: skip
    response = nodes.a.send(OPERATOR_A, to=nodes.b, marking=CONFIDENTIAL_ORCON)
    assert response.status_code == 201, response.text
    message_id = response.json()["message_id"]
    nodes.a.wait_for_status(message_id, "failed")
    assert message_id not in nodes.b.box_ids("inbox")
