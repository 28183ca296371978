"""The local API of real nodes, on SQLite and on PostgreSQL: who may do what, and what a
refused request leaves behind (nothing).

Node A (МВД-РБ) sends to node B (Росгвардия). B has a cleared operator, an operator
below the marking of A's message, and an auditor, who sees metadata and timelines but
never content (DESIGN "Users"; guarantee 2: decrypted only for an authorised reader).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace

import pytest

from tests.integration._nodes import Cluster, NodeProcess, multipart

pytestmark = pytest.mark.integration

SIGNATORY_PASSPHRASE = "подпись главы Б"
ATTACHMENT = "Сведения ограниченного распространения.\n".encode() * 50
SIZE_LIMIT = 16 * 1024


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b = cluster.add("МВД-РБ", "Росгвардия")
    a.add_user(
        "Петров П.П.", role="signatory", clearance="CONFIDENTIAL", passphrase=SIGNATORY_PASSPHRASE
    )
    a.add_user("оператор", role="operator", clearance="OFFICIAL")
    a.add_user("ревизор", role="auditor")
    b.add_user("старший", role="operator", clearance="CONFIDENTIAL")
    b.add_user("младший", role="operator", clearance="OFFICIAL")
    # Cleared for the highest level: only the role can keep the auditor from content.
    b.add_user("аудитор", role="auditor", clearance="CONFIDENTIAL")
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, cluster=cluster)


@pytest.fixture(scope="module")
def confidential(nodes: SimpleNamespace) -> str:
    """A CONFIDENTIAL request with an attachment, delivered from A to B."""
    response = nodes.a.send(
        "Петров П.П.",
        to=nodes.b,
        type="request",
        marking={"level": "CONFIDENTIAL", "caveats": []},
        purpose="Установление связей фигуранта",
        body="Содержание запроса для допущенных лиц.",
        fields={
            "essence": "Сведения о транспортном средстве",
            "justification": "Проверка по делу № 7 (ст. 4 Соглашения)",
            "assistance": "Сообщить сведения о владельце",
        },
        attachments=[("справка.txt", ATTACHMENT)],
    )
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    nodes.a.wait_for_status(message_id, "delivered")
    return message_id


class _Snapshot:
    """What a refused send must not change at the sender: its outbox and its blobs
    (committed and temporary)."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.outbox = node.box_ids("outbox")
        self.blobs = node.blobs()
        self.temp = node.temp_blobs()

    def assert_unchanged(self) -> None:
        assert self.node.box_ids("outbox") == self.outbox
        assert self.node.blobs() == self.blobs
        assert self.node.temp_blobs() == self.temp


@pytest.fixture
def small_uploads(nodes: SimpleNamespace) -> Iterator[NodeProcess]:
    """Node A restarted with a 16 KiB upload limit; restored afterwards."""
    a: NodeProcess = nodes.a
    original = a.home.load_config().max_upload_bytes
    a.configure(max_upload_bytes=SIZE_LIMIT)
    a.restart()
    try:
        yield a
    finally:
        a.configure(max_upload_bytes=original)
        a.restart()


def test_missing_token_refused(nodes: SimpleNamespace) -> None:
    a, b = nodes.a, nodes.b
    before = _Snapshot(a)
    meta = {
        "to": b.party,
        "type": "notice",
        "marking": {"level": "OFFICIAL", "caveats": []},
        "purpose": "без токена",
        "body": "не должно быть отправлено",
        "attachments": ["вложение.txt"],
    }
    files = multipart(meta, [("вложение.txt", ATTACHMENT)])
    headers = [
        {},
        {"Authorization": "Bearer acc_" + "A" * 43},  # well formed, never issued
        {"Authorization": f"Basic {a.users['оператор'].token}"},  # a real token, wrong scheme
    ]
    with a.client() as client:
        for header in headers:
            assert client.get("/api/v1/messages", headers=header).status_code == 401
            assert client.get("/api/v1/whoami", headers=header).status_code == 401
            sent = client.post("/api/v1/messages", files=files, headers=header)
            assert sent.status_code == 401, sent.text
    before.assert_unchanged()
    # Control: the same request with the operator's token is accepted.
    with a.client("оператор") as client:
        assert client.post("/api/v1/messages", files=files).status_code == 201


def test_upload_over_size_limit_refused(small_uploads: NodeProcess, nodes: SimpleNamespace) -> None:
    a, b = small_uploads, nodes.b
    before = _Snapshot(a)
    too_big = b"\xd0\x96" * (4 * SIZE_LIMIT)  # "Ж" over and over: 8 times the limit
    response = a.send("оператор", to=b, body="слишком большое", attachments=[("big.bin", too_big)])
    assert response.status_code == 413, response.text
    assert "max_upload_bytes" in response.json()["detail"]
    before.assert_unchanged()
    # Control: under the limit the same node accepts it.
    small = a.send("оператор", to=b, body="в пределах", attachments=[("small.bin", too_big[:512])])
    assert small.status_code == 201, small.text


def test_request_with_wrong_signatory_passphrase_refused(nodes: SimpleNamespace) -> None:
    a, b = nodes.a, nodes.b
    before = _Snapshot(a)
    response = a.send(
        "Петров П.П.",
        to=b,
        type="request",
        body="подписано чужим паролем",
        fields={
            "essence": "Сведения о транспортном средстве",
            "justification": "Проверка по делу № 7 (ст. 4 Соглашения)",
            "assistance": "Сообщить сведения о владельце",
        },
        signatory_passphrase="угаданный пароль",
        attachments=[("вложение.txt", ATTACHMENT)],
    )
    assert response.status_code == 422, response.text
    before.assert_unchanged()


def test_operator_reading_above_clearance_refused(
    nodes: SimpleNamespace, confidential: str
) -> None:
    b = nodes.b
    with b.client("младший") as client:
        read = client.get(f"/api/v1/messages/{confidential}")
        download = client.get(f"/api/v1/messages/{confidential}/attachments/0")
    assert read.status_code == 403, read.text
    assert download.status_code == 403, download.text
    assert "Сведения" not in read.text + download.text
    # Control: the operator cleared for CONFIDENTIAL reads it.
    with b.client("старший") as client:
        read = client.get(f"/api/v1/messages/{confidential}")
        download = client.get(f"/api/v1/messages/{confidential}/attachments/0")
    assert read.status_code == 200, read.text
    assert read.json()["body"] == "Содержание запроса для допущенных лиц."
    assert download.content == ATTACHMENT


def test_auditor_reading_content_refused(nodes: SimpleNamespace, confidential: str) -> None:
    b = nodes.b
    with b.client("аудитор") as client:
        read = client.get(f"/api/v1/messages/{confidential}")
        download = client.get(f"/api/v1/messages/{confidential}/attachments/0")
        # An auditor sees the metadata and the timeline...
        inbox = client.get("/api/v1/messages", params={"box": "inbox", "limit": 500})
        status = client.get(f"/api/v1/messages/{confidential}/status")
    assert read.status_code == 403, read.text
    assert download.status_code == 403, download.text
    assert "Содержание" not in read.text and "Сведения" not in download.text
    assert inbox.status_code == 200
    listed = [row for row in inbox.json() if row["message_id"] == confidential]
    assert len(listed) == 1
    assert listed[0]["from"] == "МВД-РБ"
    assert listed[0]["marking"]["level"] == "CONFIDENTIAL"
    assert status.status_code == 200
    assert status.json()["status"] == "received"
    assert [e["event"] for e in status.json()["events"]] == ["received"]


def test_auditor_sending_refused(nodes: SimpleNamespace) -> None:
    a, b = nodes.a, nodes.b
    before = _Snapshot(a)
    response = a.send("ревизор", to=b, body="аудитор не отправляет сообщений")
    assert response.status_code == 403, response.text
    before.assert_unchanged()
