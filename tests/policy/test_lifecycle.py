"""The agreement's lifecycle (art. 13), with an injected clock: no waiting six months."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from accord.policy.lifecycle import AgreementPhase, AgreementTerminated, Lifecycle
from accord.policy.workflow import REFERENCE_PERIODS, AgreementPeriods

T0 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
PEER = "Росгвардия"


def test_art_13_1_in_force_without_a_received_notice() -> None:
    life = Lifecycle.from_notices(PEER, [None])  # sent, not yet received
    assert life.phase(T0 + timedelta(days=10_000)) is AgreementPhase.IN_FORCE
    life.check_new_request(T0 + timedelta(days=10_000))


def test_art_13_1_new_requests_accepted_until_the_notice_period_runs_out() -> None:
    life = Lifecycle.from_notices(PEER, [T0])
    end = T0 + REFERENCE_PERIODS.termination_notice
    assert life.phase(T0) is AgreementPhase.NOTICE_GIVEN
    life.check_new_request(end - timedelta(seconds=1))
    assert life.phase(end) is AgreementPhase.TERMINATED
    with pytest.raises(AgreementTerminated, match=r"art\. 13\.1"):
        life.check_new_request(end)


def test_art_13_2_article_7_duties_survive_for_the_survival_period() -> None:
    periods = AgreementPeriods(timedelta(days=3), timedelta(days=30), timedelta(days=60))
    life = Lifecycle.from_notices(PEER, [T0], periods)
    assert life.article7_in_force(T0 + timedelta(days=30))
    assert life.article7_in_force(T0 + timedelta(days=90) - timedelta(seconds=1))
    assert not life.article7_in_force(T0 + timedelta(days=90))
    assert life.phase(T0 + timedelta(days=90)) is AgreementPhase.EXPIRED
    assert life.to_dict(T0)["accepts_new_requests"] is True


def test_attack_second_notice_does_not_restart_the_period() -> None:
    life = Lifecycle.from_notices(PEER, [T0 + timedelta(days=100), T0, None])
    assert life.notice_received == T0
