"""The long-running controller: leases, one scheduled job per owned rollout, shutdown.

Several replicas can run against one store. Each rollout is owned by one replica
at a time through a lease row with an expiry: `sync` (every few seconds) takes or
renews the leases of the rollouts it can, and keeps one APScheduler job per owned,
live rollout at that rollout's analysis interval (`max_instances=1`, coalescing,
so a slow tick is never run twice at once nor queued up, and no misfire grace, so
a tick that starts late still runs rather than being dropped). A replica that dies stops
renewing; its leases expire after `lease_ttl` and another replica's next `sync`
takes them over, resuming each rollout from its last committed state.

The store being unreachable stops nothing that takes traffic off a candidate: a
tick that cannot take its lease or read its state still looks at the metrics and
acts from the state the executor keeps in memory, toward the baseline only (see
`controller.runtime.executor`); it counts as an `error` tick with one log line.

A tick's writes toward the candidate are fenced by the lease's epoch
(`fencing.LeaseFence`), and every sync also looks at the route of each ended
(rolled back, aborted, failed) rollout whose ModelRollout still exists, and puts
back any candidate traffic found there: one lease renewal and one route read per
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
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry

from controller.engine.phases import Phase
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
from controller.runtime.sources import RolloutSource, Snapshot
from controller.store.base import LeaseStore, RolloutStore, StaleStateError
from controller.store.records import StoredRollout
from controller.telemetry import ControllerMetrics, LeaseChange, TickOutcome

log = logging.getLogger(__name__)

#: why a rollout whose latest policy is invalid is ticked in hold mode (audit and log)
INVALID_POLICY = (
    "its latest policy is invalid: ticked on the last valid one, toward the baseline only"
)

RouterFactory = Callable[[ModelRollout], TrafficRouter]


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
    ) -> None:
        """`metrics` records ticks, leases and phases (a private registry if not given).
        `store_wait`: a tick waits at most this long (and half its interval) for its
        lease and state before it acts from memory, toward the baseline only.
        `cases` records the eval cases of rollbacks (none without it). `gates` runs the
        policies' gates (without it, every gate fails, saying so)."""
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
        # As many threads as the scheduler's (APScheduler's default of 10), so that a
        # tick's reads never queue behind other ticks' and time out for that alone.
        self._reads = BoundedCalls(workers=10)
        # No misfire grace: a tick that cannot start on time (every job comes due at once,
        # more ticks than threads) runs late instead of being dropped, which APScheduler
        # does after 1 s by default, to the same rollouts every interval.
        self.scheduler = BackgroundScheduler(
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        )
        self._snapshot = Snapshot({}, synced=False)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        #: the leases this replica held after the last sync, to count what changed
        self._held: set[str] = set()
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
        try:
            self._sync()
        except TransientError as exc:
            log.error("sync failed, the jobs stay as they are: %s", exc)

    def _sync(self) -> None:
        snapshot = self.source.snapshot()
        now = self.clock.now()
        with self._lock:
            self._snapshot = snapshot
        stored = {r.key: r for r in self.store.rollouts()}
        self.metrics.set_rollout_phases(r.phase for r in stored.values())
        wanted: dict[str, float] = {}
        refused: set[str] = set()
        held = self._held_on_last_policy(snapshot, stored)
        with self._lock:
            self._held_policies = held
        for key, rollout in {**snapshot.rollouts, **held}.items():
            if not _needs_ticks(rollout, stored.get(key)):
                continue
            if self.store.acquire(key, self.replica, self.lease_ttl, now):
                wanted[key] = rollout.spec.analysis.interval.total_seconds()
            else:
                refused.add(key)
        self._count_leases(set(wanted), lost=self._held & refused)
        for key, row in stored.items():
            if key in snapshot.rollouts or key in snapshot.invalid or not snapshot.synced:
                continue
            if Phase(row.phase).terminal and not row.state.get("restorePending"):
                continue
            if self.store.acquire(key, self.replica, self.lease_ttl, now):
                self._end(row)
        self._check_ended(snapshot, stored, now)
        self._schedule(wanted)

    def _held_on_last_policy(
        self, snapshot: Snapshot, stored: dict[str, StoredRollout]
    ) -> dict[str, ModelRollout]:
        """The last committed policy of each live rollout whose latest policy is invalid:
        it is ticked on that one, in hold mode. Entering and leaving hold mode is logged
        once, and so is a stored policy that does not validate (that rollout stays as
        it is)."""
        held: dict[str, ModelRollout] = {}
        for key in sorted(snapshot.invalid - set(snapshot.rollouts)):
            row = stored.get(key)
            if row is None or (Phase(row.phase).terminal and not row.state.get("restorePending")):
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

    def _check_ended(
        self, snapshot: Snapshot, stored: dict[str, StoredRollout], now: datetime
    ) -> None:
        """Ended rollouts stay level-triggered: while the ModelRollout exists, the route of
        a rolled-back, aborted or failed rollout must not carry its candidate. The replica
        holding its lease reads the route and puts back what it finds."""
        for key, rollout in snapshot.rollouts.items():
            row = stored.get(key)
            if row is None or _needs_ticks(rollout, row) or Phase(row.phase) is Phase.PROMOTED:
                continue
            try:
                if not self.store.acquire(key, self.replica, self.lease_ttl, now):
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

    def _count_leases(self, held: set[str], *, lost: set[str]) -> None:
        for _ in held - self._held:
            self.metrics.record_lease_change(LeaseChange.ACQUIRED)
        for key in lost:
            log.warning("another replica holds the lease on %s now", key)
            self.metrics.record_lease_change(LeaseChange.LOST)
        self._held = held
        self.metrics.set_leases_held(len(held))

    def _schedule(self, wanted: dict[str, float]) -> None:
        if not self.scheduler.running:
            return
        jobs = {job.id: job for job in self.scheduler.get_jobs() if job.id.startswith("tick:")}
        for job_id, job in jobs.items():
            key = job_id.removeprefix("tick:")
            interval = wanted.get(key)
            if interval is None or job.trigger.interval.total_seconds() != interval:
                job.remove()
        for key, interval in wanted.items():
            if (
                f"tick:{key}" not in jobs
                or jobs[f"tick:{key}"].trigger.interval.total_seconds() != interval
            ):
                self.scheduler.add_job(
                    self.tick,
                    "interval",
                    args=[key],
                    seconds=interval,
                    id=f"tick:{key}",
                    next_run_time=datetime.now().astimezone(),
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
                log.info("lost the lease on %s to another replica", key)
                self.executor.forget(key)
                return TickOutcome.SKIPPED
            read, fence = got
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

    def _read(self, key: str) -> tuple[StoreRead, LeaseFence] | None:
        """The lease (and its epoch, for the tick's fence), then the rollout's row and
        commands; None if another replica holds the lease."""
        if not self.store.acquire(key, self.replica, self.lease_ttl, self.clock.now()):
            return None
        fence = LeaseFence(self.store, key, self.replica, self.clock)
        return self.executor.read(key), fence

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
            next_run_time=datetime.now().astimezone(),
        )

    def stop(self) -> None:
        """Finish the ticks in flight, then release every lease this replica holds."""
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        self._reads.close()
        try:
            for key in self.store.held_by(self.replica, self.clock.now()):
                self.store.release(key, self.replica)
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


def _needs_ticks(rollout: ModelRollout, row: StoredRollout | None) -> bool:
    if row is None:
        return True
    if row.candidate_version != rollout.spec.candidate.version:
        return True  # a new candidate restarts even an ended rollout
    # an ended rollout still ticks for its restore, or a postRollout / onRollback gate
    return (
        not Phase(row.phase).terminal
        or bool(row.state.get("restorePending"))
        or bool(row.state.get("gate"))
    )
