"""Recorded metric history for backtests: written as OpenMetrics, backfilled, served.

A backtest needs a Prometheus that holds the past. `History` collects counter
samples at chosen instants and writes them as OpenMetrics text; `backfill` turns
that into TSDB blocks with `promtool tsdb create-blocks-from openmetrics` (it ships
next to the `prometheus` binary in Debian's package); `HistoryServer` runs
`prometheus` on those blocks, on a free loopback port, scraping nothing.

Two ways to fill a `History`, both following the metric contract (docs/policy.md):
`RecordedTraffic` writes exact, noise-free counters (rates times time, rounded),
so a test knows when a change in them must be seen; `record_simulator` copies a
seeded `TrafficSimulator`'s scrapes (the demo's traffic), noise included.
"""

from __future__ import annotations

import math
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from controller.metrics.simulated import (
    LATENCY_BUCKETS,
    QUALITY_BUCKETS,
    TTFT_BUCKETS,
    TrafficSimulator,
)

LOOPBACK = "127.0.0.1"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or str(Path(PROMETHEUS).with_name("promtool"))

Labels = tuple[tuple[str, str], ...]

#: family -> (OpenMetrics type, label names besides model, version, cohort, namespace)
FAMILIES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "llm_requests": ("counter", ("outcome",)),
    "llm_refusals": ("counter", ()),
    "llm_quality_score": ("histogram", ()),
    "llm_request_duration_seconds": ("histogram", ()),
    "llm_time_to_first_token_seconds": ("histogram", ()),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


@dataclass
class History:
    """Samples of counter series, by family; rendered as one OpenMetrics document."""

    #: family -> sample name (`llm_requests_total`, `..._bucket`) and labels -> [(t, v)]
    series: dict[str, dict[tuple[str, Labels], list[tuple[float, float]]]] = field(
        default_factory=dict
    )

    def add(
        self, family: str, sample: str, labels: Mapping[str, str], at: datetime, value: float
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}")
        key = (sample, tuple(sorted(labels.items())))
        points = self.series.setdefault(family, {}).setdefault(key, [])
        if points and points[-1][0] >= at.timestamp():
            raise ValueError(f"{sample}{dict(labels)}: samples must move forward in time")
        points.append((at.timestamp(), value))

    @property
    def samples(self) -> int:
        return sum(len(p) for family in self.series.values() for p in family.values())

    def openmetrics(self) -> str:
        """The whole history; a family's series are contiguous, each in time order."""
        lines: list[str] = []
        for family, by_series in self.series.items():
            kind, _ = FAMILIES[family]
            lines.append(f"# TYPE {family} {kind}")
            for (sample, labels), points in sorted(by_series.items()):
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.extend(f"{sample}{{{text}}} {v:.17g} {t:.3f}" for t, v in points)
        lines.append("# EOF")
        return "\n".join(lines) + "\n"


def backfill(history: History, data: Path) -> None:
    """Write `history` as TSDB blocks into `data` (created), with promtool."""
    data.mkdir(parents=True, exist_ok=True)
    source = data.parent / f"{data.name}.om"
    source.write_text(history.openmetrics())
    done = subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    source.unlink()
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed ({done.returncode}): {done.stderr or done.stdout}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


class HistoryServer:
    """`prometheus` serving backfilled blocks on a free loopback port; it scrapes nothing.

    Retention is ten years: time-based retention drops blocks older than the newest
    block by more than it, and every block here is in the past."""

    def __init__(self, workdir: Path, data: Path) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text("global: {scrape_interval: 1m}\nscrape_configs: []\n")
        self._log = (workdir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={data}",
                f"--web.listen-address={LOOPBACK}:{self.port}",
                "--storage.tsdb.retention.time=3650d",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}")
            try:
                if requests.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"Prometheus at {self.url} was not ready after {timeout:g}s")

    def query(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.url}/api/v1/query",
            params={"query": expr, "time": f"{at.timestamp():.3f}"},
            timeout=5,
        )
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

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


# --- exact traffic -----------------------------------------------------------------------


@dataclass
class _Cumulative:
    requests: float = 0.0
    errors: float = 0.0
    refusals: float = 0.0


@dataclass
class RecordedTraffic:
    """Exact counters of a model's two versions, period after period, into a `History`.

    Each cohort gets `shares[cohort]` of `requests_per_second`; the candidate serves
    `weight` of every cohort's requests. Counters are the expected counts, rounded
    down at each sample: no noise, so a change of rate shows exactly when it happens.
    """

    model: str
    namespace: str
    baseline: str
    candidate: str
    shares: Mapping[str, float]
    requests_per_second: float
    start: datetime
    resolution: timedelta = timedelta(minutes=1)
    history: History = field(default_factory=History)

    def __post_init__(self) -> None:
        if not math.isclose(sum(self.shares.values()), 1.0, abs_tol=1e-9):
            raise ValueError("the cohort shares must add up to 1")
        self._now = self.start
        self._counts = {(v, c): _Cumulative() for v in self.versions for c in self.shares}
        self._write()

    @property
    def versions(self) -> tuple[str, str]:
        return (self.baseline, self.candidate)

    @property
    def now(self) -> datetime:
        return self._now

    def record(
        self,
        until: datetime,
        *,
        weight: float,
        refusal_rate: float = 0.05,
        error_rate: float = 0.002,
        candidate_refusals: Mapping[str, float] | None = None,
    ) -> None:
        """Traffic up to `until` at these rates; `candidate_refusals` gives the candidate
        another refusal rate in the cohorts it names."""
        step = self.resolution.total_seconds()
        while self._now + self.resolution <= until:
            self._now += self.resolution
            for cohort, share in self.shares.items():
                total = self.requests_per_second * share * step
                for version, part in ((self.baseline, 1 - weight), (self.candidate, weight)):
                    counts = self._counts[(version, cohort)]
                    served = total * part
                    refusals = refusal_rate
                    if version == self.candidate and candidate_refusals:
                        refusals = candidate_refusals.get(cohort, refusal_rate)
                    counts.requests += served
                    counts.errors += served * error_rate
                    counts.refusals += served * (1 - error_rate) * refusals
            self._write()

    def _write(self) -> None:
        for (version, cohort), c in self._counts.items():
            labels = {
                "model": self.model,
                "version": version,
                "cohort": cohort,
                "namespace": self.namespace,
            }
            errors = math.floor(c.errors)
            ok = math.floor(c.requests) - errors
            self.history.add(
                "llm_requests", "llm_requests_total", {**labels, "outcome": "ok"}, self._now, ok
            )
            self.history.add(
                "llm_requests",
                "llm_requests_total",
                {**labels, "outcome": "error"},
                self._now,
                errors,
            )
            self.history.add(
                "llm_refusals", "llm_refusals_total", labels, self._now, math.floor(c.refusals)
            )


# --- the demo's traffic --------------------------------------------------------------------


def record_simulator(
    simulator: TrafficSimulator, origin: datetime, namespace: str, instants: Iterable[datetime]
) -> History:
    """A `History` of `simulator`'s counters (which began at `origin`) at `instants`
    (simulated time already generated past each), with the metric contract's names
    and labels."""
    history = History()
    for at in instants:
        for version in (simulator.baseline, simulator.candidate):
            counters = simulator.counters_between(version, origin, at)
            assert counters is not None
            for cohort, c in counters.items():
                labels = {
                    "model": simulator.model,
                    "version": version,
                    "cohort": cohort,
                    "namespace": namespace,
                }
                history.add(
                    "llm_requests",
                    "llm_requests_total",
                    {**labels, "outcome": "ok"},
                    at,
                    c.requests - c.errors,
                )
                history.add(
                    "llm_requests",
                    "llm_requests_total",
                    {**labels, "outcome": "error"},
                    at,
                    c.errors,
                )
                history.add("llm_refusals", "llm_refusals_total", labels, at, c.refusals)
                for family, bounds, counts, total in (
                    ("llm_quality_score", QUALITY_BUCKETS, c.quality, c.quality_sum),
                    ("llm_request_duration_seconds", LATENCY_BUCKETS, c.latency, c.latency_sum),
                    ("llm_time_to_first_token_seconds", TTFT_BUCKETS, c.ttft, c.ttft_sum),
                ):
                    _histogram(history, family, labels, at, bounds, list(counts), total)
    return history


def _histogram(
    history: History,
    family: str,
    labels: Mapping[str, str],
    at: datetime,
    bounds: Sequence[float],
    counts: Sequence[float],
    total: float,
) -> None:
    running = 0.0
    for bound, count in zip((*bounds, math.inf), counts, strict=True):
        running += count
        history.add(family, f"{family}_bucket", {**labels, "le": _le(bound)}, at, running)
    history.add(family, f"{family}_count", labels, at, running)
    history.add(family, f"{family}_sum", labels, at, total)


def minutes(start: datetime, count: int, every: timedelta) -> list[datetime]:
    """`count` instants `every` apart from `start` (the first at `start`)."""
    return [start + i * every for i in range(count)]
