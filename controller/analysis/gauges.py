"""Gauges: a plain value compared to its limits as it is, with no statistics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from controller.analysis.checks import (
    finish,
    formatter,
    no_candidate_yet,
    not_enough,
)
from controller.analysis.observations import (
    Gauge,
    Sample,
)
from controller.analysis.plan import RELATIVE, MetricPlan
from controller.analysis.strata import Strata
from controller.analysis.verdicts import (
    Arm,
    CellVerdict,
    Limit,
    LimitCheck,
    Method,
    Verdict,
)


def _gauge_value(samples: Sequence[Sample | None], weights: Sequence[float]) -> Gauge | None:
    """One gauge for the cell: the only one, or the cohorts' mean weighted by traffic."""
    present = [(s, w) for s, w in zip(samples, weights, strict=True) if s is not None]
    if len(present) == 1 and isinstance(present[0][0], Gauge):
        return present[0][0]
    gauges = [(s, w) for s, w in present if isinstance(s, Gauge) and s.samples is not None]
    if not gauges or len(gauges) != len(present):
        return None
    w = np.array([w for _, w in gauges], dtype=float)
    if w.sum() <= 0:
        return None
    v = np.array([g.value for g, _ in gauges], dtype=float)
    counts = sum(g.samples or 0.0 for g, _ in gauges)
    return Gauge(float(np.sum(w * v) / w.sum()), float(counts))


def judge_gauge(
    plan: MetricPlan, base: CellVerdict, strata: Strata, min_samples: int
) -> CellVerdict:
    # Standardise per-cohort gauges to the population mix when their sample counts
    # are known (tokens per request); a gauge without counts must come as one series.
    weights = []
    for b, c in zip(strata.baseline, strata.candidate, strict=True):
        nb = b.samples if isinstance(b, Gauge) and b.samples is not None else 0.0
        nc = c.samples if isinstance(c, Gauge) and c.samples is not None else 0.0
        weights.append(nb + nc)
    candidate = _gauge_value(strata.candidate, weights)
    baseline = _gauge_value(strata.baseline, weights)
    arm_b = Arm(baseline.value if baseline else None, baseline.samples if baseline else None)
    if candidate is None:
        return no_candidate_yet(base, arm_b, Arm(None, None), "no candidate value yet")
    arm_c = Arm(candidate.value, candidate.samples)
    if candidate.samples is not None and candidate.samples < min_samples:
        return not_enough(base, arm_b, arm_c, candidate.samples, min_samples, "candidate")
    checks = []
    for limit, threshold in plan.limits:
        checks.append(_gauge_check(plan, limit, threshold, candidate.value, baseline))
    return finish(base, checks, arm_b, arm_c)


def _gauge_check(
    plan: MetricPlan, limit: Limit, threshold: float, value: float, baseline: Gauge | None
) -> LimitCheck:
    fmt = formatter(plan.unit)
    if limit in RELATIVE and baseline is None:
        return LimitCheck(
            limit,
            threshold,
            Verdict.INCONCLUSIVE,
            f"{limit} {threshold:g} needs the baseline's value",
            Method.AS_IS,
            reason="no baseline value to compare with",
        )
    if limit is Limit.MAX:
        estimate, ok, text = (
            value,
            value <= threshold,
            f"candidate {fmt(value)} <= {fmt(threshold)}",
        )
    elif limit is Limit.MIN:
        estimate, ok, text = (
            value,
            value >= threshold,
            f"candidate {fmt(value)} >= {fmt(threshold)}",
        )
    else:
        assert baseline is not None
        b = baseline.value
        if limit is Limit.MAX_INCREASE:
            estimate, ok = value - b, value - b <= threshold
            text = f"candidate - baseline = {fmt(value - b)} <= {fmt(threshold)}"
        elif limit is Limit.MAX_DECREASE:
            estimate, ok = b - value, b - value <= threshold
            text = f"baseline - candidate = {fmt(b - value)} <= {fmt(threshold)}"
        else:
            estimate, ok = (value / b if b else math.inf), value <= threshold * b
            text = f"candidate {fmt(value)} <= {threshold:g} × baseline {fmt(b)}"
    verdict = Verdict.PASS if ok else Verdict.FAIL
    reason = "" if ok else f"gauge out of limit: not ({text}); compared as it is, no statistics"
    return LimitCheck(
        limit,
        threshold,
        verdict,
        text,
        Method.AS_IS,
        estimate=estimate,
        allowed=threshold,
        reason=reason,
    )
