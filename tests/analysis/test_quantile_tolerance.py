"""A latency quantile at its tolerance, with buckets coarser than the tolerance.

The judge tests a quantile limit through the share of candidate requests
slower than a latency x, read off the candidate's buckets by linear
interpolation (as `histogram_quantile` does), and its tolerance through the
share that a candidate at the tolerance (the baseline scaled) would show there.
With the baseline's p95 just below a bucket bound and x inside the next, wide
bucket, both shares must be read the same way, or a candidate at its tolerance
looks most of the way to the limit and is rolled back far more often than the
budget allows.

The setting: the TTFT buckets of the metric contract, a log-normal latency of
median 0.25 s (p95 0.48 s, just below the 0.5 s bound) and `maxRatio: 1.15`
(default tolerance 1.075, so x = 0.56 s lies inside the 0.5-0.75 s bucket).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from controller.analysis import Histogram, Judgement, MetricObservation, VersionData, judge
from controller.analysis.verdicts import Verdict
from controller.metrics.simulated import TTFT_BUCKETS
from controller.policy import MetricSpec
from tests.analysis.cases import AT, analysis, metric

BOUNDS = (*TTFT_BUCKETS, math.inf)
MEDIAN, SIGMA = 0.25, 0.40
TTFT = metric(template="ttft-p95", maxRatio=1.15)
TOLERANCE = 1.075
ALPHA = 0.05


def probabilities(median: float, sigma: float = SIGMA, shift: float = 0.0) -> np.ndarray:
    """Bucket probabilities of a log-normal latency, moved right by `shift` seconds."""
    cdf = stats.lognorm.cdf(np.array(TTFT_BUCKETS) - shift, sigma, scale=median)
    return np.diff(np.concatenate(([0.0], cdf, [1.0])))


def histogram(counts: np.ndarray, median: float) -> Histogram:
    total = float(counts.sum())
    mean = median * math.exp(SIGMA * SIGMA / 2)
    return Histogram(BOUNDS, tuple(float(c) for c in np.cumsum(counts)), total * mean)


def judged(baseline: Histogram, candidate: Histogram, spec: MetricSpec = TTFT) -> Judgement:
    observations = {
        spec.metric_name: MetricObservation(
            spec.metric_name, VersionData({"fast": baseline}), VersionData({"fast": candidate})
        )
    }
    return judge(analysis(spec), ["fast"], observations, at=AT)


@pytest.mark.parametrize(
    ("spec", "at_tolerance", "at_limit"),
    [
        # the baseline scaled by the tolerance (1.075), and by the limit
        (TTFT, {"median": MEDIAN * TOLERANCE}, {"median": MEDIAN * 1.15}),
        # the baseline shifted by the tolerance (half of 0.1 s), and by the limit
        (
            metric(template="ttft-p95", maxIncrease=0.1),
            {"median": MEDIAN, "shift": 0.05},
            {"median": MEDIAN, "shift": 0.1},
        ),
    ],
    ids=["maxRatio", "maxIncrease"],
)
def test_a_candidate_at_the_tolerance_shows_evidence_for_the_tolerance(
    spec: MetricSpec, at_tolerance: dict[str, float], at_limit: dict[str, float]
) -> None:
    """Noise-free counts of the baseline moved onto the tolerance: FAIL's evidence is against."""
    n = 200_000.0
    baseline = histogram(n * probabilities(MEDIAN), MEDIAN)
    candidate = histogram(n * probabilities(**at_tolerance), MEDIAN)
    cell = judged(baseline, candidate, spec).cell(spec.metric_name, "fast")
    [check] = cell.checks
    assert check.verdict is not Verdict.FAIL
    # At the tolerance the SPRT's log ratio is -delta^2 I / 2: clearly negative (it was
    # +63 for maxRatio and +140 for maxIncrease when the tolerance's share was misread).
    assert check.log_e_fail is not None and check.log_e_fail < -5.0, check
    # while a candidate at the limit fails on as many requests
    limit_cell = judged(baseline, histogram(n * probabilities(**at_limit), MEDIAN), spec)
    assert limit_cell.cell(spec.metric_name, "fast").verdict is Verdict.FAIL


def test_candidates_at_the_tolerance_are_rarely_rolled_back_over_many_looks() -> None:
    """Seeded: 60 rollouts of 60 one-minute looks at 3 req/s per version, cumulative counts."""
    rng = np.random.default_rng(20261206)
    rollouts, looks, per_look = 60, 60, 180
    p_b, p_c = probabilities(MEDIAN), probabilities(MEDIAN * TOLERANCE)
    failed = 0
    for _ in range(rollouts):
        counts_b = np.zeros(len(BOUNDS))
        counts_c = np.zeros(len(BOUNDS))
        for _ in range(looks):
            counts_b += rng.multinomial(per_look, p_b)
            counts_c += rng.multinomial(per_look, p_c)
            result = judged(histogram(counts_b, MEDIAN), histogram(counts_c, MEDIAN * TOLERANCE))
            if result.verdict is Verdict.FAIL:
                failed += 1
                break
    # the budget is 5 %: the count must be consistent with it (before the shares were read
    # alike, most of these rollouts failed)
    low = _wilson_low(failed, rollouts)
    assert low <= ALPHA, f"{failed} of {rollouts} rolled back (Wilson lower bound {low:.3f})"


def _wilson_low(hits: int, n: int, z: float = 1.96) -> float:
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half
