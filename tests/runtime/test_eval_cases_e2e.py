"""End to end: a rollback on real Prometheus records eval cases with trace IDs from exemplars.

A model server (the contract exporter) serves OpenMetrics with an exemplar on its
refusals counter; Prometheus 2.42 keeps them (`--enable-feature=exemplar-storage`).
The real executor, judge and Prometheus provider roll the candidate back for its
refusals in one cohort; the eval case goes into Postgres in the rollback's own
commit, the notification carries it (Slack text, webhook JSON), and
`canaryctl cases export` prints it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.cases import CaseLimit, export_rows
from controller.cli.main import app
from controller.engine.phases import Phase
from controller.metrics.prometheus import PrometheusProvider
from controller.notify.base import Notification
from controller.notify.messages import notification_json, slack_message
from controller.policy import load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.cases import ExemplarCaseRecorder
from controller.runtime.executor import Executor, TickResult
from controller.runtime.observer import JudgingObserver
from controller.store.sql import SqlStore, migrate
from tests.databases import fresh_database
from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer, wait_until

KEY = "llm/support-bot-v7"
#: a header value with quotes and braces: it must come back exactly, from every surface
ODD_VALUE = 'say "hi" {there}\\'
POLICY = f"""\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {{name: support-bot-v7, namespace: llm}}
spec:
  model: support-bot
  baseline:  {{version: v6, service: support-bot-v6}}
  candidate: {{version: v7, service: support-bot-v7}}
  owners: {{slack: {{channel: "#support-bot"}}}}
  traffic: {{router: gateway-api, route: support-bot}}
  cohorts:
    - {{name: non-english, match: {{header: accept-language, regex: "^(de|fr)"}}}}
    - {{name: odd, match: {{header: x-odd, value: {json.dumps(ODD_VALUE)}}}}}
  steps:
    - {{weight: 10, hold: 10m}}
    - {{weight: 100}}
  analysis:
    interval: 30s
    metrics:
      - {{template: refusal-rate, maxIncrease: 0.02}}
    evalCases: {{maxTraceIds: 3}}
"""
TRACES = ("trace-1", "trace-2", "trace-3", "trace-4")


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[ContractExporter, PrometheusServer, str]]:
    exporter = ContractExporter()
    server = ExporterServer(exporter)
    prometheus = PrometheusServer(tmp_path, server.port, features=("exemplar-storage",))
    try:
        with fresh_database() as url:
            migrate(url)
            prometheus.wait_until_scraping()
            yield exporter, prometheus, url
    finally:
        prometheus.stop()
        server.close()


def _serve(
    exporter: ContractExporter, version: str, cohort: str, requests: int, refusals: int
) -> None:
    labels = {"model": "support-bot", "version": version, "cohort": cohort}
    exporter.add_counter("llm_requests", requests, outcome="ok", **labels)
    exporter.add_counter("llm_refusals", refusals, **labels)


def _scraped(prometheus: PrometheusServer, version: str, value: float) -> None:
    wait_until(
        f"{version}'s requests to be scraped",
        lambda: (
            prometheus.value(f'sum(llm_requests_total{{version="{version}",cohort="non-english"}})')
            == value
        ),
    )


def _exemplars(exporter: ContractExporter, prometheus: PrometheusServer) -> None:
    """The candidate's refusals in non-english carry TRACES, one exemplar per scrape (a
    client library keeps a counter's latest); the baseline's carry one of its own."""
    labels = {"model": "support-bot", "cohort": "non-english"}
    exporter.set_exemplar("llm_refusals", "trace-of-baseline", version="v6", **labels)
    for trace in TRACES:
        exporter.set_exemplar("llm_refusals", trace, version="v7", **labels)
        wait_until(
            f"{trace} to be stored",
            lambda t=trace: any(
                e["labels"]["trace_id"] == t
                for s in prometheus.exemplars(
                    'llm_refusals_total{version="v7"}', time.time() - 60, time.time() + 5
                )
                for e in s["exemplars"]
            ),
        )


def _roll_back(
    exporter: ContractExporter, prometheus: PrometheusServer, store: SqlStore
) -> tuple[TickResult, TickResult]:
    """Start the rollout, then serve a candidate refusing 30 % of non-english requests
    (the baseline 5 %), with exemplars, and 25 % of the odd cohort's, without any; look
    again: (the start, the rollback)."""
    [loaded] = load_text(POLICY, "<test>")
    rollout = loaded.rollout
    for version in ("v6", "v7"):
        for cohort in ("non-english", "odd"):
            _serve(exporter, version, cohort, 10, 0)
    _scraped(prometheus, "v7", 10)
    time.sleep(1.5)  # the series were seen a whole step before the analysis starts
    provider = PrometheusProvider(
        prometheus.url, step_seconds=1, lookback_seconds=60, timeout_seconds=5
    )
    executor = Executor(store, WallClock(), cases=ExemplarCaseRecorder(provider))
    router = MemoryRouter(RouteTarget.of(rollout))
    observer = JudgingObserver(provider)
    try:
        started = executor.tick(rollout, router, observer)
        assert started.decision.state.phase is Phase.PROGRESSING
        time.sleep(1.5)  # the counts below fall after the analysis started
        _serve(exporter, "v6", "non-english", 2000, 100)
        _serve(exporter, "v7", "non-english", 2000, 600)
        _serve(exporter, "v6", "odd", 2000, 100)
        _serve(exporter, "v7", "odd", 2000, 500)
        _exemplars(exporter, prometheus)
        _scraped(prometheus, "v7", 2010)
        time.sleep(1.1)
        rolled_back = executor.tick(rollout, router, observer)
    finally:
        provider.close()
    assert not router.observe().sends_traffic
    return started, rolled_back


def test_a_rollback_records_its_failing_cohort_with_trace_ids(
    world: tuple[ContractExporter, PrometheusServer, str],
) -> None:
    exporter, prometheus, url = world
    store = SqlStore(url)
    try:
        started, rolled_back = _roll_back(exporter, prometheus, store)
        state = rolled_back.decision.state
        assert state.phase is Phase.ROLLED_BACK
        assert state.cause is not None and state.cause.failed_metric
        cases = store.eval_cases(KEY)
        [message] = [m for m in store.outbox(KEY) if m.event == "rolled-back"]
        analyses = store.analyses(KEY, since_tick=state.tick)
    finally:
        store.close()

    by_cohort = {c.cohort: c for c in cases}
    assert {"non-english", "odd"} <= set(by_cohort) <= {"non-english", "odd", "overall"}
    case = by_cohort["non-english"]
    assert case.trace_ids == ("trace-4", "trace-3", "trace-2")  # newest first, maxTraceIds 3
    assert case.match == {"header": "accept-language", "regex": "^(de|fr)"}
    assert (case.metric, case.limit) == ("refusal-rate", CaseLimit("maxIncrease", 0.02))
    assert (case.baseline.samples, case.candidate.samples) == (2000, 2000)
    assert case.candidate.value == pytest.approx(0.3)
    assert case.baseline.value == pytest.approx(0.05)
    assert case.window_start == started.decision.state.analysis_since
    # the query the judge ran (every cohort and both versions at once, the candidate
    # first, `by (cohort, version)`), as the audit has it
    assert [a.query for a in analyses if (a.metric, a.cohort) == (case.metric, case.cohort)] == [
        case.promql
    ]
    assert 'llm_refusals_total{namespace="llm",model="support-bot",version=~"v7|v6"}' in (
        case.promql
    )
    assert "by (cohort, version)" in case.promql

    # a cohort without exemplars is recorded all the same, saying why; its header value
    # (quotes, braces, a backslash) comes back exactly
    odd = by_cohort["odd"]
    assert odd.trace_ids == ()
    assert odd.trace_ids_reason is not None and "exemplar" in odd.trace_ids_reason
    assert odd.match == {"header": "x-odd", "value": ODD_VALUE}

    # the notification says what was captured, and the webhook carries the cases
    note = Notification.of(KEY, message, analyses=analyses)
    traces = len({t for c in cases for t in c.trace_ids})
    expected = (
        f"{len(cases)} eval case{'s' if len(cases) > 1 else ''} with {traces} trace IDs "
        f"recorded: `canaryctl cases export {KEY}`"
    )
    slack = slack_message(note)
    assert expected in slack.text
    assert any(expected in json.dumps(block) for block in slack.blocks)
    # the same rows as the export (the store lists a tick's cases by ID)
    sent = sorted(notification_json(note)["evalCases"], key=lambda row: str(row["id"]))
    assert sent == export_rows(cases)

    # canaryctl reads the same cases from Postgres
    exported = CliRunner().invoke(app, ["cases", "export", KEY, "--database", url])
    assert exported.exit_code == 0, exported.output
    assert [json.loads(line) for line in exported.stdout.splitlines()] == export_rows(cases)
