"""A real API server on a free loopback port, with metrics and readiness the test controls."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.api import ApiServer, Readiness
from controller.telemetry import ControllerMetrics


@dataclass
class Flags:
    """Readiness inputs the tests flip; each check reads one of them."""

    store: bool = True
    scheduler: bool = True
    source: bool = True
    store_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def store_reachable(self) -> bool:
        self.calls.append("store")
        if self.store_error is not None:
            raise self.store_error
        return self.store

    def scheduler_running(self) -> bool:
        self.calls.append("scheduler")
        return self.scheduler

    def source_synced(self) -> bool:
        self.calls.append("source")
        return self.source


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


@dataclass
class Running:
    server: ApiServer
    metrics: ControllerMetrics
    readiness: Readiness
    flags: Flags

    def get(self, path: str, *, method: str = "GET", accept: str | None = None) -> Response:
        request = urllib.request.Request(self.server.url + path, method=method)
        if accept is not None:
            request.add_header("Accept", accept)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return Response(answer.status, dict(answer.headers), answer.read())
        except urllib.error.HTTPError as error:
            with error:
                return Response(error.code, dict(error.headers), error.read())

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample /metrics serves, by name and sorted labels."""
        answer = self.get("/metrics")
        assert answer.status == 200
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(answer.text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out


@pytest.fixture
def running() -> Iterator[Running]:
    flags = Flags()
    metrics = ControllerMetrics()
    readiness = Readiness(
        {
            "store": flags.store_reachable,
            "scheduler": flags.scheduler_running,
            "source": flags.source_synced,
        }
    )
    server = ApiServer(metrics.registry, readiness, host="127.0.0.1", port=0)
    server.start()
    try:
        yield Running(server, metrics, readiness, flags)
    finally:
        server.stop()
