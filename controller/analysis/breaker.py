"""The circuit breaker: FAIL at once on a gross failure, before `minSamples`.

Gross is five times the allowed share of bad requests (or halfway from it to
all requests bad, if nearer), confirmed by an exact Beta-mixture test against
the limit itself with the breaker's share of the budget, so it adds speed,
never false rollbacks.
"""

from __future__ import annotations

from controller.analysis import sequential
from controller.analysis.checks import Format
from controller.analysis.strata import Means
from controller.analysis.verdicts import (
    Limit,
    LimitCheck,
    Method,
    Verdict,
)

#: how far beyond the allowed share of bad requests a candidate is grossly beyond it
GROSS_FACTOR = 5.0


def _gross(allowed: float, *, fail_above: bool) -> float:
    """The value from which a candidate is grossly beyond `allowed`.

    On the share of bad requests (the value itself when higher is worse, its
    complement otherwise): GROSS_FACTOR times the allowed share, or halfway from
    it to all requests bad, whichever is nearer (2 % allowed: 10 %; 30 %
    allowed: 65 %). Increasing in `allowed` either way.
    """
    bad = allowed if fail_above else 1.0 - allowed
    gross_bad = min(bad * GROSS_FACTOR, bad + (1.0 - bad) / 2.0)
    return gross_bad if fail_above else 1.0 - gross_bad


def _maybe_gross(limit: Limit, threshold: float, candidate: float, baseline: float) -> bool:
    """A cheap necessary condition for the breaker, before any confidence bound.

    The baseline's confidence bound is at least (at most) its point estimate, so
    if the candidate is not grossly beyond the limit built from the estimate, it
    is not beyond the one built from the bound either.
    """
    if limit is Limit.MAX_INCREASE:
        allowed = baseline + threshold
    elif limit is Limit.MAX_RATIO:
        allowed = baseline * threshold
    else:
        allowed = baseline - threshold
        return allowed > 0.0 and candidate <= _gross(allowed, fail_above=False)
    return allowed < 1.0 and candidate >= _gross(allowed, fail_above=True)


def trip_breaker(
    limit: Limit,
    threshold: float,
    m: Means,
    alpha: float,
    fmt: Format,
    *,
    null: float | None = None,
) -> LimitCheck | None:
    """The circuit breaker: FAIL now on a gross failure, confirmed by an exact test.

    Gross (`_gross`) means at least five times the allowed share of bad requests
    (or halfway from it to all requests bad, if nearer) on all the cell's
    candidate requests together; the exact Beta-mixture test then has to reject
    "within the allowed value" with the breaker's share of the budget, so which
    candidates are eligible changes how soon it fires, never its false alarms. For a relative
    limit the allowed value is built from the baseline's own exact confidence
    bound, so the baseline's noise cannot trip it either.
    """
    s_c, n_c = float(m.s_c.sum()), float(m.n_c.sum())
    fail_above = limit not in (Limit.MIN, Limit.MAX_DECREASE)
    if limit in (Limit.MAX, Limit.MIN):
        allowed, test_alpha = (threshold if null is None else null), alpha
    else:
        s_b, n_b = float(m.s_b.sum()), float(m.n_b.sum())
        if n_b <= 0 or not _maybe_gross(limit, threshold, s_c / n_c, s_b / n_b):
            return None
        test_alpha = alpha / 2
        # A nearly flat prior: the baseline's bound should not lean on the limit.
        lower_b, upper_b = sequential.beta_mixture_interval(s_b, n_b, 0.5, 0.29, test_alpha)
        if limit is Limit.MAX_INCREASE:
            allowed = upper_b + threshold
        elif limit is Limit.MAX_RATIO:
            allowed = upper_b * threshold
        else:
            allowed = lower_b - threshold
    if not 0.0 < allowed < 1.0:
        return None
    gross = _gross(allowed, fail_above=fail_above)
    value = s_c / n_c
    if (value < gross) if fail_above else (value > gross):
        return None
    tau = abs(gross - allowed)
    log_fail = float(sequential.beta_mixture_log_e(s_c, n_c, allowed, tau, above=fail_above))
    log_threshold = float(sequential.log_threshold(test_alpha))
    if log_fail < log_threshold:
        return None
    direction = "above" if fail_above else "below"
    return LimitCheck(
        Limit.BREAKER,
        threshold,
        Verdict.FAIL,
        f"circuit breaker on {limit} {threshold:g}: "
        f"candidate not grossly {direction} {fmt(allowed)}",
        Method.BETA_MIXTURE,
        estimate=value,
        allowed=allowed,
        log_e_fail=log_fail,
        log_threshold=log_threshold,
        alpha=test_alpha,
        reason=(
            f"circuit breaker: candidate {fmt(value)} over {n_c:.0f} requests is grossly "
            f"{direction} the allowed {fmt(allowed)} ({limit} {threshold:g})"
        ),
    )
