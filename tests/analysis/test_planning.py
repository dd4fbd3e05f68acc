"""Step-length planning: more traffic or more weight never makes a verdict slower."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from controller.analysis import planning
from controller.analysis.judge import Budget
from controller.analysis.planning import (
    Hypotheses,
    plan_cell,
    powered_samples,
    samples_to_fail,
    samples_to_pass,
)
from controller.analysis.verdicts import Limit

REFUSALS = Hypotheses(Limit.MAX_INCREASE, 0.02, baseline=0.05)
BUDGET = Budget(0.05, 16)


def test_more_traffic_and_more_weight_decide_sooner() -> None:
    weights = (0.01, 0.05, 0.2, 0.5)
    for rate in (1.0, 20.0, 500.0):
        healthy = [plan_cell(REFUSALS, rate, w, BUDGET).healthy[1] for w in weights]
        at_limit = [plan_cell(REFUSALS, rate, w, BUDGET).at_limit[1] for w in weights]
        assert healthy == sorted(healthy, reverse=True)
        assert at_limit == sorted(at_limit, reverse=True)
    assert (
        plan_cell(REFUSALS, 100, 0.2, BUDGET).healthy < plan_cell(REFUSALS, 10, 0.2, BUDGET).healthy
    )


def test_never_fewer_than_min_samples() -> None:
    huge = Hypotheses(Limit.MAX_INCREASE, 0.5, baseline=0.05)
    assert samples_to_pass(huge, 0.5, BUDGET, min_samples=1000).p80 == 1000


def test_a_healthy_candidate_decides_by_the_powered_information_at_the_latest() -> None:
    for weight in (0.01, 0.2, 0.5):
        powered = powered_samples(REFUSALS, weight, BUDGET)
        assert samples_to_pass(REFUSALS, weight, BUDGET).p80 <= powered
        # a candidate at the limit is caught with the power by then
        assert samples_to_fail(REFUSALS, weight, BUDGET).p80 <= powered


def test_a_limit_with_no_room_for_a_tolerance_is_never_planned() -> None:
    no_room = Hypotheses(Limit.MAX_INCREASE, 0.0, baseline=0.05)
    assert samples_to_fail(no_room, 0.2, BUDGET).median == math.inf
    assert samples_to_pass(no_room, 0.2, BUDGET).median == math.inf


def test_a_larger_family_needs_more_samples_to_fail() -> None:
    assert (
        samples_to_fail(REFUSALS, 0.2, Budget(0.05, 48)).median
        > samples_to_fail(REFUSALS, 0.2, Budget(0.05, 4)).median
    )


@pytest.mark.parametrize(
    ("h", "tolerance"),
    [
        pytest.param(REFUSALS, 0.01, id="maxIncrease-half"),
        pytest.param(Hypotheses(Limit.MAX_RATIO, 1.5, baseline=0.05), 1.25, id="maxRatio-half"),
        pytest.param(Hypotheses(Limit.MAX, 0.01, baseline=0.002), 0.006, id="max-from-baseline"),
        pytest.param(Hypotheses(Limit.MIN, 0.7, baseline=0.8), 0.75, id="min-from-baseline"),
    ],
)
def test_default_tolerances_are_the_judges(h: Hypotheses, tolerance: float) -> None:
    assert h.resolved_tolerance == pytest.approx(tolerance)


def test_weights_outside_0_and_1_are_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        samples_to_pass(REFUSALS, 1.0, BUDGET)


def test_the_documented_tables_are_the_computed_ones(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/judge.md shows what `python -m controller.analysis.planning` prints."""
    planning.main()
    out = capsys.readouterr().out
    assert out.count("| cohort traffic |") == 3
    doc = (Path(__file__).parents[2] / "docs" / "judge.md").read_text()
    for block in out.strip().split("\n\n"):
        assert block in doc, f"docs/judge.md is out of date; rerun the planning module:\n{block}"
