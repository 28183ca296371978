"""The one textual form of a time in signed statements (crypto/_wire.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accord.crypto._wire import format_time, parse_time

ZONES = [UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5))]


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=3)), timezone(-timedelta(hours=5))]
        ),
    )
)
def test_format_time_round_trips_at_whole_seconds_in_utc(moment: datetime) -> None:
    text = format_time(moment)
    assert text.endswith("Z") and len(text) == 20
    assert parse_time(text, "t") == moment.astimezone(UTC).replace(microsecond=0)


def test_format_time_pads_early_years_to_four_digits() -> None:
    assert format_time(datetime(987, 6, 5, 4, 3, 2, 1, tzinfo=UTC)) == "0987-06-05T04:03:02Z"


def test_format_time_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(datetime(2026, 11, 26, 12, 0, 0))
