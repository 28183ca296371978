"""The request workflow between two real nodes (agreement art. 4 to 6, 6.3).

Node A (МВД-РБ) requests assistance from node B (Росгвардия). Each step is a signed
message; the sending node moves its copy of the case when it sends, the receiving node
moves its own when the message arrives, so both end in the same state. A step the case
does not allow (a refusal without written reasons, art. 5.3) is refused by the sending
node, and by the receiving node if a peer sends it anyway.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from accord.crypto import MessageDraft, canonical_json, new_message_id, seal_message
from accord.crypto.tls import client_context
from accord.gateway.admin.home import read_descriptor
from accord.gateway.keys.store import NodeKeys
from accord.gateway.node.runtime import PROFILE_HEADER
from accord.policy import default_profile
from tests.integration._nodes import NODE_PASSPHRASE, Cluster, NodeProcess, wait_until

pytestmark = pytest.mark.integration

HEAD_A = "Петров П.П."
HEAD_B = "Сидоров С.С."
PASSPHRASE_A = "подпись главы МВД"
FIELDS = {
    "essence": "Хищение имущества, совершённое 3 марта 2026 года",
    "justification": "Свидетель проживает на территории запрашиваемой Стороны",
    "assistance": "Допросить свидетеля и предоставить протокол допроса",
}
MAGIC = b"ACCORD-DELIVERY/1\n"


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b = cluster.add("МВД-РБ", "Росгвардия")
    a.add_user(HEAD_A, role="signatory", clearance="CONFIDENTIAL", passphrase=PASSPHRASE_A)
    a.add_user("следователь", role="operator", clearance="CONFIDENTIAL")
    b.add_user("исполнитель", role="operator", clearance="CONFIDENTIAL")
    b.add_user("посторонний", role="operator", clearance="CONFIDENTIAL")
    b.add_user(HEAD_B, role="signatory", clearance="CONFIDENTIAL", passphrase="подпись главы Б")
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, cluster=cluster)


def _request(nodes: SimpleNamespace, caveats: tuple[str, ...] = ()) -> str:
    """A's head sends a signed request; returns its id once B has its case."""
    response = nodes.a.send(
        HEAD_A,
        to=nodes.b,
        type="request",
        marking={"level": "OFFICIAL", "caveats": list(caveats)},
        purpose="Расследование уголовного дела № 17/2026",
        body="Прошу оказать содействие.",
        fields=FIELDS,
    )
    assert response.status_code == 201, response.text
    case_id: str = response.json()["message_id"]
    # B's head has need-to-know of every case of B's (art. 6.3), even a confidential one.
    _wait_state(nodes.b, case_id, "registered", HEAD_B)
    return case_id


def _step(node: NodeProcess, user: str, case_id: str, kind: str, **extra: Any) -> httpx.Response:
    workflow = {"kind": kind, "reasons": extra.pop("reasons", None)}
    meta = {"type": "reply", "in_reply_to": case_id, "workflow": workflow, "to": "", **extra}
    meta.setdefault("purpose", "")
    with node.client(user) as client:
        from tests.integration._nodes import multipart

        meta.setdefault("marking", {"level": "OFFICIAL", "caveats": []})
        meta.setdefault("body", "")
        meta["attachments"] = []
        return client.post("/api/v1/messages", files=multipart(meta))


def _case(node: NodeProcess, case_id: str, user: str = "исполнитель") -> httpx.Response:
    with node.client(user) as client:
        return client.get(f"/api/v1/cases/{case_id}")


def _wait_state(
    node: NodeProcess, case_id: str, state: str, user: str | None = None
) -> dict[str, Any]:
    who = user or next(u for u in node.users if node.users[u].role == "operator")

    def reached() -> dict[str, Any] | None:
        response = _case(node, case_id, who)
        if response.status_code != 200:
            return None
        view: dict[str, Any] = response.json()
        return view if view["state"] == state else None

    return wait_until(
        reached,
        what=f"case {case_id} to be {state} at {node.party}",
        diagnose=node.cluster.diagnose,
    )


def _sent(node: NodeProcess, response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    message_id: str = response.json()["message_id"]
    node.wait_for_status(message_id, "delivered")
    return message_id


def test_request_info_request_information_result_cycle(nodes: SimpleNamespace) -> None:
    """Art. 6.2 then 6.4, on both nodes: the same states, the same history."""
    a, b = nodes.a, nodes.b
    case_id = _request(nodes)
    _sent(b, _step(b, "исполнитель", case_id, "info-request", body="Уточните адрес свидетеля."))
    _wait_state(a, case_id, "info-requested")
    _sent(a, _step(a, "следователь", case_id, "information", body="г. Москва, ул. Ленина, 1."))
    _wait_state(b, case_id, "in-execution")
    result = _step(
        b,
        "исполнитель",
        case_id,
        "result",
        body="Протокол допроса свидетеля прилагается.",
        marking={"level": "CONFIDENTIAL", "caveats": []},
    )
    result_id = _sent(b, result)
    ours = _wait_state(a, case_id, "completed")
    theirs = _case(b, case_id).json()
    kinds = ["request", "info-request", "information", "result"]
    assert [s["kind"] for s in ours["steps"]] == [s["kind"] for s in theirs["steps"]] == kinds
    assert theirs["state"] == "completed"
    # The answer went to the requester under the request's purpose (art. 7.2).
    with a.client("следователь") as client:
        read = client.get(f"/api/v1/messages/{result_id}")
    assert read.status_code == 200, read.text
    assert read.json()["purpose"] == "Расследование уголовного дела № 17/2026"
    assert a.status(result_id)["case"] == {
        "case_id": case_id,
        "state": "completed",
        "overdue": False,
    }
    # A closed case takes no more steps.
    again = _step(b, "исполнитель", case_id, "delay")
    assert again.status_code == 409, again.text
    assert "closed" in again.json()["detail"]


def test_attack_refusal_without_reasons_is_refused_by_the_cli_and_the_node(
    nodes: SimpleNamespace,
) -> None:
    """Art. 5.3: `accord reply --kind refusal` without --reasons exits 1 with one line,
    and nothing leaves B."""
    b = nodes.b
    case_id = _request(nodes)
    outbox = b.box_ids("outbox")
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "from accord.gateway.cli import main; main()",
            "reply",
            case_id,
            "--kind",
            "refusal",
        ],
        env={
            "PATH": "/usr/bin:/bin",
            "ACCORD_NODE": b.url,
            "ACCORD_TOKEN": b.users["исполнитель"].token,
            "ACCORD_CA": str(b.init.ca_file),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert len(run.stderr.strip().splitlines()) == 1
    assert "5.3" in run.stderr and "--reasons" in run.stderr
    assert b.box_ids("outbox") == outbox
    assert _case(b, case_id).json()["state"] == "registered"
    refused = _sent(
        b,
        _step(b, "исполнитель", case_id, "refusal", reasons="Противоречит законодательству РФ"),
    )
    assert refused
    _wait_state(nodes.a, case_id, "refused", "следователь")


def _crafted_refusal(
    nodes: SimpleNamespace, case_id: str, reasons: str | None
) -> tuple[str, bytes]:
    """A refusal as B's node would seal it, but with or without reasons in its body."""
    keys = NodeKeys.load(nodes.b.home, NODE_PASSPHRASE.encode("utf-8"))
    now = datetime.now(UTC)
    draft = MessageDraft(
        message_id=new_message_id(),
        sender=nodes.b.party,
        recipient=nodes.a.party,
        created=now,
        expires=now + timedelta(days=1),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="Расследование уголовного дела № 17/2026",
        type="reply",
        in_reply_to=case_id,
        extensions={"workflow": {"case": case_id, "kind": "refusal"}},
    )
    fields = {} if reasons is None else {"reasons": reasons}
    body = canonical_json({"v": 1, "text": "Отказ.", "fields": fields, "attachments": []})
    sealed = seal_message(
        draft, body=body, recipients=[read_descriptor(nodes.a.descriptor).encryption]
    )
    envelope = sealed.sign([keys.seal]).to_bytes()
    frame = (
        len(envelope).to_bytes(4, "big")
        + envelope
        + len(sealed.header).to_bytes(4, "big")
        + sealed.header
        + sealed.body
    )
    return draft.message_id, MAGIC + frame + (0).to_bytes(4, "big")


def test_attack_peer_refusal_without_reasons_is_refused_on_receipt(nodes: SimpleNamespace) -> None:
    """A peer that skips its own node's check: A refuses the message like any forgery,
    stores nothing of it, and its case does not move; the same refusal with reasons is
    accepted (the control)."""
    a = nodes.a
    case_id = _request(nodes)
    keys = NodeKeys.load(nodes.b.home, NODE_PASSPHRASE.encode("utf-8"))
    context = client_context(keys.tls, a.certificate_pem)
    # A peer under the same agreement profile (a node refuses any other before reading).
    headers = {PROFILE_HEADER: default_profile().digest}
    with httpx.Client(base_url=a.peer_url, verify=context, timeout=30, headers=headers) as peer:
        bad_id, bad = _crafted_refusal(nodes, case_id, None)
        answer = peer.post("/peer/v1/messages", content=bad).json()["results"]
        assert answer == [{"message_id": bad_id, "verdict": "refused"}]
        assert bad_id not in a.box_ids("inbox")
        assert _case(a, case_id, "следователь").json()["state"] == "registered"
        _, good = _crafted_refusal(nodes, case_id, "Исполнение противоречит закону")
        answer = peer.post("/peer/v1/messages", content=good).json()["results"]
        assert [r["verdict"] for r in answer] == ["accepted"]
    assert _case(a, case_id, "следователь").json()["state"] == "refused"


def test_art_6_3_confidential_fact_hidden_from_users_without_need_to_know(
    nodes: SimpleNamespace,
) -> None:
    b = nodes.b
    case_id = _request(nodes, caveats=("CONFIDENTIAL-FACT",))
    for user in ("посторонний", "исполнитель"):
        assert case_id not in [m["message_id"] for m in b.box("inbox", user)]
        with b.client(user) as client:
            hidden = client.get(f"/api/v1/messages/{case_id}/status")
            missing = client.get("/api/v1/messages/no-such-id/status")
            read = client.get(f"/api/v1/messages/{case_id}")
        assert hidden.status_code == missing.status_code == read.status_code == 404
        assert hidden.json()["detail"].replace(case_id, "X") == missing.json()["detail"].replace(
            "no-such-id", "X"
        )
    with b.client(HEAD_B) as head:
        assert head.get(f"/api/v1/cases/{case_id}").json()["confidential_fact"] is True
        # An operator cannot grant need-to-know, and is told so alike for any id: the
        # answer does not reveal whether the case exists.
        with b.client("исполнитель") as operator:
            denied = operator.post(f"/api/v1/cases/{case_id}/access", json={"user": "исполнитель"})
            other = operator.post("/api/v1/cases/no-such-id/access", json={"user": "исполнитель"})
        assert denied.status_code == other.status_code == 403
        assert denied.json() == other.json()
        granted = head.post(f"/api/v1/cases/{case_id}/access", json={"user": "исполнитель"})
        assert granted.status_code == 200, granted.text
    assert case_id in [m["message_id"] for m in b.box("inbox", "исполнитель")]
    assert case_id not in [m["message_id"] for m in b.box("inbox", "посторонний")]
    # On the requester's side the same: its head sees the case, an operator who did not
    # send it does not.
    with nodes.a.client(HEAD_A) as client:
        assert client.get(f"/api/v1/cases/{case_id}").status_code == 200
    with nodes.a.client("следователь") as client:
        assert client.get(f"/api/v1/cases/{case_id}").status_code == 404


def _accord(
    node: NodeProcess, user: str, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from accord.gateway.cli import main; main()", *args],
        env={
            "PATH": "/usr/bin:/bin",
            "ACCORD_NODE": node.url,
            "ACCORD_TOKEN": node.users[user].token,
            "ACCORD_CA": str(node.init.ca_file),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_art_4_2_urgent_oral_request_then_written_confirmation(nodes: SimpleNamespace) -> None:
    """Registered by an operator under the seal, awaiting a signatory's written
    confirmation on both nodes; nothing but a delay or a refusal comes back until then."""
    a, b = nodes.a, nodes.b
    response = a.send(
        "следователь",
        to=b,
        type="request",
        urgent_oral=True,
        purpose="Розыск лица, скрывающегося от следствия",
        body="Устный запрос дежурного, зарегистрирован в 03:10.",
        fields=FIELDS,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "queued"  # not a draft: it was urgent
    case_id: str = response.json()["message_id"]
    theirs = _wait_state(b, case_id, "awaiting-confirmation")
    ours = _case(a, case_id, "следователь").json()
    assert ours["urgent_oral"] is theirs["urgent_oral"] is True
    assert ours["confirmation_due"] == theirs["confirmation_due"]  # one deadline, both sides
    assert theirs["overdue"] is False
    early = _step(b, "исполнитель", case_id, "result", body="Сведения о лице.")
    assert early.status_code == 409 and "confirm" in early.json()["detail"], early.text
    # An operator cannot confirm in writing (art. 4.4).
    refused = _accord(a, "следователь", "confirm", case_id)
    assert refused.returncode == 1 and "signatory" in refused.stderr
    run = _accord(
        a,
        HEAD_A,
        "confirm",
        case_id,
        "--body",
        "Подтверждаю устный запрос.",
        "--json",
        ACCORD_SIGNATORY_PASSPHRASE=PASSPHRASE_A,
    )
    assert run.returncode == 0, run.stderr
    view = _wait_state(b, case_id, "registered")
    assert view["confirmed_at"] is not None and view["overdue"] is False
    shown = _accord(b, "исполнитель", "case", case_id)
    assert shown.returncode == 0, shown.stderr
    assert "registered" in shown.stdout and "confirm" in shown.stdout
