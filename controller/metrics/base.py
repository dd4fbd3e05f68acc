"""The metrics port: what a metric source must answer, and its typed errors.

A `MetricProvider` answers one question: for this metric spec and this version,
what are the counts since the analysis started, per cohort? The Prometheus
provider asks a server; the simulated provider asks a seeded traffic simulator.
Neither the engine nor the judge knows which one it has. A provider that can also
answer for both versions with one query (`VersionsProvider`) is asked that way.
This module imports no HTTP client, so anything can implement the protocol.

Errors are typed so the caller decides by class, never by message:

    CanaryError
    ├── TransientError
    │   ├── MetricsUnreachableError  the source did not answer (down, timeout, 5xx)
    │   └── NoDataError
    │       └── NoSeriesError        the query returned no series at all
    └── PermanentError
        ├── BadQueryError            the source rejected the query (syntax, execution)
        └── AmbiguousResultError     several series where one was expected

`collect` runs every metric of a policy for both versions and turns these
errors into `MeasurementFailure`s: a failed measurement is data for the judge
(NO_DATA), never an exception that would stop a rollback from happening.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from controller.analysis import FailureKind, MeasurementFailure, MetricObservation, VersionData
from controller.errors import CanaryError, NoDataError, PermanentError, TransientError
from controller.policy import MetricSpec


class MetricsUnreachableError(TransientError):
    """The metric source did not answer: connection refused, timeout, 5xx."""

    def __init__(self, message: str, *, query: str = "", retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.query = query


class NoSeriesError(NoDataError):
    """The query ran but matched no series: probably no traffic yet."""

    def __init__(self, message: str, *, query: str = "", retry_after: float | None = None):
        super().__init__(message, retry_after=retry_after)
        self.query = query


class BadQueryError(PermanentError):
    """The source rejected the query; it will keep doing so until the query changes."""

    def __init__(self, message: str, *, query: str = ""):
        super().__init__(message)
        self.query = query


class AmbiguousResultError(PermanentError):
    """The result has several series where one was expected (e.g. per pod, not per cohort)."""

    def __init__(self, message: str, *, query: str = ""):
        super().__init__(message)
        self.query = query


@dataclass(frozen=True)
class QueryContext:
    """Everything a query needs besides the metric and the version.

    Counts run from `start` (the start of the analysis) to `end` (this look);
    `window` is the policy's `analysis.window`, used by gauges only. `deadline`
    (a `time.monotonic()` instant) is when the tick's time for queries runs out:
    a provider gives each query at most what is left, so a slow source cannot hold
    a tick past it.
    """

    model: str
    namespace: str
    start: datetime
    end: datetime
    window: timedelta = timedelta(minutes=5)
    cohorts: tuple[str, ...] = field(default=())
    deadline: float | None = None

    def time_left(self, at_most: float) -> float:
        """Seconds a query may take now: `at_most`, or less if the deadline is nearer
        (0 once it has passed)."""
        if self.deadline is None:
            return at_most
        return max(0.0, min(at_most, self.deadline - time.monotonic()))

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if self.end < self.start:
            raise ValueError("the end of a count cannot be before its start")

    @property
    def elapsed(self) -> timedelta:
        return self.end - self.start


@runtime_checkable
class MetricProvider(Protocol):
    """A source of cumulative counts for a metric spec and a version."""

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        """Counts per cohort label value since `context.start`, at `context.end`.

        Raises `MetricsUnreachableError`, `NoSeriesError`, `BadQueryError` or
        `AmbiguousResultError` (or another `CanaryError`) when it cannot.
        """
        ...


@runtime_checkable
class VersionsProvider(Protocol):
    """A `MetricProvider` that can measure several versions of a metric at once."""

    def fetch_versions(
        self, metric: MetricSpec, versions: Sequence[str], context: QueryContext
    ) -> Mapping[str, VersionData | CanaryError] | None:
        """Each version's counts, or the error `fetch` would have raised for it, from
        one query; None when this metric cannot be measured that way (then `fetch`)."""
        ...


def failure_kind(error: CanaryError) -> FailureKind:
    """How the judge should read an error (its class decides, never its message)."""
    if isinstance(error, AmbiguousResultError):
        return FailureKind.AMBIGUOUS
    if isinstance(error, NoDataError):
        return FailureKind.NO_DATA
    if isinstance(error, TransientError):
        return FailureKind.UNREACHABLE
    return FailureKind.BAD_QUERY


def collect(
    provider: MetricProvider,
    metrics: Sequence[MetricSpec],
    *,
    baseline: str,
    candidate: str,
    context: QueryContext,
) -> dict[str, MetricObservation]:
    """Every metric measured for both versions; failures recorded, not raised.

    A provider that can (`VersionsProvider`) measures both versions with one query.
    Otherwise the candidate is queried first: if the source is down there is no point
    in waiting for the baseline's timeout too, and the judge needs both anyway.
    """
    out: dict[str, MetricObservation] = {}
    pairs = provider if isinstance(provider, VersionsProvider) else None
    for spec in metrics:
        both = pairs.fetch_versions(spec, (candidate, baseline), context) if pairs else None
        if both is not None:
            out[spec.metric_name] = MetricObservation(
                spec.metric_name, _measurement(both[baseline]), _measurement(both[candidate])
            )
            continue
        measured: dict[str, VersionData | MeasurementFailure] = {}
        for role, version in (("candidate", candidate), ("baseline", baseline)):
            if role in measured:
                continue
            try:
                measured[role] = provider.fetch(spec, version, context)
            except CanaryError as exc:
                measured[role] = _measurement(exc)
                if isinstance(exc, MetricsUnreachableError):
                    other = "baseline" if role == "candidate" else "candidate"
                    measured.setdefault(other, measured[role])
        out[spec.metric_name] = MetricObservation(
            spec.metric_name, measured["baseline"], measured["candidate"]
        )
    return out


def _measurement(got: VersionData | CanaryError) -> VersionData | MeasurementFailure:
    if isinstance(got, CanaryError):
        return MeasurementFailure(failure_kind(got), str(got), getattr(got, "query", ""))
    return got
