"""Gates in the pure decision: waiting is a state (GateRunning), the result an input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.decide import decide, start
from controller.engine.phases import Phase
from controller.engine.state import (
    ApplyRoute,
    Cell,
    Command,
    CommandKind,
    Decision,
    EventKind,
    GateOutcome,
    GateResult,
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    Waiting,
)
from controller.policy import Cause, RolloutSpec, load_text
from controller.policy.gates import GatePoint
from tests.policy.base import policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)
PASS = Look((Cell("refusal-rate", "overall", Verdict.PASS),))
FAIL = Look((Cell("refusal-rate", "overall", Verdict.FAIL, summary="+5pp"),))
HOOK = "webhook: {url: 'https://evals.example.com/run', timeout: 30s}"


def gated(*gates: str, shadow: bool = False) -> RolloutSpec:
    """The base policy (steps 5 -> 50 -> 100, holds 10m) with `gates` (YAML flow maps)."""
    text = policy() + "  gates:\n" + "".join(f"    - {g}\n" for g in gates)
    if shadow:
        text = text.replace("  analysis:\n", "  shadow: {duration: 5m}\n  analysis:\n", 1)
    return load_text(text)[0].rollout.spec


PRE = gated("{name: evals, at: preRollout, " + HOOK + "}")
PRE_RETRY = gated("{name: evals, at: preRollout, retries: 2, " + HOOK + "}")
PRE_PAUSE = gated("{name: evals, at: preRollout, onFailure: pause, " + HOOK + "}")
PRE_IGNORE = gated("{name: evals, at: preRollout, onFailure: ignore, " + HOOK + "}")
TWO_PRE = gated(
    "{name: evals, at: preRollout, " + HOOK + "}",
    "{name: smoke, at: preRollout, " + HOOK + "}",
)
STEP2 = gated("{name: load, at: {beforeStep: 2}, " + HOOK + "}")
PROMOTION = gated("{name: signoff, at: beforePromotion, " + HOOK + "}")
SHADOWED = gated("{name: evals, at: {beforeStep: 1}, " + HOOK + "}", shadow=True)
AFTER = gated(
    "{name: report, at: postRollout, " + HOOK + "}",
    "{name: incident, at: onRollback, " + HOOK + "}",
)
JOB = gated(
    "{name: evals, at: preRollout, job: {timeout: 5m, template: "
    "{template: {spec: {containers: [{name: e, image: evals:1}]}}}}}"
)


def result(
    outcome: GateOutcome, name: str = "evals", attempt: int = 1, body: str = ""
) -> GateResult:
    detail = {GateOutcome.FAILED: "HTTP 500", GateOutcome.PASSED: "HTTP 200"}.get(outcome, "")
    return GateResult(name, attempt, outcome, detail, body)


PASSED = result(GateOutcome.PASSED)
FAILED = result(GateOutcome.FAILED, body='{"failed": ["case-1"]}')


def tick(
    spec: RolloutSpec,
    state: RolloutState,
    at: datetime,
    gate: GateResult | None = None,
    look: Look | None = PASS,
    commands: tuple[Command, ...] = (),
) -> Decision:
    return decide(spec, state, look, commands, at, gate)


def waiting(spec: RolloutSpec) -> RolloutState:
    """A new rollout after its first tick: waiting for its preRollout gate."""
    decision = tick(spec, start(spec, 1, T0), T0, look=Look())
    assert decision.state.phase is Phase.GATE_RUNNING
    return decision.state


def route_actions(decision: Decision) -> list[ApplyRoute | RestoreRoute]:
    return [a for a in decision.actions if isinstance(a, ApplyRoute | RestoreRoute)]


# --- preRollout ---------------------------------------------------------------------------


def test_a_pre_rollout_gate_runs_before_anything_and_touches_no_route() -> None:
    decision = tick(PRE, start(PRE, 1, T0), T0, look=Look())
    state = decision.state
    assert (state.phase, state.step) == (Phase.GATE_RUNNING, -1)
    assert state.gate is not None
    assert (state.gate.name, state.gate.point, state.gate.attempt) == (
        "evals",
        GatePoint.PRE_ROLLOUT,
        1,
    )
    assert state.reason == "gate evals running (webhook) before the rollout starts"
    assert route_actions(decision) == []
    [t] = decision.transitions
    assert (t.from_phase, t.to_phase, t.cause) == (Phase.PENDING, Phase.GATE_RUNNING, None)


def test_a_passing_pre_rollout_gate_starts_the_rollout() -> None:
    decision = tick(PRE, waiting(PRE), T0 + MIN, PASSED)
    assert (decision.state.phase, decision.state.step) == (Phase.PROGRESSING, 0)
    assert decision.state.gate is None
    assert decision.state.analysis_since == T0 + MIN  # the candidate serves from here
    assert [a.state.weight for a in decision.actions if isinstance(a, ApplyRoute)] == [5]
    [t] = decision.transitions
    assert t.gate == PASSED  # the answer is in the audit
    assert [a.event for a in decision.actions if isinstance(a, Notify)] == [EventKind.STARTED]


def test_a_failing_pre_rollout_gate_rolls_back_without_touching_the_route() -> None:
    decision = tick(PRE, waiting(PRE), T0 + MIN, FAILED)
    state = decision.state
    assert state.phase is Phase.ROLLED_BACK
    assert state.cause is Cause.GATE_FAILED
    assert state.reason == "gate evals failed: HTTP 500"
    assert route_actions(decision) == []  # no RestoreRoute either: nothing was routed
    [t] = decision.transitions
    assert (t.cause, t.gate) == (Cause.GATE_FAILED, FAILED)
    [note] = [a for a in decision.actions if isinstance(a, Notify)]
    assert (note.event, note.cause, note.gate, note.mention) == (
        EventKind.ROLLED_BACK,
        Cause.GATE_FAILED,
        FAILED,
        True,
    )


@pytest.mark.parametrize(
    ("outcome", "phase"),
    [
        pytest.param(None, Phase.GATE_RUNNING, id="no-result-yet"),
        pytest.param(GateOutcome.RUNNING, Phase.GATE_RUNNING, id="job-still-running"),
    ],
)
def test_a_running_gate_holds(outcome: GateOutcome | None, phase: Phase) -> None:
    gate = result(outcome) if outcome is not None else None
    decision = tick(JOB, waiting(JOB), T0 + 4 * MIN, gate)
    assert decision.state.phase is phase
    assert decision.transitions == ()
    assert route_actions(decision) == []


def test_a_result_of_another_attempt_is_not_this_attempts() -> None:
    stale = result(GateOutcome.PASSED, attempt=7)
    decision = tick(PRE, waiting(PRE), T0 + MIN, stale)
    assert decision.state.phase is Phase.GATE_RUNNING


def test_a_gate_that_runs_past_its_timeout_fails() -> None:
    state = waiting(JOB)
    assert tick(JOB, state, T0 + 4 * MIN, result(GateOutcome.RUNNING)).transitions == ()
    decision = tick(JOB, state, T0 + 5 * MIN, result(GateOutcome.RUNNING))
    assert decision.state.phase is Phase.ROLLED_BACK
    assert decision.state.reason == "gate evals failed: timed out after 5m"


def test_retries_then_on_failure() -> None:
    state = waiting(PRE_RETRY)
    first = tick(PRE_RETRY, state, T0 + MIN, FAILED)
    assert first.state.phase is Phase.GATE_RUNNING
    assert first.state.gate is not None and first.state.gate.attempt == 2
    assert first.state.reason == "gate evals failed: HTTP 500; attempt 2 of 3"
    assert first.transitions[0].gate == FAILED  # each failed attempt is in the audit
    second = tick(PRE_RETRY, first.state, T0 + 2 * MIN, result(GateOutcome.FAILED, attempt=2))
    third = tick(PRE_RETRY, second.state, T0 + 3 * MIN, result(GateOutcome.FAILED, attempt=3))
    assert third.state.phase is Phase.ROLLED_BACK


def test_a_retry_that_passes_starts_the_rollout() -> None:
    first = tick(PRE_RETRY, waiting(PRE_RETRY), T0 + MIN, FAILED)
    decision = tick(PRE_RETRY, first.state, T0 + 2 * MIN, result(GateOutcome.PASSED, attempt=2))
    assert decision.state.phase is Phase.PROGRESSING


def test_on_failure_pause_waits_for_a_human_and_resume_runs_the_gate_again() -> None:
    paused = tick(PRE_PAUSE, waiting(PRE_PAUSE), T0 + MIN, FAILED).state
    assert (paused.phase, paused.waiting, paused.cause) == (
        Phase.PAUSED,
        Waiting.GATE_FAILED,
        Cause.GATE_FAILED,
    )
    assert paused.gate is not None
    held = tick(PRE_PAUSE, paused, T0 + 2 * MIN, PASSED)  # a paused gate is not run
    assert held.state.phase is Phase.PAUSED and route_actions(held) == []
    resumed = tick(
        PRE_PAUSE, paused, T0 + 3 * MIN, commands=(Command(1, CommandKind.RESUME, "ana"),)
    ).state
    assert resumed.phase is Phase.GATE_RUNNING
    assert resumed.gate is not None and resumed.gate.attempt == 2  # a new attempt, a new Job


def test_promote_while_paused_on_a_gate_goes_on_without_it() -> None:
    paused = tick(PRE_PAUSE, waiting(PRE_PAUSE), T0 + MIN, FAILED).state
    decision = tick(
        PRE_PAUSE, paused, T0 + 2 * MIN, commands=(Command(1, CommandKind.PROMOTE, "ana"),)
    )
    assert (decision.state.phase, decision.state.step) == (Phase.PROGRESSING, 0)
    assert decision.transitions[-1].actor == "ana"


def test_on_failure_ignore_tells_the_owners_and_goes_on() -> None:
    decision = tick(PRE_IGNORE, waiting(PRE_IGNORE), T0 + MIN, FAILED)
    assert decision.state.phase is Phase.PROGRESSING
    events = [a.event for a in decision.actions if isinstance(a, Notify)]
    assert events == [EventKind.GATE_FAILED, EventKind.STARTED]


def test_two_gates_at_one_point_run_in_order() -> None:
    first = tick(TWO_PRE, waiting(TWO_PRE), T0 + MIN, PASSED)
    assert first.state.phase is Phase.GATE_RUNNING
    assert first.state.gate is not None and first.state.gate.name == "smoke"
    decision = tick(TWO_PRE, first.state, T0 + 2 * MIN, result(GateOutcome.PASSED, "smoke"))
    assert decision.state.phase is Phase.PROGRESSING


def test_abort_while_a_pre_rollout_gate_runs_leaves_the_route_alone() -> None:
    decision = tick(PRE, waiting(PRE), T0 + MIN, commands=(Command(1, CommandKind.ABORT, "ana"),))
    assert decision.state.phase is Phase.ABORTED
    assert route_actions(decision) == []


# --- beforeStep and beforePromotion --------------------------------------------------------


def progressing(spec: RolloutSpec, step: int) -> RolloutState:
    return RolloutState(
        phase=Phase.PROGRESSING,
        step=step,
        candidate_version="v2",
        generation=1,
        started_at=T0,
        phase_since=T0,
        step_since=T0,
        analysis_since=T0,
    )


def test_a_before_step_gate_holds_the_current_step_until_it_passes() -> None:
    state = progressing(STEP2, 0)
    entered = tick(STEP2, state, T0 + 11 * MIN)
    assert (entered.state.phase, entered.state.step) == (Phase.GATE_RUNNING, 0)
    assert entered.state.reason == "gate load running (webhook) before step 2"
    # the route keeps the current step's weights while the gate runs
    assert [a.state.weight for a in route_actions(entered) if isinstance(a, ApplyRoute)] == [5]
    held = tick(STEP2, entered.state, T0 + 12 * MIN, result(GateOutcome.RUNNING, "load"))
    assert [a.state.weight for a in route_actions(held) if isinstance(a, ApplyRoute)] == [5]
    passed = tick(STEP2, entered.state, T0 + 13 * MIN, result(GateOutcome.PASSED, "load"))
    assert (passed.state.phase, passed.state.step) == (Phase.PROGRESSING, 1)
    assert passed.state.reason == "step 2: 50% to candidate"


def test_a_failing_before_step_gate_rolls_back_and_restores_the_route_first() -> None:
    entered = tick(STEP2, progressing(STEP2, 0), T0 + 11 * MIN).state
    decision = tick(STEP2, entered, T0 + 12 * MIN, result(GateOutcome.FAILED, "load"))
    assert decision.state.phase is Phase.ROLLED_BACK
    assert isinstance(decision.actions[0], RestoreRoute)


def test_a_metric_failure_while_a_gate_runs_still_rolls_back() -> None:
    entered = tick(STEP2, progressing(STEP2, 0), T0 + 11 * MIN).state
    decision = tick(STEP2, entered, T0 + 12 * MIN, None, look=FAIL)
    assert (decision.state.phase, decision.state.cause) == (Phase.ROLLED_BACK, Cause.LIMIT_BROKEN)


def test_before_promotion_holds_the_last_step_until_the_gate_passes() -> None:
    last = progressing(PROMOTION, 2)
    entered = tick(PROMOTION, last, T0 + MIN)
    assert (entered.state.phase, entered.state.step) == (Phase.GATE_RUNNING, 2)
    for minutes in (2, 3, 4):
        held = tick(PROMOTION, entered.state, T0 + minutes * MIN, result(GateOutcome.RUNNING))
        assert held.state.phase is Phase.GATE_RUNNING
        assert [a.state.weight for a in route_actions(held) if isinstance(a, ApplyRoute)] == [100]
        assert not any(isinstance(a, RestoreRoute) for a in held.actions)
    promoted = tick(PROMOTION, entered.state, T0 + 5 * MIN, result(GateOutcome.PASSED, "signoff"))
    assert promoted.state.phase is Phase.PROMOTED
    assert RestoreRoute(promoted=True) in promoted.actions


def test_a_before_step_1_gate_runs_after_the_shadow() -> None:
    shadowing = RolloutState(
        phase=Phase.SHADOWING,
        step=-1,
        candidate_version="v2",
        generation=1,
        started_at=T0,
        phase_since=T0,
        step_since=T0,
        analysis_since=T0,
    )
    entered = tick(SHADOWED, shadowing, T0 + 6 * MIN)
    assert (entered.state.phase, entered.state.step) == (Phase.GATE_RUNNING, -1)
    [apply] = route_actions(entered)
    assert isinstance(apply, ApplyRoute) and apply.state.mirror_percent == 100  # still mirroring
    passed = tick(SHADOWED, entered.state, T0 + 7 * MIN, PASSED)
    assert (passed.state.phase, passed.state.step) == (Phase.PROGRESSING, 0)


# --- after the end ---------------------------------------------------------------------------


def test_a_post_rollout_gate_runs_after_the_promotion_and_only_reports() -> None:
    promoted = tick(AFTER, progressing(AFTER, 2), T0 + MIN).state
    assert promoted.phase is Phase.PROMOTED
    assert promoted.gate is not None and promoted.gate.point is GatePoint.POST_ROLLOUT
    failed = tick(AFTER, promoted, T0 + 2 * MIN, result(GateOutcome.FAILED, "report"))
    assert failed.state.phase is Phase.PROMOTED and failed.state.gate is None
    assert failed.transitions == ()
    [note] = failed.actions
    assert isinstance(note, Notify) and note.event is EventKind.GATE_FAILED
    assert tick(AFTER, failed.state, T0 + 3 * MIN).actions == ()


def test_an_on_rollback_gate_runs_after_a_rollback() -> None:
    rolled_back = tick(AFTER, progressing(AFTER, 0), T0 + MIN, look=FAIL).state
    assert rolled_back.phase is Phase.ROLLED_BACK
    assert rolled_back.gate is not None and rolled_back.gate.name == "incident"
    done = tick(AFTER, rolled_back, T0 + 2 * MIN, result(GateOutcome.PASSED, "incident"))
    assert done.state.gate is None and done.actions == ()


def test_the_gate_survives_a_restart_of_the_controller() -> None:
    state = waiting(PRE_RETRY)
    assert RolloutState.from_json(state.to_json()) == state
