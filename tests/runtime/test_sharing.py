"""Replicas share the rollouts: each holds about 1/k, hands rollouts over when a replica
joins or leaves, never lets a lease expire while it lives, and takes a dead replica's
rollouts after its lease TTL (each sync is one pass, driven here by hand)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from controller.runtime.controller import Controller
from controller.store.memory import MemoryStore
from tests.policy.base import BASE
from tests.runtime.test_controller import Clock, Routes, make

ROLLOUTS = 24


def _policies(directory: Path) -> list[str]:
    for i in range(ROLLOUTS):
        (directory / f"r{i:02d}.yaml").write_text(
            BASE.replace("name: bot-v2", f"name: bot-{i:02d}")
        )
    return [f"llm/bot-{i:02d}" for i in range(ROLLOUTS)]


def _held(store: MemoryStore, clock: Clock, *replicas: Controller) -> dict[str, set[str]]:
    return {r.replica: set(store.held_by(r.replica, clock.now())) for r in replicas}


def _syncs(clock: Clock, *replicas: Controller, times: int = 2) -> None:
    for _ in range(times):
        for replica in replicas:
            replica.sync()
        clock.at += timedelta(seconds=5)


def test_replicas_share_fairly_rebalance_on_join_and_leave_and_take_over_the_dead(
    tmp_path: Path,
) -> None:
    keys = _policies(tmp_path)
    store, clock, routes = MemoryStore(), Clock(), Routes()
    a = make(store, tmp_path, clock, routes, "a")
    a.sync()
    assert _held(store, clock, a)["a"] == set(keys)  # alone: everything

    b, c = (make(store, tmp_path, clock, routes, name) for name in ("b", "c"))
    _syncs(clock, a, b, c)  # join: a releases what b and c win, they take it
    held = _held(store, clock, a, b, c)
    assert set().union(*held.values()) == set(keys)
    assert sum(map(len, held.values())) == ROLLOUTS  # each rollout held once
    assert all(len(h) >= 4 for h in held.values()), {k: len(v) for k, v in held.items()}
    epochs = {k: store.lease(k, clock.now()).epoch for k in keys}  # type: ignore[union-attr]

    _syncs(clock, a, b, c, times=6)  # 30 s of syncs: nothing moves, nothing expires
    assert _held(store, clock, a, b, c) == held
    assert {k: store.lease(k, clock.now()).epoch for k in keys} == epochs  # type: ignore[union-attr]

    c.stop()  # leaves: releases its leases and its heartbeat
    _syncs(clock, a, b, times=1)
    after_leave = _held(store, clock, a, b)
    assert after_leave["a"] | after_leave["b"] == set(keys)
    assert held["a"] <= after_leave["a"] and held["b"] <= after_leave["b"]  # stable

    # b dies (no stop, no more syncs): a takes its rollouts once b's lease has expired
    orphans = after_leave["b"]
    a.sync()
    assert not orphans & _held(store, clock, a)["a"]  # b's leases are still live
    clock.at += timedelta(seconds=16)
    a.sync()
    assert _held(store, clock, a)["a"] == set(keys)
    assert all(store.lease(k, clock.now()).epoch > epochs[k] for k in orphans)  # type: ignore[union-attr]
