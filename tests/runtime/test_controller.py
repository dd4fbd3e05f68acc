"""The runtime controller: sources, leases shared by replicas, scheduled ticks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.policy import ModelRollout
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.controller import Controller
from controller.runtime.executor import Observation
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from controller.telemetry import ControllerMetrics
from tests.databases import postgres_server_url  # noqa: F401  (fixture)
from tests.policy.base import BASE, policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KEY = "llm/bot-v2"


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Routes:
    """One in-memory route per rollout, shared by every replica (like the cluster)."""

    routers: dict[str, MemoryRouter] = field(default_factory=dict)

    def __call__(self, rollout: ModelRollout) -> MemoryRouter:
        if rollout.key not in self.routers:
            self.routers[rollout.key] = MemoryRouter(RouteTarget.of(rollout))
        return self.routers[rollout.key]

    def weight(self, key: str) -> int:
        return self.routers[key].observe().weight


class Passing:
    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.PASS),)))


def make(
    store: MemoryStore | SqlStore,
    directory: Path,
    clock: Clock,
    routes: Routes,
    name: str,
    metrics: ControllerMetrics | None = None,
) -> Controller:
    def ticks() -> float:  # the source's monotonic clock follows the test's clock
        return clock.at.timestamp()

    return Controller(
        store=store,
        source=DirectorySource(directory, clock=ticks),
        routes=routes,
        observer=Passing(),
        clock=clock,
        replica=name,
        lease_ttl=timedelta(seconds=15),
        metrics=metrics,
    )


def test_directory_source_keeps_valid_policies_and_reports_the_rest(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(BASE)
    (tmp_path / "bad.yaml").write_text(policy(("{weight: 100}", "{weight: 99}")))
    (tmp_path / "twin.yml").write_text(BASE)
    snapshot = DirectorySource(tmp_path).snapshot()
    assert list(snapshot.rollouts) == [KEY]
    messages = [p.message for p in snapshot.problems]
    assert any("the last step must reach 100" in m for m in messages)
    assert any("a second policy for llm/bot-v2" in m for m in messages)


def test_a_policy_file_is_rolled_out_and_its_deletion_ends_it(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    controller = make(store, tmp_path, clock, routes, "a")
    controller.sync()
    controller.tick(KEY)
    assert routes.weight(KEY) == 5
    assert store.held_by("a", clock.now()) == [KEY]
    (tmp_path / "bot.yaml").unlink()
    controller.sync()
    clock.at += timedelta(seconds=5)
    controller.sync()  # within the grace period: maybe an editor rewriting it
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "Progressing"
    assert routes.weight(KEY) == 5
    clock.at += timedelta(seconds=5)
    controller.sync()  # gone for the whole grace period: deleted
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "Aborted"
    assert routes.weight(KEY) == 0
    assert routes.routers[KEY].backend == "bot-v1"


def test_a_bad_edit_moves_nothing_toward_the_candidate_and_ends_nothing(tmp_path: Path) -> None:
    """Ticked on its last valid policy in hold mode (see test_invalid_policy.py): the
    candidate passes, yet its advance waits for a valid policy."""
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    controller = make(store, tmp_path, clock, routes, "a")
    controller.sync()
    controller.tick(KEY)
    for garbage in (b"", b"\x00\xff" * 100, BASE.replace("steps:", "stps:").encode()):
        (tmp_path / "bot.yaml").write_bytes(garbage)
        for _ in range(8):  # long past the grace period, and 12 min in all: past the hold
            clock.at += timedelta(seconds=30)
            controller.sync()
            controller.tick(KEY)
        stored = store.get(KEY)
        assert stored is not None and (stored.phase, stored.step) == ("Progressing", 0)
        assert routes.weight(KEY) == 5
    (tmp_path / "bot.yaml").write_text(BASE)  # fixed: the rollout goes on
    clock.at += timedelta(minutes=10)
    controller.sync()
    controller.tick(KEY)
    assert routes.weight(KEY) == 50


def test_an_ended_rollout_gets_no_more_ticks(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    controller = make(store, tmp_path, clock, routes, "a")
    for _ in range(40):
        controller.sync()
        controller.tick(KEY)
        clock.at += timedelta(minutes=1)
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "Promoted"
    revision = stored.revision
    controller.tick(KEY)
    assert store.get(KEY).revision == revision  # type: ignore[union-attr]


def test_a_dead_replicas_rollouts_move_to_another(tmp_path: Path, postgres_server_url: str) -> None:  # noqa: F811
    migrate(postgres_server_url)
    (tmp_path / "bot.yaml").write_text(BASE.replace("name: bot-v2", "name: lease-test"))
    key = "llm/lease-test"
    clock, routes = Clock(), Routes()
    store_a, store_b = SqlStore(postgres_server_url), SqlStore(postgres_server_url)
    a = make(store_a, tmp_path, clock, routes, "replica-a")
    b = make(store_b, tmp_path, clock, routes, "replica-b")
    a.sync()
    b.sync()
    for _ in range(11):  # replica-a passes step 1 (hold 10m) and reaches step 2
        a.tick(key)
        b.tick(key)  # b does not own it: no effect
        clock.at += timedelta(minutes=1)
        a.sync()
        b.sync()
    assert store_b.held_by("replica-a", clock.now()) == [key]
    assert routes.weight(key) == 50
    # replica-a dies: no more syncs or ticks, no release
    clock.at += timedelta(seconds=16)
    b.sync()
    assert store_b.held_by("replica-b", clock.now()) == [key]
    for _ in range(12):
        b.tick(key)
        clock.at += timedelta(minutes=1)
        b.sync()
    stored = store_b.get(key)
    assert stored is not None and stored.phase == "Promoted"
    steps = [(t.to_phase, t.to_step) for t in store_b.transitions(key)]
    assert steps == [("Progressing", 0), ("Progressing", 1), ("Progressing", 2), ("Promoted", 2)]
    store_a.close()
    store_b.close()


def test_the_scheduler_ticks_at_the_interval_and_stops_cleanly(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(policy(("interval: 30s", "interval: 1s")))
    store, routes = MemoryStore(), Routes()

    class WallClock:
        def now(self) -> datetime:
            return datetime.now(UTC)

    controller = Controller(
        store=store,
        source=DirectorySource(tmp_path),
        routes=routes,
        observer=Passing(),
        clock=WallClock(),
        replica="a",
        sync_every=0.5,
    )
    controller.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stored = store.get(KEY)
        if stored is not None and stored.state["tick"] >= 3:
            break
        time.sleep(0.1)
    assert controller.ready
    controller.stop()
    stored = store.get(KEY)
    assert stored is not None and stored.state["tick"] >= 3
    assert store.held_by("a", datetime.now(UTC)) == []  # leases released on shutdown
    ticks = stored.state["tick"]
    time.sleep(1.5)
    assert store.get(KEY).state["tick"] == ticks  # type: ignore[union-attr]


@pytest.mark.parametrize("replicas", [2, 3])
def test_each_rollout_has_exactly_one_owner(tmp_path: Path, replicas: int) -> None:
    for i in range(6):
        (tmp_path / f"r{i}.yaml").write_text(BASE.replace("name: bot-v2", f"name: bot-{i}"))
    store, clock, routes = MemoryStore(), Clock(), Routes()
    controllers = [make(store, tmp_path, clock, routes, f"r{n}") for n in range(replicas)]
    for controller in controllers:
        controller.sync()
    owned = [set(store.held_by(f"r{n}", clock.now())) for n in range(replicas)]
    assert set().union(*owned) == {f"llm/bot-{i}" for i in range(6)}
    assert sum(len(o) for o in owned) == 6


def test_ticks_leases_and_phases_are_counted_in_the_self_metrics(tmp_path: Path) -> None:
    (tmp_path / "bot.yaml").write_text(BASE)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    metrics_a, metrics_b = (
        ControllerMetrics(CollectorRegistry()),
        ControllerMetrics(CollectorRegistry()),
    )
    a = make(store, tmp_path, clock, routes, "a", metrics_a)
    b = make(store, tmp_path, clock, routes, "b", metrics_b)

    def value(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    a.sync()
    b.sync()
    a.tick(KEY)
    b.tick(KEY)  # a owns it: b's tick is skipped
    assert value(metrics_a, "canary_ticks_total", outcome="ok") == 1
    assert value(metrics_a, "canary_tick_duration_seconds_count") == 1
    assert value(metrics_b, "canary_ticks_total", outcome="skipped") == 1
    assert value(metrics_a, "canary_leases_held") == 1
    assert value(metrics_a, "canary_lease_changes_total", change="acquired") == 1
    assert value(metrics_b, "canary_leases_held") == 0
    # a stalls past its lease; b takes the rollout over; a finds it lost
    clock.at += timedelta(seconds=16)
    b.sync()
    a.sync()
    assert value(metrics_b, "canary_lease_changes_total", change="acquired") == 1
    assert value(metrics_a, "canary_lease_changes_total", change="lost") == 1
    assert value(metrics_a, "canary_leases_held") == 0
    assert value(metrics_a, "canary_rollouts", phase="Progressing") == 1
    b.stop()
    assert value(metrics_b, "canary_lease_changes_total", change="released") == 1
    assert value(metrics_b, "canary_leases_held") == 0
