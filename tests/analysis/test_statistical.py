"""Does the judge keep its promise? Thousands of simulated rollouts, seeded.

The rollout simulated here follows the example policy's shape: four cohorts
with their own refusal rates (non-English users are refused most), a first
step that over-weights the risky cohorts (`cohortWeights`), then 5 %, 20 %,
50 %, looked at every 30 s for 85 minutes (170 looks), judged on refusal-rate
{maxIncrease: 0.02, max: 0.10} and error-rate {max: 0.01}: 3 limits in 3
cohorts and overall, 12 tests sharing the 5 % budget.

To run thousands of rollouts in seconds the cell verdicts are computed on
arrays (rollouts × looks × cohorts) by `mirror`, which calls the very
estimator and e-process functions the judge calls; a consistency test runs the
real `judge` on a sample of looks and demands identical verdicts.

The figures (printed with `pytest -s`) are the ones reported in the README (How the judge decides).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped]

from controller.analysis import (
    Judgement,
    Limit,
    MetricObservation,
    Proportion,
    Verdict,
    VersionData,
    estimators,
    judge,
    sequential,
)
from controller.analysis.judge import JudgeOptions
from controller.analysis.planning import Scenario, minutes_to_verdict
from controller.policy import OVERALL
from tests.analysis.cases import AT, analysis, metric

COHORTS = ("non-english", "mobile", "power-users")
STRATA = (*COHORTS, "other")
SHARES = np.array([0.2, 0.3, 0.1, 0.4])
BASE_REFUSAL = np.array([0.08, 0.05, 0.03, 0.04])
BASE_ERROR = 0.003
LOOK_SECONDS = 30
#: (minutes, candidate weight per stratum): the first step over-weights the risky cohorts
SCHEDULE = (
    (10, np.array([0.05, 0.01, 0.05, 0.01])),
    (15, np.full(4, 0.05)),
    (30, np.full(4, 0.20)),
    (30, np.full(4, 0.50)),
)
REFUSALS = metric(template="refusal-rate", maxIncrease=0.02, max=0.10)
ERRORS = metric(template="error-rate", max=0.01)
POLICY = analysis(REFUSALS, ERRORS, confidence=0.95, min_samples=200)
TESTS = 12
ALPHA = 0.05
MAIN_ALPHA = ALPHA / TESTS * (1 - JudgeOptions().breaker_share)

PASS, INCONCLUSIVE, NO_DATA, FAIL = 0, 1, 2, 3
CODE = {
    PASS: Verdict.PASS,
    INCONCLUSIVE: Verdict.INCONCLUSIVE,
    NO_DATA: Verdict.NO_DATA,
    FAIL: Verdict.FAIL,
}


@dataclass(frozen=True)
class Rollouts:
    """Cumulative counts, shape (rollouts, looks, strata)."""

    refusals_c: np.ndarray
    errors_c: np.ndarray
    trials_c: np.ndarray
    refusals_b: np.ndarray
    errors_b: np.ndarray
    trials_b: np.ndarray

    @property
    def looks(self) -> int:
        return int(self.trials_c.shape[1])


def simulate(
    rollouts: int,
    seed: int,
    *,
    requests_per_second: float = 20.0,
    refusal_c: np.ndarray = BASE_REFUSAL,
    error_c: float = BASE_ERROR,
    refusal_b: np.ndarray = BASE_REFUSAL,
    schedule: tuple[tuple[int, np.ndarray], ...] = SCHEDULE,
) -> Rollouts:
    rng = np.random.default_rng(seed)
    weights = np.concatenate(
        [np.tile(w, (minutes * 60 // LOOK_SECONDS, 1)) for minutes, w in schedule]
    )
    looks = len(weights)
    shape = (rollouts, looks, len(STRATA))
    arrivals = rng.poisson(requests_per_second * LOOK_SECONDS * SHARES, size=shape)
    to_candidate = rng.binomial(arrivals, weights[None, :, :])
    to_baseline = arrivals - to_candidate
    return Rollouts(
        refusals_c=rng.binomial(to_candidate, refusal_c).cumsum(axis=1),
        errors_c=rng.binomial(to_candidate, error_c).cumsum(axis=1),
        trials_c=to_candidate.cumsum(axis=1),
        refusals_b=rng.binomial(to_baseline, refusal_b).cumsum(axis=1),
        errors_b=rng.binomial(to_baseline, BASE_ERROR).cumsum(axis=1),
        trials_b=to_baseline.cumsum(axis=1),
    )


def _decide(log_fail: np.ndarray, log_pass: np.ndarray | None) -> np.ndarray:
    threshold = sequential.log_threshold(MAIN_ALPHA)
    passed = np.zeros_like(log_fail, dtype=bool) if log_pass is None else log_pass >= threshold
    return np.where(log_fail >= threshold, FAIL, np.where(passed, PASS, INCONCLUSIVE))


def _beta(s: np.ndarray, n: np.ndarray, limit: float, fail_only: bool) -> np.ndarray:
    tau = estimators.absolute_tau(limit, fail_above=True)
    log_fail = sequential.beta_mixture_log_e(s, n, limit, tau, above=True)
    if fail_only:
        return _decide(log_fail, None)
    return _decide(log_fail, sequential.beta_mixture_log_e(s, n, limit, tau, above=False))


def _normal(contrast: estimators.Contrast, fail_only: bool) -> np.ndarray:
    z, v, tau = contrast.estimate, contrast.variance, contrast.tau
    log_fail = sequential.normal_mixture_log_e(z, v, tau)
    return _decide(log_fail, None if fail_only else sequential.normal_mixture_log_e(-z, v, tau))


def _absolute(
    s: np.ndarray, n: np.ndarray, nb: np.ndarray, limit: float, fail_only: bool
) -> np.ndarray:
    """The judge's absolute test: exact on one cohort, standardised normal on several."""
    if s.shape[-1] == 1:
        return _beta(s[..., 0], n[..., 0], limit, fail_only)
    weights = estimators.population_weights(n, nb, both=False)
    contrast = estimators.absolute_contrast(s, n, weights, limit, fail_above=True)
    out = _normal(contrast, fail_only)
    one = (n > 0).sum(axis=-1) == 1  # the judge goes exact when one cohort has traffic
    out[one] = _beta(s.sum(axis=-1)[one], n.sum(axis=-1)[one], limit, fail_only)
    return out


def mirror(r: Rollouts, strata: slice, *, fail_only: bool = False) -> np.ndarray:
    """Cell verdict codes (rollouts × looks) for the cohorts in `strata`, as the judge rules.

    With `fail_only` the PASS side is skipped (PASS reads as INCONCLUSIVE): enough
    to count rollbacks, at half the cost.
    """
    xc, ec, nc = r.refusals_c[..., strata], r.errors_c[..., strata], r.trials_c[..., strata]
    xb, nb = r.refusals_b[..., strata], r.trials_b[..., strata]
    contrast = estimators.relative_contrast(xc, nc, xb, nb, Limit.MAX_INCREASE, 0.02)
    increase = _normal(contrast, fail_only)
    compared_b = np.where((nc > 0) & (nb > 0), nb, 0).sum(axis=-1)
    increase = np.where(compared_b < POLICY.min_samples, INCONCLUSIVE, increase)
    refusal = np.maximum(increase, _absolute(xc, nc, nb, 0.10, fail_only))
    error = _absolute(ec, nc, nb, 0.01, fail_only)
    n_c = nc.sum(axis=-1)
    gated = np.where(n_c == 0, NO_DATA, np.where(n_c < POLICY.min_samples, INCONCLUSIVE, 0))
    return np.stack([np.maximum(gated, refusal), np.maximum(gated, error)], axis=-1)


def all_cells(r: Rollouts, *, fail_only: bool = False) -> np.ndarray:
    """Verdict codes, shape (rollouts, looks, cells × metrics), cohorts then overall."""
    cells = [mirror(r, slice(i, i + 1), fail_only=fail_only) for i in range(len(COHORTS))]
    cells.append(mirror(r, slice(None), fail_only=fail_only))
    return np.concatenate(cells, axis=-1)


def last_look(r: Rollouts) -> Rollouts:
    return Rollouts(*(getattr(r, f)[:, -1:, :] for f in Rollouts.__dataclass_fields__))


def breaker_could_trip(r: Rollouts) -> bool:
    """Whether any look came near the circuit breaker (more than half the requests bad)."""
    n = np.maximum(r.trials_c, 1)
    grossly_bad = (r.refusals_c / n > 0.5) | (r.errors_c / n > 0.5)
    return bool(np.any(grossly_bad & (r.trials_c >= JudgeOptions().breaker_min_samples)))


def first_look(codes: np.ndarray, code: int) -> np.ndarray:
    """Per rollout, the first look at which any cell had `code` (-1: never)."""
    hit = (codes == code).any(axis=-1)
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def report(name: str, value: str) -> None:
    print(f"\n[statistics] {name}: {value}")


@pytest.mark.parametrize(
    ("rate", "min_promotable"),
    [
        # at 20 req/s the smallest cohort (2 req/s) has too little traffic in 85
        # minutes for some of its cells to PASS: the judge waits rather than guess
        pytest.param(20.0, 0.4, id="20rps"),
        pytest.param(60.0, 0.95, id="60rps"),
    ],
)
def test_healthy_rollouts_are_rarely_rolled_back_and_do_get_promoted(
    rate: float, min_promotable: float
) -> None:
    r = simulate(1500, seed=1, requests_per_second=rate)
    assert not breaker_could_trip(r)
    rolled_back = (first_look(all_cells(r, fail_only=True), FAIL) >= 0).mean()
    promotable = (all_cells(last_look(r))[:, 0, :] == PASS).all(axis=-1).mean()
    report(
        f"healthy rollouts at {rate:g} req/s rolled back",
        f"{rolled_back:.2%} of 1500 (budget {ALPHA:.0%})",
    )
    report(f"healthy rollouts at {rate:g} req/s promotable at the end", f"{promotable:.1%}")
    assert rolled_back <= ALPHA
    assert promotable >= min_promotable


def test_candidates_exactly_on_their_limits_stay_within_the_budget() -> None:
    """The worst case the guarantee covers: nine of the twelve tests sit on their null."""
    r = simulate(2000, seed=2, refusal_c=BASE_REFUSAL + 0.02, error_c=0.01)
    assert not breaker_could_trip(r)
    rolled_back = (first_look(all_cells(r, fail_only=True), FAIL) >= 0).mean()
    report("rollouts on the limits rolled back", f"{rolled_back:.2%} of 2000 (budget {ALPHA:.0%})")
    # at most 9/12 of alpha can be spent here; 3 standard errors of slack for the estimate
    assert rolled_back <= 9 / TESTS * ALPHA + 3 * math.sqrt(ALPHA / 2000)
    # The same rollouts, judged by a fixed-sample z-test at the same per-test level
    # re-checked at every look (what repeated-look tools do), on the refusal increase:
    naive = np.zeros(r.trials_c.shape[:2], dtype=bool)
    z_crit = float(stats.norm.isf(MAIN_ALPHA))
    for strata in [slice(i, i + 1) for i in range(len(COHORTS))] + [slice(None)]:
        c = estimators.relative_contrast(
            r.refusals_c[..., strata],
            r.trials_c[..., strata],
            r.refusals_b[..., strata],
            r.trials_b[..., strata],
            Limit.MAX_INCREASE,
            0.02,
        )
        enough = r.trials_c[..., strata].sum(axis=-1) >= POLICY.min_samples
        naive |= enough & (c.estimate > z_crit * np.sqrt(c.variance))
    naive_rate = naive.any(axis=1).mean()
    report("the same, a fixed-sample z-test re-checked every look", f"{naive_rate:.2%} rolled back")
    assert naive_rate > 2 * rolled_back


def test_a_regression_in_one_cohort_is_caught_there() -> None:
    """Non-English refusals 8 % -> 12 %: overall moves by under a point, the cohort by 4."""
    refusal = BASE_REFUSAL.copy()
    refusal[0] += 0.04
    r = simulate(1000, seed=3, requests_per_second=40.0, refusal_c=refusal)
    codes = all_cells(r, fail_only=True)
    caught = first_look(codes, FAIL)
    minutes = (caught[caught >= 0] + 1) * LOOK_SECONDS / 60
    report(
        "non-English 8% -> 12% at 40 req/s caught",
        f"{(caught >= 0).mean():.1%} of 1000, median after {np.median(minutes):.0f} min",
    )
    assert (caught >= 0).mean() >= 0.9
    non_english_refusal = codes[..., 0]
    assert ((non_english_refusal == FAIL).any(axis=1)).mean() >= 0.9


@pytest.mark.parametrize(
    ("rate", "margin"),
    [
        pytest.param(100.0, 0.01, id="100rps-margin-1pt"),
        pytest.param(20.0, 0.0, id="20rps-no-increase-allowed"),
    ],
)
def test_refusals_5_to_7_percent_are_caught(rate: float, margin: float) -> None:
    """The issue's example: 5 % -> 7 % everywhere, with a limit below the 2-point rise."""
    global_policy = analysis(metric(template="refusal-rate", maxIncrease=margin), min_samples=200)
    base = np.full(4, 0.05)
    r = simulate(1000, seed=4, requests_per_second=rate, refusal_c=base + 0.02, refusal_b=base)
    tests = 4  # one limit, three cohorts and overall
    alpha = 0.05 / tests * (1 - JudgeOptions().breaker_share)
    threshold = sequential.log_threshold(alpha)
    detected = np.zeros(r.trials_c.shape[:2], dtype=bool)
    for strata in [slice(i, i + 1) for i in range(3)] + [slice(None)]:
        c = estimators.relative_contrast(
            r.refusals_c[..., strata],
            r.trials_c[..., strata],
            r.refusals_b[..., strata],
            r.trials_b[..., strata],
            Limit.MAX_INCREASE,
            margin,
        )
        ok = r.trials_c[..., strata].sum(axis=-1) >= global_policy.min_samples
        detected |= ok & (
            sequential.normal_mixture_log_e(c.estimate, c.variance, c.tau) >= threshold
        )
    first = np.where(detected.any(axis=1), detected.argmax(axis=1), -1)
    minutes = (first[first >= 0] + 1) * LOOK_SECONDS / 60
    report(
        f"refusals 5% -> 7% at {rate:g} req/s, maxIncrease {margin:g}",
        f"caught in {(first >= 0).mean():.1%} of 1000, median after {np.median(minutes):.0f} min",
    )
    assert (first >= 0).mean() >= 0.9


def test_planning_predicts_the_simulated_time_to_pass() -> None:
    """At a constant weight the 80th percentile of time-to-PASS matches `planning`."""
    weight, rate = 0.2, 20.0
    looks = 120
    rng = np.random.default_rng(6)
    n = rng.poisson(rate * LOOK_SECONDS, size=(4000, looks))
    nc = rng.binomial(n, weight)
    nb = n - nc
    xc = rng.binomial(nc, 0.05).cumsum(axis=1)
    xb = rng.binomial(nb, 0.05).cumsum(axis=1)
    nc, nb = nc.cumsum(axis=1), nb.cumsum(axis=1)
    scenario = Scenario(tests=16)
    c = estimators.relative_contrast(
        xc[..., None], nc[..., None], xb[..., None], nb[..., None], Limit.MAX_INCREASE, 0.02
    )
    passed = sequential.normal_mixture_log_e(
        -c.estimate, c.variance, c.tau
    ) >= sequential.log_threshold(scenario.alpha)
    passed &= nc >= scenario.min_samples
    first = np.where(passed.any(axis=1), passed.argmax(axis=1) + 1, looks + 1)
    simulated = np.percentile(first, 80) * LOOK_SECONDS / 60
    predicted = minutes_to_verdict(scenario, rate, weight)
    report(
        "time to PASS at 20 req/s, 20 %",
        f"simulated p80 {simulated:.1f} min, planned {predicted:.1f} min",
    )
    assert simulated == pytest.approx(predicted, rel=0.2)


def _observations(r: Rollouts, i: int, t: int) -> dict[str, MetricObservation]:
    def data(events: np.ndarray, trials: np.ndarray) -> VersionData:
        return VersionData(
            {
                name: Proportion(float(events[i, t, k]), float(trials[i, t, k]))
                for k, name in enumerate(STRATA)
            }
        )

    return {
        "refusal-rate": MetricObservation(
            "refusal-rate", data(r.refusals_b, r.trials_b), data(r.refusals_c, r.trials_c)
        ),
        "error-rate": MetricObservation(
            "error-rate", data(r.errors_b, r.trials_b), data(r.errors_c, r.trials_c)
        ),
    }


def test_the_mirror_is_the_judge() -> None:
    """The vectorised verdicts above are exactly what `judge` says, look by look."""
    refusal = BASE_REFUSAL.copy()
    refusal[0] += 0.04
    r = simulate(6, seed=7, refusal_c=refusal)
    codes = all_cells(r)
    seen: set[Verdict] = set()
    for i in range(6):
        for t in range(0, r.looks, 7):
            result: Judgement = judge(POLICY, list(COHORTS), _observations(r, i, t), at=AT)
            assert result.tests == TESTS
            for j, cohort in enumerate((*COHORTS, OVERALL)):
                for m, name in enumerate(("refusal-rate", "error-rate")):
                    got = result.cell(name, cohort).verdict
                    assert got is CODE[int(codes[i, t, 2 * j + m])], (i, t, cohort, name)
                    seen.add(got)
    assert {Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE} <= seen
