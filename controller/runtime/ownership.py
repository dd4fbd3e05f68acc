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
