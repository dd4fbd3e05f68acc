"""The Slack actions benchmark still runs: `bench/slack_actions.py` with tiny sizes.

It checks the shape and the sanity of what it reports (every press answered
200, in both cases), never how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
QUICK = ("--presses", "5", "--stall", "0.1", "--json")


def test_the_benchmark_reports_both_cases() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.slack_actions", *QUICK],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *lines, last = done.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["store read 0 s", "store read 0.1 s"]
    report = json.loads(last)
    for case, stall in zip(report["cases"], (0.0, 0.1), strict=True):
        assert case["stallSeconds"] == stall
        assert case["presses"] == 5
        assert case["statuses"] == {"200": 5}
        assert 0 < case["medianMs"] <= case["p95Ms"] <= case["worstMs"]
