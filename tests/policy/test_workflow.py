"""The request workflow's state machine (agreement art. 4 to 6, 7.4), exhaustively.

Every rule is named after its article; negative cases after the move they stop. Time is
injected: deadlines are crossed by passing a later `now`, never by waiting.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from accord.policy.workflow import (
    ACTORS,
    REASONED,
    REFERENCE_PERIODS,
    TRANSITIONS,
    AgreementPeriods,
    Case,
    CaseState,
    IllegalTransition,
    Kind,
    ReasonsRequired,
    RequestFields,
    RequestFieldsMissing,
    Side,
    Step,
    TransferWithheld,
    WorkflowError,
    WrongParty,
    apply,
    check_transfer,
    open_case,
)

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
BY, RU = "МВД-РБ", "Росгвардия"
REASONS = "Исполнение запроса противоречит законодательству запрашиваемой Стороны"


def _case(*, urgent: bool = False, now: datetime = T0) -> Case:
    return open_case("запрос-1", requesting=BY, requested=RU, now=now, urgent_oral=urgent)


def _step(
    kind: Kind, side: Side | None = None, *, at: datetime = T0, reasons: str | None = None
) -> Step:
    if side is None:
        side = next(iter(ACTORS[kind])) if len(ACTORS[kind]) == 1 else Side.REQUESTED
    if reasons is None and kind in REASONED:
        reasons = REASONS
    return Step(kind, side, at, reasons)


def _run(case: Case, *kinds: Kind) -> Case:
    for kind in kinds:
        case = apply(case, _step(kind))
    return case


# --- The table itself ----------------------------------------------------------------


def test_every_state_has_a_row_and_final_states_allow_only_disclosure_notice() -> None:
    assert set(TRANSITIONS) == set(CaseState)
    assert TRANSITIONS[CaseState.REFUSED] == {}
    assert set(TRANSITIONS[CaseState.COMPLETED]) == {Kind.DISCLOSURE_NOTICE}
    assert set(ACTORS) == set(Kind)


def test_every_legal_step_is_taken_and_every_other_is_refused() -> None:
    """Exhaustive over (state, step, side): the table is the whole truth."""
    for state in CaseState:
        case = Case("к", BY, RU, state, T0)
        for kind in Kind:
            for side in Side:
                step = _step(kind, side)
                legal = kind in TRANSITIONS[state] and side in ACTORS[kind]
                if legal:
                    assert apply(case, step).state is TRANSITIONS[state][kind]
                else:
                    with pytest.raises(WorkflowError):
                        apply(case, step)


# --- Art. 4.2: written and urgent oral requests -----------------------------------------


def test_art_4_2_written_request_is_registered() -> None:
    case = _case()
    assert case.state is CaseState.REGISTERED
    assert case.confirmation_due is None
    assert not case.overdue(T0 + timedelta(days=365))


def test_art_4_2_urgent_oral_request_awaits_confirmation_within_the_window() -> None:
    case = _case(urgent=True)
    assert case.state is CaseState.AWAITING_CONFIRMATION
    assert case.confirmation_due == T0 + timedelta(days=3)
    assert not case.overdue(T0 + timedelta(days=3) - timedelta(microseconds=1))
    assert case.overdue(T0 + timedelta(days=3))


def test_art_4_2_window_comes_from_the_profile() -> None:
    periods = AgreementPeriods(timedelta(hours=12), timedelta(days=1), timedelta(days=2))
    case = open_case("к", requesting=BY, requested=RU, now=T0, periods=periods, urgent_oral=True)
    assert case.overdue(T0 + timedelta(hours=12))


def test_art_4_2_confirmation_in_time_clears_the_deadline() -> None:
    case = apply(_case(urgent=True), _step(Kind.CONFIRM, at=T0 + timedelta(days=2)))
    assert case.state is CaseState.REGISTERED
    assert not case.overdue(T0 + timedelta(days=30))
    assert not case.confirmed_late


def test_art_4_2_late_confirmation_stays_visible_as_late() -> None:
    case = _case(urgent=True)
    assert case.overdue(T0 + timedelta(days=4))
    case = apply(case, _step(Kind.CONFIRM, at=T0 + timedelta(days=4)))
    assert case.confirmed_late
    assert not case.overdue(T0 + timedelta(days=5))
    assert case.to_dict(T0 + timedelta(days=5))["confirmed_late"] is True


def test_attack_result_delivered_on_an_unconfirmed_oral_request_is_refused() -> None:
    """Art. 4.4: nothing is delivered before the request is confirmed in writing."""
    with pytest.raises(IllegalTransition) as raised:
        apply(_case(urgent=True), _step(Kind.RESULT))
    assert Kind.RESULT not in raised.value.allowed
    assert "confirm" not in str(raised.value) or "allowed now" in str(raised.value)


def test_art_4_2_doubt_asks_for_confirmation_and_confirm_resumes() -> None:
    case = _run(_case(), Kind.ACKNOWLEDGE, Kind.CONFIRMATION_REQUEST)
    assert case.state is CaseState.CONFIRMATION_REQUESTED
    with pytest.raises(IllegalTransition):
        apply(case, _step(Kind.RESULT))
    assert apply(case, _step(Kind.CONFIRM)).state is CaseState.IN_EXECUTION


# --- Art. 5: refusals, conditions, consultations ---------------------------------------


@pytest.mark.parametrize("kind", sorted(REASONED))
@pytest.mark.parametrize("reasons", [None, "", "   \n\t"])
def test_attack_refusal_without_reasons_is_refused(kind: Kind, reasons: str | None) -> None:
    """Art. 5.3: the requesting Party is told the reasons in writing."""
    case = _case()
    with pytest.raises(ReasonsRequired, match=r"art\. 5\.3"):
        apply(case, Step(kind, Side.REQUESTED, T0, reasons))


def test_art_5_3_refusal_with_reasons_closes_the_case() -> None:
    case = apply(_case(), _step(Kind.REFUSAL))
    assert case.state is CaseState.REFUSED and case.final
    with pytest.raises(IllegalTransition, match="closed"):
        apply(case, _step(Kind.RESULT))


def test_art_5_1_partial_refusal_leaves_the_rest_in_execution() -> None:
    case = apply(_case(), _step(Kind.PARTIAL_REFUSAL))
    assert case.state is CaseState.IN_EXECUTION and case.partially_refused
    assert apply(case, _step(Kind.RESULT)).state is CaseState.COMPLETED


def test_art_5_2_conditions_and_consultations_then_acceptance() -> None:
    case = _run(_case(), Kind.CONDITIONS, Kind.CONSULTATION)
    assert case.state is CaseState.CONDITIONS_PROPOSED
    case = apply(case, _step(Kind.CONSULTATION, Side.REQUESTING))
    assert case.state is CaseState.CONDITIONS_PROPOSED
    case = apply(case, _step(Kind.ACCEPT_CONDITIONS))
    assert case.state is CaseState.IN_EXECUTION and case.conditions_accepted


def test_attack_requested_party_accepting_its_own_conditions_is_refused() -> None:
    case = apply(_case(), _step(Kind.CONDITIONS))
    with pytest.raises(WrongParty, match="requesting Party"):
        apply(case, Step(Kind.ACCEPT_CONDITIONS, Side.REQUESTED, T0))


def test_attack_requesting_party_delivering_a_result_to_itself_is_refused() -> None:
    with pytest.raises(WrongParty):
        apply(_case(), Step(Kind.RESULT, Side.REQUESTING, T0))


# --- Art. 6: execution --------------------------------------------------------------


def test_art_6_1_delay_notices_keep_the_state() -> None:
    for start in (CaseState.REGISTERED, CaseState.IN_EXECUTION, CaseState.INFO_REQUESTED):
        case = Case("к", BY, RU, start, T0)
        assert apply(case, _step(Kind.DELAY)).state is start


def test_art_6_2_information_asked_then_given() -> None:
    case = _run(_case(), Kind.ACKNOWLEDGE, Kind.INFO_REQUEST)
    assert case.state is CaseState.INFO_REQUESTED
    with pytest.raises(IllegalTransition, match="information"):
        apply(case, _step(Kind.RESULT))
    case = apply(case, _step(Kind.INFORMATION))
    assert case.state is CaseState.IN_EXECUTION


def test_art_6_4_result_completes() -> None:
    case = _run(_case(), Kind.ACKNOWLEDGE, Kind.RESULT)
    assert case.state is CaseState.COMPLETED and case.steps == 2


def test_illegal_transition_names_what_is_allowed() -> None:
    case = _run(_case(), Kind.ACKNOWLEDGE, Kind.INFO_REQUEST)
    with pytest.raises(IllegalTransition) as raised:
        apply(case, Step(Kind.ACKNOWLEDGE, Side.REQUESTED, T0))
    error = raised.value
    assert error.state is CaseState.INFO_REQUESTED and error.kind is Kind.ACKNOWLEDGE
    assert error.allowed == case.allowed(Side.REQUESTED)
    for kind in error.allowed:
        assert kind.value in str(error)


# --- Art. 7.4: advance notice of disclosure -------------------------------------------


def test_art_7_4_after_disclosure_notice_confidential_transfer_is_withheld() -> None:
    case = _run(_case(), Kind.ACKNOWLEDGE)
    check_transfer(case, Side.REQUESTED, confidential=True, unsafe_override=False)
    case = apply(case, _step(Kind.DISCLOSURE_NOTICE, at=T0 + timedelta(days=1)))
    assert case.disclosure_noticed_at == T0 + timedelta(days=1)
    with pytest.raises(TransferWithheld, match=r"art\. 7\.4"):
        check_transfer(case, Side.REQUESTED, confidential=True, unsafe_override=False)
    check_transfer(case, Side.REQUESTED, confidential=False, unsafe_override=False)
    check_transfer(case, Side.REQUESTED, confidential=True, unsafe_override=True)
    check_transfer(case, Side.REQUESTING, confidential=True, unsafe_override=False)


def test_art_7_4_disclosure_notice_may_follow_the_result() -> None:
    case = _run(_case(), Kind.RESULT, Kind.DISCLOSURE_NOTICE)
    assert case.state is CaseState.COMPLETED and case.disclosure_noticed_at == T0


# --- Art. 4.3: the request's content ---------------------------------------------------

FIELDS = {
    "essence": "Проверка сведений о лице",
    "justification": "Расследование уголовного дела № 123",
    "assistance": "Предоставить сведения о регистрации",
}


def test_art_4_3_request_fields_parse() -> None:
    parsed = RequestFields.parse(FIELDS, requesting=BY, requested=RU)
    assert parsed.to_dict()["requesting_party"] == BY
    assert parsed.other == ""


@pytest.mark.parametrize("missing", ["essence", "justification", "assistance"])
def test_attack_request_without_an_art_4_3_field_is_refused(missing: str) -> None:
    fields = {**FIELDS, missing: "  "}
    with pytest.raises(RequestFieldsMissing, match=f"--{missing}"):
        RequestFields.parse(fields, requesting=BY, requested=RU)


def test_attack_request_naming_another_requesting_party_is_refused() -> None:
    with pytest.raises(RequestFieldsMissing, match="requesting party"):
        RequestFields.parse(
            {**FIELDS, "requesting_party": "третья сторона"}, requesting=BY, requested=RU
        )


# --- Any sequence of steps ------------------------------------------------------------

steps = st.lists(
    st.tuples(
        st.sampled_from(list(Kind)),
        st.sampled_from(list(Side)),
        st.one_of(st.none(), st.just(""), st.just(REASONS)),
        st.integers(min_value=0, max_value=10 * 24 * 60),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(urgent=st.booleans(), sequence=steps)
def test_any_sequence_follows_the_table(
    urgent: bool, sequence: list[tuple[Kind, Side, str | None, int]]
) -> None:
    """Whatever the order of attempts: accepted steps are exactly the table's, refused
    ones change nothing, refusals carry reasons, final states stay final, the overdue flag
    follows the clock and the confirmation."""
    case = _case(urgent=urgent)
    accepted: list[Kind] = []
    for kind, side, reasons, minutes in sequence:
        at = T0 + timedelta(minutes=minutes)
        before = case
        legal = kind in TRANSITIONS[case.state] and side in ACTORS[kind]
        reasoned = kind not in REASONED or bool((reasons or "").strip())
        try:
            case = apply(case, Step(kind, side, at, reasons))
        except WorkflowError as e:
            assert not (legal and reasoned), e
            assert case is before
            if isinstance(e, IllegalTransition):
                assert e.allowed == before.allowed(side)
            continue
        assert legal and reasoned
        assert case.state is TRANSITIONS[before.state][kind]
        assert case.steps == before.steps + 1
        accepted.append(kind)
        if before.final:
            assert kind is Kind.DISCLOSURE_NOTICE and case.state is before.state
    if case.state is CaseState.REFUSED:
        assert accepted[-1] is Kind.REFUSAL
    if case.state is CaseState.COMPLETED:
        assert Kind.RESULT in accepted
    late = T0 + timedelta(days=11)
    assert case.overdue(late) == (urgent and case.confirmed_at is None)
    if urgent and Kind.CONFIRM in accepted:
        assert case.confirmed_at is not None
    assert case.partially_refused == (Kind.PARTIAL_REFUSAL in accepted)


def test_reference_periods_are_the_reference_agreements() -> None:
    assert REFERENCE_PERIODS.confirmation_window == timedelta(days=3)
    # Never shorter than any 6 calendar months, or any 5 years (art. 13).
    assert REFERENCE_PERIODS.termination_notice >= timedelta(days=184)
    assert REFERENCE_PERIODS.survival_period >= timedelta(days=5 * 365 + 2)
