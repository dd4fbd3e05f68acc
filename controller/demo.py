"""`canaryctl demo`: the whole product on embedded defaults, on an accelerated clock.

Nothing is scripted: the real engine and the real judge run a real policy
(DESIGN.md's support-bot rollout), the in-memory router carries the weights, and
a seeded traffic simulator serves baseline and candidate per cohort, read back
through the same counts Prometheus would return. The audit goes to a SQLite file
that `canaryctl history` and `status` read afterwards.

Scenarios:
- `cohort-regression`: fine overall (within the 2-point margin), but non-English
  users are refused twice as often by the candidate; the judge catches that
  cohort while the candidate only sees mirrored traffic, and rolls back before
  any user is served by it;
- `healthy`: the candidate is as good as the baseline and is promoted;
- `outage`: Prometheus goes silent at the second step; the rollout holds, then
  follows the policy's noData rule.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from controller.engine.executor import Executor, TickResult
from controller.engine.phases import Phase
from controller.engine.state import Notify
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.policy import ModelRollout, load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.observer import JudgingObserver
from controller.store.sql import SqlStore, migrate

DEMO_POLICY = """\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {name: support-bot-v7, namespace: llm}
spec:
  model: support-bot
  baseline:  {version: v6, service: support-bot-v6}
  candidate: {version: v7, service: support-bot-v7}
  owners: {slack: {channel: "#support-bot", mention: ["U024BE7LH"]}}
  traffic: {router: gateway-api, route: support-bot}
  cohorts:
    - {name: non-english, match: {header: accept-language, regex: "^(de|fr|es|ja|zh)"}}
    - {name: mobile,      match: {header: x-client, value: mobile}}
    - {name: power-users, match: {header: x-user-tier, value: power}}
  shadow: {mirrorPercent: 100, duration: 30m}
  steps:
    - {weight: 1, hold: 10m, cohortWeights: {non-english: 5, power-users: 5}}
    - {weight: 5, hold: 15m}
    - {weight: 20, hold: 30m}
    - {weight: 50, hold: 30m}
    - {weight: 100}
  analysis:
    interval: 30s
    window: 5m
    confidence: 0.95
    minSamples: 200
    noData: {action: hold, timeout: 10m, then: rollback}
    metrics:
      - {template: refusal-rate,  maxIncrease: 0.02, max: 0.10}
      - {template: quality-score, maxDecrease: 0.03}
      - {template: latency-p95,   maxRatio: 1.25, max: 2.5s}
      - {template: error-rate,    max: 0.01}
"""

#: requests per second reaching the model; the cohorts split them
RPS = 60.0
#: a rollout never takes longer than this in simulated time
MAX_SIMULATED = timedelta(hours=6)


class Scenario(StrEnum):
    COHORT_REGRESSION = "cohort-regression"
    HEALTHY = "healthy"
    OUTAGE = "outage"


def _cohorts(scenario: Scenario) -> list[CohortTraffic]:
    v6, v7 = "v6", "v7"
    same = Behaviour()
    non_english_v7 = (
        Behaviour(refusal_rate=0.10) if scenario is Scenario.COHORT_REGRESSION else same
    )
    return [
        CohortTraffic("non-english", 0.20, {v6: same, v7: non_english_v7}),
        CohortTraffic(
            "mobile", 0.30, {v6: Behaviour(latency_median=0.8), v7: Behaviour(latency_median=0.8)}
        ),
        CohortTraffic(
            "power-users",
            0.10,
            {v6: Behaviour(quality=(9.0, 2.0)), v7: Behaviour(quality=(9.0, 2.0))},
        ),
        CohortTraffic("other", 0.40, {v6: same, v7: same}),
    ]


@dataclass
class DemoClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True)
class Failure:
    metric: str
    cohort: str
    baseline: float | None
    candidate: float | None


@dataclass
class DemoResult:
    scenario: Scenario
    phase: Phase
    steps_completed: int
    failures: list[Failure] = field(default_factory=list)
    database: str = ""
    key: str = ""
    simulated: timedelta = timedelta(0)
    messages: list[Notify] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": str(self.scenario),
            "phase": str(self.phase),
            "steps_completed": self.steps_completed,
            "failures": [
                {
                    "metric": f.metric,
                    "cohort": f.cohort,
                    "baseline": f.baseline,
                    "candidate": f.candidate,
                }
                for f in self.failures
            ],
            "database": self.database,
        }


Progress = Callable[[TickResult, timedelta], None]


def demo_rollout() -> ModelRollout:
    [loaded] = load_text(DEMO_POLICY, "<demo policy>")
    return loaded.rollout


def run_demo(
    scenario: Scenario,
    database: Path,
    *,
    seed: int = 7,
    progress: Progress | None = None,
    pace: float = 0.0,
) -> DemoResult:
    """Run one rollout to its end on simulated time; the audit goes to `database` (recreated)."""
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    migrate(url)
    store = SqlStore(url)
    rollout = demo_rollout()
    start = datetime.now(UTC).replace(microsecond=0)
    clock = DemoClock(start)
    simulator = TrafficSimulator(
        model=rollout.spec.model,
        baseline=rollout.spec.baseline.version,
        candidate=rollout.spec.candidate.version,
        cohorts=_cohorts(scenario),
        requests_per_second=RPS,
        start=start,
        seed=seed,
        scrape_interval=timedelta(seconds=15),
    )
    provider = SimulatedProvider(simulator)
    observer = JudgingObserver(provider)
    router = MemoryRouter(RouteTarget.of(rollout))
    executor = Executor(store, clock)
    interval = rollout.spec.analysis.interval
    result = DemoResult(scenario, Phase.PENDING, 0, database=str(database), key=rollout.key)
    try:
        for _ in range(int(MAX_SIMULATED / interval) + 2):
            route = router.observe()
            # The simulator splits requests and cannot copy them: shadow traffic (a
            # mirror) is approximated by an even split, so both versions are measured.
            share = route.weight or min(route.mirror_percent, 50)
            simulator.set_weights(share, dict(route.cohorts))
            simulator.advance_to(clock.now())
            if scenario is Scenario.OUTAGE:
                provider.down = _in_outage(result.steps_completed, route.weight)
            tick = executor.tick(rollout, router, observer)
            state = tick.decision.state
            result.phase = state.phase
            result.steps_completed = _steps_completed(state.phase, state.step)
            result.simulated = clock.now() - start
            result.messages.extend(a for a in tick.decision.actions if isinstance(a, Notify))
            if progress is not None:
                progress(tick, result.simulated)
            if state.phase.terminal or result.simulated >= MAX_SIMULATED:
                if state.phase is Phase.ROLLED_BACK:
                    result.failures = _failures(store, rollout.key)
                break
            clock.at += interval
            if pace:
                time.sleep(pace)
    finally:
        store.close()
    return result


def _in_outage(steps_completed: int, weight: int) -> bool:
    """Prometheus goes silent once the rollout has reached its second step (5%)."""
    return steps_completed >= 1 and weight >= 5


def _steps_completed(phase: Phase, step: int) -> int:
    if phase is Phase.PROMOTED:
        return step + 1
    return max(step, 0)


def _failures(store: SqlStore, key: str) -> list[Failure]:
    rows = store.analyses(key)
    if not rows:
        return []
    last_tick = rows[-1].tick
    return [
        Failure(r.metric, r.cohort, r.baseline_value, r.candidate_value)
        for r in rows
        if r.tick == last_tick and r.verdict == "fail" and r.evidence.get("critical", True)
    ]
