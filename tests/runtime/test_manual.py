"""Manual commands: recorded with actor and reason, refused when they cannot apply."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, CommandKind, Look, RolloutState
from controller.errors import PermanentError
from controller.policy import ModelRollout, load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation
from controller.runtime.manual import submit
from controller.store.memory import MemoryStore
from tests.policy.base import policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ROLLOUT = load_text(policy())[0].rollout
ROUTE = MemoryRouter(RouteTarget.of(ROLLOUT))


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


class Undecided:
    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.INCONCLUSIVE),)))


def running() -> tuple[MemoryStore, Executor, Clock]:
    store, clock = MemoryStore(), Clock()
    executor = Executor(store, clock)
    executor.tick(ROLLOUT, ROUTE, Undecided())
    return store, executor, clock


def tick(executor: Executor, clock: Clock) -> None:
    clock.at += timedelta(minutes=1)
    executor.tick(ROLLOUT, ROUTE, Undecided())


def test_pause_resume_promote_abort_in_order() -> None:
    store, executor, clock = running()
    key = ROLLOUT.key
    submit(store, key, CommandKind.PAUSE, actor="alice", reason="odd answers", now=clock.at)
    tick(executor, clock)
    assert store.get(key).phase == "Paused"  # type: ignore[union-attr]
    with pytest.raises(PermanentError, match="cannot pause llm/bot-v2: it is Paused"):
        submit(store, key, CommandKind.PAUSE, actor="alice", reason="", now=clock.at)
    submit(store, key, CommandKind.RESUME, actor="alice", reason="fine", now=clock.at)
    tick(executor, clock)
    submit(store, key, CommandKind.PROMOTE, actor="bob", reason="enough", now=clock.at)
    tick(executor, clock)
    assert store.get(key).step == 1  # type: ignore[union-attr]
    submit(store, key, CommandKind.ABORT, actor="carol", reason="rollback drill", now=clock.at)
    tick(executor, clock)
    assert [(t.to_phase, t.actor) for t in store.transitions(key)] == [
        ("Progressing", "controller"),
        ("Paused", "alice"),
        ("Progressing", "alice"),
        ("Progressing", "bob"),
        ("Aborted", "carol"),
    ]
    assert [(c.command, c.actor, c.reason) for c in store.commands(key)] == [
        ("pause", "alice", "odd answers"),
        ("resume", "alice", "fine"),
        ("promote", "bob", "enough"),
        ("abort", "carol", "rollback drill"),
    ]
    with pytest.raises(PermanentError, match="it is Aborted"):
        submit(store, key, CommandKind.RESUME, actor="a", reason="", now=clock.at)


def test_unknown_rollouts_and_anonymous_commands_are_refused() -> None:
    store, _, clock = running()
    with pytest.raises(PermanentError, match="no rollout llm/nope"):
        submit(store, "llm/nope", CommandKind.ABORT, actor="a", reason="", now=clock.at)
    with pytest.raises(PermanentError, match="say who you are"):
        submit(store, ROLLOUT.key, CommandKind.ABORT, actor=" ", reason="", now=clock.at)


def test_promote_full_goes_straight_to_promoted() -> None:
    store, executor, clock = running()
    submit(store, ROLLOUT.key, CommandKind.PROMOTE_FULL, actor="a", reason="hotfix", now=clock.at)
    tick(executor, clock)
    assert store.get(ROLLOUT.key).phase == "Promoted"  # type: ignore[union-attr]
