"""One limit, tested: the builder every check kind goes through, and the cell verdicts.

Each check kind (`means`, `quantiles`) turns a limit into a `Test`: the
contrast on the test's own scale (0 at the limit, -delta at the tolerance),
its information and the FAIL and PASS e-values. Once the FAIL family is
settled, `limit_check` is the one place a statistical `LimitCheck` is made:
its verdict, whether it is powered, how many samples it still needs, and the
sentence that explains it. `finish` and its siblings make the cell's verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from controller.analysis import estimators, sequential
from controller.analysis.plan import Budget, MetricPlan
from controller.analysis.verdicts import (
    Arm,
    CellVerdict,
    Limit,
    LimitCheck,
    Method,
    NoDataReason,
    Verdict,
    worst,
)
from controller.policy import Unit

Format = Callable[[float], str]


def tolerance_of(plan: MetricPlan, limit: Limit, threshold: float, baseline: float | None) -> float:
    """The tolerance of a limit, in the limit's own unit (see docs/judge.md).

    Explicit in the policy, or half the limit's distance from "no change":
    half a `maxIncrease`/`maxDecrease`, halfway from 1 to a `maxRatio`, and
    for `max`/`min` half the baseline's distance from the limit, on the limit's
    healthy side (from 0 for a `max`, or from 1 for a `min` on a 0..1 value,
    when the baseline is unknown, and never further than that).

    The baseline is an estimate from the same looks, so the tolerance must not
    jump when it crosses the limit: a baseline measured at 2.54 s for a true
    p95 of 2.28 s once made a `max: 2.5s` tolerance 1.25 s, and an unchanged
    candidate was rolled back at a quarter of its first looks.
    """
    explicit = plan.tolerances.get(limit.value)
    if explicit is not None:
        return explicit
    if limit in (Limit.MAX_INCREASE, Limit.MAX_DECREASE):
        return threshold / 2.0
    if limit is Limit.MAX_RATIO:
        return 1.0 + (threshold - 1.0) / 2.0
    if limit is Limit.MAX:
        floor = threshold / 2.0
        if baseline is None:
            return floor
        return max(threshold - abs(threshold - baseline) / 2.0, floor)
    ceiling = threshold + (1.0 - threshold) / 2.0
    if baseline is None:
        return ceiling
    return min(threshold + abs(baseline - threshold) / 2.0, ceiling)


@dataclass(frozen=True)
class Test:
    """One limit tested in one cell, before the FAIL family is settled.

    On the test's own scale a contrast D is 0 at the limit, -delta at the
    tolerance and positive beyond the limit; `information` is 1 / its
    variance. The display fields are in the unit a person reads.
    """

    limit: Limit
    threshold: float
    statement: str
    method: Method
    #: what the estimate is of ("candidate", "candidate - baseline", ...)
    quantity: str
    #: how the limit reads ("maxIncrease 2.00%")
    limit_text: str
    show: Format
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    allowed: float | None = None
    tolerance: float | None = None
    log_fail: float = 0.0
    log_pass: float = 0.0
    d_hat: float = 0.0
    information: float = 0.0
    delta: float = 0.0
    bound_alpha: float | None = None
    #: why the test could not run (then it is INCONCLUSIVE, whatever else)
    blocked: str = ""

    @property
    def ran(self) -> bool:
        return not self.blocked


@dataclass(frozen=True)
class Draft:
    """A cell whose limits are tested but whose FAIL is not settled yet."""

    base: CellVerdict
    baseline: Arm
    candidate: Arm
    tests: tuple[Test, ...]

    @property
    def candidate_samples(self) -> float:
        return self.candidate.samples or 0.0


def limit_check(
    test: Test, log_fail_needed: float | None, budget: Budget, samples: float
) -> LimitCheck:
    """The one builder of a statistical `LimitCheck`: verdict, power, reason."""
    log_pass_needed = budget.log_pass_threshold
    if not test.ran or log_fail_needed is None:
        return LimitCheck(
            test.limit,
            test.threshold,
            Verdict.INCONCLUSIVE,
            test.statement,
            test.method,
            reason=test.blocked or "not tested",
            alpha=budget.fail_share,
            log_threshold=log_fail_needed,
            log_pass_threshold=log_pass_needed,
            tolerance=test.tolerance,
        )
    if test.log_fail >= log_fail_needed:
        verdict = Verdict.FAIL
    elif test.delta > 0 and test.log_pass >= log_pass_needed:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    powered_at = (
        sequential.powered_information(test.delta, budget.log_power_threshold, budget.power)
        if test.delta > 0
        else math.inf
    )
    powered = test.information >= powered_at
    needed = None
    if verdict is Verdict.INCONCLUSIVE and test.information > 0 and samples > 0:
        needed = _samples_to_decide(test, log_fail_needed, log_pass_needed, powered_at, samples)
    show = test.show
    bounds = (
        f"[{show(test.lower)}, {show(test.upper)}]"
        if test.lower is not None and test.upper is not None
        else ""
    )
    quantity = f"{test.quantity} {show(test.estimate)}" if test.estimate is not None else ""
    confidence = 1.0 - (test.bound_alpha or budget.fail_share)
    reason = ""
    if verdict is Verdict.FAIL and test.d_hat >= 0:
        reason = (
            f"{quantity} breaks {test.limit_text}: with {confidence:.4%} confidence "
            f"it lies in {bounds}"
        )
    elif verdict is Verdict.FAIL:
        # Between the tolerance and the limit either verdict is allowed; this one says
        # which side the evidence favours, and that the estimate is short of the limit.
        fine = f" (fine up to {show(test.tolerance)})" if test.tolerance is not None else ""
        reason = (
            f"{quantity} is past what {test.limit_text} tolerates{fine}: the evidence "
            f"favours the limit over the tolerance, with {confidence:.4%} confidence "
            f"it lies in {bounds}"
        )
    elif verdict is Verdict.INCONCLUSIVE:
        fine = f" (fine up to {show(test.tolerance)})" if test.tolerance is not None else ""
        side = "the limit" if test.d_hat + test.delta / 2.0 > 0 else "the tolerance"
        reason = (
            f"cannot tell yet whether {quantity} is within {test.limit_text}{fine}: "
            f"plausibly {bounds}; the evidence so far leans towards {side}"
        )
        if powered:
            reason += (
                f"; powered: a candidate at the limit would have failed by now with "
                f"{budget.power:.0%} probability"
            )
    return LimitCheck(
        test.limit,
        test.threshold,
        verdict,
        test.statement,
        test.method,
        estimate=test.estimate,
        allowed=test.allowed,
        lower=test.lower,
        upper=test.upper,
        log_e_fail=test.log_fail,
        log_e_pass=test.log_pass,
        log_threshold=log_fail_needed,
        alpha=budget.fail_share,
        reason=reason,
        tolerance=test.tolerance,
        log_pass_threshold=log_pass_needed,
        powered=powered,
        needed_samples=needed,
    )


def _samples_to_decide(
    test: Test, log_fail_needed: float, log_pass_needed: float, powered_at: float, samples: float
) -> float:
    """Further candidate samples until the test decides, were the estimate the truth.

    The SPRT statistic S = delta I (D + delta / 2) drifts by delta (D + delta / 2)
    per unit of information; it FAILs about when S reaches the FAIL threshold
    (plus log 2: the mixture's weight on the limit) and PASSes when -S reaches
    the PASS threshold. Past `powered_at` the test has said enough either way.
    Information grows with candidate samples at today's rate per sample.
    """
    per_sample = test.information / samples
    if test.delta <= 0:
        return math.inf
    s_now = sequential.sprt_log_e_one(test.d_hat, test.information, test.delta)
    drift = test.delta * (test.d_hat + test.delta / 2.0)
    if drift > 0:
        level = log_fail_needed - math.log(sequential.FAIL_WEIGHTS[0])
        remaining = max(level - s_now, 0.0) / drift
    elif drift < 0:
        remaining = max(log_pass_needed + s_now, 0.0) / -drift
    else:
        remaining = math.inf
    remaining = min(remaining, max(powered_at - test.information, 0.0))
    return remaining / per_sample if math.isfinite(remaining) else math.inf


#: an indifference zone narrower than this (on a 0..1 scale) is no zone at all
MIN_DELTA = 1e-6


def room(delta: float) -> float:
    """The width of the indifference zone, or 0 when there is none to speak of."""
    return delta if delta >= MIN_DELTA else 0.0


def gaussian_test(
    d_hat: float, variance: float, delta: float, bound_alpha: float
) -> tuple[float, float, float, float]:
    """(log e FAIL, log e PASS, information, bound radius) of a Gaussian contrast."""
    information = 1.0 / variance if variance > 0 else 0.0
    if delta > 0:
        log_fail = sequential.fail_log_e_one(d_hat, information, delta)
        log_pass = sequential.pass_log_e_one(d_hat, information, delta)
        tau = delta
    else:
        # no room between "no change" and the limit: the old test against the limit
        tau = estimators.ZERO_MARGIN_TAU
        log_fail = float(sequential.normal_mixture_log_e(d_hat, variance, tau))
        log_pass = 0.0
    radius = sequential.normal_mixture_radius_one(variance, tau, bound_alpha)
    return log_fail, log_pass, information, radius


def relative_quantity(limit: Limit) -> str:
    return {
        Limit.MAX_INCREASE: "candidate - baseline",
        Limit.MAX_DECREASE: "baseline - candidate",
        Limit.MAX_RATIO: "candidate / baseline",
    }[limit]


def limit_words(limit: Limit, threshold: float, fmt: Format) -> str:
    return f"{threshold:g}×" if limit is Limit.MAX_RATIO else fmt(threshold)


def relative_statement(limit: Limit, threshold: float, fmt: Format) -> str:
    if limit is Limit.MAX_RATIO:
        return f"candidate <= {threshold:g} × baseline"
    return f"{relative_quantity(limit)} <= {fmt(threshold)}"


def no_data_verdict(
    base: CellVerdict, reason: NoDataReason, text: str, query: str = ""
) -> CellVerdict:
    return CellVerdict(
        base.metric,
        base.cohort,
        Verdict.NO_DATA,
        base.critical,
        text,
        no_data=reason,
        query=query or base.query,
    )


def finish(
    base: CellVerdict,
    checks: list[LimitCheck],
    baseline: Arm,
    candidate: Arm,
) -> CellVerdict:
    verdict = worst(c.verdict for c in checks)
    deciding = next((c for c in checks if c.verdict is verdict), None)
    if verdict is Verdict.PASS or deciding is None:
        reason = "within every limit: " + "; ".join(c.statement for c in checks)
    else:
        reason = deciding.reason or deciding.statement
    tested = [c for c in checks if c.method is not Method.AS_IS and c.limit is not Limit.BREAKER]
    # every limit either PASSed or has the information to have caught harm by now
    powered = bool(tested) and all(c.verdict is Verdict.PASS or c.powered for c in tested)
    needed = None
    if verdict is Verdict.INCONCLUSIVE and tested:
        waiting = [c.needed_samples for c in tested if c.verdict is Verdict.INCONCLUSIVE]
        if waiting and all(n is not None and math.isfinite(n) for n in waiting):
            needed = max(n for n in waiting if n is not None)
    return CellVerdict(
        base.metric,
        base.cohort,
        verdict,
        base.critical,
        reason,
        baseline=baseline,
        candidate=candidate,
        checks=tuple(checks),
        decided_by=deciding.limit if deciding is not None else None,
        query=base.query,
        powered=powered,
        needed_samples=needed,
    )


def not_enough(
    base: CellVerdict, arm_b: Arm, arm_c: Arm, have: float, need: int, who: str
) -> CellVerdict:
    return CellVerdict(
        base.metric,
        base.cohort,
        Verdict.INCONCLUSIVE,
        base.critical,
        f"not enough traffic yet: {who} has {have:.0f} of {need} samples",
        baseline=arm_b,
        candidate=arm_c,
        query=base.query,
        needed_samples=max(need - have, 0.0),
    )


def no_candidate_yet(
    base: CellVerdict, arm_b: Arm, arm_c: Arm, text: str = "no candidate requests yet"
) -> CellVerdict:
    """No candidate traffic in the cell yet: not a failed measurement, just no evidence."""
    return CellVerdict(
        base.metric,
        base.cohort,
        Verdict.INCONCLUSIVE,
        base.critical,
        text,
        baseline=arm_b,
        candidate=arm_c,
        query=base.query,
    )


def times(x: float) -> str:
    return f"{x:.3g}×"


def percent(x: float) -> str:
    return f"{x:.2%}" if math.isfinite(x) else str(x)


def formatter(unit: Unit | None) -> Format:
    if unit is Unit.RATIO:
        return percent
    if unit is Unit.SECONDS:
        return lambda x: f"{x:.3g}s"
    return lambda x: f"{x:.4g}"
