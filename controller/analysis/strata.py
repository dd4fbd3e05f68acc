"""A cell's samples, stratum by stratum: the inputs of every contrast.

A stratum is a cohort, or a cohort during one traffic step when the observer
passed the steps' start counts (`by_step`); `Means` holds the per-stratum sums
and counts of a 0..1 value (a proportion, or a score with its variance read
from the histogram) that the contrasts of `controller.analysis.estimators` are
computed from.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from controller.analysis.observations import (
    Histogram,
    MetricObservation,
    Proportion,
    Sample,
    VersionData,
)
from controller.analysis.plan import MetricPlan, Shape
from controller.analysis.verdicts import (
    NoDataReason,
)
from controller.policy import OVERALL


@dataclass(frozen=True)
class Strata:
    """The samples of one cell, stratum by stratum: (label, baseline, candidate).

    A stratum is a cohort, or a cohort during one traffic step when the
    observer passed the step boundaries; `groups` says which cohort each
    stratum belongs to (strata of one cohort share its weight).
    """

    names: tuple[str, ...]
    baseline: tuple[Sample | None, ...]
    candidate: tuple[Sample | None, ...]
    groups: tuple[int, ...] = ()

    @cached_property
    def cohort_of(self) -> np.ndarray:
        """Each stratum's cohort index (read-only: every test of the cell shares it)."""
        groups = np.array(self.groups or range(len(self.names)), dtype=int)
        groups.setflags(write=False)
        return groups


def cell_strata(
    cohort: str,
    baseline: VersionData,
    candidate: VersionData,
    steps: Sequence[tuple[VersionData, VersionData]] = (),
) -> Strata | NoDataReason:
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
    return Strata(tuple(labels), tuple(samples_b), tuple(samples_c), tuple(groups))


def _sample(data: VersionData, name: str) -> Sample | None:
    """A cohort's sample, or all of a version's ("" names the pooled total)."""
    return pooled(data) if name == "" else data.by_cohort.get(name)


def by_step(
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


def pooled(data: VersionData) -> Sample | None:
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
        summed = sum_histograms(histograms)
        return summed if isinstance(summed, Histogram) else None
    return None


@dataclass(frozen=True)
class Means:
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


def as_proportion(sample: Sample | None, plan: MetricPlan) -> Proportion | str | None:
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


def as_histogram(sample: Sample | None) -> Histogram | str | None:
    if sample is None or isinstance(sample, Histogram):
        return sample
    return f"expected a histogram, got a {type(sample).__name__.lower()}"


def score_moments(h: Histogram) -> tuple[float, float, float] | str:
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


def means_of(plan: MetricPlan, strata: Strata) -> Means | str:
    columns_b: tuple[list[float], list[float], list[float]] = ([], [], [])
    columns_c: tuple[list[float], list[float], list[float]] = ([], [], [])
    for sample_b, sample_c in zip(strata.baseline, strata.candidate, strict=True):
        for sample, (sums, counts, variances) in ((sample_b, columns_b), (sample_c, columns_c)):
            if plan.shape is Shape.PROPORTION:
                p = as_proportion(sample, plan)
                if isinstance(p, str):
                    return p
                sums.append(p.events if p else 0.0)
                counts.append(p.trials if p else 0.0)
                continue
            h = as_histogram(sample)
            if isinstance(h, str):
                return h
            moments = (0.0, 0.0, 0.25) if h is None else score_moments(h)
            if isinstance(moments, str):
                return moments
            sums.append(moments[0])
            counts.append(moments[1])
            variances.append(moments[2])
    s_b, n_b, var_b = (np.array(column, dtype=float) for column in columns_b)
    s_c, n_c, var_c = (np.array(column, dtype=float) for column in columns_c)
    if plan.shape is Shape.MEAN:
        return Means(s_c, n_c, s_b, n_b, var_c, var_b, groups=strata.cohort_of)
    return Means(s_c, n_c, s_b, n_b, groups=strata.cohort_of)


def sum_histograms(histograms: Sequence[Histogram]) -> Histogram | str | None:
    if not histograms:
        return None
    first = histograms[0]
    if len(histograms) == 1:
        return first
    # What `first + h + ...` gives, bucket by bucket in the same order, with one
    # Histogram (and one validation) at the end rather than one per addition.
    counts = first.cumulative
    total_sum = first.sum
    for h in histograms[1:]:
        if h.bounds != first.bounds:
            return "the cohorts' histograms have different buckets"
        if len(h.cumulative) != len(counts):
            raise ValueError("histograms with the same bounds have as many counts")
        counts = tuple(map(operator.add, counts, h.cumulative))
        total_sum = None if total_sum is None or h.sum is None else total_sum + h.sum
    return Histogram.summed(first.bounds, counts, total_sum)


def pooled_mean(s: np.ndarray, n: np.ndarray) -> float | None:
    total = float(n.sum())
    return float(s.sum()) / total if total > 0 else None


def standardised(s: np.ndarray, n: np.ndarray, weights: np.ndarray) -> float | None:
    """The weighted mean of per-stratum means, over the strata with samples."""
    has = (n > 0) & (weights > 0)
    if not has.any():
        return None
    w = weights[has] / weights[has].sum()
    return float(np.sum(w * s[has] / n[has]))
