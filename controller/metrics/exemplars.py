"""Trace IDs of bad requests, from exemplars: the port and its PromQL.

A model server that attaches an OpenMetrics exemplar with a `trace_id` label to
its bad-outcome counters (a refusal, an error, a thumbs-down...) lets a rollback
say *which* requests were bad: Prometheus (with `--enable-feature=exemplar-storage`)
keeps the exemplars it scrapes and serves them at `/api/v1/query_exemplars`,
for the series that a PromQL expression selects, over a time range.

`TraceSource` is that question as a port: the candidate's bad requests in one
cohort over the analysis window, at most `limit` of them. Which series count as
"bad" follows from the metric (`exemplar_selector`):

- a proportion template reads its events counter (`llm_refusals_total`, the
  `outcome="error"` requests, `llm_feedback_total{kind=...}`); a custom
  proportion, its `query` (Prometheus takes the selectors out of any expression);
- a histogram reads its `_bucket` series and keeps exemplars whose observed
  value is worse than `worse_than` (slower than the baseline's value for latency,
  lower for a quality score);
- a gauge has no requests to point at: no query, and the reason says so.

The selector is rendered by `promql.render` like every other query (values
escaped for where they land), narrowed to the cohort, and then scoped to the
tenant the same way the provider scopes its own queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from controller.metrics import promql
from controller.metrics.base import QueryContext
from controller.metrics.templates import QUERIES, Reading, histogram_series
from controller.policy import MetricKind, MetricSpec

#: the exemplar labels read as a trace ID, first found wins (OpenTelemetry's spelling first)
TRACE_LABELS = ("trace_id", "traceID", "traceId")


@dataclass(frozen=True)
class TraceQuery:
    """Which bad requests to look for: `version`'s in `cohort` (None: every cohort,
    for the `overall` cell) between `context.start` and `context.end`."""

    metric: MetricSpec
    version: str
    cohort: str | None
    context: QueryContext
    limit: int
    #: histograms: only observations worse than this value are bad requests
    worse_than: float | None = None
    #: histograms: whether a higher observed value is worse (latency) or a lower one (score)
    higher_is_worse: bool = True


@dataclass(frozen=True)
class TraceIds:
    """The trace IDs found, newest first, the query that found them, and why there are
    none (`reason`) when there are none."""

    trace_ids: tuple[str, ...]
    query: str = ""
    reason: str | None = None


@runtime_checkable
class TraceSource(Protocol):
    """Finds the trace IDs of bad requests (Prometheus exemplars, a simulator's record).

    Raises a `CanaryError` when the source cannot answer; an answer without
    trace IDs is a `TraceIds` with a `reason`."""

    def trace_ids(self, query: TraceQuery) -> TraceIds: ...


@dataclass(frozen=True)
class ExemplarSelector:
    """The PromQL whose series carry the bad requests' exemplars, and how to read them."""

    text: str
    #: histograms: exemplars carry observed values, filtered by `TraceQuery.worse_than`
    by_value: bool = False


def exemplar_selector(query: TraceQuery) -> ExemplarSelector | None:
    """The selector for `query`'s bad requests, rendered with escaped values and narrowed
    to its cohort; None when the metric has no bad-request series (a gauge). Not yet
    scoped to a tenant (the provider does that, as for its own queries)."""
    context = query.context
    cohorts = (query.cohort,) if query.cohort is not None else context.cohorts
    values: dict[str, promql.Value] = {
        "model": context.model,
        "version": query.version,
        "namespace": context.namespace,
        "cohort": promql.OneOf(cohorts),
        "window": promql.Duration(max(context.elapsed.total_seconds(), 1.0)),
    }
    metric = query.metric
    if metric.template is not None:
        template = QUERIES.get(metric.template)
        if template is None or template.reading not in (Reading.PROPORTION, Reading.HISTOGRAM):
            return None
        selector = template.counters[0]
        if query.cohort is not None:
            # every built-in selector ends with its label matchers' closing brace
            selector = selector[:-1] + ',cohort="{{cohort}}"}'
        text = promql.render(selector, values)
        if template.reading is Reading.HISTOGRAM:
            return ExemplarSelector(histogram_series(text)[0], by_value=True)
        return ExemplarSelector(text)
    if metric.query is None or metric.kind is MetricKind.GAUGE:
        return None
    return ExemplarSelector(
        promql.render(metric.query, values), by_value=metric.kind is MetricKind.HISTOGRAM
    )


def no_series_reason(metric: MetricSpec) -> str:
    """Why a metric has no bad requests to look up."""
    return (
        f"{metric.metric_name} is a gauge, not a count of requests: there are no bad "
        "requests to point at"
    )


def is_bad(value: float | None, query: TraceQuery) -> bool:
    """Whether an exemplar's observed value counts as a bad request for `query`."""
    if query.worse_than is None or value is None:
        return True
    return value > query.worse_than if query.higher_is_worse else value < query.worse_than
