"""The Grafana dashboard: shipped as the chart's ConfigMap, built only on metrics the
controller serves, every query run by a real Prometheus that scraped a real /metrics."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics_core import Metric

from controller.api import ApiServer, Readiness
from controller.telemetry import PREFIX, ControllerMetrics, LeaseChange, TickOutcome
from tests.chart.helm import CHART, render

DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
LOOPBACK = "127.0.0.1"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
METRIC = re.compile(rf"\b{PREFIX}_[a-z_]+\b")
#: What Grafana puts in for the template variables when "All" is selected.
GRAFANA = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$job": ".*",
    "$rollout_namespace": ".*",
    "$rollout": ".*",
}


def panels() -> list[dict[str, Any]]:
    return [p for p in DASHBOARD["panels"] if p["type"] != "row"]


def expressions() -> list[str]:
    return [t["expr"] for p in panels() for t in p["targets"]]


def variables() -> list[dict[str, Any]]:
    return [v for v in DASHBOARD["templating"]["list"] if v["type"] == "query"]


def substitute(expr: str) -> str:
    # longest first: $rollout_namespace before $rollout
    for name in sorted(GRAFANA, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA[name])
    return expr


def served_names(metrics: ControllerMetrics) -> dict[str, set[str]]:
    """Sample names each of our metric families can serve, by family name."""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "info": ("_info",),
    }
    families: list[Metric] = list(metrics.registry.collect())
    return {
        f.name: {f.name + s for s in suffixes.get(f.type, ("",))}
        for f in families
        if f.name.startswith(PREFIX + "_")
    }


def test_the_chart_ships_the_dashboard_file_unchanged() -> None:
    config_map = render({"dashboard": {"enabled": True}}).one("ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["canary-controller.json"]) == DASHBOARD


def test_panels_are_well_formed() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    assert DASHBOARD["uid"] == "canary-controller"
    for panel in panels():
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


def test_every_query_uses_served_metrics_and_every_metric_is_shown() -> None:
    served = served_names(ControllerMetrics())
    all_samples = set().union(*served.values())
    used = {name for expr in expressions() for name in METRIC.findall(expr)}
    used |= {name for v in variables() for name in METRIC.findall(v["definition"])}
    assert used <= all_samples, used - all_samples
    unshown = {family for family, names in served.items() if not names & used}
    assert unshown == set()


# --- a real Prometheus scraping a real /metrics ---------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:g}s")


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.url = f"http://{LOOPBACK}:{_free_port()}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: canary-controller\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={self.url.removeprefix('http://')}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)

    def query(self, expr: str) -> dict[str, Any]:
        """The API's answer to an instant query; HTTP errors (bad PromQL) are answers too."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body: dict[str, Any] = json.loads(answer.read())
        except urllib.error.HTTPError as error:
            with error:
                body = json.loads(error.read())
        return body

    def samples(self, expr: str) -> list[dict[str, Any]]:
        answer = self.query(expr)
        assert answer["status"] == "success", (expr, answer)
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


def record_one_of_everything(m: ControllerMetrics) -> None:
    m.set_rollout_phases(["Progressing", "Shadowing"])
    m.set_candidate_weight("llm", "bot-v7", 5)
    m.set_rollout_gate("llm", "bot-v7", "replay-evals")
    m.record_rollback("llm", "bot-v7")
    m.record_promotion("search", "ranker-v2")
    m.record_tick(0.2)
    m.record_tick(0.1, TickOutcome.ERROR)
    m.record_verdict("pass", "refusal-rate")
    m.record_verdict("fail", "latency-p95")
    m.record_prometheus_query(0.02)
    m.record_prometheus_query(10.0, error="Timeout")
    m.record_route_write_retry("gateway-api", "conflict")
    m.set_outbox_depth(2)
    m.record_delivery_failure("slack")
    m.set_leases_held(1)
    m.record_lease_change(LeaseChange.ACQUIRED)
    m.set_store_pending_writes(1)
    m.record_store_down_ending("RolledBack")
    m.record_sync(0.05, replicas=2)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    metrics = ControllerMetrics()
    record_one_of_everything(metrics)
    server = ApiServer(metrics.registry, Readiness({"up": lambda: True}), host=LOOPBACK, port=0)
    server.start()
    host, port = server.address
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"{host}:{port}")
    try:
        _wait("Prometheus to be ready", prom.ready)
        # two scrapes, so that rate() and increase() have something to work on
        _wait(
            "two scrapes of /metrics",
            lambda: bool(prom.samples("count_over_time(canary_build_info[1m]) >= 2")),
        )
        # and one more tick after them, so that increase() sees a change
        metrics.record_tick(0.3)
        metrics.record_rollback("llm", "bot-v7")
        _wait(
            "the new tick to be scraped",
            lambda: bool(prom.samples("sum(canary_ticks_total) >= 3")),
        )
        yield prom
    finally:
        prom.stop()
        server.stop()


@pytest.mark.parametrize("expr", expressions())
def test_every_panel_query_runs_and_finds_data(prometheus: Prometheus, expr: str) -> None:
    result = prometheus.samples(substitute(expr))
    assert result, f"no data for {expr}"


@pytest.mark.parametrize("variable", variables(), ids=lambda v: v["name"])
def test_every_variable_finds_its_values(prometheus: Prometheus, variable: dict[str, Any]) -> None:
    match = re.fullmatch(
        r"label_values\((?P<selector>.+), (?P<label>\w+)\)", variable["definition"]
    )
    assert match is not None, variable["definition"]
    result = prometheus.samples(substitute(match["selector"]))
    assert {s["metric"][match["label"]] for s in result}


def test_a_broken_query_would_be_caught(prometheus: Prometheus) -> None:
    answer = prometheus.query("sum by (phase) (canary_rollouts{")
    assert answer["status"] == "error"
    assert answer["errorType"] == "bad_data"
