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

The figures (printed with `pytest -s`) are the ones reported in docs/judge.md
(How the judge decides).
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
from controller.analysis.judge import Budget, JudgeOptions
from controller.analysis.planning import Hypotheses, plan_cell
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
FAIL_ALPHA = ALPHA * (1 - JudgeOptions().breaker_share)
MAIN_ALPHA = FAIL_ALPHA / TESTS

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


@dataclass(frozen=True)
class Family:
    """Every (metric, cell, limit) test at every look: shape (rollouts, looks, tests)."""

    log_fail: np.ndarray
    log_pass: np.ndarray
    information: np.ndarray
    delta: np.ndarray
    #: the test ran (enough traffic for it); one that did not is INCONCLUSIVE
    ran: np.ndarray
    #: which cell × metric each test belongs to (the judge's verdict columns)
    column: tuple[int, ...]


def _standardised_baseline(sb: np.ndarray, nb: np.ndarray, weights: np.ndarray) -> np.ndarray:
    has = (nb > 0) & (weights > 0)
    w = np.where(has, weights, 0.0)
    rate = np.divide(sb, nb, out=np.zeros_like(w), where=nb > 0)
    total = w.sum(axis=-1)
    return np.where(total > 0, (w * rate).sum(axis=-1) / np.where(total > 0, total, 1.0), np.nan)


def _absolute(
    s: np.ndarray, n: np.ndarray, sb: np.ndarray, nb: np.ndarray, limit: float
) -> tuple[np.ndarray, ...]:
    """The judge's `max` test: exact on one cohort, standardised Gaussian SPRT on several."""
    weights = estimators.population_weights(n, nb, both=False)
    baseline = _standardised_baseline(sb, nb, weights)
    known = np.isfinite(baseline) & (baseline < limit)
    tolerance = np.where(known, np.where(known, baseline, 0.0) + (limit - baseline) / 2, limit / 2)
    delta = limit - tolerance
    used = n > 0
    all_have_baseline = np.all(~used | (nb > 0), axis=-1) & np.isfinite(baseline)
    shrunk = (sb + 0.5) / (nb + 1.0)
    moved = np.clip(shrunk + (limit - np.nan_to_num(baseline))[..., None], 1e-6, 1 - 1e-6)
    rates = np.where(all_have_baseline[..., None], moved, limit)
    contrast = estimators.absolute_contrast(s, n, weights, limit, fail_above=True, null_rates=rates)
    v = contrast.variance
    information = np.divide(1.0, v, out=np.zeros_like(v), where=v > 0)
    log_fail = sequential.fail_log_e(contrast.estimate, information, delta)
    log_pass = sequential.pass_log_e(contrast.estimate, information, delta)
    one = used.sum(axis=-1) == 1  # the judge goes exact when one cohort has traffic
    total, count = s.sum(axis=-1), n.sum(axis=-1)
    exact_fail = sequential.bernoulli_fail_log_e(total, count, tolerance, limit)
    exact_pass = sequential.bernoulli_pass_log_e(total, count, tolerance, limit)
    log_fail = np.where(one, exact_fail, log_fail)
    log_pass = np.where(one, exact_pass, log_pass)
    information = np.where(one, count / (limit * (1 - limit)), information)
    return log_fail, log_pass, information, delta


def cell_tests(r: Rollouts, strata: slice) -> list[tuple[np.ndarray, ...]]:
    """(log e FAIL, log e PASS, information, delta, ran) of refusal maxIncrease, refusal
    max and error max in the cell of `strata`, as the judge computes them."""
    xc, ec, nc = r.refusals_c[..., strata], r.errors_c[..., strata], r.trials_c[..., strata]
    xb, eb, nb = r.refusals_b[..., strata], r.errors_b[..., strata], r.trials_b[..., strata]
    enough = nc.sum(axis=-1) >= POLICY.min_samples
    c = estimators.relative_contrast(xc, nc, xb, nb, Limit.MAX_INCREASE, 0.02)
    information = np.divide(1.0, c.variance, out=np.zeros_like(c.variance), where=c.variance > 0)
    delta = np.full_like(information, 0.01)
    compared_b = np.where((nc > 0) & (nb > 0), nb, 0).sum(axis=-1)
    increase = (
        sequential.fail_log_e(c.estimate, information, delta),
        sequential.pass_log_e(c.estimate, information, delta),
        information,
        delta,
        enough & (compared_b >= POLICY.min_samples),
    )
    refusal_max = (*_absolute(xc, nc, xb, nb, 0.10), enough)
    error_max = (*_absolute(ec, nc, eb, nb, 0.01), enough)
    return [increase, refusal_max, error_max]


def all_tests(r: Rollouts) -> Family:
    """The twelve tests in every cell, cohorts then overall (columns: refusal, error)."""
    parts: list[tuple[np.ndarray, ...]] = []
    column: list[int] = []
    for j, strata in enumerate([slice(i, i + 1) for i in range(len(COHORTS))] + [slice(None)]):
        tests = cell_tests(r, strata)
        parts.extend(tests)
        column.extend([2 * j, 2 * j, 2 * j + 1])
    stack = [np.stack([p[i] for p in parts], axis=-1) for i in range(5)]
    log_fail, log_pass, information, delta, ran = stack
    return Family(
        np.where(ran, log_fail, 0.0),
        np.where(ran, log_pass, 0.0),
        information,
        delta,
        ran.astype(bool),
        tuple(column),
    )


def fails(t: Family) -> np.ndarray:
    """Which tests FAIL at each look: the closed average of the family's e-values."""
    needed = sequential.average_fail_thresholds(t.log_fail, TESTS, FAIL_ALPHA)
    result: np.ndarray = t.ran & (t.log_fail >= needed)
    return result


def verdict_codes(t: Family) -> np.ndarray:
    """Cell verdict codes (rollouts, looks, cells × metrics), as the judge rules."""
    failed = fails(t)
    passed = t.ran & (t.log_pass >= sequential.log_threshold(ALPHA))
    codes = np.where(failed, FAIL, np.where(passed, PASS, INCONCLUSIVE))
    out = np.zeros((*codes.shape[:-1], 2 * (len(COHORTS) + 1)), dtype=int)
    for k, col in enumerate(t.column):
        out[..., col] = np.maximum(out[..., col], codes[..., k])
    return out


def promotable(t: Family, power: float = 0.8) -> np.ndarray:
    """Per rollout at its last look: every critical cell PASSed or has a powered FAIL test."""
    codes = np.where(
        fails(t), FAIL, np.where(t.ran & (t.log_pass >= sequential.log_threshold(ALPHA)), PASS, 1)
    )
    level = float(sequential.log_threshold(FAIL_ALPHA / TESTS))
    powered_at = np.vectorize(lambda d: sequential.powered_information(d, level, power))(t.delta)
    ok = (codes == PASS) | ((codes != FAIL) & t.ran & (t.information >= powered_at))
    result: np.ndarray = ok.all(axis=-1)
    return result


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


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default)."""
    p_hat = hits / n
    centre = (p_hat + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p_hat * (1 - p_hat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(centre - half, 0.0), min(centre + half, 1.0)


def rolled_back(t: Family) -> np.ndarray:
    """Per rollout: did any look FAIL any test?"""
    result: np.ndarray = fails(t).any(axis=(1, 2))
    return result


@pytest.mark.parametrize(
    ("rate", "min_promotable"),
    [
        pytest.param(20.0, 0.9, id="20rps"),
        pytest.param(60.0, 0.95, id="60rps"),
    ],
)
def test_healthy_rollouts_are_rarely_rolled_back_and_do_get_promoted(
    rate: float, min_promotable: float
) -> None:
    r = simulate(1500, seed=1, requests_per_second=rate)
    assert not breaker_could_trip(r)
    back = rolled_back(all_tests(r))
    share = float(back.mean())
    can_promote = float(promotable(all_tests(last_look(r)))[:, 0].mean())
    low, high = wilson(int(back.sum()), back.size)
    report(
        f"healthy rollouts at {rate:g} req/s rolled back",
        f"{share:.2%} of 1500 (Wilson 95 % [{low:.2%}, {high:.2%}], budget {ALPHA:.0%})",
    )
    report(f"healthy rollouts at {rate:g} req/s promotable at the end", f"{can_promote:.1%}")
    assert share <= ALPHA, f"{share:.2%} rolled back, Wilson 95 % [{low:.2%}, {high:.2%}]"
    assert can_promote >= min_promotable


def test_candidates_exactly_at_their_tolerances_stay_within_the_budget() -> None:
    """The worst case guarantee (a) covers: refusals up by the maxIncrease tolerance (1
    point) everywhere and errors at the error-rate max's tolerance (halfway from the
    baseline's 0.3 % to 1 %): eight of the twelve tests sit on their null."""
    r = simulate(2000, seed=2, refusal_c=BASE_REFUSAL + 0.01, error_c=(BASE_ERROR + 0.01) / 2)
    assert not breaker_could_trip(r)
    back = rolled_back(all_tests(r))
    share = float(back.mean())
    low, high = wilson(int(back.sum()), back.size)
    report(
        "rollouts at their tolerances rolled back",
        f"{share:.2%} of 2000 (Wilson 95 % [{low:.2%}, {high:.2%}], budget {ALPHA:.0%})",
    )
    assert share <= ALPHA, f"{share:.2%} rolled back, Wilson 95 % [{low:.2%}, {high:.2%}]"
    # The same rollouts, judged by a fixed-sample z-test at the same per-test level
    # re-checked at every look (what repeated-look tools do), on the refusal increase
    # against the same tolerance:
    naive = np.zeros(r.trials_c.shape[:2], dtype=bool)
    z_crit = float(stats.norm.isf(MAIN_ALPHA))
    for strata in [slice(i, i + 1) for i in range(len(COHORTS))] + [slice(None)]:
        c = estimators.relative_contrast(
            r.refusals_c[..., strata],
            r.trials_c[..., strata],
            r.refusals_b[..., strata],
            r.trials_b[..., strata],
            Limit.MAX_INCREASE,
            0.01,
        )
        enough = r.trials_c[..., strata].sum(axis=-1) >= POLICY.min_samples
        naive |= enough & (c.estimate > z_crit * np.sqrt(c.variance))
    naive_rate = naive.any(axis=1).mean()
    report("the same, a fixed-sample z-test re-checked every look", f"{naive_rate:.2%} rolled back")
    assert naive_rate > 2 * share


def test_a_regression_in_one_cohort_is_caught_there() -> None:
    """Non-English refusals 8 % -> 12 %: overall moves by under a point, the cohort by 4."""
    refusal = BASE_REFUSAL.copy()
    refusal[0] += 0.04
    r = simulate(1000, seed=3, requests_per_second=40.0, refusal_c=refusal)
    codes = verdict_codes(all_tests(r))
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
    """5 % -> 7 % everywhere, with a limit below the 2-point rise (one limit, 4 tests)."""
    base = np.full(4, 0.05)
    r = simulate(1000, seed=4, requests_per_second=rate, refusal_c=base + 0.02, refusal_b=base)
    tests = 4  # one limit, three cohorts and overall
    log_fail = []
    ran = []
    for strata in [slice(i, i + 1) for i in range(3)] + [slice(None)]:
        c = estimators.relative_contrast(
            r.refusals_c[..., strata],
            r.trials_c[..., strata],
            r.refusals_b[..., strata],
            r.trials_b[..., strata],
            Limit.MAX_INCREASE,
            margin,
        )
        information = np.divide(
            1.0, c.variance, out=np.zeros_like(c.variance), where=c.variance > 0
        )
        if margin > 0:
            log_fail.append(sequential.fail_log_e(c.estimate, information, margin / 2))
        else:  # no room for a tolerance: the mixture test against the limit itself
            log_fail.append(
                sequential.normal_mixture_log_e(c.estimate, c.variance, estimators.ZERO_MARGIN_TAU)
            )
        ran.append(r.trials_c[..., strata].sum(axis=-1) >= 200)
    e, ok = np.stack(log_fail, axis=-1), np.stack(ran, axis=-1)
    e = np.where(ok, e, 0.0)
    detected = (ok & (e >= sequential.average_fail_thresholds(e, tests, FAIL_ALPHA))).any(axis=-1)
    first = np.where(detected.any(axis=1), detected.argmax(axis=1), -1)
    minutes = (first[first >= 0] + 1) * LOOK_SECONDS / 60
    report(
        f"refusals 5% -> 7% at {rate:g} req/s, maxIncrease {margin:g}",
        f"caught in {(first >= 0).mean():.1%} of 1000, median after {np.median(minutes):.0f} min",
    )
    assert (first >= 0).mean() >= 0.9


def _constant_weight(
    rollouts: int, looks: int, seed: int, rate: float, weight: float, refusal_c: float
) -> estimators.Contrast:
    """One cohort at a constant weight, refusals 5 % on the baseline: the judge's contrast."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(rate * LOOK_SECONDS, size=(rollouts, looks))
    nc = rng.binomial(n, weight)
    nb = n - nc
    xc = rng.binomial(nc, refusal_c).cumsum(axis=1)
    xb = rng.binomial(nb, 0.05).cumsum(axis=1)
    return estimators.relative_contrast(
        xc[..., None],
        nc.cumsum(axis=1)[..., None],
        xb[..., None],
        nb.cumsum(axis=1)[..., None],
        Limit.MAX_INCREASE,
        0.02,
    )


def _first(hit: np.ndarray) -> np.ndarray:
    """Per rollout, the minute of the first look where `hit` (inf: never)."""
    first = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, np.iinfo(np.int64).max)
    return np.where(hit.any(axis=1), first * LOOK_SECONDS / 60, np.inf)


PLAN_BUDGET = Budget(0.05, 16)
PLAN_RATE, PLAN_WEIGHT, PLAN_LOOKS = 20.0, 0.2, 240
REFUSALS_PLAN = Hypotheses(Limit.MAX_INCREASE, 0.02, baseline=0.05)


def healthy_decided(c: estimators.Contrast) -> np.ndarray:
    """Per rollout, the minute a refusal cell of `REFUSALS_PLAN` under `PLAN_BUDGET` first
    PASSes or reaches the information at which its FAIL test has the declared power."""
    information = 1.0 / c.variance
    delta = REFUSALS_PLAN.delta
    passed = sequential.pass_log_e(c.estimate, information, delta) >= sequential.log_threshold(
        PLAN_BUDGET.alpha
    )
    powered_at = sequential.powered_information(
        delta, PLAN_BUDGET.log_power_threshold, PLAN_BUDGET.power
    )
    return _first(passed | (information >= powered_at))


def test_planning_predicts_the_simulated_time_for_a_healthy_candidate_to_decide() -> None:
    """Healthy (5 % on both): PASS, or powered, at the median and 80th percentile planned."""
    c = _constant_weight(4000, PLAN_LOOKS, 6, PLAN_RATE, PLAN_WEIGHT, 0.05)
    minutes = healthy_decided(c)
    planned = plan_cell(REFUSALS_PLAN, PLAN_RATE, PLAN_WEIGHT, PLAN_BUDGET).healthy
    simulated = (float(np.median(minutes)), float(np.percentile(minutes, 80)))
    report(
        "healthy candidate decided at 20 req/s, 20 %",
        f"simulated median {simulated[0]:.1f} / p80 {simulated[1]:.1f} min, "
        f"planned {planned[0]:.1f} / {planned[1]:.1f} min",
    )
    assert simulated[0] == pytest.approx(planned[0], rel=0.25)
    assert simulated[1] == pytest.approx(planned[1], rel=0.25)


def test_planning_predicts_the_time_to_fail_at_the_limit_and_the_power_holds() -> None:
    """At the limit (5 % -> 7 %): FAIL times as planned, and by the powered information at
    least `power` of the rollouts have failed (guarantee b)."""
    c = _constant_weight(4000, PLAN_LOOKS, 8, PLAN_RATE, PLAN_WEIGHT, 0.07)
    information = 1.0 / c.variance
    delta = REFUSALS_PLAN.delta
    failed = sequential.fail_log_e(c.estimate, information, delta) >= (
        PLAN_BUDGET.log_power_threshold
    )
    minutes = _first(failed)
    plan = plan_cell(REFUSALS_PLAN, PLAN_RATE, PLAN_WEIGHT, PLAN_BUDGET)
    simulated = (float(np.median(minutes)), float(np.percentile(minutes, 80)))
    caught = int((minutes <= plan.powered).sum())
    low, high = wilson(caught, minutes.size)
    report(
        "candidate at the limit failed at 20 req/s, 20 %",
        f"simulated median {simulated[0]:.1f} / p80 {simulated[1]:.1f} min, planned "
        f"{plan.at_limit[0]:.1f} / {plan.at_limit[1]:.1f} min; by the powered "
        f"{plan.powered:.1f} min {caught / minutes.size:.1%} (Wilson 95 % [{low:.1%}, {high:.1%}])",
    )
    assert simulated[0] == pytest.approx(plan.at_limit[0], rel=0.25)
    assert simulated[1] == pytest.approx(plan.at_limit[1], rel=0.25)
    assert caught / minutes.size >= PLAN_BUDGET.power, (
        f"{caught / minutes.size:.1%} caught by the powered information, "
        f"Wilson 95 % [{low:.1%}, {high:.1%}]"
    )


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
    codes = verdict_codes(all_tests(r))
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


def test_a_cell_at_its_limit_ever_passes_at_most_alpha_of_the_time() -> None:
    """The engine keeps a PASS once reached, so the level that matters is that of *ever*
    PASSing over the whole rollout, every look counted: at most alpha per cell for a
    candidate exactly at the limit (refusals +2 points against `maxIncrease: 0.02`)."""
    r = simulate(1000, seed=11, refusal_c=BASE_REFUSAL + 0.02)
    t = all_tests(r)
    increase = [k for k in range(t.log_pass.shape[-1]) if k % 3 == 0]  # maxIncrease, per cell
    ever = (t.ran & (t.log_pass >= sequential.log_threshold(ALPHA)))[..., increase].any(axis=1)
    for cell, hits in zip((*COHORTS, OVERALL), ever.sum(axis=0), strict=True):
        share = int(hits) / len(ever)
        low, high = wilson(int(hits), len(ever))
        report(
            f"at the limit, {cell} ever PASSed",
            f"{share:.2%} of 1000 (Wilson 95 % [{low:.2%}, {high:.2%}], alpha {ALPHA:.0%})",
        )
        assert share <= ALPHA, f"{cell}: {share:.2%} ever PASSed at the limit"
