"""The pure rollout decision: `decide(spec, state, look, commands, now) -> Decision`.

No I/O and no clock: time, verdicts and commands are arguments, so every rule is a
row in a table test. The executor performs the returned actions in order; a
rollback's `RestoreRoute` is always the first action of its tick.

The rules, per tick:
1. Commands from humans first, in the order given (abort, pause, resume, promote).
2. A FAIL of a critical metric in any live phase rolls back at once.
3. A failed measurement (the source failed, or a critical cell is NO_DATA: a
   rejected query, no series): hold, or roll back if `noData.action` says so;
   after `noData.timeout`, `noData.then`. INCONCLUSIVE is not missing data and
   never triggers `noData`.
4. Once the hold (or shadow duration) has passed, advance when no critical cell
   FAILs and each has its `minSamples` (`advanceOn: no-failure`, the default;
   `advanceOn: hold` drops the `minSamples`; `advanceOn: pass` asks what
   promotion asks at every step). Going to 100 % (the
   last step, or the promotion) needs every critical cell to PASS or be powered:
   a rollout is never promoted on a guess. A PASS is kept once reached (the test
   is anytime-valid: `RolloutState.passed`); a later FAIL still rolls back.
5. A cell still undecided past `analysis.deadline` pauses the rollout for a human,
   listing what each undecided cell still needs; it never rolls back on its own.
6. A step with `pause: true`, and the step before 100% under a manual gate, wait
   for `canaryctl promote` / `resume`.
7. The wanted route is recomputed every tick (level-triggered): the router reads
   the route back and re-applies it if someone changed it by hand.
8. The state records the generation of the policy it was decided on.
9. Gates (`spec.gates`): a move a gate guards (the start, entering step N, the
   promotion) goes to GateRunning first, the route staying as it is; the gate's
   result is an input (`GateResult`, from the executor's runner) like a look. A
   pass makes the move; a failure retries (`retries`), then does what `onFailure`
   says. A gate that runs too long fails. `postRollout` and `onRollback` gates
   run once the rollout has ended, and can only report (`after_end`).

After the executor performed the actions, `route_written` says what follows from
how the route took them: a restore that failed is tried again on every tick of
the ended rollout until it succeeds; a route that cannot carry the rollout at all
(a permanent error) ends it as Failed, the route given back and the owners told.

Every transition that ends or pauses a rollout, and every one a human asked for,
names its `Cause`; a transition on evidence (start, next step, promotion) has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
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
    GateOutcome,
    GateResult,
    GateWait,
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    RouteOutcome,
    Transition,
    Waiting,
)
from controller.policy import AdvanceOn, Cause, NoDataAction, NoDataTimeout, RolloutSpec
from controller.policy.durations import format_duration
from controller.policy.gates import Gate, GatePoint, OnFailure, gates_at
from controller.policy.route import RouteState

LIVE = frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING})


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


def _gate_route(spec: RolloutSpec, state: RolloutState) -> RouteState:
    """What the route carries while a gate runs: what it carried before the gate, the
    step the rollout is at (or the shadow, before a `beforeStep: 1` gate); nothing
    before the start."""
    if state.step >= 0:
        return wanted_route(spec, Phase.PROGRESSING, state.step)
    gate = state.gate
    if gate is not None and gate.point is GatePoint.BEFORE_STEP:
        return wanted_route(spec, Phase.SHADOWING, -1)
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
        #: the gate result behind the next transition (its evidence goes into the audit)
        self.evidence: GateResult | None = None

    # --- moving between phases ---------------------------------------------------

    def move(
        self,
        phase: Phase,
        step: int,
        reason: str,
        actor: str = "controller",
        cause: Cause | None = None,
    ) -> None:
        old = self.state
        check_transition(old.phase, phase)
        self.transitions.append(
            Transition(
                self.now, old.phase, phase, old.step, step, reason, actor, cause, self.evidence
            )
        )
        self.evidence = None
        deadline_from = old.deadline_start
        if old.phase in (Phase.PAUSED, Phase.GATE_RUNNING) and phase is not old.phase:
            # waiting for a human or a gate does not count; letting a deadline pause go
            # on is a human's decision to give the cells another deadline
            if old.waiting is Waiting.DEADLINE:
                deadline_from = self.now
            else:
                deadline_from += max(self.now - old.phase_since, timedelta(0))
        step_starts = old.step_starts
        if (
            phase is Phase.PROGRESSING
            and step != old.step
            and old.phase is not Phase.PENDING
            and not self._route_untouched()
        ):
            step_starts = (*step_starts, self.now)  # a new traffic step after the first
        self.state = old.evolve(
            step_starts=step_starts,
            cause=cause,
            deadline_from=deadline_from,
            phase=phase,
            step=step,
            phase_since=self.now if phase is not old.phase else old.phase_since,
            step_since=self.now if step != old.step or phase is not old.phase else old.step_since,
            reason=reason,
            no_data_since=None,
            undecided_since=None,
            paused_from=old.paused_from if phase is Phase.PAUSED else None,
            waiting=old.waiting if phase is Phase.PAUSED else None,
            gate=old.gate if phase in (Phase.PAUSED, Phase.GATE_RUNNING) else None,
        )

    def rollback(
        self,
        reason: str,
        cause: Cause,
        cells: tuple[Cell, ...] = (),
        actor: str = "controller",
        gate: GateResult | None = None,
    ) -> None:
        untouched = self._route_untouched()
        self.evidence = gate
        self.move(Phase.ROLLED_BACK, self.state.step, reason, actor, cause)
        if not untouched:
            self.actions.insert(0, RestoreRoute(promoted=False))  # the first write of the tick
        self.actions.append(Notify(EventKind.ROLLED_BACK, reason, cells, True, cause, gate))
        self.gate_after_end(GatePoint.ON_ROLLBACK)

    def abort(self, command: Command) -> None:
        untouched = self._route_untouched()
        reason = f"aborted by {command.actor}" + (f": {command.reason}" if command.reason else "")
        self.move(Phase.ABORTED, self.state.step, reason, command.actor, Cause.MANUAL)
        if not untouched:
            self.actions.insert(0, RestoreRoute(promoted=False))
        self.actions.append(Notify(EventKind.ABORTED, reason, mention=True, cause=Cause.MANUAL))

    def _route_untouched(self) -> bool:
        """Whether the rollout has not written its route yet: it waits for (or was
        paused at) a preRollout gate. Ending it then leaves the route alone."""
        gate = self.state.gate
        return gate is not None and gate.point is GatePoint.PRE_ROLLOUT

    def pause(
        self,
        waiting: Waiting,
        reason: str,
        cause: Cause,
        actor: str = "controller",
        cells: tuple[Cell, ...] = (),
        gate: GateResult | None = None,
    ) -> None:
        paused_from = self.state.phase
        self.evidence = gate
        self.move(Phase.PAUSED, self.state.step, reason, actor, cause)
        self.state = self.state.evolve(paused_from=paused_from, waiting=waiting)
        self.actions.append(Notify(EventKind.PAUSED, reason, cells, True, cause, gate))

    def promote(self, reason: str, actor: str = "controller") -> None:
        cause = Cause.MANUAL if actor != "controller" else None
        self.move(Phase.PROMOTED, len(self.spec.steps) - 1, reason, actor, cause)
        self.actions.append(RestoreRoute(promoted=True))
        self.actions.append(Notify(EventKind.PROMOTED, reason, cause=cause))
        self.gate_after_end(GatePoint.POST_ROLLOUT)

    # --- gates ---------------------------------------------------------------------------

    def _next_gate(self, point: GatePoint, step: int, after: str | None = None) -> Gate | None:
        """The first gate at `point` (before the 0-based `step`) after the one named
        `after`, in policy order."""
        found = gates_at(
            self.spec.gates, point, step + 1 if point is GatePoint.BEFORE_STEP else None
        )
        names = [g.name for g in found]
        if after is not None:
            found = found[names.index(after) + 1 :] if after in names else []
        return found[0] if found else None

    def enter_gate(
        self,
        point: GatePoint,
        step: int = -1,
        *,
        after: str | None = None,
        actor: str = "controller",
        cause: Cause | None = None,
    ) -> bool:
        """Wait for the next gate at `point` before the move it guards; False if none."""
        gate = self._next_gate(point, step, after)
        if gate is None:
            return False
        where = {
            GatePoint.PRE_ROLLOUT: "before the rollout starts",
            GatePoint.BEFORE_STEP: f"before step {step + 1}",
            GatePoint.BEFORE_PROMOTION: "before the promotion",
        }[point]
        reason = f"gate {gate.name} running ({gate.kind}) {where}"
        self.move(Phase.GATE_RUNNING, self.state.step, reason, actor, cause)
        self.state = self.state.evolve(gate=GateWait(gate.name, point, self.now, step))
        return True

    def gate_after_end(self, point: GatePoint) -> None:
        """Start the first postRollout / onRollback gate, if the policy has one."""
        gate = self._next_gate(point, -1)
        self.state = self.state.evolve(
            gate=GateWait(gate.name, point, self.now) if gate is not None else None
        )

    def pass_gate(self, wait: GateWait, actor: str = "controller") -> None:
        """The gate `wait` passed (or a human let the rollout go on without it): the
        next gate at the same point, else the move it guarded."""
        if self.enter_gate(wait.point, wait.step, after=wait.name, actor=actor):
            return
        by = f" (by {actor})" if actor != "controller" else ""
        cause = Cause.MANUAL if actor != "controller" else None
        if wait.point is GatePoint.PRE_ROLLOUT:
            self.begin(actor)
            # the candidate serves (or shadows) from now: the analysis counts from here
            self.state = self.state.evolve(analysis_since=self.now)
        elif wait.point is GatePoint.BEFORE_STEP:
            reason = f"step {wait.step + 1}: {self.spec.steps[wait.step].weight}% to candidate"
            self.move(Phase.PROGRESSING, wait.step, reason + by, actor, cause)
            self.actions.append(Notify(EventKind.STEP_ADVANCED, reason + by, cause=cause))
        else:
            self.promote(f"every step and gate passed{by}", actor)

    def run_gate(self, result: GateResult | None) -> None:
        """GateRunning: go on, retry, or apply `onFailure`, from the gate's result."""
        wait = self.state.gate
        assert wait is not None, "GateRunning without a gate"
        gate = next((g for g in self.spec.gates if g.name == wait.name), None)
        if gate is None:  # the policy no longer has it
            self.pass_gate(wait)
            return
        result = self._attempt_result(gate, wait, result)
        if result is None:
            return
        if result.outcome is GateOutcome.PASSED:
            self.evidence = result
            self.pass_gate(wait)
            return
        why = f"gate {gate.name} failed" + (f": {result.detail}" if result.detail else "")
        if wait.attempt <= gate.retries:
            self.evidence = result
            again = f"{why}; attempt {wait.attempt + 1} of {gate.retries + 1}"
            self.move(Phase.GATE_RUNNING, self.state.step, again)
            self.state = self.state.evolve(
                gate=replace(wait, attempt=wait.attempt + 1, since=self.now)
            )
            return
        action = gate.failure_action
        if action is OnFailure.ROLLBACK:
            self.rollback(why, Cause.GATE_FAILED, gate=result)
        elif action is OnFailure.PAUSE:
            reason = f"{why}; resume runs it again, promote goes on without it"
            self.pause(Waiting.GATE_FAILED, reason, Cause.GATE_FAILED, gate=result)
        else:
            text = f"{why}; onFailure is ignore, going on"
            self.actions.append(
                Notify(EventKind.GATE_FAILED, text, cause=Cause.GATE_FAILED, gate=result)
            )
            self.evidence = result
            self.pass_gate(wait)

    def _attempt_result(
        self, gate: Gate, wait: GateWait, result: GateResult | None
    ) -> GateResult | None:
        """The result of the current attempt, a timeout, or None while it runs."""
        if (
            result is not None
            and result.name == wait.name
            and result.attempt == wait.attempt
            and result.outcome is not GateOutcome.RUNNING
        ):
            return result
        if self.now - wait.since >= gate.timeout:
            return GateResult(
                wait.name,
                wait.attempt,
                GateOutcome.FAILED,
                f"timed out after {format_duration(gate.timeout)}",
                result.body if result is not None else "",
            )
        return None

    def gate_after_end_result(self, result: GateResult | None) -> None:
        """A postRollout / onRollback gate: a failure is told (it cannot stop anything),
        then the next gate at the same point runs."""
        wait = self.state.gate
        assert wait is not None
        gate = next((g for g in self.spec.gates if g.name == wait.name), None)
        if gate is not None:
            result = self._attempt_result(gate, wait, result)
            if result is None:
                return
            if result.outcome is GateOutcome.FAILED and wait.attempt <= gate.retries:
                self.state = self.state.evolve(
                    gate=replace(wait, attempt=wait.attempt + 1, since=self.now)
                )
                return
            if result.outcome is GateOutcome.FAILED:
                why = f"{wait.point} gate {gate.name} failed"
                why += f": {result.detail}" if result.detail else ""
                self.actions.append(
                    Notify(
                        EventKind.GATE_FAILED,
                        why,
                        mention=True,
                        cause=Cause.GATE_FAILED,
                        gate=result,
                    )
                )
        nxt = self._next_gate(wait.point, -1, after=wait.name)
        self.state = self.state.evolve(
            gate=GateWait(nxt.name, wait.point, self.now) if nxt is not None else None
        )

    def begin(self, actor: str = "controller") -> None:
        cause = Cause.MANUAL if actor != "controller" else None
        if self.spec.shadow is not None:
            reason = "shadowing: mirroring requests to the candidate"
            self.move(Phase.SHADOWING, -1, reason, actor, cause)
        else:
            reason = f"step 1: {self.spec.steps[0].weight}% to candidate"
            self.move(Phase.PROGRESSING, 0, reason, actor, cause)
        self.actions.append(Notify(EventKind.STARTED, self.state.reason, cause=cause))

    def advance(self, *, approved: bool = False, actor: str = "controller") -> None:
        """Go to the next step (or promote), unless a pause, the manual gate or a gate of
        the policy says wait. A human's approval while a gate runs (or after it failed
        and paused the rollout) lets the rollout go on without it."""
        state = self.state
        current = state.paused_from if state.phase is Phase.PAUSED else state.phase
        steps = self.spec.steps
        if current is Phase.GATE_RUNNING and state.gate is not None:
            self.pass_gate(state.gate, actor)
            return
        if current is Phase.PENDING and self.enter_gate(GatePoint.PRE_ROLLOUT, actor=actor):
            return
        if current is Phase.SHADOWING or current is Phase.PENDING:
            nxt = 0
        else:
            if not approved and steps[state.step].pause and state.phase is not Phase.PAUSED:
                reason = f"step {state.step + 1} passed; waiting for resume"
                self.pause(Waiting.STEP_PAUSE, reason, Cause.MANUAL)
                return
            nxt = state.step + 1
        if nxt >= len(steps):
            if self.enter_gate(GatePoint.BEFORE_PROMOTION, actor=actor):
                return
            self.promote("every step passed" if not approved else f"promoted by {actor}", actor)
            return
        last = nxt == len(steps) - 1
        if last and self.spec.promotion.manual_gate and not approved:
            reason = "ready for 100%; waiting for canaryctl promote"
            self.pause(Waiting.MANUAL_GATE, reason, Cause.MANUAL)
            return
        if self.enter_gate(GatePoint.BEFORE_STEP, nxt, actor=actor):
            return
        reason = f"step {nxt + 1}: {steps[nxt].weight}% to candidate"
        cause = None
        if approved and actor != "controller":
            reason += f" (promoted by {actor})"
            cause = Cause.MANUAL
        self.move(Phase.PROGRESSING, nxt, reason, actor, cause)
        self.actions.append(Notify(EventKind.STEP_ADVANCED, reason, cause=cause))

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
            self.pause(Waiting.OPERATOR, reason, Cause.MANUAL, cmd.actor)
        elif cmd.kind is CommandKind.RESUME and phase is Phase.PAUSED:
            self.resume(cmd)
        elif cmd.kind is CommandKind.PROMOTE:
            if phase is Phase.PENDING and not self.enter_gate(
                GatePoint.PRE_ROLLOUT, actor=cmd.actor, cause=Cause.MANUAL
            ):
                self.begin(cmd.actor)
            elif phase is not Phase.PENDING:
                self.advance(approved=True, actor=cmd.actor)
        elif cmd.kind is CommandKind.PROMOTE_FULL:
            self.promote(f"promoted to 100% by {cmd.actor}", cmd.actor)

    def resume(self, cmd: Command) -> None:
        waiting, paused_from = self.state.waiting, self.state.paused_from
        if waiting in (Waiting.STEP_PAUSE, Waiting.MANUAL_GATE):
            self.advance(approved=True, actor=cmd.actor)
            return
        back = paused_from or Phase.PROGRESSING
        self.move(back, self.state.step, f"resumed by {cmd.actor}", cmd.actor, Cause.MANUAL)
        gate = self.state.gate
        if back is Phase.GATE_RUNNING and gate is not None:
            # the gate runs again, as a new attempt (a new Job)
            self.state = self.state.evolve(
                gate=replace(gate, attempt=gate.attempt + 1, since=self.now)
            )
        self.actions.append(Notify(EventKind.RESUMED, self.state.reason, cause=Cause.MANUAL))

    # --- judging a look ----------------------------------------------------------------

    def judge(self, look: Look | None, hold: timedelta) -> None:
        """Hold, advance or give up on the current step (or shadow) from `look`."""
        required = tuple(c for c in look.cells if c.critical) if look else ()
        no_data = tuple(c for c in required if c.verdict is Verdict.NO_DATA)
        self.remember_passes(required)
        if look is None or look.error is not None or no_data:
            self.measurements_failed(look, no_data, required)
            return
        self.state = self.state.evolve(no_data_since=None)
        if self.now - self.state.step_since < hold:
            return
        advance_on = self.spec.analysis.advance_on
        if self._next_is_last() or advance_on is AdvanceOn.PASS:
            undecided = tuple(c for c in required if not self._decided(c))
        elif advance_on is AdvanceOn.NO_FAILURE:
            undecided = tuple(c for c in required if c.waiting_for_traffic)
        else:  # HOLD: the hold is enough (a FAIL has rolled back before this)
            undecided = ()
        if not undecided:
            self.advance()  # (a FAIL has rolled back before this is reached)
            return
        if self.state.undecided_since is None:
            self.state = self.state.evolve(undecided_since=self.now)
            self.actions.append(Notify(EventKind.HOLDING, _holding(undecided), undecided))
        deadline = self.spec.deadline
        if self.now - self.state.deadline_start >= deadline:
            self.pause(
                Waiting.DEADLINE,
                f"undecided at the deadline ({format_duration(deadline)}): "
                + "; ".join(self._needs(c) for c in undecided),
                Cause.DEADLINE,
                cells=tuple(replace(c, summary=self._needs(c)) for c in undecided),
            )

    def remember_passes(self, required: tuple[Cell, ...]) -> None:
        """Keep every critical cell that PASSes now for the rest of the rollout.

        PASS is an anytime-valid test: the chance that its e-process *ever* crosses
        for a candidate at or beyond the limit is at most alpha, so a crossing once
        reached is as good as one at the last look. Without this a cell could PASS,
        drift back under the threshold on the next look's noise and hold the rollout
        for nothing.
        """
        passed = dict.fromkeys(self.state.passed)
        passed.update((c.key, None) for c in required if c.verdict is Verdict.PASS)
        if len(passed) != len(self.state.passed):
            self.state = self.state.evolve(passed=tuple(passed))

    def _decided(self, cell: Cell) -> bool:
        """Enough for 100 %: PASS now or at an earlier look, or powered; never a FAIL."""
        if cell.verdict is Verdict.FAIL:
            return False
        return cell.decided_enough_to_promote or cell.key in self.state.passed

    def measurements_failed(
        self, look: Look | None, no_data: tuple[Cell, ...], required: tuple[Cell, ...] = ()
    ) -> None:
        """The metrics could not be measured: `noData` says what to do."""
        policy = self.spec.analysis.no_data
        failed = bool(look is not None and look.error)
        if look is not None and look.error:
            why = look.error
        elif no_data:
            why = no_data_reason(no_data, required)
        else:
            why = "no look at the metrics yet"
        since = self.state.no_data_since or self.now
        if self.state.no_data_since is None:
            self.state = self.state.evolve(no_data_since=since)
            if policy.action is not NoDataAction.ROLLBACK:  # else the rollback says why
                self.actions.append(
                    Notify(EventKind.HOLDING, f"holding: {why}", no_data, cause=Cause.NO_DATA)
                )
        if policy.action is NoDataAction.ROLLBACK:
            reason = f"no data, and noData.action is rollback: {why}"
            self.rollback(reason, Cause.NO_DATA, no_data)
        elif self.now - since >= policy.timeout:
            timeout = format_duration(policy.timeout)
            reason = (
                f"no data for {timeout}: {why}"
                if failed or not no_data
                else no_data_reason(no_data, required, timeout)
            )
            if policy.then is NoDataTimeout.ROLLBACK:
                self.rollback(reason, Cause.NO_DATA, no_data)
            else:
                self.pause(Waiting.NO_DATA, reason, Cause.NO_DATA, cells=no_data)

    def _needs(self, cell: Cell) -> str:
        """What an undecided cell still needs, in samples and, at the rate so far, time."""
        where = f"{cell.metric} in {cell.cohort}"
        if cell.waiting_for_traffic:
            need = "fewer candidate requests than minSamples so far"
            if cell.candidate_samples is not None:
                have = self.spec.analysis.min_samples - cell.candidate_samples
                need = f"{max(have, 1):,.0f} more candidate requests to reach minSamples"
                need += self._at_rate(cell, max(have, 1))
            return f"{where}: {need}"
        if cell.needed_samples is None:
            return f"{where}: {cell.verdict}, further samples needed unknown"
        need = f"~{cell.needed_samples:,.0f} more candidate samples"
        return f"{where}: {need}{self._at_rate(cell, cell.needed_samples)}"

    def _at_rate(self, cell: Cell, samples: float) -> str:
        """`samples` as time at the candidate's average rate since the analysis began
        (later steps carry more traffic, so the time is an upper bound)."""
        seconds = (self.now - self.state.analysis_since).total_seconds()
        if not cell.candidate_samples or seconds <= 0:
            return ""
        rate = cell.candidate_samples / seconds
        more = timedelta(seconds=round(samples / rate))
        return f" (about {format_duration(more)} at {rate:.3g}/s, the rate so far)"

    def _next_is_last(self) -> bool:
        """Is the next step the last one (all traffic), or the promotion itself?"""
        current = self.state.step if self.state.phase is Phase.PROGRESSING else -1
        return current + 1 >= len(self.spec.steps) - 1

    def done(self) -> Decision:
        state = self.state
        waits = state.phase is Phase.GATE_RUNNING or (
            state.phase is Phase.PAUSED and state.gate is not None
        )
        if state.phase is Phase.GATE_RUNNING:
            self.state = state = state.evolve(route=_gate_route(self.spec, state))
        if waits and not state.route.routes_anything:
            pass  # a gate before the start: the route is not touched
        elif state.phase in LIVE:
            if self.state.phase not in (Phase.PAUSED, Phase.GATE_RUNNING):
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
    gate: GateResult | None = None,
    *,
    generation: int | None = None,
) -> Decision:
    """The next state of a rollout, and the actions that get it there.

    `gate`: what the runner found of the gate the rollout waits for (`state.gate`),
    if any. `generation` is the policy's (`metadata.generation`) this tick runs on:
    the state records it. An ended rollout does nothing, unless its restore failed
    (the restore is tried again, every tick, until it reaches the route) or a
    `postRollout` / `onRollback` gate still runs."""
    if state.phase.terminal:
        if state.gate is None:
            return _ended(state)
        ended = _Tick(spec, state.evolve(tick=state.tick + 1), now)
        ended.gate_after_end_result(gate)
        return Decision(ended.state, _ended(state).actions + tuple(ended.actions))
    stamped = state.evolve(tick=state.tick + 1)
    if generation is not None:
        stamped = stamped.evolve(generation=generation)
    tick = _Tick(spec, stamped, now)
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
        if any(c.breaker for c in fails):  # a gross failure is the headline
            tick.rollback(f"circuit breaker tripped: {worst}", Cause.CIRCUIT_BREAKER, fails)
        else:
            tick.rollback(f"rolled back: {worst}", Cause.LIMIT_BROKEN, fails)
        return tick.done()
    if tick.transitions:
        return tick.done()  # a step entered by hand is judged on looks taken after it began
    if phase is Phase.PENDING:
        if not tick.enter_gate(GatePoint.PRE_ROLLOUT):
            tick.begin()
    elif phase is Phase.GATE_RUNNING:
        tick.run_gate(gate)
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
        deadline_from=None,
        step_starts=(),
        passed=(),
        route=RouteState(),
    )
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.RESTARTED, f"restarted: {reason}"))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def route_written(
    spec: RolloutSpec, state: RolloutState, outcome: RouteOutcome, now: datetime
) -> Decision:
    """The state after the route actions of `state`'s decision were performed.

    A restore that failed is tried again on the next ticks (`restore_pending`); one
    that succeeded is done. A route that cannot carry the rollout at all (a
    permanent error of an apply) ends a live rollout as Failed: the decision returned
    then has the actions to perform next (give the route back, tell the owners)."""
    if outcome.restored is not None:
        state = state.evolve(restore_pending=not outcome.restored)
    if outcome.unroutable is not None and not state.phase.terminal:
        return fail(spec, state, f"the route cannot be written: {outcome.unroutable}", now)
    return Decision(state)


def _ended(state: RolloutState) -> Decision:
    """An ended rollout: nothing to do, unless its route has yet to be given back."""
    if not state.restore_pending:
        return Decision(state)
    return Decision(state, (RestoreRoute(promoted=state.phase is Phase.PROMOTED),))


def fail(spec: RolloutSpec, state: RolloutState, reason: str, now: datetime) -> Decision:
    """The route cannot carry the rollout (a permanent error: missing, forbidden,
    not pointing at the baseline...): give it back and end the rollout as Failed,
    telling the owners, rather than retrying something that cannot succeed."""
    if state.phase.terminal:
        return Decision(state)
    tick = _Tick(spec, state, now)
    tick.move(Phase.FAILED, state.step, reason, cause=Cause.ROUTE_FAILED)
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.FAILED, reason, mention=True, cause=Cause.ROUTE_FAILED))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def end_deleted(spec: RolloutSpec, state: RolloutState, now: datetime) -> Decision:
    """The ModelRollout was deleted: restore the route and end the rollout."""
    if state.phase.terminal:
        return _ended(state)
    tick = _Tick(spec, state, now)
    reason = "the ModelRollout was deleted"
    tick.move(Phase.ABORTED, state.step, reason, cause=Cause.MANUAL)
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.ABORTED, reason, cause=Cause.MANUAL))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def _holding(undecided: tuple[Cell, ...]) -> str:
    """Why a step whose hold has passed does not advance yet."""
    waiting = sorted({c.cohort for c in undecided if c.waiting_for_traffic})
    if waiting:
        return f"holding: not enough traffic yet in {', '.join(waiting)}"
    cells = ", ".join(f"{c.metric} in {c.cohort}" for c in undecided)
    return f"holding: not decided yet, before 100%: {cells}"


def no_data_reason(no_data: tuple[Cell, ...], required: tuple[Cell, ...], over: str = "") -> str:
    """Which cells had no data, in a few words: a count and the first of them.

    Naming every cell made a reason of hundreds of characters that said less than a
    count: "all 16 cells (4 metrics × 4 cohorts)", "3 of 16 cells". The cells themselves
    stay in the event's evidence, one line each. `over` is how long (`10m`), if known.
    """
    total = max(len(required), len(no_data))
    first = f"{no_data[0].metric} in {no_data[0].cohort}"
    metrics = len({c.metric for c in no_data})
    cohorts = len({c.cohort for c in no_data})
    if len(no_data) == 1:
        cells, first = (first if total == 1 else f"{first} (1 of {total} cells)"), ""
    elif len(no_data) < total:
        cells = f"{len(no_data)} of {total} cells"
    elif metrics * cohorts == total and metrics > 1 and cohorts > 1:
        cells = f"all {total} cells ({metrics} metrics × {cohorts} cohorts)"
    else:
        cells = f"all {total} cells"
    during = f" for {over}" if over else ""
    named = f"; first: {first}" if first else ""
    return f"no data from Prometheus for {cells}{during}{named}"
