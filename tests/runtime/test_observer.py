"""What the engine is told about each cell: breaker, power, waiting for traffic, samples."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Arm, CellVerdict, Limit, NoDataReason, Verdict
from controller.demo import demo_rollout
from controller.engine.decide import decide, start
from controller.engine.phases import Phase
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.policy import Cause
from controller.runtime.observer import JudgingObserver, audit_record, engine_cell

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)


def verdict(v: Verdict, **kw: object) -> CellVerdict:
    return CellVerdict("refusal-rate", "mobile", v, True, "why", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("judged", "seen", "breaker", "waiting"),
    [
        pytest.param(
            verdict(Verdict.FAIL, decided_by=Limit.BREAKER), Verdict.FAIL, True, False, id="breaker"
        ),
        pytest.param(
            verdict(Verdict.FAIL, decided_by=Limit.MAX_INCREASE),
            Verdict.FAIL,
            False,
            False,
            id="limit",
        ),
        pytest.param(
            verdict(Verdict.NO_DATA, no_data=NoDataReason.NO_CANDIDATE_TRAFFIC),
            Verdict.INCONCLUSIVE,
            False,
            True,
            id="no-candidate-requests-yet-is-not-missing-data",
        ),
        pytest.param(
            verdict(Verdict.NO_DATA, no_data=NoDataReason.QUERY_FAILED),
            Verdict.NO_DATA,
            False,
            False,
            id="a-failed-query-is-missing-data",
        ),
        pytest.param(
            verdict(Verdict.INCONCLUSIVE), Verdict.INCONCLUSIVE, False, True, id="below-minSamples"
        ),
    ],
)
def test_the_engine_is_told_what_decided_a_cell(
    judged: CellVerdict, seen: Verdict, breaker: bool, waiting: bool
) -> None:
    cell = engine_cell(judged)
    assert (cell.verdict, cell.breaker, cell.waiting_for_traffic) == (seen, breaker, waiting)


def test_power_and_the_samples_still_needed_reach_the_engine_and_the_audit() -> None:
    judged = verdict(
        Verdict.INCONCLUSIVE,
        candidate=Arm(0.8, 1000.0),
        powered=True,
        needed_samples=float("inf"),
    )
    cell = engine_cell(judged)
    assert (cell.powered, cell.candidate_samples, cell.needed_samples) == (True, 1000.0, None)
    evidence = audit_record(judged, 3, T0).evidence
    assert (evidence["powered"], evidence["neededSamples"]) == (True, None)
    judged = verdict(Verdict.INCONCLUSIVE, candidate=Arm(0.8, 10.0), needed_samples=1200.0)
    assert engine_cell(judged).needed_samples == 1200.0
    assert audit_record(judged, 3, T0).evidence["neededSamples"] == 1200.0


def test_a_gross_failure_is_rolled_back_as_the_circuit_breaker() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    broken = Behaviour(error_rate=0.5)
    simulator = TrafficSimulator(
        model=spec.model,
        baseline=spec.baseline.version,
        candidate=spec.candidate.version,
        cohorts=[
            CohortTraffic(
                "other", 1.0, {spec.baseline.version: Behaviour(), spec.candidate.version: broken}
            )
        ],
        requests_per_second=50,
        start=T0,
        seed=3,
    )
    simulator.set_weights(50)
    observer = JudgingObserver(SimulatedProvider(simulator))
    state = decide(spec, start(spec, 1, T0), None, [], T0).state  # shadowing
    now = T0
    for _ in range(10):
        now += timedelta(seconds=30)
        simulator.advance_to(now)
        d = decide(spec, state, observer.observe(rollout, state, now).look, [], now)
        state = d.state
        if state.phase.terminal:
            break
    assert (state.phase, state.cause) == (Phase.ROLLED_BACK, Cause.CIRCUIT_BREAKER)
    assert state.reason.startswith("circuit breaker tripped: error-rate in ")
    [transition] = d.transitions
    assert transition.cause is Cause.CIRCUIT_BREAKER
