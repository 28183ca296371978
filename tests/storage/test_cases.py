"""Cases, their history, need-to-know and agreement notices in storage, on both databases."""

from __future__ import annotations

import pytest

from accord.storage import (
    Case,
    Conflict,
    Database,
    Direction,
    DuplicateError,
    NotFound,
    add_receipt,
    advance_case,
    agreement_notice_times,
    case_of_message,
    create_case,
    get_case,
    grant_case_access,
    insert_outgoing,
    list_case_steps,
    list_visible_messages,
    record_agreement_notice,
    record_incoming,
)
from tests.storage.helpers import OUR_PARTY, PEER_PARTY, at, new_message, register_peer


def _case(case_id: str, *, confidential: bool = False) -> Case:
    return Case(
        case_id=case_id,
        requesting=PEER_PARTY,
        requested=OUR_PARTY,
        state="registered",
        opened=at(0),
        confidential_fact=confidential,
        updated_at=at(0),
    )


def test_case_opens_with_its_first_step_and_advances_with_history(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        record_incoming(session, new_message("запрос", sender=PEER_PARTY), now=at(0))
        create_case(session, _case("запрос"), kind="request", party=PEER_PARTY)
        record_incoming(
            session, new_message("ответ", sender=PEER_PARTY, in_reply_to="запрос"), now=at(1)
        )
        advance_case(
            session,
            "запрос",
            expected_steps=1,
            changes={"state": "in-execution"},
            kind="acknowledge",
            party=OUR_PARTY,
            message_id="ответ",
            now=at(1),
            detail={"примечание": "принято"},
        )
    with db.session(readonly=True) as session:
        case = get_case(session, "запрос")
        assert case.state == "in-execution" and case.steps == 2
        steps = list_case_steps(session, "запрос")
        assert [(s.seq, s.kind, s.from_state, s.to_state) for s in steps] == [
            (1, "request", None, "registered"),
            (2, "acknowledge", "registered", "in-execution"),
        ]
        assert steps[1].detail == {"примечание": "принято"}
        owner = case_of_message(session, "ответ")
        assert owner is not None and owner.case_id == "запрос"
        assert case_of_message(session, "нет такого") is None


def test_attack_stale_step_decided_on_an_old_state_is_a_conflict(db: Database) -> None:
    """Two concurrent answers decided on the same state: only the first applies."""
    with db.session() as session:
        register_peer(session)
        record_incoming(session, new_message("запрос", sender=PEER_PARTY), now=at(0))
        create_case(session, _case("запрос"), kind="request", party=PEER_PARTY)
        kwargs = {"kind": "delay", "party": OUR_PARTY, "message_id": "запрос", "now": at(1)}
        advance_case(session, "запрос", expected_steps=1, changes={}, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(Conflict):
            advance_case(session, "запрос", expected_steps=1, changes={}, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(DuplicateError):
            create_case(session, _case("запрос"), kind="request", party=PEER_PARTY)
        with pytest.raises(NotFound):
            create_case(session, _case("без сообщения"), kind="request", party=PEER_PARTY)


def test_art_6_3_confidential_case_hidden_without_need_to_know(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        for message_id, reply_to in (("тайный", None), ("ответ", "тайный"), ("открытый", None)):
            record_incoming(
                session,
                new_message(message_id, sender=PEER_PARTY, in_reply_to=reply_to),
                now=at(len(message_id)),
            )
        create_case(session, _case("тайный", confidential=True), kind="request", party=PEER_PARTY)
        create_case(session, _case("открытый"), kind="request", party=PEER_PARTY)
        grant_case_access(session, "тайный", "допущенный", granted_by="глава", now=at(5))

    def ids(user: str, sees_all: bool = False) -> set[str]:
        with db.session(readonly=True) as session:
            rows = list_visible_messages(session, Direction.IN, user_name=user, sees_all=sees_all)
            return {m.message_id for m in rows}

    assert ids("посторонний") == {"открытый"}
    assert ids("допущенный") == {"тайный", "ответ", "открытый"}
    assert ids("глава", sees_all=True) == {"тайный", "ответ", "открытый"}


def test_art_13_notice_times_received_and_sent(db: Database) -> None:
    with db.session() as session:
        register_peer(session)
        record_incoming(session, new_message("их", sender=PEER_PARTY), now=at(10))
        record_agreement_notice(
            session, "их", peer=PEER_PARTY, direction=Direction.IN, kind="termination", now=at(10)
        )
        insert_outgoing(
            session, new_message("наше", sender=OUR_PARTY, recipient=PEER_PARTY), now=at(20)
        )
        record_agreement_notice(
            session,
            "наше",
            peer=PEER_PARTY,
            direction=Direction.OUT,
            kind="termination",
            now=at(20),
        )
        assert sorted(
            agreement_notice_times(session, PEER_PARTY, "termination"), key=str
        ) == sorted([at(10), None], key=str)
        add_receipt(session, "наше", envelope=b"{}", verdict="accepted", now=at(30))
        assert set(agreement_notice_times(session, PEER_PARTY, "termination")) == {at(10), at(30)}
        assert agreement_notice_times(session, "другая", "termination") == []
