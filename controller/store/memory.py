"""An in-memory store with the same semantics as the SQL one, for fast engine tests."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from controller.errors import PermanentError
from controller.store.base import StaleStateError
from controller.store.records import (
    AnalysisRecord,
    ManualCommand,
    OutboxMessage,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)


class MemoryStore:
    """RolloutStore and LeaseStore in a dict; thread-safe, gone with the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rollouts: dict[str, StoredRollout] = {}
        self._transitions: dict[str, list[TransitionRecord]] = {}
        self._analyses: dict[str, list[AnalysisRecord]] = {}
        self._actions: dict[str, list[RouteActionRecord]] = {}
        self._commands: dict[str, list[ManualCommand]] = {}
        self._outbox: dict[str, list[OutboxMessage]] = {}
        self._dedupe: set[str] = set()
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._next_id = 0

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def commit(self, write: TickWrite) -> StoredRollout:
        r = write.rollout
        with self._lock:
            current = self._rollouts.get(r.key)
            now = r.updated_at or datetime.now(UTC)
            if write.expected_revision is None:
                if current is not None:
                    raise StaleStateError(f"{r.key} was created concurrently")
                stored = replace(r, revision=1, created_at=r.created_at or now, updated_at=now)
            else:
                if current is None or current.revision != write.expected_revision:
                    raise StaleStateError(
                        f"{r.key} is no longer at revision {write.expected_revision}"
                    )
                stored = replace(
                    r,
                    revision=current.revision + 1,
                    created_at=current.created_at,
                    updated_at=now,
                )
            self._rollouts[r.key] = stored
            self._transitions.setdefault(r.key, []).extend(
                replace(t, id=self._id()) for t in write.transitions
            )
            self._analyses.setdefault(r.key, []).extend(
                replace(a, id=self._id()) for a in write.analyses
            )
            self._actions.setdefault(r.key, []).extend(
                replace(a, id=self._id()) for a in write.route_actions
            )
            for message in write.messages:
                if message.dedupe_key not in self._dedupe:
                    self._dedupe.add(message.dedupe_key)
                    self._outbox.setdefault(r.key, []).append(replace(message, id=self._id()))
            return stored

    def get(self, key: str) -> StoredRollout | None:
        with self._lock:
            return self._rollouts.get(key)

    def rollouts(self) -> Sequence[StoredRollout]:
        with self._lock:
            return [self._rollouts[k] for k in sorted(self._rollouts)]

    def _known(self, key: str) -> None:
        if key not in self._rollouts:
            raise PermanentError(f"no rollout {key} in the store")

    def transitions(self, key: str) -> Sequence[TransitionRecord]:
        with self._lock:
            self._known(key)
            return list(self._transitions.get(key, []))

    def analyses(self, key: str, *, since_tick: int = 0) -> Sequence[AnalysisRecord]:
        with self._lock:
            self._known(key)
            return [a for a in self._analyses.get(key, []) if a.tick >= since_tick]

    def route_actions(self, key: str) -> Sequence[RouteActionRecord]:
        with self._lock:
            self._known(key)
            return list(self._actions.get(key, []))

    def add_command(self, key: str, command: ManualCommand) -> ManualCommand:
        with self._lock:
            self._known(key)
            stored = replace(command, id=self._id())
            self._commands.setdefault(key, []).append(stored)
            return stored

    def commands(self, key: str, *, after_id: int = 0) -> Sequence[ManualCommand]:
        with self._lock:
            self._known(key)
            return [c for c in self._commands.get(key, []) if (c.id or 0) > after_id]

    def outbox(self, key: str) -> Sequence[OutboxMessage]:
        with self._lock:
            self._known(key)
            return list(self._outbox.get(key, []))

    def acquire(self, key: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        with self._lock:
            current = self._leases.get(key)
            if current is None or current[0] == holder or current[1] < now:
                self._leases[key] = (holder, now + ttl)
                return True
            return False

    def release(self, key: str, holder: str) -> None:
        with self._lock:
            if self._leases.get(key, ("", None))[0] == holder:
                del self._leases[key]

    def held_by(self, holder: str, now: datetime) -> Sequence[str]:
        with self._lock:
            return sorted(k for k, (h, exp) in self._leases.items() if h == holder and exp >= now)
