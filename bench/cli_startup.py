"""How long `canaryctl` takes to start: `--help`, `--version` and `validate` of one file.

    python -m bench.cli_startup            # 5 runs of each, medians
    python -m bench.cli_startup --runs 11

Each command is the installed `canaryctl` (next to this Python), started as a
whole process in an empty temporary directory, as a user types it; the figures
are its wall time, start-up included, and its CPU time (user + system), which a
machine shared with other work inflates less. `python -c pass` is the floor
every Python program pays, and each wall median is also given as a ratio to it. The goal is under
0.5 s for `--help` and `validate`: every command imports only what it needs, so
neither loads the engine, the judge, scipy, SQLAlchemy or Alembic.

Prints one line per command and, with `--json`, one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies" / "nginx-basic.yaml"
CANARYCTL = str(Path(sys.executable).with_name("canaryctl"))

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "canaryctl --help": [CANARYCTL, "--help"],
    "canaryctl --version": [CANARYCTL, "--version"],
    "canaryctl validate FILE": [CANARYCTL, "validate", str(POLICY)],
}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def seconds(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of `command`."""
    cpu, started = _children_cpu(), time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args(argv)
    medians: dict[str, float] = {}
    cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as empty:
        for name, command in COMMANDS.items():
            seconds(command, Path(empty))  # warm the file cache, not counted
            runs = [seconds(command, Path(empty)) for _ in range(args.runs)]
            medians[name] = statistics.median(wall for wall, _ in runs)
            cpu[name] = statistics.median(used for _, used in runs)
    floor = medians["python -c pass"]
    for name, median in medians.items():
        print(
            f"{name:<26} median wall {median:6.3f} s  ({median / floor:5.1f} x python -c pass)"
            f"  cpu {cpu[name]:6.3f} s"
        )
    if args.json:
        ratios = {name: round(m / floor, 2) for name, m in medians.items()}
        report = {
            "runs": args.runs,
            "median_seconds": medians,
            "median_cpu_seconds": cpu,
            "ratio_to_python": ratios,
        }
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
