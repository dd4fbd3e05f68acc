"""A rollout whose latest policy is invalid ticks on its last committed policy, in hold
mode: nothing moves toward the candidate, and a rollback (or an abort) still happens."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.policy import ModelRollout
from controller.runtime.controller import Controller
from controller.runtime.executor import Observation
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from controller.store.records import ManualCommand
from tests.policy.base import BASE
from tests.runtime.test_controller import KEY, Clock, Routes

BROKEN = BASE.replace("{weight: 50, hold: 10m}", "{weight: 500, hold: 10m}")


class Judge:
    verdict = Verdict.PASS

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", self.verdict),)))


def _started(tmp_path: Path) -> tuple[Controller, MemoryStore, Clock, Routes, Judge]:
    """A rollout of BASE from its file, ticked once: 5 % on the candidate."""
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes, judge = MemoryStore(), Clock(), Routes(), Judge()

    def ticks() -> float:  # the source's monotonic clock follows the test's clock
        return clock.at.timestamp()

    controller = Controller(
        store=store,
        source=DirectorySource(tmp_path, clock=ticks),
        routes=routes,
        observer=judge,
        clock=clock,
        replica="a",
        lease_ttl=timedelta(seconds=15),
    )
    controller.sync()
    controller.tick(KEY)
    assert routes.weight(KEY) == 5
    return controller, store, clock, routes, judge


def _run(controller: Controller, clock: Clock, ticks: int) -> None:
    for _ in range(ticks):
        clock.at += timedelta(seconds=30)
        controller.sync()
        controller.tick(KEY)


def test_an_invalid_edit_with_a_healthy_candidate_moves_nothing_toward_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller, store, clock, routes, _ = _started(tmp_path)
    (tmp_path / "bot.yaml").write_text(BROKEN)
    with caplog.at_level(logging.INFO, logger="controller.runtime.controller"):
        _run(controller, clock, 30)  # 15 minutes: the step's 10m hold is long over
    stored = store.get(KEY)
    assert stored is not None and (stored.phase, stored.step) == ("Progressing", 0)
    assert routes.weight(KEY) == 5  # the advance to 50 % waited
    assert [t.to_step for t in store.transitions(KEY)] == [0]  # only the start
    assert stored.policy["spec"]["steps"][1]["weight"] == 50  # the last valid policy kept
    said = [r.getMessage() for r in caplog.records if "last valid policy" in r.getMessage()]
    assert len(said) == 1  # said once, not at every sync


def test_an_invalid_edit_does_not_stop_the_rollback_of_a_bad_candidate(tmp_path: Path) -> None:
    controller, store, clock, routes, judge = _started(tmp_path)
    (tmp_path / "bot.yaml").write_text(BROKEN)
    _run(controller, clock, 2)
    judge.verdict = Verdict.FAIL
    _run(controller, clock, 5)
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    assert routes.weight(KEY) == 0
    assert routes.routers[KEY].backend == "bot-v1"
    last = store.transitions(KEY)[-1]
    assert last.to_phase == "RolledBack"
    assert "latest policy is invalid" in last.reason and "last valid one" in last.reason
    assert "latest policy is invalid" in last.details["heldOnLastValidPolicy"]
    assert any(a.action == "restore" for a in store.route_actions(KEY))
    # the file fixed afterwards does not restart an ended rollout
    (tmp_path / "bot.yaml").write_text(BASE)
    _run(controller, clock, 3)
    assert routes.weight(KEY) == 0


def test_an_abort_during_an_invalid_edit_gives_the_route_back(tmp_path: Path) -> None:
    controller, store, clock, routes, _ = _started(tmp_path)
    (tmp_path / "bot.yaml").write_text(BROKEN)
    _run(controller, clock, 1)
    store.add_command(KEY, ManualCommand(clock.now(), "abort", "alice", "bad answers"))
    _run(controller, clock, 1)
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "Aborted"
    assert routes.weight(KEY) == 0


def test_fixing_the_file_resumes_normal_ticking(tmp_path: Path) -> None:
    controller, store, clock, routes, _ = _started(tmp_path)
    (tmp_path / "bot.yaml").write_text(BROKEN)
    _run(controller, clock, 25)
    assert routes.weight(KEY) == 5
    (tmp_path / "bot.yaml").write_text(BASE)
    _run(controller, clock, 1)
    assert routes.weight(KEY) == 50  # the advance is allowed again
    stored = store.get(KEY)
    assert stored is not None and stored.step == 1
    assert "invalid" not in store.transitions(KEY)[-1].reason


def test_a_stored_policy_that_does_not_validate_leaves_the_rollout_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    controller, store, clock, routes, judge = _started(tmp_path)
    row = store.get(KEY)
    assert row is not None
    broken = {**row.policy, "spec": {**row.policy["spec"], "steps": []}}
    store._rollouts[KEY] = dataclasses.replace(row, policy=broken)
    (tmp_path / "bot.yaml").write_text(BROKEN)
    judge.verdict = Verdict.FAIL
    with caplog.at_level(logging.ERROR, logger="controller.runtime.controller"):
        _run(controller, clock, 5)
    stored = store.get(KEY)
    assert stored is not None and (stored.phase, stored.revision) == ("Progressing", row.revision)
    assert routes.weight(KEY) == 5
    said = [r.getMessage() for r in caplog.records if "does not validate" in r.getMessage()]
    assert len(said) == 1
