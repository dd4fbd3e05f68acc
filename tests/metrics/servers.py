"""A real Prometheus on a free loopback port, scraping an exporter the test controls.

`ContractExporter` serves the LLM metric contract (see docs/policy.md) from values the
test sets directly, through `prometheus-client`'s custom-collector API, so a
test can also make a counter drop, as a restarted pod does. A counter can carry
an OpenMetrics exemplar (`set_exemplar`), served when the scraper asks for
OpenMetrics, as Prometheus does; `PrometheusServer(..., features=("exemplar-storage",))`
keeps them for `/api/v1/query_exemplars`. `PrometheusServer`
runs Debian's `prometheus` binary with a temporary config (1 s scrapes) and
storage, waits for readiness and for the first scrape with bounded polling, and
always kills the process. Only 127.0.0.1 is ever used.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar

LOOPBACK = "127.0.0.1"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

Labels = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` every 50 ms until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:g}s")


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    counts: list[float] = field(default_factory=list)  # per bucket, +Inf last
    total: float = 0.0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0.0] * (len(self.bounds) + 1)

    def cumulative(self) -> list[float]:
        out, running = [], 0.0
        for c in self.counts:
            running += c
            out.append(running)
        return out


class ContractExporter(Collector):
    """The metric contract, with values set by the test (thread-safe)."""

    COUNTERS: Mapping[str, Sequence[str]] = {
        "llm_requests": ("model", "version", "cohort", "outcome"),
        "llm_refusals": ("model", "version", "cohort"),
        "llm_tokens": ("model", "version", "cohort", "direction"),
        "llm_format_violations": ("model", "version", "cohort"),
        "llm_feedback": ("model", "version", "cohort", "kind"),
    }
    HISTOGRAMS: Mapping[str, tuple[float, ...]] = {
        "llm_request_duration_seconds": (0.5, 1.0, 2.5, 5.0),
        "llm_time_to_first_token_seconds": (0.1, 0.25, 0.5, 1.0),
        "llm_quality_score": (0.2, 0.4, 0.6, 0.8, 1.0),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[tuple[str, Labels], float] = {}
        self._histograms: dict[tuple[str, Labels], _Histogram] = {}
        self._exemplars: dict[tuple[str, Labels], Exemplar] = {}

    @staticmethod
    def _labels(names: Sequence[str], labels: Mapping[str, str]) -> Labels:
        assert set(labels) == set(names), (sorted(labels), names)
        return tuple((n, labels[n]) for n in names)

    def set_counter(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._counters[(name, self._labels(self.COUNTERS[name], labels))] = value

    def add_counter(self, name: str, amount: float, **labels: str) -> None:
        key = (name, self._labels(self.COUNTERS[name], labels))
        with self._lock:
            self._counters[key] = self._counters.get(key, 0.0) + amount

    def set_exemplar(self, name: str, trace_id: str, **labels: str) -> None:
        """The counter's exemplar from now on: its latest request, with `trace_id`, as a
        client library keeps it (`Counter.inc(exemplar={"trace_id": ...})`)."""
        key = (name, self._labels(self.COUNTERS[name], labels))
        with self._lock:
            self._exemplars[key] = Exemplar({"trace_id": trace_id}, 1.0, time.time())

    def observe(self, name: str, values: Sequence[float], **labels: str) -> None:
        key = (name, self._labels(("model", "version", "cohort"), labels))
        with self._lock:
            h = self._histograms.setdefault(key, _Histogram(self.HISTOGRAMS[name]))
            for v in values:
                index = next((i for i, b in enumerate(h.bounds) if v <= b), len(h.bounds))
                h.counts[index] += 1
                h.total += v

    def reset_histogram(self, name: str, **labels: str) -> None:
        key = (name, self._labels(("model", "version", "cohort"), labels))
        with self._lock:
            self._histograms[key] = _Histogram(self.HISTOGRAMS[name])

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counters = dict(self._counters)
            exemplars = dict(self._exemplars)
            histograms = {
                k: (h.bounds, h.cumulative(), h.total) for k, h in self._histograms.items()
            }
        for name, names in self.COUNTERS.items():
            family = CounterMetricFamily(name, f"{name} (test)", labels=list(names))
            for (n, labels), value in counters.items():
                if n == name:
                    family.add_metric(
                        [v for _, v in labels], value, exemplar=exemplars.get((n, labels))
                    )
            yield family
        for name in self.HISTOGRAMS:
            hist = HistogramMetricFamily(
                name, f"{name} (test)", labels=["model", "version", "cohort"]
            )
            for (n, labels), (bounds, cumulative, total) in histograms.items():
                if n == name:
                    buckets = [
                        (_le(b), c) for b, c in zip((*bounds, math.inf), cumulative, strict=True)
                    ]
                    hist.add_metric([v for _, v in labels], buckets, total)
            yield hist


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(bound)


class ExporterServer:
    """`prometheus-client`'s HTTP server for a `ContractExporter`, on loopback."""

    def __init__(self, exporter: ContractExporter) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(exporter)
        self.port = free_port()
        self._server, self._thread = start_http_server(
            self.port, addr=LOOPBACK, registry=self.registry
        )

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class PrometheusServer:
    """A Prometheus process scraping its targets every second.

    Each target is an exporter's port and the namespace its series belong to:
    as in a cluster, the scrape config (a target label), not the exporter, puts
    `namespace` on every series, so an exporter cannot claim another namespace.

    Construction starts the process; `wait_until_scraping` waits for it, so that
    several servers can start at the same time.
    """

    def __init__(
        self,
        workdir: Path,
        target_port: int,
        *,
        namespace: str = "llm",
        more_targets: Mapping[int, str] | None = None,
        features: Sequence[str] = (),
    ) -> None:
        """`features`: Prometheus feature flags, e.g. `exemplar-storage`."""
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        targets = {target_port: namespace, **(more_targets or {})}
        self.targets = len(targets)
        static = ", ".join(
            f"{{targets: ['{LOOPBACK}:{port}'], labels: {{namespace: '{ns}'}}}}"
            for port, ns in targets.items()
        )
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: contract\n"
            f"    static_configs: [{static}]\n"
        )
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
                *(f"--enable-feature={feature}" for feature in features),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_until_scraping(self) -> None:
        """Ready, and the target scraped once (Prometheus 2.x takes ~5 s to start scraping)."""
        try:
            wait_until("Prometheus to be ready", self._ready)
            wait_until(
                "the first scrape of every target",
                lambda: len(self.query('up{job="contract"} == 1')) == self.targets,
            )
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.process.returncode}")
        return requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = requests.get(f"{self.url}/api/v1/query", params=params, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """`/api/v1/query_exemplars` for `expr` over [start, end]."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        response = requests.get(f"{self.url}/api/v1/query_exemplars", params=params, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]
        return result

    def value(self, expr: str, at: float | None = None) -> float | None:
        result = self.query(expr, at)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if not self._log.closed:
            self._log.close()
