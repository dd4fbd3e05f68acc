"""The pure decision, as tables: given a state, a look and commands, what happens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.decide import decide, end_deleted, restart, start, wanted_route
from controller.engine.phases import ALLOWED, Phase, check_transition
from controller.engine.state import (
    ApplyRoute,
    Cell,
    Command,
    CommandKind,
    EventKind,
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    Waiting,
)
from controller.policy import RolloutSpec, load_text
from controller.routing.base import RouteState
from tests.policy.base import policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)

# Steps 5 (hold 10m, mobile at 10) -> 50 (hold 10m) -> 100; noData: hold 10m, then pause.
SPEC = load_text(policy())[0].rollout.spec
SHADOW_SPEC = load_text(
    policy(("  analysis:\n", "  shadow: {mirrorPercent: 50, duration: 5m}\n  analysis:\n"))
)[0].rollout.spec
GATED_SPEC = load_text(policy() + "  promotion: {manualGate: true}\n")[0].rollout.spec
PAUSING_SPEC = load_text(
    policy(("{weight: 50, hold: 10m}", "{weight: 50, hold: 10m, pause: true}"))
)[0].rollout.spec
NO_FAILURE_SPEC = load_text(
    policy(("    window: 5m\n", "    window: 5m\n    advanceOn: no-failure\n"))
)[0].rollout.spec
ROLLBACK_ON_NO_DATA = load_text(
    policy(
        (
            "    window: 5m\n",
            "    window: 5m\n    noData: {action: hold, timeout: 5m, then: rollback}\n",
        )
    )
)[0].rollout.spec

ROLLBACK_ON_NO_DATA_AT_ONCE = load_text(
    policy(("    window: 5m\n", "    window: 5m\n    noData: {action: rollback}\n"))
)[0].rollout.spec


def look(*verdicts: Verdict, critical: bool = True) -> Look:
    cohorts = ("overall", "mobile", "non-english")
    return Look(
        tuple(
            Cell("refusal-rate", cohorts[i % 3], v, critical, summary=f"cell {i}")
            for i, v in enumerate(verdicts)
        )
    )


PASS = look(Verdict.PASS, Verdict.PASS, Verdict.PASS)
MIXED = look(Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS)
FAIL = look(Verdict.PASS, Verdict.FAIL, Verdict.PASS)
NODATA = look(Verdict.NO_DATA, Verdict.PASS, Verdict.PASS)


def at_step(
    step: int, since: datetime = T0, spec: RolloutSpec = SPEC, **kw: object
) -> RolloutState:
    state = start(spec, 1, T0).evolve(
        phase=Phase.PROGRESSING, step=step, phase_since=since, step_since=since, **kw
    )
    return state.evolve(route=wanted_route(spec, Phase.PROGRESSING, step))


def events(decision_actions: tuple[object, ...]) -> list[EventKind]:
    return [a.event for a in decision_actions if isinstance(a, Notify)]


def test_a_new_rollout_starts_at_the_first_step() -> None:
    d = decide(SPEC, start(SPEC, 1, T0), None, [], T0)
    assert (d.state.phase, d.state.step) == (Phase.PROGRESSING, 0)
    assert d.actions[-1] == ApplyRoute(RouteState(5, {"mobile": 10}))
    assert events(d.actions) == [EventKind.STARTED]
    [t] = d.transitions
    assert (t.from_phase, t.to_phase, t.to_step) == (Phase.PENDING, Phase.PROGRESSING, 0)


def test_a_rollout_with_shadow_mirrors_first() -> None:
    d = decide(SHADOW_SPEC, start(SHADOW_SPEC, 1, T0), None, [], T0)
    assert d.state.phase is Phase.SHADOWING
    assert d.actions[-1] == ApplyRoute(RouteState(mirror_percent=50))
    d = decide(SHADOW_SPEC, d.state, PASS, [], T0 + 4 * MIN)
    assert d.state.phase is Phase.SHADOWING  # duration not over
    d = decide(SHADOW_SPEC, d.state, PASS, [], T0 + 5 * MIN)
    assert (d.state.phase, d.state.step) == (Phase.PROGRESSING, 0)


TABLE = [
    # (spec, state, look, time since T0, expected phase, step, events told)
    pytest.param(SPEC, at_step(0), PASS, 9 * MIN, Phase.PROGRESSING, 0, [], id="hold-not-over"),
    pytest.param(
        SPEC,
        at_step(0),
        PASS,
        10 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.STEP_ADVANCED],
        id="hold-over-all-pass",
    ),
    pytest.param(
        SPEC,
        at_step(0),
        MIXED,
        10 * MIN,
        Phase.PROGRESSING,
        0,
        [EventKind.HOLDING],
        id="inconclusive-holds",
    ),
    pytest.param(
        SPEC,
        at_step(0),
        FAIL,
        1 * MIN,
        Phase.ROLLED_BACK,
        0,
        [EventKind.ROLLED_BACK],
        id="fail-rolls-back-at-once",
    ),
    pytest.param(
        NO_FAILURE_SPEC,
        at_step(0, spec=NO_FAILURE_SPEC),
        MIXED,
        10 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.STEP_ADVANCED],
        id="no-failure-advances-on-inconclusive",
    ),
    pytest.param(
        NO_FAILURE_SPEC,
        at_step(1, spec=NO_FAILURE_SPEC),
        MIXED,
        10 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.HOLDING],
        id="no-failure-needs-every-pass-for-the-last-step",
    ),
    pytest.param(
        NO_FAILURE_SPEC,
        at_step(1, spec=NO_FAILURE_SPEC),
        PASS,
        10 * MIN,
        Phase.PROGRESSING,
        2,
        [EventKind.STEP_ADVANCED],
        id="no-failure-all-pass-goes-to-the-last-step",
    ),
    pytest.param(
        NO_FAILURE_SPEC,
        at_step(0, spec=NO_FAILURE_SPEC),
        FAIL,
        10 * MIN,
        Phase.ROLLED_BACK,
        0,
        [EventKind.ROLLED_BACK],
        id="no-failure-still-rolls-back-on-fail",
    ),
    pytest.param(
        NO_FAILURE_SPEC,
        at_step(0, spec=NO_FAILURE_SPEC),
        NODATA,
        10 * MIN,
        Phase.PROGRESSING,
        0,
        [EventKind.HOLDING],
        id="no-failure-holds-without-data",
    ),
    pytest.param(
        SPEC,
        at_step(0),
        look(Verdict.FAIL, critical=False),
        10 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.STEP_ADVANCED],
        id="advisory-fail-ignored",
    ),
    pytest.param(
        SPEC,
        at_step(0),
        NODATA,
        1 * MIN,
        Phase.PROGRESSING,
        0,
        [EventKind.HOLDING],
        id="no-data-holds",
    ),
    pytest.param(
        SPEC,
        at_step(0),
        Look(error="Prometheus unreachable"),
        30 * MIN,
        Phase.PROGRESSING,
        0,
        [EventKind.HOLDING],
        id="outage-never-rolls-back-at-once",
    ),
    pytest.param(
        SPEC,
        at_step(0, no_data_since=T0),
        NODATA,
        10 * MIN,
        Phase.PAUSED,
        0,
        [EventKind.PAUSED],
        id="no-data-timeout-pauses",
    ),
    pytest.param(
        ROLLBACK_ON_NO_DATA,
        at_step(0, spec=ROLLBACK_ON_NO_DATA, no_data_since=T0),
        NODATA,
        5 * MIN,
        Phase.ROLLED_BACK,
        0,
        [EventKind.ROLLED_BACK],
        id="no-data-timeout-rolls-back",
    ),
    pytest.param(
        ROLLBACK_ON_NO_DATA_AT_ONCE,
        at_step(0, spec=ROLLBACK_ON_NO_DATA_AT_ONCE),
        NODATA,
        1 * MIN,
        Phase.ROLLED_BACK,
        0,
        [EventKind.ROLLED_BACK],  # one message: no "holding" just before it
        id="no-data-rolls-back-at-once",
    ),
    pytest.param(
        SPEC,
        at_step(0, undecided_since=T0 + 10 * MIN),
        MIXED,
        20 * MIN,
        Phase.PAUSED,
        0,
        [EventKind.PAUSED],
        id="inconclusive-timeout-pauses",
    ),
    pytest.param(
        SPEC,
        at_step(2),
        PASS,
        0 * MIN,
        Phase.PROMOTED,
        2,
        [EventKind.PROMOTED],
        id="last-step-promotes",
    ),
    pytest.param(
        SPEC,
        at_step(1),
        MIXED,
        30 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.HOLDING],
        id="never-promotes-on-inconclusive",
    ),
    pytest.param(
        PAUSING_SPEC,
        at_step(1, spec=PAUSING_SPEC),
        PASS,
        10 * MIN,
        Phase.PAUSED,
        1,
        [EventKind.PAUSED],
        id="step-pause-waits",
    ),
    pytest.param(
        GATED_SPEC,
        at_step(0, spec=GATED_SPEC),
        PASS,
        10 * MIN,
        Phase.PROGRESSING,
        1,
        [EventKind.STEP_ADVANCED],
        id="gate-not-yet",
    ),
    pytest.param(
        GATED_SPEC,
        at_step(1, spec=GATED_SPEC),
        PASS,
        10 * MIN,
        Phase.PAUSED,
        1,
        [EventKind.PAUSED],
        id="gate-before-100",
    ),
]


@pytest.mark.parametrize(("spec", "state", "seen", "after", "phase", "step", "told"), TABLE)
def test_decision_table(
    spec: RolloutSpec,
    state: RolloutState,
    seen: Look,
    after: timedelta,
    phase: Phase,
    step: int,
    told: list[EventKind],
) -> None:
    d = decide(spec, state, seen, [], T0 + after)
    assert (d.state.phase, d.state.step) == (phase, step), d.state.reason
    assert events(d.actions) == told
    assert d.state.tick == state.tick + 1


def test_rollback_restores_the_route_before_anything_else() -> None:
    d = decide(SPEC, at_step(1), FAIL, [], T0 + MIN)
    assert d.actions[0] == RestoreRoute(promoted=False)
    notify = next(a for a in d.actions if isinstance(a, Notify))
    assert notify.mention
    assert [c.cohort for c in notify.cells] == ["mobile"]
    assert "refusal-rate in mobile: cell 1" in d.state.reason
    assert not any(isinstance(a, ApplyRoute) for a in d.actions)


def test_promotion_keeps_the_candidate() -> None:
    d = decide(SPEC, at_step(2), PASS, [], T0)
    assert RestoreRoute(promoted=True) in d.actions


def test_what_the_route_serves_after_the_end_is_the_baseline_or_the_candidate() -> None:
    running = at_step(1)
    assert running.serving() == running.route and running.route.weight > 0
    rolled_back = decide(SPEC, running, FAIL, [], T0 + MIN).state
    assert rolled_back.route == running.route  # the last state written, for the record
    assert rolled_back.serving() == RouteState(weight=0)
    assert rolled_back.evolve(restore_pending=True).serving() == running.route
    promoted = decide(SPEC, at_step(2), PASS, [], T0).state
    assert promoted.serving() == RouteState(weight=100)


def test_a_terminal_rollout_does_nothing() -> None:
    done = at_step(1).evolve(phase=Phase.ROLLED_BACK)
    d = decide(SPEC, done, FAIL, [Command(1, CommandKind.RESUME, "alice")], T0)
    assert d.state == done
    assert d.actions == ()


COMMANDS = [
    pytest.param(CommandKind.ABORT, Phase.ABORTED, 1, id="abort"),
    pytest.param(CommandKind.PAUSE, Phase.PAUSED, 1, id="pause"),
    pytest.param(CommandKind.PROMOTE, Phase.PROGRESSING, 2, id="promote-next-step"),
    pytest.param(CommandKind.PROMOTE_FULL, Phase.PROMOTED, 2, id="promote-full"),
    pytest.param(CommandKind.RESUME, Phase.PROGRESSING, 1, id="resume-when-running-is-a-no-op"),
]


@pytest.mark.parametrize(("kind", "phase", "step"), COMMANDS)
def test_commands(kind: CommandKind, phase: Phase, step: int) -> None:
    cmd = Command(7, kind, "alice", "by hand")
    d = decide(SPEC, at_step(1), MIXED, [cmd], T0 + MIN)
    assert (d.state.phase, d.state.step) == (phase, step)
    assert d.state.command_cursor == 7
    assert d.applied_commands == (cmd,)
    assert all(t.actor == "alice" for t in d.transitions)


def test_a_command_is_applied_once() -> None:
    cmd = Command(3, CommandKind.PROMOTE, "alice")
    first = decide(SPEC, at_step(0), MIXED, [cmd], T0 + MIN)
    second = decide(SPEC, first.state, MIXED, [cmd], T0 + 2 * MIN)
    assert (first.state.step, second.state.step) == (1, 1)
    assert second.applied_commands == ()


def test_pause_then_resume_returns_to_the_step() -> None:
    paused = decide(SPEC, at_step(1), MIXED, [Command(1, CommandKind.PAUSE, "bob")], T0).state
    assert (paused.phase, paused.waiting, paused.route.weight) == (
        Phase.PAUSED,
        Waiting.OPERATOR,
        50,
    )
    idle = decide(SPEC, paused, PASS, [], T0 + 30 * MIN)
    assert idle.state.phase is Phase.PAUSED  # waits for a human even when all pass
    assert idle.actions == (ApplyRoute(paused.route),)  # but keeps the route as recorded
    resumed = decide(
        SPEC, idle.state, MIXED, [Command(2, CommandKind.RESUME, "bob")], T0 + 31 * MIN
    )
    assert (resumed.state.phase, resumed.state.step) == (Phase.PROGRESSING, 1)


def test_a_fail_while_paused_still_rolls_back() -> None:
    paused = decide(SPEC, at_step(1), MIXED, [Command(1, CommandKind.PAUSE, "bob")], T0).state
    assert decide(SPEC, paused, FAIL, [], T0 + MIN).state.phase is Phase.ROLLED_BACK


def test_the_manual_gate_waits_for_promote() -> None:
    gated = decide(GATED_SPEC, at_step(1, spec=GATED_SPEC), PASS, [], T0 + 10 * MIN).state
    assert (gated.phase, gated.waiting) == (Phase.PAUSED, Waiting.MANUAL_GATE)
    promoted = decide(
        GATED_SPEC, gated, PASS, [Command(1, CommandKind.PROMOTE, "carol")], T0 + 11 * MIN
    )
    assert (promoted.state.phase, promoted.state.step) == (Phase.PROGRESSING, 2)
    assert promoted.actions[-1] == ApplyRoute(RouteState(100))


def test_a_step_pause_resumes_to_the_next_step() -> None:
    paused = decide(PAUSING_SPEC, at_step(1, spec=PAUSING_SPEC), PASS, [], T0 + 10 * MIN).state
    assert paused.waiting is Waiting.STEP_PAUSE
    resumed = decide(
        PAUSING_SPEC, paused, PASS, [Command(1, CommandKind.RESUME, "d")], T0 + 11 * MIN
    )
    assert (resumed.state.phase, resumed.state.step) == (Phase.PROGRESSING, 2)


def test_holding_is_told_once_per_episode() -> None:
    first = decide(SPEC, at_step(0), MIXED, [], T0 + 10 * MIN)
    second = decide(SPEC, first.state, MIXED, [], T0 + 11 * MIN)
    assert events(first.actions) == [EventKind.HOLDING]
    assert events(second.actions) == []
    assert "not enough traffic yet in mobile" in next(
        a.text for a in first.actions if isinstance(a, Notify)
    )


def test_a_whole_rollout_steps_through_every_weight() -> None:
    state, now, weights = start(SPEC, 1, T0), T0, []
    while not state.phase.terminal:
        d = decide(SPEC, state, PASS, [], now)
        weights += [a.state.weight for a in d.actions if isinstance(a, ApplyRoute)]
        state, now = d.state, now + MIN
    assert state.phase is Phase.PROMOTED
    assert sorted(set(weights)) == [5, 50, 100]
    assert state.tick > 20


def test_restart_on_a_new_candidate_goes_back_to_the_baseline_first() -> None:
    d = restart(SPEC, at_step(1), 2, T0 + MIN)
    assert d.actions[0] == RestoreRoute(promoted=False)
    assert (d.state.phase, d.state.step, d.state.generation) == (Phase.PENDING, -1, 2)
    assert d.state.analysis_since == T0 + MIN


def test_a_deleted_rollout_ends_with_the_route_restored() -> None:
    d = end_deleted(SPEC, at_step(1), T0)
    assert d.state.phase is Phase.ABORTED
    assert d.actions[0] == RestoreRoute(promoted=False)


def test_state_survives_its_json_form() -> None:
    state = at_step(1, no_data_since=T0, command_cursor=4).evolve(waiting=Waiting.NO_DATA)
    assert RolloutState.from_json(state.to_json()) == state


@pytest.mark.parametrize("src", list(Phase))
def test_the_transition_table_is_explicit(src: Phase) -> None:
    for dst in Phase:
        if dst in ALLOWED[src]:
            check_transition(src, dst)
        else:
            with pytest.raises(Exception, match="not an allowed transition"):
                check_transition(src, dst)
    if src.terminal:
        assert ALLOWED[src] == {Phase.PENDING}
