"""An in-memory store with the same semantics as the SQL one, for fast engine tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from controller.cases import EvalCase
from controller.errors import PermanentError
from controller.store.base import StaleStateError
from controller.store.records import (
    AnalysisRecord,
    Delivery,
    DeliveryStatus,
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
from controller.store.summary import OPEN, outbox_summary


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
        #: a released lease stays, with holder "", so its epoch is never reused
        self._leases: dict[str, Lease] = {}
        self._deliveries: dict[tuple[int, str], Delivery] = {}
        self._threads: dict[tuple[str, str], NotificationThread] = {}
        self._next_id = 0
        self._source_problems: dict[str, SourceProblem] = {}
        self._cases: dict[str, list[EvalCase]] = {}
        self._case_ids: set[str] = set()
        #: live replicas: name -> alive until
        self._replicas: dict[str, datetime] = {}

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
            for case in write.eval_cases:
                if case.id not in self._case_ids:
                    self._case_ids.add(case.id)
                    self._cases.setdefault(r.key, []).append(case)
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

    def summaries(self) -> Sequence[RolloutSummary]:
        with self._lock:
            return [
                RolloutSummary(
                    r.key,
                    r.phase,
                    r.candidate_version,
                    bool(r.state.get("restorePending")),
                    r.updated_at or datetime.now(UTC),
                    bool(r.state.get("gate")),
                )
                for r in (self._rollouts[k] for k in sorted(self._rollouts))
            ]

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

    def eval_cases(self, key: str | None = None) -> Sequence[EvalCase]:
        with self._lock:
            if key is not None:
                self._known(key)
            found = [c for k, cases in self._cases.items() if key in (None, k) for c in cases]
            return sorted(found, key=lambda c: (c.created_at, c.id))  # as the SQL store

    def append_route_action(self, key: str, action: RouteActionRecord) -> None:
        with self._lock:
            self._known(key)
            self._actions.setdefault(key, []).append(replace(action, id=self._id()))

    def add_command(self, key: str, command: ManualCommand) -> ManualCommand:
        with self._lock:
            self._known(key)
            stored = replace(command, id=self._id())
            self._commands.setdefault(key, []).append(stored)
            return stored

    def add_command_once(self, key: str, command: ManualCommand) -> tuple[ManualCommand, bool]:
        if not command.dedupe_key:
            raise ValueError("add_command_once needs a command with a dedupe_key")
        with self._lock:
            self._known(key)
            for stored in (c for cs in self._commands.values() for c in cs):
                if stored.dedupe_key == command.dedupe_key:
                    return stored, False
            stored = replace(command, id=self._id())
            self._commands.setdefault(key, []).append(stored)
            return stored, True

    def command_with_key(self, dedupe_key: str) -> ManualCommand | None:
        with self._lock:
            found = (c for cs in self._commands.values() for c in cs)
            return next((c for c in found if c.dedupe_key == dedupe_key), None)

    def commands(self, key: str, *, after_id: int = 0) -> Sequence[ManualCommand]:
        with self._lock:
            self._known(key)
            return [c for c in self._commands.get(key, []) if (c.id or 0) > after_id]

    def outbox(self, key: str) -> Sequence[OutboxMessage]:
        with self._lock:
            self._known(key)
            return list(self._outbox.get(key, []))

    # --- delivery of the outbox --------------------------------------------------

    def _message(self, outbox_id: int) -> tuple[str, int]:
        """The rollout key and list index of an outbox message (lock held)."""
        for key, messages in self._outbox.items():
            for index, message in enumerate(messages):
                if message.id == outbox_id:
                    return key, index
        raise PermanentError(f"no outbox message {outbox_id} in the store")

    def undelivered(self, sink: str, *, limit: int = 500) -> Sequence[QueuedMessage]:
        with self._lock:
            found: list[QueuedMessage] = []
            for key, messages in self._outbox.items():
                for m in messages:
                    assert m.id is not None
                    d = self._deliveries.get((m.id, sink))
                    if m.status not in OPEN or (d is not None and d.status not in OPEN):
                        continue
                    found.append(
                        QueuedMessage(
                            rollout=key,
                            outbox_id=m.id,
                            dedupe_key=m.dedupe_key,
                            event=m.event,
                            payload=m.payload,
                            created_at=m.created_at,
                            status=d.status if d is not None else DeliveryStatus.PENDING,
                            attempts=d.attempts if d is not None else 0,
                            next_attempt_at=d.next_attempt_at if d is not None else None,
                        )
                    )
            found.sort(key=lambda q: q.outbox_id)
            return found[:limit]

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
        with self._lock:
            self._message(outbox_id)
            current = self._deliveries.get((outbox_id, sink), Delivery(outbox_id, sink))
            due = current.next_attempt_at is None or current.next_attempt_at <= now
            if current.attempts != attempts or current.status not in OPEN or not due:
                return False
            self._deliveries[(outbox_id, sink)] = replace(
                current, status=DeliveryStatus.SENDING, attempts=attempts + 1, next_attempt_at=until
            )
            self._summarise(outbox_id, sinks)
            return True

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
        outcome = DeliveryStatus(status)
        with self._lock:
            self._message(outbox_id)
            current = self._deliveries.get((outbox_id, sink))
            if (
                current is None
                or current.attempts != attempt
                or current.status != DeliveryStatus.SENDING
            ):
                return False
            self._deliveries[(outbox_id, sink)] = replace(
                current,
                status=outcome,
                last_error=error,
                next_attempt_at=retry_at if outcome is DeliveryStatus.PENDING else None,
                delivered_at=now
                if outcome in (DeliveryStatus.SENT, DeliveryStatus.SKIPPED)
                else None,
                ref=ref,
            )
            self._summarise(outbox_id, sinks)
            return True

    def _summarise(self, outbox_id: int, sinks: Sequence[str]) -> None:
        key, index = self._message(outbox_id)
        deliveries = [d for (i, _), d in self._deliveries.items() if i == outbox_id]
        summary = outbox_summary(deliveries, sinks)
        self._outbox[key][index] = replace(
            self._outbox[key][index],
            status=summary.status,
            attempts=summary.attempts,
            last_error=summary.last_error,
        )

    def deliveries(self, key: str) -> Sequence[Delivery]:
        with self._lock:
            self._known(key)
            ids = {m.id for m in self._outbox.get(key, [])}
            return sorted(
                (d for (i, _), d in self._deliveries.items() if i in ids),
                key=lambda d: (d.outbox_id, d.sink),
            )

    def undelivered_count(self) -> int:
        with self._lock:
            return sum(m.status in OPEN for ms in self._outbox.values() for m in ms)

    def thread(self, key: str, sink: str) -> NotificationThread | None:
        with self._lock:
            return self._threads.get((key, sink))

    def save_thread(
        self, key: str, sink: str, *, channel: str, ts: str, now: datetime
    ) -> NotificationThread:
        with self._lock:
            self._known(key)
            return self._threads.setdefault(
                (key, sink), NotificationThread(key, sink, channel, ts, now)
            )

    def acquire(self, key: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        with self._lock:
            current = self._leases.get(key)
            if current is None:
                self._leases[key] = Lease(key, holder, 1, now + ttl)
                return True
            live = bool(current.holder) and current.expires_at >= now
            if live and current.holder != holder:
                return False
            epoch = current.epoch if live else current.epoch + 1
            self._leases[key] = Lease(key, holder, epoch, now + ttl)
            return True

    def lease(self, key: str, now: datetime) -> Lease | None:
        with self._lock:
            current = self._leases.get(key)
            if current is None or not current.holder or current.expires_at < now:
                return None
            return current

    def release(self, key: str, holder: str) -> None:
        with self._lock:
            current = self._leases.get(key)
            if current is not None and current.holder == holder:
                self._leases[key] = replace(current, holder="")

    def held_by(self, holder: str, now: datetime) -> Sequence[str]:
        with self._lock:
            return sorted(
                k
                for k, lease in self._leases.items()
                if lease.holder == holder and lease.expires_at >= now
            )

    def renew_held(self, holder: str, ttl: timedelta, now: datetime) -> Sequence[str]:
        with self._lock:
            renewed = sorted(
                k
                for k, lease in self._leases.items()
                if lease.holder == holder and lease.expires_at >= now
            )
            for k in renewed:
                self._leases[k] = replace(self._leases[k], expires_at=now + ttl)
            return renewed

    def claim(
        self, keys: Sequence[str], holder: str, ttl: timedelta, now: datetime, *, batch: int = 500
    ) -> Sequence[str]:
        taken: list[str] = []
        with self._lock:
            for key in keys:
                current = self._leases.get(key)
                if current is None:
                    self._leases[key] = Lease(key, holder, 1, now + ttl)
                elif not current.holder or current.expires_at < now:
                    self._leases[key] = Lease(key, holder, current.epoch + 1, now + ttl)
                else:
                    continue
                taken.append(key)
        return taken

    def release_all(self, keys: Sequence[str], holder: str) -> None:
        for key in keys:
            self.release(key, holder)

    def heartbeat(self, replica: str, ttl: timedelta, now: datetime) -> Mapping[str, datetime]:
        with self._lock:
            self._replicas[replica] = now + ttl
            return {name: until for name, until in sorted(self._replicas.items()) if until >= now}

    def leave(self, replica: str) -> None:
        with self._lock:
            self._replicas.pop(replica, None)

    def read_tick(
        self, key: str, now: datetime, *, commands_after: Callable[[StoredRollout], int | None]
    ) -> TickRead:
        with self._lock:
            lease = self._leases.get(key)
            if lease is not None and (not lease.holder or lease.expires_at < now):
                lease = None
            stored = self._rollouts.get(key)
            if stored is None:
                return TickRead(lease, None)
            after = commands_after(stored)
            commands = (
                ()
                if after is None
                else tuple(c for c in self._commands.get(key, []) if (c.id or 0) > after)
            )
            return TickRead(lease, stored, commands)

    def record_source_problem(self, key: str, problem: str | None, now: datetime) -> None:
        with self._lock:
            if problem is None:
                self._source_problems.pop(key, None)
            elif getattr(self._source_problems.get(key), "problem", None) != problem:
                self._source_problems[key] = SourceProblem(key, problem, now)

    def source_problem(self, key: str) -> SourceProblem | None:
        with self._lock:
            return self._source_problems.get(key)
