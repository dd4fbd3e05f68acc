"""The judge: cumulative counts in, a verdict with evidence per metric × cohort out.

`judge` is a pure function of the analysis policy, the cohorts, the
observations and the time of the look (which it only records). It never reads
a clock and does no I/O, so every decision can be replayed from the audit log
and tested as a table.

How a cell is judged, in order (the first rule that applies decides):

1. A failed measurement (the query failed, or returned no series at all):
   NO_DATA. A candidate with no requests in the cell yet is INCONCLUSIVE ("no
   candidate requests yet"): no evidence is not a failed measurement.
2. The circuit breaker: with at least `breaker_min_samples` candidate samples,
   a candidate grossly beyond the limit (five times its allowed share of bad
   requests, or halfway to all of them bad if nearer: 5 % failing for
   `error-rate max: 0.01`) whose excess an exact test confirms FAILs at once,
   without waiting for `minSamples`.
3. Fewer than `minSamples` candidate samples (or baseline samples, for a limit
   relative to the baseline): INCONCLUSIVE, "not enough traffic yet". Never PASS.
4. Every limit of the metric is a one-sided hypothesis tested with an
   anytime-valid sequential test (`controller.analysis.sequential`): FAIL when
   the data shows the candidate beyond the limit, PASS when it shows it within,
   INCONCLUSIVE otherwise. The worst limit decides the cell.

The confidence budget. `1 - confidence` is the chance, over the whole rollout,
of rolling back a candidate that is within every limit. It is split evenly
(Bonferroni) over every critical metric's limits in every cohort and overall;
each test keeps its share valid across every look and every step because its
e-process runs on counts cumulative from the start of the analysis. Advisory
metrics (`critical: false`) never roll back, so they get their own, separate
budget. Gauges are compared to their limits as they are and spend no budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import numpy as np

from controller.analysis import estimators, sequential
from controller.analysis.observations import (
    Gauge,
    Histogram,
    Measurement,
    MeasurementFailure,
    MetricObservation,
    Proportion,
    Sample,
    VersionData,
)
from controller.analysis.verdicts import (
    Arm,
    CellVerdict,
    Judgement,
    Limit,
    LimitCheck,
    Method,
    NoDataReason,
    Verdict,
    worst,
)
from controller.policy import OVERALL, TEMPLATES, Analysis, MetricKind, MetricSpec, Unit

_Format = Callable[[float], str]

RELATIVE = (Limit.MAX_INCREASE, Limit.MAX_DECREASE, Limit.MAX_RATIO)
_FIELDS = {
    Limit.MAX: "max",
    Limit.MIN: "min",
    Limit.MAX_INCREASE: "max_increase",
    Limit.MAX_DECREASE: "max_decrease",
    Limit.MAX_RATIO: "max_ratio",
}


@dataclass(frozen=True)
class JudgeOptions:
    """Knobs of the judge that the policy does not (yet) expose."""

    #: the circuit breaker needs at least this many candidate samples in a cell
    breaker_min_samples: int = 20
    #: the share of each test's alpha spent on the circuit breaker
    breaker_share: float = 0.1


class Shape(StrEnum):
    """How a metric's samples are read: the judge's view of a metric kind."""

    PROPORTION = "proportion"  # events out of trials
    MEAN = "mean"  # mean of a 0..1 score histogram
    QUANTILE = "quantile"  # a quantile of a histogram
    GAUGE = "gauge"  # a value compared as it is


@dataclass(frozen=True)
class MetricPlan:
    """One metric spec, resolved: how its samples are read and which limits it has."""

    spec: MetricSpec
    name: str
    shape: Shape
    unit: Unit | None
    limits: tuple[tuple[Limit, float], ...]
    quantile: float | None = None
    threshold: float | None = None

    @property
    def critical(self) -> bool:
        return self.spec.critical

    @property
    def statistical(self) -> bool:
        return self.shape is not Shape.GAUGE


def plan_metric(spec: MetricSpec) -> MetricPlan:
    """Resolve a metric spec: its shape (how samples are read), unit and limits."""
    limits = tuple(
        (limit, float(value))
        for limit, field in _FIELDS.items()
        if (value := getattr(spec, field)) is not None
    )
    template = TEMPLATES.get(spec.template) if spec.template is not None else None
    unit = template.unit if template is not None else None
    kind = spec.metric_kind
    if kind is MetricKind.PROPORTION:
        return MetricPlan(spec, spec.metric_name, Shape.PROPORTION, unit or Unit.RATIO, limits)
    if kind is MetricKind.GAUGE:
        return MetricPlan(spec, spec.metric_name, Shape.GAUGE, unit, limits)
    quantile = template.quantile if template is not None else spec.quantile
    if quantile is not None:
        return MetricPlan(spec, spec.metric_name, Shape.QUANTILE, unit, limits, quantile=quantile)
    if spec.threshold is not None:
        # quality-score with a threshold: the share of scores at or below it
        return MetricPlan(
            spec, spec.metric_name, Shape.PROPORTION, Unit.RATIO, limits, threshold=spec.threshold
        )
    return MetricPlan(spec, spec.metric_name, Shape.MEAN, unit or Unit.SCORE, limits)


def count_tests(plans: Sequence[MetricPlan], cells: int, *, critical: bool) -> int:
    """How many (metric, cohort, limit) tests share one budget."""
    return sum(len(p.limits) * cells for p in plans if p.statistical and p.critical == critical)


def alpha_per_test(alpha: float, tests: int) -> float:
    """Bonferroni: each test gets an equal share, so all together stay within alpha."""
    return alpha / max(tests, 1)


def judge(
    analysis: Analysis,
    cohorts: Sequence[str],
    observations: Mapping[str, MetricObservation],
    *,
    at: datetime,
    options: JudgeOptions | None = None,
) -> Judgement:
    """Judge every metric of `analysis` in every cohort and overall at the look `at`.

    `cohorts` are the policy's cohort names (label values of `cohort`); the
    overall cell covers every label value the queries returned. A metric with
    no entry in `observations` is NO_DATA everywhere.
    """
    options = options or JudgeOptions()
    plans = [plan_metric(m) for m in analysis.metrics]
    cells = [*cohorts, OVERALL]
    alpha = 1.0 - analysis.confidence
    critical_tests = count_tests(plans, len(cells), critical=True)
    advisory_tests = count_tests(plans, len(cells), critical=False)
    budget = {
        True: alpha_per_test(alpha, critical_tests),
        False: alpha_per_test(alpha, advisory_tests),
    }
    verdicts = []
    for plan in plans:
        observation = observations.get(plan.name)
        for cohort in cells:
            verdicts.append(
                judge_cell(
                    plan,
                    cohort,
                    observation,
                    alpha=budget[plan.critical],
                    min_samples=analysis.min_samples,
                    options=options,
                )
            )
    return Judgement(
        at=at,
        cells=tuple(verdicts),
        alpha=alpha,
        alpha_per_test=budget[True],
        tests=critical_tests,
    )


# --- one cell -------------------------------------------------------------------


@dataclass(frozen=True)
class _Strata:
    """The samples of one cell, cohort by cohort: (label, baseline, candidate)."""

    names: tuple[str, ...]
    baseline: tuple[Sample | None, ...]
    candidate: tuple[Sample | None, ...]


def _cell_strata(
    cohort: str, baseline: VersionData, candidate: VersionData
) -> _Strata | NoDataReason:
    if cohort != OVERALL:
        if not baseline.by_cohort and not candidate.by_cohort:
            return NoDataReason.NO_SERIES
        return _Strata(
            (cohort,), (baseline.by_cohort.get(cohort),), (candidate.by_cohort.get(cohort),)
        )
    if baseline.total is not None or candidate.total is not None:
        return _Strata(("",), (_pooled(baseline),), (_pooled(candidate),))
    names = tuple(sorted(set(baseline.by_cohort) | set(candidate.by_cohort)))
    if not names:
        return NoDataReason.NO_SERIES
    return _Strata(
        names,
        tuple(baseline.by_cohort.get(n) for n in names),
        tuple(candidate.by_cohort.get(n) for n in names),
    )


def _pooled(data: VersionData) -> Sample | None:
    """One version's samples summed over cohorts (for a query with no cohort split)."""
    if data.total is not None:
        return data.total
    samples = list(data.by_cohort.values())
    proportions = [s for s in samples if isinstance(s, Proportion)]
    if proportions and len(proportions) == len(samples):
        total = proportions[0]
        for p in proportions[1:]:
            total = total + p
        return total
    histograms = [s for s in samples if isinstance(s, Histogram)]
    if histograms and len(histograms) == len(samples):
        summed = _sum_histograms(histograms)
        return summed if isinstance(summed, Histogram) else None
    return None


def judge_cell(
    plan: MetricPlan,
    cohort: str,
    observation: MetricObservation | None,
    *,
    alpha: float,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict:
    """The verdict on one metric in one cohort (or overall)."""
    base = CellVerdict(plan.name, cohort, Verdict.NO_DATA, plan.critical, "")
    if observation is None:
        return _no_data(base, NoDataReason.QUERY_FAILED, "the metric was not measured")
    failure = _failure(observation.candidate) or _failure(observation.baseline)
    if failure is not None:
        return _no_data(
            base,
            NoDataReason.QUERY_FAILED,
            f"measurement failed ({failure.kind}): {failure.message}",
            query=failure.query,
        )
    assert isinstance(observation.baseline, VersionData)
    assert isinstance(observation.candidate, VersionData)
    strata = _cell_strata(cohort, observation.baseline, observation.candidate)
    if isinstance(strata, NoDataReason):
        where = "overall" if cohort == OVERALL else "split by cohort"
        return _no_data(base, strata, f"the query returned no series {where}")
    base = replace(base, query=observation.candidate.query)
    if plan.shape is Shape.GAUGE:
        return _judge_gauge(plan, base, strata, min_samples)
    return _judge_statistical(plan, base, strata, alpha, min_samples, options)


def _failure(m: Measurement) -> MeasurementFailure | None:
    return m if isinstance(m, MeasurementFailure) else None


def _no_data(base: CellVerdict, reason: NoDataReason, text: str, query: str = "") -> CellVerdict:
    return CellVerdict(
        base.metric,
        base.cohort,
        Verdict.NO_DATA,
        base.critical,
        text,
        no_data=reason,
        query=query or base.query,
    )


def _finish(
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
    )


# --- gauges ---------------------------------------------------------------------


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


def _judge_gauge(
    plan: MetricPlan, base: CellVerdict, strata: _Strata, min_samples: int
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
        return _no_candidate_yet(base, arm_b, Arm(None, None), "no candidate value yet")
    arm_c = Arm(candidate.value, candidate.samples)
    if candidate.samples is not None and candidate.samples < min_samples:
        return _not_enough(base, arm_b, arm_c, candidate.samples, min_samples, "candidate")
    checks = []
    for limit, threshold in plan.limits:
        checks.append(_gauge_check(plan, limit, threshold, candidate.value, baseline))
    return _finish(base, checks, arm_b, arm_c)


def _gauge_check(
    plan: MetricPlan, limit: Limit, threshold: float, value: float, baseline: Gauge | None
) -> LimitCheck:
    fmt = _formatter(plan.unit)
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


def _not_enough(
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
    )


def _no_candidate_yet(
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


# --- statistical metrics ----------------------------------------------------------


@dataclass(frozen=True)
class _Means:
    """Per-cohort sums and counts of a 0..1 per-request value, for both versions."""

    s_c: np.ndarray
    n_c: np.ndarray
    s_b: np.ndarray
    n_b: np.ndarray
    var_c: np.ndarray | None = None
    var_b: np.ndarray | None = None


def _as_proportion(sample: Sample | None, plan: MetricPlan) -> Proportion | str | None:
    if sample is None:
        return None
    if isinstance(sample, Proportion):
        return sample
    if isinstance(sample, Histogram) and plan.threshold is not None:
        below = sample.count_at_or_below(plan.threshold)
        if below is None:
            return f"the threshold {plan.threshold:g} lies beyond the histogram's largest bucket"
        return Proportion(min(below, sample.total), sample.total)
    return f"expected a proportion, got a {type(sample).__name__.lower()}"


def _as_histogram(sample: Sample | None) -> Histogram | str | None:
    if sample is None or isinstance(sample, Histogram):
        return sample
    return f"expected a histogram, got a {type(sample).__name__.lower()}"


def _score_moments(h: Histogram) -> tuple[float, float, float] | str:
    """(sum, count, per-score variance) of a 0..1 score histogram."""
    if h.sum is None:
        return "the score histogram has no _sum"
    n = h.total
    if n <= 0:
        return 0.0, 0.0, 0.25
    variance = h.score_variance() or 0.0
    # One pseudo observation at each end keeps a constant score from looking certain.
    regularised = (variance * n + 0.5) / (n + 2.0)
    return h.sum, n, regularised


def _means(plan: MetricPlan, strata: _Strata) -> _Means | str:
    rows_b: list[tuple[float, float, float]] = []
    rows_c: list[tuple[float, float, float]] = []
    for sample_b, sample_c in zip(strata.baseline, strata.candidate, strict=True):
        for sample, rows in ((sample_b, rows_b), (sample_c, rows_c)):
            if plan.shape is Shape.PROPORTION:
                p = _as_proportion(sample, plan)
                if isinstance(p, str):
                    return p
                rows.append((p.events, p.trials, 0.0) if p else (0.0, 0.0, 0.0))
            else:
                h = _as_histogram(sample)
                if isinstance(h, str):
                    return h
                if h is None:
                    rows.append((0.0, 0.0, 0.25))
                    continue
                moments = _score_moments(h)
                if isinstance(moments, str):
                    return moments
                rows.append(moments)
    b, c = np.array(rows_b, dtype=float), np.array(rows_c, dtype=float)
    if plan.shape is Shape.MEAN:
        return _Means(c[:, 0], c[:, 1], b[:, 0], b[:, 1], c[:, 2], b[:, 2])
    return _Means(c[:, 0], c[:, 1], b[:, 0], b[:, 1])


def _judge_statistical(
    plan: MetricPlan,
    base: CellVerdict,
    strata: _Strata,
    alpha: float,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict:
    if plan.shape is Shape.QUANTILE:
        return _judge_quantile(plan, base, strata, alpha, min_samples, options)
    means = _means(plan, strata)
    if isinstance(means, str):
        return _no_data(base, NoDataReason.QUERY_FAILED, means)
    n_c, n_b = float(means.n_c.sum()), float(means.n_b.sum())
    fmt = _formatter(plan.unit)
    arm_c = Arm(_pooled_mean(means.s_c, means.n_c), n_c)
    arm_b = Arm(_pooled_mean(means.s_b, means.n_b), n_b)
    if n_c <= 0:
        return _no_candidate_yet(base, arm_b, arm_c)
    breaker_alpha = alpha * options.breaker_share
    main_alpha = alpha - breaker_alpha
    if n_c >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            tripped = _breaker(limit, threshold, means, breaker_alpha, fmt)
            if tripped is not None:
                return _finish(base, [tripped], arm_b, arm_c)
    if n_c < min_samples:
        return _not_enough(base, arm_b, arm_c, n_c, min_samples, "the candidate")
    checks = []
    for limit, threshold in plan.limits:
        if limit in RELATIVE:
            checks.append(
                _relative_check(plan, limit, threshold, means, main_alpha, min_samples, fmt)
            )
        else:
            checks.append(_absolute_check(plan, limit, threshold, means, main_alpha, fmt))
    return _finish(base, checks, arm_b, arm_c)


def _pooled_mean(s: np.ndarray, n: np.ndarray) -> float | None:
    total = float(n.sum())
    return float(s.sum()) / total if total > 0 else None


def _decide(log_e_fail: float, log_e_pass: float, alpha: float) -> Verdict:
    threshold = float(sequential.log_threshold(alpha))
    if log_e_fail >= threshold:
        return Verdict.FAIL
    if log_e_pass >= threshold:
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def _absolute_check(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: _Means,
    alpha: float,
    fmt: _Format,
) -> LimitCheck:
    fail_above = limit is Limit.MAX
    sign = "<=" if fail_above else ">="
    statement = f"candidate {sign} {fmt(threshold)}"
    used = m.n_c > 0
    if int(used.sum()) == 1:
        # One cohort: the exact Beta-mixture test on the candidate's own mean.
        s, n = float(m.s_c[used][0]), float(m.n_c[used][0])
        tau = estimators.absolute_tau(threshold, fail_above=fail_above)
        log_fail = float(sequential.beta_mixture_log_e(s, n, threshold, tau, above=fail_above))
        log_pass = float(sequential.beta_mixture_log_e(s, n, threshold, tau, above=not fail_above))
        lower, upper = sequential.beta_mixture_interval(s, n, threshold, tau, alpha)
        estimate = s / n
        method = Method.BETA_MIXTURE
    else:
        weights = estimators.population_weights(m.n_c, m.n_b, both=False)
        contrast = estimators.absolute_contrast(
            m.s_c, m.n_c, weights, threshold, fail_above=fail_above, variance_c=m.var_c
        )
        log_fail, log_pass, radius = _normal(contrast, alpha)
        sign_ = 1.0 if fail_above else -1.0
        estimate = threshold + sign_ * float(contrast.estimate)
        lower, upper = estimate - radius, estimate + radius
        method = Method.NORMAL_MIXTURE
        statement += " (cohorts weighted by their share of all traffic)"
    verdict = _decide(log_fail, log_pass, alpha)
    reason = ""
    if verdict is Verdict.FAIL:
        reason = (
            f"candidate {fmt(estimate)} breaks {limit} {fmt(threshold)}: with "
            f"{1 - alpha:.4%} confidence it lies in [{fmt(lower)}, {fmt(upper)}]"
        )
    elif verdict is Verdict.INCONCLUSIVE:
        reason = (
            f"cannot tell yet whether candidate {fmt(estimate)} is within {limit} "
            f"{fmt(threshold)}: plausible range [{fmt(lower)}, {fmt(upper)}]"
        )
    return LimitCheck(
        limit,
        threshold,
        verdict,
        statement,
        method,
        estimate=estimate,
        allowed=threshold,
        lower=lower,
        upper=upper,
        log_e_fail=log_fail,
        log_e_pass=log_pass,
        log_threshold=float(sequential.log_threshold(alpha)),
        alpha=alpha,
        reason=reason,
    )


def _normal(contrast: estimators.Contrast, alpha: float) -> tuple[float, float, float]:
    z, v, tau = contrast.estimate, contrast.variance, contrast.tau
    log_fail = float(sequential.normal_mixture_log_e(z, v, tau))
    log_pass = float(sequential.normal_mixture_log_e(-z, v, tau))
    radius = float(sequential.normal_mixture_radius(v, tau, alpha))
    return log_fail, log_pass, radius


def _relative_check(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: _Means,
    alpha: float,
    min_samples: int,
    fmt: _Format,
) -> LimitCheck:
    n_b = float(m.n_b[(m.n_c > 0) & (m.n_b > 0)].sum())
    statement = _relative_statement(limit, threshold, fmt)
    if n_b < min_samples:
        return LimitCheck(
            limit,
            threshold,
            Verdict.INCONCLUSIVE,
            statement,
            Method.NORMAL_MIXTURE,
            reason=f"not enough baseline traffic to compare with: {n_b:.0f} of {min_samples}",
        )
    contrast = estimators.relative_contrast(
        m.s_c, m.n_c, m.s_b, m.n_b, limit, threshold, variance_c=m.var_c, variance_b=m.var_b
    )
    log_fail, log_pass, radius = _normal(contrast, alpha)
    d = float(contrast.estimate)
    verdict = _decide(log_fail, log_pass, alpha)
    if limit is Limit.MAX_RATIO:
        weights = estimators.population_weights(m.n_c, m.n_b, both=True)
        base_mean = float(
            np.sum(weights * np.divide(m.s_b, m.n_b, where=m.n_b > 0, out=np.zeros_like(m.s_b)))
        )
        if base_mean > 0:
            estimate = threshold + d / base_mean
            lower, upper = estimate - radius / base_mean, estimate + radius / base_mean
        else:
            estimate, lower, upper = math.inf, -math.inf, math.inf
        show: _Format = _times
    else:
        estimate = d + threshold
        lower, upper = estimate - radius, estimate + radius
        show = fmt
    reason = ""
    quantity = f"{_relative_quantity(limit)} {show(estimate)}"
    limit_text = f"{limit} {_limit_text(limit, threshold, fmt)}"
    bounds = f"[{show(lower)}, {show(upper)}]"
    if verdict is Verdict.FAIL:
        reason = (
            f"{quantity} breaks {limit_text}: with {1 - alpha:.4%} confidence it lies in {bounds}"
        )
    elif verdict is Verdict.INCONCLUSIVE:
        reason = f"cannot tell yet whether {quantity} is within {limit_text}: plausibly {bounds}"
    return LimitCheck(
        limit,
        threshold,
        verdict,
        statement,
        Method.NORMAL_MIXTURE,
        estimate=estimate,
        allowed=threshold,
        lower=lower,
        upper=upper,
        log_e_fail=log_fail,
        log_e_pass=log_pass,
        log_threshold=float(sequential.log_threshold(alpha)),
        alpha=alpha,
        reason=reason,
    )


def _relative_quantity(limit: Limit) -> str:
    return {
        Limit.MAX_INCREASE: "candidate - baseline",
        Limit.MAX_DECREASE: "baseline - candidate",
        Limit.MAX_RATIO: "candidate / baseline",
    }[limit]


def _limit_text(limit: Limit, threshold: float, fmt: _Format) -> str:
    return f"{threshold:g}×" if limit is Limit.MAX_RATIO else fmt(threshold)


def _relative_statement(limit: Limit, threshold: float, fmt: _Format) -> str:
    if limit is Limit.MAX_RATIO:
        return f"candidate <= {threshold:g} × baseline"
    return f"{_relative_quantity(limit)} <= {fmt(threshold)}"


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


def _breaker(
    limit: Limit,
    threshold: float,
    m: _Means,
    alpha: float,
    fmt: _Format,
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


# --- quantiles ------------------------------------------------------------------


def _judge_quantile(
    plan: MetricPlan,
    base: CellVerdict,
    strata: _Strata,
    alpha: float,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict:
    assert plan.quantile is not None
    hist_b: list[Histogram | None] = []
    hist_c: list[Histogram | None] = []
    for sample_b, sample_c in zip(strata.baseline, strata.candidate, strict=True):
        hb, hc = _as_histogram(sample_b), _as_histogram(sample_c)
        if isinstance(hb, str) or isinstance(hc, str):
            return _no_data(base, NoDataReason.QUERY_FAILED, str(hb if isinstance(hb, str) else hc))
        hist_b.append(hb)
        hist_c.append(hc)
    n_c = np.array([h.total if h else 0.0 for h in hist_c])
    n_b = np.array([h.total if h else 0.0 for h in hist_b])
    pooled_c = _sum_histograms([h for h in hist_c if h is not None])
    pooled_b = _sum_histograms([h for h in hist_b if h is not None])
    q = plan.quantile
    arm_c = Arm(pooled_c.quantile(q) if isinstance(pooled_c, Histogram) else None, float(n_c.sum()))
    arm_b = Arm(pooled_b.quantile(q) if isinstance(pooled_b, Histogram) else None, float(n_b.sum()))
    if n_c.sum() <= 0:
        return _no_candidate_yet(base, arm_b, arm_c)
    fmt = _formatter(plan.unit)
    breaker_alpha = alpha * options.breaker_share
    main_alpha = alpha - breaker_alpha
    if n_c.sum() >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            if limit not in (Limit.MAX, Limit.MIN):
                continue
            above = [h.count_above(threshold) if h else 0.0 for h in hist_c]
            if any(a is None for a in above):
                continue
            means = _Means(np.array(above, dtype=float), n_c, np.zeros_like(n_b), n_b)
            tripped = _breaker(limit, threshold, means, breaker_alpha, _percent, null=1.0 - q)
            if tripped is not None:
                return _finish(base, [tripped], arm_b, arm_c)
    if n_c.sum() < min_samples:
        return _not_enough(base, arm_b, arm_c, float(n_c.sum()), min_samples, "the candidate")
    checks = [
        _quantile_check(
            plan, limit, threshold, hist_b, hist_c, n_b, n_c, main_alpha, min_samples, fmt
        )
        for limit, threshold in plan.limits
    ]
    return _finish(base, checks, arm_b, arm_c)


def _sum_histograms(histograms: Sequence[Histogram]) -> Histogram | str | None:
    if not histograms:
        return None
    total = histograms[0]
    for h in histograms[1:]:
        if h.bounds != total.bounds:
            return "the cohorts' histograms have different buckets"
        total = total + h
    return total


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
    fmt: _Format,
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
    pooled_b = _sum_histograms([h for h, ok in zip(hist_b, both, strict=True) if ok and h])
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
        f"({_relative_statement(limit, threshold, fmt)}, baseline {p_name} {fmt(baseline_q)})"
    )
    return _Target(x, fail_above, statement, null_c, nb_total)


def _quantile_name(q: float) -> str:
    return f"p{q * 100:g}"


def _quantile_check(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    hist_b: Sequence[Histogram | None],
    hist_c: Sequence[Histogram | None],
    n_b: np.ndarray,
    n_c: np.ndarray,
    alpha: float,
    min_samples: int,
    fmt: _Format,
) -> LimitCheck:
    assert plan.quantile is not None
    tail = 1.0 - plan.quantile
    log_threshold = float(sequential.log_threshold(alpha))
    target = _quantile_target(plan, limit, threshold, hist_b, n_b, n_c, min_samples, fmt)
    if isinstance(target, str):
        statement = _relative_statement(limit, threshold, fmt)
        return _inconclusive(limit, threshold, statement, target, alpha)
    above = [h.count_above(target.x) if h is not None else 0.0 for h in hist_c]
    if any(a is None for a in above):
        reason = f"{fmt(target.x)} lies beyond the candidate's largest bucket; add larger buckets"
        return _inconclusive(limit, threshold, target.statement, reason, alpha)
    above_arr = np.array(above, dtype=float)
    relative = target.null_c is not None
    use = (n_c > 0) & (n_b > 0) if relative else n_c > 0
    if not relative and int(use.sum()) == 1:
        # One cohort, absolute limit: the exact test on the candidate's share beyond x.
        s, n = float(above_arr[use][0]), float(n_c[use][0])
        tau = estimators.absolute_tau(tail, fail_above=target.fail_above)
        log_fail = float(sequential.beta_mixture_log_e(s, n, tail, tau, above=target.fail_above))
        log_pass = float(
            sequential.beta_mixture_log_e(s, n, tail, tau, above=not target.fail_above)
        )
        share = s / n
        lower, upper = sequential.beta_mixture_interval(s, n, tail, tau, alpha)
        method = Method.BETA_MIXTURE
    else:
        weights = estimators.population_weights(np.where(use, n_c, 0.0), n_b, both=relative)
        contrast = estimators.exceedance_contrast(
            above_arr,
            n_c,
            weights,
            tail,
            fail_above=target.fail_above,
            null_c=target.null_c,
            baseline_samples=target.baseline_samples,
        )
        log_fail, log_pass, radius = _normal(contrast, alpha)
        share = tail + (1.0 if target.fail_above else -1.0) * float(contrast.estimate)
        lower, upper = share - radius, share + radius
        method = Method.NORMAL_MIXTURE
    verdict = _decide(log_fail, log_pass, alpha)
    beyond = f"share of candidate requests slower than {fmt(target.x)}"
    bounds = f"[{_percent(lower)}, {_percent(upper)}]"
    reason = ""
    if verdict is Verdict.FAIL:
        side = "above" if target.fail_above else "below"
        reason = (
            f"{target.statement} is broken: the {beyond} is {_percent(share)}, with "
            f"{1 - alpha:.4%} confidence in {bounds}, {side} {_percent(tail)}"
        )
    elif verdict is Verdict.INCONCLUSIVE:
        reason = (
            f"cannot tell yet whether {target.statement}: the {beyond} is {_percent(share)}, "
            f"plausibly {bounds} against {_percent(tail)}"
        )
    return LimitCheck(
        limit,
        threshold,
        verdict,
        target.statement,
        method,
        estimate=share,
        allowed=tail,
        lower=lower,
        upper=upper,
        log_e_fail=log_fail,
        log_e_pass=log_pass,
        log_threshold=log_threshold,
        alpha=alpha,
        reason=reason,
    )


def _inconclusive(
    limit: Limit, threshold: float, statement: str, reason: str, alpha: float
) -> LimitCheck:
    return LimitCheck(
        limit,
        threshold,
        Verdict.INCONCLUSIVE,
        statement,
        Method.NORMAL_MIXTURE,
        reason=reason,
        alpha=alpha,
        log_threshold=float(sequential.log_threshold(alpha)),
    )


# --- formatting -----------------------------------------------------------------


def _times(x: float) -> str:
    return f"{x:.3g}×"


def _percent(x: float) -> str:
    return f"{x:.2%}" if math.isfinite(x) else str(x)


def _formatter(unit: Unit | None) -> _Format:
    if unit is Unit.RATIO:
        return _percent
    if unit is Unit.SECONDS:
        return lambda x: f"{x:.3g}s"
    return lambda x: f"{x:.4g}"
