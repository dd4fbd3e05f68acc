"""Two tenants on one real Prometheus: a scoped query reads none of the other's series.

Two exporters stand for two teams' model servers. Prometheus' scrape config puts
`namespace` on their series as a target label (team-a, team-b), as a cluster's
scrape config does for pods. Both teams serve a model called `bot`; team-b also
serves `otherteam`. Team-a's rollouts run the queries below, written to read
team-b's series; each is scoped as the provider scopes it, and then every series
each of its selectors matches is listed from Prometheus (`/api/v1/series`): not
one may belong to team-b. The same queries unscoped do read team-b's series,
which shows the listing would see a leak.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import requests

from controller.analysis import Proportion
from controller.metrics import NoSeriesError, QueryContext
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import MetricSpec
from controller.policy.queries import CustomQueries, escape_string, parse, scope, selectors
from tests.cli.shell import canaryctl
from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer, wait_until
from tests.policy.base import policy

A, B = "team-a", "team-b"
ATTACK = (
    'sum(llm_requests_total{model="otherteam"}) + 0*sum(llm_requests_total{version="{{version}}"})'
)
#: queries team-a could write to read team-b's series (rendered: version v2)
HOSTILE = [
    ATTACK.replace("{{version}}", "v2"),
    'sum(llm_requests_total{namespace="team-b"})',
    'sum(llm_requests_total{namespace=~".+"})',
    'sum(llm_requests_total{namespace!="team-a"})',
    'count({__name__=~".+"})',
    'count({__name__=~"llm_.*",model="otherteam"})',
    "sum by (namespace) (llm_requests_total)",
    "llm_requests_total",
    "sum(rate(llm_requests_total[5m]))",
    "sum(llm_requests_total offset 10s)",
    "sum(max_over_time(llm_requests_total[1m:1s]))",
    "sum(last_over_time(llm_requests_total[1h] @ end()))",
    'label_replace(llm_requests_total, "namespace", "team-a", "", "")',
    'sum(llm_requests_total) + on() group_left count(up{job="contract"})',
    "count(up) or on() vector(0)",
    'absent(llm_requests_total{model="otherteam"})',
    "topk(100, llm_requests_total)",
    "group by (model, namespace) (llm_refusals_total)",
    'sum(llm_requests_total{model="bot"}) / ignoring(version) group_left sum(llm_refusals_total)',
    "sum(scrape_samples_scraped) + sum(llm_quality_score_count)",
    "histogram_quantile(0.9, sum by (le) (rate(llm_request_duration_seconds_bucket[5m])))",
    'sum(llm_requests_total{model="otherteam"} unless llm_refusals_total)',
    'count_values("v", llm_requests_total)',
    'sum(llm_requests_total{model="otherteam"}) # {namespace="team-a"}',
]


@dataclass(frozen=True)
class Tenants:
    prometheus: PrometheusServer
    start: datetime
    end: datetime

    def context(self, namespace: str, model: str = "bot") -> QueryContext:
        return QueryContext(
            model=model, namespace=namespace, start=self.start, end=self.end, cohorts=("all",)
        )


def _serve(e: ContractExporter, model: str, version: str, requests_: int, refusals: int) -> None:
    labels = {"model": model, "version": version, "cohort": "all"}
    e.add_counter("llm_requests", requests_, outcome="ok", **labels)
    e.add_counter("llm_refusals", refusals, **labels)
    e.observe("llm_request_duration_seconds", [0.3] * 3, **labels)
    e.observe("llm_quality_score", [0.9] * 3, **labels)


def _scraped(
    prometheus: PrometheusServer, a: ContractExporter, b: ContractExporter, n: int
) -> float:
    for e in (a, b):
        e.set_counter("llm_requests", n, model="marker", version="m", cohort="m", outcome="ok")
    wait_until(
        f"marker {n} in both namespaces",
        lambda: prometheus.value('sum(llm_requests_total{model="marker"})') == 2 * n,
    )
    return time.time()


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    a, b = ContractExporter(), ContractExporter()
    servers = [ExporterServer(a), ExporterServer(b)]
    workdir: Path = tmp_path_factory.mktemp("tenants")
    prometheus = PrometheusServer(
        workdir, servers[0].port, namespace=A, more_targets={servers[1].port: B}
    )
    try:
        prometheus.wait_until_scraping()
        # before the analysis: counts that must not count
        for version in ("v1", "v2"):
            _serve(a, "bot", version, 1000, 10)
            _serve(b, "bot", version, 500_000, 90_000)
        _serve(b, "otherteam", "v2", 777_000, 7)
        seen = _scraped(prometheus, a, b, 1)
        start_at = math.ceil(seen)
        time.sleep(max(0.0, start_at + 1.2 - time.time()))
        # the analysis: team-a's bot and team-b's bot get very different traffic
        _serve(a, "bot", "v1", 200, 4)
        _serve(a, "bot", "v2", 100, 5)
        _serve(b, "bot", "v1", 90_000, 9_000)
        _serve(b, "bot", "v2", 80_000, 40_000)
        _serve(b, "otherteam", "v2", 1_000, 1)
        seen = _scraped(prometheus, a, b, 2)
        time.sleep(max(0.0, seen + 1.0 - time.time()))
        yield Tenants(
            prometheus,
            datetime.fromtimestamp(start_at, UTC),
            datetime.fromtimestamp(seen + 1.0, UTC),
        )
    finally:
        prometheus.stop()
        for server in servers:
            server.close()


_OPERATORS = {
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}


def _selector_text(selector: Any) -> str:
    matchers = [f'__name__="{escape_string(selector.name)}"'] if selector.name else []
    matchers += [
        f'{m.name}{_OPERATORS[str(m.op)]}"{escape_string(m.value)}"'
        for m in selector.matchers.matchers
    ]
    return "{" + ",".join(matchers) + "}"


def namespaces_read(prometheus: PrometheusServer, query: str) -> set[str]:
    """The namespaces of every series any selector of `query` matches, over the whole run."""
    found: set[str] = set()
    for selector in selectors(parse(query)):
        response = requests.get(
            f"{prometheus.url}/api/v1/series",
            params={"match[]": _selector_text(selector), "start": "0", "end": f"{time.time():.3f}"},
            timeout=5,
        )
        response.raise_for_status()
        found |= {series.get("namespace", "<none>") for series in response.json()["data"]}
    return found


def test_no_scoped_query_reads_another_namespace(tenants: Tenants) -> None:
    leaks = [
        q for q in HOSTILE if namespaces_read(tenants.prometheus, scope(q, "namespace", A)) - {A}
    ]
    unscoped = [q for q in HOSTILE if namespaces_read(tenants.prometheus, q) - {A}]
    print(  # the figure the docs quote (pytest -s)
        f"\ncustom queries that read another namespace's series: {len(leaks)} of {len(HOSTILE)} "
        f"scoped, {len(unscoped)} of {len(HOSTILE)} unscoped"
    )
    assert leaks == []
    # The listing does see other namespaces: unscoped, every one of them reads team-b.
    assert unscoped == HOSTILE


def test_scoped_results_carry_only_the_rollouts_namespace(tenants: Tenants) -> None:
    at = tenants.end.timestamp()
    for query in HOSTILE:
        for series in tenants.prometheus.query(scope(query, "namespace", A), at):
            assert series["metric"].get("namespace", A) == A, (query, series)


def _custom(query: str) -> MetricSpec:
    return MetricSpec(name="peek", kind="gauge", query=query, max=1e12)


@pytest.fixture(scope="module")
def providers(tenants: Tenants) -> Iterator[dict[CustomQueries, PrometheusProvider]]:
    made = {
        mode: PrometheusProvider(
            tenants.prometheus.url,
            step_seconds=1,
            lookback_seconds=60,
            timeout_seconds=5,
            custom_queries=mode,
        )
        for mode in CustomQueries
    }
    try:
        yield made
    finally:
        for provider in made.values():
            provider.close()


def test_the_attack_reads_nothing_when_scoped(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    # as written (allow): team-b's series, in team-a's evidence and Slack message
    leaked = providers[CustomQueries.ALLOW].fetch(_custom(ATTACK), "v2", tenants.context(A))
    assert leaked.total is not None
    assert leaked.total.value == 778_000
    # scoped (the default): team-a has no model "otherteam", so there is nothing to read
    with pytest.raises(NoSeriesError) as caught:
        providers[CustomQueries.SCOPED].fetch(_custom(ATTACK), "v2", tenants.context(A))
    assert caught.value.query.count('namespace="team-a"') == 2


def test_deny_runs_no_custom_query(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    from controller.metrics import BadQueryError

    with pytest.raises(BadQueryError, match="custom queries are turned off"):
        providers[CustomQueries.DENY].fetch(_custom(ATTACK), "v2", tenants.context(A))


@pytest.mark.parametrize("mode", [CustomQueries.SCOPED, CustomQueries.DENY])
@pytest.mark.parametrize(
    ("namespace", "expected"),
    [
        pytest.param(A, {"v1": (4, 200), "v2": (5, 100)}, id="team-a"),
        pytest.param(B, {"v1": (9_000, 90_000), "v2": (40_000, 80_000)}, id="team-b"),
    ],
)
def test_built_in_templates_count_their_own_namespace_exactly(
    tenants: Tenants,
    providers: dict[CustomQueries, PrometheusProvider],
    mode: CustomQueries,
    namespace: str,
    expected: dict[str, tuple[int, int]],
) -> None:
    spec = MetricSpec(template="refusal-rate", max=0.5)
    for version, (refusals, requests_) in expected.items():
        data = providers[mode].fetch(spec, version, tenants.context(namespace))
        assert data.by_cohort == {"all": Proportion(refusals, requests_)}, (version, data)
        assert f'namespace="{namespace}"' in data.query


def test_built_in_templates_unscoped_would_add_both_teams(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    spec = MetricSpec(template="refusal-rate", max=0.5)
    data = providers[CustomQueries.ALLOW].fetch(spec, "v2", tenants.context(A))
    assert data.by_cohort == {"all": Proportion(40_005, 80_100)}


def test_a_histogram_template_is_scoped_too(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    spec = MetricSpec(template="latency-p95", maxRatio=2.0)
    data = providers[CustomQueries.SCOPED].fetch(spec, "v2", tenants.context(A))
    assert data.by_cohort["all"].samples == 3  # team-a's three requests, not team-b's
    selectors_ = selectors(promql_parser.parse(data.query))
    assert len(selectors_) == 9  # bucket, count and sum, three selectors each
    assert all(
        ("namespace", A) in [(m.name, m.value) for m in s.matchers.matchers] for s in selectors_
    )


def test_the_planners_request_rates_are_scoped_like_the_templates(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    """`canaryctl plan --prometheus` reads each cohort's rate from the baseline's last
    24 hours: in its own namespace only (team-b's bot serves 450 times as much)."""
    day = timedelta(hours=24).total_seconds()
    scoped = providers[CustomQueries.SCOPED].request_rates(
        "bot", "v1", A, over=timedelta(hours=24), at=tenants.end
    )
    assert set(scoped) == {"all"}
    # the 200 requests of the analysis (the 1,000 from before are the series' first
    # sample, not an increase), with Prometheus' extrapolation at the series' edges
    assert 200 <= scoped["all"] * day < 1000
    unscoped = providers[CustomQueries.ALLOW].request_rates(
        "bot", "v1", A, over=timedelta(hours=24), at=tenants.end
    )
    assert unscoped["all"] * day >= 90_000


def test_the_planners_sample_shares_are_scoped_like_the_templates(
    tenants: Tenants, providers: dict[CustomQueries, PrometheusProvider]
) -> None:
    """`--prometheus` measures a histogram metric's samples per request (its `_count`
    over the requests): team-a's bot scored 3 of its 200 requests in the analysis,
    team-b's 3 of 90,000. A proportion has no count of its own: left out (one per
    request)."""
    metrics = [
        MetricSpec(template="quality-score", maxDecrease=0.05),
        MetricSpec(template="refusal-rate", max=0.5),
    ]
    day = timedelta(hours=24)
    scoped = providers[CustomQueries.SCOPED].sample_shares(
        metrics, "bot", "v1", A, over=day, at=tenants.end
    )
    assert set(scoped) == {"quality-score"}
    assert scoped["quality-score"] == pytest.approx(3 / 200, rel=0.3)
    unscoped = providers[CustomQueries.ALLOW].sample_shares(
        metrics, "bot", "v1", A, over=day, at=tenants.end
    )
    assert unscoped["quality-score"] < 0.001


def test_canaryctl_plans_with_the_baselines_rates_in_its_namespace(
    tenants: Tenants, tmp_path: Path
) -> None:
    path = tmp_path / "bot.yaml"
    path.write_text(
        policy(
            ("namespace: llm", f"namespace: {A}"),
            (
                "    - {name: mobile, match: {header: x-client, value: mobile}}\n"
                '    - {name: non-english, match: {header: accept-language, regex: "^(de|fr)"}}\n',
                "    - {name: all, match: {header: x-all, value: all}}\n",
            ),
            ("cohortWeights: {mobile: 10}", "cohortWeights: {}"),
            (
                "      - {template: error-rate, max: 0.01}\n",
                "      - {template: error-rate, max: 0.01}\n"
                "      - {template: quality-score, maxDecrease: 0.05}\n",
            ),
        )
    )
    done = canaryctl(
        "plan", str(path), "--prometheus", tenants.prometheus.url, "-o", "json", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    [plan] = json.loads(done.stdout)
    traffic = plan["traffic"]
    assert traffic["source"] == "baseline v1, last 24 h in Prometheus"
    assert traffic["cohortShares"] == {"all": 1.0}
    assert traffic["sampleSource"] == "the baseline's last 24 h"
    assert traffic["sampleShares"]["quality-score"] == pytest.approx(3 / 200, rel=0.3)
    # team-a's 200 requests a day, not team-b's 90,000
    assert 200 <= traffic["requestsPerSecond"] * 86_400 < 1000
