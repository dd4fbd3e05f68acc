"""Scale benchmark: many rollouts on one controller process, then on several replicas.

Two parts, each on a fresh Postgres database migrated by the real migrations,
with the real controller (`controller.app.build`: its APScheduler jobs, leases
and sync, the real judge, the real `PrometheusProvider`) in processes of its own
(`bench/scale_controller.py`), against a stand-in Prometheus answering the real
PromQL in another process (`bench/scale_prometheus.py`), so the CPU counted is
the controller's alone:

- **one replica**: one controller with N rollouts (2,000 in the full run);
  how often each rollout is looked at (from the audit: the gaps between a
  rollout's consecutive looks), CPU per tick (process CPU over the measured
  window / ticks in it), latency, queries, writes, memory;
- **replicas**: k controller processes sharing N rollouts (3 and 5,000), each
  seeing all N; the share of leases each holds, leases that expired while their
  holder lived (the lease table sampled every 0.25 s), rollouts looked at twice
  in one interval (from the audit), how often each rollout is looked at; then
  `kill -9` of one replica and the time until another replica holds every
  lease it held (`failover_s`), and until each of them has been looked at again.

The 30 s analysis interval is compressed by `--speedup` (every policy duration,
the sync period and the lease TTL divided by it): the work per interval is the
same as at 30 s, it just comes sooner. The full run uses the real 30 s.

    python -m bench.scale                 # the full run, results in bench/results/
    python -m bench.scale --quick         # N=20 and 3 x 60 at 6 s intervals, < 3 min

Progress goes to stderr. The last line on stdout is one JSON object:
`{"one_replica": {"n", "look_every_p99_s", "cpu_ms_per_tick"}, "replicas": {"k",
"n", "share_min", "share_max", "leases_expired_while_held", "double_ticks",
"failover_s"}}`; every other figure is in the results JSON and its table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, create_engine, make_url, text

from bench.scale_controller import INTERVAL_SECONDS, percentile
from controller.runtime.slots import slot_offset, slot_start
from controller.store.sql import migrate

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE_URL_VARIABLE = "CANARY_BENCH_DATABASE_URL"
RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).parent.parent


@dataclass(frozen=True)
class Plan:
    """The sizes and time compression of one run."""

    n: int
    k: int
    replicas_n: int
    speedup: float
    rounds: int

    @property
    def interval(self) -> float:
        return INTERVAL_SECONDS / self.speedup

    @property
    def lease_ttl(self) -> float:
        return 15.0 / self.speedup

    @property
    def sync_every(self) -> float:
        return 5.0 / self.speedup


FULL = Plan(n=2000, k=3, replicas_n=5000, speedup=1.0, rounds=3)
QUICK = Plan(n=20, k=3, replicas_n=60, speedup=5.0, rounds=2)


def progress(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


@contextmanager
def fresh_database(admin_url: str, *, keep: bool = False) -> Iterator[tuple[str, str]]:
    """(url, name) of a new empty database on the server of `admin_url`, dropped after."""
    admin = make_url(admin_url)
    name = f"canary_bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin.set(database=name).render_as_string(hide_password=False), name
    finally:
        if not keep:
            with engine.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()


@contextmanager
def prometheus_server(speedup: float) -> Iterator[tuple[str, int]]:
    """(url, pid) of the stand-in Prometheus, in a process of its own."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.scale_prometheus", "--speedup", f"{speedup:g}"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the stand-in Prometheus did not start")
        port = json.loads(line)["port"]
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of another process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def postgres_version(admin_url: str) -> str:
    engine = create_engine(make_url(admin_url))
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def worker_command(config: Mapping[str, Any]) -> list[str]:
    return [sys.executable, "-m", "bench.scale_controller", json.dumps(config)]


# --- the audit: when was each rollout looked at ---------------------------------------


def looks(engine: Engine) -> dict[str, list[float]]:
    """Each rollout's looks (Unix seconds, ascending), from its analysis rows: one look
    writes one row per metric and cohort, all with the tick's number and time."""
    found: dict[str, list[float]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT r.key, a.tick, min(a.at) FROM analysis_results a "
                "JOIN rollouts r ON r.id = a.rollout_id GROUP BY r.key, a.tick"
            )
        )
        for key, _tick, at in rows:
            found.setdefault(key, []).append(at.timestamp())
    for times in found.values():
        times.sort()
    return found


def look_gaps(all_looks: Mapping[str, list[float]], start: float, end: float) -> list[float]:
    """How long each rollout went without a look, seen from the window [start, end]: the
    time since its previous look at each look inside the window, and at the window's
    end the time since its last look (a gap still open: it counts as long as it is
    already, so a rollout that falls behind is not left out for having no second look)."""
    gaps: list[float] = []
    for times in all_looks.values():
        before = [t for t in times if t <= end]
        gaps += [b - a for a, b in itertools.pairwise(before) if b >= start]
        if before:
            gaps.append(end - before[-1])
    return gaps


def double_looks(all_looks: Mapping[str, list[float]], interval: float) -> int:
    """Rollouts looked at twice within one of their slot windows (one interval):
    what two replicas ticking the same rollout in the same interval leave in the audit."""
    doubled = 0
    for key, times in all_looks.items():
        offset = slot_offset(key, interval)
        windows = [slot_start(t, interval, offset) for t in times]
        doubled += len(windows) != len(set(windows))
    return doubled


def look_figures(
    all_looks: Mapping[str, list[float]], start: float, end: float, n: int
) -> dict[str, Any]:
    gaps = look_gaps(all_looks, start, end)
    looked = sum(1 for times in all_looks.values() if any(start <= t <= end for t in times))
    return {
        "look_every_p50_s": percentile(gaps, 0.50),
        "look_every_p99_s": percentile(gaps, 0.99),
        "look_every_max_s": max(gaps) if gaps else None,
        "rollouts_looked_at_in_window": looked,
        "rollouts_never_looked_at_in_window": n - looked,
    }


# --- one replica ------------------------------------------------------------------------


def one_replica(
    plan: Plan, *, admin_url: str, prometheus_url: str, log_dir: Path, keep: bool
) -> dict[str, Any]:
    with fresh_database(admin_url, keep=keep) as (url, name):
        config = {
            "n": plan.n,
            "speedup": plan.speedup,
            "rounds": plan.rounds,
            "database_url": url,
            "admin_url": admin_url,
            "database": name,
            "prometheus_url": prometheus_url,
            "log_file": str(log_dir / "one-replica.log"),
        }
        started = time.perf_counter()
        done = subprocess.run(
            worker_command(config), stdout=subprocess.PIPE, text=True, cwd=ROOT, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"the controller process (N={plan.n}) failed ({done.returncode})")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["process_wall_s"] = time.perf_counter() - started
        engine = create_engine(make_url(url))
        try:
            seen = looks(engine)
        finally:
            engine.dispose()
        result.update(
            look_figures(seen, result["window_start_unix"], result["window_end_unix"], plan.n)
        )
        result["double_ticks"] = double_looks(seen, plan.interval)
        return result


# --- several replicas ---------------------------------------------------------------


class LeaseSampler:
    """Every `every` seconds: which leases of live replicas have expired (a lease
    expired while its holder lives), and how many leases each replica holds."""

    def __init__(self, engine: Engine, every: float = 0.25) -> None:
        self.engine = engine
        self.every = every
        self.alive: set[str] = set()
        self.expired_while_held: set[tuple[str, str]] = set()
        #: (when, key, holder, seconds past its expiry) at the first sighting of each
        self.first_seen: list[tuple[float, str, str, float]] = []
        self.samples = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-sampler")

    def start(self, alive: set[str]) -> None:
        self.alive = set(alive)
        self._thread.start()

    def died(self, replica: str) -> None:
        with self._lock:
            self.alive.discard(replica)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            with self.engine.connect() as connection:
                rows = connection.execute(
                    text(
                        "SELECT rollout_key, holder, "
                        "extract(epoch FROM clock_timestamp() - expires_at) FROM leases "
                        "WHERE holder <> '' AND expires_at < clock_timestamp()"
                    )
                ).all()
            with self._lock:
                self.samples += 1
                for key, holder, late in rows:
                    if holder in self.alive and (key, holder) not in self.expired_while_held:
                        self.expired_while_held.add((key, holder))
                        self.first_seen.append((time.time(), key, holder, float(late)))


def held_by(engine: Engine) -> dict[str, set[str]]:
    """The live leases, by holder."""
    held: dict[str, set[str]] = {}
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT holder, rollout_key FROM leases "
                "WHERE holder <> '' AND expires_at >= clock_timestamp()"
            )
        )
        for holder, key in rows:
            held.setdefault(holder, set()).add(key)
    return held


def live_replicas(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM replicas WHERE expires_at >= clock_timestamp()")
            ).scalar_one()
        )


def count_rollouts(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT count(*) FROM rollouts")).scalar_one())


def wait_for(what: str, ready: Any, *, timeout: float, every: float = 0.25) -> tuple[bool, float]:
    """Poll `ready()` until it is true or `timeout` passes: (done, seconds waited)."""
    began = time.perf_counter()
    while True:
        if ready():
            return True, time.perf_counter() - began
        if time.perf_counter() - began > timeout:
            progress(f"gave up waiting for {what} after {timeout:.0f}s")
            return False, time.perf_counter() - began
        time.sleep(every)


def tell(process: subprocess.Popen[str], line: str) -> None:
    stdin: IO[str] | None = process.stdin
    assert stdin is not None
    stdin.write(line + "\n")
    stdin.flush()


def start_replica(
    plan: Plan,
    replica: str,
    *,
    url: str,
    database: str,
    admin_url: str,
    prometheus_url: str,
    log_dir: Path,
) -> subprocess.Popen[str]:
    """One controller process of the replicas part, driven over its stdin."""
    config = {
        "n": plan.replicas_n,
        "speedup": plan.speedup,
        "rounds": plan.rounds,
        "database_url": url,
        "admin_url": admin_url,
        "database": database,
        "prometheus_url": prometheus_url,
        "log_file": str(log_dir / f"{replica}.log"),
        "replica": replica,
        "role": "replica",
        "migrate": False,
    }
    return subprocess.Popen(
        worker_command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )


def expiry_warnings(log_dir: Path, names: list[str]) -> int:
    """Leases the replicas logged as expired while they held them (their own view)."""
    count = 0
    for replica in names:
        path = log_dir / f"{replica}.log"
        if path.exists():
            count += path.read_text(encoding="utf-8").count("expired while this replica held it")
    return count


def kill_one(
    plan: Plan,
    engine: Engine,
    processes: dict[str, subprocess.Popen[str]],
    sampler: LeaseSampler,
) -> tuple[dict[str, float], str, set[str], float, float | None]:
    """The shares before, then `kill -9` of the replica holding the most (as a node
    lost), and the seconds until the others hold every lease it held (None: never)."""
    names = sorted(processes)
    held = held_by(engine)
    shares = {replica: len(held.get(replica, ())) / plan.replicas_n for replica in names}
    victim = max(names, key=lambda r: shares[r])
    orphaned = set(held.get(victim, ()))
    processes[victim].kill()
    killed_at = time.time()
    processes[victim].wait()
    sampler.died(victim)
    survivors = [r for r in names if r != victim]
    progress(f"killed {victim} (-9), which held {len(orphaned)} rollouts")

    def taken_over() -> bool:
        now_held = held_by(engine)
        return orphaned <= set().union(*(now_held.get(r, set()) for r in survivors))

    taken, waited = wait_for(
        "the survivors to take the killed replica's rollouts",
        taken_over,
        timeout=3 * (plan.lease_ttl + plan.sync_every) + 30,
        every=0.05,
    )
    failover_s = time.time() - killed_at if taken else None
    progress(
        f"failover: {waited:.2f}s (bound: TTL {plan.lease_ttl:g}s + sync {plan.sync_every:g}s)"
    )
    return shares, victim, orphaned, killed_at, failover_s


def replicas(
    plan: Plan, *, admin_url: str, prometheus_url: str, log_dir: Path, keep: bool
) -> dict[str, Any]:
    n, k = plan.replicas_n, plan.k
    with fresh_database(admin_url, keep=keep) as (url, name):
        migrate(url)
        engine = create_engine(make_url(url), pool_size=3)
        names = [f"replica-{i}" for i in range(k)]
        processes: dict[str, subprocess.Popen[str]] = {}
        sampler = LeaseSampler(engine)
        try:
            started, started_unix = time.perf_counter(), time.time()
            for replica in names:
                processes[replica] = start_replica(
                    plan,
                    replica,
                    url=url,
                    database=name,
                    admin_url=admin_url,
                    prometheus_url=prometheus_url,
                    log_dir=log_dir,
                )
            sampler.start(set(names))
            # Each process first generates and validates its N policies (minutes at
            # N = 5,000 on a busy machine): the first round is timed from when all run.
            wait_for(
                f"{k} replicas to start",
                lambda: live_replicas(engine) >= k,
                timeout=1800,
                every=1.0,
            )
            first_timeout = max(240.0, 20 * plan.interval)
            _, first_round = wait_for(
                f"every one of {n} rollouts looked at once",
                lambda: count_rollouts(engine) >= n,
                timeout=first_timeout,
            )
            progress(f"{k} replicas: every rollout looked at once after {first_round:.1f}s")

            def balanced() -> bool:
                held = held_by(engine)
                return set(held) == set(names) and sum(map(len, held.values())) == n

            ok, settle = wait_for("the replicas to share the rollouts", balanced, timeout=120)
            progress(f"{k} replicas: leases shared after {settle:.1f}s more; settling")
            time.sleep(plan.interval)
            for process in processes.values():
                tell(process, "mark")
            window = (time.time(), 0.0)
            for r in range(plan.rounds):
                time.sleep(plan.interval)
                progress(f"{k} replicas: round {r + 1}/{plan.rounds}")
            for process in processes.values():
                tell(process, "mark")
            window = (window[0], time.time())
            shares, victim, orphaned, killed_at, failover_s = kill_one(
                plan, engine, processes, sampler
            )
            survivors = [r for r in names if r != victim]
            time.sleep(plan.interval + plan.sync_every)
            after = held_by(engine)
            # Stopping replicas stop renewing before they release: not "expired while held".
            sampler.stop()
            reports = {}
            for replica in survivors:
                tell(processes[replica], "stop")
                out, _ = processes[replica].communicate(timeout=120)
                reports[replica] = json.loads(out.strip().splitlines()[-1])
        finally:
            sampler.stop()
            warned = expiry_warnings(log_dir, names)
            for process in processes.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
        seen = looks(engine)
        engine.dispose()
    return _replicas_result(
        plan,
        shares=shares,
        window=window,
        seen=seen,
        sampler=sampler,
        victim=victim,
        orphaned=orphaned,
        killed_at=killed_at,
        failover_s=failover_s,
        first_round_s=first_round,
        balanced_after_s=settle if ok else None,
        after=after,
        reports=reports,
        warned=warned,
        wall_s=time.perf_counter() - started,
        started_unix=started_unix,
    )


def _replicas_result(
    plan: Plan,
    *,
    shares: dict[str, float],
    window: tuple[float, float],
    seen: dict[str, list[float]],
    sampler: LeaseSampler,
    victim: str,
    orphaned: set[str],
    killed_at: float,
    failover_s: float | None,
    first_round_s: float,
    balanced_after_s: float | None,
    after: dict[str, set[str]],
    reports: dict[str, Any],
    warned: int,
    wall_s: float,
    started_unix: float,
) -> dict[str, Any]:
    n = plan.replicas_n
    # the first look at each orphaned rollout after the kill, by a survivor
    relooks = [
        min((t for t in seen.get(key, []) if t > killed_at), default=None) for key in orphaned
    ]
    relook = [t - killed_at for t in relooks if t is not None]
    cpu = ticks = 0.0
    for report in reports.values():
        first, last = report["marks"][0], report["marks"][-1]
        cpu += last["cpu_s"] - first["cpu_s"]
        ticks += last["ticks"] - first["ticks"]
    return {
        "k": plan.k,
        "n": n,
        "speedup": plan.speedup,
        "interval_s": plan.interval,
        "lease_ttl_s": plan.lease_ttl,
        "sync_every_s": plan.sync_every,
        "shares": shares,
        "share_min": min(shares.values()),
        "share_max": max(shares.values()),
        "leases_expired_while_held": len({key for key, _ in sampler.expired_while_held}),
        "lease_samples": sampler.samples,
        #: the replicas' own count: leases each found expired at its sync while it held them
        "expired_while_held_logged": warned,
        "expired_while_held_first_seen": [
            {"after_start_s": at - started_unix, "key": key, "holder": holder, "late_s": late}
            for at, key, holder, late in sampler.first_seen[:20]
        ],
        "double_ticks": double_looks(seen, plan.interval),
        "failover_s": failover_s,
        "failover_bound_s": plan.lease_ttl + plan.sync_every,
        "killed": victim,
        "killed_held": len(orphaned),
        "orphans_looked_at_again": len(relook),
        "orphans_looked_at_again_max_s": max(relook) if relook else None,
        "held_after_failover": {r: len(keys) for r, keys in after.items()},
        "first_round_s": first_round_s,
        "balanced_after_s": balanced_after_s,
        "window_s": window[1] - window[0],
        "survivors_cpu_ms_per_tick": cpu / ticks * 1000 if ticks else None,
        "survivors": {
            r: {k: v for k, v in report.items() if k != "marks"} for r, report in reports.items()
        },
        "wall_s": wall_s,
        **look_figures(seen, window[0], window[1], n),
    }


# --- the report -------------------------------------------------------------------------


def summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The one JSON line the run ends with."""
    one, many = report["one_replica"], report["replicas"]
    cpu = one["cpu_s_per_tick"]
    return {
        "one_replica": {
            "n": one["n"],
            "look_every_p99_s": one["look_every_p99_s"],
            "cpu_ms_per_tick": cpu * 1000 if cpu is not None else None,
        },
        "replicas": {
            "k": many["k"],
            "n": many["n"],
            "share_min": many["share_min"],
            "share_max": many["share_max"],
            "leases_expired_while_held": many["leases_expired_while_held"],
            "double_ticks": many["double_ticks"],
            "failover_s": many["failover_s"],
        },
    }


def markdown(report: dict[str, Any]) -> str:
    """The results as the tables docs/benchmarks.md quotes."""
    m = report["machine"]
    one, many = report["one_replica"], report["replicas"]
    cpu_ms = one["cpu_s_per_tick"] * 1000 if one["cpu_s_per_tick"] is not None else None
    shares = ", ".join(f"{r} {v:.1%}" for r, v in sorted(many["shares"].items()))
    return "\n".join(
        [
            "# Scale benchmark",
            "",
            f"Run {report['finished_at']} ({'quick' if report['quick'] else 'full'}), "
            f"{report['runtime_s']:.0f} s; {m['cpus']} CPUs ({m['cpu_model']}), "
            f"Python {m['python']}, Postgres {report['postgres']}; "
            f"load average at start {m['loadavg_at_start'][0]:.2f}.",
            f"Interval 30 s compressed x{report['speedup']:g} ({one['interval_s']:g} s), "
            f"lease TTL {one['lease_ttl_s']:g} s, sync every {one['sync_every_s']:g} s; "
            f"{report['rounds']} measured intervals.",
            "",
            "## One replica",
            "",
            "| N | looked at every s: p50 / p99 / max | never looked at | ticks/s "
            "| CPU ms/tick | core share at 30 s | tick p50 / p99 ms | start late p99 s "
            "| queries/tick | DB commits/tick | DB writes/tick (by sync) | rows written/tick "
            "| longest sync s | leases expired | RSS steady MiB | first round s |",
            "|" + "---:|" * 16,
            f"| {one['n']} | {_num(one['look_every_p50_s'])} / {_num(one['look_every_p99_s'])} "
            f"/ {_num(one['look_every_max_s'])} | {one['rollouts_never_looked_at_in_window']} "
            f"| {one['ticks_per_s']:.1f} | {_num(cpu_ms)} | {_num(one['cpu_share_at_30s'], 2)} "
            f"| {_num(one['tick_latency_p50_ms'], 0)} / {_num(one['tick_latency_p99_ms'], 0)} "
            f"| {_num((one['start_late_p99_ms'] or 0) / 1000)} "
            f"| {_num(one['queries_per_tick'])} | {_num(one['db_commits_per_tick'], 2)} "
            f"| {_num(one['db_writes_per_tick'], 2)} ({_num(one['db_sync_writes_per_tick'], 2)}) "
            f"| {_num(one['db_rows_written_per_tick'])} | {_num(one['sync_s_max_in_run'], 2)} "
            f"| {one['leases_expired_at_end']} | {_num(one['rss_steady_mib'], 0)} "
            f"| {_num(one['first_round_s'])} |",
            "",
            f"## {many['k']} replicas (separate processes)",
            "",
            "| k | N | share min / max | looked at every s: p50 / p99 / max "
            "| leases expired while held | looked at twice in one interval "
            "| failover s (bound) | orphans looked at again within s "
            "| survivors' CPU ms/tick | first round s |",
            "|" + "---:|" * 10,
            f"| {many['k']} | {many['n']} | {many['share_min']:.1%} / {many['share_max']:.1%} "
            f"| {_num(many['look_every_p50_s'])} / {_num(many['look_every_p99_s'])} "
            f"/ {_num(many['look_every_max_s'])} | {many['leases_expired_while_held']} "
            f"| {many['double_ticks']} | {_num(many['failover_s'], 2)} "
            f"({many['failover_bound_s']:g}) | {_num(many['orphans_looked_at_again_max_s'])} "
            f"| {_num(many['survivors_cpu_ms_per_tick'])} | {_num(many['first_round_s'])} |",
            "",
            f"Shares before the kill: {shares}; {many['killed']} (holding "
            f"{many['killed_held']}) was killed with SIGKILL.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Many rollouts on one controller, then on several replicas."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 s intervals")
    parser.add_argument("--n", type=int, help="rollouts of the one-replica part")
    parser.add_argument("--replicas", type=int, help="replica processes (k)")
    parser.add_argument("--replicas-n", type=int, help="rollouts shared by the replicas")
    parser.add_argument("--speedup", type=float, help="time compression of the 30 s interval")
    parser.add_argument("--rounds", type=int, help="measured intervals")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the databases")
    parser.add_argument("--render", type=Path, help="only rewrite the .md of this results JSON")
    args = parser.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    base = QUICK if args.quick else FULL
    plan = Plan(
        n=args.n or base.n,
        k=args.replicas or base.k,
        replicas_n=args.replicas_n or base.replicas_n,
        speedup=args.speedup or base.speedup,
        rounds=args.rounds or base.rounds,
    )
    if plan.k < 2 or min(plan.n, plan.replicas_n, plan.rounds) < 1:
        parser.error("need --replicas >= 2 and positive sizes and rounds")
    admin_url = os.environ.get(DATABASE_URL_VARIABLE, DEFAULT_DATABASE_URL)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "scale",
        "quick": args.quick,
        "speedup": plan.speedup,
        "rounds": plan.rounds,
        "machine": machine(),
        "postgres": postgres_version(admin_url),
    }
    with (
        tempfile.TemporaryDirectory(prefix="canary-bench-scale-") as logs,
        prometheus_server(plan.speedup) as (prometheus_url, prometheus_pid),
    ):
        progress(f"stand-in Prometheus at {prometheus_url}")
        where = {
            "admin_url": admin_url,
            "prometheus_url": prometheus_url,
            "log_dir": Path(logs),
            "keep": args.keep_database,
        }
        server_cpu = process_cpu_seconds(prometheus_pid)
        one = one_replica(plan, **where)
        one["prometheus_server_cpu_s"] = process_cpu_seconds(prometheus_pid) - server_cpu
        report["one_replica"] = one
        progress(
            f"one replica, N={plan.n}: looked at every {_num(one['look_every_p99_s'])} s (p99), "
            f"{_num((one['cpu_s_per_tick'] or 0) * 1000)} CPU ms/tick, "
            f"{one['ticks_per_s']:.1f} ticks/s"
        )
        many = replicas(plan, **where)
        report["replicas"] = many
        progress(
            f"{plan.k} replicas, N={plan.replicas_n}: shares {many['share_min']:.1%}-"
            f"{many['share_max']:.1%}, {many['leases_expired_while_held']} leases expired while "
            f"held, {many['double_ticks']} double looks, failover {_num(many['failover_s'], 2)} s"
        )
    report["runtime_s"] = time.perf_counter() - started
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["summary"] = summary(report)
    stem = "scale-quick" if args.quick else "scale"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    progress(f"wrote {args.out / stem}.json and .md in {report['runtime_s']:.0f} s")
    print(json.dumps(report["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
