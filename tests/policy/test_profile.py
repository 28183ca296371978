"""The agreement profile: parsing, typed periods, the digest both nodes compare, and the
markings of both shipped schemes (agreement art. 4.2, 7.1, 7.5, 9, 10, 13)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from accord.policy import (
    DEFAULT_PROFILE_PATH,
    MarkingError,
    Profile,
    ProfileError,
    default_profile,
    load_profile,
)

TLP_PATH = DEFAULT_PROFILE_PATH.parent / "tlp.toml"


def test_reference_profile_names_the_parties_and_their_subdivisions() -> None:
    """Art. 10: the designated coordinating subdivisions of each Party; art. 9: Russian."""
    profile = default_profile()
    assert [p.id for p in profile.parties] == ["МВД-РБ", "Росгвардия"]
    assert profile.party("МВД-РБ").subdivisions[0].startswith("Департамент международного")
    assert profile.party("Росгвардия").subdivisions == (
        "Главное организационное управление Росгвардии",
    )
    assert profile.working_language == "ru"
    with pytest.raises(ProfileError, match="not a Party"):
        profile.party("Прокуратура")


def test_reference_periods_are_the_agreements() -> None:
    """Art. 4.2 (3 days), art. 13.1 (6 months), art. 13.2 (5 years), as timedeltas."""
    profile = default_profile()
    assert profile.confirmation_window == timedelta(days=3)
    assert profile.termination_notice == timedelta(days=183)
    assert profile.survival_period == timedelta(days=1826)


def test_calendar_periods_are_exact_when_applied_to_a_date() -> None:
    profile = default_profile()
    notice = datetime(2026, 8, 31, 9, 0, tzinfo=UTC)
    assert profile.termination.after(notice) == datetime(2027, 2, 28, 9, 0, tzinfo=UTC)
    assert profile.survival.after(datetime(2028, 2, 29, tzinfo=UTC)) == datetime(
        2033, 2, 28, tzinfo=UTC
    )
    assert profile.confirmation.after(notice) == datetime(2026, 9, 3, 9, 0, tzinfo=UTC)


def test_ceiling_refuses_state_secrets_with_a_clear_error() -> None:
    """Art. 7.5: state secrets go through the separate agreements, never this gateway."""
    scheme = default_profile().scheme
    assert default_profile().ceiling == "SECRET"
    with pytest.raises(MarkingError, match=r"art\. 7\.5"):
        scheme.parse_for_sending({"level": "SECRET", "caveats": []})
    with pytest.raises(MarkingError, match=r"art\. 7\.5"):
        scheme.parse_for_sending({"level": "top secret", "caveats": []})
    marking = scheme.parse_for_sending({"level": "CONFIDENTIAL", "caveats": ["ORCON"]})
    assert marking.level == "CONFIDENTIAL"


def test_tlp_profile_orders_its_levels_and_still_refuses_state_secrets() -> None:
    tlp = load_profile(TLP_PATH)
    scheme = tlp.scheme
    amber = scheme.parse({"level": "TLP:AMBER", "caveats": []})
    assert scheme.may_read("TLP:RED", amber)
    assert not scheme.may_read("TLP:GREEN", amber)
    with pytest.raises(MarkingError, match="TLP:CLEAR"):
        scheme.parse({"level": "CONFIDENTIAL", "caveats": []})
    with pytest.raises(MarkingError, match=r"art\. 7\.5"):
        scheme.parse_for_sending({"level": "SECRET"})
    assert tlp.digest != default_profile().digest


def test_label_model_is_stanag_4774_shaped() -> None:
    profile = default_profile()
    marking = profile.scheme.parse({"level": "RESTRICTED", "caveats": ["ORCON"]})
    created = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    label = profile.label.label(marking, originator="МВД-РБ", created=created).to_dict()
    assert label == {
        "policy_identifier": "urn:accord:policy:reference-2020",
        "classification": "RESTRICTED",
        "privacy_mark": "ДЛЯ СЛУЖЕБНОГО ПОЛЬЗОВАНИЯ",
        "categories": [{"type": "restrictive", "tag_name": "ORCON"}],
        "originator_id": "МВД-РБ",
        "creation_datetime": "2026-11-25T12:00:00+00:00",
    }


def test_digest_ignores_layout_but_not_content(tmp_path: Path) -> None:
    text = DEFAULT_PROFILE_PATH.read_text("utf-8")
    relaid = "# другой комментарий\n\n" + text.replace(" = ", "=")
    assert Profile.parse(relaid).digest == default_profile().digest
    changed = text.replace(
        "confirmation_window = { days = 3 }", "confirmation_window = { days = 5 }"
    )
    assert Profile.parse(changed).digest != default_profile().digest
    assert Profile.parse(changed).confirmation_window == timedelta(days=5)


@pytest.mark.parametrize(
    ("edit", "complaint"),
    [
        (("[profile]", "[profil]"), r"\[profile\]"),
        (("{ days = 3 }", "{ weeks = 3 }"), "unknown unit"),
        (("{ days = 3 }", "{ days = 0 }"), "longer than zero"),
        (('levels = ["OFFICIAL", ', 'levels = ["SECRET", "OFFICIAL", '), "both carried and"),
        (("signatory_required = true", 'signatory_required = "нет"'), "true or false"),
        (("downgrade_signatories = 1", "downgrade_signatories = 3"), "1 or 2"),
        (("downgrade_signatories = 1", "downgrade_signatories = 2\nquorum = 1"), "unknown key"),
        (('id = "Росгвардия"', 'id = "МВД-РБ"'), "once"),
    ],
)
def test_bad_profile_is_one_error_naming_the_field(edit: tuple[str, str], complaint: str) -> None:
    text = DEFAULT_PROFILE_PATH.read_text("utf-8").replace(*edit, 1)
    with pytest.raises(ProfileError, match=complaint):
        Profile.parse(text)


def test_missing_profile_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "нет.toml")
