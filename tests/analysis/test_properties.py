"""Properties: more evidence of harm never makes a verdict kinder.

"Goodness" orders the verdicts FAIL < INCONCLUSIVE < PASS. Adding failures to
the candidate (or successes to the baseline it is compared with) may only move
a verdict down that order; removing them only up. In particular more failures
never turn a FAIL into a PASS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.analysis import Histogram, Verdict, estimators
from controller.analysis.verdicts import Limit
from controller.policy import OVERALL
from tests.analysis.cases import metric, p, run

GOODNESS = {Verdict.FAIL: 0, Verdict.INCONCLUSIVE: 1, Verdict.PASS: 2}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def goodness(result_verdict: Verdict) -> int:
    assert result_verdict in GOODNESS, result_verdict
    return GOODNESS[result_verdict]


@st.composite
def counts(draw: st.DrawFn, max_trials: int = 60_000) -> tuple[int, int, int]:
    """(fewer events, more events, trials) for the same candidate traffic."""
    trials = draw(st.integers(min_value=1, max_value=max_trials))
    a = draw(st.integers(min_value=0, max_value=trials))
    b = draw(st.integers(min_value=0, max_value=trials))
    return min(a, b), max(a, b), trials


@SETTINGS
@given(counts(), st.floats(min_value=0.001, max_value=0.3), st.sampled_from([20, 200, 1000]))
def test_more_errors_never_help_against_a_max(
    c: tuple[int, int, int], limit: float, min_samples: int
) -> None:
    fewer, more, trials = c
    spec = metric(template="error-rate", max=limit)

    def verdict(events: int) -> Verdict:
        result = run(spec, {}, {"all": p(events, trials)}, min_samples=min_samples)
        return result.cell("error-rate", OVERALL).verdict

    assert goodness(verdict(more)) <= goodness(verdict(fewer))


@SETTINGS
@given(
    counts(),
    st.integers(min_value=200, max_value=200_000),
    st.floats(min_value=0.0, max_value=0.5),
    st.floats(min_value=0.0, max_value=0.1),
    st.sampled_from(["maxIncrease", "maxRatio"]),
)
def test_more_refusals_never_help_against_the_baseline(
    c: tuple[int, int, int], base_trials: int, base_rate: float, margin: float, rule: str
) -> None:
    fewer, more, trials = c
    value = margin if rule == "maxIncrease" else 1.0 + 10 * margin
    spec = metric(template="refusal-rate", **{rule: value})
    baseline = {"all": p(math.floor(base_rate * base_trials), base_trials)}

    def verdict(events: int) -> Verdict:
        result = run(spec, baseline, {"all": p(events, trials)})
        return result.cell("refusal-rate", OVERALL).verdict

    assert goodness(verdict(more)) <= goodness(verdict(fewer))


@SETTINGS
@given(
    st.integers(min_value=200, max_value=50_000),
    st.integers(min_value=0, max_value=50_000),
    st.integers(min_value=0, max_value=50_000),
    st.integers(min_value=200, max_value=50_000),
    st.floats(min_value=0.0, max_value=0.1),
)
def test_a_worse_baseline_never_hurts_the_candidate(
    base_trials: int, b1: int, b2: int, trials: int, margin: float
) -> None:
    low, high = sorted((min(b1, base_trials), min(b2, base_trials)))
    spec = metric(template="refusal-rate", maxIncrease=margin)
    candidate = {"all": p(trials // 20, trials)}

    def verdict(base_events: int) -> Verdict:
        result = run(spec, {"all": p(base_events, base_trials)}, candidate)
        return result.cell("refusal-rate", OVERALL).verdict

    assert goodness(verdict(high)) >= goodness(verdict(low))


@SETTINGS
@given(
    st.lists(st.integers(min_value=0, max_value=3_000), min_size=5, max_size=5),
    st.integers(min_value=0, max_value=4),
    st.integers(min_value=1, max_value=3_000),
    st.sampled_from([0.5, 1.0, 2.5, 4.0]),
)
def test_slower_requests_never_help_a_latency_tail(
    per_bucket: list[int], source: int, moved: int, limit: float
) -> None:
    bounds = (0.5, 1.0, 2.5, 4.0, math.inf)

    def histogram(counts: list[int]) -> Histogram:
        cumulative = tuple(float(sum(counts[: i + 1])) for i in range(len(counts)))
        return Histogram(bounds, cumulative)

    moved = min(moved, per_bucket[source])
    slower = list(per_bucket)
    slower[source] -= moved
    slower[-1] += moved  # the same requests, now slower than every bucket
    spec = metric(template="latency-p95", max=limit)

    def verdict(counts: list[int]) -> Verdict:
        if sum(counts) == 0:
            return Verdict.INCONCLUSIVE
        result = run(spec, {}, {"all": histogram(counts)}, min_samples=20)
        return result.cell("latency-p95", OVERALL).verdict

    assert goodness(verdict(slower)) <= goodness(verdict(per_bucket))


@SETTINGS
@given(
    counts(max_trials=20_000),
    st.integers(min_value=0, max_value=20_000),
    st.integers(min_value=1, max_value=20_000),
)
def test_more_errors_in_one_cohort_never_help_overall(
    c: tuple[int, int, int], other_events: int, other_trials: int
) -> None:
    fewer, more, trials = c
    other = p(min(other_events, other_trials), other_trials)
    spec = metric(template="error-rate", max=0.05)
    baseline = {"a": p(50, 10_000), "b": p(50, 10_000)}

    def verdict(events: int) -> Verdict:
        result = run(spec, baseline, {"a": p(events, trials), "b": other}, cohorts=["a", "b"])
        return result.cell("error-rate", OVERALL).verdict

    assert goodness(verdict(more)) <= goodness(verdict(fewer))


@SETTINGS
@given(counts(), st.floats(min_value=0.5, max_value=0.99))
def test_more_successes_never_hurt_against_a_min(c: tuple[int, int, int], limit: float) -> None:
    fewer, more, trials = c
    spec = metric(
        name="success",
        kind="proportion",
        query='ok_total{version="{{version}}"}',
        trials='all_total{version="{{version}}"}',
        min=limit,
    )

    def verdict(events: int) -> Verdict:
        return run(spec, {}, {"all": p(events, trials)}).cell("success", OVERALL).verdict

    assert goodness(verdict(more)) >= goodness(verdict(fewer))


def assert_same_bits(one: estimators.Contrast, rows: estimators.Contrast) -> None:
    """A contrast on floats has the bits of the first row of the array form's."""
    for got, expected in zip(
        (one.estimate, one.variance, one.tau), (rows.estimate, rows.variance, rows.tau), strict=True
    ):
        assert float(got).hex() == float(expected[0]).hex()


@pytest.mark.parametrize("rule", [Limit.MAX_INCREASE, Limit.MAX_DECREASE, Limit.MAX_RATIO])
def test_one_cohorts_contrast_on_floats_gives_the_array_forms_bits(rule: Limit) -> None:
    """A cohort's cell (its few steps) is weighed and contrasted on floats; the same
    counts as a one-row batch take the array path: both give the same bits."""
    rng = np.random.default_rng(19)
    margin = {Limit.MAX_INCREASE: 0.02, Limit.MAX_DECREASE: 0.015, Limit.MAX_RATIO: 1.15}[rule]
    for _ in range(400):
        k = int(rng.integers(1, 8))
        n_c = rng.integers(0, 3000, k) * rng.choice([1.0, 0.5], k)
        n_b = rng.integers(0, 9000, k) * rng.choice([1.0, 0.5], k)
        s_c, s_b = n_c * rng.uniform(0, 0.3, k), n_b * rng.uniform(0, 0.3, k)
        groups = np.zeros(k, dtype=int)
        for both in (True, False):
            one = estimators.population_weights(n_c, n_b, both=both, groups=groups)
            rows = estimators.population_weights(n_c[None], n_b[None], both=both, groups=groups)
            assert [x.hex() for x in one.tolist()] == [x.hex() for x in rows[0].tolist()]
        for variances in (None, (rng.uniform(0, 0.25, k), rng.uniform(0, 0.25, k))):
            var_c, var_b = variances or (None, None)
            args = (rule, margin)
            one_c = estimators.relative_contrast(
                s_c, n_c, s_b, n_b, *args, variance_c=var_c, variance_b=var_b, groups=groups
            )
            rows_c = estimators.relative_contrast(
                s_c[None],
                n_c[None],
                s_b[None],
                n_b[None],
                *args,
                variance_c=None if var_c is None else var_c[None],
                variance_b=None if var_b is None else var_b[None],
                groups=groups,
            )
            assert_same_bits(one_c, rows_c)


def test_one_looks_exceedance_contrast_on_floats_gives_the_array_forms_bits() -> None:
    rng = np.random.default_rng(23)
    for _ in range(400):
        k = int(rng.integers(1, 50))
        n_c = rng.integers(0, 3000, k) * rng.choice([1.0, 0.5], k)
        above = n_c * rng.uniform(0, 0.2, k)
        weights = rng.uniform(0, 1, k)
        null_c = None if rng.uniform() < 0.5 else rng.uniform(0, 0.2, k)
        samples = None if rng.uniform() < 0.5 else float(rng.integers(0, 5000))
        for fail_above in (True, False):
            one = estimators.exceedance_contrast(
                above,
                n_c,
                weights,
                0.05,
                fail_above=fail_above,
                null_c=null_c,
                baseline_samples=samples,
            )
            rows = estimators.exceedance_contrast(
                above[None],
                n_c[None],
                weights[None],
                0.05,
                fail_above=fail_above,
                null_c=None if null_c is None else null_c[None],
                baseline_samples=samples,
            )
            assert_same_bits(one, rows)


def test_one_looks_absolute_contrast_on_floats_gives_the_array_forms_bits() -> None:
    rng = np.random.default_rng(29)
    for _ in range(400):
        k = int(rng.integers(1, 50))
        n_c = rng.integers(0, 3000, k) * rng.choice([1.0, 0.5], k)
        s_c = n_c * rng.uniform(0, 1, k)
        weights = rng.uniform(0, 1, k)
        variance_c = None if rng.uniform() < 0.5 else rng.uniform(0, 0.25, k)
        null_rates = None if rng.uniform() < 0.5 else rng.uniform(0, 1, k)
        for fail_above in (True, False):
            one = estimators.absolute_contrast(
                s_c,
                n_c,
                weights,
                0.7,
                fail_above=fail_above,
                variance_c=variance_c,
                null_rates=null_rates,
            )
            rows = estimators.absolute_contrast(
                s_c[None],
                n_c[None],
                weights[None],
                0.7,
                fail_above=fail_above,
                variance_c=None if variance_c is None else variance_c[None],
                null_rates=None if null_rates is None else null_rates[None],
            )
            assert_same_bits(one, rows)
