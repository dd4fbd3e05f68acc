"""Metric sources: the `MetricProvider` port, Prometheus, and a seeded simulator.

`base` defines the port, its typed errors and `collect` (every metric, both
versions, failures recorded as data); `prometheus` asks a real server;
`simulated` answers from a seeded traffic simulator for the demo and tests;
`promql` and `templates` hold the query text.
"""

from controller.metrics.base import (
    AmbiguousResultError,
    BadQueryError,
    MetricProvider,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
    collect,
    failure_kind,
)

__all__ = [
    "AmbiguousResultError",
    "BadQueryError",
    "MetricProvider",
    "MetricsUnreachableError",
    "NoSeriesError",
    "QueryContext",
    "collect",
    "failure_kind",
]
