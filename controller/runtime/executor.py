"""The executor: one tick of one rollout, with its effects, in a crash-safe order.

    read state ─> look at metrics ─> decide (pure) ─> act on the route ─> commit

- The route is written before the commit, and a rollback's restore is the first
  write of its tick: a slow database never delays taking traffic off a bad model.
- The commit is one transaction (state, transitions, analyses, route actions,
  outbox messages) and only succeeds if the rollout is still at the revision this
  tick read. A crash anywhere before it leaves the previous state, and the next
  tick decides again; route writes are idempotent, so nothing is done twice, and
  a notification's dedupe key makes a re-decided message a no-op.
- A route write that fails transiently is recorded and retried on the next tick:
  live phases re-apply the wanted route every tick; an ended rollout whose restore
  failed keeps `restore_pending` and is restored again until it succeeds.
- A route that cannot carry the rollout at all (a `PermanentError`: the route is
  missing, RBAC forbids the write, it does not point at the baseline...) ends the
  rollout as Failed in the same tick: the route is given back and the owners told.
- Every write toward the candidate is fenced: right before it, the tick's `Fence`
  re-reads the lease (still this replica's, same epoch, not expired), and the
  router refuses it if the route carries a newer epoch. A refused write stops the
  tick (FencedError): its commit would be refused as stale, so the refusal goes
  into the audit on its own. Writes toward the baseline are never fenced.
- An ended rollout's route is looked at again on every sync (`correct`): if it
  carries the candidate (a stale write that slipped between a fence check and
  its write), it is put back, audited and the owners told.

Moving traffic toward the baseline never waits for the store. The executor keeps
in memory the last committed row of every rollout it ticks. When the store cannot
be reached (a `TransientError` from the lease, the read or the commit), a tick
still looks at the metrics and decides from that row; if nothing it would do gives
the candidate more traffic (`moves_toward_candidate`), it is performed at once,
and its write (state, transitions, audit, outbox) waits in memory, merged with
the writes of the following store-less ticks, until a tick finds the store again
and commits it, with the same dedupe keys. A tick that would give the candidate
more traffic holds instead: that needs the lease and the store. If another
replica wrote the rollout meanwhile, its state wins: the route writes this replica
made are appended to the audit, and the tick decides again from the stored state.
A replica restarted while the store is down knows no state and can do nothing.

The same rule holds a rollout whose latest policy is invalid (a bad edit of its
file, a refused spec): the controller ticks it on its last committed policy with
a `hold` reason. Such a tick looks and decides as usual; what moves traffic only
toward the baseline (a rollback, an abort's restore) is performed and committed,
its transitions saying the policy was invalid; a decision that would give the
candidate more (an advance, a promotion) holds, and the held tick records nothing.

A rollback on a failed metric (and an abort with `--capture`) records its failing
cells as eval cases (`engine.capture` chooses them, the `CaseRecorder` port builds
them with the trace IDs of bad requests) after the route is given back, in the
same commit, and its notification carries them.

The executor reaches the outside only through ports: the routers' `TrafficRouter`,
the store's `RolloutStore`, the `Observer` below, which the runtime backs with
the metrics provider and the judge, and the `GateRunner`, which runs the gate a
rollout waits for (a webhook call, a Job) and says how its attempt went. A
rollout waiting for a gate before its start is not looked at: nothing of the
candidate is served yet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from controller.analysis.verdicts import CellVerdict
from controller.cases import EvalCase
from controller.engine.capture import Capture, cells_to_capture
from controller.engine.decide import decide, end_deleted, restart, route_written, start
from controller.engine.direction import moves_toward_candidate
from controller.engine.phases import Phase
from controller.engine.state import (
    Action,
    ApplyRoute,
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
    RouteOutcome,
    Transition,
)
from controller.errors import CanaryError, FencedError, PermanentError, TransientError
from controller.notify.base import CellNote, GateNote, OutboxPayload
from controller.policy import ModelRollout
from controller.policy.gates import GatePoint
from controller.policy.route import NEUTRAL, PROMOTED, RouteState
from controller.routing.base import RouteChange, TrafficRouter
from controller.store.base import RolloutStore, StaleStateError
from controller.store.records import (
    AnalysisRecord,
    OutboxMessage,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Observation:
    """One look: the engine's summary, and the full verdicts for the audit."""

    look: Look
    records: tuple[AnalysisRecord, ...] = ()
    #: the judge's verdicts with their checks, from which eval cases are made
    verdicts: tuple[CellVerdict, ...] = ()


class Observer(Protocol):
    """Reads the metrics of a rollout and judges them."""

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class CaseRecorder(Protocol):
    """Turns the cells a tick captures into eval cases, with trace IDs of bad requests.

    Called after the tick's route writes, before its commit; it must bound its
    own time, and never raise for a trace source that cannot answer (the case is
    recorded without trace IDs, saying why)."""

    def record(
        self, rollout: ModelRollout, state: RolloutState, capture: Capture, now: datetime
    ) -> tuple[EvalCase, ...]: ...


class GateRunner(Protocol):
    """Runs the gate `state.gate` names, one attempt at a time (`state.gate.attempt`).

    Called every tick while the rollout waits for it: a webhook is called and its
    answer returned; a Job is created on the first call and its status read on the
    next (RUNNING until it finishes). Transient trouble (the API server not
    answering) is RUNNING with a detail: the gate's timeout bounds it.
    """

    def check(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> GateResult: ...


class NoGates:
    """A controller without a gate runner: every gate fails, saying so."""

    def check(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> GateResult:
        assert state.gate is not None
        return GateResult(
            state.gate.name,
            state.gate.attempt,
            GateOutcome.FAILED,
            "this controller has no gate runner",
        )


class Fence(Protocol):
    """A tick's claim on its rollout, re-checked right before each write toward the candidate.

    `epoch` is the lease epoch the tick began under; it goes onto the route with
    the write, where a router refuses it if the route already carries a newer one.
    """

    @property
    def epoch(self) -> int | None: ...

    def check(self) -> None:
        """FencedError unless the lease is still this replica's, at `epoch`, not expired."""
        ...


class Unfenced:
    """No leases (one process, the demo, a single replica's tests): nothing is fenced."""

    @property
    def epoch(self) -> int | None:
        return None

    def check(self) -> None:
        return None


UNFENCED = Unfenced()


def toward_candidate(action: ApplyRoute | RestoreRoute) -> bool:
    """Whether a route action may move traffic toward the candidate (and so is fenced).

    Any state that routes anything counts, whatever the route carries now: from a
    route another replica has just given back, re-applying "10 %" moves traffic
    toward the candidate. Only a restore to the baseline (or the neutral state)
    never does.
    """
    if isinstance(action, RestoreRoute):
        return action.promoted
    return action.state.routes_anything


@dataclass(frozen=True)
class TickResult:
    """What a tick did: the decision (state, actions, transitions), what it looked at,
    the row committed, and route writes that failed (retried next tick).

    `store_error` says the store could not be reached: the tick acted from the last
    committed state (toward the baseline only), `stored` is None, and its write waits
    in memory (`Executor.pending`) until a later tick records it."""

    key: str
    decision: Decision
    stored: StoredRollout | None
    route_errors: tuple[str, ...] = field(default_factory=tuple)
    look: Look | None = None
    store_error: str | None = None
    #: why the tick held its decision toward the candidate and recorded nothing
    held: str | None = None


@dataclass(frozen=True)
class StoreRead:
    """What a tick reads from the store before it acts (`Executor.read`)."""

    stored: StoredRollout | None
    commands: tuple[Command, ...] = ()


@dataclass(frozen=True)
class MessageKey:
    """What makes an outbox message unique: the same decision re-made after a crash
    yields the same key, so it is sent once. Its text is the store's dedupe key; nobody
    reads it back (the message's `OutboxPayload` carries the tick and the start)."""

    rollout: str
    started_at: datetime
    #: the tick that decided it, or `r<revision>` for a correction made between ticks
    made_at: int | str
    #: the message's place among its tick's actions (None for a correction)
    index: int | None
    event: str

    def __str__(self) -> str:
        made = [self.rollout, self.started_at.isoformat(), str(self.made_at)]
        index = [] if self.index is None else [str(self.index)]
        return "#".join([*made, *index, self.event])


class Executor:
    """Runs ticks: decide purely, then perform the effects and commit once."""

    def __init__(
        self,
        store: RolloutStore,
        clock: Clock,
        *,
        cases: CaseRecorder | None = None,
        gates: GateRunner | None = None,
    ) -> None:
        """`cases` records eval cases of rollbacks (none are recorded without it); `gates`
        runs the policies' gates (without it, every gate fails, saying so)."""
        self.store = store
        self.clock = clock
        self.cases = cases
        self.gates: GateRunner = gates or NoGates()
        self._lock = threading.Lock()
        #: the last row of each rollout read from or committed to the store
        self._known: dict[str, StoredRollout] = {}
        #: the writes of ticks that acted without the store, oldest first, per rollout
        self._pending: dict[str, list[TickWrite]] = {}
        #: rollouts already logged as unknown while the store is down (logged once)
        self._blind: set[str] = set()

    @property
    def pending(self) -> int:
        """Rollouts whose last ticks acted without the store and are not recorded yet."""
        with self._lock:
            return len(self._pending)

    def read(self, key: str) -> StoreRead:
        """What a tick reads before it acts: the rollout's row and the commands after
        its cursor (reads only, so a caller may run this apart and stop waiting)."""
        stored = self.store.get(key)
        commands: tuple[Command, ...] = ()
        if stored is not None:
            state = RolloutState.from_json(stored.state)
            if not state.phase.terminal:
                commands = self._commands(key, state)
        return StoreRead(stored, commands)

    def tick(
        self,
        rollout: ModelRollout,
        route: TrafficRouter,
        observer: Observer,
        *,
        read: StoreRead | TransientError | None = None,
        fence: Fence = UNFENCED,
        hold: str | None = None,
    ) -> TickResult:
        """One tick. `read`: what the caller already read (`read(key)`), or the error the
        store gave it, in which case the tick runs from the state kept in memory; read
        here when None. `fence` guards every write toward the candidate: FencedError
        (nothing committed, the refusal audited) if this replica's lease is no longer
        the latest.

        `hold`: why nothing may move toward the candidate this tick (the rollout's
        latest policy is invalid, `rollout` is its last committed one). The tick holds
        exactly as one without the store does: a decision that would give the
        candidate more traffic is not performed and the held tick records nothing
        (`TickResult.held` says why); one that moves traffic only toward the baseline
        is performed and committed as usual, its transitions naming `hold`."""
        now = self.clock.now()
        key = rollout.key
        if read is None:
            try:
                read = self.read(key)
            except TransientError as exc:
                read = exc
        if isinstance(read, TransientError):
            return self._tick_without_store(rollout, route, observer, read, now, fence, hold)
        stored, commands = read.stored, read.commands
        try:
            if self.pending_for(key):
                stored = self._record_pending(key, stored, now)
                commands = self.read(key).commands if stored is not None else ()
            else:
                self._remember(key, stored)
        except TransientError as exc:
            return self._tick_without_store(rollout, route, observer, exc, now, fence, hold)
        with self._lock:
            self._blind.discard(key)
        return self._tick(
            rollout, stored, commands, route, observer, now, offline=None, fence=fence, hold=hold
        )

    def pending_for(self, key: str) -> bool:
        """Whether ticks of `key` acted without the store and wait to be recorded."""
        with self._lock:
            return key in self._pending

    def _remember(self, key: str, stored: StoredRollout | None) -> None:
        if stored is not None:
            with self._lock:
                self._known[key] = stored

    def _tick(
        self,
        rollout: ModelRollout,
        stored: StoredRollout | None,
        commands: tuple[Command, ...],
        route: TrafficRouter,
        observer: Observer,
        now: datetime,
        *,
        offline: TransientError | None,
        fence: Fence = UNFENCED,
        hold: str | None = None,
    ) -> TickResult:
        key = rollout.key
        spec = rollout.spec
        generation = rollout.metadata.generation or 1
        state = (
            RolloutState.from_json(stored.state)
            if stored is not None
            else start(spec, generation, now)
        )
        analyses: tuple[AnalysisRecord, ...] = ()
        look: Look | None = None
        capture: Capture | None = None
        if stored is not None and spec.candidate.version != state.candidate_version:
            decision = restart(spec, state, generation, now)
        elif state.phase.terminal:
            gate = self._gate(rollout, state, now) if state.gate is not None else None
            decision = decide(spec, state, None, (), now, gate)
            if not decision.actions and state.gate is None:
                # ended, its route given back: nothing to do
                return TickResult(key, decision, stored, store_error=_text(offline))
        else:
            # A pending rollout, or one waiting for a preRollout gate, has served
            # nothing yet: no look.
            unserved = state.phase is Phase.PENDING or (
                state.gate is not None and state.gate.point is GatePoint.PRE_ROLLOUT
            )
            observation = (
                Observation(Look()) if unserved else self._observe(observer, rollout, state, now)
            )
            analyses, look = observation.records, observation.look
            decision = decide(
                spec,
                state,
                observation.look,
                commands,
                now,
                self._gate(rollout, state, now),
                generation=generation,
            )
            capture = cells_to_capture(decision, observation.verdicts)
        if offline is not None or hold is not None:
            serving = state.serving()
            if any(moves_toward_candidate(serving, a) for a in _route_actions(decision)):
                # Toward the candidate needs the lease, the store and a valid policy:
                # hold this tick.
                return TickResult(
                    key, Decision(state), None, look=look, store_error=_text(offline), held=hold
                )
        return self._perform(
            rollout,
            stored,
            decision,
            route,
            analyses,
            now,
            look,
            offline=offline,
            fence=fence,
            hold=hold,
            capture=capture,
        )

    def _tick_without_store(
        self,
        rollout: ModelRollout,
        route: TrafficRouter,
        observer: Observer,
        error: TransientError,
        now: datetime,
        fence: Fence,
        hold: str | None = None,
    ) -> TickResult:
        key = rollout.key
        with self._lock:
            pending = self._pending.get(key)
            known = self._known.get(key)
            blind = key in self._blind
            if known is None and not pending:
                self._blind.add(key)
        if known is None and not pending:
            if not blind:
                log.error(
                    "%s: the store is unreachable and this replica has no state of it "
                    "(restarted since its last commit): nothing can be done for it "
                    "until the store answers",
                    key,
                )
            raise error
        # The newest state this replica knows: its own unrecorded ticks', if any.
        base = pending[-1].rollout if pending else known
        assert base is not None
        return self._tick(
            rollout, base, (), route, observer, now, offline=error, fence=fence, hold=hold
        )

    def end(self, rollout: ModelRollout, route: TrafficRouter) -> TickResult | None:
        """The ModelRollout was deleted: restore the route and record the end."""
        now = self.clock.now()
        stored = self._record_pending(rollout.key, self.store.get(rollout.key), now)
        if stored is None:
            return None
        state = RolloutState.from_json(stored.state)
        return self._perform(rollout, stored, end_deleted(rollout.spec, state, now), route, (), now)

    def forget(self, key: str) -> None:
        """Another replica owns `key` now: record what this one did without the store
        (all of it if nobody wrote the rollout since, else its route writes, appended
        to the audit), then forget its state. While the store cannot be reached this
        raises, and the write stays pending, to be tried again."""
        now = self.clock.now()
        if self.pending_for(key):
            self._record_pending(key, self.store.get(key), now)
        with self._lock:
            self._pending.pop(key, None)
            self._known.pop(key, None)
            self._blind.discard(key)

    def _record_pending(
        self, key: str, stored: StoredRollout | None, now: datetime
    ) -> StoredRollout | None:
        """Commit the writes that wait for the store, if any; returns the row to tick from.

        Writes already in the store are skipped: a commit whose answer was lost (the
        database committed, the connection broke first) left the row at the state of
        one of them, one revision on. If the rollout is at another revision (another
        replica wrote it meanwhile), the stored state wins: the route writes made
        without the store are appended to its audit, and the tick decides again."""
        with self._lock:
            segments = list(self._pending.get(key, ()))
        if not segments:
            self._remember(key, stored)
            return stored
        base = segments[0].expected_revision
        landed = _landed(segments, stored)
        if landed:
            assert stored is not None
            log.info("%s: %d tick writes had reached the store already", key, landed)
            segments, base = segments[landed:], stored.revision
            if not segments:
                self._settled(key, stored)
                return stored
        if base == (stored.revision if stored is not None else None):
            try:
                committed = self.store.commit(_merged(segments, base))
            except StaleStateError:
                stored = self.store.get(key)
            else:
                log.info("%s: recorded the ticks made while the store was unreachable", key)
                self._settled(key, committed)
                return committed
        return self._append_route_audit(key, segments, stored, now)

    def _append_route_audit(
        self, key: str, segments: list[TickWrite], stored: StoredRollout | None, now: datetime
    ) -> StoredRollout | None:
        log.warning(
            "%s: another replica wrote the rollout while the store was unreachable from "
            "here; its state wins, the route writes made here are added to the audit",
            key,
        )
        actions = tuple(a for segment in segments for a in segment.route_actions)
        if stored is not None and actions:
            stored = self.store.commit(
                TickWrite(
                    rollout=replace(stored, updated_at=now),
                    expected_revision=stored.revision,
                    route_actions=actions,
                )
            )
        self._settled(key, stored)
        return stored

    def _settled(self, key: str, stored: StoredRollout | None) -> None:
        with self._lock:
            self._pending.pop(key, None)
            if stored is not None:
                self._known[key] = stored

    def _defer(self, write: TickWrite) -> None:
        """Keep a write the store could not take, after the ones already waiting."""
        with self._lock:
            self._pending.setdefault(write.rollout.key, []).append(write)

    def _observe(
        self, observer: Observer, rollout: ModelRollout, state: RolloutState, now: datetime
    ) -> Observation:
        try:
            return observer.observe(rollout, state, now)
        except CanaryError as exc:  # measurement errors are data: the engine holds
            log.warning("metrics unavailable for %s: %s", rollout.key, exc)
            return Observation(Look(error=f"metrics unavailable: {exc}"))

    def _gate(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> GateResult | None:
        """The result of the gate the rollout waits for (none while paused)."""
        wait = state.gate
        if wait is None or state.phase is Phase.PAUSED:
            return None
        try:
            return self.gates.check(rollout, state, now)
        except CanaryError as exc:  # the gate's timeout bounds how long this may last
            log.warning("gate %s of %s: %s", wait.name, rollout.key, exc)
            return GateResult(wait.name, wait.attempt, GateOutcome.RUNNING, str(exc))

    def _commands(self, key: str, state: RolloutState) -> tuple[Command, ...]:
        return tuple(
            Command(
                c.id or 0, CommandKind(c.command), c.actor, c.reason, c.args.get("capture") is True
            )
            for c in self.store.commands(key, after_id=state.command_cursor)
        )

    def _perform(
        self,
        rollout: ModelRollout,
        stored: StoredRollout | None,
        decision: Decision,
        route: TrafficRouter,
        analyses: tuple[AnalysisRecord, ...],
        now: datetime,
        look: Look | None = None,
        *,
        offline: TransientError | None = None,
        fence: Fence = UNFENCED,
        hold: str | None = None,
        capture: Capture | None = None,
    ) -> TickResult:
        writes = _RouteWrites(rollout.key, route, now, decision.state.serving(), fence)
        try:
            outcome = writes.perform(decision.actions)
            after = route_written(rollout.spec, decision.state, outcome, now)
            state = after.state
            if after.actions:  # the route cannot carry the rollout: it failed
                outcome = writes.perform(after.actions)
                state = route_written(rollout.spec, state, outcome, now).state
                decision = Decision(
                    state,
                    decision.actions + after.actions,
                    decision.transitions + after.transitions,
                    decision.applied_commands,
                )
        except FencedError:
            self._audit_refusal(rollout.key, writes)
            raise
        records, errors = writes.records, writes.errors
        # after the route writes: a rollback never waits for its trace IDs
        cases = self._record_cases(rollout, state, capture, now)
        messages = tuple(
            OutboxMessage(
                str(MessageKey(rollout.key, state.started_at, state.tick, i, str(a.event))),
                str(a.event),
                _payload(rollout, state, a, cases, tick=state.tick).to_json(),
                now,
            )
            for i, a in enumerate(decision.actions)
            if isinstance(a, Notify)
        )
        write = TickWrite(
            rollout=StoredRollout(
                key=rollout.key,
                namespace=rollout.metadata.namespace,
                name=rollout.metadata.name,
                generation=state.generation,
                candidate_version=state.candidate_version,
                phase=str(state.phase),
                step=state.step,
                policy=rollout.model_dump(mode="json", exclude_none=True),
                state=state.to_json(),
                created_at=now,
                updated_at=now,
            ),
            expected_revision=stored.revision if stored is not None else None,
            transitions=tuple(_transition(t, offline, hold) for t in decision.transitions),
            analyses=analyses,
            route_actions=tuple(r for r in records if r.changed or r.error),
            messages=messages,
            eval_cases=cases,
        )
        result = Decision(state, decision.actions, decision.transitions)
        if offline is None:
            try:
                committed = self.store.commit(write)
            except StaleStateError:
                raise
            except TransientError as exc:
                # The effects happened: keep their record for a tick that finds the store.
                offline = exc
            else:
                with self._lock:
                    self._known[rollout.key] = committed
                return TickResult(rollout.key, result, committed, tuple(errors), look)
        self._defer(write)
        return TickResult(rollout.key, result, None, tuple(errors), look, str(offline))

    def _record_cases(
        self, rollout: ModelRollout, state: RolloutState, capture: Capture | None, now: datetime
    ) -> tuple[EvalCase, ...]:
        if capture is None or self.cases is None:
            return ()
        try:
            return self.cases.record(rollout, state, capture, now)
        except Exception:  # a bug here must never stop a rollback's commit
            log.exception("%s: could not record the eval cases of this tick", rollout.key)
            return ()

    def _audit_refusal(self, key: str, writes: _RouteWrites) -> None:
        """Append the fenced write (and any written before it) to the audit: the tick that
        made them will never commit, yet someone must be able to see what was tried."""
        for record in writes.records:
            if record.changed or record.error:
                try:
                    self.store.append_route_action(key, record)
                except CanaryError as exc:
                    log.error("could not audit the refused route write of %s: %s", key, exc)

    def correct(
        self, rollout: ModelRollout, stored: StoredRollout, route: TrafficRouter
    ) -> TickResult | None:
        """Put an ended rollout's route back if it carries the candidate again.

        Rolled back, aborted and failed rollouts must leave their route on the
        baseline for as long as the ModelRollout exists. The fence leaves one
        window: a stale replica that passed its lease check just before the new
        owner restored the route writes after it, onto a route that (given back
        exactly) no longer carries an epoch. This finds that route on the next
        sync, restores it (toward the baseline: no fence needed), and commits the
        action with a message to the owners, once per correction (the message is
        keyed by the revision the correction was made from). One `observe` per
        call; None when the route carries nothing of the candidate.
        """
        state = RolloutState.from_json(stored.state)
        if not state.phase.terminal or state.phase is Phase.PROMOTED or state.restore_pending:
            return None
        observed = route.observe()
        if not observed.sends_traffic:
            return None
        now = self.clock.now()
        change = route.restore()
        ended = _ENDED_AS.get(state.phase, str(state.phase))
        reason = (
            f"the route carried the {ended} candidate {state.candidate_version} "
            f"({observed}); put back"
        )
        log.warning("%s: %s", rollout.key, reason)
        record = RouteActionRecord(
            now,
            "restore",
            {"restore": "baseline"},
            {**change.state.to_json(), "writes": [str(w) for w in change.writes]},
            change.changed,
            reason=reason,
        )
        notify = Notify(EventKind.ROUTE_CORRECTED, reason, mention=True)
        key = MessageKey(rollout.key, state.started_at, f"r{stored.revision}", None, notify.event)
        message = OutboxMessage(
            str(key),
            str(notify.event),
            _payload(rollout, state, notify, tick=None).to_json(),
            now,
        )
        committed = self.store.commit(
            TickWrite(
                rollout=replace(stored, updated_at=now),
                expected_revision=stored.revision,
                route_actions=(record,),
                messages=(message,),
            )
        )
        self._remember(rollout.key, committed)
        return TickResult(rollout.key, Decision(state, (notify,)), committed)


_ENDED_AS = {Phase.ROLLED_BACK: "rolled-back", Phase.ABORTED: "aborted", Phase.FAILED: "failed"}


class _RouteWrites:
    """Performs a tick's route actions in order and records each, failed ones included.

    Every write that gives the candidate more traffic goes through `_toward_candidate`;
    every write that routes anything at all (the same step again included: the route
    may have been given back meanwhile by another replica) passes the tick's fence
    first, which re-reads the lease (see `toward_candidate`).
    """

    def __init__(
        self, key: str, route: TrafficRouter, now: datetime, serving: RouteState, fence: Fence
    ) -> None:
        self.key = key
        self.route = route
        self.now = now
        #: what the route carries as far as this tick knows (updated by each write)
        self.serving = serving
        self.fence = fence
        self.records: list[RouteActionRecord] = []
        self.errors: list[str] = []

    def perform(self, actions: Sequence[Action]) -> RouteOutcome:
        """Perform the route actions; returns what the engine must know of how they went.

        FencedError (after recording the refusal) if a write toward the candidate is
        refused: the actions after it are not performed."""
        restored: bool | None = None
        unroutable: str | None = None
        for action in actions:
            if isinstance(action, Notify):
                continue
            try:
                if moves_toward_candidate(self.serving, action):
                    change = self._toward_candidate(action)
                else:
                    change = self._toward_baseline(action)
                if isinstance(action, RestoreRoute):
                    restored = True
            except FencedError as exc:
                log.warning("route write for %s refused: %s", self.key, exc)
                self.records.append(
                    RouteActionRecord(
                        self.now,
                        _action_name(action),
                        _desired(action),
                        error=f"fenced: {exc}",
                        reason="a write toward the candidate from a replica whose lease is "
                        "no longer the latest was refused",
                    )
                )
                raise
            except CanaryError as exc:
                if isinstance(action, RestoreRoute):
                    restored = False
                elif isinstance(exc, PermanentError) and unroutable is None:
                    unroutable = str(exc)
                self.errors.append(str(exc))
                log.error("route write failed for %s: %s", self.key, exc)
                self.records.append(
                    RouteActionRecord(
                        self.now, _action_name(action), _desired(action), error=str(exc)
                    )
                )
                continue
            self.serving = _after(action)
            self.records.append(
                RouteActionRecord(
                    self.now,
                    _action_name(action),
                    _desired(action),
                    {**change.state.to_json(), "writes": [str(w) for w in change.writes]},
                    change.changed,
                )
            )
        return RouteOutcome(restored, unroutable)

    def _toward_candidate(self, action: ApplyRoute | RestoreRoute) -> RouteChange:
        """A write that gives the candidate more traffic (needs the lease and the store)."""
        return self._write(action)

    def _toward_baseline(self, action: ApplyRoute | RestoreRoute) -> RouteChange:
        """A write that takes traffic from the candidate, or changes nothing: always safe."""
        return self._write(action)

    def _write(self, action: ApplyRoute | RestoreRoute) -> RouteChange:
        # the fence: re-read the lease immediately before any write that can put traffic
        # on the candidate (not only those this tick believes give it more)
        if toward_candidate(action):
            self.fence.check()
        if isinstance(action, RestoreRoute):
            epoch = self.fence.epoch if action.promoted else None
            return self.route.restore(promote=action.promoted, epoch=epoch)
        return self.route.apply(action.state, epoch=self.fence.epoch)


def _after(action: ApplyRoute | RestoreRoute) -> RouteState:
    """What the route carries once `action` succeeded."""
    if isinstance(action, RestoreRoute):
        return PROMOTED if action.promoted else NEUTRAL
    return action.state


def _merged(segments: list[TickWrite], expected_revision: int | None) -> TickWrite:
    """The writes of several ticks as one, to commit in one transaction."""
    return TickWrite(
        rollout=segments[-1].rollout,
        expected_revision=expected_revision,
        transitions=tuple(t for w in segments for t in w.transitions),
        analyses=tuple(a for w in segments for a in w.analyses),
        route_actions=tuple(a for w in segments for a in w.route_actions),
        messages=tuple(m for w in segments for m in w.messages),
        eval_cases=tuple(c for w in segments for c in w.eval_cases),
    )


def _landed(segments: list[TickWrite], stored: StoredRollout | None) -> int:
    """How many of the first waiting writes the store holds already: a commit of them
    (alone, or merged) whose answer was lost leaves the row one revision on, at the
    state of the last of them."""
    if stored is None:
        return 0
    base = segments[0].expected_revision
    if stored.revision != (base + 1 if base is not None else 1):
        return 0
    for count in range(len(segments), 0, -1):
        if dict(segments[count - 1].rollout.state) == dict(stored.state):
            return count
    return 0


def _route_actions(decision: Decision) -> list[ApplyRoute | RestoreRoute]:
    return [a for a in decision.actions if not isinstance(a, Notify)]


def _text(error: Exception | None) -> str | None:
    return str(error) if error is not None else None


def _action_name(action: ApplyRoute | RestoreRoute) -> str:
    if isinstance(action, RestoreRoute):
        return "promote" if action.promoted else "restore"
    return "apply"


def _desired(action: ApplyRoute | RestoreRoute) -> dict[str, Any]:
    if isinstance(action, RestoreRoute):
        return {"restore": "promoted" if action.promoted else "baseline"}
    return action.state.to_json()


def _transition(
    t: Transition, offline: TransientError | None = None, hold: str | None = None
) -> TransitionRecord:
    """The audit row of a transition; one decided without the store, or on the last
    valid policy because the latest is invalid (`hold`), says so."""
    details: dict[str, Any] = {}
    if offline is not None:
        details["decidedWithoutStore"] = str(offline)
    if hold is not None:
        details["heldOnLastValidPolicy"] = hold
    if t.gate is not None:
        details["gate"] = t.gate.to_json()
    return TransitionRecord(
        at=t.at,
        from_phase=str(t.from_phase),
        to_phase=str(t.to_phase),
        from_step=t.from_step,
        to_step=t.to_step,
        reason=t.reason if hold is None else f"{t.reason} ({hold})",
        actor=t.actor,
        cause=str(t.cause) if t.cause else None,
        details=details,
    )


def _payload(
    rollout: ModelRollout,
    state: RolloutState,
    notify: Notify,
    cases: tuple[EvalCase, ...] = (),
    *,
    tick: int | None,
) -> OutboxPayload:
    spec = rollout.spec
    owners = spec.owners.slack
    ended = notify.event in (EventKind.ROLLED_BACK, EventKind.ABORTED)
    return OutboxPayload(
        rollout=rollout.key,
        event=str(notify.event),
        text=notify.text,
        model=spec.model,
        baseline=spec.baseline.version,
        candidate=spec.candidate.version,
        phase=state.phase,
        step=state.step,
        steps=len(spec.steps),
        started_at=state.started_at,
        tick=tick,
        route=state.route.to_json(),
        channel=owners.channel if owners else None,
        mention=tuple(owners.mention) if owners and notify.mention else (),
        cells=tuple(CellNote(c.metric, c.cohort, str(c.verdict), c.summary) for c in notify.cells),
        cause=notify.cause,
        gate=GateNote.of_result(notify.gate) if notify.gate is not None else None,
        eval_cases=cases if ended else (),
    )
