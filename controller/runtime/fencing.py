"""The lease fence: a tick's proof, re-read right before a write toward the candidate,
that its replica still owns the rollout.

A replica's tick can stall anywhere (a slow Prometheus, a GC pause, SIGSTOP, a
partition) for longer than its lease lives. Meanwhile another replica takes the
lease, with a higher epoch, and may roll the candidate back. When the stalled
tick wakes up it still believes what it read; without a fence its next write
would put traffic back on the rolled-back candidate.

So a tick remembers the lease epoch it began under, and right before each write
toward the candidate reads the lease again: it must still be this replica's, at
that epoch, and not expired. The router then carries the epoch onto the route
and refuses the write if the route already has a newer one. Writes toward the
baseline are never fenced: taking traffic off a candidate is always safe.

What is left: a tick that passes this check and stalls again before its write
lands, after which the new owner restores the route (a restore gives the route
back exactly, so it carries no epoch to refuse the late write). The controller's
sync closes that window: it looks at every ended rollout's route each period and
puts back any candidate traffic it finds (`Executor.correct`).
"""

from __future__ import annotations

from controller.errors import FencedError, TransientError
from controller.runtime.executor import Clock
from controller.store.base import LeaseStore
from controller.store.records import Lease


class LeaseFence:
    """The fence of one tick: the lease as read when the tick began, re-checked on demand."""

    def __init__(
        self, store: LeaseStore, key: str, holder: str, clock: Clock, *, read: Lease | None = None
    ) -> None:
        """Reads the lease now (one primary-key read), unless `read` is the lease the tick
        has just read (with its row, in one call)."""
        self.store = store
        self.key = key
        self.holder = holder
        self.clock = clock
        lease = read if read is not None else store.lease(key, clock.now())
        self._epoch = lease.epoch if lease is not None and lease.holder == holder else None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def check(self) -> None:
        if self._epoch is None:
            raise FencedError(
                f"{self.holder} did not hold the lease on {self.key} when its tick began"
            )
        lease = self.store.lease(self.key, self.clock.now())
        if lease is None:
            raise FencedError(
                f"the lease of {self.holder} on {self.key} (epoch {self._epoch}) has expired"
            )
        if lease.holder != self.holder or lease.epoch != self._epoch:
            raise FencedError(
                f"{lease.holder} holds the lease on {self.key} now (epoch {lease.epoch}); "
                f"{self.holder}'s tick began under epoch {self._epoch}"
            )


class UnconfirmedLease:
    """The fence of a tick that could not read its lease (the store is unreachable).

    Such a tick may still take traffic off the candidate, which needs no lease; a
    write that routes anything to the candidate needs a lease confirmed now, so it
    is not made (a transient error: the next tick with the store will make it)."""

    def __init__(self, key: str, cause: Exception) -> None:
        self.key = key
        self.cause = cause

    @property
    def epoch(self) -> int | None:
        return None

    def check(self) -> None:
        raise TransientError(
            f"the lease on {self.key} cannot be re-checked ({self.cause}); no write toward "
            "the candidate without it"
        )
