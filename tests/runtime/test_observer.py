"""What the engine is told about each cell: breaker, power, waiting for traffic, samples."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from enum import Enum

import pytest

from controller.analysis.observations import VersionData
from controller.analysis.verdicts import Arm, CellVerdict, Limit, NoDataReason, Verdict
from controller.demo import demo_rollout
from controller.engine.decide import decide, start
from controller.engine.phases import Phase
from controller.metrics.base import MetricsUnreachableError, QueryContext
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.policy import Cause, MetricSpec, RolloutSpec
from controller.runtime.observer import FORGET_AFTER, JudgingObserver, audit_record, engine_cell

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)


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


class Recording:
    """A provider that answers from a simulator and records the evaluation time of every query."""

    def __init__(self, inner: SimulatedProvider, *, fail_past: bool = False) -> None:
        self.inner = inner
        self.fail_past = fail_past
        self.asked: list[tuple[str, str, datetime]] = []
        self.now = T0

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        self.asked.append((metric.metric_name, version, context.end))
        if self.fail_past and context.end < self.now:
            raise MetricsUnreachableError("the snapshot timed out")
        return self.inner.fetch(metric, version, context)

    def ends(self) -> Counter[datetime]:
        return Counter(end for *_, end in self.asked)


def healthy_simulator(spec: RolloutSpec, *, rps: float = 50) -> TrafficSimulator:
    same = {spec.baseline.version: Behaviour(), spec.candidate.version: Behaviour()}
    simulator = TrafficSimulator(
        model=spec.model,
        baseline=spec.baseline.version,
        candidate=spec.candidate.version,
        cohorts=[CohortTraffic(c.name, 0.25, same) for c in spec.cohorts]
        + [CohortTraffic("other", 0.25, same)],
        requests_per_second=rps,
        start=T0,
        seed=5,
    )
    simulator.set_weights(20)
    return simulator


def test_the_counts_at_each_step_start_are_asked_for_once_at_that_time() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = healthy_simulator(spec)
    provider = Recording(SimulatedProvider(simulator))
    observer = JudgingObserver(provider)
    starts = (T0 + 30 * MINUTE, T0 + 40 * MINUTE)
    state = start(spec, 1, T0).evolve(
        phase=Phase.PROGRESSING, step=2, step_since=starts[1], step_starts=starts
    )
    looks = [T0 + 50 * MINUTE, T0 + 51 * MINUTE, T0 + 52 * MINUTE]
    for now in looks:
        simulator.advance_to(now)
        observer.observe(rollout, state, now)
    queries = 2 * len(spec.analysis.metrics)  # both versions of every metric
    assert provider.ends() == dict.fromkeys((*starts, *looks), queries)
    # a restarted analysis has other counts at other starts: asked for afresh
    provider.asked.clear()
    restarted = state.evolve(analysis_since=T0 + 35 * MINUTE, step_starts=(starts[1],))
    observer.observe(rollout, restarted, looks[-1])
    assert provider.ends() == {starts[1]: queries, looks[-1]: queries}


def test_the_judge_compares_step_by_step_with_the_snapshots() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = healthy_simulator(spec, rps=20)
    starts = (T0 + 30 * MINUTE,)
    state = start(spec, 1, T0).evolve(phase=Phase.PROGRESSING, step=1, step_starts=starts)
    now = T0 + 50 * MINUTE
    simulator.advance_to(now)
    observer = JudgingObserver(SimulatedProvider(simulator))
    observer.observe(rollout, state, now)
    stepped = observer.last[rollout.key]
    observer.observe(rollout, state.evolve(step_starts=()), now)
    cumulative = observer.last[rollout.key]
    # same counts, split at the step start: the statistics differ, the cells are the same
    assert [(c.metric, c.cohort) for c in stepped.cells] == [
        (c.metric, c.cohort) for c in cumulative.cells
    ]
    assert [c.checks for c in stepped.cells] != [c.checks for c in cumulative.cells]


def test_a_failed_snapshot_falls_back_to_cumulative_counts_and_is_asked_for_again() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = healthy_simulator(spec, rps=20)
    now = T0 + 50 * MINUTE
    simulator.advance_to(now)
    state = start(spec, 1, T0).evolve(phase=Phase.PROGRESSING, step=1)
    plain = JudgingObserver(SimulatedProvider(simulator))
    plain.observe(rollout, state, now)
    provider = Recording(SimulatedProvider(simulator), fail_past=True)
    provider.now = now
    failing = JudgingObserver(provider)
    stepped = state.evolve(step_starts=(T0 + 30 * MINUTE,))
    for _ in range(2):
        failing.observe(rollout, stepped, now)
    assert failing.last[rollout.key].cells == plain.last[rollout.key].cells
    # the candidate only (unreachable: the baseline is not waited for), at both looks
    assert provider.ends()[T0 + 30 * MINUTE] == 2 * len(spec.analysis.metrics)


def test_snapshots_are_dropped_when_a_rollout_ends_or_is_not_seen() -> None:
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = healthy_simulator(spec, rps=5)
    simulator.advance_to(T0 + 3 * HOUR)
    observer = JudgingObserver(SimulatedProvider(simulator))
    state = start(spec, 1, T0).evolve(
        phase=Phase.PROGRESSING, step=1, step_starts=(T0 + 30 * MINUTE,)
    )
    observer.observe(rollout, state, T0 + 40 * MINUTE)
    assert len(observer._snapshots) == 1
    observer.observe(rollout, state.evolve(phase=Phase.PROMOTED), T0 + 41 * MINUTE)
    assert observer._snapshots == {}
    observer.observe(rollout, state, T0 + 42 * MINUTE)
    other = rollout.model_copy(
        update={"metadata": rollout.metadata.model_copy(update={"name": "another"})}
    )
    observer.observe(other, state, T0 + 42 * MINUTE + FORGET_AFTER + MINUTE)
    assert list(observer._snapshots) == [other.key]


def test_a_snapshot_past_forget_after_is_asked_for_again_between_sweeps() -> None:
    # The others' snapshots are swept once a minute at most; a rollout's own is
    # checked at its look, so a stale one is never used even right after a sweep.
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = healthy_simulator(spec, rps=5)
    simulator.advance_to(T0 + 3 * HOUR)
    provider = Recording(SimulatedProvider(simulator))
    observer = JudgingObserver(provider)
    step = T0 + 30 * MINUTE
    state = start(spec, 1, T0).evolve(phase=Phase.PROGRESSING, step=1, step_starts=(step,))
    other = rollout.model_copy(
        update={"metadata": rollout.metadata.model_copy(update={"name": "another"})}
    )
    first = T0 + 40 * MINUTE
    observer.observe(rollout, state, first)
    observer.observe(other, state, first + FORGET_AFTER)  # a sweep: not stale yet
    assert set(observer._snapshots) == {rollout.key, other.key}
    observer.observe(rollout, state, first + FORGET_AFTER + MINUTE / 2)  # no sweep
    assert provider.ends()[step] == 3 * 2 * len(spec.analysis.metrics)


def _as_before(value: object) -> object:
    """The audit's JSON of a check as it was written before: `dataclasses.asdict`, then
    enums as values and non-finite floats as None."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _as_before(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_before(v) for v in value]
    return value


def test_the_audit_writes_each_check_as_asdict_did() -> None:
    """The checks go into the audit without `dataclasses.asdict`'s deep copy; what is
    written is the same, key for key, for the cells of a real look at a failing and a
    healthy cohort (every kind of limit of the demo, enums, infinities)."""
    rollout = demo_rollout()
    spec = rollout.spec
    simulator = TrafficSimulator(
        model=spec.model,
        baseline=spec.baseline.version,
        candidate=spec.candidate.version,
        cohorts=[
            CohortTraffic("healthy", 0.5, {}),
            CohortTraffic(
                "worse",
                0.5,
                {spec.candidate.version: Behaviour(error_rate=0.02, refusal_rate=0.2)},
            ),
        ],
        requests_per_second=50,
        start=T0,
        seed=5,
    )
    simulator.set_weights(50)
    observer = JudgingObserver(SimulatedProvider(simulator))
    state = decide(spec, start(spec, 1, T0), None, [], T0).state
    checks = 0
    for minutes in (1, 5, 20):
        now = T0 + timedelta(minutes=minutes)
        simulator.advance_to(now)
        observation = observer.observe(rollout, state, now)
        for cell, record in zip(observation.verdicts, observation.records, strict=True):
            expected = [_as_before(dataclasses.asdict(check)) for check in cell.checks]
            assert record.evidence["checks"] == expected
            checks += len(expected)
    assert checks > 0
