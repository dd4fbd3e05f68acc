"""The demo's incident, recorded in a real Prometheus, and `canaryctl backtest` over it.

`canaryctl demo` runs the cohort-regression scenario live on simulated traffic. This
records the same traffic (the demo's simulator, seed and cohorts; the candidate at
the even split the demo's simulator gives the shadow phase) for an hour, two hours
ago, backfills it into a Prometheus 2.x on a loopback port with promtool, and runs
`canaryctl backtest` with the demo's policy over that hour, as docs/policy.md shows.

    python -m bench.backtest_demo            # the timeline
    python -m bench.backtest_demo --json     # the JSON object

Needs Debian's `prometheus` package (`make prometheus`), for `prometheus` and `promtool`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.history import History, HistoryServer, backfill, minutes, record_simulator
from controller.demo import DEMO_POLICY, RPS, demo_rollout, scenario_cohorts
from controller.metrics.simulated import TrafficSimulator
from controller.scenarios import Scenario

SCRAPE = timedelta(seconds=15)
RECORDED = timedelta(hours=1)
CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))


def record_demo_incident(start: datetime, length: timedelta, seed: int = 7) -> History:
    """The demo's cohort-regression traffic from `start` for `length`, scraped every 15 s:
    the demo's simulator, cohorts and seed, with the candidate at the even split the
    demo's simulator gives the shadow phase (its first phase) from the first second."""
    rollout = demo_rollout()
    simulator = TrafficSimulator(
        model=rollout.spec.model,
        baseline=rollout.spec.baseline.version,
        candidate=rollout.spec.candidate.version,
        cohorts=scenario_cohorts(Scenario.COHORT_REGRESSION, rollout),
        requests_per_second=RPS,
        start=start,
        seed=seed,
        scrape_interval=SCRAPE,
    )
    simulator.set_weights(50)
    simulator.advance_to(start + length)
    instants = minutes(start, int(length / SCRAPE) + 1, SCRAPE)
    return record_simulator(simulator, start, rollout.metadata.namespace, instants)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the JSON object")
    parser.add_argument("--seed", type=int, default=7, help="the demo's seed")
    args = parser.parse_args()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - 2 * RECORDED
    began = time.perf_counter()
    history = record_demo_incident(start, RECORDED, args.seed)
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        backfill(history, root / "data")
        print(
            f"recorded {history.samples:,} samples (a scrape every 15s) of the demo's "
            f"cohort-regression traffic from {start:%Y-%m-%d %H:%M} UTC; backfilled in "
            f"{time.perf_counter() - began:.1f}s",
            file=sys.stderr,
        )
        server = HistoryServer(root, root / "data")
        try:
            policy = root / "demo-policy.yaml"
            policy.write_text(DEMO_POLICY)
            command = [
                "backtest",
                str(policy),
                "--from",
                f"{start:%Y-%m-%dT%H:%MZ}",
                "--to",
                f"{start + RECORDED:%Y-%m-%dT%H:%MZ}",
                "--prometheus",
                server.url,
                *(["--output", "json"] if args.json else []),
            ]
            print("$ canaryctl " + " ".join(command), file=sys.stderr)
            began = time.perf_counter()
            done = subprocess.run(
                [CANARYCTL, *command], capture_output=True, text=True, check=False
            )
            print(done.stdout, end="")
            print(done.stderr, end="", file=sys.stderr)
            print(f"(canaryctl took {time.perf_counter() - began:.1f}s)", file=sys.stderr)
        finally:
            server.stop()
    raise SystemExit(done.returncode)


if __name__ == "__main__":
    main()
