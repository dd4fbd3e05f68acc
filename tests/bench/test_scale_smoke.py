"""The scale benchmark still runs: `bench/scale.py --quick` end to end, on real Postgres,
at a tiny size (3 rollouts on one replica, 6 shared by two replica processes, one
measured interval), so that the quick path keeps working. It checks the shape and
the sanity of what it reports, never how fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.scale import DATABASE_URL_VARIABLE
from tests.databases import admin_url

pytestmark = pytest.mark.long(seconds=50)

ROOT = Path(__file__).parent.parent.parent
SUMMARY = {
    "one_replica": {"n", "look_every_p99_s", "cpu_ms_per_tick"},
    "replicas": {
        "k",
        "n",
        "share_min",
        "share_max",
        "leases_expired_while_held",
        "double_ticks",
        "failover_s",
    },
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    out = tmp_path_factory.mktemp("scale")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scale",
            "--quick",
            "--n=3",
            "--replicas=2",
            "--replicas-n=6",
            "--rounds=1",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, DATABASE_URL_VARIABLE: admin_url()},
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr, out


def test_the_run_ends_with_one_json_line_of_the_summary(quick_run: tuple[str, str, Path]) -> None:
    stdout, stderr, _ = quick_run
    last = json.loads(stdout.strip().splitlines()[-1])
    assert {k: set(v) for k, v in last.items()} == SUMMARY
    one, many = last["one_replica"], last["replicas"]
    assert one["n"] == 3 and one["cpu_ms_per_tick"] > 0 and one["look_every_p99_s"] > 0
    assert (many["k"], many["n"]) == (2, 6)
    assert 0 <= many["share_min"] <= many["share_max"] <= 1
    assert many["leases_expired_while_held"] >= 0 and many["double_ticks"] >= 0
    assert many["failover_s"] is not None  # the survivor took the killed one's rollouts
    assert "[scale] killed replica-" in stderr  # progress goes to stderr


def test_every_rollout_was_looked_at_and_the_shares_add_up(
    quick_run: tuple[str, str, Path],
) -> None:
    _, _, out = quick_run
    report: dict[str, Any] = json.loads((out / "scale-quick.json").read_text())
    one, many = report["one_replica"], report["replicas"]
    assert one["rollouts_ticked"] == 3
    # 4 metrics, each one query for both versions; blurred at the edges of the window
    assert 2 <= one["queries_per_tick"] <= 8
    assert one["db_statements_by_verb"]["SELECT"] > 0
    # a look's usual write is one statement in autocommit: counted as a write of the
    # row and its analysis rows, and as a commit
    assert one["db_statements_by_verb"]["WITH UPDATE+INSERT"] > 0
    assert one["db_rows_written_per_tick"] > 1 and one["db_commits_per_tick"] > 0.5
    assert sum(many["shares"].values()) == pytest.approx(1.0)
    assert 0 <= many["orphans_looked_at_again"] <= many["killed_held"]
    assert sum(many["held_after_failover"].values()) == 6


def test_json_and_markdown_are_written(quick_run: tuple[str, str, Path]) -> None:
    stdout, _, out = quick_run
    report = json.loads((out / "scale-quick.json").read_text())
    assert report["summary"] == json.loads(stdout.strip().splitlines()[-1])
    table = (out / "scale-quick.md").read_text()
    assert "## One replica" in table and "## 2 replicas (separate processes)" in table
