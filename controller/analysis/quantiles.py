"""Latency quantiles, judged through the share of requests slower than a latency.

A quantile q_p is at most x exactly when at most 1 - p of the requests are
slower than x, so every limit on a quantile becomes a limit on that share at
the latency x the limit names (or the baseline's quantile moved by it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from controller.analysis import estimators, sequential
from controller.analysis.breaker import trip_breaker
from controller.analysis.checks import (
    Draft,
    Format,
    Test,
    finish,
    formatter,
    gaussian_test,
    limit_words,
    no_candidate_yet,
    no_data_verdict,
    not_enough,
    percent,
    relative_statement,
    room,
    tolerance_of,
)
from controller.analysis.observations import Histogram, search_left
from controller.analysis.plan import Budget, JudgeOptions, MetricPlan
from controller.analysis.strata import Means, Strata, as_histogram, sum_histograms
from controller.analysis.verdicts import (
    Arm,
    CellVerdict,
    Limit,
    Method,
    NoDataReason,
)


def judge_quantile(
    plan: MetricPlan,
    base: CellVerdict,
    strata: Strata,
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict | Draft:
    assert plan.quantile is not None
    hist_b: list[Histogram | None] = []
    hist_c: list[Histogram | None] = []
    for sample_b, sample_c in zip(strata.baseline, strata.candidate, strict=True):
        hb, hc = as_histogram(sample_b), as_histogram(sample_c)
        if isinstance(hb, str) or isinstance(hc, str):
            return no_data_verdict(
                base, NoDataReason.QUERY_FAILED, str(hb if isinstance(hb, str) else hc)
            )
        hist_b.append(hb)
        hist_c.append(hc)
    n_c = np.array([h.total if h else 0.0 for h in hist_c])
    n_b = np.array([h.total if h else 0.0 for h in hist_b])
    pooled_c = sum_histograms([h for h in hist_c if h is not None])
    pooled_b = sum_histograms([h for h in hist_b if h is not None])
    q = plan.quantile
    total_c, total_b = float(n_c.sum()), float(n_b.sum())
    arm_c = Arm(pooled_c.quantile(q) if isinstance(pooled_c, Histogram) else None, total_c)
    arm_b = Arm(pooled_b.quantile(q) if isinstance(pooled_b, Histogram) else None, total_b)
    if total_c <= 0:
        return no_candidate_yet(base, arm_b, arm_c)
    fmt = formatter(plan.unit)
    if total_c >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            if limit not in (Limit.MAX, Limit.MIN):
                continue
            above = [h.count_above(threshold) if h else 0.0 for h in hist_c]
            if any(a is None for a in above):
                continue
            means = Means(np.array(above, dtype=float), n_c, np.zeros_like(n_b), n_b)
            tripped = trip_breaker(
                limit, threshold, means, budget.breaker_alpha, percent, null=1.0 - q
            )
            if tripped is not None:
                return finish(base, [tripped], arm_b, arm_c)
    if total_c < min_samples:
        return not_enough(base, arm_b, arm_c, total_c, min_samples, "the candidate")
    tests = [
        _quantile_test(
            plan,
            limit,
            threshold,
            _Histograms(hist_b, hist_c, n_b, n_c, strata.cohort_of),
            budget,
            min_samples,
            fmt,
        )
        for limit, threshold in plan.limits
    ]
    return Draft(base, arm_b, arm_c, tuple(tests))


@dataclass(frozen=True)
class _Target:
    """Where a quantile limit is tested: the latency x and which side of it fails."""

    x: float
    fail_above: bool
    statement: str
    #: per-cohort exceedance under the null, for limits relative to the baseline
    null_c: np.ndarray | None = None
    baseline_samples: float | None = None


def _quantile_target(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    hist_b: Sequence[Histogram | None],
    n_b: np.ndarray,
    n_c: np.ndarray,
    min_samples: int,
    fmt: Format,
) -> _Target | str:
    """The latency at which the candidate's exceedance share is tested (or why not)."""
    assert plan.quantile is not None
    q, p_name = plan.quantile, _quantile_name(plan.quantile)
    if limit in (Limit.MAX, Limit.MIN):
        fail_above = limit is Limit.MAX
        sign = "<=" if fail_above else ">="
        return _Target(threshold, fail_above, f"candidate {p_name} {sign} {fmt(threshold)}")
    both = (n_c > 0) & (n_b > 0)
    nb_total = float(n_b[both].sum())
    if nb_total < min_samples:
        return f"not enough baseline traffic to compare with: {nb_total:.0f} of {min_samples}"
    pooled_b = sum_histograms([h for h, ok in zip(hist_b, both, strict=True) if ok and h])
    if not isinstance(pooled_b, Histogram):
        return str(pooled_b)
    if pooled_b.cumulative[-2] < q * pooled_b.total:
        return (
            f"the baseline's {p_name} lies beyond the largest bucket "
            f"({fmt(pooled_b.largest_finite_bound)}); add larger buckets"
        )
    baseline_q = pooled_b.quantile(q)
    assert baseline_q is not None
    if limit is Limit.MAX_RATIO:
        x, fail_above = threshold * baseline_q, True
    elif limit is Limit.MAX_INCREASE:
        x, fail_above = baseline_q + threshold, True
    else:
        x, fail_above = baseline_q - threshold, False
    # Under the null the candidate is the baseline moved onto the limit, so each
    # cohort's share beyond x is the baseline's share beyond its own quantile.
    null_c = np.array(
        [
            (h.count_above(baseline_q) or 0.0) / h.total if h is not None and h.total else 1 - q
            for h in hist_b
        ]
    )
    sign = "<=" if fail_above else ">="
    statement = (
        f"candidate {p_name} {sign} {fmt(x)} "
        f"({relative_statement(limit, threshold, fmt)}, baseline {p_name} {fmt(baseline_q)})"
    )
    return _Target(x, fail_above, statement, null_c, nb_total)


def _quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


def _quantile_tolerance_share(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    target: _Target,
    pooled_b: Histogram | None,
) -> tuple[float | None, float]:
    """The tolerance in the limit's unit, and the share beyond x a candidate there would have.

    The candidate at its tolerance is modelled as the baseline moved there: scaled
    (for `max`, `min`, `maxRatio`) or shifted (`maxIncrease`, `maxDecrease`) so
    that its quantile sits on the tolerance, and its share of requests beyond the
    tested latency x read off the baseline's histogram. Without a usable baseline
    the share is halfway from the quantile's tail to no requests (or to all).
    """
    assert plan.quantile is not None
    tail = 1.0 - plan.quantile
    baseline_q = pooled_b.quantile(plan.quantile) if pooled_b is not None else None
    tolerance = tolerance_of(plan, limit, threshold, baseline_q)
    fallback = tail / 2.0 if target.fail_above else tail + (1.0 - tail) / 2.0
    if pooled_b is None or baseline_q is None or baseline_q <= 0 or pooled_b.total <= 0:
        return tolerance, fallback
    if limit in (Limit.MAX, Limit.MIN, Limit.MAX_RATIO):
        if tolerance <= 0:
            return tolerance, fallback
        # scaled so that its quantile is on the tolerance (for a ratio, tolerance x baseline)
        at = baseline_q * tolerance if limit is Limit.MAX_RATIO else tolerance
        scale = baseline_q / at

        def probe(u: float) -> float:
            return u * scale
    else:
        shift = -tolerance if limit is Limit.MAX_INCREASE else tolerance

        def probe(u: float) -> float:
            return u + shift

    share = _read_as_candidate(pooled_b, target.x, probe)
    if share is None:
        return tolerance, fallback
    return tolerance, min(max(share, 1e-6), 1 - 1e-6)


def _read_as_candidate(
    baseline: Histogram, x: float, probe: Callable[[float], float]
) -> float | None:
    """The share beyond x that the candidate's histogram would show for the moved baseline.

    The candidate's share beyond x is read off its own buckets, interpolated
    linearly inside x's bucket [lo, hi] (as `histogram_quantile` does). For a
    candidate that is the baseline moved (its latency u is the baseline's
    `probe(u)`), that reading is S(probe(hi)) + (S(probe(lo)) - S(probe(hi))) *
    (hi - x) / (hi - lo), with S the baseline's share beyond a latency (the
    candidate's buckets are taken to be the baseline's). Reading the baseline
    at probe(x) instead is not the same: inside a wide bucket where the tail
    falls steeply, linear interpolation puts too much of the bucket above x,
    by a different amount for the two readings. With the TTFT buckets, a p95 of
    0.48 s and `maxRatio: 1.15`, a candidate at its tolerance read two thirds of
    the way from the tolerance's share to the limit's, and was rolled back
    most of the time (tests/analysis/test_quantile_tolerance.py).
    """
    i = search_left(baseline.bounds, x)
    if i >= len(baseline.bounds) - 1:
        return None
    hi = baseline.bounds[i]
    if x >= hi:  # on a bound: the candidate's reading is exact
        return _share_above(baseline, probe(x))
    lo = baseline.bounds[i - 1] if i > 0 else min(0.0, hi)
    s_lo, s_hi = _share_above(baseline, probe(lo)), _share_above(baseline, probe(hi))
    if s_lo is None or s_hi is None:
        return None
    return s_hi + (s_lo - s_hi) * (hi - x) / (hi - lo)


_NORMAL = NormalDist()


def _share_above(h: Histogram, u: float) -> float | None:
    """The share of `h` beyond u, inside u's bucket as a log-normal would fall.

    Between two positive bounds the probit of the share beyond is taken as
    linear in log u: exact when the latencies follow a log-normal law, the
    usual shape of a latency tail, where linear interpolation can double the
    share in a tail bucket (1.1 % beyond 0.7 s where a log-normal of median
    0.25 s has 0.5 %). Linear (`count_above`) in the first bucket, on a bound,
    or where the share is 0 or 1.
    """
    linear = h.count_above(u)
    if linear is None or h.total <= 0:
        return None
    i = search_left(h.bounds, u)
    if i == 0 or h.bounds[i] == u or h.bounds[i - 1] <= 0:
        return linear / h.total
    lo, hi = h.bounds[i - 1], h.bounds[i]
    s_lo = (h.total - h.cumulative[i - 1]) / h.total
    s_hi = (h.total - h.cumulative[i]) / h.total
    if not 0.0 < s_hi < s_lo < 1.0:
        return linear / h.total
    w = (math.log(u) - math.log(lo)) / (math.log(hi) - math.log(lo))
    z = (1.0 - w) * _NORMAL.inv_cdf(1.0 - s_lo) + w * _NORMAL.inv_cdf(1.0 - s_hi)
    return 1.0 - _NORMAL.cdf(z)


@dataclass(frozen=True)
class _Histograms:
    """A cell's histograms, stratum by stratum, with their totals and cohorts."""

    baseline: Sequence[Histogram | None]
    candidate: Sequence[Histogram | None]
    n_b: np.ndarray
    n_c: np.ndarray
    groups: np.ndarray


def _quantile_test(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    h: _Histograms,
    budget: Budget,
    min_samples: int,
    fmt: Format,
) -> Test:
    assert plan.quantile is not None
    hist_b, hist_c, n_b, n_c = h.baseline, h.candidate, h.n_b, h.n_c
    tail = 1.0 - plan.quantile
    alpha = budget.fail_share
    target = _quantile_target(plan, limit, threshold, hist_b, n_b, n_c, min_samples, fmt)
    show_limit = limit_words(limit, threshold, fmt)
    if isinstance(target, str):
        statement = relative_statement(limit, threshold, fmt)
        return Test(
            limit,
            threshold,
            statement,
            Method.GAUSSIAN_SPRT,
            quantity="",
            limit_text=f"{limit} {show_limit}",
            show=percent,
            blocked=target,
        )
    beyond = f"the share of candidate requests slower than {fmt(target.x)}"
    limit_text = f"{target.statement}, at most {percent(tail)} of them"
    if not target.fail_above:
        limit_text = f"{target.statement}, at least {percent(tail)} of them"
    above = [h.count_above(target.x) if h is not None else 0.0 for h in hist_c]
    if any(a is None for a in above):
        reason = f"{fmt(target.x)} lies beyond the candidate's largest bucket; add larger buckets"
        return Test(
            limit,
            threshold,
            target.statement,
            Method.GAUSSIAN_SPRT,
            quantity=beyond,
            limit_text=limit_text,
            show=percent,
            blocked=reason,
        )
    above_arr = np.array(above, dtype=float)
    relative = target.null_c is not None
    use = (n_c > 0) & (n_b > 0) if relative else n_c > 0
    pooled_b = sum_histograms([h for h, ok in zip(hist_b, n_b > 0, strict=True) if ok and h])
    tolerance, tail_tol = _quantile_tolerance_share(
        plan, limit, threshold, target, pooled_b if isinstance(pooled_b, Histogram) else None
    )
    sign = 1.0 if target.fail_above else -1.0
    delta = room(sign * (tail - tail_tol))
    #: the fields every outcome of this test shares
    common: dict[str, Any] = {
        "quantity": beyond,
        "limit_text": limit_text,
        "show": percent,
        "allowed": tail,
        "tolerance": tolerance,
        "delta": delta,
        "bound_alpha": alpha,
    }
    if not relative and len(set(h.groups[use].tolist())) == 1:
        # One cohort, absolute limit: exact on the candidate's share beyond x.
        s, n = float(above_arr[use].sum()), float(n_c[use].sum())
        share = s / n
        if delta > 0:
            log_fail = sequential.bernoulli_fail_log_e_one(s, n, tail_tol, tail)
            log_pass = sequential.bernoulli_pass_log_e_one(s, n, tail_tol, tail)
            method = Method.BERNOULLI_SPRT
        else:
            tau = estimators.absolute_tau(tail, fail_above=target.fail_above)
            log_fail = float(
                sequential.beta_mixture_log_e(s, n, tail, tau, above=target.fail_above)
            )
            log_pass = 0.0
            method = Method.BETA_MIXTURE
        lower, upper = sequential.beta_mixture_interval(
            s, n, tail, max(delta, estimators.MIN_TAU), alpha
        )
        return Test(
            limit,
            threshold,
            target.statement,
            method,
            estimate=share,
            lower=lower,
            upper=upper,
            log_fail=log_fail,
            log_pass=log_pass,
            d_hat=sign * (share - tail),
            information=n / (tail * (1 - tail)),
            **common,
        )
    weights = estimators.population_weights(
        np.where(use, n_c, 0.0), n_b, both=relative, groups=h.groups
    )
    contrast = estimators.exceedance_contrast(
        above_arr,
        n_c,
        weights,
        tail,
        fail_above=target.fail_above,
        null_c=target.null_c,
        baseline_samples=target.baseline_samples,
    )
    d_hat, variance = float(contrast.estimate), float(contrast.variance)
    log_fail, log_pass, information, radius = gaussian_test(d_hat, variance, delta, alpha)
    share = tail + sign * d_hat
    return Test(
        limit,
        threshold,
        target.statement,
        Method.GAUSSIAN_SPRT if delta > 0 else Method.NORMAL_MIXTURE,
        estimate=share,
        lower=share - radius,
        upper=share + radius,
        log_fail=log_fail,
        log_pass=log_pass,
        d_hat=d_hat,
        information=information,
        **common,
    )
