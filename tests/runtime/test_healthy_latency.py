"""The demo world that rolled an unchanged candidate back for its latency, and no longer does.

The demo policy on simulated traffic (four cohorts of a quarter each, 60 req/s,
seed 5), both versions the simulator's default behaviour (latency log-normal,
median 1.0 s, p95 2.28 s, within `latency-p95`'s `max: 2.5s`). At the second
look the baseline's p95 in `mobile` read 2.54 s off its first requests, the
tolerance of `max: 2.5s` fell to 1.25 s, and the candidate was rolled back
with 3.08 % of its requests slower than 2.5 s (docs/judge.md, "Limit and
tolerance"; tests/analysis/test_baseline_beyond_limit.py has it as judge inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.demo import demo_rollout
from controller.engine.phases import Phase
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor
from controller.runtime.observer import JudgingObserver
from controller.store.memory import MemoryStore

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


def test_an_unchanged_candidate_survives_the_looks_that_once_rolled_it_back() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    same = {spec.baseline.version: Behaviour(), spec.candidate.version: Behaviour()}
    simulator = TrafficSimulator(
        model=spec.model,
        baseline=spec.baseline.version,
        candidate=spec.candidate.version,
        cohorts=[CohortTraffic(c.name, 0.25, same) for c in spec.cohorts]
        + [CohortTraffic("other", 0.25, same)],
        requests_per_second=60,
        start=T0,
        seed=5,
    )
    store, clock = MemoryStore(), Clock()
    executor = Executor(store, clock)
    router = MemoryRouter(RouteTarget.of(rollout))
    observer = JudgingObserver(SimulatedProvider(simulator))
    for _ in range(6):
        route = router.observe()
        simulator.set_weights(route.weight or min(route.mirror_percent, 50))
        simulator.advance_to(clock.at)
        state = executor.tick(rollout, router, observer).decision.state
        assert state.phase is Phase.SHADOWING, state.cause
        clock.at += timedelta(seconds=30)

    rows = [
        r for r in store.analyses(rollout.key) if (r.metric, r.cohort) == ("latency-p95", "mobile")
    ]
    # the look that rolled it back: the baseline's p95 read beyond the 2.5 s limit
    judged = [r for r in rows if r.baseline_value is not None and r.baseline_value > 2.5]
    assert judged, "the seeded world no longer reads the baseline beyond the limit"
    assert all(r.verdict != "fail" for r in rows)
