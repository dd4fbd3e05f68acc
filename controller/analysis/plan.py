"""How a policy's metrics are read, and how the confidence budget is spent.

`plan_metric` resolves a metric spec into the shape its samples are read in,
its limits and their tolerances; `Budget` says how one family of tests (the
critical ones, or the advisory ones) spends `1 - confidence` between PASS,
FAIL and the circuit breaker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

from controller.analysis import sequential
from controller.analysis.verdicts import (
    Limit,
)
from controller.policy import TEMPLATES, MetricKind, MetricSpec, Unit
from controller.policy.model import tolerances

RELATIVE = (Limit.MAX_INCREASE, Limit.MAX_DECREASE, Limit.MAX_RATIO)
SPEC_FIELDS = {
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
        for limit, name in SPEC_FIELDS.items()
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

    # The shares and thresholds below are read for every test of every look:
    # computed once per budget (a budget is frozen).
    @cached_property
    def fail_share(self) -> float:
        """Each test's share of `fail_alpha` (what Bonferroni would give it)."""
        return alpha_per_test(self.fail_alpha, self.tests)

    @property
    def breaker_alpha(self) -> float:
        return alpha_per_test(self.alpha * self.breaker_share, self.tests)

    @cached_property
    def log_power_threshold(self) -> float:
        """The FAIL threshold the power is planned with: Bonferroni's, never lower."""
        return float(sequential.log_threshold(self.fail_share))

    @cached_property
    def log_pass_threshold(self) -> float:
        """The PASS threshold of every test: the full alpha (an intersection-union test)."""
        return float(sequential.log_threshold(self.alpha))
