"""Trace IDs from exemplars: the PromQL asked for, and a real Prometheus 2.42 answering.

The exporter serves OpenMetrics with exemplars on its counters (what a model
server does with `prometheus-client`'s `Counter.inc(exemplar=...)`); Prometheus
runs with `--enable-feature=exemplar-storage` and keeps them for
`/api/v1/query_exemplars`. Every selector is escaped as every other query is, so
hostile model, version and cohort values select exactly their own series.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import promql_parser
import pytest

from controller.metrics.base import QueryContext
from controller.metrics.exemplars import TraceQuery, exemplar_selector
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import MetricKind, MetricSpec
from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer, wait_until

MODEL = "support-bot"
#: values built to break out of a label matcher if not escaped
HOSTILE_MODEL = 'we"ird\\mo}del\n{x="1"} or vector(1) #'
HOSTILE_COHORT = 'non"-en}glish{'


def _context(start: datetime, end: datetime, model: str = MODEL) -> QueryContext:
    return QueryContext(
        model=model,
        namespace="llm",
        start=start,
        end=end,
        cohorts=("non-english", "mobile", HOSTILE_COHORT),
    )


def _query(
    metric: MetricSpec,
    start: datetime,
    end: datetime,
    *,
    cohort: str | None = "non-english",
    model: str = MODEL,
    version: str = "v7",
    limit: int = 20,
) -> TraceQuery:
    return TraceQuery(metric, version, cohort, _context(start, end, model), limit)


REFUSALS = MetricSpec(template="refusal-rate", max_increase=0.02)
T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


# --- the PromQL ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metric", "cohort", "expected"),
    [
        pytest.param(
            REFUSALS,
            "non-english",
            'llm_refusals_total{model="support-bot",version="v7",cohort="non-english"}',
            id="refusals-in-a-cohort",
        ),
        pytest.param(
            MetricSpec(template="error-rate", max=0.01),
            None,
            'llm_requests_total{model="support-bot",version="v7",outcome="error"}',
            id="errors-overall",
        ),
        pytest.param(
            MetricSpec(template="thumbs-down-rate", max_increase=0.01),
            "mobile",
            'llm_feedback_total{model="support-bot",version="v7",kind="thumbs_down",'
            'cohort="mobile"}',
            id="thumbs-down",
        ),
        pytest.param(
            MetricSpec(template="latency-p95", max_ratio=1.25),
            "mobile",
            'llm_request_duration_seconds_bucket{model="support-bot",version="v7",cohort="mobile"}',
            id="latency-buckets",
        ),
        pytest.param(
            MetricSpec(
                name="format",
                kind=MetricKind.PROPORTION,
                query='sum(increase(fmt_total{model="{{model}}",version="{{version}}",'
                'cohort=~"{{cohort}}"}[{{window}}]))',
                trials='sum(llm_requests_total{version="{{version}}"})',
                max=0.01,
            ),
            "non-english",
            'sum(increase(fmt_total{model="support-bot",version="v7",cohort=~"non-english"}'
            "[3600s]))",
            id="custom-proportion",
        ),
    ],
)
def test_the_selector_reads_the_bad_outcome_series(
    metric: MetricSpec, cohort: str | None, expected: str
) -> None:
    selector = exemplar_selector(_query(metric, T0, T0 + timedelta(hours=1), cohort=cohort))
    assert selector is not None
    assert selector.text == expected


def test_a_gauge_has_no_bad_requests_to_point_at() -> None:
    metric = MetricSpec(template="tokens-per-request", max=900)
    assert exemplar_selector(_query(metric, T0, T0 + timedelta(minutes=5))) is None


def test_hostile_values_are_escaped_and_scoped() -> None:
    provider = PrometheusProvider("http://127.0.0.1:9")
    query = _query(
        REFUSALS, T0, T0 + timedelta(minutes=5), cohort=HOSTILE_COHORT, model=HOSTILE_MODEL
    )
    selector = exemplar_selector(query)
    assert selector is not None
    scoped = provider._scoped(selector.text, query.context)
    parsed = promql_parser.parse(scoped)
    matchers = {(m.name, m.value) for m in parsed.matchers.matchers}
    assert matchers == {
        ("model", HOSTILE_MODEL),
        ("version", "v7"),
        ("cohort", HOSTILE_COHORT),
        ("namespace", "llm"),
    }
    provider.close()


# --- a real Prometheus with exemplar storage ----------------------------------------


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ContractExporter, PrometheusServer]]:
    exporter = ContractExporter()
    server = ExporterServer(exporter)
    prometheus = PrometheusServer(
        Path(tmp_path_factory.mktemp("exemplars")),
        server.port,
        features=("exemplar-storage",),
    )
    try:
        prometheus.wait_until_scraping()
        yield exporter, prometheus
    finally:
        prometheus.stop()
        server.close()


def _refuse(
    exporter: ContractExporter,
    prometheus: PrometheusServer,
    trace_id: str,
    *,
    model: str = MODEL,
    version: str = "v7",
    cohort: str = "non-english",
) -> None:
    """One refusal with its trace ID as the counter's exemplar, scraped by Prometheus."""
    labels = {"model": model, "version": version, "cohort": cohort}
    exporter.add_counter("llm_refusals", 1, **labels)
    exporter.set_exemplar("llm_refusals", trace_id, **labels)
    wait_until(
        f"the exemplar {trace_id} to be stored",
        lambda: any(
            e["labels"].get("trace_id") == trace_id
            for series in prometheus.exemplars(
                '{__name__="llm_refusals_total"}', time.time() - 600, time.time() + 60
            )
            for e in series["exemplars"]
        ),
    )


def test_trace_ids_come_newest_first_from_the_cohort_and_version_asked_for(
    served: tuple[ContractExporter, PrometheusServer],
) -> None:
    exporter, prometheus = served
    start = datetime.now(UTC) - timedelta(seconds=1)
    for trace in ("a1", "a2", "a3"):
        _refuse(exporter, prometheus, f"trace-{trace}")
    _refuse(exporter, prometheus, "trace-baseline", version="v6")
    _refuse(exporter, prometheus, "trace-mobile", cohort="mobile")
    end = datetime.now(UTC) + timedelta(seconds=1)
    provider = PrometheusProvider(prometheus.url, timeout_seconds=5)
    try:
        found = provider.trace_ids(_query(REFUSALS, start, end))
        overall = provider.trace_ids(_query(REFUSALS, start, end, cohort=None))
        two = provider.trace_ids(_query(REFUSALS, start, end, limit=2))
    finally:
        provider.close()
    assert found.trace_ids == ("trace-a3", "trace-a2", "trace-a1")
    assert found.reason is None
    assert 'namespace="llm"' in found.query
    assert set(overall.trace_ids) == {"trace-a1", "trace-a2", "trace-a3", "trace-mobile"}
    assert two.trace_ids == ("trace-a3", "trace-a2")


def test_hostile_labels_select_exactly_their_own_exemplars(
    served: tuple[ContractExporter, PrometheusServer],
) -> None:
    exporter, prometheus = served
    start = datetime.now(UTC) - timedelta(seconds=1)
    _refuse(exporter, prometheus, "trace-hostile", model=HOSTILE_MODEL, cohort=HOSTILE_COHORT)
    _refuse(exporter, prometheus, "trace-plain", model="we", cohort=HOSTILE_COHORT)
    end = datetime.now(UTC) + timedelta(seconds=1)
    provider = PrometheusProvider(prometheus.url, timeout_seconds=5)
    try:
        found = provider.trace_ids(
            _query(REFUSALS, start, end, cohort=HOSTILE_COHORT, model=HOSTILE_MODEL)
        )
    finally:
        provider.close()
    assert found.trace_ids == ("trace-hostile",)


def test_no_exemplars_is_an_empty_answer_that_says_why(
    served: tuple[ContractExporter, PrometheusServer],
) -> None:
    exporter, prometheus = served
    exporter.add_counter("llm_refusals", 5, model="quiet", version="v7", cohort="non-english")
    wait_until(
        "the quiet series to be scraped",
        lambda: prometheus.value('llm_refusals_total{model="quiet"}') == 5,
    )
    now = datetime.now(UTC)
    provider = PrometheusProvider(prometheus.url, timeout_seconds=5)
    try:
        found = provider.trace_ids(_query(REFUSALS, now - timedelta(minutes=5), now, model="quiet"))
    finally:
        provider.close()
    assert found.trace_ids == ()
    assert found.reason is not None
    assert "exemplar-storage" in found.reason
