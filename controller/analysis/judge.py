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

from collections.abc import Mapping, Sequence
from datetime import datetime

from controller.analysis import sequential
from controller.analysis.checks import Draft, finish, limit_check, no_data_verdict
from controller.analysis.gauges import judge_gauge
from controller.analysis.means import judge_means
from controller.analysis.observations import (
    Measurement,
    MeasurementFailure,
    MetricObservation,
    VersionData,
)
from controller.analysis.plan import (
    Budget,
    JudgeOptions,
    MetricPlan,
    Shape,
    alpha_per_test,
    count_tests,
    plan_metric,
)
from controller.analysis.quantiles import judge_quantile
from controller.analysis.strata import by_step, cell_strata
from controller.analysis.verdicts import (
    CellVerdict,
    Judgement,
    NoDataReason,
    Verdict,
)
from controller.policy import OVERALL, Analysis

__all__ = [
    "Budget",
    "JudgeOptions",
    "MetricPlan",
    "Shape",
    "alpha_per_test",
    "count_tests",
    "judge",
    "judge_cell",
    "plan_metric",
    "settle",
]


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
        # Split by step once per metric, not once per cell: the cells then share the
        # same stratum samples (and what is computed once per sample).
        steps = (
            by_step(observation, starts)
            if observation is not None and plan.statistical and _measured(observation)
            else []
        )
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
                    steps=steps,
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
    drafts: Sequence[CellVerdict | Draft], budgets: Mapping[bool, Budget]
) -> list[CellVerdict]:
    """Decide FAIL across each family at once, then finish every cell."""
    needs: dict[tuple[int, int], float] = {}
    for critical, budget in budgets.items():
        family = [
            (i, j, test.log_fail)
            for i, draft in enumerate(drafts)
            if isinstance(draft, Draft) and draft.base.critical == critical
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
            limit_check(test, needs.get((i, j)), budget, draft.candidate_samples)
            for j, test in enumerate(draft.tests)
        ]
        out.append(finish(draft.base, checks, draft.baseline, draft.candidate))
    return out


def judge_cell(
    plan: MetricPlan,
    cohort: str,
    observation: MetricObservation | None,
    *,
    budget: Budget,
    min_samples: int,
    options: JudgeOptions,
    step_starts: Sequence[MetricObservation] = (),
    steps: Sequence[tuple[VersionData, VersionData]] | None = None,
) -> CellVerdict | Draft:
    """The verdict on one metric in one cohort (or overall), or its tests before FAIL is settled.

    `steps` are `by_step(observation, step_starts)` when the caller has split them
    already (`judge` does, once per metric)."""
    base = CellVerdict(plan.name, cohort, Verdict.NO_DATA, plan.critical, "")
    if observation is None:
        return no_data_verdict(base, NoDataReason.QUERY_FAILED, "the metric was not measured")
    failure = _failure(observation.candidate) or _failure(observation.baseline)
    if failure is not None:
        return no_data_verdict(
            base,
            NoDataReason.QUERY_FAILED,
            f"measurement failed ({failure.kind}): {failure.message}",
            query=failure.query,
        )
    assert isinstance(observation.baseline, VersionData)
    assert isinstance(observation.candidate, VersionData)
    if steps is None:
        steps = by_step(observation, step_starts) if plan.statistical else []
    strata = cell_strata(cohort, observation.baseline, observation.candidate, steps)
    if isinstance(strata, NoDataReason):
        where = "overall" if cohort == OVERALL else "split by cohort"
        return no_data_verdict(base, strata, f"the query returned no series {where}")
    base = CellVerdict(
        plan.name,
        cohort,
        Verdict.NO_DATA,
        plan.critical,
        "",
        query=observation.candidate.query_for(cohort),
    )
    if plan.shape is Shape.GAUGE:
        return judge_gauge(plan, base, strata, min_samples)
    if plan.shape is Shape.QUANTILE:
        return judge_quantile(plan, base, strata, budget, min_samples, options)
    return judge_means(plan, base, strata, budget, min_samples, options)


def _measured(observation: MetricObservation) -> bool:
    return _failure(observation.candidate) is None and _failure(observation.baseline) is None


def _failure(m: Measurement) -> MeasurementFailure | None:
    return m if isinstance(m, MeasurementFailure) else None
