"""The store's ports: what the engine and the runtime need from any store."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from controller.cases import EvalCase
from controller.errors import CanaryError
from controller.store.records import (
    AnalysisRecord,
    Delivery,
    Lease,
    ManualCommand,
    NotificationThread,
    OutboxMessage,
    QueuedMessage,
    RolloutSummary,
    RouteActionRecord,
    SourceProblem,
    StoredRollout,
    TickRead,
    TickWrite,
    TransitionRecord,
)


class StaleStateError(CanaryError):
    """The rollout changed since it was read (another replica wrote it): re-read, retry."""


class RolloutStore(Protocol):
    """Rollout state and its audit trail; a state change and its audit are one transaction."""

    def commit(self, write: TickWrite) -> StoredRollout:
        """Write a tick atomically; StaleStateError if the revision is not the expected one."""
        ...

    def get(self, key: str) -> StoredRollout | None: ...

    def rollouts(self) -> Sequence[StoredRollout]: ...

    def summaries(self) -> Sequence[RolloutSummary]:
        """Every rollout's key, phase, candidate, pending restore and last commit: what a
        sync reads, in one narrow query (no policy or state JSON)."""
        ...

    def transitions(self, key: str) -> Sequence[TransitionRecord]: ...

    def analyses(self, key: str, *, since_tick: int = 0) -> Sequence[AnalysisRecord]: ...

    def route_actions(self, key: str) -> Sequence[RouteActionRecord]: ...

    def append_route_action(self, key: str, action: RouteActionRecord) -> None:
        """Add one route action to a rollout's audit without touching its state (no
        revision needed): for what happens outside a committed tick, such as a stale
        replica's write that was refused, whose tick can never commit."""
        ...

    def add_command(self, key: str, command: ManualCommand) -> ManualCommand:
        """Record a human's command; the engine applies it on the rollout's next tick."""
        ...

    def add_command_once(self, key: str, command: ManualCommand) -> tuple[ManualCommand, bool]:
        """Record a command that carries a `dedupe_key`, unless one with that key is
        stored already (for any rollout, by any replica): then nothing is written and
        the stored command is returned. The flag says whether this call wrote it."""
        ...

    def command_with_key(self, dedupe_key: str) -> ManualCommand | None:
        """The command recorded with `dedupe_key`, if any."""
        ...

    def commands(self, key: str, *, after_id: int = 0) -> Sequence[ManualCommand]: ...

    def outbox(self, key: str) -> Sequence[OutboxMessage]: ...

    def eval_cases(self, key: str | None = None) -> Sequence[EvalCase]:
        """The eval cases recorded for rollout `key` (every rollout's when None), oldest
        first; PermanentError for an unknown rollout."""
        ...


class NotificationStore(Protocol):
    """Delivery of the outbox to sinks (Slack, webhooks, the console), per sink.

    Kept apart from `RolloutStore`: the delivery worker runs beside the ticks and
    touches only the outbox, its deliveries and the threads, never a rollout's
    state, so a slow or failing sink can never hold a tick up. `sinks` is every
    sink the caller delivers to: each message's own status sums up its
    deliveries to all of them (see `DeliveryStatus`).
    """

    def undelivered(self, sink: str, *, limit: int = 500) -> Sequence[QueuedMessage]:
        """Messages `sink` has not delivered (nor given up on), oldest first."""
        ...

    def claim_delivery(
        self,
        outbox_id: int,
        sink: str,
        *,
        attempts: int,
        now: datetime,
        until: datetime,
        sinks: Sequence[str],
    ) -> bool:
        """Record an attempt before it is made: `sending`, one more attempt, claimed
        until `until`. False, and nothing written, unless the delivery still has
        `attempts` attempts and is due at `now` (another worker got there first)."""
        ...

    def finish_delivery(
        self,
        outbox_id: int,
        sink: str,
        *,
        attempt: int,
        status: str,
        now: datetime,
        sinks: Sequence[str],
        error: str | None = None,
        retry_at: datetime | None = None,
        ref: str | None = None,
    ) -> bool:
        """Record how attempt number `attempt` ended; False if a later claim took over."""
        ...

    def deliveries(self, key: str) -> Sequence[Delivery]:
        """Every delivery of a rollout's messages, by message then sink."""
        ...

    def undelivered_count(self) -> int:
        """Messages some sink still has to deliver (the outbox depth)."""
        ...

    def thread(self, key: str, sink: str) -> NotificationThread | None: ...

    def save_thread(
        self, key: str, sink: str, *, channel: str, ts: str, now: datetime
    ) -> NotificationThread:
        """Remember where a rollout's thread is; the first thread saved stays."""
        ...


class LeaseStore(Protocol):
    """Which replica owns which rollout, with expiry, so a dead replica's work moves on."""

    def acquire(self, key: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take or renew the lease on `key`; False while another holder's lease is live.

        Taking it (rather than renewing a live lease of the same holder) moves its
        epoch on by one; see `Lease`."""
        ...

    def lease(self, key: str, now: datetime) -> Lease | None:
        """The live lease on `key` with its epoch, read fresh; None when nobody holds it."""
        ...

    def release(self, key: str, holder: str) -> None:
        """Give the lease up (if `holder` has it); its epoch is kept for the next holder."""
        ...

    def held_by(self, holder: str, now: datetime) -> Sequence[str]: ...

    # --- what a sync does, at a cost that does not grow with the leases held -------

    def renew_held(self, holder: str, ttl: timedelta, now: datetime) -> Sequence[str]:
        """Renew every live lease of `holder` in one statement; the keys renewed."""
        ...

    def claim(
        self, keys: Sequence[str], holder: str, ttl: timedelta, now: datetime, *, batch: int = 500
    ) -> Sequence[str]:
        """Take those of `keys` whose lease is free, expired or missing, `batch` at a time
        (rows another replica is claiming at the same moment are skipped, not waited
        for); each one taken starts a new epoch. The keys taken."""
        ...

    def release_all(self, keys: Sequence[str], holder: str) -> None:
        """`release` for many keys in one statement."""
        ...

    def heartbeat(self, replica: str, ttl: timedelta, now: datetime) -> Mapping[str, datetime]:
        """Say `replica` is alive until `now + ttl`; every replica alive at `now`, sorted
        by name, with the moment its heartbeat runs out."""
        ...

    def leave(self, replica: str) -> None:
        """`replica` stops: the others stop counting it at once."""
        ...

    def read_tick(
        self, key: str, now: datetime, *, commands_after: Callable[[StoredRollout], int | None]
    ) -> TickRead:
        """A tick's reads in one call: the live lease on `key`, its row, and the manual
        commands with an id above `commands_after(row)` (none if it says None). They
        need no transaction of their own (the SQL store reads them in autocommit); the
        tick's one transaction is its `commit`."""
        ...


class SourceProblemStore(Protocol):
    """Why a source holds a rollout as it is, for `canaryctl status` (the directory
    source has no object to write a status on). Any replica may write it: every
    replica reads the same files and records the same problem."""

    def record_source_problem(self, key: str, problem: str | None, now: datetime) -> None:
        """Set (or, with None, clear) the problem; `since` stays while it is unchanged."""
        ...

    def source_problem(self, key: str) -> SourceProblem | None: ...
