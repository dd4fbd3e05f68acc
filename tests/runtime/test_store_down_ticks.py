"""The controller with its store unreachable: ticks count as errors, one line each, and a
bad candidate is still rolled back from the state kept in memory."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.errors import TransientError
from controller.policy import ModelRollout
from controller.runtime.controller import Controller
from controller.runtime.executor import Observation
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from controller.telemetry import ControllerMetrics
from tests.policy.base import BASE
from tests.runtime.test_controller import KEY, Clock, Routes


class Unreachable(MemoryStore):
    """A store whose every call fails like Postgres stopped, while `down` is set."""

    down = False

    def __getattribute__(self, name: str) -> Any:
        if not name.startswith("_") and name != "down" and object.__getattribute__(self, "down"):
            raise TransientError("database 127.0.0.1:5432: connection refused")
        return object.__getattribute__(self, name)


class Judge:
    verdict = Verdict.PASS

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", self.verdict),)))


def test_store_down_ticks_are_errors_with_one_line_each_and_still_roll_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes, judge = Unreachable(), Clock(), Routes(), Judge()
    metrics = ControllerMetrics(CollectorRegistry())
    controller = Controller(
        store=store,
        source=DirectorySource(tmp_path),
        routes=routes,
        observer=judge,
        clock=clock,
        replica="a",
        lease_ttl=timedelta(seconds=15),
        metrics=metrics,
    )

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    def interval() -> None:
        # 30 s pass; the renewal job runs every 5 s meanwhile
        for _ in range(6):
            clock.at += timedelta(seconds=5)
            controller.renew()

    controller.sync()
    for _ in range(2):
        controller.tick(KEY)
        interval()
    assert routes.weight(KEY) == 5
    store.down = True
    judge.verdict = Verdict.FAIL
    caplog.clear()
    with caplog.at_level(logging.INFO):
        controller.sync()  # fails: one line, the job stays
        for _ in range(3):
            controller.tick(KEY)
            clock.at += timedelta(seconds=30)
    assert routes.weight(KEY) == 0  # rolled back without the store
    assert value("canary_ticks_total", outcome="error") == 3
    assert value("canary_ticks_total", outcome="skipped") == 0
    assert value("canary_store_pending_writes") == 1
    assert value("canary_store_down_endings_total", phase="RolledBack") == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 4  # the sync and each tick: one line each
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    store.down = False
    controller.sync()  # the lease lapsed while the store was down: taken again
    controller.tick(KEY)
    assert value("canary_store_pending_writes") == 0
    assert [t.to_phase for t in store.transitions(KEY)].count("RolledBack") == 1
    assert [m.event for m in store.outbox(KEY)].count("rolled-back") == 1
