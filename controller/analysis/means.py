"""Proportions and scores: the candidate's mean against an absolute limit or the baseline.

For one cohort and an absolute limit on a proportion the tests are exact
Bernoulli likelihood ratios; otherwise they are Gaussian SPRTs on the
standardised contrast (`controller.analysis.estimators`).
"""

from __future__ import annotations

import math
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
    relative_quantity,
    relative_statement,
    room,
    times,
    tolerance_of,
)
from controller.analysis.plan import RELATIVE, Budget, JudgeOptions, MetricPlan, Shape
from controller.analysis.strata import Means, Strata, means_of, pooled_mean, standardised
from controller.analysis.verdicts import (
    Arm,
    CellVerdict,
    Limit,
    Method,
    NoDataReason,
)


def judge_means(
    plan: MetricPlan,
    base: CellVerdict,
    strata: Strata,
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict | Draft:
    means = means_of(plan, strata)
    if isinstance(means, str):
        return no_data_verdict(base, NoDataReason.QUERY_FAILED, means)
    n_c, n_b = float(means.n_c.sum()), float(means.n_b.sum())
    fmt = formatter(plan.unit)
    arm_c = Arm(pooled_mean(means.s_c, means.n_c), n_c)
    arm_b = Arm(pooled_mean(means.s_b, means.n_b), n_b)
    if n_c <= 0:
        return no_candidate_yet(base, arm_b, arm_c)
    if n_c >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            tripped = trip_breaker(limit, threshold, means, budget.breaker_alpha, fmt)
            if tripped is not None:
                return finish(base, [tripped], arm_b, arm_c)
    if n_c < min_samples:
        return not_enough(base, arm_b, arm_c, n_c, min_samples, "the candidate")
    tests = []
    for limit, threshold in plan.limits:
        if limit in RELATIVE:
            tests.append(_relative_test(plan, limit, threshold, means, budget, min_samples, fmt))
        else:
            tests.append(_absolute_test(plan, limit, threshold, means, budget, fmt))
    return Draft(base, arm_b, arm_c, tuple(tests))


def _absolute_test(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: Means,
    budget: Budget,
    fmt: Format,
) -> Test:
    fail_above = limit is Limit.MAX
    sign = 1.0 if fail_above else -1.0
    weights = estimators.population_weights(m.n_c, m.n_b, both=False, groups=m.groups)
    baseline = standardised(m.s_b, m.n_b, weights)
    tolerance = tolerance_of(plan, limit, threshold, baseline)
    delta = room(sign * (threshold - tolerance))
    statement = f"candidate {'<=' if fail_above else '>='} {fmt(threshold)}"
    alpha = budget.fail_share
    used = m.n_c > 0
    #: the fields every outcome of this test shares
    common: dict[str, Any] = {
        "quantity": "candidate",
        "limit_text": f"{limit} {fmt(threshold)}",
        "show": fmt,
        "allowed": threshold,
        "tolerance": tolerance,
        "delta": max(delta, 0.0),
        "bound_alpha": alpha,
    }
    if m.single_cohort() and plan.shape is Shape.PROPORTION:
        # One cohort, 0/1 values: exact Bernoulli likelihood ratios, at any sample size.
        s, n = float(m.s_c[used].sum()), float(m.n_c[used].sum())
        estimate = s / n
        if delta > 0:
            log_fail = sequential.bernoulli_fail_log_e_one(s, n, tolerance, threshold)
            log_pass = sequential.bernoulli_pass_log_e_one(s, n, tolerance, threshold)
        else:
            tau = estimators.absolute_tau(threshold, fail_above=fail_above)
            log_fail = float(sequential.beta_mixture_log_e(s, n, threshold, tau, above=fail_above))
            log_pass = 0.0
        scale = max(delta, estimators.MIN_TAU)
        lower, upper = sequential.beta_mixture_interval(s, n, threshold, scale, alpha)
        clipped = min(max(threshold, 1e-6), 1 - 1e-6)
        return Test(
            limit,
            threshold,
            statement,
            Method.BERNOULLI_SPRT,
            estimate=estimate,
            lower=lower,
            upper=upper,
            log_fail=log_fail,
            log_pass=log_pass,
            d_hat=sign * (estimate - threshold),
            information=n / (clipped * (1 - clipped)),
            **common,
        )
    null_rates = None
    if m.var_c is None and baseline is not None and bool(np.all(m.n_b[used] > 0)):
        # the candidate on the limit: the baseline's rates moved together onto it
        shrunk = (m.s_b + 0.5) / (m.n_b + 1.0)
        null_rates = np.clip(shrunk + (threshold - baseline), 1e-6, 1 - 1e-6)
    contrast = estimators.absolute_contrast(
        m.s_c,
        m.n_c,
        weights,
        threshold,
        fail_above=fail_above,
        variance_c=m.var_c,
        null_rates=null_rates,
    )
    d_hat, variance = float(contrast.estimate), float(contrast.variance)
    log_fail, log_pass, information, radius = gaussian_test(d_hat, variance, delta, alpha)
    estimate = threshold + sign * d_hat
    if not m.single_cohort():
        statement += " (cohorts weighted by their share of all traffic)"
    return Test(
        limit,
        threshold,
        statement,
        Method.GAUSSIAN_SPRT,
        estimate=estimate,
        lower=estimate - radius,
        upper=estimate + radius,
        log_fail=log_fail,
        log_pass=log_pass,
        d_hat=d_hat,
        information=information,
        **common,
    )


def _relative_test(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: Means,
    budget: Budget,
    min_samples: int,
    fmt: Format,
) -> Test:
    n_b = float(m.n_b[(m.n_c > 0) & (m.n_b > 0)].sum())
    statement = relative_statement(limit, threshold, fmt)
    show: Format = times if limit is Limit.MAX_RATIO else fmt
    tolerance = tolerance_of(plan, limit, threshold, None)
    #: the fields every outcome of this test shares
    common: dict[str, Any] = {
        "quantity": relative_quantity(limit),
        "limit_text": f"{limit} {limit_words(limit, threshold, fmt)}",
        "show": show,
        "allowed": threshold,
        "tolerance": tolerance,
    }
    if n_b < min_samples:
        blocked = f"not enough baseline traffic to compare with: {n_b:.0f} of {min_samples}"
        return Test(
            limit,
            threshold,
            statement,
            Method.GAUSSIAN_SPRT,
            blocked=blocked,
            **common,
        )
    contrast = estimators.relative_contrast(
        m.s_c,
        m.n_c,
        m.s_b,
        m.n_b,
        limit,
        threshold,
        variance_c=m.var_c,
        variance_b=m.var_b,
        groups=m.groups,
    )
    d_hat, variance = float(contrast.estimate), float(contrast.variance)
    if limit is Limit.MAX_RATIO:
        weights = estimators.population_weights(m.n_c, m.n_b, both=True, groups=m.groups)
        base_mean = float(
            np.sum(weights * np.divide(m.s_b, m.n_b, where=m.n_b > 0, out=np.zeros_like(m.s_b)))
        )
        # D = candidate - r × baseline: the tolerance t sits at (t - r) × baseline
        delta = room((threshold - tolerance) * base_mean)
    else:
        base_mean = 1.0
        delta = room(threshold - tolerance)
    alpha = budget.fail_share
    log_fail, log_pass, information, radius = gaussian_test(d_hat, variance, delta, alpha)
    if limit is Limit.MAX_RATIO:
        if base_mean > 0:
            estimate = threshold + d_hat / base_mean
            lower, upper = estimate - radius / base_mean, estimate + radius / base_mean
        else:
            estimate, lower, upper = math.inf, -math.inf, math.inf
    else:
        estimate = d_hat + threshold
        lower, upper = estimate - radius, estimate + radius
    return Test(
        limit,
        threshold,
        statement,
        Method.GAUSSIAN_SPRT,
        estimate=estimate,
        lower=lower,
        upper=upper,
        log_fail=log_fail,
        log_pass=log_pass,
        d_hat=d_hat,
        information=information,
        delta=max(delta, 0.0),
        bound_alpha=alpha,
        **common,
    )
