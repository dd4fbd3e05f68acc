"""The analysis judge: pure statistics on cumulative counts, no I/O, no clock.

Observations in (`observations`), verdicts with evidence out (`verdicts`),
decided by `judge.judge` with the anytime-valid tests of `sequential` on the
estimates of `estimators`. The judge is split by concern: `plan` (how a
metric is read, how the budget is spent), `strata` (a cell's samples, cohort
by cohort and step by step), `checks` (the one builder of a tested limit and
of a cell's verdict), and one module per kind of check: `means` (proportions
and scores), `quantiles` (latency), `gauges`, and the circuit `breaker`.
`planning` turns the same statistics into how long a step must last.
"""

from controller.analysis.judge import JudgeOptions, MetricPlan, judge, plan_metric
from controller.analysis.observations import (
    FailureKind,
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

__all__ = [
    "Arm",
    "CellVerdict",
    "FailureKind",
    "Gauge",
    "Histogram",
    "JudgeOptions",
    "Judgement",
    "Limit",
    "LimitCheck",
    "Measurement",
    "MeasurementFailure",
    "Method",
    "MetricObservation",
    "MetricPlan",
    "NoDataReason",
    "Proportion",
    "Sample",
    "Verdict",
    "VersionData",
    "judge",
    "plan_metric",
    "worst",
]
