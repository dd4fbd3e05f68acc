"""The long-running controller: leases, one scheduled job per owned rollout, shutdown.

Several replicas can run against one store. Each rollout is owned by one replica
at a time through a lease row with an expiry. `sync` (every few seconds, on a
thread of its own) costs the same few statements whatever the number of leases:
a heartbeat that lists the live replicas, one renewal of all this replica's
leases (or only a read of them when the renewal job renewed them less than a
third of the TTL ago: each lease is written once per period, not twice), one
narrow read of every rollout, one release of the leases another live replica
should hold (`ownership`: rendezvous hashing, about 1/k each), and claims, in
batches, of the free or expired ones this replica should hold. Each batch's
leases run from their own claim, and a sync stops claiming after a quarter of
the TTL (the next sync claims the rest): a replica starting among thousands of
free rollouts, as the first of several started together does, never hands out
leases that expire before its renewal sees them. It
keeps one APScheduler job per owned, live rollout at that rollout's slot
(`slots`: a stable offset in its interval from a hash of its key;
`max_instances=1`, coalescing, so a slow tick is never run twice at once nor
queued up, and no misfire grace, so a tick that starts late still runs rather
than being dropped). A replica that dies stops renewing; its leases and its
heartbeat expire after `lease_ttl`, and the other replicas take its rollouts over,
resuming each from its last committed state: each sync that sees another
replica's heartbeat run out before the next periodic sync would come schedules
one more sync just after it (`FAILOVER_MARGIN`), so a dead replica's rollouts
move within the TTL and a second, not within the TTL plus a whole sync period.
A tick reads its lease (never renews it), its row and its commands in one call
(plain reads; a tick's one transaction is its commit). A rollout
scheduled for a look at once (new, or just claimed) whose row then shows a look
in its current slot window (the previous holder's, landed between this replica's
read of the rows and its claim) is not looked at again: its job falls into its
slot, so a hand-over never looks twice in one interval.

The store being unreachable stops nothing that takes traffic off a candidate: a
tick that cannot read its lease or its state still looks at the metrics and
acts from the state the executor keeps in memory, toward the baseline only (see
`controller.runtime.executor`); it counts as an `error` tick with one log line.

A tick's writes toward the candidate are fenced by the lease's epoch
(`fencing.LeaseFence`), and every sync also looks at the route of each ended
(rolled back, aborted, failed) rollout whose ModelRollout still exists, and puts
back any candidate traffic found there: one row read and one route read per
such rollout per sync.

A rollout whose latest policy is invalid (the source lists its key in
`Snapshot.invalid`: a bad edit of its file, a refused spec) is not frozen: a typo
must never disable a rollback. It keeps being ticked on its last committed policy
(the stored row's) in hold mode (`Executor.tick(hold=...)`): the metrics are still
looked at and the engine still decides; a rollback or an abort's restore is
performed and committed, its transitions saying the policy is invalid and the last
valid one was used, while an advance or a promotion holds. If the stored policy
itself no longer validates (a newer controller's format, say), the rollout stays
as it is and that is logged once. Once the policy is valid again, it resumes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from controller.engine.phases import Phase
from controller.engine.state import Command, CommandKind, RolloutState
from controller.errors import CanaryError, FencedError, TransientError
from controller.policy import ModelRollout
from controller.routing.base import RouteNotFoundError, TrafficRouter
from controller.runtime.bounded import BoundedCalls
from controller.runtime.executor import (
    CaseRecorder,
    Clock,
    Executor,
    GateRunner,
    Observer,
    StoreRead,
    TickResult,
)
from controller.runtime.fencing import LeaseFence, UnconfirmedLease
from controller.runtime.ownership import Shares
from controller.runtime.slots import SlotTrigger, looked_at_in_slot
from controller.runtime.sources import RolloutSource, Snapshot
from controller.store.base import LeaseStore, RolloutStore, StaleStateError
from controller.store.records import Lease, RolloutSummary, StoredRollout
from controller.telemetry import ControllerMetrics, LeaseChange, TickOutcome

log = logging.getLogger(__name__)

#: why a rollout whose latest policy is invalid is ticked in hold mode (audit and log)
INVALID_POLICY = (
    "its latest policy is invalid: ticked on the last valid one, toward the baseline only"
)

RouterFactory = Callable[[ModelRollout], TrafficRouter]
#: the APScheduler executor of the sync job: one thread, never behind the ticks
SYNC_EXECUTOR = "sync"
#: the executor of the renewal job: one thread, never behind the ticks nor the sync
RENEW_EXECUTOR = "renew"
#: the extra sync after another replica's heartbeat runs out comes this much later: its
#: leases were renewed just after its heartbeat (the same job, one statement later)
FAILOVER_MARGIN = timedelta(seconds=1)
#: leases claimed per statement batch (`FOR UPDATE SKIP LOCKED`)
CLAIM_BATCH = 500
#: ticks that run at once: enough to cover a tick's waits for Prometheus and Postgres
#: (docs/deploy.md). A replica's Python runs on one core at most, so more threads than
#: that only wait for the GIL; fewer shortened each tick's wall time against a
#: Prometheus that answers at once, with no CPU or look interval gained (docs/benchmarks.md)
TICK_THREADS = 10


class Store(RolloutStore, LeaseStore, Protocol):
    """A store that keeps both rollouts and leases (every store here does)."""


class TickReporter(Protocol):
    """Tells the world what a committed tick did: logs, ModelRollout status, Events.

    Called after the commit, so it reports only what really happened; a failure
    to report is logged and never undoes or blocks the tick.
    """

    def report(self, rollout: ModelRollout, result: TickResult) -> None: ...


class LogReporter:
    """Every transition as one log line (the reporter used without a cluster)."""

    def report(self, rollout: ModelRollout, result: TickResult) -> None:
        for t in result.decision.transitions:
            log.info(
                "%s: %s -> %s (step %d): %s",
                rollout.key,
                t.from_phase,
                t.to_phase,
                t.to_step + 1,
                t.reason + (f" [{t.cause}]" if t.cause else ""),
                extra={"rollout": rollout.key, "phase": str(t.to_phase), "step": t.to_step + 1},
            )


class Controller:
    """Owns rollouts through leases and ticks each at its analysis interval."""

    def __init__(
        self,
        *,
        store: Store,
        source: RolloutSource,
        routes: RouterFactory,
        observer: Observer,
        clock: Clock,
        replica: str,
        lease_ttl: timedelta = timedelta(seconds=15),
        sync_every: float = 5.0,
        reporters: tuple[TickReporter, ...] = (LogReporter(),),
        metrics: ControllerMetrics | None = None,
        store_wait: float = 2.0,
        cases: CaseRecorder | None = None,
        gates: GateRunner | None = None,
        claim_batch: int = CLAIM_BATCH,
        tick_threads: int = TICK_THREADS,
    ) -> None:
        """`metrics` records ticks, leases and phases (a private registry if not given).
        `store_wait`: a tick waits at most this long (and half its interval) for its
        lease and state before it acts from memory, toward the baseline only.
        `cases` records the eval cases of rollbacks (none without it). `gates` runs the
        policies' gates (without it, every gate fails, saying so). `claim_batch`: leases
        claimed per statement. `tick_threads`: ticks that run at once."""
        self.store = store
        self.source = source
        self.routes = routes
        self.observer = observer
        self.clock = clock
        self.replica = replica
        self.lease_ttl = lease_ttl
        self.sync_every = sync_every
        self.reporters = reporters
        self.metrics = metrics or ControllerMetrics(CollectorRegistry())
        self.executor = Executor(store, clock, cases=cases, gates=gates)
        self.store_wait = store_wait
        self.claim_batch = claim_batch
        # As many threads as the ticks', so that a tick's reads never queue behind other
        # ticks' and time out for that alone.
        self._reads = BoundedCalls(workers=tick_threads)
        # No misfire grace: a tick that cannot start on time (every job comes due at once,
        # more ticks than threads) runs late instead of being dropped, which APScheduler
        # does after 1 s by default, to the same rollouts every interval.
        # The sync has a thread of its own: queued behind ticks it would renew the
        # leases late, and they would expire while this replica holds them.
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(tick_threads),
                SYNC_EXECUTOR: ThreadPoolExecutor(1),
                RENEW_EXECUTOR: ThreadPoolExecutor(1),
            },
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None},
        )
        self._snapshot = Snapshot({}, synced=False)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: the leases this replica held after the last sync, to count what changed
        self._held: set[str] = set()
        #: when this replica's leases were last renewed (by the sync or the renewal job)
        self._renewed_at: datetime | None = None
        #: rollouts whose job was scheduled to look at them at once (`_looked_at_already`)
        self._first_looks: set[str] = set()
        #: of those, the ones whose first look was skipped: the sync moves their job
        self._reslot: set[str] = set()
        #: live replicas at the last sync, and which rollouts this replica should hold
        self._replicas = 1
        self._shares = Shares(replica)
        #: the last error looking at each ended rollout's route, to log it once, not per sync
        self._ended_errors: dict[str, str] = {}
        #: live rollouts whose latest policy is invalid: their last committed policy
        self._held_policies: dict[str, ModelRollout] = {}
        #: of those, the ones whose stored policy does not validate either (logged once)
        self._unusable: set[str] = set()

    # --- one pass over everything --------------------------------------------------

    def sync(self) -> None:
        """Take or renew leases and keep exactly the needed jobs scheduled.

        With the store unreachable the jobs stay as they are (their ticks act from
        memory, toward the baseline only) and the failure is one log line."""
        start = time.perf_counter()
        try:
            self._sync()
        except TransientError as exc:
            log.error("sync failed, the jobs stay as they are: %s", exc)
        seconds = time.perf_counter() - start
        self.metrics.record_sync(seconds, replicas=self._replicas)
        if seconds >= self.lease_ttl.total_seconds() / 2:
            log.warning(
                "a sync took %.1f s, half the lease TTL (%g s) or more: leases may expire "
                "while this replica holds them; give the store more room, or the TTL",
                seconds,
                self.lease_ttl.total_seconds(),
            )

    def _sync(self) -> None:
        snapshot = self.source.snapshot()
        now = self.clock.now()
        with self._lock:
            self._snapshot = snapshot
        # A constant number of statements, whatever the number of rollouts: the
        # heartbeat, one renewal of every lease held, one narrow read of every rollout,
        # the releases and the claims in batches.
        replicas = self.store.heartbeat(self.replica, self.lease_ttl, now)
        renewed = self._renew_or_read(now)
        stored = {r.key: r for r in self.store.summaries()}
        self.metrics.set_rollout_phases(r.phase for r in stored.values())
        held_policies = self._held_on_last_policy(snapshot, stored)
        with self._lock:
            self._held_policies = held_policies
        ticked: dict[str, float] = {}
        for key, rollout in {**snapshot.rollouts, **held_policies}.items():
            if _needs_ticks(rollout, stored.get(key)):
                ticked[key] = rollout.spec.analysis.interval.total_seconds()
        # Ended rollouts whose route is looked at, and deleted ones to end: they need
        # a lease too, so that one replica does it.
        checked = {
            key
            for key, rollout in snapshot.rollouts.items()
            if key in stored
            and key not in ticked
            and Phase(stored[key].phase) is not Phase.PROMOTED
        }
        deleted = {
            key
            for key, row in stored.items()
            if snapshot.synced
            and key not in snapshot.rollouts
            and key not in snapshot.invalid
            and (not Phase(row.phase).terminal or row.restore_pending)
        }
        mine = self._shares.of(ticked.keys() | checked | deleted, list(replicas))
        # Give up what another live replica wins (its job first, so nothing ticks it
        # here after the release), then take what this one wins and nobody holds.
        released = sorted(renewed - mine)
        self._unschedule(released)
        self.store.release_all(released, self.replica)
        claimed = self._claim(sorted(mine - renewed))
        held = (renewed & mine) | claimed
        self._count_leases(held, renewed=renewed, released=set(released))
        self._sync_when_one_runs_out(replicas, now)
        for key in sorted(held & deleted):
            row = self.store.get(key)
            if row is not None:
                self._end(row)
        self._check_ended(snapshot, held & checked, now)
        self._schedule(
            {k: v for k, v in ticked.items() if k in held},
            {k: stored[k].updated_at for k in held if k in stored},
        )
        self._replicas = len(replicas)

    def _sync_when_one_runs_out(self, replicas: Mapping[str, datetime], now: datetime) -> None:
        """When another replica's heartbeat runs out before the next periodic sync (it
        missed two renewals: dead, or stalled), one more sync just after that moment,
        which takes over what it held (its leases expired with it) without waiting
        for the period."""
        if not self.scheduler.running:
            return
        others = [until for name, until in replicas.items() if name != self.replica]
        if not others:
            return
        wait = min(others) + FAILOVER_MARGIN - now
        if wait >= timedelta(seconds=self.sync_every):
            return  # the periodic sync comes first
        self.scheduler.add_job(
            self.sync,
            "date",
            run_date=datetime.now(UTC) + max(wait, timedelta(0)),
            id="sync:failover",
            executor=SYNC_EXECUTOR,
            replace_existing=True,
        )

    def _renew_or_read(self, now: datetime) -> set[str]:
        """The leases this replica holds, renewed unless they were renewed less than a
        third of the TTL ago (by the renewal job, on its own thread): then only read,
        so that each lease is written once per sync period, not twice."""
        with self._lock:
            renewed_at = self._renewed_at
        if renewed_at is not None and now - renewed_at < self.lease_ttl / 3:
            return set(self.store.held_by(self.replica, now))
        return set(self._renew(now))

    def _renew(self, now: datetime) -> Sequence[str]:
        renewed = self.store.renew_held(self.replica, self.lease_ttl, now)
        with self._lock:
            self._renewed_at = now
        return renewed

    def _claim(self, keys: Sequence[str]) -> set[str]:
        """Claim `keys`, a batch at a time, each batch's leases running from the moment
        it is claimed (not from the sync's start: a sync slowed down by thousands of
        claims would hand out leases that expire before the renewal sees them). A sync
        stops claiming after a quarter of the TTL; the next one claims the rest, so a
        replica starting among thousands of free leases never holds up its own sync."""
        claimed: set[str] = set()
        until = time.monotonic() + self.lease_ttl.total_seconds() / 4
        for start in range(0, len(keys), self.claim_batch):
            if start and time.monotonic() >= until:
                log.info(
                    "claimed %d leases in this sync; the %d others at the next one",
                    len(claimed),
                    len(keys) - start,
                )
                break
            chunk = keys[start : start + self.claim_batch]
            claimed.update(
                self.store.claim(
                    chunk, self.replica, self.lease_ttl, self.clock.now(), batch=self.claim_batch
                )
            )
        return claimed

    def _held_on_last_policy(
        self, snapshot: Snapshot, stored: dict[str, RolloutSummary]
    ) -> dict[str, ModelRollout]:
        """The last committed policy of each live rollout whose latest policy is invalid:
        it is ticked on that one, in hold mode. Entering and leaving hold mode is logged
        once, and so is a stored policy that does not validate (that rollout stays as
        it is)."""
        held: dict[str, ModelRollout] = {}
        for key in sorted(snapshot.invalid - set(snapshot.rollouts)):
            summary = stored.get(key)
            if summary is None or (Phase(summary.phase).terminal and not summary.restore_pending):
                continue
            row = self.store.get(key)  # its policy: only for the few held this way
            if row is None:
                continue
            try:
                held[key] = ModelRollout.model_validate(row.policy)
            except ValueError as exc:
                if key not in self._unusable:
                    log.error(
                        "%s: its latest policy is invalid and its last committed one does not "
                        "validate either; it stays as it is until the policy is fixed: %s",
                        key,
                        exc,
                    )
                self._unusable.add(key)
                continue
            self._unusable.discard(key)
            if key not in self._held_policies:
                log.warning(
                    "%s: its latest policy is invalid; ticking it on its last valid policy, "
                    "toward the baseline only (a rollback still happens, an advance waits) "
                    "until the policy is fixed",
                    key,
                    extra={"rollout": key},
                )
        for key in set(self._held_policies) - set(held):
            if key in snapshot.rollouts:
                log.info("%s: its policy is valid again; it ticks normally", key)
        self._unusable &= snapshot.invalid
        return held

    def _check_ended(self, snapshot: Snapshot, keys: set[str], now: datetime) -> None:
        """Ended rollouts stay level-triggered: while the ModelRollout exists, the route of
        a rolled-back, aborted or failed rollout must not carry its candidate. The replica
        holding its lease (`keys`) reads the route and puts back what it finds."""
        for key in sorted(keys):
            rollout = snapshot.rollouts[key]
            try:
                row = self.store.get(key)
                if row is None:
                    continue
                result = self.executor.correct(rollout, row, self.routes(rollout))
            except StaleStateError:
                log.info("%s was written by another replica while its route was put back", key)
                continue
            except CanaryError as exc:
                if self._ended_errors.get(key) != str(exc):
                    level = logging.INFO if isinstance(exc, RouteNotFoundError) else logging.WARNING
                    log.log(level, "could not look at the route of ended rollout %s: %s", key, exc)
                self._ended_errors[key] = str(exc)
                continue
            self._ended_errors.pop(key, None)
            if result is not None:
                self._report(rollout, result)

    def _count_leases(self, held: set[str], *, renewed: set[str], released: set[str]) -> None:
        for _ in held - self._held:
            self.metrics.record_lease_change(LeaseChange.ACQUIRED)
        for _ in released:
            self.metrics.record_lease_change(LeaseChange.RELEASED)
        for key in sorted(self._held - renewed - released):
            if key in held:
                # taken again at once, with a new epoch: the renewal came too late
                log.warning(
                    "the lease on %s expired while this replica held it (a sync took longer "
                    "than the lease TTL?); taken again",
                    key,
                )
            else:
                log.warning("another replica holds the lease on %s now", key)
                self.metrics.record_lease_change(LeaseChange.LOST)
        self._held = held
        self.metrics.set_leases_held(len(held))

    def _unschedule(self, keys: Sequence[str]) -> None:
        if not self.scheduler.running:
            return
        for key in keys:
            try:
                self.scheduler.remove_job(f"tick:{key}")
            except JobLookupError:
                continue

    def _schedule(self, wanted: dict[str, float], last_look: dict[str, datetime]) -> None:
        """One job per rollout in `wanted` (key: interval in seconds), at its slot
        (`controller.runtime.slots`); one not looked at in its current slot window yet
        is looked at once now."""
        if not self.scheduler.running:
            return
        jobs = {job.id: job for job in self.scheduler.get_jobs() if job.id.startswith("tick:")}
        for job_id, job in jobs.items():
            key = job_id.removeprefix("tick:")
            if job.trigger.interval != wanted.get(key):
                job.remove()
        now = datetime.now(UTC)
        with self._lock:
            reslot, self._reslot = self._reslot, set()
        for key, interval in wanted.items():
            job = jobs.get(f"tick:{key}")
            if job is not None and job.trigger.interval == interval:
                if key in reslot:  # its first look was skipped: straight to its slot
                    job.reschedule(SlotTrigger(key, interval))
                continue
            due = not looked_at_in_slot(last_look.get(key), now, key, interval)
            with self._lock:
                if due:
                    self._first_looks.add(key)
                else:
                    self._first_looks.discard(key)
            self.scheduler.add_job(
                self.tick,
                SlotTrigger(key, interval, first=now if due else None),
                args=[key],
                id=f"tick:{key}",
                replace_existing=True,
            )

    def tick(self, key: str) -> None:
        """One tick of one rollout, if this replica still owns it.

        When the store cannot be reached the tick still runs, from the state the
        executor keeps in memory, and may only move traffic toward the baseline; it
        counts as an `error` and logs one line, without a traceback.
        """
        if self._stopping.is_set():
            return
        hold: str | None = None
        with self._lock:
            rollout = self._snapshot.rollouts.get(key)
            if rollout is None:
                rollout, hold = self._held_policies.get(key), INVALID_POLICY
        if rollout is None:
            return
        start = time.perf_counter()
        outcome = TickOutcome.ERROR
        try:
            outcome = self._tick(key, rollout, hold)
        except StaleStateError:
            outcome = TickOutcome.SKIPPED
            log.info("%s was written by another replica; skipping this tick", key)
        except FencedError as exc:
            outcome = TickOutcome.SKIPPED
            log.warning("%s: this replica's lease is stale; the tick stopped: %s", key, exc)
        except CanaryError as exc:
            log.error("tick of %s failed: %s", key, exc)
        except Exception:  # a bug: say where, and keep the scheduler's thread alive
            log.exception("tick of %s failed unexpectedly", key)
        finally:
            self.metrics.set_store_pending_writes(self.executor.pending)
            self.metrics.record_tick(time.perf_counter() - start, outcome)

    def _tick(self, key: str, rollout: ModelRollout, hold: str | None = None) -> TickOutcome:
        # Wait for the lease and the state at most half an interval (and `store_wait`):
        # what moves traffic toward the baseline does not wait for the store.
        wait = min(self.store_wait, rollout.spec.analysis.interval.total_seconds() / 2)
        read: StoreRead | TransientError
        fence: LeaseFence | UnconfirmedLease
        try:
            got = self._reads.call(lambda: self._read(key), wait=wait)
        except TransientError as exc:
            # toward the baseline needs no lease: tick from memory; whatever routes
            # anything to the candidate is refused, since the lease cannot be re-read
            read, fence = exc, UnconfirmedLease(key, exc)
        else:
            if got is None:
                # Expired (a renewal came late) or released, and nobody else's yet: the
                # next sync takes it again; what this replica knows of it is kept.
                log.info("%s: its lease has lapsed; no tick until the sync takes it again", key)
                return TickOutcome.SKIPPED
            if isinstance(got, Lease):
                log.info("lost the lease on %s to %s", key, got.holder)
                self.executor.forget(key)
                return TickOutcome.SKIPPED
            read, fence = got
            if self._looked_at_already(key, rollout, read.stored):
                return TickOutcome.SKIPPED
        result = self.executor.tick(
            rollout, self.routes(rollout), self.observer, read=read, fence=fence, hold=hold
        )
        self._report(rollout, result)
        if hold is not None and result.decision.transitions:
            log.warning(
                "%s: %s; %s",
                key,
                hold,
                ", ".join(f"{t.from_phase} -> {t.to_phase}" for t in result.decision.transitions),
                extra={"rollout": key},
            )
        if result.store_error is None:
            return TickOutcome.OK
        ended = [t.to_phase for t in result.decision.transitions if t.to_phase.terminal]
        if ended:
            self.metrics.record_store_down_ending(str(ended[-1]))
        log.error(
            "tick of %s without the store (%s): %s; its write waits until the store answers",
            key,
            result.store_error,
            f"ended it as {ended[-1]}, route given back"
            if ended
            else "moved nothing toward the candidate",
        )
        return TickOutcome.ERROR

    def _looked_at_already(
        self, key: str, rollout: ModelRollout, stored: StoredRollout | None
    ) -> bool:
        """A rollout scheduled for a look at once (just claimed, or new) that its row says
        was looked at in its current slot window after all: the previous holder's look
        landed between this replica's sync read and its claim (a hand-over, or the
        start-up, when the first replica up looks at everything and hands most of it
        on). No second look in that window: the job falls into its slot."""
        with self._lock:
            if key not in self._first_looks:
                return False
            self._first_looks.discard(key)
        interval = rollout.spec.analysis.interval.total_seconds()
        if stored is None or not looked_at_in_slot(
            stored.updated_at, self.clock.now(), key, interval
        ):
            return False
        log.info("%s was looked at in this slot already; its next look is at its slot", key)
        # The next sync moves the job to its slot: a tick never calls the scheduler,
        # whose shutdown holds its job store's lock while it waits for the ticks.
        with self._lock:
            self._reslot.add(key)
        return True

    def _read(self, key: str) -> tuple[StoreRead, LeaseFence] | Lease | None:
        """The lease (and its epoch, for the tick's fence), the rollout's row and its
        commands, in one call. Another replica's lease if it holds it, None if
        nobody does (the sync renews and takes leases, a tick only reads its own)."""
        got = self.store.read_tick(key, self.clock.now(), commands_after=_command_cursor)
        if got.lease is None or got.lease.holder != self.replica:
            return got.lease
        commands = tuple(
            Command(c.id or 0, CommandKind(c.command), c.actor, c.reason) for c in got.commands
        )
        fence = LeaseFence(self.store, key, self.replica, self.clock, read=got.lease)
        return StoreRead(got.stored, commands), fence

    def _report(self, rollout: ModelRollout, result: TickResult) -> None:
        for reporter in self.reporters:
            try:
                reporter.report(rollout, result)
            except CanaryError as exc:
                log.warning("could not report on %s: %s", rollout.key, exc)

    def _end(self, row: StoredRollout) -> None:
        try:
            rollout = ModelRollout.model_validate(row.policy)
            result = self.executor.end(rollout, self.routes(rollout))
            if result is not None:
                self._report(rollout, result)
        except (CanaryError, ValueError) as exc:
            log.error("could not end deleted rollout %s: %s", row.key, exc)

    # --- lifecycle --------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """The source has synced once and the scheduler runs."""
        with self._lock:
            synced = self._snapshot.synced
        return synced and self.scheduler.running

    def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self.sync,
            "interval",
            seconds=self.sync_every,
            id="sync",
            executor=SYNC_EXECUTOR,
            next_run_time=datetime.now().astimezone(),
        )
        self.scheduler.add_job(
            self.renew,
            "interval",
            seconds=self.sync_every,
            id="renew",
            executor=RENEW_EXECUTOR,
        )

    def renew(self) -> None:
        """The heartbeat and the renewal of every lease held, alone: two statements and
        next to no Python, so that a sync slowed down by a busy process (its work on N
        rollouts competes for the GIL with the ticks) never lets a lease expire while
        this replica lives. The sync renews too; this job is what keeps the promise."""
        now = self.clock.now()
        try:
            self.store.heartbeat(self.replica, self.lease_ttl, now)
            self._renew(now)
        except TransientError as exc:
            log.error("could not renew the leases: %s", exc)

    def stop(self) -> None:
        """Finish the ticks in flight, then release every lease this replica holds."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._reads.close()
        try:
            self.store.leave(self.replica)
            held = self.store.held_by(self.replica, self.clock.now())
            self.store.release_all(held, self.replica)
            for _ in held:
                self.metrics.record_lease_change(LeaseChange.RELEASED)
        except TransientError as exc:
            log.error("could not release the leases (they expire by themselves): %s", exc)
        if self.executor.pending:
            log.error(
                "stopping with the writes of %d rollouts unrecorded (the store was "
                "unreachable): what their ticks did, a route given back say, is missing "
                "from the audit",
                self.executor.pending,
            )
        self._held = set()
        self.metrics.set_leases_held(0)


def _needs_ticks(rollout: ModelRollout, row: RolloutSummary | None) -> bool:
    if row is None:
        return True
    if row.candidate_version != rollout.spec.candidate.version:
        return True  # a new candidate restarts even an ended rollout
    # an ended rollout still ticks for its restore, or a postRollout / onRollback gate
    return not Phase(row.phase).terminal or row.restore_pending or row.gate_running


def _command_cursor(stored: StoredRollout) -> int | None:
    """Commands after this id apply to the rollout's next tick; none once it has ended."""
    state = RolloutState.from_json(stored.state)
    return None if state.phase.terminal else state.command_cursor
