"""The authority rules (policy/authority.py) on their own: who may change a marking or
consent, and which marking governs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accord.policy import DEFAULT_SCHEME, Marking
from accord.policy.admission import AdmissionRefused, admit
from accord.policy.authority import (
    Action,
    AllOf,
    AuthorityRequest,
    PolicyDenied,
    authority_policy,
    governing,
    is_downgrade,
    stricter,
)

A, B = "МВД-РБ", "Росгвардия"
CONF = Marking("CONFIDENTIAL", ("ORCON",))
OFFICIAL = Marking("OFFICIAL")
T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _check(action: Action, **changes: object) -> None:
    values: dict[str, object] = {
        "action": action, "party": A, "originator": A, "current": CONF,
        "clearance": "CONFIDENTIAL", "signatories": frozenset({"k1"}),
    }  # fmt: skip
    values.update(changes)
    downgrade = int(values.pop("downgrade", 1))  # type: ignore[call-overload]
    authority_policy(
        action, DEFAULT_SCHEME, signatory_required=True, downgrade_signatories=downgrade
    ).check(AuthorityRequest(**values))  # type: ignore[arg-type]


def test_operator_cleared_below_the_current_marking_may_not_downgrade() -> None:
    """Attack 1: the new marking is within the user's clearance, the current one is not."""
    with pytest.raises(PolicyDenied, match="current marking CONFIDENTIAL"):
        _check(Action.REMARK, new=OFFICIAL, clearance="OFFICIAL")


def test_consent_by_a_person_who_may_not_read_the_message_is_denied() -> None:
    """Attack 2."""
    with pytest.raises(PolicyDenied, match="current marking"):
        _check(Action.CONSENT, clearance="OFFICIAL")


def test_unknown_clearance_is_denied_not_an_error() -> None:
    with pytest.raises(PolicyDenied):
        _check(Action.CONSENT, clearance="SECRET")


def test_only_the_originator_acts() -> None:
    with pytest.raises(PolicyDenied, match="only the originator"):
        _check(Action.REMARK, new=OFFICIAL, party=B)
    with pytest.raises(PolicyDenied, match="needs no consent"):
        _check(Action.REQUEST, party=A)
    _check(Action.REQUEST, party=B)


def test_signatory_required_for_consent_and_remark_not_for_revocation() -> None:
    for action in (Action.CONSENT, Action.REMARK):
        with pytest.raises(PolicyDenied, match="requires a signatory"):
            _check(action, new=OFFICIAL, signatories=frozenset())
    _check(Action.REVOKE, signatories=frozenset())


def test_second_signatory_only_for_a_downgrade() -> None:
    with pytest.raises(PolicyDenied, match="2 different signatories"):
        _check(Action.REMARK, new=OFFICIAL, downgrade=2)
    _check(Action.REMARK, new=OFFICIAL, downgrade=2, signatories=frozenset({"k1", "k2"}))
    _check(Action.REMARK, new=Marking("CONFIDENTIAL", ("ORCON", "PURPOSE-BOUND")), downgrade=2)


def test_dropping_a_caveat_is_a_downgrade() -> None:
    assert is_downgrade(DEFAULT_SCHEME, CONF, Marking("CONFIDENTIAL"))
    assert not is_downgrade(DEFAULT_SCHEME, OFFICIAL, CONF)


def test_empty_all_of_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        AllOf([])


def test_governing_marking_follows_signed_order_and_column_only_restricts() -> None:
    later = (T0 + timedelta(hours=1), "m2", Marking("RESTRICTED"))
    earlier = (T0, "m1", OFFICIAL)
    assert governing(CONF, [later, earlier]) == Marking("RESTRICTED")
    assert governing(CONF, []) == CONF
    assert stricter(DEFAULT_SCHEME, OFFICIAL, CONF) == CONF
    assert stricter(DEFAULT_SCHEME, CONF, OFFICIAL) == CONF
    assert stricter(
        DEFAULT_SCHEME, Marking("RESTRICTED", ("ORCON",)), Marking("OFFICIAL", ("PURPOSE-BOUND",))
    ) == Marking("RESTRICTED", ("ORCON", "PURPOSE-BOUND"))


@pytest.mark.parametrize(
    ("message_type", "marking", "extensions", "complaint"),
    [
        ("notice", {"level": "SECRET", "caveats": []}, {}, r"art\. 7\.5"),
        ("notice", {"level": "secret"}, {}, r"art\. 7\.5"),
        ("notice", {"level": "ДСП"}, {}, "unknown marking level"),
        ("notice", {"level": "OFFICIAL", "caveats": ["NOFORN"]}, {}, "unknown caveat"),
        ("notice", {"level": "OFFICIAL", "caveats": ["ORCON", "ORCON"]}, {}, "twice"),
        ("notice", {"level": "OFFICIAL", "releasable": "all"}, {}, "does not define"),
        ("ultimatum", {"level": "OFFICIAL"}, {}, "unknown message type"),
        ("notice", {"level": "OFFICIAL"}, {"override": True}, "unknown statement extension"),
    ],
)
def test_admission_refuses_what_the_profile_does_not_allow(
    message_type: str, marking: object, extensions: dict[str, object], complaint: str
) -> None:
    with pytest.raises(AdmissionRefused, match=complaint):
        admit(DEFAULT_SCHEME, message_type, marking, extensions)


def test_admission_accepts_the_profiles_own() -> None:
    marking = {"level": "CONFIDENTIAL", "caveats": ["ORCON"]}
    assert admit(DEFAULT_SCHEME, "remark", marking, {"remark": {}}) == CONF
