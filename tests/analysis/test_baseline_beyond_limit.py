"""A `max` limit whose baseline is measured beyond it: the tolerance must not jump.

The default tolerance of `max: L` is halfway from the baseline's value b to L.
The judge only has b's estimate from the same looks, and a p95 read off a few
hundred requests scatters widely. The demo policy's `latency-p95` has
`max: 2.5s`; a healthy candidate (the same log-normal as the baseline, median
1.0 s, sigma 0.5: p95 2.28 s, 3.34 % of requests slower than 2.5 s) in a
cohort whose baseline was measured at 2.54 s once got the tolerance L/2 =
1.25 s (the fallback for a baseline "already beyond the limit"), so its
3.08 % of slow requests was a gross excess over the ~0.1 % a p95 of 1.25 s
would have: rolled back at the first look, about a quarter of the time.

The tolerance is now half the baseline's distance from the limit on the
healthy side of the limit, whichever side the baseline was measured on: it
tends to L as the estimate crosses it, from both sides.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from controller.analysis import Histogram, Judgement, MetricObservation, VersionData, judge
from controller.analysis.verdicts import Limit, Verdict
from controller.demo import demo_rollout
from controller.metrics.simulated import LATENCY_BUCKETS

AT = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
BOUNDS = (*LATENCY_BUCKETS, math.inf)
ROLLOUT = demo_rollout()
ANALYSIS = ROLLOUT.spec.analysis
SPEC = next(m for m in ANALYSIS.metrics if m.template == "latency-p95")
COHORTS = [c.name for c in ROLLOUT.spec.cohorts]
CELLS = [*COHORTS, "other"]
ALPHA = 1.0 - ANALYSIS.confidence


def histogram(per_bucket: list[float]) -> Histogram:
    """Per-bucket counts (LATENCY_BUCKETS, then +Inf); the sum puts each at its bucket's top."""
    tops = [*LATENCY_BUCKETS, LATENCY_BUCKETS[-1]]
    total = sum(c * t for c, t in zip(per_bucket, tops, strict=True))
    return Histogram(BOUNDS, tuple(float(c) for c in np.cumsum(per_bucket)), total)


def judged(baseline: dict[str, Histogram], candidate: dict[str, Histogram]) -> Judgement:
    """The whole demo analysis (its FAIL family), with only latency-p95 observed."""
    observation = MetricObservation(SPEC.metric_name, VersionData(baseline), VersionData(candidate))
    return judge(ANALYSIS, COHORTS, {SPEC.metric_name: observation}, at=AT)


#: 260 requests each, bucketed like the simulator's latency (<= 0.1, 0.25, ... 10, +Inf):
#: the baseline has 14 slower than 2.5 s (its p95 reads 2.54 s), the candidate 8 (3.08 %)
BASELINE = [0, 1, 22, 49, 58, 37, 26, 29, 24, 6, 6, 1, 1, 0, 0]
CANDIDATE = [0, 2, 21, 52, 55, 41, 28, 30, 23, 5, 2, 1, 0, 0, 0]


def test_a_healthy_candidate_is_not_rolled_back_because_its_baseline_read_beyond_the_limit() -> (
    None
):
    """The demo world's first look that rolled an unchanged candidate back, as judge inputs."""
    assert (sum(BASELINE), sum(CANDIDATE)) == (260, 260)
    baseline, candidate = histogram(BASELINE), histogram(CANDIDATE)
    baseline_p95 = baseline.quantile(0.95)
    assert baseline_p95 is not None and baseline_p95 > 2.5
    assert (candidate.count_above(2.5) or 0.0) / candidate.total == pytest.approx(8 / 260)

    cell = judged({"mobile": baseline}, {"mobile": candidate}).cell(SPEC.metric_name, "mobile")
    assert cell.verdict is Verdict.INCONCLUSIVE
    [at_most] = [c for c in cell.checks if c.limit is Limit.MAX]
    # half the baseline's distance from the limit, on the healthy side: near 2.5 s, not 1.25 s
    assert at_most.tolerance == pytest.approx(2.5 - (baseline_p95 - 2.5) / 2.0)
    assert at_most.log_e_fail is not None and at_most.log_threshold is not None
    assert at_most.log_e_fail < 0.0 < at_most.log_threshold


def test_the_tolerance_tends_to_the_limit_as_the_baseline_reaches_it() -> None:
    """Baselines measured just below and just above 2.5 s give nearly the same tolerance."""
    tolerances = []
    for slow in (12, 14):  # 12 of 260 slower than 2.5 s: p95 below it; 14: above it
        counts = [0, 1, 22, 49, 58, 37, 26, 29, 38 - slow, slow - 8, 6, 1, 1, 0, 0]
        baseline = histogram([float(c) for c in counts])
        p95 = baseline.quantile(0.95)
        assert p95 is not None and (p95 - 2.5) * (1 if slow == 14 else -1) > 0
        cell = judged({"mobile": baseline}, {"mobile": histogram(CANDIDATE)}).cell(
            SPEC.metric_name, "mobile"
        )
        [at_most] = [c for c in cell.checks if c.limit is Limit.MAX]
        assert at_most.tolerance is not None
        tolerances.append(at_most.tolerance)
    below, above = tolerances
    assert 2.45 < below < 2.5 and 2.45 < above < 2.5
    assert abs(above - below) < 0.05


#: requests per version and cohort between looks (12 req/s per cohort, split in two, 30 s
#: looks, the demo's 20 % share of 60 req/s, rounded): the first judged look has 260
PER_LOOK = 130
LOOKS = 10
ROLLOUTS = 200


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, float]:
    latency = rng.lognormal(0.0, 0.5, size=n)  # the demo's Behaviour: median 1.0 s, sigma 0.5
    index = np.searchsorted(np.array(LATENCY_BUCKETS), latency, side="left")
    return np.bincount(index, minlength=len(BOUNDS)).astype(float), float(latency.sum())


def _first_fail(seed: int) -> int | None:
    """The look at which a healthy candidate is rolled back in one simulated rollout."""
    rng = np.random.default_rng(seed)
    counts = {(v, c): np.zeros(len(BOUNDS)) for v in "bc" for c in CELLS}
    sums = dict.fromkeys(counts, 0.0)
    for look in range(LOOKS):
        for key in counts:
            more, total = _draw(rng, PER_LOOK)
            counts[key] += more
            sums[key] += total
        if (look + 1) * PER_LOOK < ANALYSIS.min_samples:
            continue

        def version(v: str) -> dict[str, Histogram]:
            return {
                c: Histogram(BOUNDS, tuple(np.cumsum(counts[(v, c)]).tolist()), sums[(v, c)])
                for c in CELLS
            }

        judgement = judged(version("b"), version("c"))
        if any(cell.verdict is Verdict.FAIL for cell in judgement.cells):
            return look
    return None


def test_healthy_candidates_are_rarely_rolled_back_over_many_rollouts() -> None:
    """200 seeded rollouts of an unchanged candidate in four cohorts, up to 1,300 requests each.

    Guarantee (a) allows at most alpha (5 %): 10 of 200 expected at worst; 20 or more
    has probability under 0.2 % then (binomial). Before the fix 46 of 200 were rolled
    back at their first judged look and 52 over 24 looks.
    """
    assert pytest.approx(0.05) == ALPHA
    fails = [_first_fail(seed) for seed in range(ROLLOUTS)]
    failed = [f for f in fails if f is not None]
    first_look = [f for f in failed if (f + 1) * PER_LOOK < ANALYSIS.min_samples + PER_LOOK]
    assert len(failed) < 20, f"{len(failed)} of {ROLLOUTS} healthy candidates rolled back"
    assert len(first_look) < 20
