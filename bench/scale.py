"""Scale benchmark: one controller process managing N concurrent rollouts.

For each N (100, 1000, 5000 by default) a fresh Postgres database is created and
migrated, and the real controller (`controller.app.build`, its APScheduler jobs,
its leases, the real judge, the real `PrometheusProvider`) runs N rollouts of
the demo's policy in its own process (`bench/scale_controller.py`), against a
stand-in Prometheus that answers the real queries in a third process
(`bench/scale_prometheus.py`), so the CPU counted is the controller's alone.

The 30 s analysis interval is compressed by `--speedup` (every policy duration,
the sync period and the lease TTL divided by it); the work per interval is the
same as at 30 s, it just comes sooner. What is reported per N, and as a ratio to
the smallest N of the same run:

- tick latency p50 / p90 / p99 (the real `Controller.tick`, wall time),
- controller CPU seconds per tick (process CPU over the window / ticks), and the
  share of one core the real 30 s interval would need (`cpu_share_at_30s`),
- coverage: ticks done / ticks due; ticks APScheduler dropped as missed,
- resident memory at start, steady (median during the window) and peak,
- Prometheus queries per tick (counted by the server), DB statements, writes,
  rows written and commits per tick (SQLAlchemy events; Postgres' counters too).

    python -m bench.scale                 # the full run, results in bench/results/
    python -m bench.scale --quick         # N=5,20, a few ticks, JSON on stdout

Progress goes to stderr; `--quick` prints the result JSON on stdout as well.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, make_url, text

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATABASE_URL_VARIABLE = "CANARY_BENCH_DATABASE_URL"
RESULTS = Path(__file__).parent / "results"
FULL_SIZES = (100, 1000, 5000)
QUICK_SIZES = (5, 20)

#: figures whose growth with N is reported as a ratio to the smallest N
GROWTH = (
    "tick_latency_p50_ms",
    "tick_latency_p99_ms",
    "cpu_s_per_tick",
    "queries_per_tick",
    "db_writes_per_tick",
    "db_statements_per_tick",
    "rss_steady_mib",
    "sync_s_mean",
)


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


def run_size(
    n: int,
    *,
    speedup: float,
    rounds: int,
    admin_url: str,
    prometheus_url: str,
    log_dir: Path,
    keep_database: bool,
) -> dict[str, Any]:
    with fresh_database(admin_url, keep=keep_database) as (url, name):
        config = {
            "n": n,
            "speedup": speedup,
            "rounds": rounds,
            "database_url": url,
            "admin_url": admin_url,
            "database": name,
            "prometheus_url": prometheus_url,
            "log_file": str(log_dir / f"controller-{n}.log"),
        }
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "bench.scale_controller", json.dumps(config)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the controller process for N={n} failed ({done.returncode})")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["process_wall_s"] = time.perf_counter() - started
        return result


def growth(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Each figure of GROWTH at each N divided by its value at the smallest N."""
    base = results[0]
    out: dict[str, dict[str, float | None]] = {}
    for r in results:
        ratios: dict[str, float | None] = {"n": r["n"] / base["n"]}
        for key in GROWTH:
            value, reference = r.get(key), base.get(key)
            ratios[key] = value / reference if value is not None and reference else None
        out[str(r["n"])] = ratios
    return out


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


def markdown(report: dict[str, Any]) -> str:
    """The results as the tables of docs/benchmarks.md quote them."""
    results = report["results"]
    m = report["machine"]
    lines = [
        "# Scale benchmark",
        "",
        f"Run {report['finished_at']} ({'quick' if report['quick'] else 'full'}), "
        f"{report['runtime_s']:.0f} s; {m['cpus']} CPUs ({m['cpu_model']}), "
        f"Python {m['python']}, Postgres {report['postgres']}; "
        f"load average at start {m['loadavg_at_start'][0]:.2f}.",
        f"Interval 30 s compressed x{report['speedup']:g} "
        f"({results[0]['interval_s']:g} s), {report['rounds']} measured intervals per N.",
        "",
        "| N | rollouts ticked | ticks | ticks/s | coverage | each rollout every s "
        "| missed | tick p50 ms | tick p99 ms | start late p99 s | CPU ms/tick "
        "| core share at 30 s | queries/tick | DB writes/tick (by sync) "
        "| rows written/tick | RSS steady MiB | RSS peak MiB | longest sync s "
        "| leases expired | first round s |",
        "|" + "---:|" * 20,
    ]
    for r in results:
        cpu_ms = r["cpu_s_per_tick"] * 1000 if r["cpu_s_per_tick"] is not None else None
        lines.append(
            f"| {r['n']} | {r['rollouts_ticked_in_window']} | {r['ticks']} "
            f"| {r['ticks_per_s']:.1f} | {r['coverage']:.0%} "
            f"| {_num(r['effective_interval_s'], 0)} | {r['missed_ticks']} "
            f"| {_num(r['tick_latency_p50_ms'], 0)} | {_num(r['tick_latency_p99_ms'], 0)} "
            f"| {_num((r['start_late_p99_ms'] or 0) / 1000)} "
            f"| {_num(cpu_ms)} | {_num(r['cpu_share_at_30s'], 2)} "
            f"| {_num(r['queries_per_tick'])} | {_num(r['db_writes_per_tick'])} "
            f"({_num(r['db_sync_writes_per_tick'])}) "
            f"| {_num(r['db_rows_written_per_tick'])} | {_num(r['rss_steady_mib'], 0)} "
            f"| {_num(r['rss_peak_mib'], 0)} | {_num(r['sync_s_max_in_run'])} "
            f"| {r['leases_expired_at_end']} "
            f"| {_num(r['first_round_s'])} |"
        )
    lines += [
        "",
        "Growth relative to the smallest N (1.0 = unchanged):",
        "",
        "| N | N ratio | " + " | ".join(GROWTH) + " |",
        "|---:|---:|" + "---:|" * len(GROWTH),
    ]
    for n, ratios in report["growth"].items():
        cells = " | ".join(_num(ratios[k], 2) for k in GROWTH)
        lines.append(f"| {n} | {_num(ratios['n'], 0)} | {cells} |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="One controller, N concurrent rollouts: latency, CPU, memory, queries, writes."
    )
    parser.add_argument("--quick", action="store_true", help="N=5,20, a few ticks (smoke run)")
    parser.add_argument("--sizes", help="comma-separated N (default 100,1000,5000)")
    parser.add_argument("--speedup", type=float, help="time compression of the 30 s interval")
    parser.add_argument("--rounds", type=int, help="measured intervals per N")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the results")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the databases")
    parser.add_argument("--render", type=Path, help="only rewrite the .md of this results JSON")
    args = parser.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    sizes = (
        tuple(int(s) for s in args.sizes.split(","))
        if args.sizes
        else (QUICK_SIZES if args.quick else FULL_SIZES)
    )
    speedup = args.speedup or (30.0 if args.quick else 1.0)
    rounds = args.rounds or (2 if args.quick else 3)
    admin_url = os.environ.get(DATABASE_URL_VARIABLE, DEFAULT_DATABASE_URL)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "scale",
        "quick": args.quick,
        "speedup": speedup,
        "rounds": rounds,
        "sizes": list(sizes),
        "machine": machine(),
        "postgres": postgres_version(admin_url),
    }
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="canary-bench-scale-") as logs,
        prometheus_server(speedup) as (prometheus_url, prometheus_pid),
    ):
        progress(f"stand-in Prometheus at {prometheus_url}; sizes {list(sizes)}")
        for n in sizes:
            server_cpu = process_cpu_seconds(prometheus_pid)
            result = run_size(
                n,
                speedup=speedup,
                rounds=rounds,
                admin_url=admin_url,
                prometheus_url=prometheus_url,
                log_dir=Path(logs),
                keep_database=args.keep_database,
            )
            result["prometheus_server_cpu_s"] = process_cpu_seconds(prometheus_pid) - server_cpu
            results.append(result)
            progress(
                f"N={n}: {result['ticks']} ticks, p50 {_num(result['tick_latency_p50_ms'])} ms, "
                f"p99 {_num(result['tick_latency_p99_ms'])} ms, "
                f"{_num((result['cpu_s_per_tick'] or 0) * 1000)} CPU ms/tick, "
                f"coverage {result['coverage']:.0%}, RSS {result['rss_steady_mib']:.0f} MiB"
            )
    report["results"] = results
    report["growth"] = growth(results)
    report["runtime_s"] = time.perf_counter() - started
    report["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    stem = "scale-quick" if args.quick else "scale"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    progress(f"wrote {args.out / stem}.json and .md in {report['runtime_s']:.0f} s")
    if args.quick:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
