"""A whole rollout planned: every step and cell of a policy, in minutes, and its warnings.

`controller.analysis.planning` answers for one limit in one cell at one
constant weight. A policy is several metrics in several cells, over a schedule
of weights, and the judge counts from the start of the analysis: a step
inherits the evidence of the steps before it. This module puts the two
together for `canaryctl plan`:

- per step and cell (a cohort, or overall) and metric, the minutes a healthy
  candidate needs to decide (PASS, or its FAIL test powered) and a candidate at
  the limit needs to FAIL (median, 80th percentile), and to be powered, at that
  step's weight (`plan_cell`, the slowest of the metric's limits);
- along the schedule, with the counts cumulative as the judge has them: when
  each cell decides, when the rollout reaches 100 % (a hold lasts until what
  the engine waits for: `minSamples` in every cell unless `advanceOn: hold`,
  or every critical cell decided before 100 % and with `advanceOn: pass`), and
  warnings when a hold ends before that (with the remedies) or a cell cannot
  decide before `analysis.deadline`.

The baseline's values are not known before the rollout, so the plan assumes
them (`ASSUMED`), as docs/judge.md's Planning section says: a rate of 5 % (a fifth
of a `max` if that is lower), a score of mean 0.80 with variance 0.015, and for
a latency quantile a healthy candidate with a quarter of the quantile's tail
beyond the latency tested. Numbers come only from the judge's own functions;
`tests/analysis/test_statistical.py` checks those against simulations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from controller.analysis.plan import (
    Budget,
    JudgeOptions,
    MetricPlan,
    Shape,
    count_tests,
    plan_metric,
)
from controller.analysis.planning import (
    MEDIAN,
    P80,
    Hypotheses,
    format_minutes,
    plan_cell,
    powered_samples,
    samples_to_fail,
    samples_to_pass,
)
from controller.analysis.verdicts import Limit
from controller.policy import OVERALL, AdvanceOn, RolloutSpec

#: what the plan assumes of the baseline (see the module doc)
ASSUMED = {
    "rate": 0.05,
    "rate_of_max": 0.2,
    "score_mean": 0.80,
    "score_variance": 0.015,
    "healthy_tail_share": 0.25,
}
#: the weight at which an information target is converted (any weight gives the same)
_REFERENCE_WEIGHT = 0.5
FAILS_ABOVE = (Limit.MAX, Limit.MAX_INCREASE, Limit.MAX_RATIO)


class PlanInputError(ValueError):
    """Traffic that cannot be planned with: an unknown cohort, shares beyond 1."""


@dataclass(frozen=True)
class Traffic:
    """The model's traffic: requests per second and each policy cohort's share of it."""

    requests_per_second: float
    shares: Mapping[str, float]
    #: where the figures come from, for the output
    source: str = ""
    #: per metric, the share of requests that carry a sample of it (a judge scoring
    #: 10 % of the requests: 0.1); a metric not named has one per request
    sample_shares: Mapping[str, float] = field(default_factory=dict)
    #: where the sample shares come from, for the output
    sample_source: str = ""

    def sample_share(self, metric: str) -> float:
        return self.sample_shares.get(metric, 1.0)

    @property
    def rest(self) -> float:
        """The share of requests in no policy cohort."""
        return max(0.0, 1.0 - sum(self.shares.values()))


def _check_shares(option: str, kind: str, names: Sequence[str], given: Mapping[str, float]) -> None:
    """PlanInputError for a name not in the policy or a share outside (0, 1]."""
    unknown = sorted(set(given) - set(names))
    if unknown:
        known = ", ".join(names) or "none"
        raise PlanInputError(
            f"{option}: no {kind} {unknown[0]!r} in the policy (its {kind}s: {known})"
        )
    for name, share in given.items():
        if not 0.0 < share <= 1.0:
            raise PlanInputError(f"{option} {name}={share:g}: a share must be in (0, 1]")


def sample_shares(metrics: Sequence[str], given: Mapping[str, float]) -> dict[str, float]:
    """The sample share of each metric named in `given` (PlanInputError for a metric not in
    the policy or a share outside (0, 1])."""
    _check_shares("--sample-share", "metric", metrics, given)
    return dict(given)


def cohort_shares(cohorts: Sequence[str], given: Mapping[str, float]) -> dict[str, float]:
    """Each cohort's share of the traffic: as given, else an equal part of what the
    given shares leave, split with the requests that are in no cohort."""
    _check_shares("--cohort-share", "cohort", cohorts, given)
    total = sum(given.values())
    if total > 1.0 + 1e-9:
        raise PlanInputError(f"--cohort-share: the shares add up to {total:g}, more than 1")
    missing = [c for c in cohorts if c not in given]
    left = max(0.0, 1.0 - total)
    if missing and left <= 1e-9:
        raise PlanInputError(
            f"--cohort-share: the shares given leave no traffic for {', '.join(missing)}"
        )
    each = left / (len(missing) + 1) if missing else 0.0
    return {c: given.get(c, each) for c in cohorts}


@dataclass(frozen=True)
class LimitPlan:
    """One limit of one metric, as planned: the hypotheses it is planned with."""

    metric: str
    limit: Limit
    hypotheses: Hypotheses
    critical: bool


def limit_plans(plan: MetricPlan) -> list[LimitPlan]:
    """The hypotheses the judge tests for each limit of `plan` (gauges: none)."""
    if not plan.statistical:
        return []
    out = []
    for limit, threshold in plan.limits:
        tolerance = plan.tolerances.get(str(limit))
        if plan.shape is Shape.QUANTILE:
            assert plan.quantile is not None
            tail = 1.0 - plan.quantile
            healthy = ASSUMED["healthy_tail_share"]
            if limit in FAILS_ABOVE:
                h = Hypotheses(Limit.MAX, tail, baseline=tail * healthy, tolerance=tail / 2)
            else:
                h = Hypotheses(
                    Limit.MIN,
                    tail,
                    baseline=tail + (1 - tail) * (1 - healthy),
                    tolerance=tail + (1 - tail) / 2,
                )
        elif plan.shape is Shape.MEAN:
            mean = ASSUMED["score_mean"]
            if limit is Limit.MIN and threshold >= mean:
                mean = threshold + (1 - threshold) / 2
            if limit is Limit.MAX and threshold <= mean:
                mean = threshold / 2
            h = Hypotheses(limit, threshold, mean, tolerance, variance=ASSUMED["score_variance"])
        else:
            h = Hypotheses(limit, threshold, _assumed_rate(plan), tolerance)
        out.append(LimitPlan(plan.name, limit, h, plan.critical))
    return out


def _assumed_rate(plan: MetricPlan) -> float:
    rate = ASSUMED["rate"]
    for limit, threshold in plan.limits:
        if limit is Limit.MAX:
            rate = min(rate, threshold * ASSUMED["rate_of_max"])
        if limit is Limit.MIN:
            rate = max(rate, threshold + (1 - threshold) / 2)
    return rate


@dataclass(frozen=True)
class Period:
    """A stretch of the schedule at one set of weights: the shadow, or a step."""

    name: str
    hold: timedelta
    #: the candidate's share of each cell's requests (cohorts and overall)
    weights: Mapping[str, float]
    #: the candidate's requests per request of the cell (the weight, or the mirror share)
    candidate_share: Mapping[str, float]
    #: does leaving it need every critical cell decided (else `minSamples` only)?
    needs_decided: bool
    #: does leaving it need `minSamples` in every critical cell (not with `advanceOn: hold`)?
    needs_samples: bool = True


def periods(spec: RolloutSpec, traffic: Traffic) -> tuple[list[Period], timedelta]:
    """The judged stretches of the schedule, and the hold of the last step after them.

    The last step (100 % as a rule) is entered only when every critical cell has
    decided: it is where the plan's promotion time ends (plus its hold).
    """
    n = len(spec.steps)
    out: list[Period] = []
    strict = spec.analysis.advance_on is AdvanceOn.PASS
    counts = spec.analysis.advance_on is not AdvanceOn.HOLD
    if spec.shadow is not None:
        m = spec.shadow.mirror_percent / 100
        share = dict.fromkeys([*traffic.shares, OVERALL], m)
        weights = dict.fromkeys(share, m / (1 + m))
        decided = strict or n <= 1
        out.append(Period("shadow", spec.shadow.duration, weights, share, decided, counts))
    judged = spec.steps if spec.steps[-1].weight < 100 else spec.steps[:-1]
    for i, step in enumerate(judged):
        weights = {c: step.cohort_weights.get(c, step.weight) / 100 for c in traffic.shares}
        weights[OVERALL] = (
            sum(traffic.shares[c] * w for c, w in weights.items())
            + traffic.rest * step.weight / 100
        )
        name = f"step {i + 1}: {step.weight}%"
        decided = strict or i >= n - 2
        out.append(Period(name, step.hold, weights, weights, decided, counts or decided))
    last_hold = spec.steps[-1].hold if spec.steps[-1].weight >= 100 else timedelta(0)
    return out, last_hold


@dataclass(frozen=True)
class Row:
    """One metric in one cell at one step, at that step's weight (minutes)."""

    period: str
    cohort: str
    metric: str
    requests_per_second: float
    #: the candidate's share of the cell's requests (in the shadow: mirrored)
    weight: float
    healthy: tuple[float, float]
    at_limit: tuple[float, float]
    powered: float
    critical: bool


@dataclass(frozen=True)
class CellTimes:
    """One cell along the schedule: minutes from the start of the analysis."""

    cohort: str
    metric: str
    healthy: tuple[float, float]
    at_limit: tuple[float, float]
    powered: float
    critical: bool


@dataclass(frozen=True)
class Plan:
    """A policy planned at some traffic: what `canaryctl plan` shows."""

    traffic: Traffic
    tests: int
    rows: tuple[Row, ...]
    cells: tuple[CellTimes, ...]
    #: minutes until 100 %: median, 80th percentile (inf: never)
    promotion: tuple[float, float]
    #: when each period ends at the median and 80th percentile (minutes from the start)
    period_ends: tuple[tuple[str, float, float, float], ...]
    deadline: timedelta
    warnings: tuple[str, ...] = field(default=())
    gauges: tuple[str, ...] = field(default=())


def plan_rollout(spec: RolloutSpec, traffic: Traffic, options: JudgeOptions | None = None) -> Plan:
    """Plan every step and cell of `spec` at `traffic` (see the module doc)."""
    planner = _Planner(spec, traffic, options or JudgeOptions())
    ends = {q: planner.schedule(q) for q in (MEDIAN, P80)}
    last_hold = planner.last_hold.total_seconds() / 60
    promotion = tuple((ends[q][-1] if ends[q] else 0.0) + last_hold for q in (MEDIAN, P80))
    cells = planner.cell_times(ends)
    return Plan(
        traffic,
        planner.budgets[True].tests,
        tuple(planner.rows()),
        tuple(cells),
        (promotion[0], promotion[1]),
        tuple(
            (p.name, p.hold.total_seconds() / 60, ends[MEDIAN][k], ends[P80][k])
            for k, p in enumerate(planner.stretches)
        ),
        spec.deadline,
        tuple(_warnings(planner.stretches, ends, cells, spec.deadline)),
        tuple(p.name for p in planner.metric_plans if not p.statistical),
    )


class _Planner:
    """The figures of one policy at one traffic (see `plan_rollout`)."""

    def __init__(self, spec: RolloutSpec, traffic: Traffic, options: JudgeOptions) -> None:
        analysis = spec.analysis
        self.metric_plans = [plan_metric(m) for m in analysis.metrics]
        self.cells = [*traffic.shares, OVERALL]
        alpha = 1.0 - analysis.confidence
        self.budgets = {
            critical: Budget(
                alpha,
                count_tests(self.metric_plans, len(self.cells), critical=critical),
                analysis.power,
                options.breaker_share,
            )
            for critical in (True, False)
        }
        self.limits = [lp for p in self.metric_plans for lp in limit_plans(p)]
        self.metrics = list(dict.fromkeys(lp.metric for lp in self.limits))
        self.rate = {c: traffic.requests_per_second * traffic.shares[c] for c in traffic.shares}
        self.rate[OVERALL] = traffic.requests_per_second
        #: each limit's samples per request (a metric scored on a share of the requests)
        self.per_request = [traffic.sample_share(lp.metric) for lp in self.limits]
        self.stretches, self.last_hold = periods(spec, traffic)
        self.min_samples = analysis.min_samples

    def _info(self, i: int, samples: float) -> float:
        """`samples` candidate requests of limit `i` as information (weight-free)."""
        return samples * self.limits[i].hypotheses.information_per_sample(_REFERENCE_WEIGHT)

    def _budget(self, i: int) -> Budget:
        return self.budgets[self.limits[i].critical]

    def healthy_target(self, i: int, q: float) -> float:
        s = samples_to_pass(self.limits[i].hypotheses, _REFERENCE_WEIGHT, self._budget(i))
        return self._info(i, s.median if q == MEDIAN else s.p80)

    def rows(self) -> list[Row]:
        """Per step, cell and metric: `plan_cell` at the step's weight, slowest limit."""
        out = []
        for period in self.stretches:
            for cohort in self.cells:
                w = period.weights[cohort]
                # the cell's requests as `plan_cell` counts them: the candidate's are
                # `w` of them (in the shadow, the mirrored share of the baseline's)
                share = period.candidate_share[cohort]
                rate = self.rate[cohort] * share / w if w > 0 else 0.0
                for metric in self.metrics:
                    mine = [i for i, lp in enumerate(self.limits) if lp.metric == metric]
                    plans = [
                        plan_cell(
                            self.limits[i].hypotheses,
                            rate * self.per_request[i],
                            w,
                            self._budget(i),
                            self.min_samples,
                        )
                        if 0 < w < 1 and rate > 0
                        else None
                        for i in mine
                    ]
                    out.append(
                        Row(
                            period.name,
                            cohort,
                            metric,
                            self.rate[cohort],
                            share,
                            _slowest([p.healthy if p else _NEVER for p in plans]),
                            _slowest([p.at_limit if p else _NEVER for p in plans]),
                            max(p.powered if p else math.inf for p in plans),
                            self.limits[mine[0]].critical,
                        )
                    )
        return out

    def reach(self, i: int, cohort: str, ends: Sequence[float], info: float) -> float:
        """Minutes from the start until `cohort` has `info` for limit `i` and `minSamples`
        candidate requests, the periods ending at `ends` (the last one open)."""
        lp = self.limits[i]
        got_info = got_samples = 0.0
        t_info = 0.0 if info <= 0 else math.inf
        t_samples = 0.0 if self.min_samples <= 0 else math.inf
        start = 0.0
        for period, end in zip(self.stretches, ends, strict=False):
            s_rate = self.rate[cohort] * period.candidate_share[cohort] * self.per_request[i] * 60.0
            w = period.weights[cohort]
            i_rate = s_rate * lp.hypotheses.information_per_sample(w) if 0 < w < 1 else 0.0
            span = end - start
            if t_info == math.inf and i_rate > 0 and got_info + i_rate * span >= info:
                t_info = start + (info - got_info) / i_rate
            if (
                t_samples == math.inf
                and s_rate > 0
                and got_samples + s_rate * span >= self.min_samples
            ):
                t_samples = start + (self.min_samples - got_samples) / s_rate
            if not math.isfinite(span):
                break
            got_info += i_rate * span
            got_samples += s_rate * span
            start = end
        return max(t_info, t_samples)

    def schedule(self, q: float) -> list[float]:
        """When each period ends for a healthy candidate at percentile `q`: its hold, or
        later if the engine waits (`minSamples` everywhere, or every cell decided)."""
        ends: list[float] = []
        start = 0.0
        for period in self.stretches:
            hold_end = start + period.hold.total_seconds() / 60.0
            open_ends = [*ends, math.inf]
            gate = 0.0
            for i, lp in enumerate(self.limits):
                if not lp.critical or not (period.needs_decided or period.needs_samples):
                    continue
                need = self.healthy_target(i, q) if period.needs_decided else 0.0
                for cohort in self.cells:
                    gate = max(gate, self.reach(i, cohort, open_ends, need))
            end = max(hold_end, gate)
            ends.append(end)
            start = end
        return ends

    def cell_times(self, ends: Mapping[float, Sequence[float]]) -> list[CellTimes]:
        """Each cell and metric along the schedule (the last period open-ended): a healthy
        candidate deciding, one at the limit failing, the FAIL test powered."""
        out = []
        at_limit_ends = [*ends[P80][:-1], math.inf]
        for cohort in self.cells:
            for metric in self.metrics:
                mine = [i for i, lp in enumerate(self.limits) if lp.metric == metric]
                healthy, failing, powered = [], [], []
                for i in mine:
                    h, budget = self.limits[i].hypotheses, self._budget(i)
                    healthy.append(
                        tuple(
                            self.reach(
                                i, cohort, [*ends[q][:-1], math.inf], self.healthy_target(i, q)
                            )
                            for q in (MEDIAN, P80)
                        )
                    )
                    fail = samples_to_fail(h, _REFERENCE_WEIGHT, budget)
                    failing.append(
                        tuple(
                            self.reach(i, cohort, at_limit_ends, self._info(i, s))
                            for s in (fail.median, fail.p80)
                        )
                    )
                    enough = powered_samples(h, _REFERENCE_WEIGHT, budget)
                    powered.append(self.reach(i, cohort, at_limit_ends, self._info(i, enough)))
                out.append(
                    CellTimes(
                        cohort,
                        metric,
                        _slowest(healthy),
                        _slowest(failing),
                        max(powered),
                        self.limits[mine[0]].critical,
                    )
                )
        return out


_NEVER = (math.inf, math.inf)


def _slowest(pairs: Sequence[tuple[float, ...]]) -> tuple[float, float]:
    if not pairs:
        return (0.0, 0.0)
    return (max(p[0] for p in pairs), max(p[1] for p in pairs))


#: what a user can do about a step that waits for `minSamples` beyond its hold
_SAMPLES_REMEDY = (
    "; remedies: a shadow phase, cohortWeights for the small cohorts, a longer hold, "
    "or advanceOn: hold"
)
#: the same for the shadow, where the mirror share is what the candidate gets
_SHADOW_REMEDY = "; remedies: a higher mirrorPercent, a longer shadow, or advanceOn: hold"


def _warnings(
    stretches: Sequence[Period],
    ends: Mapping[float, Sequence[float]],
    cells: Sequence[CellTimes],
    deadline: timedelta,
) -> list[str]:
    out = []
    start = 0.0
    for k, period in enumerate(stretches):
        hold = period.hold.total_seconds() / 60
        needed = ends[P80][k] - start
        if needed > hold + 1e-6:
            if period.needs_decided:
                what, remedy = "to decide (every critical cell PASSed or powered)", ""
            else:
                what = "to reach minSamples in every cell"
                remedy = _SHADOW_REMEDY if period.name == "shadow" else _SAMPLES_REMEDY
            out.append(
                f"{period.name}: the hold ({format_minutes(hold)}) is shorter than the time "
                f"{what}: {format_minutes(needed)} (80th percentile){remedy}"
            )
        start = ends[P80][k] if math.isfinite(ends[P80][k]) else start
    limit = deadline.total_seconds() / 60
    by_cohort: dict[str, list[CellTimes]] = {}
    for cell in cells:
        if cell.critical:
            by_cohort.setdefault(cell.cohort, []).append(cell)
    for cohort, mine in by_cohort.items():
        slowest = max(mine, key=lambda c: c.healthy[1])
        if slowest.healthy[1] > limit:
            out.append(
                f"cohort {cohort} cannot decide before analysis.deadline "
                f"({format_minutes(limit)}): {slowest.metric} needs "
                f"{format_minutes(slowest.healthy[1])} (80th percentile)"
            )
    return out
