"""The pure rollout decision: `decide(spec, state, look, commands, now) -> Decision`.

No I/O and no clock: time, verdicts and commands are arguments, so every rule is a
row in a table test. The executor performs the returned actions in order; a
rollback's `RestoreRoute` is always the first action of its tick.

The rules, per tick:
1. Commands from humans first, in the order given (abort, pause, resume, promote).
2. A FAIL of a critical metric in any live phase rolls back at once.
3. No data (the source failed, or a critical cell has none): hold, or roll back
   if `noData.action` says so; after `noData.timeout`, `noData.then`.
4. Once the hold (or shadow duration) has passed, advance when every critical
   cell is PASS. INCONCLUSIVE holds; if it lasts `noData.timeout` past the hold,
   `noData.then` applies too: a rollout is never promoted on a guess.
5. A step with `pause: true`, and the step before 100% under a manual gate, wait
   for `canaryctl promote` / `resume`.
6. The wanted route is recomputed every tick (level-triggered): the router reads
   the route back and re-applies it if someone changed it by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from controller.analysis.verdicts import Verdict
from controller.engine.phases import Phase, check_transition
from controller.engine.state import (
    Action,
    ApplyRoute,
    Cell,
    Command,
    CommandKind,
    Decision,
    EventKind,
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    Transition,
    Waiting,
)
from controller.policy import AdvanceOn, NoDataAction, NoDataTimeout, RolloutSpec
from controller.routing.base import RouteState

LIVE = frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED})


def start(spec: RolloutSpec, generation: int, now: datetime) -> RolloutState:
    """The state of a rollout seen for the first time."""
    return RolloutState(
        phase=Phase.PENDING,
        step=-1,
        candidate_version=spec.candidate.version,
        generation=generation,
        started_at=now,
        phase_since=now,
        step_since=now,
        analysis_since=now,
        reason="new rollout",
    )


def wanted_route(spec: RolloutSpec, phase: Phase, step: int) -> RouteState:
    """The route a rollout in `phase` at `step` should have."""
    sticky = spec.traffic.sticky_header
    if phase is Phase.SHADOWING and spec.shadow is not None:
        return RouteState.for_shadow(spec.shadow, sticky_header=sticky)
    if phase is Phase.PROGRESSING and 0 <= step < len(spec.steps):
        return RouteState.for_step(spec.steps[step], sticky_header=sticky)
    return RouteState()


class _Tick:
    """Accumulates one tick's new state, actions and transitions."""

    def __init__(self, spec: RolloutSpec, state: RolloutState, now: datetime) -> None:
        self.spec = spec
        self.state = state
        self.now = now
        self.actions: list[Action] = []
        self.transitions: list[Transition] = []
        self.applied: list[Command] = []

    # --- moving between phases ---------------------------------------------------

    def move(self, phase: Phase, step: int, reason: str, actor: str = "controller") -> None:
        old = self.state
        check_transition(old.phase, phase)
        self.transitions.append(
            Transition(self.now, old.phase, phase, old.step, step, reason, actor)
        )
        self.state = old.evolve(
            phase=phase,
            step=step,
            phase_since=self.now if phase is not old.phase else old.phase_since,
            step_since=self.now if step != old.step or phase is not old.phase else old.step_since,
            reason=reason,
            no_data_since=None,
            undecided_since=None,
            paused_from=old.paused_from if phase is Phase.PAUSED else None,
            waiting=old.waiting if phase is Phase.PAUSED else None,
        )

    def rollback(
        self, reason: str, cells: tuple[Cell, ...] = (), actor: str = "controller"
    ) -> None:
        self.move(Phase.ROLLED_BACK, self.state.step, reason, actor)
        self.actions.insert(0, RestoreRoute(promoted=False))  # the first write of the tick
        self.actions.append(Notify(EventKind.ROLLED_BACK, reason, cells, mention=True))

    def abort(self, command: Command) -> None:
        reason = f"aborted by {command.actor}" + (f": {command.reason}" if command.reason else "")
        self.move(Phase.ABORTED, self.state.step, reason, command.actor)
        self.actions.insert(0, RestoreRoute(promoted=False))
        self.actions.append(Notify(EventKind.ABORTED, reason, mention=True))

    def pause(self, waiting: Waiting, reason: str, actor: str = "controller") -> None:
        paused_from = self.state.phase
        self.move(Phase.PAUSED, self.state.step, reason, actor)
        self.state = self.state.evolve(paused_from=paused_from, waiting=waiting)
        self.actions.append(Notify(EventKind.PAUSED, reason, mention=True))

    def promote(self, reason: str, actor: str = "controller") -> None:
        self.move(Phase.PROMOTED, len(self.spec.steps) - 1, reason, actor)
        self.actions.append(RestoreRoute(promoted=True))
        self.actions.append(Notify(EventKind.PROMOTED, reason))

    def begin(self) -> None:
        if self.spec.shadow is not None:
            self.move(Phase.SHADOWING, -1, "shadowing: mirroring requests to the candidate")
        else:
            self.move(Phase.PROGRESSING, 0, f"step 1: {self.spec.steps[0].weight}% to candidate")
        self.actions.append(Notify(EventKind.STARTED, self.state.reason))

    def advance(self, *, approved: bool = False, actor: str = "controller") -> None:
        """Go to the next step (or promote), unless a pause or the manual gate says wait."""
        state = self.state
        current = state.paused_from if state.phase is Phase.PAUSED else state.phase
        steps = self.spec.steps
        if current is Phase.SHADOWING or current is Phase.PENDING:
            nxt = 0
        else:
            if not approved and steps[state.step].pause and state.phase is not Phase.PAUSED:
                self.pause(Waiting.STEP_PAUSE, f"step {state.step + 1} passed; waiting for resume")
                return
            nxt = state.step + 1
        if nxt >= len(steps):
            self.promote("every step passed" if not approved else f"promoted by {actor}", actor)
            return
        last = nxt == len(steps) - 1
        if last and self.spec.promotion.manual_gate and not approved:
            self.pause(Waiting.MANUAL_GATE, "ready for 100%; waiting for canaryctl promote")
            return
        reason = f"step {nxt + 1}: {steps[nxt].weight}% to candidate"
        if approved and actor != "controller":
            reason += f" (promoted by {actor})"
        self.move(Phase.PROGRESSING, nxt, reason, actor)
        self.actions.append(Notify(EventKind.STEP_ADVANCED, reason))

    # --- commands ------------------------------------------------------------------

    def command(self, cmd: Command) -> None:
        self.applied.append(cmd)
        self.state = self.state.evolve(command_cursor=max(self.state.command_cursor, cmd.id))
        phase = self.state.phase
        if phase.terminal:
            return
        if cmd.kind is CommandKind.ABORT:
            self.abort(cmd)
        elif cmd.kind is CommandKind.PAUSE and phase is not Phase.PAUSED:
            reason = f"paused by {cmd.actor}" + (f": {cmd.reason}" if cmd.reason else "")
            self.pause(Waiting.OPERATOR, reason, cmd.actor)
        elif cmd.kind is CommandKind.RESUME and phase is Phase.PAUSED:
            self.resume(cmd)
        elif cmd.kind is CommandKind.PROMOTE:
            if phase is Phase.PENDING:
                self.begin()
            else:
                self.advance(approved=True, actor=cmd.actor)
        elif cmd.kind is CommandKind.PROMOTE_FULL:
            self.promote(f"promoted to 100% by {cmd.actor}", cmd.actor)

    def resume(self, cmd: Command) -> None:
        waiting, paused_from = self.state.waiting, self.state.paused_from
        if waiting in (Waiting.STEP_PAUSE, Waiting.MANUAL_GATE):
            self.advance(approved=True, actor=cmd.actor)
            return
        back = paused_from or Phase.PROGRESSING
        self.move(back, self.state.step, f"resumed by {cmd.actor}", cmd.actor)
        self.actions.append(Notify(EventKind.RESUMED, self.state.reason))

    # --- judging a look ----------------------------------------------------------------

    def judge(self, look: Look | None, hold: timedelta) -> None:
        """Hold, advance or give up on the current step (or shadow) from `look`."""
        required = tuple(c for c in look.cells if c.critical) if look else ()
        no_data = [c for c in required if c.verdict is Verdict.NO_DATA]
        policy = self.spec.analysis.no_data
        if look is None or look.error is not None or no_data:
            why = (
                look.error
                if look is not None and look.error
                else "no data from Prometheus for "
                + ", ".join(f"{c.metric} in {c.cohort}" for c in no_data)
                if no_data
                else "no look at the metrics yet"
            )
            since = self.state.no_data_since or self.now
            if self.state.no_data_since is None:
                self.state = self.state.evolve(no_data_since=since)
                if policy.action is not NoDataAction.ROLLBACK:  # else the rollback says why
                    self.actions.append(
                        Notify(EventKind.HOLDING, f"holding: {why}", tuple(no_data))
                    )
            if policy.action is NoDataAction.ROLLBACK:
                self.rollback(f"no data, and noData.action is rollback: {why}", tuple(no_data))
            elif self.now - since >= policy.timeout:
                self.give_up(policy.then, Waiting.NO_DATA, f"no data for {policy.timeout}: {why}")
            return
        self.state = self.state.evolve(no_data_since=None)
        if self.now - self.state.step_since < hold:
            return
        undecided = tuple(c for c in required if c.verdict is not Verdict.PASS)
        if not undecided or (
            self.spec.analysis.advance_on is AdvanceOn.NO_FAILURE and not self._next_is_last()
        ):
            self.advance()  # (a FAIL has rolled back before this is reached)
            return
        since = self.state.undecided_since or self.now
        if self.state.undecided_since is None:
            self.state = self.state.evolve(undecided_since=since)
            cohorts = sorted({c.cohort for c in undecided})
            self.actions.append(
                Notify(
                    EventKind.HOLDING,
                    f"holding: not enough traffic yet in {', '.join(cohorts)}",
                    undecided,
                )
            )
        elif self.now - since >= policy.timeout:
            self.give_up(
                policy.then,
                Waiting.INCONCLUSIVE,
                f"still inconclusive {policy.timeout} after the hold",
                undecided,
            )

    def _next_is_last(self) -> bool:
        """Is the next step the last one (all traffic), or the promotion itself?"""
        current = self.state.step if self.state.phase is Phase.PROGRESSING else -1
        return current + 1 >= len(self.spec.steps) - 1

    def give_up(
        self, then: NoDataTimeout, waiting: Waiting, reason: str, cells: tuple[Cell, ...] = ()
    ) -> None:
        if then is NoDataTimeout.ROLLBACK:
            self.rollback(reason, cells)
        else:
            self.pause(waiting, reason)

    def done(self) -> Decision:
        if self.state.phase in LIVE:
            if self.state.phase is not Phase.PAUSED:
                self.state = self.state.evolve(
                    route=wanted_route(self.spec, self.state.phase, self.state.step)
                )
            self.actions.append(ApplyRoute(self.state.route))
        return Decision(
            self.state, tuple(self.actions), tuple(self.transitions), tuple(self.applied)
        )


def decide(
    spec: RolloutSpec,
    state: RolloutState,
    look: Look | None,
    commands: Sequence[Command],
    now: datetime,
) -> Decision:
    """The next state of a rollout, and the actions that get it there."""
    if state.phase.terminal:
        return Decision(state)
    tick = _Tick(spec, state.evolve(tick=state.tick + 1), now)
    for cmd in sorted(commands, key=lambda c: c.id):
        if cmd.id > state.command_cursor:
            tick.command(cmd)
    phase = tick.state.phase
    if phase.terminal:
        return tick.done()
    fails = tuple(
        c for c in (look.cells if look else ()) if c.critical and c.verdict is Verdict.FAIL
    )
    if fails and phase in LIVE:
        worst = "; ".join(
            f"{c.metric} in {c.cohort}" + (f": {c.summary}" if c.summary else "") for c in fails
        )
        tick.rollback(f"rolled back: {worst}", fails)
        return tick.done()
    if tick.transitions:
        return tick.done()  # a step entered by hand is judged on looks taken after it began
    if phase is Phase.PENDING:
        tick.begin()
    elif phase is Phase.SHADOWING:
        assert spec.shadow is not None
        tick.judge(look, spec.shadow.duration)
    elif phase is Phase.PROGRESSING:
        tick.judge(look, spec.steps[tick.state.step].hold)
    return tick.done()


def restart(spec: RolloutSpec, state: RolloutState, generation: int, now: datetime) -> Decision:
    """A new candidate version mid-rollout: back to the baseline, then from the start."""
    tick = _Tick(spec, state, now)
    reason = f"candidate changed from {state.candidate_version} to {spec.candidate.version}"
    tick.move(Phase.PENDING, -1, f"restarted: {reason}")
    tick.state = tick.state.evolve(
        candidate_version=spec.candidate.version,
        generation=generation,
        started_at=now,
        analysis_since=now,
        route=RouteState(),
    )
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.RESTARTED, f"restarted: {reason}"))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def fail(spec: RolloutSpec, state: RolloutState, reason: str, now: datetime) -> Decision:
    """The route cannot carry the rollout (a permanent error: missing, forbidden,
    not pointing at the baseline...): give it back and end the rollout as Failed,
    telling the owners, rather than retrying something that cannot succeed."""
    if state.phase.terminal:
        return Decision(state)
    tick = _Tick(spec, state, now)
    tick.move(Phase.FAILED, state.step, reason)
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.FAILED, reason, mention=True))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def end_deleted(spec: RolloutSpec, state: RolloutState, now: datetime) -> Decision:
    """The ModelRollout was deleted: restore the route and end the rollout."""
    if state.phase.terminal:
        return Decision(state)
    tick = _Tick(spec, state, now)
    tick.move(Phase.ABORTED, state.step, "the ModelRollout was deleted")
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.ABORTED, "the ModelRollout was deleted"))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))
