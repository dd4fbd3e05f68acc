"""The executor: effects in a crash-safe order, one commit per tick."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, Notify, RestoreRoute, RolloutState
from controller.errors import TransientError
from controller.policy import ModelRollout, load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.routing.base import RouteNotFoundError
from controller.runtime.executor import Executor, Observation
from controller.store import ManualCommand, StaleStateError, TickWrite
from controller.store.memory import MemoryStore
from controller.store.records import StoredRollout
from tests.policy.base import policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ROLLOUT = load_text(policy())[0].rollout


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


def Route() -> MemoryRouter:
    """The route of ROLLOUT, in memory, with the rules of a real router."""
    return MemoryRouter(RouteTarget.of(ROLLOUT))


def writes(route: MemoryRouter) -> list[str]:
    """The route's history as weights, and where a restore left the default backend."""
    return [str(state.weight) for state in route.history]


@dataclass
class Metrics:
    verdict: Verdict = Verdict.PASS
    error: Exception | None = None

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        if self.error is not None:
            raise self.error
        cell = Cell("refusal-rate", "mobile", self.verdict, summary="+4.1pp over baseline")
        return Observation(Look((cell,)))


def run(
    executor: Executor, clock: Clock, route: MemoryRouter, metrics: Metrics, ticks: int
) -> None:
    for _ in range(ticks):
        executor.tick(ROLLOUT, route, metrics)
        clock.at += timedelta(minutes=1)


def test_a_healthy_rollout_is_promoted_with_its_audit() -> None:
    store, clock, route = MemoryStore(), Clock(), Route()
    executor = Executor(store, clock)
    run(executor, clock, route, Metrics(), 30)
    stored = store.get(ROLLOUT.key)
    assert stored is not None and stored.phase == "Promoted"
    assert [(t.from_phase, t.to_phase, t.to_step) for t in store.transitions(ROLLOUT.key)] == [
        ("Pending", "Progressing", 0),
        ("Progressing", "Progressing", 1),
        ("Progressing", "Progressing", 2),
        ("Progressing", "Promoted", 2),
    ]
    assert writes(route) == ["5", "50", "100", "0"]
    assert route.backend == "bot-v2"  # promoted: the candidate is the route's only backend
    assert [m.event for m in store.outbox(ROLLOUT.key)] == [
        "started",
        "step-advanced",
        "step-advanced",
        "promoted",
    ]
    # only writes that changed something (or failed) are audited
    assert [a.action for a in store.route_actions(ROLLOUT.key)] == [
        "apply",
        "apply",
        "apply",
        "promote",
    ]


def test_a_failing_cohort_rolls_back_first_and_tells_the_owners() -> None:
    store, clock, route, metrics = MemoryStore(), Clock(), Route(), Metrics()
    executor = Executor(store, clock)
    run(executor, clock, route, metrics, 2)
    metrics.verdict = Verdict.FAIL
    result = executor.tick(ROLLOUT, route, metrics)
    assert result.decision.actions[0] == RestoreRoute(promoted=False)
    assert writes(route)[-1] == "0"
    assert route.backend == "bot-v1"
    stored = store.get(ROLLOUT.key)
    assert stored is not None and stored.phase == "RolledBack"
    message = store.outbox(ROLLOUT.key)[-1]
    assert message.event == "rolled-back"
    assert message.payload["cells"] == [
        {
            "metric": "refusal-rate",
            "cohort": "mobile",
            "verdict": "fail",
            "summary": "+4.1pp over baseline",
        }
    ]


def test_metrics_errors_hold_and_never_roll_back() -> None:
    store, clock, route = MemoryStore(), Clock(), Route()
    executor = Executor(store, clock)
    run(executor, clock, route, Metrics(error=TransientError("Prometheus unreachable")), 5)
    stored = store.get(ROLLOUT.key)
    assert stored is not None and (stored.phase, stored.step) == ("Progressing", 0)
    assert "Prometheus unreachable" in store.outbox(ROLLOUT.key)[-1].payload["text"]


class CrashingStore(MemoryStore):
    """Dies once between performing a tick's effects and committing them."""

    def __init__(self) -> None:
        super().__init__()
        self.crash_at_commit = -1
        self.commits = 0

    def commit(self, write: TickWrite) -> StoredRollout:
        self.commits += 1
        if self.commits == self.crash_at_commit:
            raise RuntimeError("killed before commit")
        return super().commit(write)


@pytest.mark.parametrize("crash_at", range(1, 25))
def test_a_crash_before_commit_repeats_nothing(crash_at: int) -> None:
    store, clock, route = CrashingStore(), Clock(), Route()
    store.crash_at_commit = crash_at
    executor = Executor(store, clock)
    for _ in range(30):
        # A RuntimeError is the process dying; the next tick is a "restarted" controller.
        with contextlib.suppress(RuntimeError):
            executor.tick(ROLLOUT, route, Metrics())
        clock.at += timedelta(minutes=1)
    transitions = store.transitions(ROLLOUT.key)
    assert [t.to_step for t in transitions] == [0, 1, 2, 2]
    assert [m.event for m in store.outbox(ROLLOUT.key)] == [
        "started",
        "step-advanced",
        "step-advanced",
        "promoted",
    ]
    assert route.backend == "bot-v2"
    assert writes(route) == ["5", "50", "100", "0"]  # each weight written once


def test_a_failed_restore_is_retried_until_it_succeeds() -> None:
    store, clock, route, metrics = MemoryStore(), Clock(), Route(), Metrics()
    executor = Executor(store, clock)
    run(executor, clock, route, metrics, 2)
    metrics.verdict = Verdict.FAIL
    route.fail_next(TransientError("API server unavailable (503)"))
    route.fail_next(TransientError("API server unavailable (503)"))
    first = executor.tick(ROLLOUT, route, metrics)
    assert first.route_errors == ("API server unavailable (503)",)
    assert first.decision.state.restore_pending
    assert route.history[-1].weight == 5  # still on the canary: must be retried
    run(executor, clock, route, metrics, 2)
    stored = store.get(ROLLOUT.key)
    assert stored is not None and stored.state["restorePending"] is False
    assert route.observe().weight == 0
    assert [t.to_phase for t in store.transitions(ROLLOUT.key)].count("RolledBack") == 1
    errors = [a.error for a in store.route_actions(ROLLOUT.key) if a.error]
    assert errors == ["API server unavailable (503)"] * 2


MISSING = "HTTPRoute llm/bot not found: create it, or fix spec.traffic.route"


def test_a_route_that_cannot_carry_the_rollout_fails_it_and_tells_the_owners() -> None:
    store, clock, route, metrics = MemoryStore(), Clock(), Route(), Metrics()
    executor = Executor(store, clock)
    run(executor, clock, route, metrics, 2)  # on the first step
    route.fail_next(RouteNotFoundError(MISSING))
    result = executor.tick(ROLLOUT, route, metrics)
    assert result.decision.state.phase == "Failed"
    assert route.observe().weight == 0  # given back in the same tick
    transitions = store.transitions(ROLLOUT.key)
    assert (transitions[-1].to_phase, transitions[-1].reason) == (
        "Failed",
        f"the route cannot be written: {MISSING}",
    )
    failed = [m for m in store.outbox(ROLLOUT.key) if m.event == "failed"]
    assert len(failed) == 1 and failed[0].payload["phase"] == "Failed"
    notify = next(a for a in result.decision.actions if isinstance(a, Notify))
    assert notify.event == "failed" and notify.mention
    actions = [(a.action, a.error) for a in store.route_actions(ROLLOUT.key)][-2:]
    assert actions == [
        ("apply", MISSING),
        ("restore", None),
    ]
    run(executor, clock, route, metrics, 2)  # ended: no more writes
    assert [t.to_phase for t in store.transitions(ROLLOUT.key)].count("Failed") == 1


def test_a_transient_route_error_is_retried_not_failed() -> None:
    store, clock, route, metrics = MemoryStore(), Clock(), Route(), Metrics()
    executor = Executor(store, clock)
    run(executor, clock, route, metrics, 2)
    route.fail_next(TransientError("API server unavailable (503)"))
    assert executor.tick(ROLLOUT, route, metrics).decision.state.phase == "Progressing"


def test_a_human_command_is_applied_once_and_audited() -> None:
    store, clock, route = MemoryStore(), Clock(), Route()
    executor = Executor(store, clock)
    run(executor, clock, route, Metrics(Verdict.INCONCLUSIVE), 2)
    store.add_command(ROLLOUT.key, ManualCommand(clock.at, "abort", "alice", "bad answers"))
    run(executor, clock, route, Metrics(Verdict.INCONCLUSIVE), 3)
    [*_, last] = store.transitions(ROLLOUT.key)
    assert (last.to_phase, last.actor, last.reason) == (
        "Aborted",
        "alice",
        "aborted by alice: bad answers",
    )
    assert route.observe().weight == 0


def test_a_new_candidate_restarts_from_the_baseline() -> None:
    store, clock, route = MemoryStore(), Clock(), Route()
    executor = Executor(store, clock)
    run(executor, clock, route, Metrics(), 12)
    data = ROLLOUT.model_dump(mode="json", exclude_none=True)
    data["spec"]["candidate"]["version"] = "v3"
    data["metadata"]["generation"] = 2
    newer = ModelRollout.model_validate(data)
    executor.tick(newer, route, Metrics())
    assert writes(route)[-1] == "0"
    clock.at += timedelta(minutes=1)
    executor.tick(newer, route, Metrics())
    stored = store.get(ROLLOUT.key)
    assert stored is not None
    assert (stored.phase, stored.step, stored.candidate_version, stored.generation) == (
        "Progressing",
        0,
        "v3",
        2,
    )
    assert "candidate changed from v2 to v3" in store.transitions(ROLLOUT.key)[-2].reason


def test_deleting_the_rollout_restores_the_route() -> None:
    store, clock, route = MemoryStore(), Clock(), Route()
    executor = Executor(store, clock)
    run(executor, clock, route, Metrics(), 3)
    result = executor.end(ROLLOUT, route)
    assert result is not None and result.decision.state.phase == "Aborted"
    assert route.observe().weight == 0


def test_two_executors_on_one_rollout_never_both_commit() -> None:
    store, clock = MemoryStore(), Clock()
    a, b = Executor(store, clock), Executor(store, clock)
    a.tick(ROLLOUT, Route(), Metrics())
    stale = store.get(ROLLOUT.key)
    clock.at += timedelta(minutes=1)
    a.tick(ROLLOUT, Route(), Metrics())
    assert stale is not None
    with pytest.raises(StaleStateError):
        store.commit(TickWrite(stale, stale.revision))
    b.tick(ROLLOUT, Route(), Metrics())  # b reads the current revision: fine
