"""Split brain, in one process and step by step: fenced writes, and ended rollouts kept level.

Two controllers share one store (real Postgres, and the in-memory store) and one
route. Replica a's tick is "paused" in the middle (inside its metrics read, or
inside its route write) while replica b takes the lease over and acts; then a's
tick carries on with what it read before. The clock is the test's, so every
interleaving is exact. `test_split_brain.py` does the same with real processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.errors import FencedError, TransientError
from controller.policy import CAPABILITIES, ModelRollout, RouterCapabilities, RouterKind
from controller.routing import MemoryRouter, RouteChange, RouteState, RouteTarget
from controller.runtime.controller import Controller
from controller.runtime.executor import Observation
from controller.runtime.fencing import LeaseFence, UnconfirmedLease
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.policy.base import BASE

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
KEY = "llm/bot-v2"
TTL = timedelta(seconds=15)
Store = MemoryStore | SqlStore


@pytest.fixture(params=["postgres", "memory"])
def stores(request: pytest.FixtureRequest) -> Iterator[tuple[Store, Store]]:
    """Each replica's own store object, on one database of this test's own."""
    if request.param == "memory":
        shared = MemoryStore()
        yield shared, shared
        return
    url = request.getfixturevalue("postgres_test_url")
    migrate(url)
    a, b = SqlStore(url), SqlStore(url)
    yield a, b
    a.close()
    b.close()


class Route:
    """Replica a's handle on the shared route: `before_write` runs inside a's next write,
    after a's fence check and before the write lands (a pause at the worst moment)."""

    def __init__(self, router: MemoryRouter) -> None:
        self.router = router
        self.before_write: Callable[[], None] | None = None
        self.observed = 0

    @property
    def kind(self) -> RouterKind:
        return self.router.kind

    @property
    def capabilities(self) -> RouterCapabilities:
        return CAPABILITIES[self.router.kind]

    def observe(self) -> RouteState:
        self.observed += 1
        return self.router.observe()

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        hook, self.before_write = self.before_write, None
        if hook is not None:
            hook()
        return self.router.apply(desired, epoch=epoch)

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        return self.router.restore(promote=promote, epoch=epoch)


@dataclass
class Metrics:
    """What a replica's metrics say; `during` runs inside the next read (a slow Prometheus)."""

    verdict: Verdict = Verdict.PASS
    during: Callable[[], None] | None = None
    error: str | None = None

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        hook, self.during = self.during, None
        if hook is not None:
            hook()
        if self.error is not None:
            return Observation(Look(error=self.error))
        return Observation(Look((Cell("refusal-rate", "overall", self.verdict),)))


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class World:
    directory: Path
    stores: tuple[Store, Store]
    clock: Clock = field(default_factory=Clock)
    router: MemoryRouter = field(init=False)
    routes: dict[str, Route] = field(default_factory=dict)
    metrics: dict[str, Metrics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.directory / "bot.yaml").write_text(BASE)
        rollout = DirectorySource(self.directory).snapshot().rollouts[KEY]
        self.router = MemoryRouter(RouteTarget.of(rollout))

    def replica(self, name: str) -> Controller:
        store = self.stores[0] if name == "a" else self.stores[1]
        self.routes[name] = Route(self.router)
        self.metrics[name] = Metrics()
        return Controller(
            store=store,
            source=DirectorySource(self.directory),
            routes=lambda _rollout: self.routes[name],
            observer=self.metrics[name],
            clock=self.clock,
            replica=name,
            lease_ttl=TTL,
        )


def _takeover(world: World, b: Controller, *, verdict: Verdict) -> Callable[[], None]:
    """While a is stuck: a's lease runs out, b takes it and ticks with `verdict`."""

    def run() -> None:
        world.clock.at += TTL + timedelta(seconds=5)
        world.metrics["b"].verdict = verdict
        b.sync()
        b.tick(KEY)

    return run


def test_a_stale_tick_cannot_put_traffic_back_on_a_rolled_back_candidate(
    tmp_path: Path, stores: tuple[Store, Store]
) -> None:
    world = World(tmp_path, stores)
    a, b = world.replica("a"), world.replica("b")
    a.sync()
    b.sync()
    a.tick(KEY)
    assert world.router.observe().weight == 5
    # a's next tick hangs on Prometheus; b takes over and rolls back; a's read then fails,
    # so a holds the step: it wants to write 5 % to the candidate again
    world.metrics["a"].during = _takeover(world, b, verdict=Verdict.FAIL)
    world.metrics["a"].error = "metrics unavailable: timed out"
    a.tick(KEY)

    store = stores[1]
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    assert world.router.observe() == RouteState()
    assert world.router.history[-1] == RouteState(), "a's write never landed"
    refused = store.route_actions(KEY)[-1]
    assert refused.action == "apply" and refused.desired["weight"] == 5
    assert refused.error is not None and "fenced: b holds the lease" in refused.error
    assert "(epoch 2)" in refused.error and "began under epoch 1" in refused.error
    assert refused.reason is not None and "no longer the latest" in refused.reason
    assert not refused.changed


def test_the_route_refuses_a_write_from_an_older_epoch_than_it_carries(
    tmp_path: Path, stores: tuple[Store, Store]
) -> None:
    """a passed its fence check, then stalled inside its write while b took over and
    wrote the route toward the candidate under epoch 2: the route itself refuses a."""
    world = World(tmp_path, stores)
    a, b = world.replica("a"), world.replica("b")
    a.sync()
    b.sync()
    a.tick(KEY)
    assert world.router.epoch == 1
    world.routes["a"].before_write = _takeover(world, b, verdict=Verdict.PASS)
    a.tick(KEY)

    assert world.router.epoch == 2  # b's re-apply of step 1 carried its epoch
    refused = stores[1].route_actions(KEY)[-1]
    assert refused.error is not None and "written under lease epoch 2" in refused.error
    stored = stores[1].get(KEY)
    assert stored is not None and stored.phase == "Progressing"


def test_a_write_that_slips_past_the_fence_is_put_back_on_the_next_sync(
    tmp_path: Path, stores: tuple[Store, Store]
) -> None:
    """The residual window: a passed its fence check, stalled, and b rolled back in the
    meantime; a restore gives the route back exactly, token included, so a's late write
    lands. b's next sync finds the rolled-back candidate on the route and puts it back."""
    world = World(tmp_path, stores)
    a, b = world.replica("a"), world.replica("b")
    a.sync()
    b.sync()
    a.tick(KEY)
    world.routes["a"].before_write = _takeover(world, b, verdict=Verdict.FAIL)
    a.tick(KEY)  # its commit is refused as stale: nothing of it in the store
    assert world.router.observe().weight == 5, "the stale write landed"
    store = stores[1]
    assert store.get(KEY).phase == "RolledBack"  # type: ignore[union-attr]
    before = len(store.route_actions(KEY))

    observed = world.routes["b"].observed
    b.sync()

    assert world.router.observe() == RouteState()
    assert world.routes["b"].observed == observed + 1, "one read of the route per sync"
    put_back = store.route_actions(KEY)[before:]
    assert [(r.action, r.changed) for r in put_back] == [("restore", True)]
    assert put_back[0].reason == (
        "the route carried the rolled-back candidate v2 (candidate 5%, mobile 10%); put back"
    )
    corrected = [m for m in store.outbox(KEY) if m.event == "route-corrected"]
    assert len(corrected) == 1
    assert corrected[0].payload["text"] == put_back[0].reason
    assert (corrected[0].payload["phase"], corrected[0].payload["candidate"]) == (
        "RolledBack",
        "v2",
    )
    assert store.get(KEY).phase == "RolledBack"  # type: ignore[union-attr]
    assert [t.to_phase for t in store.transitions(KEY)][-1] == "RolledBack"

    # level-triggered: nothing to do while the route is right; a later stray write is
    # put back again, and told again
    world.clock.at += timedelta(seconds=5)
    b.sync()
    assert len(store.route_actions(KEY)) == before + 1
    world.router.apply(RouteState(20))
    world.clock.at += timedelta(seconds=5)
    b.sync()
    assert world.router.observe() == RouteState()
    assert len([m for m in store.outbox(KEY) if m.event == "route-corrected"]) == 2
    # a, which does not hold the lease, never looks at the route
    observed_by_a = world.routes["a"].observed
    a.sync()
    assert world.routes["a"].observed == observed_by_a


def test_a_promoted_rollout_is_left_alone(tmp_path: Path, stores: tuple[Store, Store]) -> None:
    world = World(tmp_path, stores)
    a = world.replica("a")
    for _ in range(40):
        a.sync()
        a.tick(KEY)
        world.clock.at += timedelta(minutes=1)
    assert stores[0].get(KEY).phase == "Promoted"  # type: ignore[union-attr]
    observed = world.routes["a"].observed
    a.sync()
    assert world.routes["a"].observed == observed
    assert world.router.backend == "bot-v2"


def test_the_fence_needs_the_same_lease_still_live(stores: tuple[Store, Store]) -> None:
    store, clock = stores[0], Clock()
    assert LeaseFence(store, KEY, "a", clock).epoch is None  # nobody holds it
    with pytest.raises(FencedError, match="did not hold the lease"):
        LeaseFence(store, KEY, "a", clock).check()
    assert store.acquire(KEY, "a", TTL, clock.now())
    fence = LeaseFence(store, KEY, "a", clock)
    assert fence.epoch == 1
    fence.check()
    clock.at += TTL + timedelta(seconds=1)
    with pytest.raises(FencedError, match="has expired"):
        fence.check()
    assert store.acquire(KEY, "a", TTL, clock.now())  # a again, but a new tenure
    with pytest.raises(FencedError, match="a holds the lease on llm/bot-v2 now \\(epoch 2\\)"):
        fence.check()
    LeaseFence(store, KEY, "a", clock).check()


class CutOff:
    """Replica a's view of the shared store, which the test can cut (a partition)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False

    def __getattr__(self, name: str) -> Any:
        if self.down:
            raise TransientError("database 127.0.0.1:5432: connection refused")
        return getattr(self.store, name)


def test_cut_off_from_the_store_a_replica_does_not_put_its_step_back(
    tmp_path: Path, stores: tuple[Store, Store]
) -> None:
    """a loses the store (not the cluster) while b takes over and rolls back: a's ticks
    go on from memory and may take traffic off the candidate, but re-applying its step
    would need a lease it cannot re-read, so the route stays as b left it."""
    cut = CutOff(stores[0])
    world = World(tmp_path, (cut, stores[1]))  # type: ignore[arg-type]
    a, b = world.replica("a"), world.replica("b")
    a.sync()
    b.sync()
    a.tick(KEY)
    assert world.router.observe().weight == 5
    cut.down = True
    world.clock.at += TTL + timedelta(seconds=5)
    world.metrics["b"].verdict = Verdict.FAIL
    b.sync()
    b.tick(KEY)
    assert world.router.observe() == RouteState()
    for _ in range(3):  # a's ticks, from memory: its step holds, and is not written again
        world.clock.at += timedelta(seconds=30)
        a.tick(KEY)
    assert world.router.observe() == RouteState()
    assert world.router.history[-1] == RouteState()
    assert stores[1].get(KEY).phase == "RolledBack"  # type: ignore[union-attr]


def test_an_unconfirmed_lease_refuses_as_a_transient_error() -> None:
    fence = UnconfirmedLease(KEY, TransientError("connection refused"))
    assert fence.epoch is None
    with pytest.raises(TransientError, match="cannot be re-checked \\(connection refused\\)"):
        fence.check()
