"""Fixtures that start a real Prometheus scraping a test-controlled exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.metrics.servers import ContractExporter, ExporterServer, PrometheusServer


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[ContractExporter, int]]:
    contract = ContractExporter()
    server = ExporterServer(contract)
    try:
        yield contract, server.port
    finally:
        server.close()


@pytest.fixture(scope="module")
def prometheus_pair(
    exporter: tuple[ContractExporter, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PrometheusServer, PrometheusServer]]:
    """Two servers started together: one for the module, one a test may stop.

    Prometheus 2.x scrapes for the first time about five seconds after it starts;
    starting both at once pays that wait once.
    """
    servers: list[PrometheusServer] = []
    try:
        for name in ("main", "disposable"):
            servers.append(PrometheusServer(tmp_path_factory.mktemp(name), exporter[1]))
        for server in servers:
            server.wait_until_scraping()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def prometheus(prometheus_pair: tuple[PrometheusServer, PrometheusServer]) -> PrometheusServer:
    """The module's Prometheus; tests use their own model names to stay apart."""
    return prometheus_pair[0]


@pytest.fixture
def disposable_prometheus(
    prometheus_pair: tuple[PrometheusServer, PrometheusServer],
) -> PrometheusServer:
    """A Prometheus of its own, for a test that stops it (once per module)."""
    server = prometheus_pair[1]
    if not server.running:
        pytest.fail("the disposable Prometheus was already stopped by another test")
    return server
