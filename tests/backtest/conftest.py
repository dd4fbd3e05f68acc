"""A real Prometheus 2.42 holding a recorded incident, backfilled with promtool.

The history is exact (no noise, see `bench.history.RecordedTraffic`) and small:
one sample a minute, twelve series, three hours. The candidate serves half of
every cohort's requests throughout. For two hours it is as good as the baseline
(`HEALTHY`); at `INCIDENT` its refusals in the non-english cohort rise from 5 %
to 7 %, exactly the policy's `maxIncrease: 0.02`, and stay there for an hour.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.history import HistoryServer, RecordedTraffic, backfill

#: the model's requests per second, and each cohort's share of them
RPS = 200.0
SHARES = {"non-english": 0.3, "other": 0.7}
WEIGHT = 0.5

POLICY = """\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {name: bot-v2, namespace: llm}
spec:
  model: bot
  baseline: {version: v1, service: bot-v1}
  candidate: {version: v2, service: bot-v2}
  traffic: {router: gateway-api, route: bot}
  cohorts:
    - {name: non-english, match: {header: accept-language, regex: "^(de|fr)"}}
  steps:
    - {weight: 50, hold: 5m}
    - {weight: 100}
  analysis:
    interval: 1m
    window: 5m
    minSamples: 100
    deadline: 3h
    noData: {timeout: 10m, then: rollback}
    metrics:
      - {template: refusal-rate, maxIncrease: 0.02}
      - {template: error-rate, max: 0.01}
"""


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
    incident = start + timedelta(hours=2)
    end = incident + timedelta(hours=1)
    traffic = RecordedTraffic("bot", "llm", "v1", "v2", SHARES, RPS, start)
    traffic.record(incident, weight=WEIGHT)
    traffic.record(end, weight=WEIGHT, candidate_refusals={"non-english": 0.07})
    backfill(traffic.history, work / "data")
    server = HistoryServer(work, work / "data")
    try:
        yield Recorded(server, start, incident, end)
    finally:
        server.stop()
