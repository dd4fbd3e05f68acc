"""The demo's incident, recorded in a real Prometheus and backtested, is decided as the
demo decided it live: the same look, the same reason, the same numbers (docs/policy.md
shows this backtest)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.backtest_demo import record_demo_incident
from bench.history import HistoryServer, backfill
from controller.demo import demo_rollout, run_demo
from controller.engine.phases import Phase
from controller.engine.state import EventKind
from controller.metrics.prometheus import PrometheusProvider
from controller.runtime.backtest import replay
from controller.scenarios import Scenario


def test_the_demos_incident_is_caught_at_the_same_look(tmp_path: Path) -> None:
    live = run_demo(Scenario.COHORT_REGRESSION, tmp_path / "demo.db")
    [rolled_back] = [m for m in live.messages if m.event is EventKind.ROLLED_BACK]

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    backfill(record_demo_incident(start, timedelta(minutes=10)), tmp_path / "data")
    server = HistoryServer(tmp_path, tmp_path / "data")
    try:
        result = replay(
            demo_rollout(), PrometheusProvider(server.url), start, start + timedelta(minutes=10)
        )
    finally:
        server.stop()

    assert live.phase is result.outcome is Phase.ROLLED_BACK
    assert result.last - start == live.simulated
    assert result.decisions[-1].reason == rolled_back.text
    assert result.first_fail is not None
    assert [(c.metric, c.cohort) for c in result.first_fail.cells] == [
        (f.metric, f.cohort) for f in live.failures
    ]
