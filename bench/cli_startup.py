"""How long `canaryctl` takes to start: `--help`, `--version` and `validate` of one file.

    python -m bench.cli_startup            # 5 runs of each, medians
    python -m bench.cli_startup --runs 11

Each command is the installed `canaryctl` (next to this Python), started as a
whole process in an empty temporary directory, as a user types it; the figure is
its wall time, start-up included. `python -c pass` is the floor every Python
program pays, and each median is also given as a ratio to it. The goal is under
0.5 s for `--help` and `validate`: every command imports only what it needs, so
neither loads the engine, the judge, scipy, SQLAlchemy or Alembic.

Prints one line per command and, with `--json`, one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
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


def wall_seconds(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args(argv)
    medians: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as empty:
        for name, command in COMMANDS.items():
            wall_seconds(command, Path(empty))  # warm the file cache, not counted
            runs = [wall_seconds(command, Path(empty)) for _ in range(args.runs)]
            medians[name] = statistics.median(runs)
    floor = medians["python -c pass"]
    for name, median in medians.items():
        print(f"{name:<26} median {median:6.3f} s   {median / floor:5.1f} x python -c pass")
    if args.json:
        ratios = {name: round(m / floor, 2) for name, m in medians.items()}
        report = {"runs": args.runs, "median_seconds": medians, "ratio_to_python": ratios}
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
