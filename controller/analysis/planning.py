"""How long a step must last: the judge's statistics, solved for time.

A platform engineer choosing `hold` durations needs to know how much traffic a
verdict takes. These functions answer with the judge's own tests
(`controller.analysis.sequential`, thresholds as `controller.analysis.judge`
sets them): for one limit in one cell, how many candidate requests until

- a healthy candidate (no change against the baseline) has decided: PASSed,
  or its FAIL test has become powered (what promotion needs), and
- a candidate exactly at the limit FAILs,

as a median and an 80th percentile, and how many minutes that is at a given
request rate and candidate weight. A CLI prints one `CellPlan` per step and
cell from `plan_cell`.

The times come from the first-passage law of the SPRT statistic in
information time (`sequential.first_passage_cdf`); looks every interval
instead of continuously add a little, which the statistical tests measure.

Run `python -m controller.analysis.planning` to print the tables of docs/judge.md
(How the judge decides).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.analysis import sequential
from controller.analysis.judge import Budget
from controller.analysis.verdicts import Limit

#: the two percentiles the planner states
MEDIAN, P80 = 0.5, 0.8


@dataclass(frozen=True)
class Hypotheses:
    """One limit of one cell as the planner sees it.

    `baseline` is the baseline's value on the limit's scale: a rate, a mean
    score, or the share of requests slower than the latency tested.
    `variance` is the per-request variance of a score (None: 0/1 values, whose
    variance is the Bernoulli one). `tolerance` defaults as in the judge.
    """

    limit: Limit
    threshold: float
    baseline: float
    tolerance: float | None = None
    variance: float | None = None

    @property
    def resolved_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        if self.limit in (Limit.MAX_INCREASE, Limit.MAX_DECREASE):
            return self.threshold / 2.0
        if self.limit is Limit.MAX_RATIO:
            return 1.0 + (self.threshold - 1.0) / 2.0
        if self.limit is Limit.MAX:
            start = self.baseline if self.baseline < self.threshold else 0.0
            return start + (self.threshold - start) / 2.0
        start = self.baseline if self.baseline > self.threshold else 1.0
        return self.threshold + (start - self.threshold) / 2.0

    @property
    def relative(self) -> bool:
        return self.limit in (Limit.MAX_INCREASE, Limit.MAX_DECREASE, Limit.MAX_RATIO)

    def _at_limit(self) -> float:
        """The candidate's value when it sits exactly on the limit."""
        if self.limit is Limit.MAX_INCREASE:
            return self.baseline + self.threshold
        if self.limit is Limit.MAX_DECREASE:
            return self.baseline - self.threshold
        if self.limit is Limit.MAX_RATIO:
            return self.baseline * self.threshold
        return self.threshold

    @property
    def delta(self) -> float:
        """The indifference zone's width on the test's scale (0: none)."""
        tolerance = self.resolved_tolerance
        if self.limit is Limit.MAX_RATIO:
            return max((self.threshold - tolerance) * self.baseline, 0.0)
        if self.limit is Limit.MIN:
            return max(tolerance - self.threshold, 0.0)
        return max(self.threshold - tolerance, 0.0)

    @property
    def healthy_distance(self) -> float:
        """How far a candidate with no change sits below the limit on the test's scale."""
        return abs(self._at_limit() - self.baseline)

    def _variance(self, value: float) -> float:
        if self.variance is not None:
            return self.variance
        p = min(max(value, 1e-6), 1 - 1e-6)
        return p * (1 - p)

    def information_per_sample(self, weight: float) -> float:
        """Information (1 / variance of the contrast) per candidate request at `weight`.

        The variance is the judge's: at the limit, and for a comparison the
        baseline's share of it shrinks as the baseline gets the rest of the
        traffic (weight / (1 - weight) baseline requests per candidate one).
        """
        if not 0.0 < weight < 1.0:
            raise ValueError("the weight must be strictly between 0 and 1")
        unit = self._variance(self._at_limit())
        if self.relative:
            coef = self.threshold if self.limit is Limit.MAX_RATIO else 1.0
            unit += coef * coef * self._variance(self.baseline) * weight / (1.0 - weight)
        return 1.0 / unit


@dataclass(frozen=True)
class Samples:
    """Candidate requests until a verdict, at the median and the 80th percentile."""

    median: float
    p80: float

    def minutes(self, requests_per_second: float, weight: float) -> tuple[float, float]:
        """The same in minutes, at the cell's traffic (both versions) and `weight`."""
        per_minute = requests_per_second * weight * 60.0
        return self.median / per_minute, self.p80 / per_minute


def powered_samples(h: Hypotheses, weight: float, budget: Budget) -> float:
    """Candidate requests at which the FAIL test catches harm at the limit with the power."""
    if h.delta <= 0:
        return math.inf
    info = sequential.powered_information(h.delta, budget.log_power_threshold, budget.power)
    return info / h.information_per_sample(weight)


def samples_to_fail(h: Hypotheses, weight: float, budget: Budget, min_samples: int = 0) -> Samples:
    """A candidate exactly at the limit: requests until FAIL (median, 80th percentile).

    At the limit the SPRT statistic drifts by delta²/2 per unit of information
    with scale delta, and the FAIL mixture has crossed once it reaches the
    threshold plus log 2. The threshold is Bonferroni's, which is what the
    closed average asks of one failing test when the others carry no evidence.
    """
    if h.delta <= 0:
        return Samples(math.inf, math.inf)
    level = budget.log_power_threshold - math.log(sequential.FAIL_WEIGHTS[0])
    per = h.information_per_sample(weight)
    drift, scale = h.delta * h.delta / 2.0, h.delta
    return Samples(
        *(
            max(sequential.information_to_reach(q, drift, scale, level) / per, min_samples)
            for q in (MEDIAN, P80)
        )
    )


def samples_to_pass(h: Hypotheses, weight: float, budget: Budget, min_samples: int = 0) -> Samples:
    """A candidate with no change: requests until it has decided (median, 80th percentile).

    Decided means PASSed (its statistic -S drifts by delta (L - delta/2) per
    unit of information, L the healthy candidate's distance from the limit,
    and PASS needs log(1/alpha) at the full level) or powered, whichever
    comes first: either lets the rollout promote.
    """
    if h.delta <= 0:
        return Samples(math.inf, math.inf)
    per = h.information_per_sample(weight)
    drift = h.delta * (h.healthy_distance - h.delta / 2.0)
    level = float(sequential.log_threshold(budget.alpha))
    cap = powered_samples(h, weight, budget)
    out = []
    for q in (MEDIAN, P80):
        passed = (
            sequential.information_to_reach(q, drift, h.delta, level) / per
            if drift > 0
            else math.inf
        )
        out.append(max(min(passed, cap), min_samples))
    return Samples(*out)


@dataclass(frozen=True)
class CellPlan:
    """One limit in one cell at one step: what a CLI prints per row."""

    requests_per_second: float
    weight: float
    #: minutes for a healthy candidate to decide (PASS or powered): median, 80th percentile
    healthy: tuple[float, float]
    #: minutes for a candidate at the limit to FAIL: median, 80th percentile
    at_limit: tuple[float, float]
    #: minutes until the FAIL test is powered
    powered: float


def plan_cell(
    h: Hypotheses,
    requests_per_second: float,
    weight: float,
    budget: Budget,
    min_samples: int = 0,
) -> CellPlan:
    """The plan of one limit in one cell, at the cell's traffic and the candidate's weight.

    `requests_per_second` is the cell's traffic (both versions: the model's
    traffic times the cohort's share); `weight` the candidate's share of it.
    """
    per_minute = requests_per_second * weight * 60.0
    return CellPlan(
        requests_per_second,
        weight,
        samples_to_pass(h, weight, budget, min_samples).minutes(requests_per_second, weight),
        samples_to_fail(h, weight, budget, min_samples).minutes(requests_per_second, weight),
        max(powered_samples(h, weight, budget), min_samples) / per_minute,
    )


# --- the tables of docs/judge.md --------------------------------------------------


def format_minutes(minutes: float) -> str:
    """Minutes as people read them: `< 1 min`, `42 min`, `3.5 h`, `2 d`, `never`."""
    if not math.isfinite(minutes):
        return "never"
    if minutes < 1:
        return "< 1 min"
    if minutes < 120:
        return f"{minutes:.0f} min"
    if minutes < 48 * 60:
        return f"{minutes / 60:.1f} h"
    return f"{minutes / 1440:.0f} d"


def table(
    h: Hypotheses,
    budget: Budget,
    *,
    healthy: bool,
    min_samples: int = 200,
    rates: Sequence[float] = (1, 5, 20, 100, 500),
    weights: Sequence[float] = (0.01, 0.05, 0.2, 0.5),
) -> str:
    """Markdown: median / 80th percentile minutes by cohort traffic (rows) and weight."""
    header = "| cohort traffic | " + " | ".join(f"weight {w:.0%}" for w in weights) + " |"
    rows = [header, "|---|" + "---|" * len(weights)]
    for rate in rates:
        cells = []
        for w in weights:
            plan = plan_cell(h, rate, w, budget, min_samples)
            median, p80 = plan.healthy if healthy else plan.at_limit
            cells.append(f"{format_minutes(median)} / {format_minutes(p80)}")
        rows.append(f"| {rate:g} req/s | " + " | ".join(cells) + " |")
    return "\n".join(rows)


#: the example policy (policies/gateway-api-cohorts.yaml): 6 limits × (3 cohorts + overall)
EXAMPLE_TESTS = 24


def tables() -> str:
    """The step tables of docs/judge.md (How the judge decides); a test keeps them in sync."""
    budget = Budget(0.05, EXAMPLE_TESTS)
    refusals = Hypotheses(Limit.MAX_INCREASE, 0.02, baseline=0.05)
    tight = Hypotheses(Limit.MAX_INCREASE, 0.01, baseline=0.05)
    errors = Hypotheses(Limit.MAX, 0.01, baseline=0.002)
    parts = [
        "Healthy candidate (refusals 5 % on both versions), `refusal-rate maxIncrease: 0.02`"
        " (tolerance 0.01), minutes until it PASSes or its FAIL test is powered"
        " (median / 80th percentile):",
        table(refusals, budget, healthy=True),
        "Candidate at the limit (refusals 5 % → 7 %), same limit, minutes until FAIL:",
        table(refusals, budget, healthy=False),
        "Candidate at the limit (refusals 5 % → 6 %), `refusal-rate maxIncrease: 0.01`,"
        " minutes until FAIL:",
        table(tight, budget, healthy=False),
        "`error-rate max: 0.01` with a baseline and candidate at 0.2 % (tolerance 0.6 %),"
        " candidate requests until decided / until a candidate at 1 % FAILs (median / 80th"
        " percentile), at 20 % weight:",
        "| tests sharing the budget | healthy decided | at the limit, FAIL |\n|---|---|---|\n"
        + "\n".join(
            f"| {tests} | {_pair(samples_to_pass(errors, 0.2, Budget(0.05, tests), 200))} "
            f"| {_pair(samples_to_fail(errors, 0.2, Budget(0.05, tests), 200))} |"
            for tests in (1, 4, 12, EXAMPLE_TESTS, 48)
        ),
    ]
    return "\n\n".join(parts)


def _pair(s: Samples) -> str:
    return f"{s.median:,.0f} / {s.p80:,.0f}"


def main() -> None:
    print(tables())


if __name__ == "__main__":
    main()
