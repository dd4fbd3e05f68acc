"""Where a tick's CPU goes: the scale benchmark's controller under `cProfile`.

The same pieces as `bench/scale_controller.py` (the controller built by
`controller.app.build`, the real store on a fresh Postgres database, the real
`PrometheusProvider` against the stand-in of `bench/scale_prometheus.py` in a
process of its own, production JSON logs at INFO to a file), but the ticks are
called one after the other on this thread instead of by APScheduler's pool, so
that one profiler sees all of them and nothing else competes for the GIL. The
sync and the renewal are profiled apart (they run once per sync period, not per
tick).

It prints two tables: the CPU of the whole tick split by who spent it (each
function's own time, by the package its code lives in), and the inclusive time
of the tick's parts (the read, the look's queries, the judge, the route, the
commit, the log line...). And, without the profiler, the CPU per tick
(`time.process_time`) of the same ticks.

    python -m bench.scale_profile --n 200 --rounds 3   # about a minute
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.scale import DATABASE_URL_VARIABLE, DEFAULT_DATABASE_URL, fresh_database
from bench.scale import prometheus_server as stand_in
from bench.scale_controller import Routes, StaticSource, generate
from controller.app import build
from controller.metrics.prometheus import PrometheusProvider
from controller.settings import Settings
from controller.store.sql import migrate
from controller.telemetry import configure_logging

#: who spent a function's own time, from where its code lives (first match wins)
OWNERS: tuple[tuple[str, str], ...] = (
    ("/requests/", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/urllib3/", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/http/client.py", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/email/", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/socket.py", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/idna/", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/charset_normalizer/", "HTTP client (requests, urllib3, http.client, socket)"),
    ("/json/", "JSON (stdlib json)"),
    ("controller/metrics/", "metric queries: PromQL, parsing (controller/metrics)"),
    ("controller/analysis/", "judge (controller/analysis)"),
    ("controller/runtime/observer", "observer (controller/runtime/observer)"),
    ("controller/engine/", "engine (controller/engine)"),
    ("controller/store/", "store (controller/store)"),
    ("/sqlalchemy/", "SQLAlchemy"),
    ("/psycopg", "psycopg (driver)"),
    ("/apscheduler/", "APScheduler"),
    ("/logging/", "logging"),
    ("controller/telemetry", "logging"),
    ("/pythonjsonlogger/", "logging"),
    ("/prometheus_client/", "self-metrics (prometheus_client)"),
    ("/pydantic", "pydantic"),
    ("controller/policy/", "policy (controller/policy)"),
    ("controller/routing/", "route (controller/routing)"),
    ("controller/runtime/", "runtime (controller/runtime)"),
    ("controller/notify/", "notify"),
    ("/re/", "stdlib re"),
    ("/threading.py", "threads and locks"),
    ("/concurrent/", "threads and locks"),
    ("/queue.py", "threads and locks"),
    ("/datetime.py", "stdlib other"),
    ("/dataclasses.py", "stdlib other"),
    ("/enum.py", "stdlib other"),
    ("/copy.py", "stdlib other"),
    ("/uuid.py", "stdlib other"),
)

#: inclusive time of the tick's parts: (label, file fragment, function name)
PARTS: tuple[tuple[str, str, str], ...] = (
    ("whole tick (Controller.tick)", "runtime/controller.py", "tick"),
    ("  read: lease, row, commands (store.read_tick)", "store/sql.py", "read_tick"),
    ("  look (JudgingObserver.observe)", "runtime/observer.py", "observe"),
    ("    queries (metrics.base.collect)", "metrics/base.py", "collect"),
    ("      of which HTTP (HTTPConnectionPool.urlopen)", "urllib3/connectionpool.py", "urlopen"),
    ("      of which the form body (form_body)", "metrics/prometheus.py", "form_body"),
    ("      of which the answer's JSON (json.loads)", "json/__init__.py", "loads"),
    ("    judge (analysis.judge)", "analysis/judge.py", "judge"),
    ("    audit records (observer.audit_record)", "runtime/observer.py", "audit_record"),
    ("  engine (engine.decide)", "engine/decide.py", "decide"),
    ("  route (MemoryRouter.apply)", "routing/memory.py", "apply"),
    ("  fence (LeaseFence.check)", "runtime/fencing.py", "check"),
    ("  policy dump (BaseModel.model_dump)", "pydantic/main.py", "model_dump"),
    ("  state to JSON (RolloutState.to_json)", "engine/state.py", "to_json"),
    ("  state from JSON (RolloutState.from_json)", "engine/state.py", "from_json"),
    ("  commit (store.commit)", "store/sql.py", "commit"),
    ("  reporters (Controller._report)", "runtime/controller.py", "_report"),
    ("  logging (Logger._log)", "logging/__init__.py", "_log"),
    ("  self-metrics (ControllerMetrics.record_tick)", "controller/telemetry.py", "record_tick"),
)


def owner(filename: str) -> str:
    for fragment, name in OWNERS:
        if fragment in filename:
            return name
    if "/lib/python3" in filename or filename.startswith("~") or filename.startswith("<"):
        return "stdlib other"
    return "other"


def inclusive(stats: pstats.Stats) -> dict[str, float]:
    out: dict[str, float] = {}
    for label, fragment, name in PARTS:
        total = 0.0
        for (filename, _, function), row in stats.stats.items():  # type: ignore[attr-defined]
            if function == name and fragment in filename:
                total += row[3]
        out[label] = total
    return out


#: functions that wait (for a socket, a lock, the database) rather than compute
IDLE = (
    "method 'recv_into' of '_socket.socket' objects",
    "method 'acquire' of '_thread.lock' objects",
    "method 'poll' of 'select.poll' objects",
    "method 'poll' of 'select.epoll' objects",
    "built-in method select.select",
    "built-in method psycopg_binary._psycopg.wait_c",
    # psycopg's compiled wait loop is not seen by the profiler: its caller's own time
    # is the time the database took to answer
    "psycopg/connection.py:(wait)",
)


def _name(function: tuple[str, int, str]) -> str:
    filename, _, name = function
    return name if filename == "~" else f"{filename}:({name})"


def attributed(stats: pstats.Stats) -> tuple[dict[str, float], float]:
    """Each function's own time, charged to its owner; a function without one (the
    standard library, numpy, scipy, builtins) is charged to its callers in proportion
    to the time it spent for each, up the call graph until an owner is found (so
    `dataclasses.asdict` called by the observer is the observer's, `urllib.parse`
    called by requests the HTTP client's). Time spent waiting (`IDLE`) is returned
    apart: it is wall time, not CPU."""
    table_: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    out: dict[str, float] = {}
    idle = 0.0

    def charge(function: Any, seconds: float, depth: int) -> None:
        found = owner(function[0])
        if "/numpy/" in function[0] or "/scipy/" in function[0]:
            found = "stdlib other"
        if found not in ("stdlib other", "other") or depth > 40:
            out[found] = out.get(found, 0.0) + seconds
            return
        callers = table_[function][4]
        total = sum(row[2] for row in callers.values())
        if not callers or total <= 0:
            out[found] = out.get(found, 0.0) + seconds
            return
        for caller, row in callers.items():
            if caller in table_:
                charge(caller, seconds * row[2] / total, depth + 1)

    for function, (_, _, tottime, _, _) in table_.items():
        if any(name in _name(function) for name in IDLE):
            idle += tottime
        elif tottime > 0:
            charge(function, tottime, 0)
    return out, idle


def run(n: int, rounds: int, admin_url: str, top: int, log_file: Path | None = None) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="canary-scale-profile-") as logs,
        stand_in(1.0) as (prometheus_url, _),
        fresh_database(admin_url) as (url, _),
    ):
        migrate(url)
        rollouts = generate(n, 1.0)
        settings = Settings(
            database_url=SecretStr(url),
            prometheus_url=prometheus_url,
            source="directory",
            replica_id="profile",
            log_level="INFO",
            log_format="json",
        )
        provider = PrometheusProvider(prometheus_url, timeout_seconds=10.0)
        with open(log_file or Path(logs) / "controller.log", "a", encoding="utf-8") as log_stream:
            configure_logging(settings, stream=log_stream)
            wiring = build(
                settings, source=StaticSource(rollouts), routes=Routes(), provider=provider
            )
            controller = wiring.controller
            # No scheduler runs here: a thread renews the leases as the renewal job would.
            stop = threading.Event()
            renewal = threading.Thread(
                target=lambda: [controller.renew() for _ in iter(lambda: stop.wait(1.0), True)],
                daemon=True,
            )
            try:
                controller.sync()  # claims every lease (no scheduler: no jobs)
                renewal.start()
                keys = sorted(rollouts)
                first = _ticks(controller, keys)  # first looks: start, shadow applied
                print(f"first round: {first * 1000 / n:.1f} CPU ms per tick", file=sys.stderr)
                _ticks(controller, keys)  # warm: every cache and pool filled
                plain = min(_ticks(controller, keys) for _ in range(rounds))
                # Wall time of this thread, less the waits (`IDLE`): the cheapest timer,
                # so the profiler distorts the least; the tick's read runs on a pool
                # thread (`BoundedCalls`) and is profiled apart below, as is the renewal.
                profiler = _profiled(rounds, lambda: [controller.tick(k) for k in keys])
                read_profiler = _profiled(rounds, lambda: [controller._read(k) for k in keys])
                sync_profiler = _profiled(rounds, lambda: (controller.sync(), controller.renew()))
                sync_cpu = _timed(lambda: (controller.sync(), controller.renew()))
            finally:
                stop.set()
                if renewal.is_alive():
                    renewal.join()
                controller.stop()
                provider.close()
                wiring.store.close()
    report(n, rounds, plain, sync_cpu, (profiler, read_profiler, sync_profiler), top)


def report(
    n: int,
    rounds: int,
    plain: float,
    sync_cpu: float,
    profilers: tuple[cProfile.Profile, cProfile.Profile, cProfile.Profile],
    top: int,
) -> None:
    profiler, read_profiler, sync_profiler = profilers
    ticks = n * rounds
    stats = pstats.Stats(profiler)
    read_stats = pstats.Stats(read_profiler)
    owners, idle = attributed(stats)
    read_owners, read_idle = attributed(read_stats)
    busy = sum(owners.values()) + sum(read_owners.values())
    measured = plain * 1000 / n
    print(
        f"N={n}, {rounds} rounds of N ticks one after the other: {measured:.2f} CPU ms per "
        f"tick without the profiler (process_time, best round); under cProfile "
        f"{busy * 1000 / ticks:.2f} ms busy + {(idle + read_idle) * 1000 / ticks:.2f} ms waiting "
        "per tick. The profiled busy time is shared out by owner and scaled to the measured CPU:"
    )
    merged = dict(owners)
    for who, seconds in read_owners.items():
        merged[f"{who} [the read]"] = seconds
    print("\n| owner | CPU ms per tick | share |\n|---|---:|---:|")
    for who, seconds in sorted(merged.items(), key=lambda kv: -kv[1]):
        print(f"| {who} | {measured * seconds / busy:.2f} | {seconds / busy:.0%} |")
    parts = inclusive(stats)
    parts["  read: lease, row, commands (store.read_tick) [pool thread]"] = sum(
        row[3]
        for function, row in read_stats.stats.items()  # type: ignore[attr-defined]
        if function[2] == "read_tick"
    )
    print("\nInclusive wall time of the tick's parts under cProfile (waits included):")
    print("| part | ms per tick |\n|---|---:|")
    for label, seconds in parts.items():
        print(f"| {label} | {seconds * 1000 / ticks:.2f} |")
    sync_stats = pstats.Stats(sync_profiler)
    print(
        f"\nsync + renewal over {n} leases: {sync_cpu * 1000:.1f} CPU ms each (no profiler), "
        f"{sync_cpu * 1000 / (n * 5 / 30):.3f} ms per tick (N / 6 ticks per 5 s sync period "
        "at the 30 s interval)"
    )
    if top:
        print(f"\ntop {top} functions by own time:", file=sys.stderr)
        stats.sort_stats("tottime").print_stats(top)
        sync_stats.sort_stats("tottime").print_stats(min(top, 15))


def _profiled(rounds: int, work: Callable[[], object]) -> cProfile.Profile:
    """`work` run `rounds` times under a profiler of its own."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(rounds):
        work()
    profiler.disable()
    return profiler


def _ticks(controller: Any, keys: Iterable[str]) -> float:
    return _timed(lambda: [controller.tick(key) for key in keys])


def _timed(work: Any) -> float:
    cpu = time.process_time()
    work()
    return time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Where a tick's CPU goes (cProfile).")
    parser.add_argument("--n", type=int, default=200, help="rollouts")
    parser.add_argument("--rounds", type=int, default=3, help="profiled rounds of N ticks")
    parser.add_argument("--top", type=int, default=0, help="also print the top functions")
    parser.add_argument("--log", type=Path, help="keep the controller's log in this file")
    args = parser.parse_args(argv)
    admin_url = os.environ.get(DATABASE_URL_VARIABLE, DEFAULT_DATABASE_URL)
    run(args.n, args.rounds, admin_url, args.top, args.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
