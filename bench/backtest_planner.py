"""How a backtest's verdicts line up with what `canaryctl plan` predicts.

A noise-free incident (`bench.history.RecordedTraffic`): the candidate serves half of
every cohort's requests; for two hours it is as good as the baseline, then its
refusals in the non-english cohort (30 % of the traffic) rise from 5 % to 7 %,
exactly the policy's `maxIncrease: 0.02`, for two hours. For each request rate, the
history is backfilled into a Prometheus on a loopback port and replayed twice:
from the rise (first FAIL, against the planner's time for a candidate at the limit
in that cell) and over the healthy two hours (promotion, against the planner's).

    python -m bench.backtest_planner              # 20, 50, 100 and 200 req/s
    python -m bench.backtest_planner --rps 200

The tests (tests/backtest) use the same policy and history at 200 req/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.history import HistoryServer, RecordedTraffic, backfill
from controller.analysis.planning import format_minutes
from controller.analysis.rollout_plan import Traffic, plan_rollout
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import ModelRollout, load_text
from controller.runtime.backtest import Backtest, replay

SHARES = {"non-english": 0.3, "other": 0.7}
WEIGHT = 0.5
HEALTHY = timedelta(hours=2)
INCIDENT = timedelta(hours=2)

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


def policy() -> ModelRollout:
    [loaded] = load_text(POLICY, "<incident policy>")
    return loaded.rollout


def planned_traffic(rps: float) -> Traffic:
    """The traffic the planner is given: the recorded rate and the cohort's share."""
    return Traffic(rps, {"non-english": SHARES["non-english"]})


@dataclass(frozen=True)
class Incident:
    """When the recorded history starts, when the refusals rise, when it ends."""

    start: datetime
    rise: datetime
    end: datetime


def record_incident(start: datetime, rps: float) -> tuple[RecordedTraffic, Incident]:
    traffic = RecordedTraffic("bot", "llm", "v1", "v2", SHARES, rps, start)
    rise = start + HEALTHY
    traffic.record(rise, weight=WEIGHT)
    traffic.record(rise + INCIDENT, weight=WEIGHT, candidate_refusals={"non-english": 0.07})
    return traffic, Incident(start, rise, rise + INCIDENT)


def _minutes(result: Backtest, at: datetime | None) -> str:
    return format_minutes(result.minutes(at)) if at is not None else "never"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, action="append", help="request rates to run")
    args = parser.parse_args()
    rollout = policy()
    print(
        "| req/s | planner: at the limit, FAIL (median / p80) | backtest: first FAIL "
        "| planner: promotion (median / p80) | backtest: promoted | replays took |"
    )
    print("|---|---|---|---|---|---|")
    for rps in args.rps or [20.0, 50.0, 100.0, 200.0]:
        plan = plan_rollout(rollout.spec, planned_traffic(rps))
        [cell] = [c for c in plan.cells if (c.cohort, c.metric) == ("non-english", "refusal-rate")]
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
        traffic, incident = record_incident(start, rps)
        with tempfile.TemporaryDirectory() as work:
            root = Path(work)
            backfill(traffic.history, root / "data")
            server = HistoryServer(root, root / "data")
            try:
                source = PrometheusProvider(server.url)
                began = time.perf_counter()
                failing = replay(rollout, source, incident.rise, incident.end)
                healthy = replay(rollout, source, incident.start, incident.rise)
                took = time.perf_counter() - began
            finally:
                server.stop()
        fail_at = failing.first_fail.at if failing.first_fail else None
        promoted = healthy.last if str(healthy.outcome) == "Promoted" else None
        print(
            f"| {rps:g} | {cell.at_limit[0]:.1f} / {cell.at_limit[1]:.1f} min "
            f"| {_minutes(failing, fail_at)} ({failing.outcome}) "
            f"| {plan.promotion[0]:.1f} / {plan.promotion[1]:.1f} min "
            f"| {_minutes(healthy, promoted)} ({healthy.outcome}) | {took:.1f}s |"
        )


if __name__ == "__main__":
    main()
