"""Durations are written back the way a policy writes them, and read back the same."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.policy.durations import MAX_DURATION, format_duration, parse_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (45, "45s"),
        (90, "1m30s"),
        (600, "10m"),
        (3600, "1h"),
        (5400, "1h30m"),
        (7200, "2h"),
        (7245, "2h45s"),
        (86400, "24h"),
    ],
)
def test_a_duration_is_written_as_a_policy_writes_it(seconds: float, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@pytest.mark.parametrize("text", ["10m", "1h30m", "45s", "2h", "1m30s", "500ms", "2h45s"])
def test_the_shortest_spelling_reads_back_as_itself(text: str) -> None:
    assert format_duration(parse_duration(text)) == text


@given(st.integers(min_value=0, max_value=int(MAX_DURATION.total_seconds())))
def test_every_whole_number_of_seconds_round_trips(seconds: int) -> None:
    duration = timedelta(seconds=seconds)
    assert parse_duration(format_duration(duration)) == duration
