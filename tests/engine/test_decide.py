"""The pure decision, as tables: given a state, a look and commands, what happens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.decide import (
    decide,
    end_deleted,
    fail,
    restart,
    route_written,
    start,
    wanted_route,
)
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
    RouteOutcome,
    Waiting,
)
from controller.policy import Cause, RolloutSpec, load_text
from controller.policy.route import RouteState
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
HOLD_SPEC = load_text(policy(("    window: 5m\n", "    window: 5m\n    advanceOn: hold\n")))[
    0
].rollout.spec
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
STRICT_SPEC = load_text(policy(("    window: 5m\n", "    window: 5m\n    advanceOn: pass\n")))[
    0
].rollout.spec
# The holds add up to 20m: the default deadline is 40m.
DEADLINE = 40 * MIN


def look(*verdicts: Verdict, critical: bool = True, **kw: object) -> Look:
    cohorts = ("overall", "mobile", "non-english")
    return Look(
        tuple(
            Cell(
                "refusal-rate",
                cohorts[i % 3],
                v,
                critical,
                summary=f"cell {i}",
                **(kw if v is not Verdict.PASS else {}),  # type: ignore[arg-type]
            )
            for i, v in enumerate(verdicts)
        )
    )


PASS = look(Verdict.PASS, Verdict.PASS, Verdict.PASS)
MIXED = look(Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS)
FAIL = look(Verdict.PASS, Verdict.FAIL, Verdict.PASS)
NODATA = look(Verdict.NO_DATA, Verdict.PASS, Verdict.PASS)
#: the candidate has fewer than minSamples requests in mobile
WAITING = look(Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS, waiting_for_traffic=True)
#: mobile is undecided, but its FAIL test had the power to catch a candidate at the limit
POWERED = look(Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS, powered=True)
BREAKER = look(Verdict.PASS, Verdict.FAIL, Verdict.PASS, breaker=True)


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
    assert (t.from_phase, t.to_phase, t.to_step, t.cause) == (
        Phase.PENDING,
        Phase.PROGRESSING,
        0,
        None,
    )


def test_a_rollout_with_shadow_mirrors_first() -> None:
    d = decide(SHADOW_SPEC, start(SHADOW_SPEC, 1, T0), None, [], T0)
    assert d.state.phase is Phase.SHADOWING
    assert d.actions[-1] == ApplyRoute(RouteState(mirror_percent=50))
    d = decide(SHADOW_SPEC, d.state, PASS, [], T0 + 4 * MIN)
    assert d.state.phase is Phase.SHADOWING  # duration not over
    d = decide(SHADOW_SPEC, d.state, PASS, [], T0 + 5 * MIN)
    assert (d.state.phase, d.state.step) == (Phase.PROGRESSING, 0)


def row(
    id: str,
    state: RolloutState,
    seen: Look,
    after: timedelta,
    phase: Phase,
    step: int,
    told: list[EventKind],
    cause: Cause | None = None,
    spec: RolloutSpec = SPEC,
) -> object:
    return pytest.param(spec, state, seen, after, phase, step, told, cause, id=id)


P, S, R, A = Phase.PROGRESSING, Phase.PAUSED, Phase.ROLLED_BACK, Phase.PROMOTED
E = EventKind
TABLE = [
    # advancing: the hold, no FAIL, minSamples; 100 % needs PASS or powered everywhere
    row("hold-not-over", at_step(0), PASS, 9 * MIN, P, 0, []),
    row("hold-over-all-pass", at_step(0), PASS, 10 * MIN, P, 1, [E.STEP_ADVANCED]),
    row("inconclusive-advances-before-100", at_step(0), MIXED, 10 * MIN, P, 1, [E.STEP_ADVANCED]),
    row("below-min-samples-holds", at_step(0), WAITING, 10 * MIN, P, 0, [E.HOLDING]),
    row("inconclusive-holds-before-100", at_step(1), MIXED, 10 * MIN, P, 1, [E.HOLDING]),
    row("powered-goes-to-100", at_step(1), POWERED, 10 * MIN, P, 2, [E.STEP_ADVANCED]),
    row("never-promotes-on-inconclusive", at_step(1), MIXED, 30 * MIN, P, 1, [E.HOLDING]),
    row("last-step-promotes", at_step(2), PASS, 0 * MIN, A, 2, [E.PROMOTED]),
    row("last-step-promotes-when-powered", at_step(2), POWERED, 0 * MIN, A, 2, [E.PROMOTED]),
    row("last-step-holds-on-inconclusive", at_step(2), MIXED, 0 * MIN, P, 2, [E.HOLDING]),
    row(
        "advisory-fail-ignored",
        at_step(0),
        look(Verdict.FAIL, critical=False),
        10 * MIN,
        P,
        1,
        [E.STEP_ADVANCED],
    ),
    # advanceOn: pass asks at every step what promotion asks
    row(
        "pass-holds-on-inconclusive",
        at_step(0),
        MIXED,
        10 * MIN,
        P,
        0,
        [E.HOLDING],
        None,
        STRICT_SPEC,
    ),
    row(
        "pass-advances-when-powered",
        at_step(0),
        POWERED,
        10 * MIN,
        P,
        1,
        [E.STEP_ADVANCED],
        None,
        STRICT_SPEC,
    ),
    # advanceOn: no-failure, written out, is the default
    row(
        "no-failure-advances-on-inconclusive",
        at_step(0),
        MIXED,
        10 * MIN,
        P,
        1,
        [E.STEP_ADVANCED],
        None,
        NO_FAILURE_SPEC,
    ),
    row(
        "no-failure-needs-pass-for-the-last-step",
        at_step(1),
        MIXED,
        10 * MIN,
        P,
        1,
        [E.HOLDING],
        None,
        NO_FAILURE_SPEC,
    ),
    row(
        "no-failure-all-pass-goes-to-the-last-step",
        at_step(1),
        PASS,
        10 * MIN,
        P,
        2,
        [E.STEP_ADVANCED],
        None,
        NO_FAILURE_SPEC,
    ),
    # advanceOn: hold advances below minSamples, but not to 100 % and never past a FAIL
    row("hold-waits-for-its-hold", at_step(0), WAITING, 9 * MIN, P, 0, [], None, HOLD_SPEC),
    row(
        "hold-advances-below-min-samples",
        at_step(0),
        WAITING,
        10 * MIN,
        P,
        1,
        [E.STEP_ADVANCED],
        None,
        HOLD_SPEC,
    ),
    row(
        "hold-needs-pass-or-power-for-the-last-step",
        at_step(1),
        WAITING,
        10 * MIN,
        P,
        1,
        [E.HOLDING],
        None,
        HOLD_SPEC,
    ),
    row(
        "hold-powered-goes-to-the-last-step",
        at_step(1),
        POWERED,
        10 * MIN,
        P,
        2,
        [E.STEP_ADVANCED],
        None,
        HOLD_SPEC,
    ),
    row(
        "hold-fail-rolls-back-at-once",
        at_step(0),
        FAIL,
        1 * MIN,
        R,
        0,
        [E.ROLLED_BACK],
        Cause.LIMIT_BROKEN,
        HOLD_SPEC,
    ),
    # failures roll back at once, named by what decided them
    row(
        "fail-rolls-back-at-once",
        at_step(0),
        FAIL,
        1 * MIN,
        R,
        0,
        [E.ROLLED_BACK],
        Cause.LIMIT_BROKEN,
    ),
    row(
        "breaker-rolls-back-at-once",
        at_step(0),
        BREAKER,
        1 * MIN,
        R,
        0,
        [E.ROLLED_BACK],
        Cause.CIRCUIT_BREAKER,
    ),
    row(
        "fail-on-the-last-step-rolls-back",
        at_step(2),
        FAIL,
        1 * MIN,
        R,
        2,
        [E.ROLLED_BACK],
        Cause.LIMIT_BROKEN,
    ),
    # failed measurements: noData
    row("no-data-holds", at_step(0), NODATA, 1 * MIN, P, 0, [E.HOLDING]),
    row(
        "outage-never-rolls-back-at-once",
        at_step(0),
        Look(error="Prometheus unreachable"),
        30 * MIN,
        P,
        0,
        [E.HOLDING],
    ),
    row(
        "no-data-timeout-pauses",
        at_step(0, no_data_since=T0),
        NODATA,
        10 * MIN,
        S,
        0,
        [E.PAUSED],
        Cause.NO_DATA,
    ),
    row(
        "no-data-timeout-rolls-back",
        at_step(0, spec=ROLLBACK_ON_NO_DATA, no_data_since=T0),
        NODATA,
        5 * MIN,
        R,
        0,
        [E.ROLLED_BACK],
        Cause.NO_DATA,
        ROLLBACK_ON_NO_DATA,
    ),
    row(
        "no-data-rolls-back-at-once",
        at_step(0, spec=ROLLBACK_ON_NO_DATA_AT_ONCE),
        NODATA,
        1 * MIN,
        R,
        0,
        [E.ROLLED_BACK],
        Cause.NO_DATA,
        ROLLBACK_ON_NO_DATA_AT_ONCE,
    ),
    row(
        "no-failure-holds-without-data",
        at_step(0),
        NODATA,
        10 * MIN,
        P,
        0,
        [E.HOLDING],
        None,
        NO_FAILURE_SPEC,
    ),
    # not enough evidence is not missing data: noData never applies, the deadline does
    row(
        "inconclusive-never-times-out-as-no-data",
        at_step(1, spec=ROLLBACK_ON_NO_DATA, undecided_since=T0 + 10 * MIN),
        MIXED,
        30 * MIN,
        P,
        1,
        [],
        None,
        ROLLBACK_ON_NO_DATA,
    ),
    row(
        "below-min-samples-never-times-out-as-no-data",
        at_step(0, spec=ROLLBACK_ON_NO_DATA, undecided_since=T0 + 10 * MIN),
        WAITING,
        30 * MIN,
        P,
        0,
        [],
        None,
        ROLLBACK_ON_NO_DATA,
    ),
    row(
        "undecided-at-the-deadline-pauses",
        at_step(1, undecided_since=T0 + 10 * MIN),
        MIXED,
        DEADLINE,
        S,
        1,
        [E.PAUSED],
        Cause.DEADLINE,
    ),
    row(
        "the-deadline-pauses-where-noData-would-roll-back",
        at_step(1, spec=ROLLBACK_ON_NO_DATA, undecided_since=T0 + 10 * MIN),
        MIXED,
        DEADLINE,
        S,
        1,
        [E.PAUSED],
        Cause.DEADLINE,
        ROLLBACK_ON_NO_DATA,
    ),
    row(
        "below-min-samples-at-the-deadline-pauses",
        at_step(0, undecided_since=T0 + 10 * MIN),
        WAITING,
        DEADLINE,
        S,
        0,
        [E.PAUSED],
        Cause.DEADLINE,
    ),
    row(
        "a-decided-rollout-past-the-deadline-advances",
        at_step(1),
        PASS,
        DEADLINE,
        P,
        2,
        [E.STEP_ADVANCED],
    ),
    # pauses kept for a human
    row(
        "step-pause-waits",
        at_step(1, spec=PAUSING_SPEC),
        PASS,
        10 * MIN,
        S,
        1,
        [E.PAUSED],
        Cause.MANUAL,
        PAUSING_SPEC,
    ),
    row(
        "gate-not-yet",
        at_step(0, spec=GATED_SPEC),
        PASS,
        10 * MIN,
        P,
        1,
        [E.STEP_ADVANCED],
        None,
        GATED_SPEC,
    ),
    row(
        "gate-before-100",
        at_step(1, spec=GATED_SPEC),
        PASS,
        10 * MIN,
        S,
        1,
        [E.PAUSED],
        Cause.MANUAL,
        GATED_SPEC,
    ),
]


@pytest.mark.parametrize(
    ("spec", "state", "seen", "after", "phase", "step", "told", "cause"), TABLE
)
def test_decision_table(
    spec: RolloutSpec,
    state: RolloutState,
    seen: Look,
    after: timedelta,
    phase: Phase,
    step: int,
    told: list[EventKind],
    cause: Cause | None,
) -> None:
    d = decide(spec, state, seen, [], T0 + after)
    assert (d.state.phase, d.state.step) == (phase, step), d.state.reason
    assert events(d.actions) == told
    assert d.state.tick == state.tick + 1
    assert [t.cause for t in d.transitions] == ([cause] if d.transitions else [])
    assert d.state.cause is (cause if d.transitions else state.cause)
    ending = [a for a in d.actions if isinstance(a, Notify) and a.event is not E.HOLDING]
    assert [a.cause for a in ending] == [cause] * len(ending)


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


@pytest.mark.parametrize(
    ("ended", "actions"),
    [
        pytest.param(Phase.ROLLED_BACK, (RestoreRoute(promoted=False),), id="rolled-back"),
        pytest.param(Phase.FAILED, (RestoreRoute(promoted=False),), id="failed"),
        pytest.param(Phase.PROMOTED, (RestoreRoute(promoted=True),), id="promoted"),
    ],
)
def test_an_ended_rollout_whose_restore_failed_restores_again(
    ended: Phase, actions: tuple[RestoreRoute, ...]
) -> None:
    done = at_step(1).evolve(phase=ended, restore_pending=True)
    d = decide(SPEC, done, None, [], T0)
    assert (d.state, d.actions, d.transitions) == (done, actions, ())
    assert end_deleted(SPEC, done, T0).actions == actions


@pytest.mark.parametrize(
    ("generation", "stamped"),
    [
        pytest.param(None, 1, id="unknown-keeps-the-state's"),
        pytest.param(1, 1, id="same"),
        pytest.param(4, 4, id="edited-policy"),
    ],
)
def test_the_state_records_the_policy_generation_it_was_decided_on(
    generation: int | None, stamped: int
) -> None:
    assert decide(SPEC, at_step(1), PASS, [], T0, generation=generation).state.generation == (
        stamped
    )


GONE = Notify(
    EventKind.FAILED,
    "the route cannot be written: route gone",
    mention=True,
    cause=Cause.ROUTE_FAILED,
)
ROUTE_OUTCOMES = [
    # (name, state, outcome, phase, restore_pending, actions)
    pytest.param(at_step(1), RouteOutcome(), Phase.PROGRESSING, False, (), id="applied"),
    pytest.param(
        at_step(1).evolve(phase=Phase.ROLLED_BACK),
        RouteOutcome(restored=True),
        Phase.ROLLED_BACK,
        False,
        (),
        id="restored",
    ),
    pytest.param(
        at_step(1).evolve(phase=Phase.ROLLED_BACK),
        RouteOutcome(restored=False),
        Phase.ROLLED_BACK,
        True,
        (),
        id="restore-failed-is-queued",
    ),
    pytest.param(
        at_step(1).evolve(phase=Phase.ROLLED_BACK, restore_pending=True),
        RouteOutcome(restored=True),
        Phase.ROLLED_BACK,
        False,
        (),
        id="queued-restore-done",
    ),
    pytest.param(
        at_step(1),
        RouteOutcome(unroutable="route gone"),
        Phase.FAILED,
        False,
        (
            RestoreRoute(promoted=False),
            Notify(
                EventKind.FAILED,
                "the route cannot be written: route gone",
                mention=True,
                cause=Cause.ROUTE_FAILED,
            ),
        ),
        id="unroutable-fails",
    ),
    pytest.param(
        at_step(1).evolve(phase=Phase.ABORTED),
        RouteOutcome(restored=True, unroutable="route gone"),
        Phase.ABORTED,
        False,
        (),
        id="unroutable-after-the-end-changes-nothing",
    ),
]


@pytest.mark.parametrize(("state", "outcome", "phase", "pending", "actions"), ROUTE_OUTCOMES)
def test_what_follows_from_the_route_writes(
    state: RolloutState,
    outcome: RouteOutcome,
    phase: Phase,
    pending: bool,
    actions: tuple[object, ...],
) -> None:
    after = route_written(SPEC, state, outcome, T0)
    assert (after.state.phase, after.state.restore_pending, after.actions) == (
        phase,
        pending,
        actions,
    )
    assert [t.cause for t in after.transitions] == (
        [Cause.ROUTE_FAILED] if phase is not state.phase else []
    )


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


@pytest.mark.parametrize(("kind", "phase", "step"), COMMANDS)
def test_what_a_human_asks_for_is_caused_manually(
    kind: CommandKind, phase: Phase, step: int
) -> None:
    d = decide(SPEC, at_step(1), MIXED, [Command(7, kind, "alice")], T0 + MIN)
    assert all(t.cause is Cause.MANUAL for t in d.transitions)
    told = [a for a in d.actions if isinstance(a, Notify)]
    assert all(a.cause is Cause.MANUAL for a in told)
    assert bool(d.transitions) == (kind is not CommandKind.RESUME)


def test_the_other_endings_name_their_cause() -> None:
    assert fail(SPEC, at_step(1), "the route is gone", T0).transitions[0].cause is (
        Cause.ROUTE_FAILED
    )
    assert end_deleted(SPEC, at_step(1), T0).transitions[0].cause is Cause.MANUAL
    assert restart(SPEC, at_step(1), 2, T0).transitions[0].cause is None  # not an ending


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
    first = decide(SPEC, at_step(0), WAITING, [], T0 + 10 * MIN)
    second = decide(SPEC, first.state, WAITING, [], T0 + 11 * MIN)
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
    state = at_step(1, no_data_since=T0, command_cursor=4).evolve(
        waiting=Waiting.DEADLINE, cause=Cause.DEADLINE, deadline_from=T0 + MIN
    )
    assert RolloutState.from_json(state.to_json()) == state


def test_a_state_stored_before_causes_and_deadlines_still_loads() -> None:
    stored = at_step(1).to_json()
    del stored["cause"], stored["deadlineFrom"], stored["stepStarts"]
    state = RolloutState.from_json({**stored, "waiting": "inconclusive"})
    assert (state.cause, state.deadline_start, state.step_starts) == (None, state.started_at, ())


def test_step_starts_survive_the_json_form() -> None:
    state = at_step(1, step_starts=(T0 + MIN, T0 + 11 * MIN))
    assert RolloutState.from_json(state.to_json()).step_starts == (T0 + MIN, T0 + 11 * MIN)


def test_passed_cells_survive_the_json_form_and_older_states_have_none() -> None:
    state = at_step(1, passed=(("refusal-rate", "mobile"), ("error-rate", "overall")))
    assert RolloutState.from_json(state.to_json()).passed == state.passed
    stored = state.to_json()
    del stored["passed"]
    assert RolloutState.from_json(stored).passed == ()


#: mobile PASSed at an earlier look and is INCONCLUSIVE now (noise took it back under)
ONCE_PASSED = look(Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.PASS)


@pytest.mark.parametrize(
    ("first", "then", "phase", "step"),
    [
        pytest.param(PASS, ONCE_PASSED, P, 2, id="a-pass-is-kept-for-100"),
        pytest.param(MIXED, ONCE_PASSED, P, 1, id="never-passed-still-holds"),
        pytest.param(PASS, FAIL, R, 1, id="a-kept-pass-never-stops-a-fail"),
    ],
)
def test_a_cell_that_passed_once_stays_passed(
    first: Look, then: Look, phase: Phase, step: int
) -> None:
    """PASS is anytime-valid: once crossed it counts for 100 % at every later look."""
    state = decide(SPEC, at_step(1), first, [], T0 + 5 * MIN).state  # during the hold
    assert state.step == 1
    passed = {(c.metric, c.cohort) for c in first.cells if c.verdict is Verdict.PASS}
    assert set(state.passed) == passed
    d = decide(SPEC, state, then, [], T0 + 10 * MIN)
    assert (d.state.phase, d.state.step) == (phase, step)


def test_a_kept_pass_is_only_for_the_cell_that_passed() -> None:
    other = Look(
        (
            *ONCE_PASSED.cells,
            Cell("error-rate", "mobile", Verdict.INCONCLUSIVE),
        )
    )
    state = decide(SPEC, at_step(1), PASS, [], T0 + 5 * MIN).state
    d = decide(SPEC, state, other, [], T0 + 10 * MIN)
    assert (d.state.phase, d.state.step) == (P, 1)
    [held] = [a for a in d.actions if isinstance(a, Notify)]
    assert [c.metric for c in held.cells] == ["error-rate"]


def test_a_restart_forgets_the_passed_cells() -> None:
    state = decide(SPEC, at_step(1), PASS, [], T0 + 5 * MIN).state
    assert state.passed
    assert restart(SPEC, state, 2, T0 + 6 * MIN).state.passed == ()


def drive(spec: RolloutSpec, *moves: tuple[timedelta, Look | None, list[Command]]) -> RolloutState:
    state = start(spec, 1, T0)
    for after, seen, commands in moves:
        state = decide(spec, state, seen, commands, T0 + after).state
    return state


@pytest.mark.parametrize(
    ("spec", "moves", "starts"),
    [
        pytest.param(SPEC, [(0 * MIN, None, [])], (), id="the-first-step-is-not-a-start"),
        pytest.param(
            SPEC,
            [(0 * MIN, None, []), (10 * MIN, PASS, [])],
            (T0 + 10 * MIN,),
            id="each-step-advanced-to",
        ),
        pytest.param(
            SPEC,
            [(0 * MIN, None, []), (3 * MIN, None, [Command(1, CommandKind.PROMOTE, "ann")])],
            (T0 + 3 * MIN,),
            id="a-step-promoted-to-by-hand",
        ),
        pytest.param(
            SPEC,
            [
                (0 * MIN, None, []),
                (2 * MIN, None, [Command(1, CommandKind.PAUSE, "ann")]),
                (4 * MIN, None, [Command(2, CommandKind.RESUME, "ann")]),
            ],
            (),
            id="a-resume-is-the-same-step",
        ),
        pytest.param(
            SHADOW_SPEC,
            [(0 * MIN, None, []), (5 * MIN, PASS, [])],
            (T0 + 5 * MIN,),
            id="the-step-after-the-shadow",
        ),
        pytest.param(
            SPEC,
            [(0 * MIN, None, []), (10 * MIN, PASS, []), (20 * MIN, PASS, [])],
            (T0 + 10 * MIN, T0 + 20 * MIN),
            id="oldest-first",
        ),
    ],
)
def test_the_start_of_each_step_after_the_first_is_recorded(
    spec: RolloutSpec,
    moves: list[tuple[timedelta, Look | None, list[Command]]],
    starts: tuple[datetime, ...],
) -> None:
    assert drive(spec, *moves).step_starts == starts


def test_a_restart_forgets_the_step_starts() -> None:
    d = restart(SPEC, at_step(1, step_starts=(T0 + MIN,)), 2, T0 + 2 * MIN)
    assert d.state.step_starts == ()


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


def test_the_deadline_pause_lists_what_each_undecided_cell_needs() -> None:
    undecided = Look(
        (
            Cell("refusal-rate", "overall", Verdict.PASS),
            Cell(
                "quality-score",
                "power-users",
                Verdict.INCONCLUSIVE,
                candidate_samples=2400.0,
                needed_samples=1200.0,
            ),
            Cell("error-rate", "mobile", Verdict.INCONCLUSIVE),
            Cell("refusal-rate", "mobile", Verdict.PASS, critical=False),
        )
    )
    d = decide(SPEC, at_step(1, undecided_since=T0 + 10 * MIN), undecided, [], T0 + DEADLINE)
    assert (d.state.phase, d.state.waiting, d.state.cause) == (
        Phase.PAUSED,
        Waiting.DEADLINE,
        Cause.DEADLINE,
    )
    # 2,400 samples in 40 minutes is 1/s: 1,200 more take 20 minutes
    assert d.state.reason == (
        "undecided at the deadline (40m): quality-score in power-users: ~1,200 more candidate"
        " samples (about 20m at 1/s, the rate so far); error-rate in mobile: inconclusive,"
        " further samples needed unknown"
    )
    [told] = [a for a in d.actions if isinstance(a, Notify)]
    assert told.mention and told.cause is Cause.DEADLINE
    assert [(c.metric, c.cohort) for c in told.cells] == [
        ("quality-score", "power-users"),
        ("error-rate", "mobile"),
    ]
    assert "1,200 more candidate samples" in told.cells[0].summary
    assert not any(isinstance(a, RestoreRoute) for a in d.actions)  # never a rollback


def test_below_min_samples_at_the_deadline_says_how_many_requests_are_missing() -> None:
    few = Look(
        (
            Cell(
                "refusal-rate",
                "mobile",
                Verdict.INCONCLUSIVE,
                waiting_for_traffic=True,
                candidate_samples=120.0,
            ),
        )
    )
    d = decide(SPEC, at_step(0), few, [], T0 + DEADLINE)
    assert d.state.reason == (
        "undecided at the deadline (40m): refusal-rate in mobile: 80 more candidate requests"
        " to reach minSamples (about 26m40s at 0.05/s, the rate so far)"
    )


def test_resuming_a_deadline_pause_gives_the_cells_another_deadline() -> None:
    paused = decide(SPEC, at_step(1, undecided_since=T0), MIXED, [], T0 + DEADLINE).state
    assert paused.waiting is Waiting.DEADLINE
    resume = [Command(1, CommandKind.RESUME, "erin")]
    resumed = decide(SPEC, paused, MIXED, resume, T0 + DEADLINE + 5 * MIN).state
    assert (resumed.phase, resumed.cause) == (Phase.PROGRESSING, Cause.MANUAL)
    assert resumed.deadline_start == T0 + DEADLINE + 5 * MIN
    still = decide(SPEC, resumed, MIXED, [], T0 + 2 * DEADLINE).state
    assert still.phase is Phase.PROGRESSING
    again = decide(SPEC, still, MIXED, [], T0 + 2 * DEADLINE + 5 * MIN).state
    assert (again.phase, again.waiting) == (Phase.PAUSED, Waiting.DEADLINE)


def test_time_paused_by_a_human_does_not_count_toward_the_deadline() -> None:
    paused = decide(SPEC, at_step(1), MIXED, [Command(1, CommandKind.PAUSE, "bob")], T0).state
    resumed = decide(
        SPEC, paused, MIXED, [Command(2, CommandKind.RESUME, "bob")], T0 + 30 * MIN
    ).state
    assert resumed.deadline_start == T0 + 30 * MIN
    held = decide(SPEC, resumed, MIXED, [], T0 + DEADLINE + 10 * MIN).state
    assert held.phase is Phase.PROGRESSING  # 40m of running time, but 30m of it paused
    assert decide(SPEC, held, MIXED, [], T0 + DEADLINE + 30 * MIN).state.phase is Phase.PAUSED


def test_promoting_by_hand_past_a_deadline_pause_goes_on() -> None:
    paused = decide(SPEC, at_step(1, undecided_since=T0), MIXED, [], T0 + DEADLINE).state
    promoted = decide(
        SPEC, paused, MIXED, [Command(1, CommandKind.PROMOTE, "erin")], T0 + DEADLINE + MIN
    )
    assert (promoted.state.phase, promoted.state.step) == (Phase.PROGRESSING, 2)
    assert promoted.transitions[0].cause is Cause.MANUAL


def test_a_healthy_candidate_that_stays_inconclusive_is_never_rolled_back() -> None:
    """Even with `noData: {then: rollback}`: only a human ends an undecided rollout."""
    state, now = start(ROLLBACK_ON_NO_DATA, 1, T0), T0
    for _ in range(180):
        state = decide(ROLLBACK_ON_NO_DATA, state, MIXED, [], now).state
        now += MIN
    assert (state.phase, state.step, state.cause) == (Phase.PAUSED, 1, Cause.DEADLINE)
