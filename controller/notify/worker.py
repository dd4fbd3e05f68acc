"""The delivery worker: sends the outbox in the background, apart from the ticks.

A tick only *writes* notifications, in the same transaction as the state change
they report; this worker reads them back and delivers them. It shares nothing
with the ticks but the outbox tables, never holds a transaction open while it
talks to Slack, and runs on its own threads (one per sink), so Slack slow, down,
rate-limiting or hanging can never delay a rollback: the rollback's tick has
long committed, and its message catches up when Slack does.

Per sink, per rollout, in order: only the oldest undelivered message of a
rollout is tried, so a thread reads in the order things happened; rollouts do
not wait for each other. A failure is retried with exponential backoff
(`Backoff`), or after Slack's `Retry-After` on a 429 (the whole sink pauses for
it). A permanent failure (`invalid_auth`, `channel_not_found`...) is recorded on
the message, where `canaryctl status` and `history` show it, and not retried.

Exactly once, across crashes and replicas:

    claim (attempt recorded, claimed for `claim_for`) ─> send ─> finish (sent / retry / failed)

- The claim is a compare-and-set on the attempt count, so two replicas never
  send the same attempt; a claim that runs out (its worker died) can be taken
  over.
- An attempt after a recorded one is a *retry*: the notifier first looks for the
  message (Slack: its key in the message metadata of the thread) and marks it
  sent if it is there, instead of posting it twice.
- A late answer from a taken-over attempt is ignored by the store.

The worker reaches the store only through `DeliveryStore` below (the SQL and
memory stores satisfy it), and the sinks only through `Notifier`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from controller.backoff import Backoff
from controller.errors import PermanentError, TransientError
from controller.notify.base import (
    AnalysisLike,
    Notification,
    Notifier,
    OutboxLike,
    OutboxPayload,
    Receipt,
    Thread,
)
from controller.telemetry import ControllerMetrics, log_context, redact

log = logging.getLogger(__name__)

#: events whose message shows the numbers of the tick that produced it
EVIDENCE_EVENTS = frozenset({"rolled-back", "holding", "paused", "promoted", "aborted", "failed"})


# --- the ports ---------------------------------------------------------------------


class Queued(OutboxLike, Protocol):
    """An outbox message one sink has not delivered yet (the store's `QueuedMessage`)."""

    @property
    def rollout(self) -> str: ...

    @property
    def outbox_id(self) -> int: ...

    @property
    def attempts(self) -> int: ...

    @property
    def next_attempt_at(self) -> datetime | None: ...


class StoredThread(Protocol):
    @property
    def channel(self) -> str: ...

    @property
    def ts(self) -> str: ...


class DeliveryStore(Protocol):
    """What the worker needs of a store (`controller.store`'s `NotificationStore`,
    plus reading a rollout's analyses for the evidence)."""

    def undelivered(self, sink: str, *, limit: int = 500) -> Sequence[Queued]: ...

    def claim_delivery(
        self,
        outbox_id: int,
        sink: str,
        *,
        attempts: int,
        now: datetime,
        until: datetime,
        sinks: Sequence[str],
    ) -> bool: ...

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
    ) -> bool: ...

    def undelivered_count(self) -> int: ...

    def thread(self, key: str, sink: str) -> StoredThread | None: ...

    def save_thread(
        self, key: str, sink: str, *, channel: str, ts: str, now: datetime
    ) -> StoredThread: ...

    def analyses(self, key: str, *, since_tick: int = 0) -> Sequence[AnalysisLike]: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


#: Slack's `Retry-After` overrides it
DELIVERY_BACKOFF = Backoff(first=2.0, factor=2.0, longest=300.0)


# --- the worker --------------------------------------------------------------------


class DeliveryWorker:
    """Delivers the outbox to each notifier, on one background thread per notifier.

    `start()` and `stop()` run it; `run_once()` makes one pass in the calling
    thread (tests, and a caller that schedules passes itself). `claim_for` must
    outlast one delivery (the notifier's timeouts, a few calls): a claim that
    runs out lets another worker retry a message still in flight.
    """

    def __init__(
        self,
        store: DeliveryStore,
        notifiers: Sequence[Notifier],
        *,
        clock: Clock | None = None,
        backoff: Backoff | None = None,
        claim_for: timedelta = timedelta(seconds=120),
        poll_every: float = 1.0,
        metrics: ControllerMetrics | None = None,
        batch: int = 500,
    ) -> None:
        names = [n.name for n in notifiers]
        if len(set(names)) != len(names):
            raise ValueError(f"two notifiers share a name: {names}")
        self.store = store
        self.clock = clock or WallClock()
        self.backoff = backoff or DELIVERY_BACKOFF
        self.claim_for = claim_for
        self.poll_every = poll_every
        self.metrics = metrics
        self.batch = batch
        self.sinks = tuple(names)
        self._stopping = threading.Event()
        self._lanes = [_Lane(self, n) for n in notifiers]

    def run_once(self) -> int:
        """One pass of every sink over its due messages, here; the attempts made."""
        return sum(lane.run_once() for lane in self._lanes)

    def start(self) -> None:
        """Deliver in the background until `stop()`: one daemon thread per notifier.

        After a `stop()` that timed out, a lane whose thread is still stuck in a
        call keeps that thread: it carries on once the call returns.
        """
        self._stopping.clear()
        for lane in self._lanes:
            if lane.thread is None or not lane.thread.is_alive():
                lane.thread = threading.Thread(
                    target=lane.run_forever, name=f"notify-{lane.sink}", daemon=True
                )
                lane.thread.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop after the attempts in flight; False if one is still stuck after `timeout`
        (a hanging sink: its daemon thread ends with the process, and its claim runs out)."""
        self._stopping.set()
        for lane in self._lanes:
            lane.wake.set()
        deadline = time.monotonic() + timeout
        for lane in self._lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        return not any(lane.thread is not None and lane.thread.is_alive() for lane in self._lanes)

    def wake(self) -> None:
        """Look at the outbox now rather than at the next poll (e.g. after a tick)."""
        for lane in self._lanes:
            lane.wake.set()


class _Lane:
    """One sink's deliveries: its order, its pauses, its thread."""

    def __init__(self, worker: DeliveryWorker, notifier: Notifier) -> None:
        self.worker = worker
        self.notifier = notifier
        self.sink = notifier.name
        self.wake = threading.Event()
        self.paused_until: datetime | None = None
        self.thread: threading.Thread | None = None

    def run_forever(self) -> None:
        worker = self.worker
        while not worker._stopping.is_set():
            try:
                attempts = self.run_once()
            except TransientError as exc:  # the store is down: one line, wait, go on
                log.error("delivering %s notifications failed; trying again: %s", self.sink, exc)
                attempts = 0
                self._sleep(worker.backoff.first)
            except Exception:  # a bug: its traceback, wait, go on
                log.exception("delivering %s notifications failed; trying again", self.sink)
                attempts = 0
                self._sleep(worker.backoff.first)
            if attempts == 0:
                self._sleep(worker.poll_every)

    def _sleep(self, seconds: float) -> None:
        self.wake.wait(seconds)
        self.wake.clear()

    def run_once(self) -> int:
        worker, store = self.worker, self.worker.store
        now = worker.clock.now()
        if self.paused_until is not None and now < self.paused_until:
            return 0
        queued = store.undelivered(self.sink, limit=worker.batch)
        if worker.metrics is not None:
            worker.metrics.set_outbox_depth(store.undelivered_count())
        heads: dict[str, Queued] = {}
        for q in queued:
            heads.setdefault(q.rollout, q)  # in order: only a rollout's oldest may go
        attempts = 0
        for head in heads.values():
            if worker._stopping.is_set():
                break
            if head.next_attempt_at is not None and head.next_attempt_at > now:
                continue  # in flight elsewhere, or backing off
            if self._deliver(head):
                attempts += 1
            if self.paused_until is not None and worker.clock.now() < self.paused_until:
                break  # rate limited: the next pass, after Retry-After
        return attempts

    def _deliver(self, head: Queued) -> bool:
        worker, store = self.worker, self.worker.store
        now = worker.clock.now()
        claimed = store.claim_delivery(
            head.outbox_id,
            self.sink,
            attempts=head.attempts,
            now=now,
            until=now + worker.claim_for,
            sinks=worker.sinks,
        )
        if not claimed:
            return False
        attempt = head.attempts + 1
        with log_context(rollout=head.rollout):
            try:
                note = self._notification(head)
                stored = store.thread(head.rollout, self.sink)
                thread = Thread(stored.channel, stored.ts) if stored is not None else None
                receipt = self.notifier.deliver(note, thread, retry=head.attempts > 0)
            except TransientError as exc:
                self._retry_later(head, attempt, exc)
            except PermanentError as exc:
                self._give_up(head, attempt, str(exc))
            except Exception as exc:  # a bug must not block the rollout's queue forever
                log.exception("delivering %s to %s failed", head.dedupe_key, self.sink)
                self._give_up(head, attempt, f"internal error: {type(exc).__name__}: {exc}")
            else:
                self._delivered(head, attempt, receipt)
        return True

    def _delivered(self, head: Queued, attempt: int, receipt: Receipt) -> None:
        worker, store = self.worker, self.worker.store
        now = worker.clock.now()
        if receipt.opened is not None:
            store.save_thread(
                head.rollout,
                self.sink,
                channel=receipt.opened.channel,
                ts=receipt.opened.ts,
                now=now,
            )
        store.finish_delivery(
            head.outbox_id,
            self.sink,
            attempt=attempt,
            status="skipped" if receipt.skipped else "sent",
            now=now,
            sinks=worker.sinks,
            ref=receipt.ref,
        )
        log.debug("%s delivered to %s", head.dedupe_key, self.sink)

    def _retry_later(self, head: Queued, attempt: int, exc: TransientError) -> None:
        worker = self.worker
        now = worker.clock.now()
        if exc.retry_after is not None:
            delay = exc.retry_after
            self.paused_until = now + timedelta(seconds=delay)
        else:
            delay = worker.backoff.delay(attempt)
        error = redact(str(exc))
        log.warning(
            "%s to %s failed (attempt %d), retrying in %.3gs: %s",
            head.event,
            self.sink,
            attempt,
            delay,
            error,
        )
        if worker.metrics is not None:
            worker.metrics.record_delivery_failure(self.sink)
        worker.store.finish_delivery(
            head.outbox_id,
            self.sink,
            attempt=attempt,
            status="pending",
            now=now,
            sinks=worker.sinks,
            error=error,
            retry_at=now + timedelta(seconds=delay),
        )

    def _give_up(self, head: Queued, attempt: int, error: str) -> None:
        worker = self.worker
        error = redact(error)
        log.error("%s to %s failed for good: %s", head.event, self.sink, error)
        if worker.metrics is not None:
            worker.metrics.record_delivery_failure(self.sink)
        worker.store.finish_delivery(
            head.outbox_id,
            self.sink,
            attempt=attempt,
            status="failed",
            now=worker.clock.now(),
            sinks=worker.sinks,
            error=error,
        )

    def _notification(self, head: Queued) -> Notification:
        """The message with the evidence of its tick (the payload names the tick)."""
        tick = OutboxPayload.from_json(head.payload).tick
        analyses: Sequence[AnalysisLike] = ()
        if head.event in EVIDENCE_EVENTS:
            rows = self.worker.store.analyses(head.rollout, since_tick=tick or 0)
            analyses = [
                a for a in rows if (a.tick == tick if tick is not None else a.at == head.created_at)
            ]
        return Notification.of(head.rollout, head, analyses=analyses)
