"""Observation types: counts are validated, histograms read as Prometheus reads them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats  # type: ignore[import-untyped]

from controller.analysis import Gauge, Histogram, Proportion, VersionData
from controller.analysis.observations import numpy_sum
from controller.analysis.strata import sum_histograms

INF = math.inf
# 10 observations <= 0.5, 30 <= 1, 38 <= 2.5, 40 in all
LATENCY = Histogram((0.5, 1.0, 2.5, INF), (10.0, 30.0, 38.0, 40.0), sum=41.0)


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # rank 4 falls in the first bucket, which starts at 0: 0 + 0.5 * 4/10
        pytest.param(0.1, 0.2, id="first-bucket-starts-at-zero"),
        # rank 20 is half-way through (0.5, 1]: 10 of its 20 observations
        pytest.param(0.5, 0.75, id="interpolated-inside-bucket"),
        # rank 36 is 6/8 of the way through (1, 2.5]
        pytest.param(0.9, 1.0 + 1.5 * 6 / 8, id="upper-bucket"),
        # rank 39 lies in +Inf: Prometheus answers the largest finite bound
        pytest.param(0.975, 2.5, id="inf-bucket-gives-largest-bound"),
        pytest.param(0.75, 1.0 + 1.5 * 0 / 8, id="exactly-on-a-boundary"),
    ],
)
def test_quantile_matches_histogram_quantile(q: float, expected: float) -> None:
    assert LATENCY.quantile(q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("x", "at_or_below"),
    [
        pytest.param(-1.0, 0.0, id="below-everything"),
        pytest.param(0.25, 5.0, id="half-the-first-bucket"),
        pytest.param(1.0, 30.0, id="on-a-boundary-is-exact"),
        pytest.param(1.75, 34.0, id="interpolated"),
        pytest.param(2.5, 38.0, id="largest-finite-bound"),
        pytest.param(3.0, None, id="inside-inf-bucket-is-unknown"),
    ],
)
def test_count_at_or_below(x: float, at_or_below: float | None) -> None:
    assert LATENCY.count_at_or_below(x) == at_or_below
    above = LATENCY.count_above(x)
    assert above == (None if at_or_below is None else 40.0 - at_or_below)


def test_quantile_and_exceedance_agree() -> None:
    """q_p <= x exactly when at most (1 - p) of the observations are above x."""
    for p in (0.1, 0.3, 0.5, 0.8, 0.9):
        x = LATENCY.quantile(p)
        assert x is not None
        above = LATENCY.count_above(x)
        assert above is not None
        assert above / LATENCY.total == pytest.approx(1 - p)


def test_from_buckets_repairs_non_monotone_sums_and_adds_inf() -> None:
    h = Histogram.from_buckets({0.5: 4.0, 1.0: 3.0}, total=9.0, sum=6.0)
    assert h.bounds == (0.5, 1.0, INF)
    assert h.cumulative == (4.0, 4.0, 9.0)
    assert h.mean == pytest.approx(6.0 / 9.0)


def _histogram_of(values: list[float], bounds: tuple[float, ...]) -> Histogram:
    cumulative = tuple(float(sum(v <= b for v in values)) for b in bounds)
    return Histogram(bounds, cumulative, sum=sum(values))


TENTHS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, INF)
#: Sheppard's h²/12 for buckets 0.1 wide: how far grouping alone can move a variance
GROUPING = 0.1**2 / 12


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=0.5, max_value=60.0), st.floats(min_value=0.5, max_value=60.0))
def test_score_variance_is_close_to_a_beta_distributions_own(a: float, b: float) -> None:
    cdf = stats.beta.cdf(np.array(TENTHS[:-1]), a, b)
    n = 100_000.0
    h = Histogram(TENTHS, (*(float(n * c) for c in cdf), n), sum=n * a / (a + b))
    true = float(stats.beta.var(a, b))
    estimate = h.score_variance()
    assert estimate is not None
    assert abs(estimate - true) <= 0.1 * true + GROUPING, (a, b, estimate, true)


def test_score_variance_of_a_mean_of_080_is_not_inflated() -> None:
    # Beta(8, 2): mean 0.8, variance 0.0145; the bucket tops gave 0.097
    cdf = stats.beta.cdf(np.array(TENTHS[:-1]), 8, 2)
    h = Histogram(TENTHS, (*(float(1000 * c) for c in cdf), 1000.0), sum=800.0)
    assert h.score_variance() == pytest.approx(stats.beta.var(8, 2), rel=0.05)


def test_score_variance_of_uniform_scores() -> None:
    # A flat density ends abruptly at 0 and 1: the end buckets are placed at the
    # ends, which overstates the spread a little (never understates it).
    values = [(i + 0.5) / 1000 for i in range(1000)]
    estimate = _histogram_of(values, TENTHS).score_variance()
    assert estimate is not None
    assert 1 / 12 <= estimate <= 1 / 12 * 1.1 + GROUPING


@pytest.mark.parametrize(
    "values",
    [
        pytest.param([0.83] * 50, id="one-point"),
        pytest.param([1.0] * 50, id="all-perfect"),
        pytest.param([0.0] * 50, id="all-zero"),
        pytest.param([0.15] * 25 + [0.85] * 25, id="two-points"),
        pytest.param([0.0] * 10 + [1.0] * 40, id="both-ends"),
    ],
)
def test_score_variance_of_point_masses(values: list[float]) -> None:
    true = float(np.var(values))
    estimate = _histogram_of(values, TENTHS).score_variance()
    assert estimate is not None
    assert abs(estimate - true) <= GROUPING


def test_score_variance_never_exceeds_what_the_mean_allows() -> None:
    h = _histogram_of([0.05, 0.95], (0.5, INF))
    estimate = h.score_variance()
    assert estimate is not None
    assert estimate <= 0.5 * 0.5


def test_empty_histogram_has_no_quantile_or_mean() -> None:
    h = Histogram((1.0, INF), (0.0, 0.0), sum=0.0)
    assert h.quantile(0.5) is None
    assert h.mean is None


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: Proportion(5, 4), id="events-above-trials"),
        pytest.param(lambda: Proportion(-1, 4), id="negative-events"),
        pytest.param(lambda: Proportion(1, math.nan), id="nan-trials"),
        pytest.param(lambda: Histogram((1.0, 2.0), (1.0, 2.0)), id="no-inf-bucket"),
        pytest.param(lambda: Histogram((INF,), (1.0,)), id="no-finite-bucket"),
        pytest.param(lambda: Histogram((2.0, 1.0, INF), (1.0, 1.0, 1.0)), id="bounds-decrease"),
        pytest.param(lambda: Histogram((1.0, INF), (3.0, 2.0)), id="counts-decrease"),
        pytest.param(lambda: Gauge(math.inf), id="infinite-gauge"),
    ],
)
def test_invalid_observations_are_refused(build: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        build()  # type: ignore[operator]


def test_histograms_add_bucketwise_only_with_the_same_layout() -> None:
    total = LATENCY + LATENCY
    assert total.cumulative == (20.0, 60.0, 76.0, 80.0)
    assert total.sum == 82.0
    with pytest.raises(ValueError, match="different buckets"):
        LATENCY + Histogram((1.0, INF), (1.0, 1.0))


def test_version_data_is_read_only() -> None:
    data = VersionData({"mobile": Proportion(1, 10)})
    with pytest.raises(TypeError):
        data.by_cohort["mobile"] = Proportion(2, 10)  # type: ignore[index]


def test_counts_since_an_earlier_look() -> None:
    assert Proportion(30, 1_000).since(Proportion(10, 400)) == Proportion(20, 600)
    # counts summed over restarted pods can wobble: never below zero
    assert Proportion(10, 400).since(Proportion(12, 401)) == Proportion(0, 0)
    later = Histogram((0.5, 1.0, INF), (15.0, 35.0, 45.0), sum=50.0)
    assert later.since(LATENCY_3) == Histogram((0.5, 1.0, INF), (5.0, 5.0, 5.0), sum=9.0)
    with pytest.raises(ValueError, match="different buckets"):
        later.since(LATENCY)


LATENCY_3 = Histogram((0.5, 1.0, INF), (10.0, 30.0, 40.0), sum=41.0)


def test_summing_histograms_at_once_gives_what_adding_them_one_by_one_does() -> None:
    rng = np.random.default_rng(5)
    bounds = (0.1, 0.25, 0.5, 1.0, 2.5, math.inf)
    for size in (1, 2, 3, 7, 15):
        histograms = [
            Histogram(
                bounds,
                tuple(np.cumsum(rng.uniform(0.0, 1e4, len(bounds))).tolist()),
                None if (size == 3 and i == 1) else float(rng.uniform(0.0, 1e4)),
            )
            for i in range(size)
        ]
        one_by_one = histograms[0]
        for h in histograms[1:]:
            one_by_one = one_by_one + h
        assert sum_histograms(histograms) == one_by_one  # exact: the same additions
    other = Histogram((0.5, math.inf), (1.0, 2.0), 1.0)
    assert isinstance(sum_histograms([histograms[0], other]), str)


def test_numpy_sum_adds_in_numpys_order() -> None:
    """`numpy_sum` gives `numpy.sum`'s bits at every length its pairwise scheme treats apart."""
    rng = np.random.default_rng(3)
    for n in [*range(0, 40), 127, 128, 129, 200, 300]:
        for _ in range(20):
            values = rng.random(n) * 10.0 ** rng.integers(-8, 8, n)
            assert numpy_sum(values.tolist()).hex() == float(np.sum(values)).hex()


def test_since_gives_the_bits_of_numpys_clip_and_running_maximum() -> None:
    """Per-step differences (plain floats) equal what numpy's maximum/accumulate give."""
    rng = np.random.default_rng(11)
    bounds = (0.1, 0.5, 1.0, 2.5, math.inf)
    for _ in range(500):
        later = np.cumsum(rng.integers(0, 50, 5) * rng.choice([1.0, 0.37], 5))
        earlier = np.cumsum(rng.integers(0, 50, 5) * rng.choice([1.0, 0.37], 5))
        got = Histogram(bounds, tuple(later.tolist()), 10.0).since(
            Histogram(bounds, tuple(earlier.tolist()), 4.0)
        )
        expected = np.maximum.accumulate(np.maximum(later - earlier, 0.0))
        assert [c.hex() for c in got.cumulative] == [float(c).hex() for c in expected]
        trials, events = float(later[-1]), float(later[-1] * rng.uniform())
        before_trials, before_events = float(earlier[-1]), float(earlier[-1] * rng.uniform())
        p = Proportion(events, trials).since(Proportion(before_events, before_trials))
        t = max(trials - before_trials, 0.0)
        assert (p.events, p.trials) == (min(max(events - before_events, 0.0), t), t)
