"""Consent-gated forwarding on three real nodes' code in one process (agreement art. 7.2,
7.3; DESIGN guarantee 4): A originates, B receives and forwards, C is the third party.

Messages go between the nodes through each receiver's own peer-API code (`_receive_one`,
`_record`, and `_accept` for forwards) fed with the exact stream bytes a peer would send;
only TLS and HTTP are left out (tests/gateway/test_demo.py runs them for real). The clock
is injected, so expiry is tested without sleeping. Negative tests are named after the
attack they replay; each checks that the third party stored nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from accord.crypto import (
    Envelope,
    KdfCost,
    MessageDraft,
    Signer,
    VerificationError,
    canonical_json,
    new_message_id,
    seal_message,
)
from accord.crypto.consent import (
    ConsentToken,
    ForwardStatement,
    issue_consent,
    new_nonce,
    sign_forward,
)
from accord.gateway.admin import home as _admin
from accord.gateway.consent.control import (
    ConsentRefused,
    grant_consent,
    list_consents,
    remark_message,
    request_consent,
    revoke_consent,
    use_for_purpose,
)
from accord.gateway.consent.forward import (
    _accept,
    _body,
    _Prepared,
    accept_forward,
    forward_message,
    provenance,
)
from accord.gateway.keys.store import load_signatory
from accord.gateway.messages.receive import _Accepted, _receive_one, _record
from accord.gateway.messages.stream import END, MAGIC, AsyncByteReader, frame_lengths
from accord.gateway.node.config import Home
from accord.gateway.node.runtime import Node
from accord.gateway.serve import load_node
from accord.storage import (
    ConsentRecord,
    ForwardRecord,
    Message,
    NewMessage,
    PartRef,
    Role,
    User,
    get_user,
    insert_outgoing,
    list_events,
)

CHEAP = KdfCost(opslimit=1, memlimit=8192)
START = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
PASS = "пароль узла".encode()
# The head of each Party (a signatory, art. 4.4): the reference profile asks a signatory
# to sign consents and re-markings (policy/authority.py).
HEAD, HEAD_PASS = "глава", "пароль главы".encode()
DEPUTY, DEPUTY_PASS = "заместитель", "пароль заместителя".encode()
A, B, C = "МВД-РБ", "Росгвардия", "Прокуратура-РБ"
PURPOSE = "передача материалов в прокуратуру по делу № 17/2026"
TEXT = "Протокол допроса свидетеля по делу № 17/2026."


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    a: Node
    b: Node
    c: Node
    users: dict[str, User]
    clock: Clock
    heads: dict[str, User]
    signers: dict[str, Signer]

    def stored_at_c(self) -> int:
        with self.c.db.session(readonly=True) as session:
            return len(session.exec(select(Message)).all())


def _node(root: Path, party: str, port: int, clock: Clock) -> Node:
    _admin.init_node(
        root, party=party, name=f"Узел {party}", listen=f"127.0.0.1:{port}",
        passphrase=PASS, now=START, kdf_cost=CHEAP,
    )  # fmt: skip
    _admin.add_user(Home(root), "оператор", role=Role.OPERATOR, clearance="CONFIDENTIAL", now=START)
    for name, secret in ((HEAD, HEAD_PASS), (DEPUTY, DEPUTY_PASS)):
        _admin.add_user(
            Home(root), name, role=Role.SIGNATORY, clearance="CONFIDENTIAL",
            signatory_passphrase=secret, now=START, kdf_cost=CHEAP,
        )  # fmt: skip
    node = load_node(root, PASS)
    node.clock = clock
    return node


def _introduce(src: Node, dst: Node) -> None:
    descriptor = _admin.export_descriptor(src.home, PASS, START)
    _admin.add_peer(dst.home, descriptor, fingerprint=None, now=START)


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three initialised homes, made once (Argon2id and TLS keys take time); each test
    copies them."""
    root = tmp_path_factory.mktemp("homes")
    clock = Clock()
    nodes = [_node(root / k, p, port, clock) for k, p, port in
             (("a", A, 9443), ("b", B, 9543), ("c", C, 9643))]  # fmt: skip
    a, b, c = nodes
    for src, dst in ((a, b), (b, a), (b, c), (c, b), (a, c), (c, a)):
        # C trusts A: it must verify A's signatures; A trusts C: it tells C of a
        # revocation (tests/gateway/test_authority.py).
        _introduce(src, dst)
    for n in nodes:
        n.close()
    return root


@pytest.fixture
def world(homes: Path, tmp_path: Path) -> Iterator[World]:
    import shutil

    clock = Clock()
    nodes = []
    for key in ("a", "b", "c"):
        shutil.copytree(homes / key, tmp_path / key)
        home = Home(tmp_path / key)
        home.save_config(home.load_config().with_changes(database=home.sqlite_url()))
        nodes.append(load_node(tmp_path / key, PASS))
    users, heads, signers = {}, {}, {}
    for n in nodes:
        n.clock = clock
        with n.db.session(readonly=True) as session:
            users[n.party] = get_user(session, "оператор")
            heads[n.party] = get_user(session, HEAD)
        signers[n.party] = load_signatory(n.home, HEAD, HEAD_PASS, db=n.db)
    w = World(*nodes, users=users, clock=clock, heads=heads, signers=signers)
    yield w
    for n in nodes:
        n.close()


# --- Moving bytes between the nodes' own code ------------------------------------------


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 4096):
        yield data[i : i + 4096]


def deliver(src: Node, dst: Node, message_id: str) -> str:
    """Feed one outgoing message of `src` to `dst`'s peer API code; return the verdict."""
    with src.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        assert row is not None
        from accord.storage import get_parts

        parts = get_parts(session, message_id)
        stream = frame_lengths(row.envelope, row.header or b"")
        stream += b"".join(p.data or src.blobs.open(p.blob_sha256).read() for p in parts)

    async def run() -> str:
        reader = AsyncByteReader(_chunks(MAGIC + stream + END))
        await reader.readexactly(len(MAGIC))
        n = await reader.read_u32(1 << 20, "envelope")
        outcome = await _receive_one(dst, src.party, reader, n)
        if not isinstance(outcome, _Accepted):
            return "refused"
        return str(_record(dst, src.party, [outcome], [], [])[0]["verdict"])

    return asyncio.run(run())


def send(w: World, *, purpose: str = "расследование дела № 17/2026") -> str:
    """A sends B a CONFIDENTIAL/ORCON message (as its local API would) and B receives it."""
    now = w.clock()
    draft = MessageDraft(
        message_id=new_message_id(), sender=A, recipient=B, created=now,
        expires=now + timedelta(days=30),
        marking={"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        purpose=purpose, type="notice",
    )  # fmt: skip
    body = canonical_json({"v": 1, "text": TEXT, "fields": {}, "attachments": []})
    sealed = seal_message(
        draft, body=body, recipients=[w.a.peer_keys(B).encryption, w.a.encryption.recipient()]
    )
    st = sealed.statement
    message = NewMessage(
        message_id=st.message_id, sender=A, recipient=B, type=st.type,
        marking=dict(st.marking), purpose=st.purpose, created=st.created,
        expires=st.expires, envelope=sealed.sign([w.a.seal]).to_bytes(),
        header=sealed.header, parts=(PartRef(st.body.sha256, st.body.size, sealed.body),),
    )  # fmt: skip
    with w.a.db.session() as session:
        insert_outgoing(session, message, now=now)
    assert deliver(w.a, w.b, st.message_id) == "accepted"
    return st.message_id


def grant(w: World, message_id: str, **kw: Any) -> str:
    """A grants a consent and its `consent` message reaches B; returns the nonce."""
    values: dict[str, Any] = {
        "third_party": C, "purpose": PURPOSE, "expires": w.clock() + timedelta(days=7),
    }  # fmt: skip
    values.update(kw)
    granted = grant_consent(w.a, w.heads[A], message_id, signatory=w.signers[A], **values)
    assert deliver(w.a, w.b, granted.control_message_id) == "accepted"
    return granted.nonce


def to_c(w: World) -> Any:
    """The transport of a forward, in process: B's stream into C's acceptance code."""

    async def ship(node: Node, p: _Prepared) -> Any:
        data = b"".join([chunk async for chunk in _body(node, p)])
        status, answer = await accept_forward(w.c, node.party, AsyncByteReader(_chunks(data)))
        if status != 200:  # what `_ship` does with the third party's uniform refusal
            raise ConsentRefused(f"{w.c.party}'s node refused the forward (HTTP {status})")
        return answer["receipt"]

    return ship


def forward(w: World, message_id: str, to: str = C, **kw: Any) -> Any:
    return asyncio.run(forward_message(w.b, w.users[B], message_id, to, ship=to_c(w), **kw))


def events(node: Node, message_id: str) -> list[str]:
    with node.db.session(readonly=True) as session:
        return [e.event for e in list_events(session, message_id)]


# --- The consented forward ----------------------------------------------------------------


def test_forward_with_consent_is_accepted_and_third_party_proves_origin(world: World) -> None:
    """Art. 7.3: with A's prior consent B passes A's message to C; C verifies A's
    signature over the unchanged ciphertext, the token and B's seal, and reads it."""
    message_id = send(world)
    nonce = grant(world, message_id)
    assert [c["status"] for c in list_consents(world.b, message_id)] == ["granted"]
    done = forward(world, message_id)
    assert done.consent == nonce
    # C holds A's envelope byte for byte, and proves who signed what.
    with world.a.db.session(readonly=True) as sa, world.c.db.session(readonly=True) as sc:
        original, copy = sa.get(Message, message_id), sc.get(Message, message_id)
        assert original is not None and copy is not None
        assert copy.envelope == original.envelope and copy.sender == A
    proof = provenance(world.c, message_id)
    assert proof["originator"] == A
    assert proof["signed_by"] == [world.a.seal.key_id]
    assert proof["forwarded"]["forwarder"] == B
    assert proof["forwarded"]["forwarder_seal"] == [world.b.seal.key_id]
    # A's seal and its head's signature (the reference profile asks for a signatory).
    assert proof["forwarded"]["consent"]["signed_by"] == sorted(
        [world.a.seal.key_id, world.signers[A].key_id]
    )
    assert proof["forwarded"]["consent"]["purpose"] == PURPOSE
    assert proof["marking"] == {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}
    # The consent is spent on B, recorded as used on C, and the timelines say so.
    assert [c["status"] for c in list_consents(world.b, message_id)] == ["used"]
    assert "forwarded" in events(world.b, message_id)
    assert "forwarded-in" in events(world.c, message_id)
    with world.b.db.session(readonly=True) as session:
        sent = session.exec(select(ForwardRecord)).all()
        assert [(f.third_party, f.consent_nonce) for f in sent] == [(C, nonce)]


def test_third_party_decrypts_the_forwarded_body(world: World) -> None:
    from accord.gateway.api.local.messages import _opener_for

    message_id = send(world)
    grant(world, message_id)
    forward(world, message_id)
    with world.c.db.session(readonly=True) as session:
        reader = get_user(session, "оператор")
        row = session.get(Message, message_id)
        from accord.storage import get_parts

        body = get_parts(session, message_id)[0].data
    assert row is not None and body is not None
    _row, opener, _st = _opener_for(world.c, reader, message_id)
    assert json.loads(opener.open_body(body))["text"] == TEXT


# --- The named attacks: the forwarder's node refuses ---------------------------------------


def test_attack_forward_without_consent_is_refused_and_audited(world: World) -> None:
    message_id = send(world)
    with pytest.raises(ConsentRefused, match=r"no consent .*art\. 7\.3"):
        forward(world, message_id)
    assert "forward-refused" in events(world.b, message_id)
    assert world.stored_at_c() == 0


def test_attack_forward_with_consent_for_another_message_is_refused(world: World) -> None:
    first, second = send(world), send(world)
    grant(world, second)
    with pytest.raises(ConsentRefused, match=f"no consent .* {first}"):
        forward(world, first)
    assert world.stored_at_c() == 0


def test_attack_forward_to_another_third_party_is_refused(world: World) -> None:
    message_id = send(world)
    grant(world, message_id, third_party="Суд-РБ")
    with pytest.raises(ConsentRefused, match="names Суд-РБ, not Прокуратура-РБ"):
        forward(world, message_id)
    assert world.stored_at_c() == 0


def test_attack_forward_for_another_purpose_is_refused(world: World) -> None:
    message_id = send(world)
    grant(world, message_id)
    with pytest.raises(ConsentRefused, match="permits only"):
        forward(world, message_id, purpose="публикация в СМИ")
    assert world.stored_at_c() == 0


def test_attack_forward_with_expired_consent_is_refused(world: World) -> None:
    message_id = send(world)
    grant(world, message_id, expires=world.clock() + timedelta(days=1))
    world.clock.now += timedelta(days=1, seconds=1)
    with pytest.raises(ConsentRefused, match="expired"):
        forward(world, message_id)
    assert world.stored_at_c() == 0


def test_attack_forward_with_revoked_consent_is_refused(world: World) -> None:
    message_id = send(world)
    nonce = grant(world, message_id)
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert deliver(world.a, world.b, revoked["sent_as"]) == "accepted"
    with pytest.raises(ConsentRefused, match="revoked"):
        forward(world, message_id)
    assert world.stored_at_c() == 0


def test_attack_consent_replayed_on_a_second_forward_is_refused(world: World) -> None:
    message_id = send(world)
    grant(world, message_id)
    forward(world, message_id)
    with pytest.raises(ConsentRefused, match="already used"):
        forward(world, message_id)
    assert "forward-refused" in events(world.b, message_id)


def test_attack_forwarder_replays_a_forward_to_the_third_party_is_refused(world: World) -> None:
    """B resets its own record and ships the same token again: C refuses (the nonce was
    used here) and stores nothing more."""
    message_id = send(world)
    nonce = grant(world, message_id)
    forward(world, message_id)
    with world.b.db.session() as session:
        record = session.get(ConsentRecord, nonce)
        assert record is not None
        record.status = "granted"
        session.add(record)
    with pytest.raises(ConsentRefused, match=r"refused the forward \(HTTP 403\)"):
        forward(world, message_id)
    assert world.stored_at_c() == 1
    # B's node released its reservation: the refusal is on record, nothing counted as sent.
    assert events(world.b, message_id).count("forwarded") == 1
    assert events(world.b, message_id)[-1] == "forward-refused"


def test_attack_consent_granted_by_the_forwarder_is_refused(world: World) -> None:
    """B cannot grant consent for A's message: only the originator can (art. 7.3)."""
    message_id = send(world)
    with pytest.raises(ConsentRefused, match="only the originator"):
        grant_consent(
            world.b, world.users[B], message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + timedelta(days=1),
        )  # fmt: skip


# --- The named attacks: the third party's node refuses a malicious forwarder -------------


def _malicious(w: World, message_id: str, *, token: Envelope | None = None, **changes: Any) -> Any:
    """What a forwarder that bypasses its own node's checks would ship to C."""
    from accord.gateway.consent.forward import _prepare

    nonce = grant(w, message_id)
    prepared = _prepare(w.b, message_id, C, None)
    consent = token or prepared.consent
    statement = ForwardStatement.from_payload(json.loads(prepared.forward.payload))
    statement = replace(statement, consent_sha256=consent.sha256, **changes)
    forged = replace(prepared, consent=consent, forward=sign_forward(statement, [w.b.seal]))
    return nonce, forged


def _ship_to_c(w: World, prepared: _Prepared) -> None:
    async def run() -> None:
        data = b"".join([chunk async for chunk in _body(w.b, prepared)])
        await _accept(w.c, B, AsyncByteReader(_chunks(data)))

    asyncio.run(run())


def _token(w: World, message_id: str, *signers: Any, **changes: Any) -> Envelope:
    with w.b.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        assert row is not None
    values: dict[str, Any] = {
        "nonce": new_nonce(), "message_id": message_id,
        "statement_sha256": Envelope.from_bytes(row.envelope).payload_sha256,
        "originator": A, "forwarder": B, "third_party": C, "purpose": PURPOSE,
        "marking": {"level": "CONFIDENTIAL", "caveats": ["ORCON"]},
        "issued": w.clock(), "expires": w.clock() + timedelta(days=7),
    }  # fmt: skip
    values.update(changes)
    return issue_consent(ConsentToken(**values), list(signers))


def test_attack_token_issued_by_the_forwarder_is_refused_by_the_third_party(
    world: World,
) -> None:
    message_id = send(world)
    _, forged = _malicious(world, message_id, token=_token(world, message_id, world.b.seal))
    with pytest.raises(VerificationError, match=r"trusted signature|not sealed"):
        _ship_to_c(world, forged)
    assert world.stored_at_c() == 0


def test_attack_token_for_another_message_is_refused_by_the_third_party(world: World) -> None:
    message_id, other = send(world), send(world)
    token = _token(world, other, world.a.seal, world.signers[A])
    _, forged = _malicious(world, message_id, token=token)
    with pytest.raises(VerificationError, match="another message"):
        _ship_to_c(world, forged)
    assert world.stored_at_c() == 0


def test_attack_forged_token_is_refused_by_the_third_party(world: World) -> None:
    message_id = send(world)
    real = _token(world, message_id, world.a.seal, world.signers[A])
    forged_token = Envelope(
        real.payload_type, real.payload.replace(b"2026", b"2027"), real.signatures
    )
    _, forged = _malicious(world, message_id, token=forged_token)
    with pytest.raises(VerificationError, match="does not verify"):
        _ship_to_c(world, forged)
    assert world.stored_at_c() == 0


def test_attack_marking_stripped_on_the_way_is_refused_by_the_third_party(world: World) -> None:
    message_id = send(world)
    _, forged = _malicious(world, message_id, marking={"level": "OFFICIAL", "caveats": []})
    with pytest.raises(VerificationError, match="marking"):
        _ship_to_c(world, forged)
    assert world.stored_at_c() == 0


def test_attack_forward_to_a_node_that_is_not_the_named_third_party_is_refused(
    world: World,
) -> None:
    message_id = send(world)
    _, forged = _malicious(world, message_id, third_party="Суд-РБ")
    with pytest.raises(VerificationError, match="another forwarder or third party"):
        _ship_to_c(world, forged)
    assert world.stored_at_c() == 0


# --- Incoming consent messages, requests, and use for another purpose (art. 7.2) ---------


def test_attack_consent_message_for_a_message_not_received_is_refused(world: World) -> None:
    """A token that binds no message B received from A is refused by B's peer API."""
    message_id = send(world)
    granted = grant_consent(
        world.a, world.heads[A], message_id, third_party=C, purpose=PURPOSE,
        expires=world.clock() + timedelta(days=1), signatory=world.signers[A],
    )  # fmt: skip
    with world.b.db.session() as session:
        row = session.get(Message, message_id)
        session.delete(row)
    assert deliver(world.a, world.b, granted.control_message_id) == "refused"
    assert list_consents(world.b) == []


def test_consent_request_travels_to_the_originator(world: World) -> None:
    message_id = send(world)
    asked = request_consent(world.b, world.users[B], message_id, third_party=C, purpose=PURPOSE)
    assert deliver(world.b, world.a, asked["message_id"]) == "accepted"
    with world.a.db.session(readonly=True) as session:
        row = session.get(Message, asked["message_id"])
        assert row is not None and row.type == "consent-request" and row.in_reply_to == message_id


def test_use_for_another_purpose_needs_the_originators_consent(world: World) -> None:
    """Art. 7.2: the stated purpose needs nothing; another one needs a use consent, once."""
    message_id = send(world)
    assert use_for_purpose(world.b, world.users[B], message_id, "расследование дела № 17/2026")
    with pytest.raises(ConsentRefused, match="no consent"):
        use_for_purpose(world.b, world.users[B], message_id, "обучение личного состава")
    grant(world, message_id, third_party=B, purpose="обучение личного состава")
    used = use_for_purpose(world.b, world.users[B], message_id, "обучение личного состава")
    assert used["consent"] is not None
    with pytest.raises(ConsentRefused, match="already used"):
        use_for_purpose(world.b, world.users[B], message_id, "обучение личного состава")
    assert "use-refused" in events(world.b, message_id)
    # A use consent never covers a transfer.
    with pytest.raises(ConsentRefused, match="not Прокуратура-РБ"):
        forward(world, message_id)


@pytest.mark.parametrize(
    ("expires", "complaint"),
    [(timedelta(days=-1), "in the future"), (timedelta(days=400), "longest consent")],
)
def test_consent_expiry_must_be_future_and_within_the_profile(
    world: World, expires: timedelta, complaint: str
) -> None:
    message_id = send(world)
    with pytest.raises(ConsentRefused, match=complaint):
        grant_consent(
            world.a, world.heads[A], message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + expires, signatory=world.signers[A],
        )  # fmt: skip


def test_revocation_after_use_is_refused_with_the_reason(world: World) -> None:
    message_id = send(world)
    nonce = grant(world, message_id)
    forward(world, message_id)
    # A learns of the use only from B; its own record is still granted, so the revocation
    # is issued, and B, where the consent is spent, keeps it used.
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert deliver(world.a, world.b, revoked["sent_as"]) == "accepted"
    assert [c["status"] for c in list_consents(world.b, message_id)] == ["used"]
    with pytest.raises(ConsentRefused, match="already revoked"):
        revoke_consent(world.a, world.users[A], nonce)


def test_third_party_refusal_is_uniform_and_reveals_nothing(world: World) -> None:
    """Towards the forwarder every refusal is the same 403 answer (STYLE "errors")."""
    message_id = send(world)
    _, stripped = _malicious(world, message_id, marking={"level": "OFFICIAL", "caveats": []})
    _, wrong_party = _malicious(world, send(world), third_party="Суд-РБ")

    async def answer(p: _Prepared) -> tuple[int, dict[str, Any]]:
        data = b"".join([chunk async for chunk in _body(world.b, p)])
        return await accept_forward(world.c, B, AsyncByteReader(_chunks(data)))

    assert (
        asyncio.run(answer(stripped))
        == asyncio.run(answer(wrong_party))
        == (
            403,
            {"error": "refused"},
        )
    )
    assert world.stored_at_c() == 0


# --- Markings: set and changed only by the originator (art. 7.1, 7.5) ---------------------


def _reader(node: Node, name: str, clearance: str) -> User:
    _admin.add_user(node.home, name, role=Role.OPERATOR, clearance=clearance, now=START)
    with node.db.session(readonly=True) as session:
        return get_user(session, name)


def test_remarking_by_the_originator_is_a_new_signed_statement_and_gates_reading(
    world: World,
) -> None:
    from fastapi import HTTPException

    from accord.gateway.api.local.messages import _opener_for

    message_id = send(world)
    reader = _reader(world.b, "стажёр", "RESTRICTED")
    with pytest.raises(HTTPException, match="above your clearance"):
        _opener_for(world.b, reader, message_id)
    changed = remark_message(
        world.a, world.heads[A], message_id, {"level": "RESTRICTED", "caveats": ["ORCON"]},
        signatory=world.signers[A],
    )  # fmt: skip
    assert deliver(world.a, world.b, changed["sent_as"]) == "accepted"
    with world.b.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        statement = session.get(Message, changed["sent_as"])
        assert row is not None and statement is not None
        assert row.marking == {"level": "RESTRICTED", "caveats": ["ORCON"]}
        # The re-marking is the originator's own signed statement, kept verbatim.
        assert statement.sender == A and statement.type == "remark"
    assert "remarked" in events(world.b, message_id)
    _opener_for(world.b, reader, message_id)  # now within the reader's clearance


def test_attack_remarking_by_another_party_than_the_originator_is_refused(world: World) -> None:
    from accord.gateway.consent.control import REMARK, _control_message

    message_id = send(world)
    with world.b.db.session(readonly=True) as session:
        held = session.get(Message, message_id)
        assert held is not None
    change = {
        "message_id": message_id,
        "statement_sha256": Envelope.from_bytes(held.envelope).payload_sha256,
        "marking": {"level": "OFFICIAL", "caveats": []},
    }
    forged = _control_message(world.c, B, REMARK, held, "понижение", {"remark": change}, START)
    with world.c.db.session() as session:
        insert_outgoing(session, forged, now=START)
    assert deliver(world.c, world.b, forged.message_id) == "refused"
    with world.b.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        assert row is not None and row.marking["level"] == "CONFIDENTIAL"


def test_attack_forwarder_cannot_remark_a_received_message(world: World) -> None:
    message_id = send(world)
    with pytest.raises(ConsentRefused, match="only the originator"):
        remark_message(world.b, world.users[B], message_id, {"level": "OFFICIAL"})


def test_remarking_to_a_state_secret_level_is_refused(world: World) -> None:
    """Art. 7.5: state secrets never enter the gateway, not even by re-marking."""
    message_id = send(world)
    with pytest.raises(ConsentRefused, match=r"art\. 7\.5"):
        remark_message(
            world.a, world.heads[A], message_id, {"level": "SECRET"}, signatory=world.signers[A]
        )


def test_consent_naming_the_originator_as_forwarder_is_refused(world: World) -> None:
    message_id = send(world)
    with pytest.raises(ConsentRefused, match="--forwarder is the Party that received"):
        grant_consent(
            world.a, world.heads[A], message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + timedelta(days=1), forwarder=A, signatory=world.signers[A],
        )  # fmt: skip
