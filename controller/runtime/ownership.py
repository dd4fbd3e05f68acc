"""Which replica should own which rollout: rendezvous hashing over the live replicas.

Each replica computes, for every rollout key, a score per live replica (a hash
of replica and key) and the highest score wins. Every replica that sees the same
list of live replicas reaches the same answer without talking to the others; each
gets about 1/k of the keys; and when a replica joins or leaves only the keys it
wins or held move, about 1/k of them, the rest stay where they are.

The list of live replicas comes from the store (`LeaseStore.heartbeat`). The
leases stay the authority: a replica takes only keys it wins whose lease is
free or expired, and gives up the keys it holds but no longer wins, so a key
moves by a release and a claim, never by two replicas ticking it at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def _score(replica: str, key: str) -> int:
    digest = hashlib.blake2b(f"{replica}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, replicas: Sequence[str]) -> str:
    """The replica that should own `key` among `replicas` (not empty)."""
    if not replicas:
        raise ValueError("no live replica to own a rollout")
    return max(replicas, key=lambda r: (_score(r, key), r))


def share(keys: Iterable[str], replicas: Sequence[str], me: str) -> set[str]:
    """The keys `me` should own; all of them when `me` is the only live replica
    (or, through a clock skew, not listed yet)."""
    others = [r for r in replicas if r != me]
    if not others:
        return set(keys)
    everyone = [*others, me]
    return {k for k in keys if owner(k, everyone) == me}


class Shares:
    """`share` for one replica, remembering each key's answer until the live replicas
    change: a sync then hashes only the rollouts it has not seen (the sync runs on a
    busy process, where every millisecond of Python competes with the ticks)."""

    def __init__(self, me: str) -> None:
        self.me = me
        self._replicas: tuple[str, ...] = ()
        self._mine: dict[str, bool] = {}

    def of(self, keys: Iterable[str], replicas: Sequence[str]) -> set[str]:
        live = tuple(sorted(replicas))
        if live != self._replicas:
            self._replicas, self._mine = live, {}
        others = [r for r in live if r != self.me]
        everyone = [*others, self.me]
        mine: set[str] = set()
        for key in keys:
            known = self._mine.get(key)
            if known is None:
                known = self._mine[key] = not others or owner(key, everyone) == self.me
            if known:
                mine.add(key)
        return mine
