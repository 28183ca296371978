"""`accord demo`: the agreement's exchange end to end on real nodes, with a transcript.

Two Parties' nodes and a third party's are created in a temporary folder (SQLite each),
introduced to each other by their signed descriptors and fingerprints, and run as separate
`accord serve` processes talking mutual TLS on loopback. Then, through each node's local
API, as its users would with `accord send`, `accord read` and so on:

1. A's head (a signatory) sends a signed request (art. 4.3 fields, Cyrillic text, a
   Cyrillic-named attachment), and the demo waits until B's signed receipt arrives;
2. B's operator lists the inbox, reads the request and saves the attachment, whose
   SHA-256 must match both the signed manifest and the file A sent;
3. B's operator replies, and A reads the reply;
4. B tries to pass A's request to a third party's node C without consent: refused
   (art. 7.3); B asks A for consent, A grants it (a token signed by A's seal), and B's
   forward is accepted by C, which verifies A's signatures, the token and B's seal, reads
   the request and proves who signed it;
5. B's auditor exports the request's evidence bundle and verifies it offline against the
   three descriptors (statement, signatures, receipt, consent, log proofs), no content read.

Invariants: all the processes are always stopped (SIGTERM, then SIGKILL) and the folder is
always removed, whatever fails; success exits 0, and any failure exits 1 with one line on
stderr saying what went wrong (the nodes' logs, if useful, are in the transcript).
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from accord.crypto import KdfCost
from accord.crypto.bundle import BundleVerificationError, verify_bundle
from accord.gateway.admin import home as _admin
from accord.gateway.client.consent import PolicyClient
from accord.gateway.client.local import ClientError, LocalClient
from accord.gateway.harness import Harness, HarnessError, HarnessNode
from accord.gateway.node.config import Home
from accord.storage import Role

__all__ = ["DemoError", "run"]

PARTY_A, NAME_A = "МВД-РБ", "Министерство внутренних дел"
PARTY_B, NAME_B = "Росгвардия", "Федеральная служба войск национальной гвардии"
PARTY_C, NAME_C = "Прокуратура-РФ", "Генеральная прокуратура Российской Федерации"
HEAD_A, OPERATOR_A, OPERATOR_B = "Иванов", "Петрова", "Сидоров"
OPERATOR_C = "Кузнецова"
AUDITOR_B = "Орлова"
FORWARD_PURPOSE = "проверка законности по делу № 17/2026"
ATTACHMENT_NAME = "Протокол осмотра места происшествия.txt"
ATTACHMENT = "Протокол осмотра места происшествия по делу № 17/2026.\n".encode() * 6000
WAIT_SECONDS = 20.0
# Three nodes open their interactive-cost TLS keys at once; a loaded machine needs time.
START_SECONDS = 90.0
# SIGTERM, then SIGKILL after this long (the nodes' data is thrown away anyway).
STOP_SECONDS = 6.0
# The key files live only as long as the demo; a light Argon2id keeps it quick.
DEMO_KDF = KdfCost(2, 16 * 1024 * 1024)


class DemoError(Exception):
    """A step of the demo did not give the expected result."""


def run(console: Console | None = None) -> None:
    """Run the demo; exit 1 (typer.Exit) with one line on stderr if any step fails."""
    out = console or _console()
    root = Path(tempfile.mkdtemp(prefix="accord-demo-"))
    harness = Harness(root, kdf_cost=DEMO_KDF)
    try:
        _exchange(out, harness, root)
    except (DemoError, HarnessError, ClientError) as e:
        _show_logs(out, harness)
        typer.echo(f"error: the demo failed: {' '.join(str(e).split())}", err=True)
        raise typer.Exit(1) from e
    finally:
        harness.close(timeout=STOP_SECONDS)
        shutil.rmtree(root, ignore_errors=True)
    out.print(
        "[bold green]Demo complete.[/] All three nodes stopped; the temporary folder is removed."
    )


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        # Piped or captured: wide enough that ids and tables are never cut.
        console = Console(highlight=False, width=max(console.width, 120))
    return console


def _exchange(out: Console, harness: Harness, root: Path) -> None:
    started = time.monotonic()
    out.print(
        f"[bold]Accord demo[/]: {PARTY_A} sends a request for assistance to {PARTY_B}, node to node"
    )

    # 1. Two nodes, their users, and the descriptors exchanged with fingerprints.
    _step(out, 1, "Two Parties set up their nodes")
    a = harness.add_node("a", party=PARTY_A, name=NAME_A, passphrase=_passphrase())
    b = harness.add_node("b", party=PARTY_B, name=NAME_B, passphrase=_passphrase())
    c = harness.add_node("c", party=PARTY_C, name=NAME_C, passphrase=_passphrase())
    head_secret = _passphrase()
    harness.add_user(a, HEAD_A, role=Role.SIGNATORY, signatory_passphrase=head_secret)
    harness.add_user(a, OPERATOR_A, role=Role.OPERATOR)
    harness.add_user(b, OPERATOR_B, role=Role.OPERATOR)
    harness.add_user(b, AUDITOR_B, role=Role.AUDITOR)
    harness.add_user(c, OPERATOR_C, role=Role.OPERATOR)
    roles = [
        (a, f"{HEAD_A} (signatory), {OPERATOR_A} (operator)"),
        (b, f"{OPERATOR_B} (operator), {AUDITOR_B} (auditor)"),
        (c, f"{OPERATOR_C} (operator), the third party"),
    ]
    for node, users in roles:
        out.print(Text(f"   {node.party} «{node.name}»: users {users}"))
        out.print(Text(f"      peer API {node.peer_url} (mutual TLS), local API {node.node_url}"))
        out.print(Text(f"      fingerprint {node.fingerprint}"))
    harness.connect(a, b)
    harness.connect(b, c)
    harness.connect(a, c)
    out.print("   Descriptors exchanged both ways, each checked against the fingerprint its")
    out.print("   Party's admin read out (A's lists its signatory's key, art. 4.4). The third")
    out.print(f"   party {PARTY_C} trusts {PARTY_A}'s descriptor too, to verify its signatures.")
    out.print("   All three run the same agreement profile (its digest is compared).")

    # 2. Separate processes, mutual TLS between them.
    _step(out, 2, "The nodes run as `accord serve` processes")
    harness.start(a, b, c, timeout=START_SECONDS)
    for node in (a, b, c):
        assert node.process is not None
        out.print(Text(f"   {node.party}: pid {node.process.pid}, local API answers"))

    source = root / ATTACHMENT_NAME
    source.write_bytes(ATTACHMENT)
    with (
        LocalClient(a.node_url, a.token(HEAD_A), a.ca_file) as head,
        LocalClient(a.node_url, a.token(OPERATOR_A), a.ca_file) as operator_a,
        LocalClient(b.node_url, b.token(OPERATOR_B), b.ca_file) as operator_b,
    ):
        # 3. The signed request.
        _step(out, 3, f"{HEAD_A} ({PARTY_A}'s head) sends a signed request")
        sent = head.send(
            {
                "to": PARTY_B,
                "type": "request",
                "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
                "purpose": "расследование уголовного дела № 17/2026",
                "body": "Прошу оказать содействие в установлении обстоятельств дела № 17/2026.",
                "fields": {
                    "essence": "Хищение имущества, совершённое 3 марта 2026 года.",
                    "justification": "Свидетель проживает на территории запрашиваемой Стороны.",
                    "assistance": "Допросить свидетеля и предоставить протокол допроса.",
                    "other": "Контактное лицо: следователь Петрова, тел. 100-200.",
                },
                "signatory_passphrase": head_secret,
            },
            [source],
        )
        request_id = str(sent["message_id"])
        if sent.get("status") != "queued":
            raise DemoError(f"a signatory's request should leave at once, not be {sent['status']}")
        out.print(Text(f"   $ accord send --to {PARTY_B} --marking CONFIDENTIAL ...", style="dim"))
        out.print(Text(f"   request {request_id} {sent['status']}"))
        out.print(Text(f"   signed by {HEAD_A} (art. 4.4) and sealed by {PARTY_A}'s node;"))
        out.print(Text(f"   body and attachment encrypted to {PARTY_B}'s key"))
        timeline = _wait_delivered(head, request_id)
        out.print(Text(f"   {PARTY_B}'s node checked both signatures and signed a receipt"))
        out.print(Text(f"   timeline: {_events(timeline)}"))

        # 4. B reads it and saves the attachment.
        _step(out, 4, f"{OPERATOR_B} ({PARTY_B}) reads the inbox")
        inbox = operator_b.messages("inbox")
        out.print(_table(inbox, "From"))
        if request_id not in {m.get("message_id") for m in inbox}:
            raise DemoError(f"the request {request_id} is not in {PARTY_B}'s inbox")
        message = operator_b.read(request_id)
        _show(out, message)
        saved = operator_b.save_attachments(message, root / "saved-by-B")
        if len(saved) != 1:
            raise DemoError(f"expected one attachment, {PARTY_B} saved {len(saved)}")
        digest = hashlib.sha256(saved[0].path.read_bytes()).hexdigest()
        if digest != hashlib.sha256(ATTACHMENT).hexdigest() or digest != saved[0].sha256:
            raise DemoError("the saved attachment is not the file A sent")
        out.print(Text(f"   $ accord read {request_id} --save-attachments DIR", style="dim"))
        out.print(Text(f"   saved «{saved[0].name}», SHA-256 {digest[:16]}…"))
        out.print(Text(f"   = the signed manifest = the file {PARTY_A} sent"))

        # 5. B replies.
        _step(out, 5, f"{OPERATOR_B} replies")
        reply = operator_b.send(
            {
                "to": PARTY_A,
                "type": "reply",
                "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
                "purpose": "ответ на запрос по делу № 17/2026",
                "body": "Запрос получен и принят к исполнению. Свидетель будет допрошен "
                "до 20 марта.",
                "in_reply_to": request_id,
            }
        )
        reply_id = str(reply["message_id"])
        out.print(
            Text(f"   $ accord send --type reply --in-reply-to {request_id} ...", style="dim")
        )
        timeline = _wait_delivered(operator_b, reply_id)
        out.print(Text(f"   reply {reply_id} delivered ({_events(timeline)})"))

        # 6. A reads the reply.
        _step(out, 6, f"{OPERATOR_A} ({PARTY_A}) reads the reply")
        inbox_a = operator_a.messages("inbox")
        out.print(_table(inbox_a, "From"))
        answer = operator_a.read(reply_id)
        if answer.get("in_reply_to") != request_id:
            raise DemoError("the reply does not refer to the request")
        _show(out, answer)

    with (
        # Consent is the Party's act: its head signs it (the profile asks a signatory).
        PolicyClient(a.node_url, a.token(HEAD_A), a.ca_file) as policy_a,
        PolicyClient(b.node_url, b.token(OPERATOR_B), b.ca_file) as policy_b,
        PolicyClient(c.node_url, c.token(OPERATOR_C), c.ca_file) as policy_c,
    ):
        _third_party(out, request_id, policy_a, policy_b, policy_c, a, head_secret)
    _evidence(out, request_id, b, (a, b, c))
    out.print(f"   ({time.monotonic() - started:.1f} s)")


def _evidence(
    out: Console, request_id: str, node: HarnessNode, parties: tuple[HarnessNode, ...]
) -> None:
    """11. An auditor exports the request's evidence bundle and verifies it offline,
    with the Parties' descriptors and `crypto/` alone, without reading content."""
    _step(out, 11, f"{AUDITOR_B}, {node.party}'s auditor, checks the evidence offline")
    with LocalClient(node.node_url, node.token(AUDITOR_B), node.ca_file) as auditor:
        data = auditor.bundle(request_id)
    trusted = [
        _admin.read_descriptor(
            _admin.export_descriptor(Home(p.home), p.passphrase.encode("utf-8"), datetime.now(UTC))
        )
        for p in parties
    ]
    out.print(Text(f"   $ accord bundle export {request_id} -o request.bundle", style="dim"))
    out.print(Text("   $ accord verify request.bundle --trust a.descriptor ...", style="dim"))
    try:
        evidence = verify_bundle(data, trusted)
    except BundleVerificationError as e:
        raise DemoError(f"the evidence bundle did not verify: {'; '.join(e.failures)}") from e
    if evidence.message_id != request_id:
        raise DemoError("the evidence bundle is for another message")
    out.print(Text(f"   {len(data)} bytes; no content in it, and every proof holds:"))
    for line in evidence.proven:
        out.print(Text(f"   - {line}"))


def _third_party(
    out: Console,
    request_id: str,
    policy_a: PolicyClient,
    policy_b: PolicyClient,
    policy_c: PolicyClient,
    a: HarnessNode,
    head_secret: str,
) -> None:
    # 7. A forward without consent is refused.
    _step(out, 7, f"{OPERATOR_B} tries to pass the request to {PARTY_C} without consent")
    out.print(Text(f"   $ accord forward {request_id} --to {PARTY_C}", style="dim"))
    try:
        policy_b.forward(request_id, PARTY_C, None)
    except ClientError as e:
        out.print(Text(f"   refused (exit 1): {e}"))
    else:
        raise DemoError("a forward without the originator's consent was not refused")

    # 8. B asks, A consents.
    _step(out, 8, f"{PARTY_B} asks {PARTY_A} for consent; {HEAD_A} grants it (art. 7.3)")
    asked = policy_b.ask(request_id, PARTY_C, FORWARD_PURPOSE)
    out.print(Text(f"   $ accord consent request {request_id} --to {PARTY_C} ...", style="dim"))
    _wait_delivered(policy_b, str(asked["message_id"]))
    out.print(Text(f"   consent request {asked['message_id']} delivered to {PARTY_A}"))
    expires = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    granted = policy_a.grant(
        request_id,
        {
            "to": PARTY_C,
            "purpose": FORWARD_PURPOSE,
            "expires": expires.isoformat(),
            "signatory_passphrase": head_secret,
        },
    )
    out.print(
        Text(
            f"   $ accord consent grant {request_id} --to {PARTY_C} --purpose "
            f"«{FORWARD_PURPOSE}» --expires {expires:%Y-%m-%d} --sign",
            style="dim",
        )
    )
    out.print(
        Text(
            f"   consent {granted['nonce'][:16]}… signed by {PARTY_A}'s seal and its head; it "
            "binds the"
        )
    )
    out.print(Text("   request's signed statement, the forwarder, the third party, the purpose"))
    _wait_delivered(policy_a, str(granted["sent_as"]))
    out.print(Text(f"   the token reached {PARTY_B}'s node, which verified and recorded it"))

    # 9. The forward is accepted.
    _step(out, 9, f"{OPERATOR_B} forwards the request to {PARTY_C}")
    out.print(Text(f"   $ accord forward {request_id} --to {PARTY_C}", style="dim"))
    done = policy_b.forward(request_id, PARTY_C, None)
    if done.get("consent") != granted["nonce"]:
        raise DemoError("the forward did not use the consent A granted")
    out.print(Text(f"   accepted by {PARTY_C}'s node under consent {granted['nonce'][:16]}…;"))
    out.print(
        Text(f"   {PARTY_A}'s envelope and ciphertext unchanged, the key re-wrapped for {PARTY_C}")
    )

    # 10. The third party reads it and proves who signed it.
    _step(out, 10, f"{OPERATOR_C} ({PARTY_C}) reads it and proves its origin")
    message = policy_c.read(request_id)
    _show(out, message)
    proof = policy_c.provenance(request_id)
    expected = _seal_key_id(a)
    if proof.get("originator") != PARTY_A or expected not in proof.get("signed_by", []):
        raise DemoError(f"{PARTY_C} could not prove {PARTY_A}'s seal on the request")
    forwarded = proof.get("forwarded") or {}
    # The consent is sealed by A's node and signed by its head (the profile asks it).
    if forwarded.get("forwarder") != PARTY_B or expected not in forwarded["consent"]["signed_by"]:
        raise DemoError(f"{PARTY_C} could not prove the consent and {PARTY_B}'s seal")
    out.print(Text(f"   $ accord provenance {request_id}", style="dim"))
    out.print(
        Text(
            f"   signed by {PARTY_A}: {len(proof['signed_by'])} key(s), its seal "
            f"{expected[:16]}… among them (= {PARTY_A}'s descriptor)"
        )
    )
    out.print(
        Text(
            f"   forwarded by {PARTY_B} (seal {forwarded['forwarder_seal'][0][:16]}…) under "
            f"consent signed by {PARTY_A}'s seal, for «{forwarded['consent']['purpose']}»"
        )
    )
    out.print(Text("   the re-wrapped key matches the key commitment signed by the originator"))


def _seal_key_id(node: HarnessNode) -> str:
    """The originator's seal key id, read from its own descriptor (what C trusted)."""
    descriptor = _admin.export_descriptor(
        Home(node.home), node.passphrase.encode("utf-8"), datetime.now(UTC)
    )
    return str(_admin.read_descriptor(descriptor).seal.key_id)


def _passphrase() -> str:
    """A fresh passphrase: the demo's keys live only as long as its folder."""
    return "демо-" + secrets.token_urlsafe(16)


# --- Waiting -----------------------------------------------------------------------------


def _wait_delivered(client: LocalClient, message_id: str) -> dict[str, Any]:
    """Poll the message's timeline until it is delivered (the peer's signed receipt is
    stored); a failed delivery or the time limit is a `DemoError`."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        timeline = client.status(message_id)
        state = timeline.get("status")
        if state == "delivered":
            return timeline
        if state == "failed":
            raise DemoError(f"delivery of {message_id} failed: {_events(timeline)}")
        if time.monotonic() > deadline:
            raise DemoError(
                f"{message_id} was not delivered within {WAIT_SECONDS:.0f} s "
                f"(status {state}: {_events(timeline)})"
            )
        time.sleep(0.1)


# --- Transcript --------------------------------------------------------------------------


def _step(out: Console, number: int, title: str) -> None:
    out.print()
    out.print(Text(f"{number}. {title}", style="bold"))


def _events(timeline: dict[str, Any]) -> str:
    return " → ".join(str(e.get("event")) for e in timeline.get("events") or [])


def _marking(marking: Any) -> str:
    if not isinstance(marking, dict):
        return str(marking)
    return "/".join([str(marking.get("level")), *map(str, marking.get("caveats") or [])])


def _table(messages: list[dict[str, Any]], who: str) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("   ID", who, "Type", "Marking", "Status"):
        table.add_column(column, no_wrap=True)
    for m in messages:
        table.add_row(
            Text("   " + str(m.get("message_id"))),
            Text(str(m.get("from"))),
            Text(str(m.get("type"))),
            Text(_marking(m.get("marking"))),
            Text(str(m.get("status"))),
        )
    return table


_FIELD_LABELS: tuple[tuple[str, str], ...] = (
    ("essence", "essence of the case"),
    ("justification", "justification"),
    ("assistance", "assistance requested"),
    ("other", "other information"),
)


def _show(out: Console, m: dict[str, Any]) -> None:
    lines: list[tuple[str, Any]] = [
        ("from → to", f"{m.get('from')} → {m.get('to')}"),
        ("type", m.get("type")),
        ("marking", _marking(m.get("marking"))),
        ("purpose", m.get("purpose")),
    ]
    fields = m.get("fields") or {}
    lines += [(label, fields[key]) for key, label in _FIELD_LABELS if fields.get(key)]
    lines.append(("text", f"«{m.get('body')}»"))
    for a in m.get("attachments") or []:
        lines.append(("attachment", f"«{a.get('name')}», {a.get('size')} bytes"))
    for label, value in lines:
        out.print(Text(f"   {label:<21}{value}"))


def _show_logs(out: Console, harness: Harness) -> None:
    """The end of each node's log, to see why a step failed."""
    nodes: list[HarnessNode] = list(harness.nodes.values())
    for node in nodes:
        tail = node.log_tail(15)
        if tail:
            out.print(Text(f"--- end of {node.party}'s log ---", style="dim"))
            out.print(Text(tail, style="dim"))
