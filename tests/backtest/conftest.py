"""A real Prometheus 2.42 holding a recorded incident, backfilled with promtool
(the history and policy of `bench.backtest_planner`, at 200 req/s).

The history is exact (no noise, see `bench.history.RecordedTraffic`) and small:
one sample a minute, twelve series, four hours. The candidate serves half of
every cohort's requests throughout. For two hours it is as good as the baseline;
at `Recorded.incident` its refusals in the non-english cohort rise from 5 % to
7 %, exactly the policy's `maxIncrease: 0.02`, and stay there for two hours.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.backtest_planner import POLICY, SHARES, record_incident
from bench.history import HistoryServer, backfill

#: the model's requests per second: a FAIL at the limit takes minutes, so a look's
#: granularity is what the comparison with the planner measures (docs/backtest.md)
RPS = 200.0


@dataclass(frozen=True)
class Recorded:
    """The server and the instants of the history it holds."""

    server: HistoryServer
    start: datetime
    incident: datetime
    end: datetime

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="package")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    work: Path = tmp_path_factory.mktemp("history")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    traffic, times = record_incident(start, RPS)
    backfill(traffic.history, work / "data")
    server = HistoryServer(work, work / "data")
    try:
        yield Recorded(server, times.start, times.rise, times.end)
    finally:
        server.stop()


__all__ = ["POLICY", "RPS", "SHARES", "Recorded"]
