"""With the store unreachable, a tick still takes traffic off a bad candidate, and only that.

An in-memory store that can be switched off (every call raises `TransientError`,
as the SQL store does when Postgres is down) stands for the database; the route
is the in-memory router with the rules of a real one.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from controller.analysis.verdicts import Verdict
from controller.errors import TransientError
from controller.runtime.executor import Executor
from controller.store.memory import MemoryStore
from controller.store.records import TickWrite
from tests.runtime.test_executor import ROLLOUT, Clock, Metrics, Route, run, writes

KEY = ROLLOUT.key


class Outage:
    """A view of a shared store that can be cut off from this replica alone."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.down = False
        self.commit_fails = False
        self.answer_lost = False

    def __getattr__(self, name: str) -> Any:
        if self.down:
            raise TransientError("database 127.0.0.1:5432: connection refused")
        return getattr(self.store, name)

    def commit(self, write: TickWrite) -> Any:
        if self.down or self.commit_fails:
            raise TransientError("database 127.0.0.1:5432: connection refused")
        if self.answer_lost:  # committed, but the connection broke before the answer
            self.answer_lost = False
            self.store.commit(write)
            raise TransientError("database 127.0.0.1:5432: no answer within 1.5 s")
        return self.store.commit(write)


def on_first_step() -> tuple[MemoryStore, Outage, Clock, Any, Executor]:
    store, clock, route = MemoryStore(), Clock(), Route()
    outage = Outage(store)
    executor = Executor(outage, clock)  # type: ignore[arg-type]
    run(executor, clock, route, Metrics(), 2)
    stored = store.get(KEY)
    assert stored is not None and (stored.phase, stored.step) == ("Progressing", 0)
    assert route.observe().weight == 5
    return store, outage, clock, route, executor


def test_a_bad_candidate_is_rolled_back_with_the_store_down_and_recorded_once_it_is_back() -> None:
    store, outage, clock, route, executor = on_first_step()
    outage.down = True
    result = executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    assert route.observe().weight == 0 and route.backend == "bot-v1"  # at once
    assert result.store_error is not None and result.stored is None
    assert result.decision.state.phase == "RolledBack"
    assert executor.pending == 1
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "Progressing"  # not recorded yet
    clock.at += timedelta(minutes=1)
    again = executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))  # still down: nothing new
    assert again.store_error is not None and not again.decision.transitions
    outage.down = False
    clock.at += timedelta(minutes=1)
    executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    assert executor.pending == 0
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    transitions = store.transitions(KEY)
    assert [t.to_phase for t in transitions].count("RolledBack") == 1
    assert "decidedWithoutStore" in transitions[-1].details
    assert [a.action for a in store.route_actions(KEY)].count("restore") == 1
    assert [m.event for m in store.outbox(KEY)].count("rolled-back") == 1
    assert writes(route).count("0") == 1  # restored once, never re-written


def test_with_the_store_down_nothing_moves_toward_the_candidate() -> None:
    store, outage, clock, route, executor = on_first_step()
    outage.down = True
    before = tuple(route.history)
    for _ in range(15):  # well past the 10-minute hold: the next step is due
        clock.at += timedelta(minutes=1)
        result = executor.tick(ROLLOUT, route, Metrics(Verdict.PASS))
        assert result.store_error is not None
        assert result.decision.state.step == 0
    assert route.history == before and route.observe().weight == 5
    assert executor.pending == 1  # the ticks before the hold passed wait to be recorded
    outage.down = False
    executor.tick(ROLLOUT, route, Metrics(Verdict.PASS))
    assert route.observe().weight == 50
    assert [t.to_step for t in store.transitions(KEY)] == [0, 1]


def test_ticks_that_hold_without_the_store_are_recorded_with_their_analyses() -> None:
    store, outage, clock, route, executor = on_first_step()
    outage.down = True
    for _ in range(3):
        clock.at += timedelta(seconds=30)
        executor.tick(ROLLOUT, route, Metrics(Verdict.INCONCLUSIVE))
    assert executor.pending == 1
    outage.down = False
    executor.tick(ROLLOUT, route, Metrics(Verdict.INCONCLUSIVE))
    stored = store.get(KEY)
    assert stored is not None and stored.state["tick"] == 6  # 2 + 3 without the store + 1
    assert executor.pending == 0


def test_a_commit_that_fails_after_the_restore_is_kept_and_recorded_later() -> None:
    store, outage, clock, route, executor = on_first_step()
    outage.commit_fails = True
    result = executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    assert route.observe().weight == 0 and result.store_error is not None
    outage.commit_fails = False
    clock.at += timedelta(minutes=1)
    executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    assert [t.to_phase for t in store.transitions(KEY)].count("RolledBack") == 1
    restores = [a for a in store.route_actions(KEY) if a.action == "restore"]
    assert len(restores) == 1 and restores[0].changed


def test_another_replicas_write_wins_and_the_restore_made_here_is_still_audited() -> None:
    store, outage, clock, route, here = on_first_step()
    there = Executor(store, clock)
    outage.down = True
    here.tick(ROLLOUT, route, Metrics(Verdict.FAIL))  # rolled back from memory
    assert route.observe().weight == 0
    clock.at += timedelta(minutes=1)
    # The other replica, which reaches the store, took the rollout over meanwhile: the
    # metrics it saw were fine, so it put the first step back.
    there.tick(ROLLOUT, route, Metrics(Verdict.INCONCLUSIVE))
    assert route.observe().weight == 5
    outage.down = False
    clock.at += timedelta(minutes=1)
    result = here.tick(ROLLOUT, route, Metrics(Verdict.FAIL))  # decides again, from the store
    assert result.store_error is None and result.decision.state.phase == "RolledBack"
    assert route.observe().weight == 0
    assert [t.to_phase for t in store.transitions(KEY)].count("RolledBack") == 1
    restores = [a for a in store.route_actions(KEY) if a.action == "restore"]
    assert len(restores) == 2 and all(a.changed for a in restores)  # both route writes
    assert [m.event for m in store.outbox(KEY)].count("rolled-back") == 1
    assert here.pending == 0


def test_a_replica_restarted_with_the_store_down_can_do_nothing_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, outage, clock, route, _ = on_first_step()
    restarted = Executor(outage, clock)  # type: ignore[arg-type]
    outage.down = True
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            with pytest.raises(TransientError):
                restarted.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    told = [r for r in caplog.records if "has no state of it" in r.getMessage()]
    assert len(told) == 1
    assert route.observe().weight == 5  # nothing was done: nothing was known


def test_a_replica_that_lost_the_lease_still_records_the_rollback_it_made() -> None:
    store, outage, _, route, executor = on_first_step()
    outage.down = True
    executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    outage.down = False
    executor.forget(KEY)  # another replica holds the lease now; nobody wrote meanwhile
    assert executor.pending == 0
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    assert [m.event for m in store.outbox(KEY)].count("rolled-back") == 1


def test_a_commit_whose_answer_was_lost_is_not_recorded_twice() -> None:
    store, outage, clock, route, executor = on_first_step()
    outage.answer_lost = True
    clock.at += timedelta(seconds=30)
    executor.tick(ROLLOUT, route, Metrics(Verdict.INCONCLUSIVE))  # landed, answer lost
    outage.down = True
    clock.at += timedelta(seconds=30)
    executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))  # rolled back without the store
    assert route.observe().weight == 0
    outage.down = False
    clock.at += timedelta(seconds=30)
    executor.tick(ROLLOUT, route, Metrics(Verdict.FAIL))
    assert executor.pending == 0
    transitions = store.transitions(KEY)
    assert [t.to_phase for t in transitions] == ["Progressing", "RolledBack"]
    assert "decidedWithoutStore" in transitions[-1].details
    assert [m.event for m in store.outbox(KEY)].count("rolled-back") == 1
    assert [a.action for a in store.route_actions(KEY)].count("restore") == 1
