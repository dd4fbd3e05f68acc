"""`tick_threads` (`CANARY_TICK_THREADS`): how many ticks one replica runs at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.policy import ModelRollout
from controller.runtime.controller import TICK_THREADS, Controller
from controller.runtime.executor import TickResult
from controller.runtime.sources import DirectorySource
from controller.settings import Settings
from controller.store.memory import MemoryStore
from tests.runtime.test_controller import Clock, Passing, Routes
from tests.runtime.test_sharing import _policies


class Slow:
    """A reporter that takes 50 ms (inside the tick, after its commit), counting the
    ticks in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.most = self.ticks = 0

    def report(self, rollout: ModelRollout, result: TickResult) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
            self.ticks += 1


@pytest.mark.parametrize("threads", [1, 3])
def test_a_replica_runs_at_most_tick_threads_ticks_at_once(tmp_path: Path, threads: int) -> None:
    """24 new rollouts come due at once (their first ticks): they queue for the threads."""
    keys = _policies(tmp_path)
    slow = Slow()
    controller = Controller(
        store=MemoryStore(),
        source=DirectorySource(tmp_path),
        routes=Routes(),
        observer=Passing(),
        clock=Clock(),
        replica="a",
        lease_ttl=timedelta(seconds=15),
        reporters=(slow,),
        tick_threads=threads,
    )
    controller.scheduler.start()
    try:
        controller.sync()
        deadline = time.monotonic() + 20
        while slow.ticks < len(keys) and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        controller.stop()
    assert slow.ticks >= len(keys)
    assert slow.most == threads


def test_the_setting_comes_from_the_environment_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().tick_threads == TICK_THREADS
    monkeypatch.setenv("CANARY_TICK_THREADS", "12")
    assert Settings().tick_threads == 12
    monkeypatch.setenv("CANARY_TICK_THREADS", "0")
    with pytest.raises(ValidationError, match="tick_threads"):
        Settings()
