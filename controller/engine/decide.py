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
   `advanceOn: pass` asks what promotion asks at every step). Going to 100 % (the
   last step, or the promotion) needs every critical cell to PASS or be powered:
   a rollout is never promoted on a guess. A PASS is kept once reached (the test
   is anytime-valid: `RolloutState.passed`); a later FAIL still rolls back.
5. A cell still undecided past `analysis.deadline` pauses the rollout for a human,
   listing what each undecided cell still needs; it never rolls back on its own.
6. A step with `pause: true`, and the step before 100% under a manual gate, wait
   for `canaryctl promote` / `resume`.
7. The wanted route is recomputed every tick (level-triggered): the router reads
   the route back and re-applies it if someone changed it by hand.

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
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    Transition,
    Waiting,
)
from controller.policy import AdvanceOn, Cause, NoDataAction, NoDataTimeout, RolloutSpec
from controller.policy.durations import format_duration
from controller.policy.route import RouteState

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
            Transition(self.now, old.phase, phase, old.step, step, reason, actor, cause)
        )
        deadline_from = old.deadline_start
        if old.phase is Phase.PAUSED and phase is not Phase.PAUSED:
            # waiting for a human does not count; letting a deadline pause go on is a
            # human's decision to give the cells another deadline
            if old.waiting is Waiting.DEADLINE:
                deadline_from = self.now
            else:
                deadline_from += max(self.now - old.phase_since, timedelta(0))
        step_starts = old.step_starts
        if phase is Phase.PROGRESSING and step != old.step and old.phase is not Phase.PENDING:
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
        )

    def rollback(
        self,
        reason: str,
        cause: Cause,
        cells: tuple[Cell, ...] = (),
        actor: str = "controller",
    ) -> None:
        self.move(Phase.ROLLED_BACK, self.state.step, reason, actor, cause)
        self.actions.insert(0, RestoreRoute(promoted=False))  # the first write of the tick
        self.actions.append(Notify(EventKind.ROLLED_BACK, reason, cells, True, cause))

    def abort(self, command: Command) -> None:
        reason = f"aborted by {command.actor}" + (f": {command.reason}" if command.reason else "")
        self.move(Phase.ABORTED, self.state.step, reason, command.actor, Cause.MANUAL)
        self.actions.insert(0, RestoreRoute(promoted=False))
        self.actions.append(Notify(EventKind.ABORTED, reason, mention=True, cause=Cause.MANUAL))

    def pause(
        self,
        waiting: Waiting,
        reason: str,
        cause: Cause,
        actor: str = "controller",
        cells: tuple[Cell, ...] = (),
    ) -> None:
        paused_from = self.state.phase
        self.move(Phase.PAUSED, self.state.step, reason, actor, cause)
        self.state = self.state.evolve(paused_from=paused_from, waiting=waiting)
        self.actions.append(Notify(EventKind.PAUSED, reason, cells, True, cause))

    def promote(self, reason: str, actor: str = "controller") -> None:
        cause = Cause.MANUAL if actor != "controller" else None
        self.move(Phase.PROMOTED, len(self.spec.steps) - 1, reason, actor, cause)
        self.actions.append(RestoreRoute(promoted=True))
        self.actions.append(Notify(EventKind.PROMOTED, reason, cause=cause))

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
        """Go to the next step (or promote), unless a pause or the manual gate says wait."""
        state = self.state
        current = state.paused_from if state.phase is Phase.PAUSED else state.phase
        steps = self.spec.steps
        if current is Phase.SHADOWING or current is Phase.PENDING:
            nxt = 0
        else:
            if not approved and steps[state.step].pause and state.phase is not Phase.PAUSED:
                reason = f"step {state.step + 1} passed; waiting for resume"
                self.pause(Waiting.STEP_PAUSE, reason, Cause.MANUAL)
                return
            nxt = state.step + 1
        if nxt >= len(steps):
            self.promote("every step passed" if not approved else f"promoted by {actor}", actor)
            return
        last = nxt == len(steps) - 1
        if last and self.spec.promotion.manual_gate and not approved:
            reason = "ready for 100%; waiting for canaryctl promote"
            self.pause(Waiting.MANUAL_GATE, reason, Cause.MANUAL)
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
            if phase is Phase.PENDING:
                self.begin(cmd.actor)
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
        self.move(back, self.state.step, f"resumed by {cmd.actor}", cmd.actor, Cause.MANUAL)
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
        if self._next_is_last() or self.spec.analysis.advance_on is AdvanceOn.PASS:
            undecided = tuple(c for c in required if not self._decided(c))
        else:
            undecided = tuple(c for c in required if c.waiting_for_traffic)
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
        if any(c.breaker for c in fails):  # a gross failure is the headline
            tick.rollback(f"circuit breaker tripped: {worst}", Cause.CIRCUIT_BREAKER, fails)
        else:
            tick.rollback(f"rolled back: {worst}", Cause.LIMIT_BROKEN, fails)
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
        deadline_from=None,
        step_starts=(),
        passed=(),
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
    tick.move(Phase.FAILED, state.step, reason, cause=Cause.ROUTE_FAILED)
    tick.actions.insert(0, RestoreRoute(promoted=False))
    tick.actions.append(Notify(EventKind.FAILED, reason, mention=True, cause=Cause.ROUTE_FAILED))
    return Decision(tick.state, tuple(tick.actions), tuple(tick.transitions))


def end_deleted(spec: RolloutSpec, state: RolloutState, now: datetime) -> Decision:
    """The ModelRollout was deleted: restore the route and end the rollout."""
    if state.phase.terminal:
        return Decision(state)
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
