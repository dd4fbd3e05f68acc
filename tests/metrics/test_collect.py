"""`collect`: every metric for both versions, with failures recorded as data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis import FailureKind, MeasurementFailure, Proportion, VersionData
from controller.errors import CanaryError, PermanentError, TransientError
from controller.metrics import (
    AmbiguousResultError,
    BadQueryError,
    MetricProvider,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
    collect,
    failure_kind,
)
from controller.metrics.prometheus import PrometheusProvider
from controller.metrics.templates import QUERIES
from controller.policy import TEMPLATES, MetricSpec

NOW = datetime(2025, 3, 1, tzinfo=UTC)
CONTEXT = QueryContext(model="m", namespace="n", start=NOW - timedelta(minutes=5), end=NOW)


class Scripted:
    """A provider whose answers are given per (metric, version)."""

    def __init__(self, answers: dict[tuple[str, str], VersionData | CanaryError]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str]] = []

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        self.calls.append((metric.metric_name, version))
        answer = self.answers[(metric.metric_name, version)]
        if isinstance(answer, CanaryError):
            raise answer
        return answer


ERRORS = MetricSpec(template="error-rate", max=0.01)
REFUSALS = MetricSpec(template="refusal-rate", max=0.1)


def test_both_versions_are_measured() -> None:
    data = VersionData({"a": Proportion(1, 10)})
    provider = Scripted(
        {(m, v): data for m in ("error-rate", "refusal-rate") for v in ("v1", "v2")}
    )
    assert isinstance(provider, MetricProvider)
    out = collect(provider, [ERRORS, REFUSALS], baseline="v1", candidate="v2", context=CONTEXT)
    assert set(out) == {"error-rate", "refusal-rate"}
    assert out["error-rate"].candidate == data
    assert provider.calls[:2] == [("error-rate", "v2"), ("error-rate", "v1")]


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        pytest.param(BadQueryError("bad", query="q"), FailureKind.BAD_QUERY, id="bad-query"),
        pytest.param(AmbiguousResultError("two", query="q"), FailureKind.AMBIGUOUS, id="ambiguous"),
        pytest.param(NoSeriesError("none", query="q"), FailureKind.NO_DATA, id="no-series"),
        pytest.param(PermanentError("forbidden"), FailureKind.BAD_QUERY, id="permanent"),
        pytest.param(TransientError("flaky"), FailureKind.UNREACHABLE, id="transient"),
    ],
)
def test_errors_become_failures_of_their_kind(error: CanaryError, kind: FailureKind) -> None:
    ok = VersionData({"a": Proportion(1, 10)})
    provider = Scripted({("error-rate", "v2"): error, ("error-rate", "v1"): ok})
    out = collect(provider, [ERRORS], baseline="v1", candidate="v2", context=CONTEXT)
    failure = out["error-rate"].candidate
    assert isinstance(failure, MeasurementFailure)
    assert failure.kind is kind
    assert failure.message == str(error)
    assert failure.query == getattr(error, "query", "")
    assert out["error-rate"].baseline == ok
    assert failure_kind(error) is kind


def test_an_unreachable_source_is_not_asked_twice() -> None:
    down = MetricsUnreachableError("down", query="q")
    provider = Scripted({("error-rate", "v2"): down})
    out = collect(provider, [ERRORS], baseline="v1", candidate="v2", context=CONTEXT)
    assert provider.calls == [("error-rate", "v2")]
    assert out["error-rate"].baseline == out["error-rate"].candidate
    assert isinstance(out["error-rate"].baseline, MeasurementFailure)


def test_every_policy_template_has_promql() -> None:
    """(test_simulated checks that every template is simulated too.)"""
    assert set(QUERIES) == set(TEMPLATES)
    provider = PrometheusProvider("http://127.0.0.1:9")
    for name, template in TEMPLATES.items():
        spec = MetricSpec(template=name, max=1.0 if template.bounded else 1e9)
        text = provider.query_for(spec, "v1", CONTEXT).text
        assert 'version="v1"' in text and "by (cohort" in text, name
    provider.close()


def test_context_needs_aware_ordered_times() -> None:
    with pytest.raises(ValueError, match="timezone"):
        QueryContext(model="m", namespace="n", start=datetime(2025, 1, 1), end=datetime(2025, 1, 2))
    with pytest.raises(ValueError, match="before its start"):
        QueryContext(model="m", namespace="n", start=NOW, end=NOW - timedelta(seconds=1))
