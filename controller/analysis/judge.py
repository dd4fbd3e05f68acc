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
4. Every limit has a tolerance (the difference that is fine) and two
   anytime-valid sequential tests (`controller.analysis.sequential`): FAIL's
   null is "within the tolerance", tuned to catch a candidate at the limit;
   PASS's null is "at or beyond the limit". INCONCLUSIVE otherwise, saying which
   side the evidence leans to, whether the FAIL test is powered, and how many
   more candidate samples it needs. The worst limit decides the cell.

The confidence budget. `1 - confidence` is the chance, over the whole rollout,
of rolling back a candidate that is within its tolerance everywhere. PASS is
tested per cell at that full level (promotion needs every cell: an
intersection-union test). FAIL is settled for every critical test at once by
the closed average of their e-values (`settle`), valid under any dependence
and never stricter than Bonferroni; a tenth of the budget is the circuit
breaker's. Every e-process runs on counts cumulative from the start of the
analysis, so the guarantee holds across every look and step. Advisory metrics
(`critical: false`) never roll back, so they get their own, separate budget.
Gauges are compared to their limits as they are and spend no budget.
See docs/judge.md for the contract and the math.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from controller.policy.model import tolerances

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
    #: explicit tolerances from the policy, by limit name (`maxIncrease`)
    tolerances: Mapping[str, float] = field(default_factory=dict)

    @property
    def critical(self) -> bool:
        return self.spec.critical

    @property
    def statistical(self) -> bool:
        return self.shape is not Shape.GAUGE


def plan_metric(spec: MetricSpec) -> MetricPlan:
    """Resolve a metric spec: its shape (how samples are read), unit, limits and tolerances."""
    return replace(_plan_metric(spec), tolerances=tolerances(spec))


def _plan_metric(spec: MetricSpec) -> MetricPlan:
    limits = tuple(
        (limit, float(value))
        for limit, name in _FIELDS.items()
        if (value := getattr(spec, name)) is not None
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


@dataclass(frozen=True)
class Budget:
    """How one family of tests (the critical ones, or the advisory ones) spends alpha.

    - PASS is tested per limit and cell at the full `alpha`: promotion needs
      every cell to PASS, an intersection-union test (Berger 1982), so a
      candidate beyond a limit in one cell is promoted only if that one cell
      PASSes, which has probability at most alpha.
    - FAIL is tested for the whole family at once with `fail_alpha`, by the
      closed average of e-values (`sequential.average_fail_thresholds`).
    - The circuit breaker keeps `breaker_share` of alpha, split evenly.
    """

    alpha: float
    tests: int
    power: float = 0.8
    breaker_share: float = 0.1

    @property
    def fail_alpha(self) -> float:
        return self.alpha * (1.0 - self.breaker_share)

    @property
    def fail_share(self) -> float:
        """Each test's share of `fail_alpha` (what Bonferroni would give it)."""
        return alpha_per_test(self.fail_alpha, self.tests)

    @property
    def breaker_alpha(self) -> float:
        return alpha_per_test(self.alpha * self.breaker_share, self.tests)

    @property
    def log_power_threshold(self) -> float:
        """The FAIL threshold the power is planned with: Bonferroni's, never lower."""
        return float(sequential.log_threshold(self.fail_share))


def judge(
    analysis: Analysis,
    cohorts: Sequence[str],
    observations: Mapping[str, MetricObservation],
    *,
    at: datetime,
    options: JudgeOptions | None = None,
    step_starts: Sequence[Mapping[str, MetricObservation]] = (),
) -> Judgement:
    """Judge every metric of `analysis` in every cohort and overall at the look `at`.

    `cohorts` are the policy's cohort names (label values of `cohort`); the
    overall cell covers every label value the queries returned. A metric with
    no entry in `observations` is NO_DATA everywhere.

    `step_starts` are the observations (counts cumulative from the start of
    the analysis, like `observations`) taken when each traffic step after the
    first began, oldest first. With them a comparison is made step by step
    within each cohort, so that a baseline drifting over the rollout is
    compared with the candidate's requests of the same period; without them
    (or when one of them failed) cumulative counts are compared as they are.
    """
    options = options or JudgeOptions()
    plans = [plan_metric(m) for m in analysis.metrics]
    cells = [*cohorts, OVERALL]
    alpha = 1.0 - analysis.confidence
    budgets = {
        critical: Budget(
            alpha,
            count_tests(plans, len(cells), critical=critical),
            analysis.power,
            options.breaker_share,
        )
        for critical in (True, False)
    }
    drafts = []
    for plan in plans:
        observation = observations.get(plan.name)
        measured = all(plan.name in start for start in step_starts)
        starts = [start[plan.name] for start in step_starts] if measured else []
        for cohort in cells:
            drafts.append(
                judge_cell(
                    plan,
                    cohort,
                    observation,
                    budget=budgets[plan.critical],
                    min_samples=analysis.min_samples,
                    options=options,
                    step_starts=starts,
                )
            )
    return Judgement(
        at=at,
        cells=tuple(settle(drafts, budgets)),
        alpha=alpha,
        alpha_per_test=budgets[True].fail_share,
        tests=budgets[True].tests,
    )


def settle(
    drafts: Sequence[CellVerdict | _Draft], budgets: Mapping[bool, Budget]
) -> list[CellVerdict]:
    """Decide FAIL across each family at once, then finish every cell."""
    needs: dict[tuple[int, int], float] = {}
    for critical, budget in budgets.items():
        family = [
            (i, j, test.log_fail)
            for i, draft in enumerate(drafts)
            if isinstance(draft, _Draft) and draft.base.critical == critical
            for j, test in enumerate(draft.tests)
            if test.ran
        ]
        if not family:
            continue
        thresholds = sequential.average_fail_thresholds(
            [log_e for *_, log_e in family], budget.tests, budget.fail_alpha
        )
        for (i, j, _), threshold in zip(family, thresholds, strict=True):
            needs[i, j] = float(threshold)
    out = []
    for i, draft in enumerate(drafts):
        if isinstance(draft, CellVerdict):
            out.append(draft)
            continue
        budget = budgets[draft.base.critical]
        checks = [
            _limit_check(test, needs.get((i, j)), budget, draft.candidate_samples)
            for j, test in enumerate(draft.tests)
        ]
        out.append(_finish(draft.base, checks, draft.baseline, draft.candidate))
    return out


# --- one cell -------------------------------------------------------------------


@dataclass(frozen=True)
class _Strata:
    """The samples of one cell, stratum by stratum: (label, baseline, candidate).

    A stratum is a cohort, or a cohort during one traffic step when the
    observer passed the step boundaries; `groups` says which cohort each
    stratum belongs to (strata of one cohort share its weight).
    """

    names: tuple[str, ...]
    baseline: tuple[Sample | None, ...]
    candidate: tuple[Sample | None, ...]
    groups: tuple[int, ...] = ()

    @property
    def cohort_of(self) -> np.ndarray:
        return np.array(self.groups or range(len(self.names)), dtype=int)


def _cell_strata(
    cohort: str,
    baseline: VersionData,
    candidate: VersionData,
    steps: Sequence[tuple[VersionData, VersionData]] = (),
) -> _Strata | NoDataReason:
    if cohort != OVERALL:
        if not baseline.by_cohort and not candidate.by_cohort:
            return NoDataReason.NO_SERIES
        names: tuple[str, ...] = (cohort,)
    elif baseline.total is not None or candidate.total is not None:
        names = ("",)
    else:
        names = tuple(sorted(set(baseline.by_cohort) | set(candidate.by_cohort)))
        if not names:
            return NoDataReason.NO_SERIES
    periods = steps or [(baseline, candidate)]
    labels, samples_b, samples_c, groups = [], [], [], []
    for step, (data_b, data_c) in enumerate(periods):
        for g, name in enumerate(names):
            labels.append(f"{name}@{step}" if steps else name)
            samples_b.append(_sample(data_b, name))
            samples_c.append(_sample(data_c, name))
            groups.append(g)
    return _Strata(tuple(labels), tuple(samples_b), tuple(samples_c), tuple(groups))


def _sample(data: VersionData, name: str) -> Sample | None:
    """A cohort's sample, or all of a version's ("" names the pooled total)."""
    return _pooled(data) if name == "" else data.by_cohort.get(name)


def _by_step(
    observation: MetricObservation, starts: Sequence[MetricObservation]
) -> list[tuple[VersionData, VersionData]]:
    """Each traffic step's own counts, from the cumulative counts at the steps' starts.

    `starts` are the observations (cumulative from the start of the analysis)
    taken when each step after the first began. Any failed or incomparable
    snapshot means no split at all: the judge then compares cumulative counts.
    """
    if not starts:
        return []
    marks = [*starts, observation]
    versions = []
    for role in ("baseline", "candidate"):
        series: list[VersionData] = []
        for m in marks:
            data = getattr(m, role)
            if not isinstance(data, VersionData):
                return []
            series.append(data)
        periods = [series[0]]
        for earlier, later in itertools.pairwise(series):
            period = _since(later, earlier)
            if period is None:
                return []
            periods.append(period)
        versions.append(periods)
    return list(zip(versions[0], versions[1], strict=True))


def _since(later: VersionData, earlier: VersionData) -> VersionData | None:
    """`later` less `earlier`, label by label (None when the two do not line up)."""
    try:
        by_cohort = {}
        for name, sample in later.by_cohort.items():
            before = earlier.by_cohort.get(name)
            by_cohort[name] = sample if before is None else _sample_since(sample, before)
        total = later.total
        if total is not None and earlier.total is not None:
            total = _sample_since(total, earlier.total)
    except ValueError:
        return None
    return VersionData(by_cohort, total, later.query)


def _sample_since(later: Sample, earlier: Sample) -> Sample:
    if isinstance(later, Proportion) and isinstance(earlier, Proportion):
        return later.since(earlier)
    if isinstance(later, Histogram) and isinstance(earlier, Histogram):
        return later.since(earlier)
    raise ValueError("only counts can be split by step")


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
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
    step_starts: Sequence[MetricObservation] = (),
) -> CellVerdict | _Draft:
    """The verdict on one metric in one cohort (or overall), or its tests before FAIL is settled."""
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
    steps = _by_step(observation, step_starts) if plan.statistical else []
    strata = _cell_strata(cohort, observation.baseline, observation.candidate, steps)
    if isinstance(strata, NoDataReason):
        where = "overall" if cohort == OVERALL else "split by cohort"
        return _no_data(base, strata, f"the query returned no series {where}")
    base = replace(base, query=observation.candidate.query)
    if plan.shape is Shape.GAUGE:
        return _judge_gauge(plan, base, strata, min_samples)
    return _judge_statistical(plan, base, strata, budget, min_samples, options)


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
        needed_samples=max(need - have, 0.0),
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
    #: each stratum's cohort (strata are cohorts, or cohorts during one step)
    groups: np.ndarray | None = None

    def single_cohort(self) -> bool:
        """Whether the candidate's samples all come from one cohort."""
        groups = self.groups if self.groups is not None else np.arange(len(self.n_c))
        return len(set(groups[self.n_c > 0].tolist())) == 1


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
        return _Means(c[:, 0], c[:, 1], b[:, 0], b[:, 1], c[:, 2], b[:, 2], groups=strata.cohort_of)
    return _Means(c[:, 0], c[:, 1], b[:, 0], b[:, 1], groups=strata.cohort_of)


def _judge_statistical(
    plan: MetricPlan,
    base: CellVerdict,
    strata: _Strata,
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict | _Draft:
    if plan.shape is Shape.QUANTILE:
        return _judge_quantile(plan, base, strata, budget, min_samples, options)
    means = _means(plan, strata)
    if isinstance(means, str):
        return _no_data(base, NoDataReason.QUERY_FAILED, means)
    n_c, n_b = float(means.n_c.sum()), float(means.n_b.sum())
    fmt = _formatter(plan.unit)
    arm_c = Arm(_pooled_mean(means.s_c, means.n_c), n_c)
    arm_b = Arm(_pooled_mean(means.s_b, means.n_b), n_b)
    if n_c <= 0:
        return _no_candidate_yet(base, arm_b, arm_c)
    if n_c >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            tripped = _breaker(limit, threshold, means, budget.breaker_alpha, fmt)
            if tripped is not None:
                return _finish(base, [tripped], arm_b, arm_c)
    if n_c < min_samples:
        return _not_enough(base, arm_b, arm_c, n_c, min_samples, "the candidate")
    tests = []
    for limit, threshold in plan.limits:
        if limit in RELATIVE:
            tests.append(_relative_test(plan, limit, threshold, means, budget, min_samples, fmt))
        else:
            tests.append(_absolute_test(plan, limit, threshold, means, budget, fmt))
    return _Draft(base, arm_b, arm_c, tuple(tests))


def _pooled_mean(s: np.ndarray, n: np.ndarray) -> float | None:
    total = float(n.sum())
    return float(s.sum()) / total if total > 0 else None


def _tolerance(plan: MetricPlan, limit: Limit, threshold: float, baseline: float | None) -> float:
    """The tolerance of a limit, in the limit's own unit (see docs/judge.md).

    Explicit in the policy, or half the limit's distance from "no change":
    half a `maxIncrease`/`maxDecrease`, halfway from 1 to a `maxRatio`, and
    for `max`/`min` halfway from the baseline's own value to the limit (from 0
    for a `max`, or from 1 for a `min` on a 0..1 value, when the baseline is
    unknown or already beyond the limit).
    """
    explicit = plan.tolerances.get(limit.value)
    if explicit is not None:
        return explicit
    if limit in (Limit.MAX_INCREASE, Limit.MAX_DECREASE):
        return threshold / 2.0
    if limit is Limit.MAX_RATIO:
        return 1.0 + (threshold - 1.0) / 2.0
    if limit is Limit.MAX:
        start = baseline if baseline is not None and baseline < threshold else 0.0
        return start + (threshold - start) / 2.0
    start = baseline if baseline is not None and baseline > threshold else 1.0
    return threshold + (start - threshold) / 2.0


def _standardised(s: np.ndarray, n: np.ndarray, weights: np.ndarray) -> float | None:
    """The weighted mean of per-stratum means, over the strata with samples."""
    has = (n > 0) & (weights > 0)
    if not has.any():
        return None
    w = weights[has] / weights[has].sum()
    return float(np.sum(w * s[has] / n[has]))


def _absolute_test(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: _Means,
    budget: Budget,
    fmt: _Format,
) -> _Test:
    fail_above = limit is Limit.MAX
    sign = 1.0 if fail_above else -1.0
    weights = estimators.population_weights(m.n_c, m.n_b, both=False, groups=m.groups)
    baseline = _standardised(m.s_b, m.n_b, weights)
    tolerance = _tolerance(plan, limit, threshold, baseline)
    delta = _room(sign * (threshold - tolerance))
    statement = f"candidate {'<=' if fail_above else '>='} {fmt(threshold)}"
    alpha = budget.fail_share
    used = m.n_c > 0
    common = {
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
            log_fail = float(sequential.bernoulli_fail_log_e(s, n, tolerance, threshold))
            log_pass = float(sequential.bernoulli_pass_log_e(s, n, tolerance, threshold))
        else:
            tau = estimators.absolute_tau(threshold, fail_above=fail_above)
            log_fail = float(sequential.beta_mixture_log_e(s, n, threshold, tau, above=fail_above))
            log_pass = 0.0
        scale = max(delta, estimators.MIN_TAU)
        lower, upper = sequential.beta_mixture_interval(s, n, threshold, scale, alpha)
        clipped = min(max(threshold, 1e-6), 1 - 1e-6)
        return _Test(
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
            **common,  # type: ignore[arg-type]
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
    log_fail, log_pass, information, radius = _gaussian_test(d_hat, variance, delta, alpha)
    estimate = threshold + sign * d_hat
    if not m.single_cohort():
        statement += " (cohorts weighted by their share of all traffic)"
    return _Test(
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
        **common,  # type: ignore[arg-type]
    )


def _relative_test(
    plan: MetricPlan,
    limit: Limit,
    threshold: float,
    m: _Means,
    budget: Budget,
    min_samples: int,
    fmt: _Format,
) -> _Test:
    n_b = float(m.n_b[(m.n_c > 0) & (m.n_b > 0)].sum())
    statement = _relative_statement(limit, threshold, fmt)
    show: _Format = _times if limit is Limit.MAX_RATIO else fmt
    tolerance = _tolerance(plan, limit, threshold, None)
    common = {
        "quantity": _relative_quantity(limit),
        "limit_text": f"{limit} {_limit_text(limit, threshold, fmt)}",
        "show": show,
        "allowed": threshold,
        "tolerance": tolerance,
    }
    if n_b < min_samples:
        blocked = f"not enough baseline traffic to compare with: {n_b:.0f} of {min_samples}"
        return _Test(
            limit,
            threshold,
            statement,
            Method.GAUSSIAN_SPRT,
            blocked=blocked,
            **common,  # type: ignore[arg-type]
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
        delta = _room((threshold - tolerance) * base_mean)
    else:
        base_mean = 1.0
        delta = _room(threshold - tolerance)
    alpha = budget.fail_share
    log_fail, log_pass, information, radius = _gaussian_test(d_hat, variance, delta, alpha)
    if limit is Limit.MAX_RATIO:
        if base_mean > 0:
            estimate = threshold + d_hat / base_mean
            lower, upper = estimate - radius / base_mean, estimate + radius / base_mean
        else:
            estimate, lower, upper = math.inf, -math.inf, math.inf
    else:
        estimate = d_hat + threshold
        lower, upper = estimate - radius, estimate + radius
    return _Test(
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
        **common,  # type: ignore[arg-type]
    )


# --- one limit, tested: the builder every check kind goes through ---------------


@dataclass(frozen=True)
class _Test:
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
    show: _Format
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
class _Draft:
    """A cell whose limits are tested but whose FAIL is not settled yet."""

    base: CellVerdict
    baseline: Arm
    candidate: Arm
    tests: tuple[_Test, ...]

    @property
    def candidate_samples(self) -> float:
        return self.candidate.samples or 0.0


def _limit_check(
    test: _Test, log_fail_needed: float | None, budget: Budget, samples: float
) -> LimitCheck:
    """The one builder of a statistical `LimitCheck`: verdict, power, reason."""
    log_pass_needed = float(sequential.log_threshold(budget.alpha))
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
    if verdict is Verdict.FAIL:
        reason = (
            f"{quantity} breaks {test.limit_text}: with {confidence:.4%} confidence "
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
    test: _Test, log_fail_needed: float, log_pass_needed: float, powered_at: float, samples: float
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
    s_now = float(sequential.sprt_log_e(test.d_hat, test.information, test.delta))
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


def _room(delta: float) -> float:
    """The width of the indifference zone, or 0 when there is none to speak of."""
    return delta if delta >= MIN_DELTA else 0.0


def _gaussian_test(
    d_hat: float, variance: float, delta: float, bound_alpha: float
) -> tuple[float, float, float, float]:
    """(log e FAIL, log e PASS, information, bound radius) of a Gaussian contrast."""
    information = 1.0 / variance if variance > 0 else 0.0
    if delta > 0:
        log_fail = float(sequential.fail_log_e(d_hat, information, delta))
        log_pass = float(sequential.pass_log_e(d_hat, information, delta))
        tau = delta
    else:
        # no room between "no change" and the limit: the old test against the limit
        tau = estimators.ZERO_MARGIN_TAU
        log_fail = float(sequential.normal_mixture_log_e(d_hat, variance, tau))
        log_pass = 0.0
    radius = float(sequential.normal_mixture_radius(variance, tau, bound_alpha))
    return log_fail, log_pass, information, radius


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
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
) -> CellVerdict | _Draft:
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
    if n_c.sum() >= options.breaker_min_samples:
        for limit, threshold in plan.limits:
            if limit not in (Limit.MAX, Limit.MIN):
                continue
            above = [h.count_above(threshold) if h else 0.0 for h in hist_c]
            if any(a is None for a in above):
                continue
            means = _Means(np.array(above, dtype=float), n_c, np.zeros_like(n_b), n_b)
            tripped = _breaker(
                limit, threshold, means, budget.breaker_alpha, _percent, null=1.0 - q
            )
            if tripped is not None:
                return _finish(base, [tripped], arm_b, arm_c)
    if n_c.sum() < min_samples:
        return _not_enough(base, arm_b, arm_c, float(n_c.sum()), min_samples, "the candidate")
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
    return _Draft(base, arm_b, arm_c, tuple(tests))


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
    tolerance = _tolerance(plan, limit, threshold, baseline_q)
    fallback = tail / 2.0 if target.fail_above else tail + (1.0 - tail) / 2.0
    if pooled_b is None or baseline_q is None or baseline_q <= 0 or pooled_b.total <= 0:
        return tolerance, fallback
    if limit in (Limit.MAX, Limit.MIN, Limit.MAX_RATIO):
        if tolerance <= 0:
            return tolerance, fallback
        # scaled so that its quantile is on the tolerance (for a ratio, tolerance x baseline)
        at = baseline_q * tolerance if limit is Limit.MAX_RATIO else tolerance
        probe = target.x * baseline_q / at
    elif limit is Limit.MAX_INCREASE:
        probe = target.x - tolerance
    else:
        probe = target.x + tolerance
    above = pooled_b.count_above(probe)
    if above is None:
        return tolerance, fallback
    share = min(max(above / pooled_b.total, 1e-6), 1 - 1e-6)
    return tolerance, share


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
    fmt: _Format,
) -> _Test:
    assert plan.quantile is not None
    hist_b, hist_c, n_b, n_c = h.baseline, h.candidate, h.n_b, h.n_c
    tail = 1.0 - plan.quantile
    alpha = budget.fail_share
    target = _quantile_target(plan, limit, threshold, hist_b, n_b, n_c, min_samples, fmt)
    show_limit = _limit_text(limit, threshold, fmt)
    if isinstance(target, str):
        statement = _relative_statement(limit, threshold, fmt)
        return _Test(
            limit,
            threshold,
            statement,
            Method.GAUSSIAN_SPRT,
            quantity="",
            limit_text=f"{limit} {show_limit}",
            show=_percent,
            blocked=target,
        )
    beyond = f"the share of candidate requests slower than {fmt(target.x)}"
    limit_text = f"{target.statement}, at most {_percent(tail)} of them"
    if not target.fail_above:
        limit_text = f"{target.statement}, at least {_percent(tail)} of them"
    above = [h.count_above(target.x) if h is not None else 0.0 for h in hist_c]
    if any(a is None for a in above):
        reason = f"{fmt(target.x)} lies beyond the candidate's largest bucket; add larger buckets"
        return _Test(
            limit,
            threshold,
            target.statement,
            Method.GAUSSIAN_SPRT,
            quantity=beyond,
            limit_text=limit_text,
            show=_percent,
            blocked=reason,
        )
    above_arr = np.array(above, dtype=float)
    relative = target.null_c is not None
    use = (n_c > 0) & (n_b > 0) if relative else n_c > 0
    pooled_b = _sum_histograms([h for h, ok in zip(hist_b, n_b > 0, strict=True) if ok and h])
    tolerance, tail_tol = _quantile_tolerance_share(
        plan, limit, threshold, target, pooled_b if isinstance(pooled_b, Histogram) else None
    )
    sign = 1.0 if target.fail_above else -1.0
    delta = _room(sign * (tail - tail_tol))
    common = {
        "quantity": beyond,
        "limit_text": limit_text,
        "show": _percent,
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
            log_fail = float(sequential.bernoulli_fail_log_e(s, n, tail_tol, tail))
            log_pass = float(sequential.bernoulli_pass_log_e(s, n, tail_tol, tail))
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
        return _Test(
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
            **common,  # type: ignore[arg-type]
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
    log_fail, log_pass, information, radius = _gaussian_test(d_hat, variance, delta, alpha)
    share = tail + sign * d_hat
    return _Test(
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
        **common,  # type: ignore[arg-type]
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
