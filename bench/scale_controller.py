"""One measured controller process of the scale benchmark (run by `bench/scale.py`).

It is the real controller, built by `controller.app.build` exactly as `canaryctl
run` builds it, with three pieces chosen for the benchmark: an in-memory source of
N generated policies (what the Kubernetes source's watch cache hands over: no
file is re-read), one in-memory route per rollout (no API server can run here),
and the real `PrometheusProvider` pointed at the stand-in server of
`bench/scale_prometheus.py`. The store is a fresh Postgres database migrated with
the real migrations; the scheduler is the controller's own APScheduler.

Time is compressed by `speedup`: every duration of the policy (interval, window,
holds, shadow, no-data timeout), the provider's count step and lookback, the
controller's sync period and lease TTL are divided by it, so a rollout sees the
same number of ticks per step and the controller does the same work per interval
as with the real 30 s, only sooner. APScheduler's misfire grace (1 s) is not
scaled: it is the controller's own setting and is measured as it is.

What is measured, and how, without touching the code paths:
- tick latency and in-tick CPU: `Controller.tick` wrapped on the instance
  (perf_counter and thread_time around the real call);
- how late ticks start and how many are missed: APScheduler's own job events;
- controller CPU: `time.process_time()` of this process (the Prometheus stand-in
  and Postgres run in other processes);
- memory: VmRSS sampled during the window (steady) and VmHWM (peak);
- DB statements and rows written: SQLAlchemy cursor events on the store's engine,
  cross-checked with Postgres' own `pg_stat_database` counters;
- Prometheus queries: counted by the stand-in server.

With `"role": "replica"` it is one of several replicas (`bench/scale.py` starts
k of them on one database): it runs until its stdin says `stop`, notes its CPU
time and ticks at each `mark` line, and then prints its own figures.

    python -m bench.scale_controller '{"n": 100, ...}'   # prints one JSON object
"""

from __future__ import annotations

import json
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.events import (
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from pydantic import SecretStr
from sqlalchemy import create_engine, event, make_url, text

from controller.app import build
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import ModelRollout, load_text
from controller.policy.durations import format_duration
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import TickResult
from controller.runtime.heap import freeze_startup_heap
from controller.runtime.sources import Snapshot
from controller.settings import Settings
from controller.store.sql import migrate
from controller.telemetry import configure_logging

#: the real interval the benchmark compresses
INTERVAL_SECONDS = 30.0
COHORTS = ("non-english", "mobile", "power-users")


@dataclass(frozen=True)
class WorkerConfig:
    n: int
    speedup: float
    #: measured intervals, after every rollout has ticked once
    rounds: int
    database_url: str
    admin_url: str
    database: str
    prometheus_url: str
    log_file: str
    #: stop waiting for every rollout's first tick after this many seconds, and measure
    first_round_timeout: float = 180.0
    #: this process's replica ID (its leases' holder)
    replica: str = "bench-scale"
    #: "single": measure one controller alone and print `Measured`; "replica": one of
    #: several, run until told to stop on stdin (`mark` / `stop` lines, see `serve`)
    role: str = "single"
    #: migrate the database first (the replicas' coordinator migrates it once itself)
    migrate: bool = True

    @property
    def interval(self) -> float:
        return INTERVAL_SECONDS / self.speedup


def scaled(seconds: float, speedup: float) -> str:
    """A policy duration `seconds` long in real time, compressed by `speedup`."""
    return format_duration(timedelta(seconds=seconds / speedup))


def policy_text(i: int, speedup: float) -> str:
    """Rollout `i`: the demo's support-bot policy, its own model and route, time compressed."""

    def d(seconds: float) -> str:
        return scaled(seconds, speedup)

    return f"""\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {{name: bot-{i:05d}-v7, namespace: team-{i % 50:02d}}}
spec:
  model: bot-{i:05d}
  baseline:  {{version: v6, service: bot-{i:05d}-v6}}
  candidate: {{version: v7, service: bot-{i:05d}-v7}}
  owners: {{slack: {{channel: "#bot-{i:05d}", mention: ["U024BE7LH"]}}}}
  traffic: {{router: gateway-api, route: bot-{i:05d}}}
  cohorts:
    - {{name: non-english, match: {{header: accept-language, regex: "^(de|fr|es|ja|zh)"}}}}
    - {{name: mobile,      match: {{header: x-client, value: mobile}}}}
    - {{name: power-users, match: {{header: x-user-tier, value: power}}}}
  shadow: {{mirrorPercent: 100, duration: {d(1800)}}}
  steps:
    - {{weight: 1, hold: {d(600)}, cohortWeights: {{non-english: 5, power-users: 5}}}}
    - {{weight: 5, hold: {d(900)}}}
    - {{weight: 20, hold: {d(1800)}}}
    - {{weight: 50, hold: {d(1800)}}}
    - {{weight: 100}}
  analysis:
    interval: {d(INTERVAL_SECONDS)}
    window: {d(300)}
    confidence: 0.95
    minSamples: 200
    noData: {{action: hold, timeout: {d(600)}, then: rollback}}
    metrics:
      - {{template: refusal-rate,  maxIncrease: 0.02, max: 0.10}}
      - {{template: quality-score, maxDecrease: 0.03}}
      - {{template: latency-p95,   maxRatio: 1.25, max: 2.5s}}
      - {{template: error-rate,    max: 0.01}}
"""


class StaticSource:
    """N rollouts known up front, like a synced watch cache: a snapshot costs nothing."""

    def __init__(self, rollouts: Mapping[str, ModelRollout]) -> None:
        self._snapshot = Snapshot(dict(rollouts))

    def snapshot(self) -> Snapshot:
        return self._snapshot


class Routes:
    """One in-memory route per rollout (the router the demo and the tests use)."""

    def __init__(self) -> None:
        self._routers: dict[str, MemoryRouter] = {}
        self._lock = threading.Lock()

    def __call__(self, rollout: ModelRollout) -> MemoryRouter:
        with self._lock:
            router = self._routers.get(rollout.key)
            if router is None:
                router = self._routers[rollout.key] = MemoryRouter(RouteTarget.of(rollout))
            return router


def generate(n: int, speedup: float) -> dict[str, ModelRollout]:
    """N rollouts: the first loaded by the real loader from its YAML, the others its
    copies with their own names, each validated by the policy model (equal to what
    the loader makes of `policy_text(i)`, twenty times faster: at N = 5,000 the
    loader alone takes minutes on a busy machine, in every replica process)."""
    (first,) = load_text(policy_text(0, speedup), "<bench 0>")
    template = json.dumps(first.rollout.model_dump(mode="json", by_alias=True))
    rollouts: dict[str, ModelRollout] = {}
    for i in range(n):
        text = template.replace("00000", f"{i:05d}").replace('"team-00"', f'"team-{i % 50:02d}"')
        rollout = ModelRollout.model_validate(json.loads(text))
        rollouts[rollout.key] = rollout
    return rollouts


# --- instruments -------------------------------------------------------------------


@dataclass
class Tick:
    key: str
    started: float  # perf_counter
    wall: datetime
    seconds: float
    cpu: float


class Recorder:
    """Everything counted while the controller runs; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ticks: list[Tick] = []
        self.syncs: list[tuple[float, float]] = []  # (started, seconds)
        self.sync_started_at: float | None = None
        self.started_at: dict[str, datetime] = {}
        self.lateness: list[tuple[float, float]] = []  # (perf_counter at start, seconds late)
        self.missed: list[float] = []
        self.skipped: list[tuple[float, str]] = []  # max_instances: (when, job id)
        self.committed: set[str] = set()
        self.transitions: list[float] = []
        self.statements: list[tuple[float, str, int, bool]] = []  # (when, verb, rows, in sync)
        self._where = threading.local()
        self.db_commits: list[float] = []

    def timed_tick(self, tick: Callable[[str], None]) -> Callable[[str], None]:
        def run(key: str) -> None:
            wall = datetime.now(UTC)
            start, cpu = time.perf_counter(), time.thread_time()
            with self.lock:
                self.started_at[key] = wall
            try:
                tick(key)
            finally:
                seconds, cpu = time.perf_counter() - start, time.thread_time() - cpu
                with self.lock:
                    self.ticks.append(Tick(key, start, wall, seconds, cpu))

        return run

    def timed_sync(self, sync: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            start = time.perf_counter()
            self._where.sync = True
            with self.lock:
                self.sync_started_at = start
            try:
                sync()
            finally:
                self._where.sync = False
                with self.lock:
                    self.syncs.append((start, time.perf_counter() - start))
                    self.sync_started_at = None

        return run

    def on_job(self, job_event: JobEvent) -> None:
        now = time.perf_counter()
        job_id = job_event.job_id
        if job_event.code == EVENT_JOB_MAX_INSTANCES:
            with self.lock:
                self.skipped.append((now, job_id))
            return
        if not job_id.startswith("tick:") or not isinstance(job_event, JobExecutionEvent):
            return
        scheduled = job_event.scheduled_run_time
        with self.lock:
            if job_event.code == EVENT_JOB_MISSED:
                self.missed.append(now)
                return
            started = self.started_at.get(job_id.removeprefix("tick:"))
            if started is not None:
                late = (started - scheduled).total_seconds()
                self.lateness.append((now, max(late, 0.0)))

    def report(self, rollout: ModelRollout, result: TickResult) -> None:
        """A TickReporter: which rollouts committed, and how many transitions."""
        now = time.perf_counter()
        with self.lock:
            self.committed.add(rollout.key)
            self.transitions.extend(now for _ in result.decision.transitions)

    def on_statement(
        self, statement: str, parameters: Any, executemany: bool, rowcount: int
    ) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
        autocommit_write = False
        if verb == "WITH" and "UPDATE" in statement and "INSERT" in statement:
            # The store's one-statement write of a look (`_UPDATE_WITH_ANALYSES`), in
            # autocommit: the row it updated comes back (rowcount 1, or 0 when the
            # revision moved and nothing was written) and the analysis rows went in
            # as arrays, one element per row.
            verb = "WITH UPDATE+INSERT"
            arrays = [v for v in parameters.values() if isinstance(v, list | tuple)]
            rows = rowcount * (1 + (len(arrays[0]) if arrays else 0))
            autocommit_write = True
        elif rowcount >= 0:
            # A multi-row INSERT ... VALUES is one statement: the driver's rowcount says
            # how many rows it wrote.
            rows = rowcount
        elif executemany and isinstance(parameters, Sequence):
            rows = len(parameters)
        else:
            rows = 1
        in_sync = bool(getattr(self._where, "sync", False))
        with self.lock:
            now = time.perf_counter()
            self.statements.append((now, verb, rows, in_sync))
            if autocommit_write:  # one statement, one transaction: no commit event
                self.db_commits.append(now)

    def on_commit(self) -> None:
        with self.lock:
            self.db_commits.append(time.perf_counter())


class RssSampler:
    """VmRSS every `every` seconds, in a daemon thread."""

    def __init__(self, every: float = 0.25) -> None:
        self.every = every
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append((time.perf_counter(), status_kib("VmRSS")))


def status_kib(field_name: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


def prometheus_requests(url: str) -> int:
    with urllib.request.urlopen(f"{url}/bench/stats", timeout=10) as response:
        stats = json.load(response)
    return int(stats["requests"].get("/api/v1/query", 0))


def pg_counters(admin_url: str, database: str) -> dict[str, int]:
    """Postgres' own counters for the benchmark database (read from another database)."""
    engine = create_engine(make_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = (
                connection.execute(
                    text(
                        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted, "
                        "tup_returned, tup_fetched FROM pg_stat_database WHERE datname = :name"
                    ),
                    {"name": database},
                )
                .mappings()
                .one()
            )
            return {k: int(v) for k, v in row.items()}
    finally:
        engine.dispose()


# --- the run -----------------------------------------------------------------------


def progress(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Window:
    start: float
    end: float

    def within(self, at: float) -> bool:
        return self.start <= at < self.end

    def select(self, items: Iterator[tuple[float, Any]]) -> list[Any]:
        return [value for at, value in items if self.within(at)]


@dataclass
class Measured:
    n: int
    speedup: float
    interval_s: float
    window_s: float
    ticks: int
    ticks_due: float
    ticks_per_s: float
    #: how often each rollout is really looked at: the interval, or longer if behind
    effective_interval_s: float | None
    coverage: float
    tick_latency_p50_ms: float | None
    tick_latency_p90_ms: float | None
    tick_latency_p99_ms: float | None
    tick_latency_max_ms: float | None
    tick_cpu_ms_mean: float | None
    cpu_s_per_tick: float | None
    cpu_s_total: float
    cpu_utilisation: float
    start_late_p50_ms: float | None
    start_late_p99_ms: float | None
    missed_ticks: int
    skipped_max_instances: int
    lease_ttl_s: float
    sync_every_s: float
    syncs: int
    sync_s_mean: float | None
    sync_s_max: float | None
    #: every sync since the start (first round included), and the longest one, counting
    #: a sync still running at the end of the window for as long as it had run
    syncs_in_run: int
    sync_s_max_in_run: float
    #: rollouts whose lease had expired when the window ended (not renewed in time)
    leases_expired_at_end: int
    prometheus_queries: int
    queries_per_tick: float | None
    db_statements_per_tick: float | None
    db_writes_per_tick: float | None
    db_rows_written_per_tick: float | None
    db_reads_per_tick: float | None
    db_commits_per_tick: float | None
    db_statements_by_verb: dict[str, int]
    #: the part of the statements and writes made by `sync` (leases), not by ticks
    db_sync_statements_per_tick: float | None
    db_sync_writes_per_tick: float | None
    pg_xact_commit_per_tick: float | None
    pg_tuples_written_per_tick: float | None
    transitions: int
    #: before the policies are generated: the interpreter and the imports
    rss_bare_mib: float
    #: with the policies loaded and the controller built, before it starts
    rss_start_mib: float
    rss_steady_mib: float
    rss_peak_mib: float
    rss_per_rollout_kib: float
    first_round_s: float
    first_round_cpu_s: float
    #: rollouts with at least one committed tick since the start
    rollouts_ticked: int
    #: rollouts ticked at least once in the window (the rest starved)
    rollouts_ticked_in_window: int
    phases: dict[str, int] = field(default_factory=dict)
    #: the measured window in Unix seconds, to read the audit of those looks
    window_start_unix: float = 0.0
    window_end_unix: float = 0.0
    #: what the 30 s interval would need: controller CPU per 30 s over one core
    cpu_share_at_30s: float | None = None


@dataclass
class Mark:
    """What a replica had done when the coordinator said `mark`."""

    unix: float
    cpu_s: float
    ticks: int


@dataclass
class ReplicaReport:
    """One replica's own figures, printed when the coordinator says `stop`."""

    replica: str
    marks: list[Mark]
    ticks: int
    syncs: int
    sync_s_mean: float | None
    sync_s_max: float | None
    cpu_s: float


def serve(config: WorkerConfig, controller: Any, recorder: Recorder) -> ReplicaReport:
    """Run as one of several replicas until stdin says `stop` (or closes); `mark` notes
    the CPU time and ticks so far, so the coordinator can take the figures of a window."""
    freeze_startup_heap()  # as `controller.app.run` does
    controller.start()
    progress(f"{config.replica}: started, N={config.n}, interval {config.interval:g}s")
    marks: list[Mark] = []
    try:
        for line in sys.stdin:
            if line.strip() == "mark":
                with recorder.lock:
                    ticks = len(recorder.ticks)
                marks.append(Mark(time.time(), time.process_time(), ticks))
            elif line.strip() == "stop":
                break
    finally:
        controller.stop()
    with recorder.lock:
        syncs = [seconds for _, seconds in recorder.syncs]
        ticks = len(recorder.ticks)
    return ReplicaReport(
        replica=config.replica,
        marks=marks,
        ticks=ticks,
        syncs=len(syncs),
        sync_s_mean=statistics.fmean(syncs) if syncs else None,
        sync_s_max=max(syncs) if syncs else None,
        cpu_s=time.process_time(),
    )


def run(config: WorkerConfig) -> Measured | ReplicaReport:
    rss_bare = status_kib("VmRSS")
    progress(f"N={config.n}: generating and validating {config.n} policies")
    rollouts = generate(config.n, config.speedup)
    if config.migrate:
        migrate(config.database_url)
    settings = Settings(
        database_url=SecretStr(config.database_url),
        prometheus_url=config.prometheus_url,
        source="directory",
        replica_id=config.replica,
        lease_ttl_seconds=15.0 / config.speedup,
        sync_seconds=5.0 / config.speedup,
        log_level="INFO",
        log_format="json",
    )
    recorder = Recorder()
    provider = PrometheusProvider(
        config.prometheus_url,
        timeout_seconds=10.0,
        step_seconds=15.0 / config.speedup,
        lookback_seconds=600.0 / config.speedup,
    )
    with open(config.log_file, "a", encoding="utf-8") as log_stream:
        configure_logging(settings, stream=log_stream)
        wiring = build(
            settings,
            source=StaticSource(rollouts),
            routes=Routes(),
            provider=provider,
            reporters=(recorder,),
        )
        controller = wiring.controller
        engine = wiring.store.engine

        @event.listens_for(engine, "after_cursor_execute")
        def _statement(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
        ) -> None:
            recorder.on_statement(statement, parameters, many, cursor.rowcount)

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            recorder.on_commit()

        # Instance attributes shadow the methods the scheduler is given: the real
        # tick and sync run inside, timed.
        controller.tick = recorder.timed_tick(controller.tick)  # type: ignore[method-assign,assignment]
        controller.sync = recorder.timed_sync(controller.sync)  # type: ignore[method-assign]
        controller.scheduler.add_listener(
            recorder.on_job, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        rss_start = status_kib("VmRSS")
        sampler = RssSampler()
        sampler.start()
        try:
            if config.role == "replica":
                return serve(config, controller, recorder)
            return _drive(
                config, controller, recorder, sampler, (rss_bare, rss_start), wiring.store
            )
        finally:
            sampler.stop()
            provider.close()
            wiring.store.close()


def _drive(
    config: WorkerConfig,
    controller: Any,
    recorder: Recorder,
    sampler: RssSampler,
    rss: tuple[int, int],
    store: Any,
) -> Measured:
    begin, cpu_begin = time.perf_counter(), time.process_time()
    progress(f"N={config.n}: controller started, interval {config.interval:g}s")
    freeze_startup_heap()  # as `controller.app.run` does
    controller.start()
    deadline = begin + max(config.first_round_timeout, 20 * config.interval)
    while True:
        time.sleep(0.2)
        with recorder.lock:
            done = len(recorder.committed)
        if done >= config.n or time.perf_counter() > deadline:
            break
    first_round = time.perf_counter() - begin
    first_round_cpu = time.process_time() - cpu_begin
    if done < config.n:
        progress(f"N={config.n}: only {done} rollouts ticked in {first_round:.0f}s; measuring")
    else:
        progress(f"N={config.n}: every rollout ticked once after {first_round:.1f}s; settling")
    # One more interval so the herd of first ticks has passed before measuring.
    time.sleep(config.interval)
    pg_before = pg_counters(config.admin_url, config.database)
    queries_before = prometheus_requests(config.prometheus_url)
    cpu_before = time.process_time()
    window = Window(time.perf_counter(), 0.0)
    window_unix = [time.time(), 0.0]
    for r in range(config.rounds):
        time.sleep(config.interval)
        with recorder.lock:
            ticked = sum(1 for t in recorder.ticks if t.started >= window.start)
        progress(f"N={config.n}: round {r + 1}/{config.rounds}, {ticked} ticks so far")
    window.end = time.perf_counter()
    window_unix[1] = time.time()
    cpu_used = time.process_time() - cpu_before
    # With one replica an expired lease is renewed by the next tick; with several, any
    # other replica may take it.
    held = len(store.held_by(config.replica, datetime.now(UTC)))
    with recorder.lock:
        syncing = recorder.sync_started_at
    sync_running = time.perf_counter() - syncing if syncing is not None else 0.0
    queries = prometheus_requests(config.prometheus_url) - queries_before
    pg_after = pg_counters(config.admin_url, config.database)
    controller.stop()
    phases: dict[str, int] = {}
    for row in store.rollouts():
        phases[row.phase] = phases.get(row.phase, 0) + 1
    return _summarise(
        config,
        recorder,
        window,
        cpu_used,
        queries,
        pg_before,
        pg_after,
        sampler,
        rss,
        first_round,
        first_round_cpu,
        phases,
        (config.n - held, sync_running),
        (window_unix[0], window_unix[1]),
    )


def _summarise(
    config: WorkerConfig,
    recorder: Recorder,
    window: Window,
    cpu_used: float,
    queries: int,
    pg_before: Mapping[str, int],
    pg_after: Mapping[str, int],
    sampler: RssSampler,
    rss: tuple[int, int],
    first_round: float,
    first_round_cpu: float,
    phases: dict[str, int],
    leases: tuple[int, float],
    window_unix: tuple[float, float],
) -> Measured:
    with recorder.lock:
        ticks = [t for t in recorder.ticks if window.within(t.started)]
        syncs = window.select(iter(recorder.syncs))
        all_syncs = [seconds for _, seconds in recorder.syncs]
        late = window.select(iter(recorder.lateness))
        missed = sum(1 for at in recorder.missed if window.within(at))
        skipped = sum(1 for at, job in recorder.skipped if window.within(at) and job != "sync")
        statements = [
            (verb, rows, in_sync)
            for at, verb, rows, in_sync in recorder.statements
            if window.within(at)
        ]
        commits = sum(1 for at in recorder.db_commits if window.within(at))
        transitions = sum(1 for at in recorder.transitions if window.within(at))
        committed = len(recorder.committed)
        ticked_keys = {t.key for t in ticks}
    length = window.end - window.start
    count = len(ticks)

    def per_tick(value: float) -> float | None:
        return value / count if count else None

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    by_verb: dict[str, int] = {}
    rows_written = writes = sync_writes = sync_statements = 0
    for verb, rows, in_sync in statements:
        by_verb[verb] = by_verb.get(verb, 0) + 1
        sync_statements += in_sync
        if verb in ("INSERT", "UPDATE", "DELETE", "WITH UPDATE+INSERT"):
            rows_written += rows
            writes += 1
            sync_writes += in_sync
    pg_delta = {k: pg_after[k] - pg_before[k] for k in pg_after}
    steady = [kib for at, kib in sampler.samples if window.within(at)] or [status_kib("VmRSS")]
    rss_steady = statistics.median(steady)
    latencies = [t.seconds for t in ticks]
    due = config.n * length / config.interval
    cpu_per_tick = per_tick(cpu_used)
    sync_seconds = list(syncs)
    return Measured(
        n=config.n,
        speedup=config.speedup,
        interval_s=config.interval,
        window_s=length,
        ticks=count,
        ticks_due=due,
        ticks_per_s=count / length,
        effective_interval_s=max(config.interval, config.n * length / count) if count else None,
        coverage=count / due if due else 0.0,
        tick_latency_p50_ms=ms(percentile(latencies, 0.50)),
        tick_latency_p90_ms=ms(percentile(latencies, 0.90)),
        tick_latency_p99_ms=ms(percentile(latencies, 0.99)),
        tick_latency_max_ms=ms(max(latencies)) if latencies else None,
        tick_cpu_ms_mean=ms(statistics.fmean(t.cpu for t in ticks)) if ticks else None,
        cpu_s_per_tick=cpu_per_tick,
        cpu_s_total=cpu_used,
        cpu_utilisation=cpu_used / length,
        start_late_p50_ms=ms(percentile(late, 0.50)),
        start_late_p99_ms=ms(percentile(late, 0.99)),
        missed_ticks=missed,
        skipped_max_instances=skipped,
        lease_ttl_s=15.0 / config.speedup,
        sync_every_s=5.0 / config.speedup,
        syncs=len(sync_seconds),
        sync_s_mean=statistics.fmean(sync_seconds) if sync_seconds else None,
        sync_s_max=max(sync_seconds) if sync_seconds else None,
        syncs_in_run=len(all_syncs),
        sync_s_max_in_run=max([*all_syncs, leases[1]]),
        leases_expired_at_end=leases[0],
        prometheus_queries=queries,
        queries_per_tick=per_tick(queries),
        db_statements_per_tick=per_tick(len(statements)),
        db_writes_per_tick=per_tick(writes),
        db_rows_written_per_tick=per_tick(rows_written),
        db_reads_per_tick=per_tick(by_verb.get("SELECT", 0)),
        db_commits_per_tick=per_tick(commits),
        db_statements_by_verb=by_verb,
        db_sync_statements_per_tick=per_tick(sync_statements),
        db_sync_writes_per_tick=per_tick(sync_writes),
        pg_xact_commit_per_tick=per_tick(pg_delta["xact_commit"]),
        pg_tuples_written_per_tick=per_tick(
            pg_delta["tup_inserted"] + pg_delta["tup_updated"] + pg_delta["tup_deleted"]
        ),
        transitions=transitions,
        rss_bare_mib=rss[0] / 1024,
        rss_start_mib=rss[1] / 1024,
        rss_steady_mib=rss_steady / 1024,
        rss_peak_mib=status_kib("VmHWM") / 1024,
        rss_per_rollout_kib=(rss_steady - rss[0]) / config.n,
        first_round_s=first_round,
        first_round_cpu_s=first_round_cpu,
        rollouts_ticked=committed,
        rollouts_ticked_in_window=len(ticked_keys),
        phases=phases,
        window_start_unix=window_unix[0],
        window_end_unix=window_unix[1],
        cpu_share_at_30s=(
            cpu_per_tick * config.n / INTERVAL_SECONDS if cpu_per_tick is not None else None
        ),
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    config = WorkerConfig(**json.loads(args[0]))
    measured = run(config)
    print(json.dumps(asdict(measured)), flush=True)


if __name__ == "__main__":
    main()
