"""The store's ports: what the engine and the runtime need from any store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from controller.errors import CanaryError
from controller.store.records import (
    AnalysisRecord,
    ManualCommand,
    OutboxMessage,
    RouteActionRecord,
    StoredRollout,
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

    def transitions(self, key: str) -> Sequence[TransitionRecord]: ...

    def analyses(self, key: str, *, since_tick: int = 0) -> Sequence[AnalysisRecord]: ...

    def route_actions(self, key: str) -> Sequence[RouteActionRecord]: ...

    def add_command(self, key: str, command: ManualCommand) -> ManualCommand:
        """Record a human's command; the engine applies it on the rollout's next tick."""
        ...

    def commands(self, key: str, *, after_id: int = 0) -> Sequence[ManualCommand]: ...

    def outbox(self, key: str) -> Sequence[OutboxMessage]: ...


class LeaseStore(Protocol):
    """Which replica owns which rollout, with expiry, so a dead replica's work moves on."""

    def acquire(self, key: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        """Take or renew the lease on `key`; False while another holder's lease is live."""
        ...

    def release(self, key: str, holder: str) -> None: ...

    def held_by(self, holder: str, now: datetime) -> Sequence[str]: ...
