"""The replay against a real Prometheus holding a recorded incident (see conftest)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bench.backtest_planner import planned_traffic
from bench.history import HistoryServer, RecordedTraffic, backfill
from controller.analysis.rollout_plan import plan_rollout
from controller.engine.phases import Phase
from controller.engine.state import EventKind
from controller.metrics.base import MetricsUnreachableError
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import Cause, ModelRollout, load_text
from controller.runtime.backtest import (
    BacktestRangeError,
    NoRecordedDataError,
    check_range,
    check_recorded,
    replay,
)
from tests.backtest.conftest import POLICY, RPS, SHARES, Recorded


def _rollout(text: str = POLICY) -> ModelRollout:
    [loaded] = load_text(text, "<test policy>")
    return loaded.rollout


def test_the_first_fail_comes_when_the_planner_says(recorded: Recorded) -> None:
    """A cohort's refusals rise exactly to the limit at a known time: replayed from
    then, the rollout rolls back within two looks of the planner's median time for a
    candidate at the limit in that cell."""
    rollout = _rollout()
    interval = rollout.spec.analysis.interval
    plan = plan_rollout(rollout.spec, planned_traffic(RPS))
    [cell] = [c for c in plan.cells if (c.cohort, c.metric) == ("non-english", "refusal-rate")]
    predicted = recorded.incident + timedelta(minutes=cell.at_limit[0])

    result = replay(rollout, PrometheusProvider(recorded.url), recorded.incident, recorded.end)

    assert result.first_fail is not None
    assert abs(result.first_fail.at - predicted) <= 2 * interval, (result.first_fail.at, predicted)
    [failed] = result.first_fail.cells
    assert (failed.metric, failed.cohort, failed.breaker) == ("refusal-rate", "non-english", False)
    assert failed.baseline == pytest.approx(0.05, abs=0.001)
    assert failed.candidate == pytest.approx(0.07, abs=0.001)
    assert failed.candidate_samples == failed.baseline_samples  # half the traffic each
    assert 'llm_refusals_total{namespace="llm",model="bot",version="v2"}' in failed.query
    assert result.outcome is Phase.ROLLED_BACK
    assert result.last == result.first_fail.at  # a FAIL rolls back on the look that sees it
    last = result.decisions[-1]
    assert (last.event, last.cause, last.weight) == (EventKind.ROLLED_BACK, Cause.LIMIT_BROKEN, 0)
    assert result.looks == result.first_fail.look


def test_a_healthy_range_promotes_when_the_planner_says(recorded: Recorded) -> None:
    rollout = _rollout()
    interval = rollout.spec.analysis.interval
    plan = plan_rollout(rollout.spec, planned_traffic(RPS))

    result = replay(rollout, PrometheusProvider(recorded.url), recorded.start, recorded.incident)

    assert result.first_fail is None
    assert result.outcome is Phase.PROMOTED
    events = [(d.event, d.step, d.weight) for d in result.decisions]
    assert events[0] == (EventKind.STARTED, 0, 50)
    assert events[-2:] == [(EventKind.STEP_ADVANCED, 1, 100), (EventKind.PROMOTED, 1, 100)]
    promoted = result.decisions[-1].at
    expected = recorded.start + timedelta(minutes=plan.promotion[0])
    assert abs(promoted - expected) <= 2 * interval, (promoted, expected)


def test_the_same_policy_over_a_range_ending_early_is_left_undecided(recorded: Recorded) -> None:
    """A range that ends before the rollout does says where it stood."""
    rollout = _rollout()
    end = recorded.incident + timedelta(minutes=3)
    result = replay(rollout, PrometheusProvider(recorded.url), recorded.incident, end)
    assert result.outcome is Phase.PROGRESSING
    assert result.looks == 3 and result.last == end
    assert result.first_fail is None


def test_a_range_without_recorded_requests_is_named(recorded: Recorded) -> None:
    rollout = _rollout()
    before = recorded.start - timedelta(hours=3)
    with pytest.raises(NoRecordedDataError, match="no requests of bot v1 or v2 in namespace llm"):
        check_recorded(
            rollout, PrometheusProvider(recorded.url), before, before + timedelta(hours=2)
        )
    check_recorded(rollout, PrometheusProvider(recorded.url), recorded.start, recorded.incident)


@pytest.mark.parametrize(
    ("days", "force", "error"),
    [
        pytest.param(30, False, None, id="30-days"),
        pytest.param(31, False, "more than 30 days; pass --force", id="31-days"),
        pytest.param(31, True, None, id="31-days-forced"),
        pytest.param(0, False, "must be after --from", id="empty"),
    ],
)
def test_the_range_is_checked(
    recorded: Recorded, days: int, force: bool, error: str | None
) -> None:
    start = recorded.start
    if error is None:
        check_range(start, start + timedelta(days=days), force=force)
    else:
        with pytest.raises(BacktestRangeError, match=error):
            check_range(start, start + timedelta(days=days), force=force)


def test_prometheus_going_away_stops_the_replay(tmp_path: Path, recorded: Recorded) -> None:
    """A query that cannot be answered is not a look without data: the replay stops."""
    start = recorded.start
    traffic = RecordedTraffic("bot", "llm", "v1", "v2", SHARES, RPS, start)
    traffic.record(start + timedelta(minutes=30), weight=0.5)
    backfill(traffic.history, tmp_path / "data")
    server = HistoryServer(tmp_path, tmp_path / "data")
    stop_at = start + timedelta(minutes=3)

    def stop_the_server(at: object) -> None:
        if at == stop_at:
            server.stop()

    try:
        with pytest.raises(MetricsUnreachableError, match=r"is unreachable.*at the look of"):
            replay(
                _rollout(),
                PrometheusProvider(server.url, timeout_seconds=2),
                start,
                start + timedelta(minutes=30),
                progress=stop_the_server,
            )
    finally:
        server.stop()
