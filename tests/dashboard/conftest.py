"""The demo's cohort-regression run, in-process into a temporary SQLite store, served."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.dashboard import DashboardServer, open_store
from controller.demo import run_demo
from controller.scenarios import Scenario
from controller.store.records import StoredRollout
from controller.store.sql import SqlStore

KEY = "llm/support-bot-v7"


@pytest.fixture(scope="package")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    database = tmp_path_factory.mktemp("dashboard") / "canary-demo.db"
    result = run_demo(Scenario.COHORT_REGRESSION, database)
    assert str(result.phase) == "RolledBack"
    return database


@pytest.fixture(scope="package")
def demo_rollout(demo_db: Path) -> StoredRollout:
    store = SqlStore(f"sqlite:///{demo_db}")
    try:
        row = store.get(KEY)
    finally:
        store.close()
    assert row is not None
    return row


@pytest.fixture(scope="package")
def dashboard(demo_db: Path, demo_rollout: StoredRollout) -> Iterator[str]:
    """The dashboard on the demo store, its clock ten minutes after the rollout was made
    (so every page, and every screenshot, reads the same from run to run)."""
    assert demo_rollout.created_at is not None
    now: datetime = demo_rollout.created_at + timedelta(minutes=10)
    opened = open_store(str(demo_db))
    server = DashboardServer(opened, port=0, clock=lambda: now)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        opened.store.close()
