"""The scale benchmark still runs: `bench/scale.py --quick` end to end, on real Postgres.

A smoke run with tiny sizes (N=5 and N=20, two 1 s intervals each) to keep the
benchmark working; it checks the shape and the sanity of what it reports, never
how fast anything was.
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

ROOT = Path(__file__).parent.parent.parent


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("scale")
    done = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, DATABASE_URL_VARIABLE: admin_url()},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[scale] N=20: round 2/2" in done.stderr  # progress goes to stderr
    return json.loads(done.stdout), out


def test_the_quick_run_measures_every_size(quick_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick_run
    assert report["quick"] is True
    assert [r["n"] for r in report["results"]] == [5, 20]
    for r in report["results"]:
        assert r["ticks"] > 0
        assert r["rollouts_ticked"] == r["n"]
        assert 0 < r["tick_latency_p50_ms"] <= r["tick_latency_p99_ms"] <= r["tick_latency_max_ms"]
        assert r["cpu_s_per_tick"] > 0
        assert r["missed_ticks"] == 0
        # every look asks for 4 metrics x 2 versions; ticks at the window's edges blur it
        assert 4 <= r["queries_per_tick"] <= 12
        # a tick commits its state and its analyses, and the sync renews leases
        assert r["db_writes_per_tick"] >= 1
        assert r["db_rows_written_per_tick"] >= r["db_writes_per_tick"]
        assert r["db_statements_by_verb"]["SELECT"] > 0
        assert 0 < r["rss_start_mib"] <= r["rss_peak_mib"]
        assert r["rss_steady_mib"] <= r["rss_peak_mib"]
        assert set(r["phases"]) <= {"Shadowing", "Progressing"}
        assert r["syncs_in_run"] >= 1
        assert 0 <= r["leases_expired_at_end"] <= r["n"]


def test_growth_is_relative_to_the_smallest_size(quick_run: tuple[dict[str, Any], Path]) -> None:
    report, _ = quick_run
    assert report["growth"]["5"]["n"] == 1
    assert report["growth"]["20"]["n"] == 4
    assert all(v == 1 for v in report["growth"]["5"].values() if v is not None)


def test_json_and_markdown_are_written(quick_run: tuple[dict[str, Any], Path]) -> None:
    report, out = quick_run
    assert json.loads((out / "scale-quick.json").read_text()) == report
    table = (out / "scale-quick.md").read_text()
    assert "| N | rollouts ticked |" in table
    assert "\n| 5 | 5 |" in table and "\n| 20 | 20 |" in table
