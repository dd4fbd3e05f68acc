"""`--from` / `--to` as `canaryctl backtest` reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from controller.cli.times import TimeFormatError, parse_time

NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("now", NOW, id="now"),
        pytest.param("now-90m", NOW - timedelta(minutes=90), id="minutes-ago"),
        pytest.param("now - 1h30m", NOW - timedelta(minutes=90), id="spaced"),
        pytest.param("now-40d", NOW - timedelta(days=40), id="beyond-30-days"),
        pytest.param("now-2w", NOW - timedelta(weeks=2), id="weeks"),
        pytest.param("2026-12-06T08:00:00Z", datetime(2026, 12, 6, 8, tzinfo=UTC), id="zulu"),
        pytest.param("2026-12-06T08:00", datetime(2026, 12, 6, 8, tzinfo=UTC), id="naive-is-utc"),
        pytest.param(
            "2026-12-06T09:00:00+01:00",
            datetime(2026, 12, 6, 9, tzinfo=timezone(timedelta(hours=1))),
            id="offset",
        ),
    ],
)
def test_times(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("yesterday", "is not a time; write ISO 8601", id="word"),
        pytest.param("now-2", "'2' is not a duration", id="no-unit"),
        pytest.param("now+1h", "is not a time", id="future"),
        pytest.param("2026-13-01", "is not a time", id="no-such-month"),
    ],
)
def test_not_times(text: str, message: str) -> None:
    with pytest.raises(TimeFormatError, match=message):
        parse_time(text, NOW)
