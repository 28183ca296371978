"""The users' commands (`accord send`, `sign`, `inbox`, `outbox`, `read`, `status`) against
CLI.md, run as real processes against two real nodes (`accord serve`, mutual TLS between
them) built by `gateway._harness`, the same harness `accord demo` uses.

Party A has a signatory (head), an operator and an auditor; Party B an operator cleared for
CONFIDENTIAL and one cleared for OFFICIAL only. The nodes are module-scoped: tests send
their own messages and never depend on each other's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from accord.crypto import KdfCost
from accord.gateway.client.local import LocalClient, multipart_upload
from accord.gateway.harness import Harness, HarnessNode, accord_command, free_port
from accord.storage import Role

pytestmark = pytest.mark.integration

PARTY_A, PARTY_B = "МВД-РБ", "Росгвардия"
HEAD, OPERATOR_A, AUDITOR = "Глава", "Оператор А", "Аудитор"
OPERATOR_B, OFFICIAL_B = "Оператор Б", "Стажёр"
HEAD_PASSPHRASE = "личный пароль главы"
# Cheap Argon2id for the throwaway key files: tests, not production.
KDF = KdfCost(2, 8 * 1024 * 1024)
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
LIST_KEYS = {"message_id", "from", "to", "type", "marking", "status", "created"}
READ_KEYS = {"message_id", "from", "to", "marking", "purpose", "body", "attachments"}
MiB = 1024 * 1024


@dataclass
class Pair:
    a: HarnessNode
    b: HarnessNode
    root: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("cli-user")
    with Harness(root / "nodes", kdf_cost=KDF) as harness:
        a = harness.add_node("a", party=PARTY_A, name="Узел А", passphrase="пароль узла А")
        b = harness.add_node("b", party=PARTY_B, name="Узел Б", passphrase="пароль узла Б")
        # Signatories before the descriptors are exchanged: B trusts the keys A's lists.
        harness.add_user(a, HEAD, role=Role.SIGNATORY, signatory_passphrase=HEAD_PASSPHRASE)
        harness.add_user(a, OPERATOR_A, role=Role.OPERATOR)
        harness.add_user(a, AUDITOR, role=Role.AUDITOR)
        harness.add_user(b, OPERATOR_B, role=Role.OPERATOR)
        harness.add_user(b, OFFICIAL_B, role=Role.OPERATOR, clearance="OFFICIAL")
        harness.connect(a, b)
        harness.start(a, b)
        yield Pair(a, b, root)


# --- Running the CLI -------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    peak_rss: int = 0

    def json(self) -> Any:
        assert self.code == 0, (self.code, self.stdout, self.stderr)
        return json.loads(self.stdout)

    def refused(self, *fragments: str) -> str:
        """Exit 1 with exactly one line on stderr, 'error: ...', containing `fragments`."""
        assert self.code == 1, (self.code, self.stdout, self.stderr)
        lines = self.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), self.stderr
        for fragment in fragments:
            assert fragment in lines[0], lines[0]
        return lines[0]


def _environment(extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCORD_")}
    env.update(extra)
    return env


def accord(
    node: HarnessNode | None, user: str | None, *args: str, token: str | None = None, **env: str
) -> Run:
    """`accord ARGS` as a real process, as `user` of `node` (through ACCORD_NODE,
    ACCORD_TOKEN and ACCORD_CA; `env` overrides them), with its peak RSS."""
    extra: dict[str, str] = {}
    if node is not None:
        extra["ACCORD_NODE"] = node.node_url
        extra["ACCORD_CA"] = str(node.ca_file)
        extra["ACCORD_TOKEN"] = token if token is not None else node.token(user or "")
    extra.update(env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [*accord_command(), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=_environment(extra),
        )
        peak = 0
        try:
            # The kernel's high-water mark of the process's own memory (VmHWM), read until
            # it exits. Not getrusage: a child's ru_maxrss starts from its parent's RSS at
            # the fork, here the test process's.
            while process.poll() is None:
                peak = max(peak, _peak_rss(process.pid))
                time.sleep(0.01)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        out.seek(0)
        err.seek(0)
        return Run(process.returncode, out.read().decode("utf-8"), err.read().decode("utf-8"), peak)


def _peak_rss(pid: int) -> int:
    """VmHWM of a live process, in bytes (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def client(node: HarnessNode, user: str) -> LocalClient:
    return LocalClient(node.node_url, node.token(user), node.ca_file)


def wait_status(node: HarnessNode, message_id: str, wanted: str, timeout: float = 60.0) -> Any:
    with client(node, "admin") as c:
        deadline = time.monotonic() + timeout
        while True:
            timeline = c.status(message_id)
            if timeline["status"] == wanted:
                return timeline
            assert timeline["status"] != "failed", timeline
            assert time.monotonic() < deadline, timeline
            time.sleep(0.1)


def request_args(*extra: str) -> list[str]:
    return [
        "send",
        "--to",
        PARTY_B,
        "--marking",
        "CONFIDENTIAL",
        "--caveat",
        "ORCON",
        "--purpose",
        "расследование дела № 17/2026",
        "--body",
        "Прошу оказать содействие.",
        "--essence",
        "Хищение имущества.",
        "--justification",
        "Свидетель проживает у запрашиваемой Стороны.",
        "--assistance",
        "Допросить свидетеля.",
        "--json",
        *extra,
    ]


def notice_args(*extra: str, to: str = PARTY_B) -> list[str]:
    return [
        "send",
        "--to",
        to,
        "--type",
        "notice",
        "--marking",
        "OFFICIAL",
        "--purpose",
        "уведомление",
        "--body",
        "Сообщаем о смене контактного лица.",
        "--json",
        *extra,
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


# --- send, sign, status ----------------------------------------------------------------------


def test_signatory_request_is_signed_at_once_and_delivered(pair: Pair, tmp_path: Path) -> None:
    attachment = tmp_path / "Протокол допроса.txt"
    attachment.write_bytes("Протокол допроса свидетеля.\n".encode() * 20_000)
    sent = accord(
        pair.a,
        HEAD,
        *request_args("--attach", str(attachment)),
        ACCORD_SIGNATORY_PASSPHRASE=HEAD_PASSPHRASE,
    ).json()
    assert UUID.match(sent["message_id"])
    assert sent["status"] == "queued"
    wait_status(pair.a, sent["message_id"], "delivered")

    timeline = accord(pair.a, OPERATOR_A, "status", sent["message_id"], "--json").json()
    assert timeline["message_id"] == sent["message_id"]
    assert timeline["status"] == "delivered"
    events = [e["event"] for e in timeline["events"]]
    assert events[0] == "queued" and "delivered" in events
    assert all({"at", "event"} <= set(e) for e in timeline["events"])


def test_signatory_request_without_passphrase_exits_1(pair: Pair) -> None:
    accord(pair.a, HEAD, *request_args()).refused("ACCORD_SIGNATORY_PASSPHRASE")


def test_operator_request_waits_as_draft_until_signed(pair: Pair) -> None:
    draft = accord(pair.a, OPERATOR_A, *request_args()).json()
    assert draft["status"] == "draft"
    outbox = accord(pair.a, OPERATOR_A, "outbox", "--json").json()
    assert {m["message_id"]: m["status"] for m in outbox}[draft["message_id"]] == "draft"

    # Only a signatory signs (art. 4.4), and only with their own passphrase.
    accord(pair.a, OPERATOR_A, "sign", draft["message_id"]).refused("signatory")
    accord(
        pair.a, HEAD, "sign", draft["message_id"], ACCORD_SIGNATORY_PASSPHRASE="не тот пароль"
    ).refused("passphrase")
    with client(pair.a, OPERATOR_A) as c:
        assert c.status(draft["message_id"])["status"] == "draft"

    signed = accord(
        pair.a,
        HEAD,
        "sign",
        draft["message_id"],
        "--json",
        ACCORD_SIGNATORY_PASSPHRASE=HEAD_PASSPHRASE,
    ).json()
    assert signed == {"message_id": draft["message_id"], "status": "queued"}
    timeline = wait_status(pair.a, draft["message_id"], "delivered")
    assert [e["event"] for e in timeline["events"]][:3] == ["draft", "signed", "queued"]
    inbox = accord(pair.b, OPERATOR_B, "inbox", "--json").json()
    assert draft["message_id"] in {m["message_id"] for m in inbox}

    # A draft is signed once.
    accord(
        pair.a, HEAD, "sign", draft["message_id"], ACCORD_SIGNATORY_PASSPHRASE=HEAD_PASSPHRASE
    ).refused("not a draft")


def test_request_without_art_4_3_fields_exits_1(pair: Pair) -> None:
    args = request_args()
    del args[args.index("--essence") : args.index("--essence") + 2]
    accord(pair.a, OPERATOR_A, *args).refused("--essence", "4.3")


def test_send_to_unknown_party_exits_1(pair: Pair) -> None:
    accord(pair.a, OPERATOR_A, *notice_args(to="Третья сторона")).refused("Третья сторона")


def test_send_state_secret_exits_1(pair: Pair) -> None:
    args = notice_args()
    args[args.index("OFFICIAL")] = "SECRET"
    accord(pair.a, OPERATOR_A, *args).refused("7.5")


def test_send_by_auditor_exits_1(pair: Pair) -> None:
    accord(pair.a, AUDITOR, *notice_args()).refused("auditor")


def test_send_with_both_body_options_is_a_usage_error(pair: Pair, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("текст", encoding="utf-8")
    run = accord(pair.a, OPERATOR_A, *notice_args("--body-file", str(body)))
    assert run.code == 2, run


def test_send_body_file_and_reply(pair: Pair, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("Текст уведомления из файла.\n", encoding="utf-8")
    args = notice_args()
    i = args.index("--body")
    args[i : i + 2] = ["--body-file", str(body)]
    notice = accord(pair.a, OPERATOR_A, *args).json()
    wait_status(pair.a, notice["message_id"], "delivered")
    assert accord(pair.b, OPERATOR_B, "read", notice["message_id"], "--json").json()["body"] == (
        "Текст уведомления из файла.\n"
    )

    reply = accord(
        pair.b,
        OPERATOR_B,
        "send",
        "--to",
        PARTY_A,
        "--type",
        "reply",
        "--in-reply-to",
        notice["message_id"],
        "--marking",
        "OFFICIAL",
        "--purpose",
        "ответ",
        "--body",
        "Принято.",
        "--json",
    ).json()
    wait_status(pair.b, reply["message_id"], "delivered")
    read = accord(pair.a, OPERATOR_A, "read", reply["message_id"], "--json").json()
    assert read["in_reply_to"] == notice["message_id"]
    assert read["type"] == "reply" and read["body"] == "Принято."


# --- inbox, outbox, read ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def delivered(pair: Pair, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A signed request with two attachments, delivered to B."""
    folder = tmp_path_factory.mktemp("attachments")
    first = folder / "Справка №1.pdf"
    first.write_bytes(os.urandom(300_000))
    second = folder / "пустой файл"
    second.write_bytes(b"")
    sent = accord(
        pair.a,
        HEAD,
        *request_args("--attach", str(first), "--attach", str(second)),
        ACCORD_SIGNATORY_PASSPHRASE=HEAD_PASSPHRASE,
    ).json()
    wait_status(pair.a, sent["message_id"], "delivered")
    return {"id": sent["message_id"], "files": [first, second]}


def test_inbox_and_outbox_json(pair: Pair, delivered: dict[str, Any]) -> None:
    inbox = accord(pair.b, OPERATOR_B, "inbox", "--json").json()
    outbox = accord(pair.a, OPERATOR_A, "outbox", "--json").json()
    for listing, status in ((inbox, "received"), (outbox, "delivered")):
        assert all(LIST_KEYS <= set(m) for m in listing), listing
        (m,) = [m for m in listing if m["message_id"] == delivered["id"]]
        assert (m["from"], m["to"], m["type"], m["status"]) == (PARTY_A, PARTY_B, "request", status)
        assert m["marking"] == {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}
    page = accord(pair.b, OPERATOR_B, "inbox", "--limit", "1", "--json").json()
    assert len(page) == 1


def test_read_json(pair: Pair, delivered: dict[str, Any]) -> None:
    message = accord(pair.b, OPERATOR_B, "read", delivered["id"], "--json").json()
    assert READ_KEYS <= set(message)
    assert (message["from"], message["to"]) == (PARTY_A, PARTY_B)
    assert message["purpose"] == "расследование дела № 17/2026"
    assert message["body"] == "Прошу оказать содействие."
    assert message["fields"]["essence"] == "Хищение имущества."
    files: list[Path] = delivered["files"]
    assert message["attachments"] == [
        {"name": f.name, "size": f.stat().st_size, "sha256": sha256_file(f)} for f in files
    ]


def test_read_save_attachments_writes_the_exact_bytes(
    pair: Pair, delivered: dict[str, Any], tmp_path: Path
) -> None:
    target = tmp_path / "сохранено"
    message = accord(
        pair.b, OPERATOR_B, "read", delivered["id"], "--save-attachments", str(target), "--json"
    ).json()
    files: list[Path] = delivered["files"]
    for f in files:
        assert (target / f.name).read_bytes() == f.read_bytes()
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in files)
    assert [s["name"] for s in message["saved"]] == [f.name for f in files]

    # A second read refuses to overwrite, and leaves the saved files as they are.
    accord(pair.b, OPERATOR_B, "read", delivered["id"], "--save-attachments", str(target)).refused(
        "already exists"
    )
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in files)


def test_human_output(pair: Pair, delivered: dict[str, Any]) -> None:
    inbox = accord(pair.b, OPERATOR_B, "inbox")
    assert inbox.code == 0 and delivered["id"] in inbox.stdout and PARTY_A in inbox.stdout
    read = accord(pair.b, OPERATOR_B, "read", delivered["id"])
    assert read.code == 0
    for text in ("Прошу оказать содействие.", "Хищение имущества.", "Справка №1.pdf"):
        assert text in read.stdout
    status = accord(pair.a, OPERATOR_A, "status", delivered["id"])
    assert status.code == 0 and "delivered" in status.stdout


def test_read_with_wrong_token_exits_1(pair: Pair, delivered: dict[str, Any]) -> None:
    accord(pair.b, None, "read", delivered["id"], token="acc_" + "x" * 43).refused("token")


def test_read_above_clearance_exits_1(pair: Pair, delivered: dict[str, Any]) -> None:
    accord(pair.b, OFFICIAL_B, "read", delivered["id"]).refused("CONFIDENTIAL", "clearance")


def test_read_unknown_message_exits_1(pair: Pair) -> None:
    accord(pair.b, OPERATOR_B, "read", "00000000-0000-4000-8000-000000000000").refused("no message")


def test_unreachable_node_exits_1(pair: Pair) -> None:
    run = accord(
        None, None, "inbox", "--node", f"https://127.0.0.1:{free_port()}", "--token", "acc_x"
    )
    run.refused("cannot reach the node", "accord serve")


def test_untrusted_node_certificate_exits_1(pair: Pair) -> None:
    # B's certificate is not the one A's local API presents.
    run = accord(pair.a, OPERATOR_A, "inbox", ACCORD_CA=str(pair.b.ca_file))
    run.refused("certificate", "--ca")


def test_send_refuses_attachment_name_escaping_the_folder(pair: Pair, tmp_path: Path) -> None:
    """A hostile sender names an attachment `../…`: the sending node refuses it, stores
    nothing and sends nothing. (The reader's client refuses such names too, in case a
    peer's node does not: tests/gateway/test_client.py.)"""
    payload = tmp_path / "payload"
    payload.write_bytes(b"#!/bin/sh\necho pwned\n")
    upload = multipart_upload(
        {
            "to": PARTY_B,
            "type": "notice",
            "marking": {"level": "OFFICIAL", "caveats": []},
            "purpose": "проверка",
            "body": "вложение с опасным именем",
            "attachments": ["../escaped.sh"],
        },
        [payload],
    )
    before = accord(pair.a, OPERATOR_A, "outbox", "--json").json()
    context = ssl.create_default_context(cafile=str(pair.a.ca_file))
    with httpx.Client(verify=context) as http:
        response = http.post(
            f"{pair.a.node_url}/api/v1/messages",
            content=upload.chunks,
            headers={
                "Authorization": f"Bearer {pair.a.token(OPERATOR_A)}",
                "Content-Type": upload.content_type,
                "Content-Length": str(upload.length),
            },
        )
    assert response.status_code == 422, response.text
    assert "plain file names" in response.json()["detail"]
    assert accord(pair.a, OPERATOR_A, "outbox", "--json").json() == before


# --- Large attachments stream ----------------------------------------------------------------


def test_50_mib_attachment_streams_in_bounded_memory(pair: Pair, tmp_path: Path) -> None:
    """Sending and reading back 50 MiB keeps each CLI process under 100 MiB peak RSS:
    the file is never held in memory. (A memory bound, not a timing.)"""
    big = tmp_path / "большой.bin"
    with big.open("wb") as f:
        for _ in range(50):
            f.write(os.urandom(MiB))
    baseline = accord(None, None, "--help").peak_rss

    sent = accord(pair.a, OPERATOR_A, *notice_args("--attach", str(big)))
    message_id = sent.json()["message_id"]
    wait_status(pair.a, message_id, "delivered", timeout=120)
    target = tmp_path / "saved"
    read = accord(
        pair.b, OPERATOR_B, "read", message_id, "--save-attachments", str(target), "--json"
    )
    assert read.json()["attachments"][0]["size"] == 50 * MiB
    assert sha256_file(target / big.name) == sha256_file(big)

    for what, run in (("send", sent), ("read", read)):
        assert run.peak_rss < 100 * MiB, (
            f"`accord {what}` of 50 MiB peaked at {run.peak_rss / MiB:.1f} MiB "
            f"(`accord --help` alone: {baseline / MiB:.1f} MiB)"
        )
        # What the transfer itself adds over the CLI's start-up must not scale with the file.
        assert run.peak_rss - baseline < 25 * MiB, (what, run.peak_rss, baseline)


# --- Consent and forward (agreement art. 7.3) ------------------------------------------------

THIRD_PARTY = "Прокуратура"


def test_forward_without_consent_exits_1(pair: Pair, delivered: dict[str, Any]) -> None:
    accord(pair.b, OPERATOR_B, "forward", delivered["id"], "--to", THIRD_PARTY).refused(
        "no consent of the originator", "art. 7.3", "accord consent request"
    )
    status = accord(pair.b, OPERATOR_B, "status", delivered["id"], "--json").json()
    assert "forward-refused" in [e["event"] for e in status["events"]]


def test_consent_grant_by_the_recipient_exits_1(pair: Pair, delivered: dict[str, Any]) -> None:
    accord(
        pair.b, OPERATOR_B, "consent", "grant", delivered["id"], "--to", THIRD_PARTY,
        "--purpose", "проверка", "--expires", "2099-01-01",
    ).refused("only the originator")  # fmt: skip


def test_consent_grant_with_a_bad_date_is_a_usage_error(
    pair: Pair, delivered: dict[str, Any]
) -> None:
    run = accord(
        pair.a, OPERATOR_A, "consent", "grant", delivered["id"], "--to", THIRD_PARTY,
        "--purpose", "проверка", "--expires", "послезавтра",
    )  # fmt: skip
    assert run.code == 2, run.stderr


def test_consent_granted_reaches_the_forwarder(pair: Pair, delivered: dict[str, Any]) -> None:
    """A's head grants (the reference profile asks a signatory: an operator alone is
    refused); the token travels to B as a message, where B's node records it; B's
    forward then fails only because the third party is no peer of B's."""
    until = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    accord(
        pair.a, OPERATOR_A, "consent", "grant", delivered["id"], "--to", THIRD_PARTY,
        "--purpose", "проверка законности", "--expires", until,
    ).refused("requires a signatory")  # fmt: skip
    granted = accord(
        pair.a, HEAD, "consent", "grant", delivered["id"], "--to", THIRD_PARTY,
        "--purpose", "проверка законности", "--expires", until, "--sign", "--json",
        ACCORD_SIGNATORY_PASSPHRASE=HEAD_PASSPHRASE,
    ).json()  # fmt: skip
    assert granted["forwarder"] == PARTY_B and granted["status"] == "granted"
    wait_status(pair.a, granted["sent_as"], "delivered")
    at_b = accord(pair.b, OPERATOR_B, "consent", "list", delivered["id"], "--json").json()
    assert [(c["nonce"], c["status"]) for c in at_b] == [(granted["nonce"], "granted")]
    accord(pair.b, OPERATOR_B, "forward", delivered["id"], "--to", THIRD_PARTY).refused(
        "not an active peer"
    )
    # The refused forward did not spend the consent.
    at_b = accord(pair.b, OPERATOR_B, "consent", "list", "--json").json()
    assert [c["status"] for c in at_b if c["nonce"] == granted["nonce"]] == ["granted"]
