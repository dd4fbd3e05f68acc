"""The rollout planner: cohort shares, and the judge's own planning numbers per step.

The minutes themselves are checked against simulations of the judge in
`tests/analysis/test_statistical.py` (`plan_cell` at 20 req/s, 20 % weight, 16
tests); here a policy built to be exactly that cell must be planned with exactly
those numbers, and along the schedule too when the weight does not change.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest

from controller.analysis import Limit, estimators
from controller.analysis.planning import plan_cell
from controller.analysis.rollout_plan import (
    PlanInputError,
    Traffic,
    cohort_shares,
    plan_rollout,
)
from controller.policy import OVERALL, RolloutSpec, load_text
from tests.analysis.test_statistical import (
    LOOK_SECONDS,
    PLAN_BUDGET,
    PLAN_LOOKS,
    PLAN_RATE,
    PLAN_WEIGHT,
    REFUSALS_PLAN,
    healthy_decided,
)
from tests.policy.base import policy

COHORTS = [f"c{i}" for i in range(15)]  # 15 cohorts + overall: 16 tests, as PLAN_BUDGET


def _spec(*replacements: tuple[str, str]) -> RolloutSpec:
    return load_text(policy(*replacements))[0].rollout.spec


def test_cohorts_without_a_share_split_what_is_left_with_the_rest() -> None:
    assert cohort_shares(["a", "b", "c"], {}) == {"a": 0.25, "b": 0.25, "c": 0.25}
    shares = cohort_shares(["a", "b", "c"], {"a": 0.4})
    assert shares == pytest.approx({"a": 0.4, "b": 0.2, "c": 0.2})
    assert Traffic(10, shares).rest == pytest.approx(0.2)
    assert cohort_shares(["a", "b"], {"a": 0.5, "b": 0.5}) == {"a": 0.5, "b": 0.5}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"x": 0.2}, "no cohort 'x' in the policy"),
        ({"a": 0.7, "b": 0.6}, "add up to 1.3, more than 1"),
        ({"a": 1.0}, "leave no traffic for b"),
    ],
)
def test_shares_that_cannot_be_are_refused(given: dict[str, float], message: str) -> None:
    with pytest.raises(PlanInputError, match=message):
        cohort_shares(["a", "b"], given)


def _one_cell_spec() -> RolloutSpec:
    """16 cells of refusal-rate at 20 % from the start: the simulated `plan_cell`."""
    cohorts = "".join(f"    - {{name: {c}, match: {{header: x-c, value: {c}}}}}\n" for c in COHORTS)
    return _spec(
        (
            "    - {name: mobile, match: {header: x-client, value: mobile}}\n"
            '    - {name: non-english, match: {header: accept-language, regex: "^(de|fr)"}}\n',
            cohorts,
        ),
        ("{weight: 5, hold: 10m, cohortWeights: {mobile: 10}}", "{weight: 20, hold: 10m}"),
        ("    - {weight: 50, hold: 10m}\n", ""),
        ("    window: 5m\n", "    window: 5m\n    minSamples: 1\n"),
        ("      - {template: error-rate, max: 0.01}\n", ""),
    )


def test_the_plan_is_the_judges_simulated_plan_cell() -> None:
    spec = _one_cell_spec()
    traffic = Traffic(PLAN_RATE * 16, cohort_shares(COHORTS, {}))
    plan = plan_rollout(spec, traffic)
    assert plan.tests == PLAN_BUDGET.tests
    expected = plan_cell(REFUSALS_PLAN, PLAN_RATE, PLAN_WEIGHT, PLAN_BUDGET, 1)
    [row] = [r for r in plan.rows if r.cohort == "c0"]
    assert (row.requests_per_second, row.weight) == (PLAN_RATE, PLAN_WEIGHT)
    assert row.healthy == pytest.approx(expected.healthy)
    assert row.at_limit == pytest.approx(expected.at_limit)
    assert row.powered == pytest.approx(expected.powered)
    # one weight from the start: the schedule's times are the same numbers
    [cell] = [c for c in plan.cells if c.cohort == "c0"]
    assert cell.healthy == pytest.approx(expected.healthy)
    assert cell.at_limit == pytest.approx(expected.at_limit)
    assert cell.powered == pytest.approx(expected.powered)
    # a healthy candidate decides within the 10-minute hold: promoted when it ends
    assert expected.healthy[1] < 10
    assert plan.promotion == (10.0, 10.0)
    assert plan.warnings == ()


def test_a_sampled_metric_is_planned_on_its_samples_as_simulated() -> None:
    """A metric carried by a tenth of the requests (a judge scoring 10 %), at ten times
    the request rate: each request is drawn, then whether it carries a sample. Told the
    sample share, the plan predicts the simulated time to decide; told nothing, it
    plans with ten times the samples and is several times too quick."""
    share, rate = 0.1, PLAN_RATE * 10
    spec = _one_cell_spec()
    sampled = plan_rollout(
        spec, Traffic(rate * 16, cohort_shares(COHORTS, {}), sample_shares={"refusal-rate": share})
    )
    naive = plan_rollout(spec, Traffic(rate * 16, cohort_shares(COHORTS, {})))
    [row] = [r for r in sampled.rows if r.cohort == "c0"]
    [naive_row] = [r for r in naive.rows if r.cohort == "c0"]
    rng = np.random.default_rng(11)
    requests = rng.poisson(rate * LOOK_SECONDS, size=(4000, PLAN_LOOKS))
    samples = rng.binomial(requests, share)
    nc = rng.binomial(samples, PLAN_WEIGHT)
    nb = samples - nc
    c = estimators.relative_contrast(
        rng.binomial(nc, 0.05).cumsum(axis=1)[..., None],
        nc.cumsum(axis=1)[..., None],
        rng.binomial(nb, 0.05).cumsum(axis=1)[..., None],
        nb.cumsum(axis=1)[..., None],
        Limit.MAX_INCREASE,
        0.02,
    )
    minutes = healthy_decided(c)
    simulated = (float(np.median(minutes)), float(np.percentile(minutes, 80)))
    assert simulated[0] == pytest.approx(row.healthy[0], rel=0.25)
    assert simulated[1] == pytest.approx(row.healthy[1], rel=0.25)
    assert naive_row.healthy[0] < simulated[0] / 4


def test_earlier_steps_count_towards_later_ones() -> None:
    """Counts are cumulative: a cell decides sooner along the schedule than a later
    step's weight alone would take from the start, and never before the first step's."""
    spec = _spec()
    plan = plan_rollout(spec, Traffic(3, cohort_shares(["mobile", "non-english"], {})))
    rows = {(r.period, r.cohort, r.metric): r for r in plan.rows}
    step_1_ends = plan.period_ends[0][3]  # at the 80th percentile: minSamples in mobile
    assert step_1_ends > 10
    for cell in plan.cells:
        first = rows["step 1: 5%", cell.cohort, cell.metric]
        second = rows["step 2: 50%", cell.cohort, cell.metric]
        assert cell.healthy[1] <= first.healthy[1]
        if cell.healthy[1] > step_1_ends:  # decided in step 2, helped by step 1's samples
            assert cell.healthy[1] < step_1_ends + second.healthy[1]


def test_advance_on_hold_ends_a_step_with_its_hold() -> None:
    """Below minSamples, `no-failure` waits beyond the hold and the warning says what
    to do; `hold` ends the step with its hold, and 100 % still waits for decisions."""
    traffic = Traffic(3, cohort_shares(["mobile", "non-english"], {}))
    waiting = plan_rollout(_spec(), traffic)
    [warning] = [w for w in waiting.warnings if w.startswith("step 1: 5%")]
    assert "shorter than the time to reach minSamples in every cell" in warning
    assert warning.endswith(
        "remedies: a shadow phase, cohortWeights for the small cohorts, a longer hold, "
        "or advanceOn: hold"
    )
    held = plan_rollout(
        _spec(("    window: 5m\n", "    window: 5m\n    advanceOn: hold\n")), traffic
    )
    assert held.period_ends[0][2:] == (10.0, 10.0)
    assert not any(w.startswith("step 1: 5%") for w in held.warnings)
    assert held.period_ends[1][3] > held.period_ends[0][3] + 10  # 100 % waits for decisions
    assert held.promotion[0] <= waiting.promotion[0]


def test_a_cohort_with_no_candidate_traffic_never_decides() -> None:
    spec = _spec(("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 0}"))
    spec = spec.model_copy(
        update={
            "steps": [
                s.model_copy(update={"cohort_weights": {"mobile": 0}}) for s in spec.steps[:2]
            ]
            + [spec.steps[2]]
        }
    )
    plan = plan_rollout(spec, Traffic(50, cohort_shares(["mobile", "non-english"], {})))
    mobile = [c for c in plan.cells if c.cohort == "mobile"]
    assert all(c.healthy == (math.inf, math.inf) for c in mobile)
    assert plan.promotion == (math.inf, math.inf)
    assert any(w.startswith("cohort mobile cannot decide") for w in plan.warnings)
    assert all(c.healthy[1] < math.inf for c in plan.cells if c.cohort == OVERALL)
    assert plan.deadline == timedelta(minutes=40)
