"""The demo's replay gate: a local webhook that fails a candidate which broke non-English
users before, so a retry of it is stopped before it shadows."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from controller.demo import _run, replay_gate, replay_verdict, retry_rollout, run_demo
from controller.engine.phases import Phase
from controller.policy import Cause
from controller.policy.gates import WebhookAllow
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.gates import GateRunners, WebhookGates
from controller.scenarios import Scenario
from controller.store.sql import SqlStore, migrate

BROKE = {"id": "a1", "cohort": "non-english", "candidate_version": "v7", "metric": "refusal-rate"}


@pytest.mark.parametrize(
    ("cases", "status"),
    [
        pytest.param([], 200, id="no-cases"),
        pytest.param([BROKE], 422, id="this-version-broke-non-english"),
        pytest.param([{**BROKE, "candidate_version": "v6"}], 200, id="another-version"),
        pytest.param([{**BROKE, "cohort": "mobile"}], 200, id="another-cohort"),
    ],
)
def test_the_verdict(cases: list[dict[str, str]], status: int) -> None:
    got, answer = replay_verdict({"candidate": {"version": "v7"}, "cases": cases})
    assert got == status
    assert answer["replayed"] == len(cases)
    if status == 422:
        assert answer["failed"] == [{"id": "a1", "metric": "refusal-rate", "cohort": "non-english"}]


def test_the_gate_answers_over_http() -> None:
    with replay_gate() as url:
        body = json.dumps({"candidate": {"version": "v7"}, "cases": [BROKE]}).encode()
        request = urllib.request.Request(url, data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as failed:
            urllib.request.urlopen(request, timeout=5)
    assert failed.value.code == 422
    assert json.loads(failed.value.read())["reason"] == "v7 failed non-english users before"


@dataclass
class Cases:
    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]:
        return [BROKE] if model == "support-bot" else []


def test_a_retry_of_the_candidate_is_stopped_before_it_shadows(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    migrate(f"sqlite:///{database}")
    with replay_gate() as url:
        rollout = retry_rollout(url)
        router = MemoryRouter(RouteTarget.of(rollout))
        result = _run(
            Scenario.GATE_REPLAY,
            database,
            7,
            None,
            0.0,
            rollout,
            router,
            60.0,
            (),
            gates=lambda store: GateRunners(WebhookGates(WebhookAllow.parse(url), cases=Cases())),
        )
    assert (result.phase, result.cause) == (Phase.ROLLED_BACK, Cause.GATE_FAILED)
    assert router.history == ()  # never shadowed, never weighted, never restored
    store = SqlStore(f"sqlite:///{database}")
    try:
        [_, failed] = store.transitions(rollout.key)
        assert failed.reason == "gate replay-evals failed: HTTP 422"
        assert json.loads(failed.details["gate"]["body"])["failed"][0]["id"] == "a1"
    finally:
        store.close()


def test_the_gate_replay_demo_stops_the_retry_on_the_first_rollbacks_cases(
    tmp_path: Path,
) -> None:
    database = tmp_path / "demo.db"
    result = run_demo(Scenario.GATE_REPLAY, database)
    assert result.key == "llm/support-bot-v7-retry"
    assert (result.phase, result.cause, result.steps_completed) == (
        Phase.ROLLED_BACK,
        Cause.GATE_FAILED,
        0,
    )
    store = SqlStore(f"sqlite:///{database}")
    try:
        # the first rollout's rollback recorded the case the gate replayed
        [case] = [c for c in store.eval_cases("llm/support-bot-v7") if c.cohort == "non-english"]
        assert case.candidate_version == "v7"
        transitions = store.transitions(result.key)
        assert [(t.from_phase, t.to_phase, t.cause) for t in transitions] == [
            ("Pending", "GateRunning", None),
            ("GateRunning", "RolledBack", "GateFailed"),
        ]
        answer = json.loads(transitions[-1].details["gate"]["body"])
        assert answer["failed"][0]["id"] == case.id
        assert store.route_actions(result.key) == []  # the retry never touched the route
    finally:
        store.close()
