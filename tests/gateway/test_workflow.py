"""The workflow on a node's store, with an injected clock: deadlines and the agreement's
periods are crossed by passing a later `now`, never by waiting (art. 4.2, 6.3, 7.4, 13).

The two Parties' nodes are played by two databases driving the same case: what one node
records when it sends a step, the other records when the step arrives.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accord.gateway.workflow import cases as _workflow
from accord.gateway.workflow.cases import WorkflowRefused
from accord.policy import DEFAULT_SCHEME, Marking
from accord.policy.workflow import REFERENCE_PERIODS, WorkflowError
from accord.storage import (
    Database,
    NewMessage,
    PartRef,
    PeerStatus,
    Role,
    User,
    add_peer,
    add_receipt,
    insert_draft,
    insert_outgoing,
    record_incoming,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BY, RU = "МВД-РБ", "Росгвардия"
FIELDS = {
    "essence": "Проверка сведений о лице",
    "justification": "Расследование уголовного дела № 12-345",
    "assistance": "Сообщить сведения о регистрации по месту жительства",
}
OFFICIAL = Marking("OFFICIAL")
CONFIDENTIAL = Marking("CONFIDENTIAL")
PERIODS = REFERENCE_PERIODS


def _user(name: str, role: Role = Role.OPERATOR) -> User:
    return User(
        name=name, role=role, clearance="CONFIDENTIAL", token_sha256="0" * 64, created_at=T0
    )


HEAD_BY = _user("Петров П.П.", Role.SIGNATORY)
CLERK_BY = _user("оператор")
CLERK_RU = _user("исполнитель")
OUTSIDER_RU = _user("посторонний")


def _message(message_id: str, sender: str, recipient: str, **extra: Any) -> NewMessage:
    return NewMessage(
        message_id=message_id,
        sender=sender,
        recipient=recipient,
        type=extra.pop("type", "reply"),
        marking={"level": "OFFICIAL", "caveats": []},
        purpose="Проверка сведений",
        created=T0,
        envelope=f"конверт {message_id}".encode(),
        parts=(PartRef("0" * 64, 0),),
        **extra,
    )


@dataclass
class Side:
    """One Party's node: its party id, its database, its peer."""

    party: str
    peer: str
    db: Database

    def send(
        self,
        message_id: str,
        user: User,
        meta: dict[str, Any],
        *,
        now: datetime,
        marking: Marking = OFFICIAL,
        message_type: str = "reply",
    ) -> _workflow.Outgoing | None:
        """What the local API does: plan, then store the message and the step together."""
        with self.db.session(readonly=True) as session:
            meta = _workflow.reply_defaults(session, user, meta)
            plan = _workflow.plan_outgoing(
                session,
                party=self.party,
                user=user,
                meta=meta,
                message_type=message_type,
                to=self.peer,
                marking=marking,
                lowest_level=DEFAULT_SCHEME.levels[0],
                now=now,
                periods=PERIODS,
            )
        with self.db.session() as session:
            insert_outgoing(
                session,
                _message(
                    message_id,
                    self.party,
                    self.peer,
                    type=message_type,
                    in_reply_to=meta.get("in_reply_to"),
                ),
                now=now,
            )
            if plan is not None:
                _workflow.record_outgoing(
                    session,
                    plan,
                    message_id=message_id,
                    party=self.party,
                    recipient=self.peer,
                    user=user,
                    now=now,
                    periods=PERIODS,
                )
        return plan

    def receive(
        self,
        message_id: str,
        *,
        now: datetime,
        message_type: str = "reply",
        extensions: dict[str, Any] | None = None,
        in_reply_to: str | None = None,
        body: dict[str, Any] | None = None,
        signed: bool = False,
        caveats: tuple[str, ...] = (),
        created: datetime | None = None,
    ) -> None:
        """What the peer API does: inspect, then record the message and the step."""
        with self.db.session(readonly=True) as session:
            incoming = _workflow.inspect_incoming(
                session,
                statement_type=message_type,
                sender=self.peer,
                recipient=self.party,
                marking_caveats=caveats,
                extensions=extensions or {},
                in_reply_to=in_reply_to,
                signed_by_signatory=signed,
                open_body=lambda: body or {},
                now=now,
                periods=PERIODS,
                created=created,
            )
        with self.db.session() as session:
            record_incoming(
                session,
                _message(
                    message_id, self.peer, self.party, type=message_type, in_reply_to=in_reply_to
                ),
                now=now,
            )
            if incoming is not None:
                _workflow.record_incoming_step(
                    session, incoming, message_id=message_id, now=now, periods=PERIODS
                )

    def case(self, case_id: str, user: User, now: datetime) -> dict[str, Any]:
        with self.db.session(readonly=True) as session:
            return _workflow.case_view(session, user, case_id, now=now)


@pytest.fixture
def parties(db: Database, tmp_path: Any) -> Iterator[tuple[Side, Side]]:
    other = Database.open(f"sqlite:///{tmp_path / 'other.db'}")
    other.migrate()
    for database, peer in ((db, RU), (other, BY)):
        with database.session() as session:
            add_peer(
                session,
                party_id=peer,
                name=peer,
                endpoint_url="https://127.0.0.1:1",
                tls_cert_sha256=("a" if peer == RU else "b") * 64,
                descriptor="{}",
                status=PeerStatus.ACTIVE,
                now=T0,
            )
    try:
        yield Side(BY, RU, db), Side(RU, BY, other)
    finally:
        other.close()


def _request(by: Side, ru: Side, *, urgent: bool = False, caveats: tuple[str, ...] = ()) -> str:
    marking = Marking("OFFICIAL", caveats)
    by.send(
        "запрос",
        CLERK_BY if urgent else HEAD_BY,
        {"fields": FIELDS, "urgent_oral": urgent},
        now=T0,
        marking=marking,
        message_type="request",
    )
    ru.receive(
        "запрос",
        now=T0 + timedelta(minutes=1),
        message_type="request",
        extensions={"urgent_oral": True} if urgent else {},
        body={"fields": {**FIELDS, "requesting_party": BY, "requested_party": RU}},
        signed=not urgent,
        caveats=caveats,
        created=T0,
    )
    return "запрос"


def _step(kind: str, reasons: str | None = None) -> dict[str, Any]:
    return {"in_reply_to": "запрос", "workflow": {"kind": kind, "reasons": reasons}}


def _deliver(
    sender: Side, receiver: Side, message_id: str, kind: str, *, now: datetime, **kw: Any
) -> None:
    sender.send(message_id, kw.pop("user"), _step(kind, kw.get("reasons")), now=now)
    body = {"fields": {"reasons": kw["reasons"]}} if kw.get("reasons") else {}
    receiver.receive(
        message_id,
        now=now,
        extensions={"workflow": {"case": "запрос", "kind": kind}},
        in_reply_to="запрос",
        body=body,
        signed=kw.get("signed", False),
    )


def test_both_nodes_drive_the_same_case_through_info_request_to_result(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru)
    _deliver(ru, by, "уточнение", "info-request", now=T0 + timedelta(hours=1), user=CLERK_RU)
    _deliver(by, ru, "сведения", "information", now=T0 + timedelta(hours=2), user=CLERK_BY)
    _deliver(ru, by, "результат", "result", now=T0 + timedelta(days=1), user=CLERK_RU)
    now = T0 + timedelta(days=2)
    ours, theirs = by.case("запрос", CLERK_BY, now), ru.case("запрос", CLERK_RU, now)
    assert ours["state"] == theirs["state"] == "completed"
    kinds = ["request", "info-request", "information", "result"]
    assert [s["kind"] for s in ours["steps"]] == [s["kind"] for s in theirs["steps"]] == kinds


def test_art_4_2_urgent_oral_request_flagged_overdue_on_both_nodes(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru, urgent=True)
    in_time = T0 + timedelta(days=2, hours=23)
    late = T0 + timedelta(days=3, minutes=1)
    for side, user in ((by, CLERK_BY), (ru, CLERK_RU)):
        assert side.case("запрос", user, in_time)["overdue"] is False
        view = side.case("запрос", user, late)
        assert view["overdue"] is True and view["state"] == "awaiting-confirmation"
    # The result waits for the written confirmation (art. 4.4).
    with ru.db.session(readonly=True) as session, pytest.raises(WorkflowRefused, match="result"):
        _workflow.plan_outgoing(
            session,
            party=RU,
            user=CLERK_RU,
            meta={**_step("result"), "to": BY},
            message_type="reply",
            to=BY,
            marking=OFFICIAL,
            lowest_level="OFFICIAL",
            now=late,
            periods=PERIODS,
        )
    _deliver(by, ru, "подтверждение", "confirm", now=late, user=HEAD_BY, signed=True)
    for side, user in ((by, CLERK_BY), (ru, CLERK_RU)):
        view = side.case("запрос", user, late + timedelta(days=1))
        assert view["state"] == "registered"
        assert view["overdue"] is False and view["confirmed_late"] is True


def test_attack_confirmation_by_an_operator_is_refused(parties: tuple[Side, Side]) -> None:
    """Art. 4.4: the written confirmation is signed by the head or a deputy."""
    by, ru = parties
    _request(by, ru, urgent=True)
    with pytest.raises(WorkflowRefused, match=r"4\.4") as raised:
        by.send("подтверждение", CLERK_BY, _step("confirm"), now=T0)
    assert raised.value.status == 403
    with ru.db.session(readonly=True) as session, pytest.raises(WorkflowError, match=r"4\.4"):
        _workflow.inspect_incoming(
            session,
            statement_type="reply",
            sender=BY,
            recipient=RU,
            marking_caveats=(),
            extensions={"workflow": {"case": "запрос", "kind": "confirm"}},
            in_reply_to="запрос",
            signed_by_signatory=False,
            open_body=dict,
            now=T0,
            periods=PERIODS,
        )


def test_attack_refusal_without_reasons_is_refused_at_both_nodes(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru)
    with pytest.raises(WorkflowRefused, match=r"5\.3") as raised:
        ru.send("отказ", CLERK_RU, _step("refusal", "  "), now=T0)
    assert raised.value.status == 422
    # A peer that sends one anyway (its reasons missing from the encrypted body).
    with pytest.raises(WorkflowError, match=r"5\.3"):
        by.receive(
            "отказ",
            now=T0,
            extensions={"workflow": {"case": "запрос", "kind": "refusal"}},
            in_reply_to="запрос",
            body={"fields": {}},
        )
    assert by.case("запрос", CLERK_BY, T0)["state"] == "registered"
    assert ru.case("запрос", CLERK_RU, T0)["state"] == "registered"


def test_attack_step_on_a_case_by_the_wrong_party_is_refused(parties: tuple[Side, Side]) -> None:
    by, ru = parties
    _request(by, ru)
    with pytest.raises(WorkflowRefused, match="requested Party"):
        by.send("самоответ", CLERK_BY, _step("result"), now=T0)
    with pytest.raises(WorkflowError):
        ru.receive(
            "чужой",
            now=T0,
            extensions={"workflow": {"case": "запрос", "kind": "result"}},
            in_reply_to="запрос",
        )


def test_attack_step_naming_another_case_than_it_replies_to_is_refused(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru)
    with pytest.raises(WorkflowError, match="reply to its case"):
        by.receive(
            "подмена",
            now=T0,
            extensions={"workflow": {"case": "запрос", "kind": "acknowledge"}},
            in_reply_to="другое",
        )


def test_art_7_4_disclosure_notice_holds_back_confidential_results(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru)
    _deliver(by, ru, "уведомление", "disclosure-notice", now=T0, user=CLERK_BY)
    with ru.db.session(readonly=True) as session, pytest.raises(WorkflowRefused, match=r"7\.4"):
        _workflow.plan_outgoing(
            session,
            party=RU,
            user=CLERK_RU,
            meta=_step("result"),
            message_type="reply",
            to=BY,
            marking=CONFIDENTIAL,
            lowest_level="OFFICIAL",
            now=T0,
            periods=PERIODS,
        )
    # An explicit decision to send anyway is recorded with the step.
    ru.send(
        "результат",
        CLERK_RU,
        {"in_reply_to": "запрос", "workflow": {"kind": "result", "despite_disclosure": True}},
        now=T0,
        marking=CONFIDENTIAL,
    )
    steps = ru.case("запрос", CLERK_RU, T0)["steps"]
    assert steps[-1]["kind"] == "result"
    assert steps[-1]["detail"] == {"by": CLERK_RU.name, "despite_disclosure": True}


def test_art_6_3_confidential_fact_case_is_hidden_without_need_to_know(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru, caveats=("CONFIDENTIAL-FACT",))
    with ru.db.session(readonly=True) as session:
        assert not _workflow.is_visible(session, OUTSIDER_RU, "запрос")
        with pytest.raises(WorkflowRefused, match="no case") as hidden:
            _workflow.case_view(session, OUTSIDER_RU, "запрос", now=T0)
        with pytest.raises(WorkflowRefused, match="no case") as unknown:
            _workflow.case_view(session, OUTSIDER_RU, "несуществующий", now=T0)
        # Hidden and unknown answer alike, but for the id itself.
        assert str(hidden.value).replace("запрос", "X") == str(unknown.value).replace(
            "несуществующий", "X"
        )
        assert hidden.value.status == unknown.value.status == 404
    head = _user("Сидоров С.С.", Role.SIGNATORY)
    with ru.db.session() as session:
        with pytest.raises(WorkflowRefused):
            _workflow.grant_access(
                session, CLERK_RU, "запрос", OUTSIDER_RU.name, now=T0, local=ru.party
            )
        _workflow.grant_access(session, head, "запрос", OUTSIDER_RU.name, now=T0, local=ru.party)
    with ru.db.session(readonly=True) as session:
        assert _workflow.is_visible(session, OUTSIDER_RU, "запрос")


def test_art_6_3_audit_event_names_a_confidential_case_only_by_digest(db: Database) -> None:
    """The returned record and the leaf appended to RU's audit log name a confidential-fact
    case by a digest only: no case id, no requesting Party."""
    from accord.policy.workflow import open_case
    from accord.storage import list_leaves

    case = open_case("тайный запрос", requesting=BY, requested=RU, now=T0, confidential_fact=True)
    plain = open_case("запрос", requesting=BY, requested=RU, now=T0)
    with db.session() as session:
        event = _workflow._audit_event(
            session, RU, T0, "step", case, kind="result", state="completed", party=BY
        )
        shown = _workflow._audit_event(session, RU, T0, "step", plain, kind="result", party=BY)
    assert "тайный запрос" not in str(event) and BY not in str(event)
    assert event["case"].startswith("sha256:") and event["kind"] == "result"
    assert shown["party"] == BY
    with db.session(readonly=True) as session:
        hidden, visible = (leaf.leaf.decode("utf-8") for leaf in list_leaves(session))
    assert "тайный запрос" not in hidden and BY not in hidden and event["case"] in hidden
    assert "case.step" in hidden and BY in visible


def test_art_13_no_new_requests_after_the_notice_period_but_cases_go_on(
    parties: tuple[Side, Side],
) -> None:
    by, ru = parties
    _request(by, ru)
    head_ru = _user("Сидоров С.С.", Role.SIGNATORY)
    with ru.db.session(readonly=True) as session, pytest.raises(WorkflowRefused, match="signatory"):
        _workflow.plan_outgoing(
            session,
            party=RU,
            user=CLERK_RU,
            meta={"agreement": {"kind": "termination-notice"}},
            message_type="notice",
            to=BY,
            marking=OFFICIAL,
            lowest_level="OFFICIAL",
            now=T0,
            periods=PERIODS,
        )
    notice_at = T0 + timedelta(days=10)
    ru.send(
        "расторжение",
        head_ru,
        {"agreement": {"kind": "termination-notice"}},
        now=notice_at,
        message_type="notice",
    )
    by.receive(
        "расторжение",
        now=notice_at,
        message_type="notice",
        extensions={"agreement": {"kind": "termination-notice"}},
        signed=True,
    )
    # Not yet received as far as RU knows (no receipt): RU's view still in force.
    with ru.db.session(readonly=True) as session:
        assert (
            _workflow.agreement_view(session, [BY], now=notice_at, periods=PERIODS)[0]["phase"]
            == "in-force"
        )
    with ru.db.session() as session:
        add_receipt(session, "расторжение", envelope=b"{}", verdict="accepted", now=notice_at)
    end = notice_at + PERIODS.termination_notice
    for side in (by, ru):
        with side.db.session(readonly=True) as session:
            view = _workflow.agreement_view(session, [side.peer], now=end, periods=PERIODS)[0]
        assert view["phase"] == "terminated" and view["accepts_new_requests"] is False
    # A new request after the end: refused at send and on receipt.
    with pytest.raises(WorkflowRefused, match=r"13\.1"):
        by.send("новый", HEAD_BY, {"fields": FIELDS}, now=end, message_type="request")
    with pytest.raises(WorkflowError, match=r"13\.1"):
        ru.receive(
            "новый",
            now=end,
            message_type="request",
            body={"fields": FIELDS},
            signed=True,
        )
    # Just before the end, a request is still accepted; and an open case still goes on.
    by.send(
        "последний",
        HEAD_BY,
        {"fields": FIELDS},
        now=end - timedelta(seconds=1),
        message_type="request",
    )
    _deliver(ru, by, "результат", "result", now=end + timedelta(days=1), user=CLERK_RU)
    # A second notice does not restart the period.
    with ru.db.session(readonly=True) as session, pytest.raises(WorkflowRefused, match="already"):
        _workflow.plan_outgoing(
            session,
            party=RU,
            user=head_ru,
            meta={"agreement": {"kind": "termination-notice"}},
            message_type="notice",
            to=BY,
            marking=OFFICIAL,
            lowest_level="OFFICIAL",
            now=end,
            periods=PERIODS,
        )


def test_attack_step_on_a_request_still_a_draft_is_refused(parties: tuple[Side, Side]) -> None:
    """The other Party has not received an unsigned request (art. 4.4): no step on it."""
    by, _ru = parties
    with by.db.session() as session:
        insert_draft(session, _message("черновик", BY, RU, type="request"), now=T0)
    by_plan = _workflow.plan_outgoing
    with by.db.session() as session:
        _workflow.record_outgoing(
            session,
            _workflow.Outgoing(kind="request", may_wait_as_draft=True),
            message_id="черновик",
            party=BY,
            recipient=RU,
            user=CLERK_BY,
            now=T0,
            periods=PERIODS,
        )
    with by.db.session(readonly=True) as session, pytest.raises(WorkflowRefused, match="draft"):
        by_plan(
            session,
            party=BY,
            user=CLERK_BY,
            meta={"in_reply_to": "черновик", "workflow": {"kind": "consultation"}},
            message_type="reply",
            to=RU,
            marking=OFFICIAL,
            lowest_level="OFFICIAL",
            now=T0,
            periods=PERIODS,
        )
