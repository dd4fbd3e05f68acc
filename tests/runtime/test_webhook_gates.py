"""Webhook gates against a local HTTP server, alone and through the executor.

Alone: pass, fail, timeout, a slow answer, a trickled body, a huge body, a
redirect, the allowlist and the Secret's headers. Through the executor (memory
store, memory router): a failing preRollout webhook never moves traffic, a
passing one starts the rollout, retries, and beforePromotion holds the last step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from rich.console import Console

from controller.analysis.verdicts import Verdict
from controller.cli.views import status_json, status_view
from controller.dashboard.pages import rollout_row
from controller.engine.phases import Phase
from controller.engine.state import Cell, GateOutcome, GateResult, GateWait, Look, RolloutState
from controller.notify.base import Notification
from controller.notify.messages import slack_message
from controller.policy import Cause, ModelRollout, load_text
from controller.policy.gates import EVIDENCE_BYTES, GatePoint, WebhookAllow
from controller.policy.route import RouteState
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation, TickResult
from controller.runtime.gates import GATE_SCHEMA, GateRunners, WebhookGates
from controller.runtime.kube_status import desired_status
from controller.store.memory import MemoryStore
from tests.policy.base import policy
from tests.runtime.gate_server import Answer, GateServer, gate_server

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ALLOW_LOCAL = WebhookAllow.parse("http://127.0.0.1:1/,http://127.0.0.1")
CASE = {
    "id": "c1",
    "model": "bot",
    "cohort": "non-english",
    "candidate_version": "v2",
    "metric": "refusal-rate",
}


@dataclass
class Cases:
    rows: tuple[Mapping[str, Any], ...] = (CASE,)

    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]:
        return [r for r in self.rows if r["model"] == model]


@dataclass
class Secrets:
    def headers(self, namespace: str, secret: str) -> dict[str, str]:
        assert (namespace, secret) == ("llm", "evals-token")
        return {"Authorization": "Bearer t0ken"}


def allow(url: str) -> WebhookAllow:
    """An allowlist of the server's own prefix."""
    return WebhookAllow.parse(url.rsplit("/", 1)[0])


def rollout(url: str, *extra: str, gate: str = "") -> ModelRollout:
    gate = gate or f"{{name: evals, at: preRollout, webhook: {{url: '{url}', timeout: 2s}}}}"
    text = policy() + "  gates:\n    - " + gate + "\n" + "".join(extra)
    return load_text(text)[0].rollout


def waiting_state(attempt: int = 1) -> RolloutState:
    return RolloutState(
        phase=Phase.GATE_RUNNING,
        step=-1,
        candidate_version="v2",
        generation=1,
        started_at=T0,
        phase_since=T0,
        step_since=T0,
        analysis_since=T0,
        gate=GateWait("evals", GatePoint.PRE_ROLLOUT, T0, attempt=attempt),
    )


def check(server: GateServer, url: str | None = None, timeout: str = "2s") -> GateResult:
    url = url or server.url
    gate = f"{{name: evals, at: preRollout, webhook: {{url: '{url}', timeout: {timeout}}}}}"
    hooks = WebhookGates(allow(server.url), cases=Cases())
    return GateRunners(hooks).check(rollout(url, gate=gate), waiting_state(), T0)


# --- one call ---------------------------------------------------------------------------


def test_a_2xx_passes_and_the_payload_carries_the_context_and_the_cases() -> None:
    with gate_server() as server:
        server.answers = [Answer(202, b'{"passed": 12}')]
        result = check(server)
    assert result == GateResult("evals", 1, GateOutcome.PASSED, "HTTP 202", '{"passed": 12}')
    [body] = server.bodies
    assert body["schema"] == GATE_SCHEMA
    assert (body["rollout"], body["model"], body["phase"], body["step"]) == (
        "llm/bot-v2",
        "bot",
        "GateRunning",
        0,
    )
    assert body["baseline"] == {"version": "v1", "service": "bot-v1"}
    assert body["candidate"] == {"version": "v2", "service": "bot-v2", "host": "bot-v2.llm.svc"}
    assert body["weights"] == RouteState().to_json()
    assert body["gate"] == {"name": "evals", "at": "preRollout", "attempt": 1, "kind": "webhook"}
    assert body["cases"] == [CASE]
    assert server.headers[0]["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [400, 404, 409, 500, 503])
def test_anything_else_fails_with_its_body(status: int) -> None:
    with gate_server() as server:
        server.answers = [Answer(status, b'{"failed": ["c1"], "why": "non-english refusals"}')]
        result = check(server)
    assert (result.outcome, result.detail) == (GateOutcome.FAILED, f"HTTP {status}")
    assert result.body == '{"failed": ["c1"], "why": "non-english refusals"}'


def test_no_answer_within_the_timeout_fails() -> None:
    with gate_server() as server:
        server.answers = [Answer(200, delay=5)]
        result = check(server, timeout="500ms")
    assert (result.outcome, result.detail) == (GateOutcome.FAILED, "no answer within 0.5s")


def test_a_slow_answer_within_the_timeout_passes() -> None:
    with gate_server() as server:
        server.answers = [Answer(200, b'{"ok": true}', delay=0.3)]
        result = check(server, timeout="5s")
    assert result.outcome is GateOutcome.PASSED


def test_a_body_trickled_past_the_timeout_fails() -> None:
    with gate_server() as server:
        # headers at once, then a piece of the body every 0.4 s: 2 s in all
        server.answers = [Answer(200, b"x" * 50, delay=0.4, trickle=5)]
        result = check(server, timeout="1s")
    assert (result.outcome, result.detail) == (GateOutcome.FAILED, "no answer within 1s")


@pytest.mark.parametrize("status", [200, 500])
def test_a_huge_body_is_read_to_4_kib_only(status: int) -> None:
    huge = ("é" * 3 + "x") * (4 * 1024 * 1024)  # 28 MiB of UTF-8
    with gate_server() as server:
        server.answers = [Answer(status, huge.encode())]
        result = check(server)
    assert result.outcome is (GateOutcome.PASSED if status == 200 else GateOutcome.FAILED)
    assert result.detail == f"HTTP {status} (body cut at 4 KiB)"
    assert 4090 <= len(result.body.encode()) <= EVIDENCE_BYTES
    assert huge.startswith(result.body)  # cut on a character boundary


def test_a_redirect_is_not_followed_and_fails() -> None:
    with gate_server() as server:
        server.answers = [Answer(302, b"")]
        result = check(server)
    assert (result.outcome, result.detail) == (GateOutcome.FAILED, "HTTP 302")
    assert len(server.bodies) == 1


def test_nothing_listening_fails() -> None:
    with gate_server() as server:
        url = server.url
    result = check(GateServer(url=url))
    assert result.outcome is GateOutcome.FAILED
    assert result.detail.startswith("the call failed:")


def test_a_url_off_the_allowlist_is_never_called() -> None:
    with gate_server() as server:
        gate = f"{{name: evals, at: preRollout, webhook: {{url: '{server.url}'}}}}"
        hooks = WebhookGates(WebhookAllow.parse("https://evals.example.com/"))
        result = GateRunners(hooks).check(rollout(server.url, gate=gate), waiting_state(), T0)
    assert (result.outcome, result.detail) == (
        GateOutcome.FAILED,
        "the URL is not in this controller's webhook allowlist",
    )
    assert server.bodies == []


def test_headers_come_from_the_secret() -> None:
    with gate_server() as server:
        gate = (
            f"{{name: evals, at: preRollout, webhook: {{url: '{server.url}', "
            "headersFrom: {secretName: evals-token}}}"
        )
        hooks = WebhookGates(allow(server.url), secrets=Secrets())
        result = GateRunners(hooks).check(rollout(server.url, gate=gate), waiting_state(), T0)
    assert result.outcome is GateOutcome.PASSED
    assert server.headers[0]["Authorization"] == "Bearer t0ken"


# --- through the executor ------------------------------------------------------------------


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Metrics:
    looks: int = 0

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        self.looks += 1
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.PASS),)))


@dataclass
class Run:
    store: MemoryStore
    clock: Clock
    route: MemoryRouter
    metrics: Metrics
    executor: Executor
    rollout: ModelRollout

    def ticks(self, count: int) -> list[TickResult]:
        out = []
        for _ in range(count):
            out.append(self.executor.tick(self.rollout, self.route, self.metrics))
            self.clock.at += timedelta(minutes=1)
        return out

    @property
    def state(self) -> RolloutState:
        stored = self.store.get(self.rollout.key)
        assert stored is not None
        return RolloutState.from_json(stored.state)


def start(server: GateServer, gate: str = "") -> Run:
    the_rollout = rollout(server.url, gate=gate)
    store, clock = MemoryStore(), Clock()
    hooks = WebhookGates(allow(server.url), cases=Cases())
    executor = Executor(store, clock, gates=GateRunners(hooks))
    return Run(
        store, clock, MemoryRouter(RouteTarget.of(the_rollout)), Metrics(), executor, the_rollout
    )


def test_a_failing_pre_rollout_webhook_never_moves_traffic() -> None:
    with gate_server() as server:
        server.default = Answer(422, b'{"failed": 3, "cases": ["c1", "c2", "c3"]}')
        run = start(server)
        results = run.ticks(5)
    state = run.state
    assert (state.phase, state.cause) == (Phase.ROLLED_BACK, Cause.GATE_FAILED)
    # the route: never written, not even restored; no look at the metrics either
    assert run.route.history == ()
    assert run.store.route_actions(run.rollout.key) == []
    assert run.metrics.looks == 0
    assert len(server.bodies) == 1
    # history: the failed gate with its answer
    transitions = run.store.transitions(run.rollout.key)
    assert [(t.from_phase, t.to_phase, t.cause) for t in transitions] == [
        ("Pending", "GateRunning", None),
        ("GateRunning", "RolledBack", "GateFailed"),
    ]
    gate = transitions[-1].details["gate"]
    assert (gate["outcome"], gate["detail"]) == ("failed", "HTTP 422")
    assert gate["body"] == '{"failed": 3, "cases": ["c1", "c2", "c3"]}'
    # status: the cause, as the ModelRollout shows it
    ended = next(r for r in results if r.decision.state.phase is Phase.ROLLED_BACK)
    status = desired_status(run.rollout, ended, {}, T0)
    assert (status["phase"], status["cause"]) == ("RolledBack", "GateFailed")
    assert status["weight"] == 0
    # Slack: the message of the rollback shows the webhook's answer
    [message] = [m for m in run.store.outbox(run.rollout.key) if m.event == "rolled-back"]
    slack = slack_message(Notification.of(run.rollout.key, message))
    text = str(slack.blocks)
    assert "Stopped before v2 took any traffic: gate evals failed: HTTP 422." in text
    assert '{"failed": 3, "cases": ["c1", "c2", "c3"]}' in text
    assert "GateFailed" in text


def test_a_passing_pre_rollout_webhook_lets_the_rollout_start() -> None:
    with gate_server() as server:
        run = start(server)
        run.ticks(2)
    state = run.state
    assert (state.phase, state.step) == (Phase.PROGRESSING, 0)
    assert [s.weight for s in run.route.history] == [5]
    [body] = server.bodies
    assert body["cases"] == [CASE]
    passed = run.store.transitions(run.rollout.key)[-1]
    assert passed.details["gate"]["outcome"] == "passed"


def test_a_gate_that_fails_twice_then_passes_within_its_retries() -> None:
    with gate_server() as server:
        server.answers = [Answer(500, b"flaky"), Answer(503, b"flaky")]
        gate = f"{{name: evals, at: preRollout, retries: 2, webhook: {{url: '{server.url}'}}}}"
        run = start(server, gate)
        run.ticks(4)
    assert [b["gate"]["attempt"] for b in server.bodies] == [1, 2, 3]
    assert run.state.phase is Phase.PROGRESSING
    reasons = [t.reason for t in run.store.transitions(run.rollout.key)]
    assert reasons[1:3] == [
        "gate evals failed: HTTP 500; attempt 2 of 3",
        "gate evals failed: HTTP 503; attempt 3 of 3",
    ]


def test_before_promotion_holds_the_last_step_until_the_gate_passes() -> None:
    with gate_server() as server:
        gate = (
            f"{{name: signoff, at: beforePromotion, retries: 5, webhook: {{url: '{server.url}'}}}}"
        )
        server.default = Answer(409, b'{"signed": false}')
        run = start(server, gate)
        run.ticks(25)  # steps 5% and 50% hold 10m each, then 100%
        state = run.state
        assert (state.phase, state.step) == (Phase.GATE_RUNNING, 2)
        assert state.gate is not None and state.gate.name == "signoff"
        assert run.route.observe().weight == 100  # held at the last step
        assert not any(m.event == "promoted" for m in run.store.outbox(run.rollout.key))
        assert len(server.bodies) >= 2  # asked more than once meanwhile
        server.default = Answer(200, b'{"signed": true}')
        run.ticks(2)
    assert run.state.phase is Phase.PROMOTED
    assert run.route.backend == "bot-v2"


def test_a_rollout_waiting_for_a_gate_shows_it_in_status_and_canaryctl_status() -> None:
    with gate_server() as server:
        run = start(server)
        [entered] = run.ticks(1)
    stored = run.store.get(run.rollout.key)
    assert stored is not None
    status = desired_status(run.rollout, entered, {}, T0)
    assert status["phase"] == "GateRunning"
    assert status["gate"] == {
        "name": "evals",
        "at": "preRollout",
        "attempt": 1,
        "since": "2026-11-22T08:00:00Z",
    }
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "GateRunning")
    data = status_json(run.store, stored, T0 + timedelta(minutes=3))
    assert data["gate"]["name"] == "evals"
    console = Console(width=120, record=True)
    console.print(status_view(run.store, stored, T0 + timedelta(minutes=3)))
    text = console.export_text()
    assert "GateRunning" in text
    assert "gate evals (preRollout): running, attempt 1, for 3m" in text
    # the dashboard's rollouts list
    row = rollout_row(run.store, stored, T0 + timedelta(minutes=3))
    assert (row.phase, row.gate) == ("GateRunning", "evals (preRollout, attempt 1)")
