"""Hostile deliveries to a real node's peer API, on SQLite and on PostgreSQL.

Three Parties trust one another: A (МВД-РБ, the victim), B (Росгвардия, a trusted peer
turned hostile) and C (третья). The tests build messages with the `crypto` API as B's
node would, from B's keys in its home, and deliver them over mutual TLS with B's pinned
certificate, framed as the delivery stream spec says (gateway/_stream.py's docstring;
the framing is written out here from that spec, not imported). Each test is named after
the attack it replays (the checklist in gateway/_peer_api.py) and checks two things:
- A answers with the uniform refusal, `{"message_id": ..., "verdict": "refused"}`, the
  same whatever the cause (STYLE "Errors": outward, failures are opaque and uniform);
- nothing was stored at A: its inbox and the message's status are as before, and no blob
  was added to its store (outside blobs/tmp) but those of accepted controls.
A well-formed delivery built the same way is accepted (the control), so each refusal is
caused by the one thing its attack changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from accord.crypto import (
    Envelope,
    MessageDraft,
    RecipientKey,
    Signer,
    SigningKey,
    canonical_json,
    load_private_key,
    new_message_id,
    seal_message,
    verify_receipt,
)
from accord.crypto.tls import TlsIdentity, client_context
from accord.gateway.admin.home import read_descriptor
from accord.gateway.keys.store import NodeKeys, load_signatory
from accord.gateway.node.runtime import PROFILE_HEADER
from accord.policy import default_profile
from tests.integration._nodes import NODE_PASSPHRASE, Cluster, NodeProcess

pytestmark = pytest.mark.integration

SIGNATORY_PASSPHRASE = "подпись главы Росгвардии"
MAGIC = b"ACCORD-DELIVERY/1\n"
REFUSED = {"verdict": "refused"}
# Two age chunks each: large enough to stream into A's blob store (small parts, such as
# bodies, may be kept inline in the database).
ATTACHMENT = "Служебная записка: сведения о лице.\n".encode() * 3000
ANNEX = "Приложение: перечень документов.\n".encode() * 3000

REQUEST_FIELDS = {
    "essence": "Проверка сведений о лице",
    "justification": "Расследование по делу № 5 (ст. 4 Соглашения)",
    "assistance": "Сообщить сведения о регистрации",
}


def _u32(n: int) -> bytes:
    return struct.pack(">I", n)


@dataclass(frozen=True)
class Crafted:
    """One message as it goes on the wire: envelope, age header, parts (body first)."""

    message_id: str
    envelope: bytes
    header: bytes
    parts: tuple[bytes, ...]

    def frame(self) -> bytes:
        return (
            _u32(len(self.envelope))
            + self.envelope
            + _u32(len(self.header))
            + self.header
            + b"".join(self.parts)
        )

    def blob_paths(self) -> set[str]:
        """Where A would keep the parts in its blob store (blobs/ab/cdef...)."""
        return {_blob_path(hashlib.sha256(part).hexdigest()) for part in self.parts}


def _blob_path(digest: str) -> str:
    return f"{digest[:2]}/{digest[2:]}"


def stream(*messages: Crafted) -> bytes:
    return MAGIC + b"".join(m.frame() for m in messages) + _u32(0)


@dataclass
class Forger:
    """Builds messages as B's node would: B's seal, B's signatory, any recipient key."""

    party: str
    seal: SigningKey
    signatory: SigningKey
    keys_of: dict[str, RecipientKey]

    def craft(
        self,
        *,
        to: str,
        sender: str | None = None,
        type: str = "notice",
        signers: Sequence[Signer] | None = None,
        created: datetime | None = None,
        lifetime: timedelta = timedelta(days=1),
        message_id: str | None = None,
        purpose: str = "Проверка сведений (ст. 7.2 Соглашения)",
        text: str = "Сведения для служебного пользования.",
        attachments: Sequence[bytes] = (ATTACHMENT,),
    ) -> Crafted:
        created = created or datetime.now(UTC)
        draft = MessageDraft(
            message_id=message_id or new_message_id(),
            sender=sender or self.party,
            recipient=to,
            created=created,
            expires=created + lifetime,
            marking={"level": "OFFICIAL", "caveats": []},
            purpose=purpose,
            type=type,
        )

        def body(opened: Sequence[Any]) -> bytes:
            manifest = [
                {"name": f"записка-{i}.txt", "size": o.size, "sha256": o.sha256}
                for i, o in enumerate(opened)
            ]
            # A request carries the art. 4.3 fields, which the receiving node checks.
            fields = REQUEST_FIELDS if type == "request" else {}
            return canonical_json({"v": 1, "text": text, "fields": fields, "attachments": manifest})

        sinks = [io.BytesIO() for _ in attachments]
        sealed = seal_message(
            draft,
            body=body,
            attachments=[(io.BytesIO(a), sink) for a, sink in zip(attachments, sinks, strict=True)],
            recipients=[self.keys_of[to]],
        )
        if signers is None:
            signers = [self.signatory, self.seal] if type == "request" else [self.seal]
        envelope = sealed.sign(signers)
        parts = (sealed.body, *(sink.getvalue() for sink in sinks))
        return Crafted(draft.message_id, envelope.to_bytes(), sealed.header, parts)


@pytest.fixture(scope="module")
def nodes(cluster_factory: Callable[[], Cluster]) -> SimpleNamespace:
    cluster = cluster_factory()
    a, b, c = cluster.add("МВД-РБ", "Росгвардия", "третья")
    a.add_user("дежурный", role="operator", clearance="CONFIDENTIAL")
    b.add_user("Сидоров С.С.", role="signatory", passphrase=SIGNATORY_PASSPHRASE)
    cluster.connect()
    cluster.start()
    return SimpleNamespace(a=a, b=b, c=c)


@pytest.fixture(scope="module")
def b_keys(nodes: SimpleNamespace) -> NodeKeys:
    """B's seal, encryption key and TLS identity, opened from B's home."""
    return NodeKeys.load(nodes.b.home, NODE_PASSPHRASE.encode("utf-8"))


@pytest.fixture(scope="module")
def forger(nodes: SimpleNamespace, b_keys: NodeKeys) -> Forger:
    b: NodeProcess = nodes.b
    signatory = load_signatory(b.home, "Сидоров С.С.", SIGNATORY_PASSPHRASE.encode("utf-8"))
    recipients = {
        node.party: read_descriptor(node.descriptor).encryption for node in (nodes.a, nodes.c)
    }
    return Forger(b.party, b_keys.seal, signatory, recipients)


@pytest.fixture(scope="module")
def as_b(nodes: SimpleNamespace, b_keys: NodeKeys) -> Iterator[httpx.Client]:
    """B's node talking to A's peer API: B's certificate, A's pinned certificate."""
    a: NodeProcess = nodes.a
    context = client_context(b_keys.tls, a.certificate_pem)
    with httpx.Client(base_url=a.peer_url, verify=context, timeout=30) as client:
        yield client


def deliver(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post(
        "/peer/v1/messages",
        content=body,
        headers={
            "content-type": "application/vnd.accord.delivery-stream",
            PROFILE_HEADER: default_profile().digest,
        },
    )


def verdicts(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """The answer's results by message id (each id answered once)."""
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    by_id = {r["message_id"]: r for r in results}
    assert len(by_id) == len(results), results
    return by_id


def refused(message_id: str) -> dict[str, str]:
    return {"message_id": message_id, **REFUSED}


class Victim:
    """What A holds: an attack must leave all of it unchanged."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.inbox = node.box_ids("inbox")
        self.blobs = node.blobs()

    def assert_unchanged(self, *attack_ids: str, accepted: Sequence[Crafted] = ()) -> None:
        """Nothing stored but the `accepted` controls; no trace of the attacks' ids."""
        inbox = self.node.box_ids("inbox")
        assert sorted(inbox) == sorted(self.inbox + [m.message_id for m in accepted])
        blobs = self.node.blobs()
        assert blobs >= self.blobs
        assert blobs - self.blobs <= set().union(*(m.blob_paths() for m in accepted))
        with self.node.client("admin") as client:
            for message_id in attack_ids:
                status = client.get(f"/api/v1/messages/{message_id}/status")
                assert status.status_code == 404, status.text


def assert_accepted(nodes: SimpleNamespace, answer: dict[str, Any], message: Crafted) -> bytes:
    """The control: accepted, with A's signed receipt binding what B sent. Returns the
    receipt as canonical bytes."""
    assert answer["verdict"] == "accepted", answer
    receipt = Envelope.from_dict(answer["receipt"])
    sent = Envelope.from_bytes(message.envelope)
    verified = verify_receipt(
        receipt,
        [read_descriptor(nodes.a.descriptor).seal],
        receiver=nodes.a.party,
        message_id=message.message_id,
        statement_sha256=sent.payload_sha256,
    )
    assert verified.receipt.envelope_sha256 == sent.sha256
    return receipt.to_bytes()


# --- Attacks ------------------------------------------------------------------------------
# Each builder returns the messages of one attack, as B would put them on the wire; the
# tests below and the uniformity test share them, so both replay the very same attacks.


def other_sender(f: Forger, nodes: SimpleNamespace, c_seal: SigningKey) -> list[Crafted]:
    """Sender C, signed by C's seal (a key A trusts, but for C's connection only), and
    the same also co-signed by B's seal, so that only the sender check can stop it."""
    return [
        f.craft(to=nodes.a.party, sender=nodes.c.party, signers=[c_seal]),
        f.craft(to=nodes.a.party, sender=nodes.c.party, signers=[c_seal, f.seal]),
    ]


def addressed_elsewhere(f: Forger, nodes: SimpleNamespace) -> list[Crafted]:
    """B's properly signed message for C, handed to A."""
    return [f.craft(to=nodes.c.party)]


def expired(f: Forger, nodes: SimpleNamespace) -> list[Crafted]:
    created = datetime.now(UTC) - timedelta(days=3)
    return [f.craft(to=nodes.a.party, created=created, lifetime=timedelta(days=2))]


def tampered(f: Forger, nodes: SimpleNamespace) -> list[Crafted]:
    """One byte of ciphertext flipped on the wire: in a large part (the second attachment,
    after the body and the first attachment were received in full), and in a small one
    (the body; small parts may take another path to storage than large ones)."""
    large = f.craft(to=nodes.a.party, attachments=(ATTACHMENT, ANNEX))
    body, first, second = large.parts
    small = f.craft(to=nodes.a.party)
    return [
        replace(large, parts=(body, first, _flip(second))),
        replace(small, parts=(_flip(small.parts[0]), *small.parts[1:])),
    ]


def _flip(part: bytes) -> bytes:
    flipped = bytearray(part)
    flipped[len(flipped) // 2] ^= 0x01
    return bytes(flipped)


def unsigned_request(f: Forger, nodes: SimpleNamespace) -> list[Crafted]:
    """Requests without the head's or deputy's signature (art. 4.4): the seal alone, and
    the seal with a signature by a key A never learnt from B's descriptor."""
    stranger = SigningKey.generate()
    return [
        f.craft(to=nodes.a.party, type="request", signers=[f.seal]),
        f.craft(to=nodes.a.party, type="request", signers=[stranger, f.seal]),
    ]


def unsealed(f: Forger, nodes: SimpleNamespace) -> list[Crafted]:
    """A request signed by B's signatory but without B's seal."""
    return [f.craft(to=nodes.a.party, type="request", signers=[f.signatory])]


@pytest.fixture(scope="module")
def c_seal(nodes: SimpleNamespace) -> SigningKey:
    key = load_private_key(nodes.c.home.seal_key.read_bytes(), NODE_PASSPHRASE.encode("utf-8"))
    assert isinstance(key, SigningKey)
    return key


# --- Tests --------------------------------------------------------------------------------


def test_well_formed_delivery_accepted(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    """The control for every attack below: B's message built by the same code, unaltered,
    is accepted, stored, and readable at A."""
    victim = Victim(nodes.a)
    notice = forger.craft(to=nodes.a.party)
    request = forger.craft(to=nodes.a.party, type="request", text="Просьба о содействии.")
    answers = verdicts(deliver(as_b, stream(notice, request)))
    assert set(answers) == {notice.message_id, request.message_id}
    for message in (notice, request):
        assert_accepted(nodes, answers[message.message_id], message)
    victim.assert_unchanged(accepted=[notice, request])
    with nodes.a.client("дежурный") as client:
        read = client.get(f"/api/v1/messages/{request.message_id}")
        download = client.get(f"/api/v1/messages/{request.message_id}/attachments/0")
    assert read.status_code == 200, read.text
    assert read.json()["from"] == nodes.b.party
    assert read.json()["body"] == "Просьба о содействии."
    assert download.content == ATTACHMENT


def test_unknown_client_certificate_refused(nodes: SimpleNamespace, forger: Forger) -> None:
    """A certificate A never pinned, even one naming B as its subject, does not get past
    the TLS handshake."""
    a: NodeProcess = nodes.a
    victim = Victim(a)
    impostor = TlsIdentity.generate(nodes.b.party, hosts=["127.0.0.1", "localhost"])
    message = forger.craft(to=a.party)
    context = client_context(impostor, a.certificate_pem)
    with (
        httpx.Client(base_url=a.peer_url, verify=context, timeout=30) as client,
        pytest.raises(httpx.TransportError),
    ):
        deliver(client, stream(message))
    victim.assert_unchanged(message.message_id)


def test_peer_presenting_message_claiming_other_sender_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client, c_seal: SigningKey
) -> None:
    victim = Victim(nodes.a)
    attacks = other_sender(forger, nodes, c_seal)
    answers = verdicts(deliver(as_b, stream(*attacks)))
    assert answers == {m.message_id: refused(m.message_id) for m in attacks}
    victim.assert_unchanged(*(m.message_id for m in attacks))


def test_message_addressed_to_another_node_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    victim = Victim(nodes.a)
    attacks = addressed_elsewhere(forger, nodes)
    answers = verdicts(deliver(as_b, stream(*attacks)))
    assert answers == {m.message_id: refused(m.message_id) for m in attacks}
    victim.assert_unchanged(*(m.message_id for m in attacks))


def test_replayed_message_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    """A recorded message id with another envelope is a replay: refused. The identical
    envelope again is a redelivery (the sender never got the answer): it is answered
    with the original receipt, byte for byte, and stored once."""
    a: NodeProcess = nodes.a
    original = forger.craft(to=a.party, purpose="Первоначальная цель")
    first = verdicts(deliver(as_b, stream(original)))[original.message_id]
    receipt = assert_accepted(nodes, first, original)

    victim = Victim(a)
    replay = forger.craft(
        to=a.party, message_id=original.message_id, purpose="Подменённая цель", text="Подмена."
    )
    assert replay.envelope != original.envelope
    answer = verdicts(deliver(as_b, stream(replay)))
    assert answer == {original.message_id: refused(original.message_id)}
    victim.assert_unchanged()

    again = verdicts(deliver(as_b, stream(original)))[original.message_id]
    assert again["verdict"] == "accepted"
    assert Envelope.from_dict(again["receipt"]).to_bytes() == receipt
    victim.assert_unchanged()
    # What A keeps is the original, and its timeline has one reception.
    with a.client("дежурный") as client:
        read = client.get(f"/api/v1/messages/{original.message_id}")
    assert read.json()["purpose"] == "Первоначальная цель"
    assert read.json()["body"] == "Сведения для служебного пользования."
    assert a.events(original.message_id) == ["received"]


def test_expired_message_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    victim = Victim(nodes.a)
    attacks = expired(forger, nodes)
    answers = verdicts(deliver(as_b, stream(*attacks)))
    assert answers == {m.message_id: refused(m.message_id) for m in attacks}
    victim.assert_unchanged(*(m.message_id for m in attacks))


def test_tampered_payload_byte_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    """Tampered messages are refused, and the intact first attachment of one, already
    stored when its second attachment failed, is not kept; the intact message after them
    in the same stream is still read in step and accepted."""
    victim = Victim(nodes.a)
    attacks = tampered(forger, nodes)
    intact = forger.craft(to=nodes.a.party)
    answers = verdicts(deliver(as_b, stream(*attacks, intact)))
    for attack in attacks:
        assert answers[attack.message_id] == refused(attack.message_id)
        assert not attack.blob_paths() & nodes.a.blobs()
    assert_accepted(nodes, answers[intact.message_id], intact)
    victim.assert_unchanged(*(m.message_id for m in attacks), accepted=[intact])


def test_request_without_signatory_signature_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    victim = Victim(nodes.a)
    attacks = unsigned_request(forger, nodes)
    answers = verdicts(deliver(as_b, stream(*attacks)))
    assert answers == {m.message_id: refused(m.message_id) for m in attacks}
    victim.assert_unchanged(*(m.message_id for m in attacks))


def test_request_without_seal_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    victim = Victim(nodes.a)
    attacks = unsealed(forger, nodes)
    answers = verdicts(deliver(as_b, stream(*attacks)))
    assert answers == {m.message_id: refused(m.message_id) for m in attacks}
    victim.assert_unchanged(*(m.message_id for m in attacks))


GARBAGE: dict[str, Callable[[Forger, SimpleNamespace], bytes]] = {
    # Not a delivery stream at all: refused outright.
    "random bytes": lambda f, n: os.urandom(4096),
    "empty body": lambda f, n: b"",
    "other protocol version": lambda f, n: b"ACCORD-DELIVERY/2\n" + _u32(0),
    # A delivery stream that breaks off: nothing in it was read in full, so nothing is
    # answered (the sender retries), and nothing is stored.
    "envelope length over the limit": lambda f, n: MAGIC + _u32(2**31),
    "envelope not JSON": lambda f, n: MAGIC + _u32(64) + os.urandom(64) + _u32(0) + _u32(0),
    "stream cut inside the second attachment": lambda f, n: stream(
        f.craft(to=n.a.party, attachments=(ATTACHMENT, ANNEX))
    )[:-5000],
}
BROKEN_OFF = {
    "envelope length over the limit",
    "envelope not JSON",
    "stream cut inside the second attachment",
}


@pytest.mark.parametrize("garbage", list(GARBAGE))
def test_garbage_stream_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client, garbage: str
) -> None:
    victim = Victim(nodes.a)
    response = deliver(as_b, GARBAGE[garbage](forger, nodes))
    if garbage in BROKEN_OFF:
        assert response.status_code == 200
        assert response.json() == {"results": []}
    else:
        assert response.status_code == 400
        assert response.json() == {"error": "refused"}
    victim.assert_unchanged()


def test_refusals_look_alike(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client, c_seal: SigningKey
) -> None:
    """Whatever the cause, the refusal of one message is the same HTTP answer but for
    the message id: a hostile peer learns nothing about which check stopped it."""
    original = forger.craft(to=nodes.a.party)
    assert_accepted(nodes, verdicts(deliver(as_b, stream(original)))[original.message_id], original)
    attacks = {
        "other sender": other_sender(forger, nodes, c_seal)[:1],
        "other sender co-signed": other_sender(forger, nodes, c_seal)[1:],
        "addressed elsewhere": addressed_elsewhere(forger, nodes),
        "replay": [forger.craft(to=nodes.a.party, message_id=original.message_id)],
        "expired": expired(forger, nodes),
        "tampered large part": tampered(forger, nodes)[:1],
        "tampered small part": tampered(forger, nodes)[1:],
        "request without signatory": unsigned_request(forger, nodes)[:1],
        "request with unknown signatory": unsigned_request(forger, nodes)[1:],
        "request without seal": unsealed(forger, nodes),
    }
    answers = {}
    for name, [message] in attacks.items():
        response = deliver(as_b, stream(message))
        answers[name] = (
            response.status_code,
            response.headers.get("content-type"),
            response.headers.get("content-length"),
            response.content.replace(message.message_id.encode(), b"<id>"),
        )
    first = next(iter(answers.values()))
    assert answers == dict.fromkeys(attacks, first)
    status, content_type, _length, body = first
    assert (status, content_type) == (200, "application/json")
    assert httpx.Response(200, content=body).json() == {"results": [refused("<id>")]}


@pytest.mark.parametrize("profile", [None, "0" * 64])
def test_attack_peer_under_another_agreement_profile_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client, profile: str | None
) -> None:
    """Both nodes must hold the same agreement profile: a delivery without the profile
    digest, or with another one, gets the uniform refusal and stores nothing."""
    victim = Victim(nodes.a)
    message = forger.craft(to=nodes.a.party)
    headers = {"content-type": "application/vnd.accord.delivery-stream"}
    if profile is not None:
        headers[PROFILE_HEADER] = profile
    response = as_b.post("/peer/v1/messages", content=stream(message), headers=headers)
    assert response.status_code == 403
    assert response.json() == {"error": "refused"}
    victim.assert_unchanged(message.message_id)


def test_attack_route_of_the_other_face_answers_like_a_missing_one(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    """DESIGN 9: the peer API answers only on the mutual-TLS listener and the local API
    only on the users' listener. A delivery posted to the users' port, or a local route
    asked on the peer port, gets the 404 of a route that does not exist, and stores
    nothing."""
    a: NodeProcess = nodes.a
    victim = Victim(a)
    message = forger.craft(to=a.party)
    with a.client("дежурный") as local:
        wrong_port = local.post(
            "/peer/v1/messages",
            content=stream(message),
            headers={"content-type": "application/vnd.accord.delivery-stream"},
        )
        missing = local.get("/peer/v1/no-such-route")
    local_on_peer_port = as_b.get("/api/v1/health")
    missing_on_peer_port = as_b.get("/peer/v1/no-such-route")
    assert wrong_port.status_code == missing.status_code == 404
    assert wrong_port.json() == missing.json() == {"detail": "Not Found"}
    assert local_on_peer_port.status_code == missing_on_peer_port.status_code == 404
    assert local_on_peer_port.json() == missing_on_peer_port.json()
    victim.assert_unchanged(message.message_id)


def test_attack_replay_inside_one_delivery_stream_is_refused(
    nodes: SimpleNamespace, forger: Forger, as_b: httpx.Client
) -> None:
    """Replay is decided for a whole delivered batch in its recording transaction: the
    same envelope twice in one stream is stored once and both copies are answered with
    the same receipt; a second envelope reusing the id with other content, in the same
    stream, is refused and changes nothing."""
    a: NodeProcess = nodes.a
    original = forger.craft(to=a.party, purpose="Цель в одной пачке")
    forged = forger.craft(
        to=a.party, message_id=original.message_id, purpose="Подмена в той же пачке"
    )
    response = deliver(as_b, stream(original, original, forged))
    assert response.status_code == 200, response.text
    results = [r for r in response.json()["results"] if r["message_id"] == original.message_id]
    assert sorted(r["verdict"] for r in results) == ["accepted", "accepted", "refused"]
    receipts = {json.dumps(r["receipt"], sort_keys=True) for r in results if "receipt" in r}
    assert len(receipts) == 1
    assert_accepted(nodes, next(r for r in results if "receipt" in r), original)
    with a.client("дежурный") as client:
        read = client.get(f"/api/v1/messages/{original.message_id}")
    assert read.json()["purpose"] == "Цель в одной пачке"
    assert a.events(original.message_id) == ["received"]
