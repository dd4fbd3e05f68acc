"""The Prometheus provider against a real Prometheus scraping known counts.

One scenario runs for the whole module (Prometheus needs a few seconds of
scrapes per phase, so the phases are shared):

1. every series starts with counts from before the analysis (they must not count);
2. the analysis starts; each version and cohort gets known increments, and one
   pod's counters restart from zero (they must count exactly once);
3. the look: the provider must return exactly the increments.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis import (
    Gauge,
    Histogram,
    MetricObservation,
    Proportion,
    Verdict,
    VersionData,
    judge,
)
from controller.errors import PermanentError
from controller.metrics import (
    AmbiguousResultError,
    BadQueryError,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
    collect,
)
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import OVERALL, TEMPLATES, Analysis, MetricSpec
from controller.policy.templates import FEEDBACK_KINDS, FEEDBACK_TEMPLATES
from tests.metrics.servers import ContractExporter, PrometheusServer, wait_until

MODEL = "support-bot"
COHORTS = ("mobile", "non-english", "default")
#: a model name and a version built to break out of a label matcher if not escaped
HOSTILE_MODEL = 'we"ird\\mo}del\n{x="1"} or vector(1) #'
HOSTILE_VERSION = 'v2"} or vector(1)'
HOSTILE_COHORT = "mob|ile.*"


@dataclass(frozen=True)
class Traffic:
    """Known increments of one version in one cohort during the analysis."""

    ok: int
    errors: int
    refusals: int
    output_tokens: int
    durations: tuple[float, ...]
    ttft: tuple[float, ...]
    quality: tuple[float, ...]
    #: implicit feedback events of each kind (`FEEDBACK_KINDS`)
    feedback: tuple[int, ...] = ()

    @property
    def requests(self) -> int:
        return self.ok + self.errors


def _traffic(scale: int, slow: float = 0.0) -> Traffic:
    durations = (0.3,) * (4 * scale) + (0.8,) * (3 * scale) + (2.0,) * scale + (7.0 + slow,) * 2
    return Traffic(
        ok=40 * scale,
        errors=scale,
        refusals=3 * scale,
        output_tokens=9_000 * scale,
        durations=durations,
        ttft=(0.05,) * (5 * scale) + (0.3,) * scale + (2.0,),
        quality=(0.1,) * scale + (0.7,) * (2 * scale) + (0.9,) * (5 * scale),
        feedback=tuple((i + 1) * scale for i in range(len(FEEDBACK_KINDS))),
    )


TRAFFIC: dict[tuple[str, str], Traffic] = {
    ("v1", "mobile"): _traffic(10),
    ("v1", "non-english"): _traffic(6),
    ("v1", "default"): _traffic(20),
    ("v2", "mobile"): _traffic(2),
    ("v2", "non-english"): _traffic(3, slow=1.0),
    ("v2", "default"): _traffic(1),
}


@dataclass(frozen=True)
class Scenario:
    prometheus: PrometheusServer
    exporter: ContractExporter
    start: datetime
    end: datetime
    #: a time between the analysis' increments and the pod's restart (a step's start)
    middle: datetime

    def context(self, model: str = MODEL, cohorts: Sequence[str] = COHORTS) -> QueryContext:
        return QueryContext(
            model=model,
            namespace="llm",
            start=self.start,
            end=self.end,
            window=timedelta(minutes=5),
            cohorts=tuple(cohorts),
        )


def _serve(e: ContractExporter, model: str, version: str, cohort: str, t: Traffic) -> None:
    labels = {"model": model, "version": version, "cohort": cohort}
    e.add_counter("llm_requests", t.ok, outcome="ok", **labels)
    e.add_counter("llm_requests", t.errors, outcome="error", **labels)
    e.add_counter("llm_refusals", t.refusals, **labels)
    e.add_counter("llm_tokens", t.output_tokens, direction="output", **labels)
    e.add_counter("llm_tokens", 3 * t.output_tokens, direction="input", **labels)
    e.observe("llm_request_duration_seconds", t.durations, **labels)
    e.observe("llm_time_to_first_token_seconds", t.ttft, **labels)
    e.observe("llm_quality_score", t.quality, **labels)
    for kind, count in zip(FEEDBACK_KINDS, t.feedback, strict=True):
        e.add_counter("llm_feedback", count, kind=kind, **labels)


def _phase(prometheus: PrometheusServer, exporter: ContractExporter, phase: int) -> float:
    """Mark the end of a phase and wait until Prometheus has scraped it; its time."""
    exporter.set_counter(
        "llm_requests", phase, model="marker", version="m", cohort="m", outcome="ok"
    )
    wait_until(
        f"phase {phase} to be scraped",
        lambda: prometheus.value('llm_requests_total{model="marker"}') == phase,
    )
    return time.time()


@pytest.fixture(scope="module")
def scenario(prometheus: PrometheusServer, exporter: tuple[ContractExporter, int]) -> Scenario:
    e = exporter[0]
    # 1. counts from before the analysis, for every series the tests read
    for (version, cohort), _ in TRAFFIC.items():
        _serve(e, MODEL, version, cohort, _traffic(50))
    e.set_counter(
        "llm_requests", 500, model="restarts", version="v2", cohort="mobile", outcome="ok"
    )
    e.observe(
        "llm_request_duration_seconds", [0.3] * 5, model="restarts", version="v2", cohort="mobile"
    )
    for model, cohort in (
        (HOSTILE_MODEL, HOSTILE_COHORT),
        (HOSTILE_MODEL, "mobile"),
        ("we", HOSTILE_COHORT),
    ):
        _serve(e, model, HOSTILE_VERSION, cohort, _traffic(50))
    seen = _phase(prometheus, e, 1)
    # Counting starts on the next whole second, after the scrape that first saw
    # these series (a series first seen after the start would count from zero).
    # A scrape that began before the start may read the exporter a moment later,
    # so the increments also wait out one more scrape.
    start_at = math.ceil(seen)
    start = datetime.fromtimestamp(start_at, UTC)
    time.sleep(max(0.0, start_at + 1.2 - time.time()))
    # 2. the analysis: known increments, and a pod that restarts half-way
    for (version, cohort), t in TRAFFIC.items():
        _serve(e, MODEL, version, cohort, t)
    e.add_counter("llm_requests", 30, model="restarts", version="v2", cohort="mobile", outcome="ok")
    e.observe(
        "llm_request_duration_seconds", [0.3] * 3, model="restarts", version="v2", cohort="mobile"
    )
    _serve(e, HOSTILE_MODEL, HOSTILE_VERSION, HOSTILE_COHORT, _traffic(1))
    _serve(e, HOSTILE_MODEL, HOSTILE_VERSION, "mobile", _traffic(7))
    _serve(e, "we", HOSTILE_VERSION, HOSTILE_COHORT, _traffic(9))
    # a past instant that has seen the increments (scraped before `seen`) and not the
    # restart (made after it): what the counts at a later step's start are read at
    middle_at = math.ceil(_phase(prometheus, e, 2))
    time.sleep(max(0.0, middle_at + 0.1 - time.time()))
    # the restart: the counter starts again from zero and reaches 12
    e.set_counter("llm_requests", 12, model="restarts", version="v2", cohort="mobile", outcome="ok")
    e.reset_histogram(
        "llm_request_duration_seconds", model="restarts", version="v2", cohort="mobile"
    )
    e.observe(
        "llm_request_duration_seconds", [0.8] * 2, model="restarts", version="v2", cohort="mobile"
    )
    seen = _phase(prometheus, e, 3)
    # 3. the look, a second after the last scrape so that it falls inside the count
    end = datetime.fromtimestamp(seen + 1.0, UTC)
    time.sleep(max(0.0, seen + 1.0 - time.time()))
    return Scenario(prometheus, e, start, end, datetime.fromtimestamp(middle_at, UTC))


@pytest.fixture(scope="module")
def provider(prometheus: PrometheusServer) -> Iterator[PrometheusProvider]:
    p = PrometheusProvider(prometheus.url, step_seconds=1, lookback_seconds=60, timeout_seconds=5)
    try:
        yield p
    finally:
        p.close()


def _histogram(values: Sequence[float], bounds: Sequence[float]) -> Histogram:
    edges = (*bounds, math.inf)
    cumulative = tuple(float(sum(v <= b for v in values)) for b in edges)
    return Histogram(edges, cumulative, float(sum(values)))


def expected(template: str, t: Traffic) -> object:
    if template == "refusal-rate":
        return Proportion(t.refusals, t.requests)
    if template == "error-rate":
        return Proportion(t.errors, t.requests)
    if template == "quality-score":
        return _histogram(t.quality, ContractExporter.HISTOGRAMS["llm_quality_score"])
    if template.startswith("latency"):
        return _histogram(t.durations, ContractExporter.HISTOGRAMS["llm_request_duration_seconds"])
    if template in FEEDBACK_TEMPLATES:
        kind = FEEDBACK_TEMPLATES[template][0]
        return Proportion(t.feedback[FEEDBACK_KINDS.index(kind)], t.requests)
    if template.startswith("ttft"):
        return _histogram(t.ttft, ContractExporter.HISTOGRAMS["llm_time_to_first_token_seconds"])
    assert template == "tokens-per-request"
    return Gauge(t.output_tokens / t.requests, t.requests)


def _same(got: object, want: object) -> None:
    if isinstance(want, Histogram):
        assert isinstance(got, Histogram)
        assert got.bounds == want.bounds
        assert got.cumulative == want.cumulative
        assert got.sum == pytest.approx(want.sum)
    elif isinstance(want, Gauge):
        assert isinstance(got, Gauge)
        assert got.value == pytest.approx(want.value)
        assert got.samples == want.samples
    else:
        assert got == want


@pytest.mark.parametrize("template", sorted(TEMPLATES))
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_every_template_returns_exactly_the_counts_since_the_start(
    scenario: Scenario, provider: PrometheusProvider, template: str, version: str
) -> None:
    spec = MetricSpec(template=template, max=1.0 if TEMPLATES[template].bounded else 1e9)
    data = provider.fetch(spec, version, scenario.context())
    assert set(data.by_cohort) == set(COHORTS)
    assert data.total is None
    for cohort in COHORTS:
        _same(data.by_cohort[cohort], expected(template, TRAFFIC[(version, cohort)]))
    assert "by (cohort" in data.query


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_both_versions_in_one_query_are_what_each_query_of_its_own_gives(
    scenario: Scenario, provider: PrometheusProvider, template: str
) -> None:
    spec = MetricSpec(template=template, max=1.0 if TEMPLATES[template].bounded else 1e9)
    context = scenario.context()
    both = provider.fetch_versions(spec, ("v2", "v1"), context)
    assert both is not None and set(both) == {"v2", "v1"}
    for version, got in both.items():
        alone = provider.fetch(spec, version, context)
        assert isinstance(got, VersionData)
        assert (got.by_cohort, got.total) == (alone.by_cohort, alone.total)
        assert 'version=~"v2|v1"' in got.query and "by (cohort, version" in got.query
    # a version with no series is no data, the other is measured as alone
    missing = provider.fetch_versions(spec, ("v3", "v1"), context)
    assert missing is not None and isinstance(missing["v3"], NoSeriesError)
    assert isinstance(missing["v1"], VersionData)
    assert missing["v1"].by_cohort == provider.fetch(spec, "v1", context).by_cohort


def test_a_hostile_version_in_one_query_selects_exactly_its_own_series(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    spec = MetricSpec(template="error-rate", max=0.1)
    for model, cohort in ((HOSTILE_MODEL, HOSTILE_COHORT), ("we", HOSTILE_COHORT)):
        context = scenario.context(model=model, cohorts=[cohort])
        both = provider.fetch_versions(spec, (HOSTILE_VERSION, "v1"), context)
        assert both is not None
        alone = provider.fetch(spec, HOSTILE_VERSION, context)
        got = both[HOSTILE_VERSION]
        assert isinstance(got, VersionData) and got.by_cohort == alone.by_cohort
        assert isinstance(both["v1"], NoSeriesError)


def test_a_custom_query_is_sent_once_per_version(provider: PrometheusProvider) -> None:
    custom = MetricSpec(
        name="custom", kind="gauge", query='sum(up{version="{{version}}"})', max=1.0
    )
    now = datetime.now(UTC)
    context = QueryContext(model=MODEL, namespace="llm", start=now - timedelta(minutes=1), end=now)
    assert provider.fetch_versions(custom, ("v2", "v1"), context) is None


def test_a_counter_restart_is_counted_once(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    context = scenario.context(model="restarts", cohorts=["mobile"])
    requests = provider.fetch(MetricSpec(template="error-rate", max=0.1), "v2", context)
    assert requests.by_cohort["mobile"] == Proportion(0, 30 + 12)
    latency = provider.fetch(MetricSpec(template="latency-p95", max=1.0), "v2", context)
    h = latency.by_cohort["mobile"]
    assert isinstance(h, Histogram)
    assert h.total == 3 + 2
    assert h.cumulative[:2] == (3.0, 5.0)  # three 0.3 s before, two 0.8 s after the restart


def test_counts_at_a_past_step_start_are_evaluated_at_that_time(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    """The observer asks for the counts at each step's start after the fact: the query
    is evaluated at that time, so what came later (here a restart and more requests)
    does not count."""
    earlier = replace(scenario.context(model="restarts", cohorts=["mobile"]), end=scenario.middle)
    requests = provider.fetch(MetricSpec(template="error-rate", max=0.1), "v2", earlier)
    assert requests.by_cohort["mobile"] == Proportion(0, 30)
    latency = provider.fetch(MetricSpec(template="latency-p95", max=1.0), "v2", earlier)
    h = latency.by_cohort["mobile"]
    assert isinstance(h, Histogram)
    assert h.total == 3
    spec = MetricSpec(template="refusal-rate", max=1.0)
    at_middle = provider.fetch(spec, "v1", replace(scenario.context(), end=scenario.middle))
    for cohort in COHORTS:
        _same(at_middle.by_cohort[cohort], expected("refusal-rate", TRAFFIC[("v1", cohort)]))


def test_hostile_label_values_select_exactly_their_own_series(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    context = scenario.context(model=HOSTILE_MODEL, cohorts=[HOSTILE_COHORT])
    data = provider.fetch(MetricSpec(template="error-rate", max=0.1), HOSTILE_VERSION, context)
    assert data.by_cohort == {
        HOSTILE_COHORT: Proportion(1, 41),
        "mobile": Proportion(7, 287),
    }
    custom = MetricSpec(
        name="own-cohort",
        kind="proportion",
        query=(
            'sum by (cohort) (llm_requests_total{model="{{model}}",version="{{version}}",'
            'cohort=~"{{cohort}}",outcome="error"} - llm_requests_total{model="{{model}}",'
            'version="{{version}}",cohort=~"{{cohort}}",outcome="error"} offset {{window}})'
        ),
        trials=(
            "sum by (cohort) (llm_requests_total{model='{{model}}',version='{{version}}',"
            "cohort=~'{{cohort}}'} - llm_requests_total{model='{{model}}',"
            "version='{{version}}',cohort=~'{{cohort}}'} offset {{window}})"
        ),
        max=0.1,
    )
    # the regex matcher matches the literal cohort name: not "mobile", not the decoy model
    data = provider.fetch(custom, HOSTILE_VERSION, context)
    assert data.by_cohort == {HOSTILE_COHORT: Proportion(1, 41)}


def test_custom_queries_count_from_the_start_with_prometheus_extrapolation(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    spec = MetricSpec(
        name="format-compliance",
        kind="proportion",
        query=(
            "sum by (cohort) (increase(llm_refusals_total"
            '{model="{{model}}",version="{{version}}"}[{{window}}]))'
        ),
        trials=(
            "sum by (cohort) (increase(llm_requests_total"
            '{model="{{model}}",version="{{version}}"}[{{window}}]))'
        ),
        max=0.1,
    )
    data = provider.fetch(spec, "v1", scenario.context())
    for cohort in COHORTS:
        got = data.by_cohort[cohort]
        t = TRAFFIC[("v1", cohort)]
        assert isinstance(got, Proportion)
        # increase() extrapolates to the ends of its range, which over a few
        # seconds of 1 s scrapes inflates counts a lot (why built-ins count
        # exactly); still far from the 5x larger total since the counter began
        assert t.requests / 2 <= got.trials <= t.requests * 3
        assert got.events / got.trials == pytest.approx(t.refusals / t.requests, rel=0.2)


def test_a_custom_gauge_without_cohorts_is_the_overall_value(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    spec = MetricSpec(
        name="input-share",
        kind="gauge",
        query=(
            'sum(llm_tokens_total{model="{{model}}",version="{{version}}",direction="input"})'
            ' / sum(llm_tokens_total{model="{{model}}",version="{{version}}"})'
        ),
        min=0.5,
    )
    data = provider.fetch(spec, "v2", scenario.context())
    assert data.by_cohort == {}
    assert isinstance(data.total, Gauge)
    assert data.total.value == pytest.approx(0.75)


def test_histogram_quantiles_are_those_of_prometheus(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    selector = f'llm_request_duration_seconds_bucket{{model="{MODEL}",version="v1"}}'
    at = scenario.end.timestamp()
    buckets = {
        float(s["metric"]["le"]): float(s["value"][1])
        for s in scenario.prometheus.query(f"sum by (le) ({selector})", at)
    }
    histogram = Histogram.from_buckets(buckets)
    for q in (0.1, 0.5, 0.9, 0.95, 0.99):
        theirs = scenario.prometheus.value(f"histogram_quantile({q}, sum by (le) ({selector}))", at)
        assert histogram.quantile(q) == pytest.approx(theirs)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        pytest.param(
            'sum by (cohort) (llm_requests_total{version="{{version}}"}[',
            BadQueryError,
            id="syntax-400",
        ),
        pytest.param(
            'llm_requests_total{version="{{version}}"} + on (cohort) llm_requests_total',
            BadQueryError,
            id="many-to-many-422",
        ),
        pytest.param(
            'sum by (cohort) (no_such_metric{version="{{version}}"})', NoSeriesError, id="no-series"
        ),
        pytest.param(
            "sum by (cohort, outcome) "
            '(llm_requests_total{model="support-bot",version="{{version}}"})',
            AmbiguousResultError,
            id="two-series-per-cohort",
        ),
        pytest.param(
            'scalar(sum(llm_requests_total{version="{{version}}"}))',
            BadQueryError,
            id="not-a-vector",
        ),
    ],
)
def test_query_errors_are_typed(
    scenario: Scenario, provider: PrometheusProvider, query: str, error: type[Exception]
) -> None:
    spec = MetricSpec(name="broken", kind="gauge", query=query, max=1.0)
    with pytest.raises(error) as info:
        provider.fetch(spec, "v1", scenario.context())
    # the error carries the query as sent: scoped to the rollout's namespace
    sent = getattr(info.value, "query", "").replace('{namespace="llm",', "{")
    assert sent.startswith(query.split("{{", maxsplit=1)[0])


def _policy() -> Analysis:
    return Analysis(
        metrics=[
            MetricSpec(template="error-rate", max=0.5),
            MetricSpec(template="latency-p95", maxRatio=2.0),
        ],
        min_samples=20,
    )


def test_the_judge_reads_the_provider_end_to_end(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    policy = _policy()
    observations = collect(
        provider, policy.metrics, baseline="v1", candidate="v2", context=scenario.context()
    )
    result = judge(policy, list(COHORTS), observations, at=scenario.end)
    errors = result.cell("error-rate", "non-english")
    assert errors.candidate is not None and errors.candidate.samples == 123
    assert errors.verdict is not Verdict.NO_DATA
    assert "llm_requests_total" in errors.query


def test_prometheus_stopped_mid_rollout_is_no_data(
    exporter: tuple[ContractExporter, int], disposable_prometheus: PrometheusServer
) -> None:
    e = exporter[0]
    for version in ("v1", "v2"):
        _serve(e, "outage", version, "mobile", _traffic(1))
    wait_until(
        "the outage series to be scraped",
        lambda: disposable_prometheus.query('llm_requests_total{model="outage"}') != [],
    )
    time.sleep(1.1)  # the look is aligned down to the second: let it include that scrape
    provider = PrometheusProvider(disposable_prometheus.url, step_seconds=1, timeout_seconds=2)
    now = datetime.now(UTC)
    context = QueryContext(
        model="outage", namespace="llm", start=now - timedelta(minutes=1), end=now, cohorts=COHORTS
    )
    policy = _policy()
    # it answers while it is up
    before = collect(provider, policy.metrics, baseline="v1", candidate="v2", context=context)
    assert all(isinstance(o.candidate, VersionData) for o in before.values())
    disposable_prometheus.stop()
    with pytest.raises(MetricsUnreachableError) as info:
        provider.fetch(policy.metrics[0], "v2", context)
    assert "unreachable" in str(info.value)
    after = collect(provider, policy.metrics, baseline="v1", candidate="v2", context=context)
    result = judge(policy, list(COHORTS), after, at=now)
    assert {c.verdict for c in result.cells} == {Verdict.NO_DATA}
    assert result.verdict is Verdict.NO_DATA
    assert all("unreachable" in c.reason for c in result.cells)
    provider.close()


def test_a_wrong_url_path_is_permanent(scenario: Scenario) -> None:
    provider = PrometheusProvider(scenario.prometheus.url + "/nowhere", timeout_seconds=2)
    with pytest.raises(PermanentError):
        provider.fetch(MetricSpec(template="error-rate", max=0.1), "v1", scenario.context())
    provider.close()


def test_observations_are_what_the_judge_expects(
    scenario: Scenario, provider: PrometheusProvider
) -> None:
    data: Mapping[str, MetricObservation] = collect(
        provider,
        [MetricSpec(template="refusal-rate", maxIncrease=0.02)],
        baseline="v1",
        candidate="v2",
        context=scenario.context(),
    )
    obs = data["refusal-rate"]
    assert isinstance(obs.baseline, VersionData) and isinstance(obs.candidate, VersionData)
    total = sum(p.trials for p in obs.candidate.by_cohort.values() if isinstance(p, Proportion))
    assert total == sum(t.requests for (v, _), t in TRAFFIC.items() if v == "v2")
    verdicts = judge(
        Analysis(metrics=[MetricSpec(template="refusal-rate", maxIncrease=0.02)], min_samples=20),
        list(COHORTS),
        data,
        at=scenario.end,
    )
    assert verdicts.cell("refusal-rate", OVERALL).candidate is not None
