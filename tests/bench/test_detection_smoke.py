"""The detection benchmark still runs, end to end, on tiny sizes (figures are not checked).

`make bench-detection` is not part of `make test`; this keeps it working: the
real engine and every baseline engine run on a few simulated streams, and the
output has the shape the issue asks for, with numbers in range.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import detection
from bench.detection_engines import ENGINE_NAMES


def test_a_tiny_quick_run_has_the_promised_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "--quick",
        "--aa-rollouts=2",
        "--rollouts=1",
        "--horizon-minutes=20",
        "--rates=100",
        "--workers=1",
        "--scenarios",
        "aa",
        "gross-errors",
        "refusal-all",
        "infra-noise",
        f"--out={tmp_path}",
    ]
    assert detection.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert set(printed) == {"engines", "oracle_detect_s"}
    assert set(printed["engines"]) == set(ENGINE_NAMES)
    regressions = {"gross-errors@100rps", "refusal-all@100rps"}
    assert set(printed["oracle_detect_s"]) == regressions
    for engine in printed["engines"].values():
        assert 0.0 <= engine["false_rollback_rate"] <= 1.0
        for figure in ("detect_median_s", "detect_p90_s", "miss_rate"):
            assert set(engine[figure]) == regressions
        for seconds in engine["detect_median_s"].values():
            assert seconds is None or 0 < seconds <= 20 * 60
    # the oracle is a floor: a gross failure needs a handful of requests
    assert 0 < printed["oracle_detect_s"]["gross-errors@100rps"] < 60
    assert printed["oracle_detect_s"]["refusal-all@100rps"] > 60
    # 20 % errors are caught by the real judge and engine
    assert printed["engines"]["ours"]["detect_median_s"]["gross-errors@100rps"] is not None
    written = json.loads((tmp_path / "detection-quick.json").read_text())
    ours = written["cells"]["ours"]["gross-errors@100rps"]
    assert ours["rolled_back"] == ours["rollouts"] == 1
    assert (tmp_path / "detection-quick.md").read_text().startswith("# Detection benchmark")
    assert (tmp_path / "detection-quick.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_wilson_interval_matches_its_formula() -> None:
    low, high = detection.wilson(0, 1000)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.00383, abs=1e-5)  # 1.96² / (1000 + 1.96²)
    low, high = detection.wilson(50, 100)
    assert (low, high) == pytest.approx((0.4038, 0.5962), abs=1e-4)


def test_the_oracle_reproduces_the_issue_anchor() -> None:
    """5 % -> 7 % at alpha 0.05, power 0.8, one-sided: about 870 candidate requests."""
    needed, _ = detection.oracle_samples(detection.SCENARIO_BY_NAME["refusal-one-cohort"])
    assert needed == pytest.approx(870, rel=0.02)
