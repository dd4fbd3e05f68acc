"""What the judge is given: counts per version and cohort, never rates.

A rate or a quantile on its own hides how much evidence is behind it: 2 % of 50
requests and 2 % of 50,000 are very different things. So every observation is a
count, cumulative from the start of the analysis (see `controller.metrics`):

- `Proportion`: events out of trials (refusals out of requests);
- `Histogram`: Prometheus bucket counts (cumulative, by upper bound `le`), the
  observation count and, when known, the sum of the observed values;
- `Gauge`: a plain value with no sample count (or with the count it was
  averaged over, when the provider knows it).

Per metric, each version's answer is either `VersionData` (the samples of every
cohort label value the query returned, plus an explicit total when the query
was not split by cohort) or a `MeasurementFailure`: a failed query is data for
the judge, which turns it into NO_DATA rather than guessing.

Histogram values are read the way Prometheus' `histogram_quantile` reads them:
observations are spread evenly inside their bucket, the lowest bucket starts at
0, and nothing is known inside the `+Inf` bucket.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from types import MappingProxyType
from typing import TypeVar

import numpy as np

_T = TypeVar("_T")


def _unchecked(cls: type[_T], **fields: object) -> _T:
    """An instance of the frozen dataclass `cls` built without its `__post_init__` checks.

    Only for values derived from instances already checked, in ways that keep them
    valid by construction (a per-step difference clipped at 0 and made monotone, a
    sum of counts): the judge derives tens of thousands of them per rollout, and
    checking each again costs more than the arithmetic that made it.
    """
    instance = object.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(instance, name, value)
    return instance


def search_left(values: Sequence[float], x: float) -> int:
    """`numpy.searchsorted(values, x, side="left")` on a sorted tuple, without an array.

    (numpy sorts NaN last, so a NaN goes after every value.)"""
    return len(values) if math.isnan(x) else bisect.bisect_left(values, x)


def clip_one(x: float, lo: float, hi: float) -> float:
    """`numpy.clip` on one float (the same comparisons: -0.0 at 0 becomes 0.0)."""
    x = x if x > lo else lo
    return x if x < hi else hi


def numpy_sum(values: Sequence[float]) -> float:
    """The sum of `values` in the order `numpy.sum` adds a float64 vector: the same bits.

    numpy adds up to 8 values one by one (from -0.0), up to 128 in eight
    running sums combined pairwise and then the rest one by one, and longer
    vectors by halves (pairwise summation). On a few values a Python loop is
    several times cheaper than building an array to sum.
    """
    n = len(values)
    if n == 0:
        return 0.0
    if n < 8:
        result = -0.0
        for v in values:
            result += v
        return result
    if n > 128:
        half = n // 2
        half -= half % 8
        return numpy_sum(values[:half]) + numpy_sum(values[half:])
    r = list(values[:8])
    end = n - n % 8
    for i in range(8, end, 8):
        for j in range(8):
            r[j] += values[i + j]
    result = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for v in values[end:]:
        result += v
    return result


def _check_count(name: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite count >= 0, not {value!r}")


@dataclass(frozen=True)
class Proportion:
    """`events` out of `trials` (may be fractional when a query extrapolates)."""

    events: float
    trials: float

    def __post_init__(self) -> None:
        _check_count("events", self.events)
        _check_count("trials", self.trials)
        if self.events > self.trials:
            raise ValueError(f"events ({self.events:g}) exceed trials ({self.trials:g})")

    @property
    def samples(self) -> float:
        return self.trials

    @property
    def rate(self) -> float | None:
        return self.events / self.trials if self.trials > 0 else None

    def __add__(self, other: Proportion) -> Proportion:
        trials = self.trials + other.trials
        if not math.isfinite(trials):
            return Proportion(self.events + other.events, trials)  # raises
        # sums of valid counts: events <= trials still holds (rounding is monotone)
        return _unchecked(Proportion, events=self.events + other.events, trials=trials)

    def since(self, earlier: Proportion) -> Proportion:
        """The counts added after `earlier` (cumulative counts never go down; noise is clipped)."""
        # max(d, 0.0) and min(e, trials) spelled out: the same choices, without the
        # builtins' call cost (this runs per cohort, step and look)
        trials = self.trials - earlier.trials
        trials = 0.0 if trials < 0.0 else trials
        events = self.events - earlier.events
        events = 0.0 if events < 0.0 else events
        events = trials if trials < events else events
        # differences of finite counts, clipped into [0, trials]: valid by construction
        return _unchecked(Proportion, events=events, trials=trials)


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound, as Prometheus exposes them.

    `bounds` are the `le` values in increasing order and end with +Inf;
    `cumulative[i]` counts observations <= bounds[i], so the last one is the
    total. Counts summed over pods that restarted at different times can be
    slightly non-monotone; they are made monotone (as `histogram_quantile`
    does) when the histogram is built with `from_buckets`.
    """

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    sum: float | None = None

    def __post_init__(self) -> None:
        if len(self.bounds) < 2 or len(self.bounds) != len(self.cumulative):
            raise ValueError("a histogram needs at least one finite bucket and +Inf")
        if self.bounds[-1] != math.inf:
            raise ValueError("the last bucket bound must be +Inf")
        if any(b >= c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("bucket bounds must increase")
        for count in self.cumulative:
            _check_count("bucket count", count)
        if any(b > c for b, c in zip(self.cumulative, self.cumulative[1:], strict=False)):
            raise ValueError("cumulative bucket counts must not decrease")
        if self.sum is not None and not math.isfinite(self.sum):
            raise ValueError("the sum must be finite")

    @classmethod
    def from_buckets(
        cls, buckets: Mapping[float, float], total: float | None = None, sum: float | None = None
    ) -> Histogram:
        """From `{le: cumulative count}`; `total` (the `_count`) fills in +Inf."""
        items = sorted(buckets.items())
        if total is not None and (not items or items[-1][0] != math.inf):
            items.append((math.inf, total))
        bounds = tuple(le for le, _ in items)
        counts = np.maximum.accumulate(np.array([max(c, 0.0) for _, c in items], dtype=float))
        return cls(bounds, tuple(float(c) for c in counts), sum)

    @property
    def total(self) -> float:
        return self.cumulative[-1]

    @property
    def samples(self) -> float:
        return self.total

    @property
    def mean(self) -> float | None:
        if self.sum is None or self.total <= 0:
            return None
        return self.sum / self.total

    @property
    def largest_finite_bound(self) -> float:
        return self.bounds[-2]

    def _lower_edge(self, i: int) -> float:
        if i > 0:
            return self.bounds[i - 1]
        return 0.0 if self.bounds[0] > 0 else self.bounds[0]

    def count_at_or_below(self, x: float) -> float | None:
        """Observations <= x, interpolated inside x's bucket; None inside +Inf."""
        if x > self.largest_finite_bound:
            return None
        i = search_left(self.bounds, x)
        lo, hi = self._lower_edge(i), self.bounds[i]
        below = self.cumulative[i - 1] if i > 0 else 0.0
        if x <= lo:
            return below if i > 0 else 0.0
        share = (x - lo) / (hi - lo)
        return below + (self.cumulative[i] - below) * share

    def count_above(self, x: float) -> float | None:
        """Observations > x (interpolated), the exceedance count at x."""
        at_or_below = self.count_at_or_below(x)
        return None if at_or_below is None else max(self.total - at_or_below, 0.0)

    def quantile(self, q: float) -> float | None:
        """The q-quantile exactly as Prometheus' `histogram_quantile` computes it."""
        if self.total <= 0:
            return None
        rank = q * self.total
        i = search_left(self.cumulative, rank)
        i = min(i, len(self.bounds) - 1)
        if i == len(self.bounds) - 1:
            return self.largest_finite_bound
        if i == 0 and self.bounds[0] <= 0:
            return self.bounds[0]
        lo, hi = self._lower_edge(i), self.bounds[i]
        below = self.cumulative[i - 1] if i > 0 else 0.0
        in_bucket = self.cumulative[i] - below
        if in_bucket <= 0:
            return hi
        return lo + (hi - lo) * (rank - below) / in_bucket

    def score_variance(self) -> float | None:
        """The variance of values in [0, 1] (scores), estimated from the buckets.

        Computed once per histogram: one look judges the same stratum's histogram in
        its cohort's cell and in the overall cell."""
        return self._score_variance

    @cached_property
    def _score_variance(self) -> float | None:
        return _score_variance(self.bounds, self.cumulative, self.sum)

    def since(self, earlier: Histogram) -> Histogram:
        """The observations added after `earlier`, bucket by bucket (same layout)."""
        return _histogram_since(self, earlier)

    def _since(self, earlier: Histogram) -> Histogram:
        if self.bounds != earlier.bounds:
            raise ValueError("cannot subtract histograms with different buckets")
        # numpy's maximum and maximum.accumulate on plain floats (`a if a > b else b`,
        # the same choice between equal values): a dozen buckets, once per step and look
        counts = []
        running = None
        for later_count, earlier_count in zip(self.cumulative, earlier.cumulative, strict=True):
            diff = later_count - earlier_count
            diff = diff if diff > 0.0 else 0.0
            running = diff if running is None or not running > diff else running
            counts.append(running)
        total_sum = None if self.sum is None or earlier.sum is None else self.sum - earlier.sum
        if total_sum is not None and counts[-1] <= 0:
            total_sum = 0.0
        cumulative = tuple(counts)
        if total_sum is not None and not math.isfinite(total_sum):
            return Histogram(self.bounds, cumulative, total_sum)  # raises
        # same bounds, differences clipped at 0 and made monotone: valid by construction
        return _unchecked(Histogram, bounds=self.bounds, cumulative=cumulative, sum=total_sum)

    def __add__(self, other: Histogram) -> Histogram:
        """Bucket-wise sum; the bucket layout must be the same."""
        if self.bounds != other.bounds:
            raise ValueError("cannot add histograms with different buckets")
        total_sum = None if self.sum is None or other.sum is None else self.sum + other.sum
        counts = tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True))
        return Histogram.summed(self.bounds, counts, total_sum)

    @classmethod
    def summed(
        cls, bounds: tuple[float, ...], cumulative: tuple[float, ...], sum: float | None
    ) -> Histogram:
        """Bucket-wise sums of checked histograms with these `bounds`, not checked again.

        Sums of non-negative, non-decreasing counts are non-negative and
        non-decreasing (rounding is monotone); only an overflow to infinity, in
        the total or the sum, is left to the checks (which then raise)."""
        if not math.isfinite(cumulative[-1]) or (sum is not None and not math.isfinite(sum)):
            return cls(bounds, cumulative, sum)
        return _unchecked(cls, bounds=bounds, cumulative=cumulative, sum=sum)


#: the latest per-step differences: the counts between two step starts are asked
#: for again at every later look of the rollout (and the result's score variance with them)
@functools.lru_cache(maxsize=4096)
def _histogram_since(later: Histogram, earlier: Histogram) -> Histogram:
    return later._since(earlier)


#: score variances of the latest histograms: a step's counts recur at every later look
@functools.lru_cache(maxsize=4096)
def _score_variance(
    bounds: tuple[float, ...], cumulative: tuple[float, ...], sum: float | None
) -> float | None:
    """The variance of values in [0, 1] (scores), estimated from the buckets.

    Each inner bucket's observations are put at its midpoint and Sheppard's
    correction (Sheppard 1898; Kendall & Stuart, *The Advanced Theory of
    Statistics* I, 3.18) removes the spread that grouping adds, h²/12 for a
    bucket of width h. The first bucket starts at 0 (scores are never
    negative); the +Inf bucket is [largest finite bound, 1] (scores never
    exceed 1). The correction assumes a density smooth across the bucket,
    which fails where the support ends, so the two end buckets are placed
    differently (see below) and not corrected. The result is capped by the
    largest variance a [0, 1] value with this mean can have (Bhatia-Davis):
    mean × (1 - mean).
    """
    total = cumulative[-1]
    if total <= 0:
        return None
    given_mean = None if sum is None else sum / total
    # Plain floats, not numpy arrays (a dozen buckets: numpy's per-call cost is
    # most of the time), with the same operations in the same order, and sums
    # added as numpy adds them (`numpy_sum`): the same bits as the array form.
    counts = [c - b for c, b in zip(cumulative, (0.0, *cumulative[:-1]), strict=True)]
    upper = [clip_one(b, 0.0, 1.0) for b in bounds]
    lower = [0.0, *upper[:-1]]
    weights = [c / total for c in counts]
    edge = [lo <= 0.0 or hi >= 1.0 for lo, hi in zip(lower, upper, strict=True)]
    # The buckets touching the ends of [0, 1] hold a truncated density (often
    # a pile at 0 or 1: a pass/fail score), where a midpoint can be far off.
    # The smaller one is put at the end it touches, which can only overstate
    # the spread; the larger one where the exact mean (from `_sum`) says its
    # observations are on average.
    at = [
        (lo if lo <= 0.0 else hi) if e else (lo + hi) / 2.0
        for lo, hi, e in zip(lower, upper, edge, strict=True)
    ]
    if given_mean is not None and any(edge):
        ranked = [w if e else -1.0 for w, e in zip(weights, edge, strict=True)]
        i = ranked.index(max(ranked))  # the first of the largest, as argmax
        rest = numpy_sum(
            [w * a for j, (w, a) in enumerate(zip(weights, at, strict=True)) if j != i]
        )
        if weights[i] > 0:
            solved = (given_mean - rest) / weights[i]
            at[i] = min(max(solved, lower[i]), upper[i])
    grouped_mean = numpy_sum([w * a for w, a in zip(weights, at, strict=True)])
    spread = [a - grouped_mean for a in at]
    grouped = numpy_sum([w * (d * d) for w, d in zip(weights, spread, strict=True)])
    sheppard = numpy_sum(
        [
            0.0 if e else w * (hi - lo) * (hi - lo) / 12.0
            for w, lo, hi, e in zip(weights, lower, upper, edge, strict=True)
        ]
    )
    variance = max(grouped - sheppard, 0.0)
    mean = given_mean if given_mean is not None else grouped_mean
    mean = min(max(mean, 0.0), 1.0)
    return min(variance, mean * (1.0 - mean))


@dataclass(frozen=True)
class Gauge:
    """A plain value. `samples` is how many requests it summarises, when known."""

    value: float
    samples: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"a gauge value must be finite, not {self.value!r}")
        if self.samples is not None:
            _check_count("samples", self.samples)


Sample = Proportion | Histogram | Gauge


def _frozen_mapping(value: Mapping[str, Sample]) -> Mapping[str, Sample]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True)
class VersionData:
    """One version's samples for one metric.

    `by_cohort` maps every cohort label value the query returned (named cohorts
    and any other label value, such as the traffic no cohort matched) to its
    sample. `total` is set instead when the query returned one series without a
    `cohort` label: then only the overall cell can be judged.
    """

    by_cohort: Mapping[str, Sample] = field(default_factory=dict)
    total: Sample | None = None
    #: the query that produced these samples, for the evidence
    query: str = ""
    #: a cohort's own query text, when the source can tell it (else `query` stands for all)
    cohort_queries: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_cohort", _frozen_mapping(self.by_cohort))
        object.__setattr__(self, "cohort_queries", MappingProxyType(dict(self.cohort_queries)))

    def query_for(self, cohort: str) -> str:
        """The query text that the evidence of `cohort`'s cell shows."""
        return self.cohort_queries.get(cohort, self.query)


class FailureKind(StrEnum):
    """Why a measurement has no value: mirrors the provider's typed errors."""

    UNREACHABLE = "unreachable"  # the source did not answer (TransientError)
    BAD_QUERY = "bad-query"  # the source rejected the query (PermanentError)
    NO_DATA = "no-data"  # the source answered with nothing (NoDataError)
    AMBIGUOUS = "ambiguous"  # several series where one was expected


@dataclass(frozen=True)
class MeasurementFailure:
    """A measurement that could not be taken; the judge says NO_DATA for it."""

    kind: FailureKind
    message: str
    query: str = ""


Measurement = VersionData | MeasurementFailure


@dataclass(frozen=True)
class MetricObservation:
    """Baseline and candidate measurements of one metric at one look."""

    metric: str
    baseline: Measurement
    candidate: Measurement
