"""Delivery between two real nodes, on SQLite and on PostgreSQL (DESIGN guarantees 1, 2, 5, 6).

Node A (МВД-РБ) sends to node B (Росгвардия) through the local API; A's delivery worker
streams the sealed message to B's peer API over mutual TLS, B verifies and stores it and
answers with its signed receipt, which A keeps. The faults here are real: B is stopped
(SIGTERM) or crashes (SIGKILL) while A keeps sending, and A is killed with SIGKILL with
messages in its outbox; every message must still arrive, exactly once.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable
from types import SimpleNamespace

import httpx
import pytest

from accord.crypto import Envelope, verify_receipt
from accord.gateway.admin.home import read_descriptor
from accord.storage import get_message, get_receipt
from tests.integration._nodes import Cluster, NodeProcess, wait_until

pytestmark = pytest.mark.integration

SIGNATORY_PASSPHRASE = "подпись главы"
# Cyrillic text, every byte value, and enough random bytes for several 64 KiB age chunks
# plus a partial one: the attachment must come out exactly as it went in. The note is
# small, as many attachments are (a node may store small parts apart from large ones).
ATTACHMENT = (
    "Протокол осмотра места происшествия № 17/2024\n".encode()
    + bytes(range(256))
    + os.urandom(3 * 64 * 1024 + 123)
)
NOTE = "Справка: лицо проживает по адресу, указанному в запросе.\n".encode()


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster], node_backend: str) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b = cluster.add("МВД-РБ", "Росгвардия")
    # Signatories before the descriptors are exchanged: B learns A's signatory key from
    # A's descriptor.
    a.add_user(
        "Иванов И.И.", role="signatory", clearance="CONFIDENTIAL", passphrase=SIGNATORY_PASSPHRASE
    )
    a.add_user("оператор", role="operator", clearance="CONFIDENTIAL")
    b.add_user("исполнитель", role="operator", clearance="CONFIDENTIAL")
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, cluster=cluster, backend=node_backend)


def _sent(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    return message_id


def _notices(a: NodeProcess, b: NodeProcess, count: int, purpose: str) -> list[str]:
    return [
        _sent(a.send("оператор", to=b, purpose=purpose, body=f"Уведомление № {i}"))
        for i in range(count)
    ]


def _assert_delivered_once(a: NodeProcess, b: NodeProcess, ids: list[str]) -> None:
    """Each message is delivered at A, in B's inbox once, and received and delivered once."""
    for message_id in ids:
        a.wait_for_status(message_id, "delivered")
    inbox = Counter(b.box_ids("inbox"))
    assert {m: inbox[m] for m in ids} == dict.fromkeys(ids, 1)
    for message_id in ids:
        assert Counter(a.events(message_id))["delivered"] == 1
        assert Counter(b.events(message_id))["received"] == 1
        assert b.status(message_id)["status"] == "received"


def _wait_for_retries(a: NodeProcess, ids: list[str]) -> None:
    """Wait until A tried and failed to deliver each message (B is down)."""

    def retried() -> bool:
        return all("retry" in a.events(m) for m in ids)

    wait_until(retried, what="A to record a failed attempt for each message", timeout=30)


def test_signatory_request_with_cyrillic_attachment_delivered_byte_exact(
    nodes: SimpleNamespace,
) -> None:
    a, b = nodes.a, nodes.b
    response = a.send(
        "Иванов И.И.",
        to=b,
        type="request",
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        purpose="Проверка сведений по уголовному делу № 12-345",
        body="Просим оказать содействие в установлении местонахождения лица.",
        fields={
            "essence": "Установление местонахождения",
            "justification": "Статья 4 Соглашения",
            "assistance": "Запрос сведений",
        },
        attachments=[("протокол осмотра.bin", ATTACHMENT), ("справка.txt", NOTE)],
    )
    message_id = _sent(response)
    assert response.json()["status"] == "queued"

    status = a.wait_for_status(message_id, "delivered")
    events = [e["event"] for e in status["events"]]
    assert events[0] == "queued"
    assert events[-1] == "delivered"
    assert events.count("delivered") == 1

    # B decrypts for its cleared operator: the signed metadata, body and manifest...
    with b.client("исполнитель") as client:
        read = client.get(f"/api/v1/messages/{message_id}")
        assert read.status_code == 200, read.text
        message = read.json()
        # ...and the attachments, byte for byte.
        downloads = [client.get(f"/api/v1/messages/{message_id}/attachments/{i}") for i in range(2)]
    assert message["from"] == "МВД-РБ"
    assert message["to"] == "Росгвардия"
    assert message["type"] == "request"
    assert message["marking"]["level"] == "CONFIDENTIAL"
    assert message["marking"]["caveats"] == ["ORCON"]
    assert message["purpose"] == "Проверка сведений по уголовному делу № 12-345"
    assert message["body"] == "Просим оказать содействие в установлении местонахождения лица."
    assert message["fields"]["essence"] == "Установление местонахождения"
    assert message["attachments"] == [
        {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, data in (("протокол осмотра.bin", ATTACHMENT), ("справка.txt", NOTE))
    ]
    assert [d.status_code for d in downloads] == [200, 200]
    assert [d.content for d in downloads] == [ATTACHMENT, NOTE]

    # A keeps B's receipt: signed by B's seal, for this message, binding the statement A
    # signed, and the very receipt B recorded when it accepted the message.
    b_seal = read_descriptor(b.descriptor).seal
    with a.database() as db, db.session(readonly=True) as session:
        sent = Envelope.from_bytes(get_message(session, message_id).envelope)
        receipt_at_a = get_receipt(session, message_id)
        assert receipt_at_a.verdict == "accepted"
        receipt_bytes = receipt_at_a.envelope
    verified = verify_receipt(
        Envelope.from_bytes(receipt_bytes),
        [b_seal],
        receiver="Росгвардия",
        message_id=message_id,
        statement_sha256=sent.payload_sha256,
    )
    assert verified.receipt.sender == "МВД-РБ"
    assert verified.receipt.envelope_sha256 == sent.sha256
    with b.database() as db, db.session(readonly=True) as session:
        assert get_receipt(session, message_id).envelope == receipt_bytes
        # B stored the envelope exactly as A signed it.
        assert get_message(session, message_id).envelope == sent.to_bytes()


def test_operator_request_waits_for_signatory_then_delivered(nodes: SimpleNamespace) -> None:
    a, b = nodes.a, nodes.b
    response = a.send(
        "оператор",
        to=b,
        type="request",
        purpose="Запрос информации о транспортном средстве",
        body="Просим сообщить сведения о владельце.",
        fields={
            "essence": "Сведения о транспортном средстве",
            "justification": "Проверка по делу № 7 (ст. 4 Соглашения)",
            "assistance": "Сообщить сведения о владельце",
        },
    )
    message_id = _sent(response)
    # Art. 4.4: an operator's request is only a draft until a signatory signs it.
    assert response.json()["status"] == "draft"
    assert a.status(message_id)["status"] == "draft"
    assert a.events(message_id) == ["draft"]

    path = f"/api/v1/messages/{message_id}/sign"
    with a.client("оператор") as client:
        refused = client.post(path, json={"passphrase": SIGNATORY_PASSPHRASE})
    assert refused.status_code == 403
    with a.client("Иванов И.И.") as client:
        wrong = client.post(path, json={"passphrase": "не тот пароль"})
        assert wrong.status_code == 403
        assert a.events(message_id) == ["draft"]
        signed = client.post(path, json={"passphrase": SIGNATORY_PASSPHRASE})
    assert signed.status_code == 200, signed.text
    assert signed.json() == {"message_id": message_id, "status": "queued"}

    a.wait_for_status(message_id, "delivered")
    assert a.events(message_id)[:3] == ["draft", "signed", "queued"]
    with b.client("исполнитель") as client:
        read = client.get(f"/api/v1/messages/{message_id}")
    assert read.status_code == 200, read.text
    assert read.json()["body"] == "Просим сообщить сведения о владельце."

    # What B holds carries both signatures: the signatory's and A's seal.
    signatory_key = {
        s.key.key_id for s in read_descriptor(a.descriptor).signatories if s.name == "Иванов И.И."
    }
    seal_key = read_descriptor(a.descriptor).seal.key_id
    with b.database() as db, db.session(readonly=True) as session:
        received = Envelope.from_bytes(get_message(session, message_id).envelope)
    assert {s.keyid for s in received.signatures} == signatory_key | {seal_key}


def test_peer_down_messages_queue_then_deliver_exactly_once(nodes: SimpleNamespace) -> None:
    a, b = nodes.a, nodes.b
    b.stop()
    try:
        ids = _notices(a, b, 5, "Проверка очереди при недоступном узле")
        _wait_for_retries(a, ids)
        for message_id in ids:
            assert a.status(message_id)["status"] in ("queued", "sending")
            assert "delivered" not in a.events(message_id)
    finally:
        b.start()
    _assert_delivered_once(a, b, ids)


def test_sender_killed_with_undelivered_messages_delivers_once(nodes: SimpleNamespace) -> None:
    """A is killed -9 holding messages in every state a delivery goes through: queued
    after failed attempts (B had crashed), being leased or streamed to B (B is back up and
    A's worker is catching up), and just committed by the local API. Restarted, A takes
    back its leases and delivers all of them; B answers any redelivery with its original
    receipt, so each arrives once."""
    a, b = nodes.a, nodes.b
    b.kill9()  # this time the peer crashes rather than stops
    try:
        waiting = _notices(a, b, 3, "Проверка восстановления после kill -9: очередь")
        _wait_for_retries(a, waiting)
        b.start()
        fresh = _notices(a, b, 3, "Проверка восстановления после kill -9: отправка")
        # No clean shutdown: leases, transactions and buffers are left as they are.
        a.kill9()
    finally:
        if not b.running:
            b.start()
        if not a.running:
            a.start()
    _assert_delivered_once(a, b, waiting + fresh)


def test_sigterm_stops_node_while_peer_keeps_idle_connection(nodes: SimpleNamespace) -> None:
    """CLI.md: `accord serve` stops cleanly on SIGTERM, also when a peer's delivery client
    keeps its connection open for the next batch (as A's does after any delivery). The
    bound is several times a normal stop, not a measurement."""
    if nodes.backend != "sqlite":
        pytest.skip("a property of the process, not of its database: checked on SQLite")
    a, b = nodes.a, nodes.b
    a.wait_for_status(_sent(a.send("оператор", to=b, body="перед остановкой")), "delivered")
    try:
        code = b.stop(timeout=8)
    finally:
        if not b.running:
            b.start()
    assert code == 0
