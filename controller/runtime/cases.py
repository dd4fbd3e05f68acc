"""The executor's `CaseRecorder`: eval cases from the judge's cells and a `TraceSource`.

For each captured cell it writes down what a harness needs to replay the
failure (see `controller.cases`): the cohort's header match from the policy,
the limit that decided with its tolerance and direction, both versions' values
and samples, the analysis window (from its start to this look), the cell's
PromQL, and the trace IDs of the candidate's bad requests in that cohort and
window, at most `analysis.evalCases.maxTraceIds` of them.

Looking up trace IDs is the only I/O, and it happens after the rollback's route
write: all the cells of a tick share `timeout_seconds`, and a source that fails
or runs out of time leaves the case without trace IDs, with the reason why.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

from controller.analysis.verdicts import CellVerdict, Limit, LimitCheck, Verdict
from controller.cases import CaseArm, CaseLimit, Direction, EvalCase
from controller.engine.capture import Capture
from controller.engine.state import RolloutState
from controller.errors import CanaryError
from controller.metrics.base import QueryContext
from controller.metrics.exemplars import TraceQuery, TraceSource
from controller.policy import OVERALL, MetricSpec, ModelRollout

log = logging.getLogger(__name__)

#: limits that a lower value breaks; the others (max, maxIncrease, maxRatio) a higher one
_LOWER_IS_WORSE = frozenset({Limit.MIN, Limit.MAX_DECREASE})
#: the spec's fields for each limit, in the order a breaker's threshold is looked up
_FIELDS = {
    Limit.MAX_INCREASE: "max_increase",
    Limit.MAX_RATIO: "max_ratio",
    Limit.MAX: "max",
    Limit.MAX_DECREASE: "max_decrease",
    Limit.MIN: "min",
}


class ExemplarCaseRecorder:
    """Builds eval cases, with trace IDs from `traces` (Prometheus exemplars)."""

    def __init__(self, traces: TraceSource, *, timeout_seconds: float = 5.0) -> None:
        self.traces = traces
        self.timeout_seconds = timeout_seconds

    def record(
        self, rollout: ModelRollout, state: RolloutState, capture: Capture, now: datetime
    ) -> tuple[EvalCase, ...]:
        deadline = time.monotonic() + self.timeout_seconds
        return tuple(
            self._case(rollout, state, capture, cell, now, deadline) for cell in capture.cells
        )

    def _case(
        self,
        rollout: ModelRollout,
        state: RolloutState,
        capture: Capture,
        cell: CellVerdict,
        now: datetime,
        deadline: float,
    ) -> EvalCase:
        spec = rollout.spec
        metric = next(m for m in spec.analysis.metrics if m.metric_name == cell.metric)
        check = _deciding_check(cell)
        limit = _limit(metric, check) if check is not None else None
        direction = (
            Direction.LOWER_IS_WORSE
            if limit is not None and limit[0] in _LOWER_IS_WORSE
            else Direction.HIGHER_IS_WORSE
        )
        cohort = next((c for c in spec.cohorts if c.name == cell.cohort), None)
        match = cohort.match.model_dump(mode="json", exclude_none=True) if cohort else {}
        start = min(state.analysis_since, now)
        traces, reason = self._trace_ids(rollout, cell, metric, direction, start, now, deadline)
        return EvalCase(
            id=EvalCase.make_id(
                rollout.key, state.started_at, state.tick, cell.metric, cell.cohort
            ),
            created_at=now,
            rollout=rollout.key,
            model=spec.model,
            baseline_version=spec.baseline.version,
            candidate_version=spec.candidate.version,
            cohort=cell.cohort,
            match={str(k): str(v) for k, v in match.items()},
            metric=cell.metric,
            direction=direction,
            limit=CaseLimit(str(limit[0]), limit[1]) if limit is not None else None,
            tolerance=_finite(check.tolerance) if check is not None else None,
            baseline=_arm(cell, baseline=True),
            candidate=_arm(cell, baseline=False),
            window_start=start,
            window_end=now,
            promql=cell.query,
            trigger=capture.trigger,
            trace_ids=traces,
            trace_ids_reason=reason,
        )

    def _trace_ids(
        self,
        rollout: ModelRollout,
        cell: CellVerdict,
        metric: MetricSpec,
        direction: Direction,
        start: datetime,
        end: datetime,
        deadline: float,
    ) -> tuple[tuple[str, ...], str | None]:
        spec = rollout.spec
        limit = spec.analysis.eval_cases.max_trace_ids
        if limit == 0:
            return (), "analysis.evalCases.maxTraceIds is 0: no trace IDs are looked up"
        query = TraceQuery(
            metric=metric,
            version=spec.candidate.version,
            cohort=None if cell.cohort == OVERALL else cell.cohort,
            context=QueryContext(
                model=spec.model,
                namespace=rollout.metadata.namespace,
                start=start,
                end=end,
                window=spec.analysis.window,
                cohorts=tuple(c.name for c in spec.cohorts),
                deadline=deadline,
            ),
            limit=limit,
            worse_than=cell.baseline.value if cell.baseline else None,
            higher_is_worse=direction is Direction.HIGHER_IS_WORSE,
        )
        try:
            found = self.traces.trace_ids(query)
        except CanaryError as exc:
            log.warning(
                "%s: no trace IDs for %s in %s: %s", rollout.key, cell.metric, cell.cohort, exc
            )
            return (), f"the trace IDs could not be looked up: {exc}"
        return found.trace_ids[:limit], None if found.trace_ids else found.reason


def _deciding_check(cell: CellVerdict) -> LimitCheck | None:
    """The check that decided the cell, else its first FAILing one, else its first."""
    return (
        cell.deciding_check
        or next((c for c in cell.checks if c.verdict is Verdict.FAIL), None)
        or (cell.checks[0] if cell.checks else None)
    )


def _limit(metric: MetricSpec, check: LimitCheck) -> tuple[Limit, float]:
    """The policy's limit behind `check`: a circuit breaker trips on one of the metric's
    limits (the one with its threshold), named as the policy names it."""
    if check.limit is not Limit.BREAKER:
        return check.limit, check.threshold
    for limit, name in _FIELDS.items():
        value = getattr(metric, name)
        if value is not None and float(value) == check.threshold:
            return limit, check.threshold
    return check.limit, check.threshold


def _arm(cell: CellVerdict, *, baseline: bool) -> CaseArm:
    arm = cell.baseline if baseline else cell.candidate
    if arm is None:
        return CaseArm(None, None)
    return CaseArm(_finite(arm.value), _finite(arm.samples))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
