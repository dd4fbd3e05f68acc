"""Step-length planning: more traffic or more weight never makes a verdict slower."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from controller.analysis import planning
from controller.analysis.planning import Scenario, candidate_samples, minutes_to_verdict


def test_more_traffic_and_more_weight_decide_sooner() -> None:
    scenario = Scenario()
    weights = (0.01, 0.05, 0.2, 0.5)
    for rate in (1.0, 20.0, 500.0):
        minutes = [minutes_to_verdict(scenario, rate, w) for w in weights]
        assert minutes == sorted(minutes, reverse=True)
    assert minutes_to_verdict(scenario, 100, 0.2) < minutes_to_verdict(scenario, 10, 0.2)


def test_never_fewer_than_min_samples() -> None:
    huge = Scenario(max_increase=0.5, min_samples=1000)
    assert candidate_samples(huge, 0.5) == 1000


def test_a_candidate_on_the_limit_is_never_decided() -> None:
    on_limit = Scenario(true_increase=0.02)
    assert candidate_samples(on_limit, 0.2) == math.inf


def test_a_larger_budget_split_needs_more_samples() -> None:
    assert candidate_samples(Scenario(tests=48), 0.2) > candidate_samples(Scenario(tests=4), 0.2)


def test_weights_outside_0_and_1_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        candidate_samples(Scenario(), 1.0)


def test_the_documented_tables_are_the_computed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """The README shows what `python -m controller.analysis.planning` prints."""
    planning.main()
    out = capsys.readouterr().out
    assert out.count("| cohort traffic |") == 3
    doc = (Path(__file__).parents[2] / "README.md").read_text()
    for block in out.strip().split("\n\n"):
        assert block in doc, f"the README is out of date; rerun the planning module:\n{block}"
