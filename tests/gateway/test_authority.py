"""Who may change a marking or consent, and which marking governs a read (issue 12,
attacks 1 and 2; agreement art. 4.4, 7.1, 7.3; DESIGN guarantee 4).

The three nodes of tests/gateway/test_forward.py (A originates, B receives and forwards,
C is the third party), their own code, messages fed through each receiver's peer-API
code. Each negative test is named after the attack it replays and checks that nothing
changed where the attack aimed."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlmodel import select

from accord.gateway.admin import home as _admin
from accord.gateway.api.local.messages import _opener_for
from accord.gateway.app import create_app
from accord.gateway.consent.control import (
    REMARK,
    ConsentRefused,
    _control_message,
    grant_consent,
    list_consents,
    remark_message,
    request_consent,
    revoke_consent,
)
from accord.gateway.consent.forward import _Refused
from accord.gateway.keys import lifecycle as _keys
from accord.gateway.keys.store import load_signatory
from accord.gateway.node.runtime import Node
from accord.storage import (
    ConsentRecord,
    Message,
    MessageStatus,
    Role,
    User,
    get_user,
    insert_outgoing,
)
from tests.gateway import test_forward
from tests.gateway.test_forward import (
    DEPUTY,
    DEPUTY_PASS,
    PASS,
    PURPOSE,
    START,
    A,
    B,
    C,
    World,
    deliver,
    events,
    grant,
    send,
)

# The three nodes of test_forward, set up once per module and copied for each test.
homes = test_forward.homes
world = test_forward.world

CONFIDENTIAL_ORCON = {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}
OFFICIAL = {"level": "OFFICIAL", "caveats": []}


def _user(node: Node, name: str, role: Role, clearance: str) -> User:
    _admin.add_user(node.home, name, role=role, clearance=clearance, now=START)
    with node.db.session(readonly=True) as session:
        return get_user(session, name)


def _marking_at(node: Node, message_id: str) -> dict[str, object]:
    with node.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        assert row is not None
        return dict(row.marking)


def _remarks_at(node: Node, message_id: str) -> list[Message]:
    with node.db.session(readonly=True) as session:
        return list(
            session.exec(
                select(Message).where(Message.type == REMARK, Message.in_reply_to == message_id)
            ).all()
        )


def _revoke(node: Node, key_id: str, *, local: bool) -> None:
    _keys.revoke(
        node.home,
        key_id,
        reason="ключ скомпрометирован",
        passphrase=PASS if local else None,
        now=node.clock(),
    )


# --- Attack 1: a downgrade by the least-privileged user ------------------------------------


def test_operator_downgrades_confidential_message_refused(world: World) -> None:
    """An operator cleared only for OFFICIAL re-marks a CONFIDENTIAL/ORCON message to
    OFFICIAL: refused, because the *current* marking is above their clearance."""
    message_id = send(world)
    low = _user(world.a, "оператор-официал", Role.OPERATOR, "OFFICIAL")
    with pytest.raises(ConsentRefused, match="below the message's current marking CONFIDENTIAL"):
        remark_message(world.a, low, message_id, OFFICIAL)
    assert _marking_at(world.a, message_id) == CONFIDENTIAL_ORCON
    assert _remarks_at(world.a, message_id) == []


def test_cleared_operator_cannot_remark_without_a_signatory(world: World) -> None:
    """The reference profile asks a signatory (head or deputy) to sign a re-marking."""
    message_id = send(world)
    with pytest.raises(ConsentRefused, match="requires a signatory"):
        remark_message(world.a, world.users[A], message_id, OFFICIAL)
    assert _remarks_at(world.a, message_id) == []


def test_signatory_below_the_current_marking_cannot_remark(world: World) -> None:
    message_id = send(world)
    _admin.add_user(
        world.a.home, "глава-официал", role=Role.SIGNATORY, clearance="OFFICIAL",
        signatory_passphrase=b"low signatory", now=START,
    )  # fmt: skip
    with world.a.db.session(readonly=True) as session:
        low = get_user(session, "глава-официал")
    signer = load_signatory(world.a.home, low.name, b"low signatory", db=world.a.db)
    with pytest.raises(ConsentRefused, match="below the message's current marking"):
        remark_message(world.a, low, message_id, OFFICIAL, signatory=signer)


def test_remark_without_signatory_signature_refused_by_the_recipient(world: World) -> None:
    """A's node bypasses its own check and sends a re-marking under its seal alone: B
    refuses it (the profile asks a signatory) and keeps the marking."""
    message_id = send(world)
    forged = _forged_remark(world, message_id, OFFICIAL, signers=())
    assert deliver(world.a, world.b, forged) == "refused"
    assert _marking_at(world.b, message_id) == CONFIDENTIAL_ORCON


def test_remark_signed_with_a_revoked_key_refused_by_the_recipient(world: World) -> None:
    """B revoked A's head's key: a re-marking signed with it counts for nothing there."""
    message_id = send(world)
    changed = remark_message(
        world.a, world.heads[A], message_id, OFFICIAL, signatory=world.signers[A]
    )
    _revoke(world.b, world.signers[A].key_id, local=False)
    assert deliver(world.a, world.b, changed["sent_as"]) == "refused"
    assert _marking_at(world.b, message_id) == CONFIDENTIAL_ORCON


def test_remark_signed_with_a_revoked_key_refused_locally(world: World) -> None:
    message_id = send(world)
    signer = world.signers[A]
    _revoke(world.a, signer.key_id, local=True)
    with pytest.raises(ConsentRefused, match="revoked or expired"):
        remark_message(world.a, world.heads[A], message_id, OFFICIAL, signatory=signer)
    assert _remarks_at(world.a, message_id) == []


def _forged_remark(
    w: World, message_id: str, marking: dict[str, object], *, signers: tuple[object, ...]
) -> str:
    with w.a.db.session(readonly=True) as session:
        row = session.get(Message, message_id)
        assert row is not None
    from accord.crypto import Envelope

    change = {
        "message_id": message_id,
        "statement_sha256": Envelope.from_bytes(row.envelope).payload_sha256,
        "marking": marking,
    }
    control = _control_message(
        w.a, B, REMARK, row, "понижение", {"remark": change}, w.clock(),
        signers=signers,  # type: ignore[arg-type]
    )  # fmt: skip
    with w.a.db.session() as session:
        insert_outgoing(session, control, now=w.clock())
    return control.message_id


# --- The profile's second person for a downgrade -------------------------------------------


def _four_eyes(*nodes: Node) -> None:
    for node in nodes:
        node.profile = replace(node.profile, downgrade_signatories=2)


def test_downgrade_waits_for_a_second_different_signatory(world: World) -> None:
    """With `downgrade_signatories = 2`, the head's downgrade waits as a draft; the head
    again is refused; the deputy's confirmation sends it, and B applies it."""
    _four_eyes(world.a, world.b)
    message_id = send(world)
    first = remark_message(
        world.a, world.heads[A], message_id, OFFICIAL, signatory=world.signers[A]
    )
    assert first["status"] == "pending-approval"
    assert _marking_at(world.a, message_id) == CONFIDENTIAL_ORCON
    [draft] = _remarks_at(world.a, message_id)
    assert draft.status is MessageStatus.DRAFT
    with pytest.raises(ConsentRefused, match="already signed this downgrade"):
        remark_message(world.a, world.heads[A], message_id, OFFICIAL, signatory=world.signers[A])
    with world.a.db.session(readonly=True) as session:
        deputy = get_user(session, DEPUTY)
    deputy_key = load_signatory(world.a.home, DEPUTY, DEPUTY_PASS, db=world.a.db)
    done = remark_message(world.a, deputy, message_id, OFFICIAL, signatory=deputy_key)
    assert done["sent_as"] == first["draft"]
    assert _marking_at(world.a, message_id) == OFFICIAL
    assert deliver(world.a, world.b, done["sent_as"]) == "accepted"
    assert _marking_at(world.b, message_id) == OFFICIAL
    assert "remark-proposed" in events(world.a, message_id)


def test_upgrade_needs_one_signatory_even_with_four_eyes(world: World) -> None:
    _four_eyes(world.a, world.b)
    message_id = send(world)
    done = remark_message(
        world.a, world.heads[A], message_id, {"level": "CONFIDENTIAL",
        "caveats": ["ORCON", "PURPOSE-BOUND"]}, signatory=world.signers[A],
    )  # fmt: skip
    assert deliver(world.a, world.b, done["sent_as"]) == "accepted"


def test_downgrade_signed_once_refused_by_a_recipient_requiring_two(world: World) -> None:
    """B's profile asks two signatories for a downgrade: one is not enough, whatever A's
    node decided."""
    _four_eyes(world.b)
    message_id = send(world)
    forged = _forged_remark(world, message_id, OFFICIAL, signers=(world.signers[A],))
    assert deliver(world.a, world.b, forged) == "refused"
    assert _marking_at(world.b, message_id) == CONFIDENTIAL_ORCON


# --- Attack 2: consent by someone who may not read the message ----------------------------


def test_operator_cleared_official_grants_consent_for_confidential_refused(world: World) -> None:
    message_id = send(world)
    low = _user(world.a, "оператор-официал", Role.OPERATOR, "OFFICIAL")
    with pytest.raises(ConsentRefused, match="below the message's current marking"):
        grant_consent(
            world.a, low, message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + timedelta(days=7),
        )  # fmt: skip
    assert list_consents(world.a) == []


def test_consent_without_a_signatory_refused(world: World) -> None:
    message_id = send(world)
    with pytest.raises(ConsentRefused, match="requires a signatory"):
        grant_consent(
            world.a, world.users[A], message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + timedelta(days=7),
        )  # fmt: skip


def test_consent_signed_with_a_revoked_signatory_key_refused_locally(world: World) -> None:
    message_id = send(world)
    signer = world.signers[A]
    _revoke(world.a, signer.key_id, local=True)
    with pytest.raises(ConsentRefused, match="revoked or expired"):
        grant_consent(
            world.a, world.heads[A], message_id, third_party=C, purpose=PURPOSE,
            expires=world.clock() + timedelta(days=7), signatory=signer,
        )  # fmt: skip
    assert list_consents(world.a) == []


def test_consent_signed_with_a_revoked_key_refused_by_the_forwarder(world: World) -> None:
    message_id = send(world)
    granted = grant_consent(
        world.a, world.heads[A], message_id, third_party=C, purpose=PURPOSE,
        expires=world.clock() + timedelta(days=7), signatory=world.signers[A],
    )  # fmt: skip
    _revoke(world.b, world.signers[A].key_id, local=False)
    assert deliver(world.a, world.b, granted.control_message_id) == "refused"
    assert list_consents(world.b) == []


def test_operator_below_the_marking_cannot_revoke_a_consent(world: World) -> None:
    message_id = send(world)
    nonce = grant(world, message_id)
    low = _user(world.a, "оператор-официал", Role.OPERATOR, "OFFICIAL")
    with pytest.raises(ConsentRefused, match="below the message's current marking"):
        revoke_consent(world.a, low, nonce)
    assert [c["status"] for c in list_consents(world.a)] == ["granted"]


def test_holder_below_the_marking_cannot_ask_for_consent(world: World) -> None:
    message_id = send(world)
    low = _user(world.b, "оператор-официал", Role.OPERATOR, "OFFICIAL")
    with pytest.raises(ConsentRefused, match="below the message's current marking"):
        request_consent(world.b, low, message_id, third_party=C, purpose=PURPOSE)


# --- Reads decided by signed facts ---------------------------------------------------------


def _official_reader(node: Node) -> User:
    return _user(node, "читатель-официал", Role.OPERATOR, "OFFICIAL")


def test_editing_the_marking_column_gives_a_low_cleared_reader_nothing(world: World) -> None:
    """A thief of B's database lowers the marking column of a CONFIDENTIAL message: the
    OFFICIAL reader is still refused, since the signed statement governs."""
    message_id = send(world)
    reader = _official_reader(world.b)
    with world.b.db.session() as session:
        session.execute(
            text("UPDATE messages SET marking = :m WHERE message_id = :id"),
            {"m": json.dumps(OFFICIAL), "id": message_id},
        )
    assert _marking_at(world.b, message_id) == OFFICIAL
    with pytest.raises(HTTPException, match="marked CONFIDENTIAL, above your clearance"):
        _opener_for(world.b, reader, message_id)


def test_forged_remark_row_in_the_database_gives_nothing(world: World) -> None:
    """A re-marking row written into B's database, signed by B's own seal in A's name,
    does not verify as A's and is ignored."""
    message_id = send(world)
    reader = _official_reader(world.b)
    with world.b.db.session(readonly=True) as session:
        held = session.get(Message, message_id)
        assert held is not None
    from accord.crypto import Envelope

    change = {
        "message_id": message_id,
        "statement_sha256": Envelope.from_bytes(held.envelope).payload_sha256,
        "marking": OFFICIAL,
    }
    fake = _control_message(world.b, A, REMARK, held, "подделка", {"remark": change}, START)
    fake = replace(fake, sender=A)
    with world.b.db.session() as session:
        insert_outgoing(session, fake, now=START)
        session.execute(
            text("UPDATE messages SET marking = :m WHERE message_id = :id"),
            {"m": json.dumps(OFFICIAL), "id": message_id},
        )
    with pytest.raises(HTTPException, match="above your clearance"):
        _opener_for(world.b, reader, message_id)


def test_signed_downgrade_opens_the_message_to_the_lower_clearance(world: World) -> None:
    message_id = send(world)
    reader = _official_reader(world.b)
    changed = remark_message(
        world.a, world.heads[A], message_id, OFFICIAL, signatory=world.signers[A]
    )
    assert deliver(world.a, world.b, changed["sent_as"]) == "accepted"
    _opener_for(world.b, reader, message_id)
    # Writing the old, stricter marking back into the column restricts again: the
    # column may only ever restrict.
    with world.b.db.session() as session:
        session.execute(
            text("UPDATE messages SET marking = :m WHERE message_id = :id"),
            {"m": json.dumps(CONFIDENTIAL_ORCON), "id": message_id},
        )
    with pytest.raises(HTTPException, match="above your clearance"):
        _opener_for(world.b, reader, message_id)


# --- Revocation of a peer key takes effect at once -----------------------------------------


def test_peer_seal_revoked_is_refused_at_once(world: World) -> None:
    """B trusted A's seal a moment ago (its keys are in B's memory); `accord keys revoke`
    in another process returns, and the next message signed by that seal is refused."""
    first = send(world)
    assert first
    assert world.b.peer_keys(A).seals  # in B's memory now
    _revoke(world.b, world.a.seal.key_id, local=False)
    with pytest.raises(AssertionError):
        send(world)  # `send` asserts B accepted it


# --- Attack 3: a revoked consent binds the third party too --------------------------------


def _misbehaving_forward(w: World, message_id: str, nonce: str) -> None:
    """B ignores the revocation it received: it resets its own record and ships, with its
    real keys, a forward stream carrying the revoked token to C's acceptance code."""
    from accord.gateway.consent.forward import _prepare

    with w.b.db.session() as session:
        record = session.get(ConsentRecord, nonce)
        assert record is not None and record.status == "revoked"
        record.status = "granted"
        session.add(record)
    test_forward._ship_to_c(w, _prepare(w.b, message_id, C, None))


def test_forwarder_ships_under_a_revoked_token_refused_by_the_third_party(world: World) -> None:
    message_id = send(world)
    nonce = grant(world, message_id)
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert revoked["third_party_told"] is not None
    assert deliver(world.a, world.b, revoked["sent_as"]) == "accepted"
    assert deliver(world.a, world.c, revoked["third_party_told"]) == "accepted"
    assert [(c["nonce"], c["status"]) for c in list_consents(world.c)] == [(nonce, "revoked")]
    with pytest.raises(_Refused, match="revoked by its originator"):
        _misbehaving_forward(world, message_id, nonce)
    assert world.stored_at_c() == 1  # the revocation notice only, not the message
    with world.c.db.session(readonly=True) as session:
        assert session.get(Message, message_id) is None


def test_revocation_reaches_the_third_party_even_when_the_forwarder_is_down(
    world: World,
) -> None:
    """The revocation is queued to C on its own: it does not travel through B."""
    message_id = send(world)
    nonce = grant(world, message_id)
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert deliver(world.a, world.c, revoked["third_party_told"]) == "accepted"
    with pytest.raises(_Refused, match="revoked"):
        test_forward._ship_to_c(world, _prepared_anyway(world, message_id))
    assert [c["status"] for c in list_consents(world.c)] == ["revoked"]


def _prepared_anyway(w: World, message_id: str) -> object:
    from accord.gateway.consent.forward import _prepare

    return _prepare(w.b, message_id, C, None)


def test_revocation_not_yet_delivered_is_the_documented_window(world: World) -> None:
    """docs/policy.md: until A's outbox has delivered the revocation to C, C cannot know
    of it; a misbehaving B that forwards in that window is accepted (and the forward is
    on record at C, in B's signed forward statement, as evidence against B)."""
    message_id = send(world)
    nonce = grant(world, message_id)
    revoked = revoke_consent(world.a, world.users[A], nonce)
    assert deliver(world.a, world.b, revoked["sent_as"]) == "accepted"
    _misbehaving_forward(world, message_id, nonce)
    with world.c.db.session(readonly=True) as session:
        assert session.get(Message, message_id) is not None
    # The late revocation is still accepted; the token is recorded used, not revoked.
    assert deliver(world.a, world.c, revoked["third_party_told"]) == "accepted"
    assert [c["status"] for c in list_consents(world.c)] == ["used"]


# --- A receiver accepts only what its profile allows ---------------------------------------


def _send_raw(w: World, **changes: object) -> str:
    """A's node signs, with its real seal, a statement its own local API would never
    make; returns the id once queued (B has not seen it yet)."""
    from accord.crypto import MessageDraft, canonical_json, new_message_id, seal_message
    from accord.storage import NewMessage, PartRef

    now = w.clock()
    values: dict[str, object] = {
        "message_id": new_message_id(), "sender": A, "recipient": B, "created": now,
        "expires": now + timedelta(days=30), "marking": CONFIDENTIAL_ORCON,
        "purpose": "расследование", "type": "notice",
    }  # fmt: skip
    values.update(changes)
    draft = MessageDraft(**values)  # type: ignore[arg-type]
    body = canonical_json({"v": 1, "text": "текст", "fields": {}, "attachments": []})
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
    return st.message_id


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"marking": {"level": "SECRET", "caveats": []}}, id="above-the-ceiling"),
        pytest.param({"marking": {"level": "TOP SECRET", "caveats": []}}, id="top-secret"),
        pytest.param({"marking": {"level": "ДСП", "caveats": []}}, id="unknown-level"),
        pytest.param({"marking": {"level": "OFFICIAL", "caveats": ["NOFORN"]}}, id="caveat"),
        pytest.param(
            {"marking": {"level": "OFFICIAL", "caveats": [], "releasable": "all"}},
            id="unknown-marking-field",
        ),
        pytest.param({"type": "ultimatum"}, id="unknown-type"),
        pytest.param({"extensions": {"override": True}}, id="unknown-extension"),
    ],
)
def test_pinned_peer_delivers_what_the_profile_does_not_allow_refused(
    world: World, changes: dict[str, object]
) -> None:
    """A pinned peer with the same profile digest signs a statement its profile does not
    allow: the receiver refuses it (the uniform refusal), never an accepted receipt, and
    stores nothing."""
    message_id = _send_raw(world, **changes)
    assert deliver(world.a, world.b, message_id) == "refused"
    with world.b.db.session(readonly=True) as session:
        assert session.get(Message, message_id) is None


# --- Refusals say the true reason ----------------------------------------------------------


def test_forward_refused_after_the_only_consent_was_used_does_not_say_expired(
    world: World,
) -> None:
    message_id = send(world)
    grant(world, message_id)
    test_forward.forward(world, message_id)
    with pytest.raises(ConsentRefused) as refused:
        test_forward.forward(world, message_id)
    assert "already used" in str(refused.value)
    assert "expired" not in str(refused.value)


def test_forward_refused_names_each_consents_own_state(world: World) -> None:
    """One consent expired, a later one used: the refusal does not give the used one's
    (future) date as an expiry."""
    message_id = send(world)
    grant(world, message_id, expires=world.clock() + timedelta(days=1))
    world.clock.now += timedelta(days=2)
    grant(world, message_id, expires=world.clock() + timedelta(days=30))
    test_forward.forward(world, message_id)
    with pytest.raises(ConsentRefused) as refused:
        test_forward.forward(world, message_id)
    text = str(refused.value)
    assert "1 already used" in text
    assert f"1 expired (the last at {START + timedelta(days=1):%Y-%m-%d}" in text
    assert f"{world.clock() + timedelta(days=30):%Y-%m-%d}" not in text


# --- Need-to-know everywhere ---------------------------------------------------------------


def _api(node: Node, name: str, role: Role, clearance: str) -> TestClient:
    result = _admin.add_user(node.home, name, role=role, clearance=clearance, now=START)
    app = create_app(node)
    return TestClient(app, headers={"Authorization": f"Bearer {result.token}"})


def _metadata_paths(message_id: str) -> list[str]:
    return [
        f"/api/v1/messages/{message_id}/status",
        f"/api/v1/messages/{message_id}/provenance",
        f"/api/v1/messages/{message_id}/consents",
        f"/api/v1/messages/{message_id}/bundle",
    ]


def test_low_cleared_user_learns_nothing_about_a_message_above_their_clearance(
    world: World,
) -> None:
    """Status, provenance, consent list and bundle of a CONFIDENTIAL message answer an
    OFFICIAL operator exactly as for a message that does not exist; the consent list
    leaves it out. An auditor sees the metadata by role."""
    message_id = send(world)
    grant(world, message_id)
    missing = "0" * len(message_id)
    with _api(world.b, "оператор-официал", Role.OPERATOR, "OFFICIAL") as low:
        for known, absent in zip(
            _metadata_paths(message_id), _metadata_paths(missing), strict=True
        ):
            forbidden, nothing = low.get(known), low.get(absent)
            assert forbidden.status_code == nothing.status_code == 404, (known, forbidden.text)
            assert (
                forbidden.json()["detail"].replace(message_id, missing)
                == (nothing.json()["detail"])
            )
        assert low.get("/api/v1/consents").json() == []
    with _api(world.b, "аудитор", Role.AUDITOR, "OFFICIAL") as auditor:
        assert auditor.get(f"/api/v1/messages/{message_id}/status").status_code == 200
        assert auditor.get(f"/api/v1/messages/{message_id}/bundle").status_code == 200
        assert auditor.get(f"/api/v1/messages/{message_id}").status_code == 403  # no content
    with _api(world.b, "оператор-конф", Role.OPERATOR, "CONFIDENTIAL") as cleared:
        for path in _metadata_paths(message_id):
            assert cleared.get(path).status_code == 200, path
        assert [c["message_id"] for c in cleared.get("/api/v1/consents").json()] == [message_id]


def test_editing_the_marking_column_opens_no_metadata_either(world: World) -> None:
    message_id = send(world)
    with world.b.db.session() as session:
        session.execute(
            text("UPDATE messages SET marking = :m WHERE message_id = :id"),
            {"m": json.dumps(OFFICIAL), "id": message_id},
        )
    with _api(world.b, "оператор-официал", Role.OPERATOR, "OFFICIAL") as low:
        assert low.get(f"/api/v1/messages/{message_id}/status").status_code == 404


def test_operator_below_the_marking_cannot_forward_or_use_it(world: World) -> None:
    """Passing a message on, or using it, is for a person who may read it."""
    import asyncio

    from accord.gateway.consent.control import use_for_purpose
    from accord.gateway.consent.forward import forward_message

    message_id = send(world)
    grant(world, message_id)
    low = _user(world.b, "оператор-официал", Role.OPERATOR, "OFFICIAL")
    with pytest.raises(ConsentRefused, match=f"no message {message_id}"):
        asyncio.run(forward_message(world.b, low, message_id, C, ship=test_forward.to_c(world)))
    with pytest.raises(ConsentRefused, match=f"no message {message_id}"):
        use_for_purpose(world.b, low, message_id, "расследование дела № 17/2026")
    assert world.stored_at_c() == 0
    assert [c["status"] for c in list_consents(world.b)] == ["granted"]
