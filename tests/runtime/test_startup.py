"""A calm start-up among many rollouts: claims in bounded batches whose leases run from
their own claim, and no second look in a slot window when a rollout changes hands
(each sync is one pass, driven here by hand; the clock is the test's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.runtime.controller import Controller
from controller.runtime.sources import DirectorySource
from controller.store.memory import MemoryStore
from tests.runtime.test_controller import Clock, Passing, Routes, make
from tests.runtime.test_sharing import _policies


class ClaimHook(MemoryStore):
    """A memory store that runs `before` ahead of each batch of claims (what happens
    elsewhere while a sync claims: time passing, another replica's tick)."""

    def __init__(self) -> None:
        super().__init__()
        self.before: Callable[[Sequence[str]], None] = lambda keys: None
        self.batches: list[tuple[datetime, list[str]]] = []

    def claim(
        self, keys: Sequence[str], holder: str, ttl: timedelta, now: datetime, *, batch: int = 500
    ) -> Sequence[str]:
        self.before(keys)
        self.batches.append((now, list(keys)))
        return super().claim(keys, holder, ttl, now, batch=batch)


def _replica(
    store: MemoryStore, directory: Path, clock: Clock, name: str, *, ttl: float, batch: int
) -> Controller:
    def ticks() -> float:  # the source's monotonic clock follows the test's clock
        return clock.at.timestamp()

    return Controller(
        store=store,
        source=DirectorySource(directory, clock=ticks),
        routes=Routes(),
        observer=Passing(),
        clock=clock,
        replica=name,
        lease_ttl=timedelta(seconds=ttl),
        claim_batch=batch,
    )


def test_each_batch_of_claims_runs_from_its_own_claim_not_from_the_sync_start(
    tmp_path: Path,
) -> None:
    """A sync slowed down by its claims (6 s a batch here) used to hand out leases that
    ran from the sync's start: the last batch's had 3 s left of their 15 s."""
    keys = _policies(tmp_path)
    store, clock = ClaimHook(), Clock()

    def six_seconds_later(_: Sequence[str]) -> None:
        clock.at += timedelta(seconds=6)

    store.before = six_seconds_later
    replica = _replica(store, tmp_path, clock, "a", ttl=15, batch=8)
    replica.sync()
    assert len(store.batches) == 3
    assert {k for _, batch in store.batches for k in batch} == set(keys)
    for claimed_at, batch in store.batches:
        for key in batch:
            lease = store.lease(key, claimed_at)
            assert lease is not None and lease.expires_at == claimed_at + timedelta(seconds=15)


def test_a_sync_stops_claiming_after_a_quarter_of_the_ttl_and_the_next_claims_the_rest(
    tmp_path: Path,
) -> None:
    """Renewing what is held comes first in every sync; claims get what is left of a
    quarter of the TTL (0.1 s here, each batch taking 0.06 s), the rest waits."""
    keys = _policies(tmp_path)
    store, clock = ClaimHook(), Clock()
    store.before = lambda _: time.sleep(0.06)
    replica = _replica(store, tmp_path, clock, "a", ttl=0.4, batch=4)
    replica.sync()
    first = set(store.held_by("a", clock.now()))
    assert 0 < len(first) < len(keys)
    for _ in range(len(keys) // 4):
        replica.sync()
    assert set(store.held_by("a", clock.now())) == set(keys)


def test_a_rollout_looked_at_by_its_previous_holder_in_this_slot_is_not_looked_at_again(
    tmp_path: Path,
) -> None:
    """The hand-over race: b reads the rows (no look yet), a looks at some of them and
    releases them to b, b claims them and schedules a first look at once. That first
    look reads the row again: one look per slot window, the job falls into its slot."""
    _policies(tmp_path)
    store, clock, routes = ClaimHook(), Clock(), Routes()
    a = make(store, tmp_path, clock, routes, "a")
    a.sync()
    b = make(store, tmp_path, clock, routes, "b")
    looked_by_a: set[str] = set()

    def a_looks_then_hands_over(chunk: Sequence[str]) -> None:
        for key in chunk[::2]:
            a.tick(key)
            looked_by_a.add(key)
        a.sync()  # a sees b alive and releases what b wins

    store.before = a_looks_then_hands_over
    b.scheduler.start(paused=True)  # jobs are added, none runs: ticks are driven here
    try:
        b.sync()
        taken = set(store.held_by("b", clock.now()))
        assert taken and looked_by_a & taken and taken - looked_by_a
        for key in sorted(taken):
            before = store.get(key)
            b.tick(key)
            after = store.get(key)
            assert after is not None
            if key in looked_by_a:
                assert before is not None and after.revision == before.revision, key
            else:
                assert after.revision == 1  # never looked at: looked at at once
        b.sync()  # the jobs of the skipped first looks go to their slots
        for key in looked_by_a & taken:
            job = b.scheduler.get_job(f"tick:{key}")
            assert job is not None and job.trigger.first is None
    finally:
        b.stop()
        a.stop()


def test_a_replica_whose_heartbeat_runs_out_before_the_next_sync_is_taken_over_just_after(
    tmp_path: Path,
) -> None:
    """b dies: its heartbeat and leases run out 15 s after its last renewal. a's sync
    at 12 s sees that coming before its next periodic sync (17 s) and schedules one
    more just after it (16 s), which takes b's rollouts over: failover within the TTL
    and a second, not the TTL and a whole sync period."""
    keys = _policies(tmp_path)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    a = make(store, tmp_path, clock, routes, "a")
    b = make(store, tmp_path, clock, routes, "b")
    a.scheduler.start(paused=True)  # jobs are added, none runs: syncs are driven here
    try:
        for replica in (a, b, a, b):  # a releases what b wins, b claims it
            replica.sync()
        a.sync()
        assert a.scheduler.get_job("sync:failover") is None  # b is alive: nothing to do
        held_by_b = set(store.held_by("b", clock.now()))
        assert held_by_b and held_by_b < set(keys)
        clock.at += timedelta(seconds=12)  # b stopped renewing at 0 s
        wall = datetime.now(UTC)
        a.sync()
        job = a.scheduler.get_job("sync:failover")
        assert job is not None
        # b's heartbeat runs out at 15 s, 3 s from now; the sync comes 1 s after that
        assert wall + timedelta(seconds=3.9) <= job.next_run_time
        assert job.next_run_time <= datetime.now(UTC) + timedelta(seconds=4)
        assert set(store.held_by("a", clock.now())).isdisjoint(held_by_b)
        clock.at += timedelta(seconds=4)
        job.func()  # the sync it runs
        assert set(store.held_by("a", clock.now())) == set(keys)
    finally:
        a.scheduler.shutdown(wait=False)


def test_no_extra_sync_while_every_other_heartbeat_outlives_the_next_periodic_one(
    tmp_path: Path,
) -> None:
    _policies(tmp_path)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    a = make(store, tmp_path, clock, routes, "a")
    b = make(store, tmp_path, clock, routes, "b")
    a.scheduler.start(paused=True)
    try:
        for _ in range(4):  # both renew every 5 s, as their syncs do
            for replica in (a, b):
                replica.sync()
            assert a.scheduler.get_job("sync:failover") is None
            clock.at += timedelta(seconds=5)
    finally:
        a.scheduler.shutdown(wait=False)
