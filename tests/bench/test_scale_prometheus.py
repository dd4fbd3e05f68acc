"""The scale benchmark's stand-in answers the provider's real PromQL, one version or both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bench.scale_prometheus import PrometheusServer, Traffic
from controller.analysis import VersionData
from controller.metrics import QueryContext, collect
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import MetricSpec
from tests.serving import serving

COHORTS = ("a", "b.c")
METRICS = [
    MetricSpec(template="error-rate", max=0.05),
    MetricSpec(template="latency-p95", maxRatio=2.0),
]


@pytest.fixture
def stand_in() -> Iterator[PrometheusServer]:
    server = PrometheusServer(Traffic(COHORTS, (0.5, 0.5), 1.0))
    with serving(server):
        yield server


def test_both_versions_in_one_query_are_answered_as_each_alone(
    stand_in: PrometheusServer,
) -> None:
    provider = PrometheusProvider(f"http://127.0.0.1:{stand_in.server_address[1]}")
    end = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    context = QueryContext(
        model="m", namespace="ns", start=end - timedelta(minutes=10), end=end, cohorts=COHORTS
    )
    got = collect(provider, METRICS, baseline="v1", candidate="v2.0", context=context)
    assert stand_in.stats.to_json()["requests"] == {"/api/v1/query": len(METRICS)}
    for spec in METRICS:
        observation = got[spec.metric_name]
        for measured, version in ((observation.baseline, "v1"), (observation.candidate, "v2.0")):
            alone = provider.fetch(spec, version, context)
            assert isinstance(measured, VersionData)
            assert set(measured.by_cohort) == set(COHORTS)
            assert measured.by_cohort == alone.by_cohort
    provider.close()
