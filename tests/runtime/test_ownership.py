"""Fair, stable ownership: rendezvous hashing of rollout keys over the live replicas."""

from __future__ import annotations

import pytest

from controller.runtime.ownership import Shares, owner, share

KEYS = [f"team-{i % 50:02d}/bot-{i:05d}-v7" for i in range(5000)]


def test_every_key_has_exactly_one_owner_and_each_replica_about_a_third() -> None:
    replicas = ["replica-0", "replica-1", "replica-2"]
    shares = [share(KEYS, replicas, r) for r in replicas]
    assert set().union(*shares) == set(KEYS)
    assert sum(map(len, shares)) == len(KEYS)
    assert all(0.30 <= len(s) / len(KEYS) <= 0.37 for s in shares)


def test_a_replica_joining_takes_keys_only_from_the_others_about_a_quarter() -> None:
    before = {k: owner(k, ["a", "b", "c"]) for k in KEYS}
    after = {k: owner(k, ["a", "b", "c", "d"]) for k in KEYS}
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(after[k] == "d" for k in moved)
    assert 0.2 <= len(moved) / len(KEYS) <= 0.3


def test_a_replica_leaving_hands_over_only_its_own_keys() -> None:
    before = {k: owner(k, ["a", "b", "c"]) for k in KEYS}
    after = {k: owner(k, ["a", "c"]) for k in KEYS}
    assert all(before[k] == after[k] for k in KEYS if before[k] != "b")
    assert {after[k] for k in KEYS if before[k] == "b"} == {"a", "c"}


def test_alone_a_replica_owns_everything_even_before_it_is_listed() -> None:
    assert share(KEYS[:10], [], "a") == set(KEYS[:10])
    assert share(KEYS[:10], ["a"], "a") == set(KEYS[:10])


def test_nobody_owns_a_key_without_replicas() -> None:
    with pytest.raises(ValueError, match="no live replica"):
        owner("llm/bot", [])


def test_remembered_shares_are_the_same_and_change_with_the_replicas() -> None:
    shares = Shares("b")
    assert shares.of(KEYS, ["a", "b"]) == share(KEYS, ["a", "b"], "b")
    assert shares.of(KEYS, ["b", "a"]) == share(KEYS, ["a", "b"], "b")  # same replicas
    assert shares.of(KEYS, ["a", "b", "c"]) == share(KEYS, ["a", "b", "c"], "b")
    assert shares.of(KEYS[:5], ["b"]) == set(KEYS[:5])
