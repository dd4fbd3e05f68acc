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

The engine reaches the outside only through ports: the routers' `TrafficRouter`,
the store's `RolloutStore`, and the `Observer` below, which the runtime backs with
the metrics provider and the judge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from controller.engine.decide import decide, end_deleted, fail, restart, start
from controller.engine.phases import Phase
from controller.engine.state import (
    Action,
    ApplyRoute,
    Command,
    CommandKind,
    Decision,
    Look,
    Notify,
    RestoreRoute,
    RolloutState,
    Transition,
)
from controller.errors import CanaryError, PermanentError
from controller.policy import ModelRollout
from controller.routing.base import TrafficRouter
from controller.store.base import RolloutStore
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


class Observer(Protocol):
    """Reads the metrics of a rollout and judges them."""

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


@dataclass(frozen=True)
class TickResult:
    """What a tick did: the decision (state, actions, transitions), what it looked at,
    the row committed, and route writes that failed (retried next tick)."""

    key: str
    decision: Decision
    stored: StoredRollout | None
    route_errors: tuple[str, ...] = field(default_factory=tuple)
    look: Look | None = None


def dedupe_key(key: str, state: RolloutState, index: int, event: str) -> str:
    """The same decision re-made after a crash yields the same key: it is sent once."""
    return f"{key}#{state.started_at.isoformat()}#{state.tick}#{index}#{event}"


class Executor:
    """Runs ticks: decide purely, then perform the effects and commit once."""

    def __init__(self, store: RolloutStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def tick(self, rollout: ModelRollout, route: TrafficRouter, observer: Observer) -> TickResult:
        now = self.clock.now()
        key = rollout.key
        spec = rollout.spec
        generation = rollout.metadata.generation or 1
        stored = self.store.get(key)
        state = (
            RolloutState.from_json(stored.state)
            if stored is not None
            else start(spec, generation, now)
        )
        analyses: tuple[AnalysisRecord, ...] = ()
        look: Look | None = None
        if stored is not None and spec.candidate.version != state.candidate_version:
            decision = restart(spec, state, generation, now)
        elif state.phase.terminal:
            if not state.restore_pending:
                return TickResult(key, Decision(state), stored)  # ended: nothing to do
            decision = Decision(state)
        else:
            # A pending rollout has served nothing yet: it starts without a look.
            observation = (
                Observation(Look())
                if state.phase is Phase.PENDING
                else self._observe(observer, rollout, state, now)
            )
            analyses, look = observation.records, observation.look
            commands = self._commands(key, state) if stored is not None else ()
            decision = decide(spec, state, observation.look, commands, now)
            decision = Decision(
                decision.state.evolve(generation=generation),
                decision.actions,
                decision.transitions,
                decision.applied_commands,
            )
        return self._perform(rollout, stored, decision, route, analyses, now, look)

    def end(self, rollout: ModelRollout, route: TrafficRouter) -> TickResult | None:
        """The ModelRollout was deleted: restore the route and record the end."""
        stored = self.store.get(rollout.key)
        if stored is None:
            return None
        now = self.clock.now()
        state = RolloutState.from_json(stored.state)
        return self._perform(rollout, stored, end_deleted(rollout.spec, state, now), route, (), now)

    def _observe(
        self, observer: Observer, rollout: ModelRollout, state: RolloutState, now: datetime
    ) -> Observation:
        try:
            return observer.observe(rollout, state, now)
        except CanaryError as exc:  # measurement errors are data: the engine holds
            log.warning("metrics unavailable for %s: %s", rollout.key, exc)
            return Observation(Look(error=f"metrics unavailable: {exc}"))

    def _commands(self, key: str, state: RolloutState) -> tuple[Command, ...]:
        return tuple(
            Command(c.id or 0, CommandKind(c.command), c.actor, c.reason)
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
    ) -> TickResult:
        actions = list(decision.actions)
        ended = decision.state.phase.terminal and not decision.transitions
        if ended and decision.state.restore_pending:
            actions.insert(0, RestoreRoute(promoted=decision.state.phase is Phase.PROMOTED))
        writes = _RouteWrites(rollout.key, route, now)
        state = writes.perform(decision.state, actions)
        if writes.permanent is not None and not state.phase.terminal:
            failure = fail(
                rollout.spec, state, f"the route cannot be written: {writes.permanent}", now
            )
            state = writes.perform(failure.state, list(failure.actions))
            decision = Decision(
                state,
                decision.actions + failure.actions,
                decision.transitions + failure.transitions,
                decision.applied_commands,
            )
        records, errors = writes.records, writes.errors
        messages = tuple(
            OutboxMessage(
                dedupe_key(rollout.key, state, i, str(a.event)),
                str(a.event),
                _payload(rollout, state, a),
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
            transitions=tuple(_transition(t) for t in decision.transitions),
            analyses=analyses,
            route_actions=tuple(r for r in records if r.changed or r.error),
            messages=messages,
        )
        committed = self.store.commit(write)
        return TickResult(
            rollout.key,
            Decision(state, decision.actions, decision.transitions),
            committed,
            tuple(errors),
            look,
        )


class _RouteWrites:
    """Performs a tick's route actions in order and records each, failed ones included."""

    def __init__(self, key: str, route: TrafficRouter, now: datetime) -> None:
        self.key = key
        self.route = route
        self.now = now
        self.records: list[RouteActionRecord] = []
        self.errors: list[str] = []
        #: the first permanent error of an ApplyRoute: the route cannot carry the rollout
        self.permanent: PermanentError | None = None

    def perform(self, state: RolloutState, actions: list[Action]) -> RolloutState:
        """Perform the route actions; returns `state` with `restore_pending` updated."""
        for action in actions:
            if isinstance(action, Notify):
                continue
            try:
                if isinstance(action, RestoreRoute):
                    change = self.route.restore(promote=action.promoted)
                    state = state.evolve(restore_pending=False)
                else:
                    change = self.route.apply(action.state)
            except CanaryError as exc:
                if isinstance(action, RestoreRoute):
                    state = state.evolve(restore_pending=True)
                elif isinstance(exc, PermanentError) and self.permanent is None:
                    self.permanent = exc
                self.errors.append(str(exc))
                log.error("route write failed for %s: %s", self.key, exc)
                self.records.append(
                    RouteActionRecord(
                        self.now, _action_name(action), _desired(action), error=str(exc)
                    )
                )
                continue
            self.records.append(
                RouteActionRecord(
                    self.now,
                    _action_name(action),
                    _desired(action),
                    {**change.state.to_json(), "writes": [str(w) for w in change.writes]},
                    change.changed,
                )
            )
        return state


def _action_name(action: ApplyRoute | RestoreRoute) -> str:
    if isinstance(action, RestoreRoute):
        return "promote" if action.promoted else "restore"
    return "apply"


def _desired(action: ApplyRoute | RestoreRoute) -> dict[str, Any]:
    if isinstance(action, RestoreRoute):
        return {"restore": "promoted" if action.promoted else "baseline"}
    return action.state.to_json()


def _transition(t: Transition) -> TransitionRecord:
    return TransitionRecord(
        at=t.at,
        from_phase=str(t.from_phase),
        to_phase=str(t.to_phase),
        from_step=t.from_step,
        to_step=t.to_step,
        reason=t.reason,
        actor=t.actor,
        cause=str(t.cause) if t.cause else None,
    )


def _payload(rollout: ModelRollout, state: RolloutState, notify: Notify) -> dict[str, Any]:
    spec = rollout.spec
    owners = spec.owners.slack
    return {
        "rollout": rollout.key,
        "model": spec.model,
        "baseline": spec.baseline.version,
        "candidate": spec.candidate.version,
        "event": str(notify.event),
        "cause": str(notify.cause) if notify.cause else None,
        "text": notify.text,
        "phase": str(state.phase),
        "step": state.step,
        "route": state.route.to_json(),
        "channel": owners.channel if owners else None,
        "mention": list(owners.mention) if owners and notify.mention else [],
        "cells": [
            {
                "metric": c.metric,
                "cohort": c.cohort,
                "verdict": str(c.verdict),
                "summary": c.summary,
            }
            for c in notify.cells
        ],
    }
