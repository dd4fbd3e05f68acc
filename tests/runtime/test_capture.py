"""Which ticks record eval cases, and what a case holds when its trace IDs cannot be had.

The demo's simulator keeps the trace IDs of its bad requests (refusals, errors,
feedback events) as a model server's exemplars would; the real executor, judge
and recorder run on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.cases import CaseLimit, Direction, Trigger
from controller.demo import demo_rollout
from controller.engine.phases import Phase
from controller.engine.state import CommandKind
from controller.errors import TransientError
from controller.metrics.exemplars import TraceIds, TraceQuery
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.policy import Cause, ModelRollout
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.cases import ExemplarCaseRecorder
from controller.runtime.executor import Executor, TickResult
from controller.runtime.manual import submit
from controller.runtime.observer import JudgingObserver
from controller.store.memory import MemoryStore

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
#: both versions' latency well inside the demo policy's `max: 2.5s`
CALM = Behaviour(latency_median=0.6)


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


class World:
    """The demo policy on simulated traffic, ticked every 30 s by the real executor."""

    def __init__(
        self,
        *,
        traces: object = None,
        rollout: ModelRollout | None = None,
        **candidate: float,
    ) -> None:
        """`candidate`: how the candidate differs from the baseline (`Behaviour` fields)."""
        self.rollout = rollout or demo_rollout()
        spec = self.rollout.spec
        self.simulator = TrafficSimulator(
            model=spec.model,
            baseline=spec.baseline.version,
            candidate=spec.candidate.version,
            cohorts=[
                CohortTraffic(
                    c.name,
                    0.25,
                    {
                        spec.baseline.version: CALM,
                        spec.candidate.version: replace(CALM, **candidate),
                    },
                )
                for c in spec.cohorts
            ]
            + [
                CohortTraffic(
                    "other", 0.25, {spec.baseline.version: CALM, spec.candidate.version: CALM}
                )
            ],
            requests_per_second=60,
            start=T0,
            seed=5,
        )
        self.provider = SimulatedProvider(self.simulator)
        self.store = MemoryStore()
        self.clock = Clock()
        recorder = ExemplarCaseRecorder(traces or self.provider)  # type: ignore[arg-type]
        self.executor = Executor(self.store, self.clock, cases=recorder)
        self.router = MemoryRouter(RouteTarget.of(self.rollout))
        self.observer = JudgingObserver(self.provider)

    def tick(self) -> TickResult:
        route = self.router.observe()
        self.simulator.set_weights(route.weight or min(route.mirror_percent, 50))
        self.simulator.advance_to(self.clock.at)
        result = self.executor.tick(self.rollout, self.router, self.observer)
        self.clock.at += timedelta(seconds=30)
        return result

    def until_ended(self, ticks: int = 40) -> TickResult:
        for _ in range(ticks):
            result = self.tick()
            if result.decision.state.phase.terminal:
                return result
        raise AssertionError("the rollout did not end")


def test_a_circuit_breaker_rollback_records_the_limit_it_tripped_on() -> None:
    world = World(error_rate=0.5)
    ended = world.until_ended()
    assert ended.decision.state.cause is Cause.CIRCUIT_BREAKER
    cases = world.store.eval_cases(world.rollout.key)
    assert cases
    assert {c.metric for c in cases} == {"error-rate"}
    for case in cases:
        # the breaker trips on the policy's `max: 0.01`, named as the policy names it
        assert (case.limit, case.direction) == (CaseLimit("max", 0.01), Direction.HIGHER_IS_WORSE)
        assert case.trigger is Trigger.ROLLBACK
        assert 0 < len(case.trace_ids) <= 20
    [message] = [m for m in world.store.outbox(world.rollout.key) if m.event == "rolled-back"]
    assert sorted(row["id"] for row in message.payload["evalCases"]) == [c.id for c in cases]


def test_an_abort_records_cases_only_when_asked_to_capture() -> None:
    for capture in (False, True):
        world = World()
        for _ in range(4):
            world.tick()
        submit(
            world.store,
            world.rollout.key,
            CommandKind.ABORT,
            actor="alice",
            reason="odd answers in support tickets",
            now=world.clock.at,
            args={"capture": True} if capture else None,
        )
        aborted = world.tick()
        assert aborted.decision.state.phase is Phase.ABORTED
        cases = world.store.eval_cases(world.rollout.key)
        if not capture:
            assert cases == []
            continue
        # nothing failed: the cells not yet passing, with candidate requests, are kept
        assert cases
        assert all(c.trigger is Trigger.ABORT for c in cases)
        assert all(c.candidate.samples for c in cases)
        [message] = [m for m in world.store.outbox(world.rollout.key) if m.event == "aborted"]
        assert len(message.payload["evalCases"]) == len(cases)


class Unreachable:
    def trace_ids(self, query: TraceQuery) -> TraceIds:
        raise TransientError("Prometheus did not answer")


class Broken:
    def trace_ids(self, query: TraceQuery) -> TraceIds:
        raise RuntimeError("a bug")


def test_a_trace_source_that_fails_leaves_the_case_without_trace_ids_saying_why() -> None:
    world = World(traces=Unreachable(), refusal_rate=0.3)
    ended = world.until_ended()
    assert ended.decision.state.phase is Phase.ROLLED_BACK
    cases = world.store.eval_cases(world.rollout.key)
    assert cases
    for case in cases:
        assert case.trace_ids == ()
        assert case.trace_ids_reason == (
            "the trace IDs could not be looked up: Prometheus did not answer"
        )


def test_a_bug_in_the_recorder_never_stops_the_rollback(caplog: pytest.LogCaptureFixture) -> None:
    world = World(traces=Broken(), refusal_rate=0.3)
    with caplog.at_level(logging.ERROR):
        ended = world.until_ended()
    assert ended.stored is not None and ended.stored.phase == "RolledBack"
    assert world.store.eval_cases(world.rollout.key) == []
    assert "could not record the eval cases" in caplog.text


def test_max_trace_ids_zero_records_the_case_alone() -> None:
    rollout = demo_rollout()
    analysis = rollout.spec.analysis.model_copy(
        update={
            "eval_cases": rollout.spec.analysis.eval_cases.model_copy(update={"max_trace_ids": 0})
        }
    )
    spec = rollout.spec.model_copy(update={"analysis": analysis})
    world = World(rollout=rollout.model_copy(update={"spec": spec}), refusal_rate=0.3)
    world.until_ended()
    cases = world.store.eval_cases(world.rollout.key)
    assert cases
    assert all(c.trace_ids == () for c in cases)
    assert {c.trace_ids_reason for c in cases} == {
        "analysis.evalCases.maxTraceIds is 0: no trace IDs are looked up"
    }
