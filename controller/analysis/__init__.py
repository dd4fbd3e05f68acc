"""The analysis judge: pure statistics on cumulative counts, no I/O, no clock.

Observations in (`observations`), verdicts with evidence out (`verdicts`),
decided by `judge.judge` with the anytime-valid tests of `sequential` on the
estimates of `estimators`. `planning` turns the same statistics into how long a
step must last at a given traffic level.
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
