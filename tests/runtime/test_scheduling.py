"""Scheduling under load: a tick that cannot start on time runs late, it is never dropped.

APScheduler drops a run that starts more than `misfire_grace_time` after it was
due (1 s by default). Every rollout's job comes due in the same instant (they are
added together), so when there are more ticks than worker threads can start within
the grace, the jobs at the end of the queue are dropped, and because the queue has
the same order every interval, the same rollouts are dropped every time: never
judged, never rolled back. The scale benchmark (bench/scale.py) found it at N=100.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.policy import ModelRollout
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.controller import Controller
from controller.runtime.executor import Observation
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from tests.policy.base import BASE

#: more rollouts than APScheduler's 10 worker threads
ROLLOUTS = 12
#: each tick holds its thread longer than the misfire grace
TICK_SECONDS = 1.2


class Passing:
    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.PASS),)))


class SlowRoutes:
    """One in-memory route per rollout; every tick takes TICK_SECONDS, like a slow API server."""

    def __init__(self) -> None:
        self.routers: dict[str, MemoryRouter] = {}

    def __call__(self, rollout: ModelRollout) -> MemoryRouter:
        time.sleep(TICK_SECONDS)
        return self.routers.setdefault(rollout.key, MemoryRouter(RouteTarget.of(rollout)))


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def test_every_rollout_ticks_when_there_are_more_ticks_than_threads(tmp_path: Path) -> None:
    for i in range(ROLLOUTS):
        policy = BASE.replace("name: bot-v2", f"name: bot-{i:02d}")
        (tmp_path / f"r{i:02d}.yaml").write_text(policy.replace("interval: 30s", "interval: 2s"))
    store = MemoryStore()
    controller = Controller(
        store=store,
        source=DirectorySource(tmp_path),
        routes=SlowRoutes(),
        observer=Passing(),
        clock=WallClock(),
        replica="a",
        sync_every=30,
    )
    controller.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if len(store.rollouts()) == ROLLOUTS:
                break
            time.sleep(0.1)
    finally:
        controller.stop()
    ticked = sorted(r.key for r in store.rollouts())
    assert ticked == [f"llm/bot-{i:02d}" for i in range(ROLLOUTS)]
