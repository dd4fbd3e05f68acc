"""The ModelRollout status writer: one merge patch of what changed per tick, Events per
transition, and failures that never reach the tick. Real client, kmock API server."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes.client import ApiClient

from controller.analysis.verdicts import Verdict
from controller.engine.phases import Phase
from controller.engine.state import Cell, Look, RolloutState, Transition
from controller.errors import Problem
from controller.policy import Cause, ModelRollout, parse_object
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation, TickResult
from controller.runtime.kube_source import InvalidRollout
from controller.runtime.kube_status import (
    KubeStatusReporter,
    event_reason,
    status_patch,
)
from controller.store.memory import MemoryStore
from tests.kube import KubeApi, Slow
from tests.runtime.modelrollouts import (  # noqa: F401  (fixtures)
    Rollouts,
    client_fixture,
    kube_fixture,
    rollout,
    rollouts_fixture,
)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
STATUS_PATH = "/apis/canary.ai/v1alpha1/namespaces/llm/modelrollouts/bot-v2/status"


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Judge:
    verdicts: dict[str, Verdict] = field(
        default_factory=lambda: {"overall": Verdict.PASS, "mobile": Verdict.PASS}
    )

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        cells = tuple(Cell("refusal-rate", c, v) for c, v in self.verdicts.items())
        return Observation(Look((*cells, Cell("error-rate", "overall", Verdict.PASS))))


class World:
    """One ModelRollout in kmock, ticked by the real executor, reported by the writer."""

    def __init__(self, kube: KubeApi, client: ApiClient, rollouts: Rollouts) -> None:
        self.kube = kube
        self.rollouts = rollouts
        self.clock = Clock()
        self.judge = Judge()
        self.executor = Executor(MemoryStore(), self.clock)
        rollouts.create(rollout())
        self.route = MemoryRouter(RouteTarget.of(self.current()))
        self.reporter = KubeStatusReporter(
            client, timeout=0.5, budget=2.0, instance="replica-a", clock=self.clock.now
        )

    def current(self) -> ModelRollout:
        """The rollout as the source would hold it now (with the latest resourceVersion)."""
        stored = self.rollouts.stored("llm", "bot-v2")
        assert stored is not None
        return parse_object(stored)

    def tick(self, after: timedelta = timedelta(0)) -> TickResult:
        self.clock.at += after
        rollout = self.current()
        result = self.executor.tick(rollout, self.route, self.judge)
        self.reporter.report(rollout, result)
        return result

    def status(self) -> dict[str, Any]:
        stored = self.rollouts.stored("llm", "bot-v2")
        assert stored is not None
        return dict(stored.get("status") or {})

    def conditions(self) -> dict[str, dict[str, Any]]:
        return {c["type"]: c for c in self.status().get("conditions", [])}

    def status_writes(self) -> list[dict[str, Any]]:
        return [
            body["status"]
            for method, path, body in self.kube.server.writes()
            if path == STATUS_PATH
        ]

    def events(self) -> list[dict[str, Any]]:
        return sorted(self.rollouts.events(), key=lambda e: e["metadata"]["resourceVersion"])


@pytest.fixture
def world(kube: KubeApi, client: ApiClient, rollouts: Rollouts) -> World:
    return World(kube, client, rollouts)


# --- the status ------------------------------------------------------------------------------


def test_the_first_tick_writes_the_whole_status(world: World) -> None:
    world.tick()  # Pending -> Progressing, step 1
    status = world.status()
    assert status["phase"] == "Progressing"
    assert (status["step"], status["steps"], status["weight"]) == (1, 3, 5)
    assert status["cohortWeights"] == {"mobile": 10}
    assert status["observedGeneration"] == 1
    assert status["candidateVersion"] == "v2"
    assert status["reason"] == "step 1: 5% to candidate"
    assert status["lastTransitionTime"] == "2026-11-22T08:00:00Z"
    conditions = world.conditions()
    assert {t: c["status"] for t, c in conditions.items()} == {
        "Valid": "True",
        "Ready": "True",
        "Progressing": "True",
        "RolledBack": "False",
    }
    assert conditions["Progressing"]["reason"] == "Progressing"
    assert conditions["Ready"]["message"] == "candidate 5%, mobile 10%"
    assert all(c["observedGeneration"] == 1 for c in conditions.values())
    assert len(world.status_writes()) == 1


def test_an_identical_tick_writes_nothing_and_reads_nothing(world: World) -> None:
    world.tick()
    world.tick(timedelta(seconds=30))  # the first look: verdicts appear
    requests = len(world.kube.server.requests())
    writes = len(world.status_writes())
    world.tick(timedelta(seconds=30))
    world.tick(timedelta(seconds=30))
    assert len(world.status_writes()) == writes
    assert len(world.kube.server.requests()) == requests  # not even a read


def test_a_change_writes_only_the_changed_fields(world: World) -> None:
    world.tick()
    world.tick(timedelta(seconds=30))
    before = world.status()
    world.tick(timedelta(minutes=10))  # hold passed, all PASS: step 2
    patch = world.status_writes()[-1]
    assert set(patch) == {
        "step",
        "weight",
        "cohortWeights",
        "reason",
        "lastTransitionTime",
        "conditions",
    }
    assert patch["cohortWeights"] is None  # merge patch: removed
    status = world.status()
    assert (status["step"], status["weight"]) == (2, 50)
    assert "cohortWeights" not in status
    # a condition that did not flip keeps its time; its message follows the route
    ready_before = {c["type"]: c for c in before["conditions"]}["Ready"]
    ready = world.conditions()["Ready"]
    assert ready["lastTransitionTime"] == ready_before["lastTransitionTime"]
    assert ready["message"] == "candidate 50%"


def test_verdicts_are_summarised_per_cohort(world: World) -> None:
    world.tick()
    world.judge.verdicts = {"overall": Verdict.PASS, "mobile": Verdict.INCONCLUSIVE}
    world.tick(timedelta(seconds=30))
    assert world.status()["verdicts"] == [
        {
            "cohort": "overall",
            "verdict": "pass",
            "metrics": {"refusal-rate": "pass", "error-rate": "pass"},
        },
        {
            "cohort": "mobile",
            "verdict": "inconclusive",
            "metrics": {"refusal-rate": "inconclusive"},
        },
    ]


def test_fields_and_conditions_of_other_writers_are_left_alone(world: World) -> None:
    world.tick()
    theirs = {
        "type": "Audited",
        "status": "True",
        "reason": "Checked",
        "lastTransitionTime": "2026-11-22T07:00:00Z",
    }
    world.rollouts.api.patch_namespaced_custom_object_status(
        "canary.ai",
        "v1alpha1",
        "llm",
        "modelrollouts",
        "bot-v2",
        {"status": {"team": "search", "conditions": [*world.status()["conditions"], theirs]}},
        _content_type="application/merge-patch+json",
    )
    world.tick(timedelta(minutes=10, seconds=30))
    status = world.status()
    assert status["team"] == "search"
    assert status["step"] == 2
    assert world.conditions()["Audited"] == theirs


def test_a_rollback_flips_the_conditions_and_emits_a_warning(world: World) -> None:
    world.tick()
    world.judge.verdicts = {"overall": Verdict.PASS, "mobile": Verdict.FAIL}
    world.tick(timedelta(seconds=30))
    status = world.status()
    assert status["phase"] == "RolledBack"
    assert status["weight"] == 0
    assert status["cause"] == "LimitBroken"
    conditions = world.conditions()
    assert conditions["RolledBack"]["status"] == "True"
    assert conditions["RolledBack"]["reason"] == "LimitBroken"
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["RolledBack"]["lastTransitionTime"] == "2026-11-22T08:00:30Z"
    events = world.events()
    assert [(e["reason"], e["type"]) for e in events] == [
        ("Started", "Normal"),
        ("LimitBroken", "Warning"),
    ]
    rolled_back = events[-1]
    assert rolled_back["involvedObject"] == {
        "apiVersion": "canary.ai/v1alpha1",
        "kind": "ModelRollout",
        "namespace": "llm",
        "name": "bot-v2",
        "uid": world.current().metadata.uid,
    }
    assert rolled_back["message"].startswith("Progressing -> RolledBack (step 1/3): ")
    assert "mobile" in rolled_back["message"]
    assert rolled_back["message"].endswith(" [LimitBroken]")
    assert rolled_back["reportingComponent"] == "canary.ai/canary-controller"
    assert rolled_back["reportingInstance"] == "replica-a"


def test_each_transition_is_one_event_even_if_reported_twice(world: World) -> None:
    result = world.tick()
    world.reporter.report(world.current(), result)
    assert [e["reason"] for e in world.events()] == ["Started"]


# --- failures never reach the tick -----------------------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        pytest.param(500, id="500"),
        pytest.param(409, id="409"),
        pytest.param(503, id="503"),
        pytest.param(Slow(3), id="timeout"),
    ],
)
def test_a_failed_status_write_is_logged_and_written_next_tick(
    world: World, outcome: int | Slow, caplog: pytest.LogCaptureFixture
) -> None:
    world.tick()
    world.kube.server.fail("PATCH", "modelrollouts", "bot-v2", outcome)
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        world.tick(timedelta(minutes=10, seconds=30))  # step 2, but the write fails
    assert time.monotonic() - began < 2.5  # the budget (2s), not the slow answer (3s)
    assert "could not write the status of ModelRollout llm/bot-v2" in caplog.text
    if not isinstance(outcome, Slow):  # a slow answer was carried out all the same
        assert world.status()["step"] == 1
    world.tick(timedelta(seconds=30))
    assert world.status()["step"] == 2


def test_a_failed_event_is_logged_and_the_tick_goes_on(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.kube.server.fail("POST", "events", None, 500)
    with caplog.at_level(logging.WARNING):
        world.tick()
    assert "could not create the Started event in llm: HTTP 500" in caplog.text
    assert world.status()["phase"] == "Progressing"


def test_the_budget_bounds_a_report_against_a_hung_server(world: World) -> None:
    world.tick()
    world.kube.server.fail("PATCH", "modelrollouts", "bot-v2", Slow(3))
    world.kube.server.fail("POST", "events", None, Slow(3))
    world.reporter.budget = 0.8
    began = time.monotonic()
    world.tick(timedelta(minutes=10, seconds=30))
    assert time.monotonic() - began < 2.0


def test_a_deleted_rollout_is_reported_without_error(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.tick()
    rollout = world.current()
    world.rollouts.delete("llm", "bot-v2")
    ended = world.executor.end(rollout, world.route)  # what the controller does then
    assert ended is not None
    with caplog.at_level(logging.INFO):
        world.reporter.report(rollout, ended)
    assert "could not write the status of ModelRollout llm/bot-v2: it no longer exists" in (
        caplog.text
    )


# --- invalid specs ---------------------------------------------------------------------------


def invalid(world: World, generation: int) -> InvalidRollout:
    stored = world.rollouts.stored("llm", "bot-v2")
    assert stored is not None
    return InvalidRollout(
        namespace="llm",
        name="bot-v2",
        uid=stored["metadata"]["uid"],
        generation=generation,
        resource_version=stored["metadata"]["resourceVersion"],
        problems=(Problem("the last step must reach 100", "spec.steps[2].weight"),),
    )


def test_an_invalid_spec_sets_valid_false_and_a_warning(world: World) -> None:
    world.tick()
    world.reporter.report_invalid(invalid(world, 2))
    status = world.status()
    assert status["observedGeneration"] == 2
    assert status["phase"] == "Progressing"  # the rollout itself is left as it was
    valid = world.conditions()["Valid"]
    assert (valid["status"], valid["reason"], valid["observedGeneration"]) == (
        "False",
        "InvalidSpec",
        2,
    )
    assert valid["message"] == "spec.steps[2].weight: the last step must reach 100"
    event = world.events()[-1]
    assert (event["reason"], event["type"]) == ("InvalidSpec", "Warning")
    assert "generation 2 is invalid and ignored: spec.steps[2].weight" in event["message"]
    # a tick of the older, valid generation does not hide it
    world.tick(timedelta(seconds=30))
    assert world.conditions()["Valid"]["status"] == "False"


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "reason"),
    [
        pytest.param(Phase.PENDING, Phase.PROGRESSING, "Started", id="started"),
        pytest.param(Phase.PENDING, Phase.SHADOWING, "Shadowing", id="shadowing"),
        pytest.param(Phase.SHADOWING, Phase.PROGRESSING, "Started", id="shadow-done"),
        pytest.param(Phase.PROGRESSING, Phase.PROGRESSING, "StepAdvanced", id="step"),
        pytest.param(Phase.PROGRESSING, Phase.PAUSED, "Paused", id="paused"),
        pytest.param(Phase.PAUSED, Phase.PROGRESSING, "Resumed", id="resumed"),
        pytest.param(Phase.PROGRESSING, Phase.PROMOTED, "Promoted", id="promoted"),
        pytest.param(Phase.PROGRESSING, Phase.ROLLED_BACK, "RolledBack", id="rolled-back"),
        pytest.param(Phase.PAUSED, Phase.ABORTED, "Aborted", id="aborted"),
        pytest.param(Phase.PROGRESSING, Phase.PENDING, "Restarted", id="restarted"),
    ],
)
def test_event_reasons_name_the_transition(src: Phase, dst: Phase, reason: str) -> None:
    assert event_reason(Transition(T0, src, dst, 0, 1, "why")) == reason


@pytest.mark.parametrize(
    ("src", "dst", "cause", "reason"),
    [
        pytest.param(Phase.PROGRESSING, Phase.ROLLED_BACK, Cause.NO_DATA, "NoData", id="no-data"),
        pytest.param(
            Phase.PROGRESSING,
            Phase.ROLLED_BACK,
            Cause.CIRCUIT_BREAKER,
            "CircuitBreaker",
            id="breaker",
        ),
        pytest.param(Phase.PROGRESSING, Phase.PAUSED, Cause.DEADLINE, "Deadline", id="deadline"),
        pytest.param(Phase.PAUSED, Phase.ABORTED, Cause.MANUAL, "Manual", id="aborted"),
        pytest.param(
            Phase.PROGRESSING, Phase.FAILED, Cause.ROUTE_FAILED, "RouteFailed", id="route"
        ),
        # a human letting it go on is still named for what happened
        pytest.param(Phase.PAUSED, Phase.PROGRESSING, Cause.MANUAL, "Resumed", id="resumed"),
        pytest.param(Phase.PAUSED, Phase.PROMOTED, Cause.MANUAL, "Promoted", id="promoted"),
    ],
)
def test_an_ending_or_a_pause_is_named_by_its_cause(
    src: Phase, dst: Phase, cause: Cause, reason: str
) -> None:
    assert event_reason(Transition(T0, src, dst, 0, 1, "why", cause=cause)) == reason


def test_a_deadline_pause_says_so_in_the_status_and_never_as_a_failed_metric(
    world: World,
) -> None:
    world.tick()
    world.judge.verdicts = {"overall": Verdict.PASS, "mobile": Verdict.INCONCLUSIVE}
    world.tick(timedelta(minutes=10))  # step 2: inconclusive is no FAIL
    world.tick(timedelta(minutes=10))  # hold over, but 100 % needs mobile decided: holding
    world.tick(timedelta(minutes=20))  # 40 minutes: the deadline
    status = world.status()
    assert (status["phase"], status["cause"]) == ("Paused", "Deadline")
    assert status["reason"].startswith("undecided at the deadline (40m): refusal-rate in mobile")
    assert "fail" not in status["reason"]
    progressing = world.conditions()["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "WaitingForDeadline")
    event = world.events()[-1]
    assert (event["reason"], event["type"]) == ("Deadline", "Warning")


def test_the_patch_covers_owned_fields_only() -> None:
    current = {"phase": "Progressing", "step": 1, "team": "search", "cohortWeights": {"a": 1}}
    desired = {"phase": "Progressing", "step": 2, "cohortWeights": {"b": 2}}
    assert status_patch(current, desired) == {"step": 2, "cohortWeights": {"a": None, "b": 2}}
    assert status_patch(current, {**current}) == {}
