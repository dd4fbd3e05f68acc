"""The three endpoints over real HTTP on 127.0.0.1: status codes, bodies, lifecycle."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

from controller.api import DEFAULT_PORT, ApiServer, Readiness
from controller.app import api_servers
from controller.settings import load_settings
from controller.telemetry import ControllerMetrics
from tests.api.conftest import Running


def test_healthz_answers_while_the_process_runs(running: Running) -> None:
    answer = running.get("/healthz")
    assert (answer.status, answer.text) == (200, "ok\n")
    assert answer.headers["Cache-Control"] == "no-store"


def test_healthz_does_not_depend_on_readiness(running: Running) -> None:
    running.flags.store = False
    running.readiness.mark_stopping()
    assert running.get("/healthz").status == 200
    assert running.flags.calls == []  # liveness never runs the readiness checks


def test_readyz_is_ready_when_every_check_passes(running: Running) -> None:
    answer = running.get("/readyz")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == {
        "ready": True,
        "stopping": False,
        "checks": {"store": {"ok": True}, "scheduler": {"ok": True}, "source": {"ok": True}},
    }


@pytest.mark.parametrize(
    "failing",
    [
        pytest.param("store", id="store-unreachable"),
        pytest.param("scheduler", id="scheduler-stopped"),
        pytest.param("source", id="source-not-synced"),
    ],
)
def test_readyz_flips_with_each_input_and_back(running: Running, failing: str) -> None:
    setattr(running.flags, failing, False)
    answer = running.get("/readyz")
    assert answer.status == 503
    checks = json.loads(answer.body)["checks"]
    assert checks[failing] == {"ok": False, "detail": "check returned false"}
    assert [name for name, result in checks.items() if not result["ok"]] == [failing]

    setattr(running.flags, failing, True)
    assert running.get("/readyz").status == 200


def test_a_check_that_raises_is_not_ready_and_says_why_without_hosts_or_secrets(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.flags.store_error = ConnectionError(
        'connection to server at "db.internal" (10.3.0.7), port 5432 failed:'
        " postgresql+psycopg://canary:hunter2-pw@db.internal:5432/canary"
    )
    with caplog.at_level(logging.WARNING, "controller.api.health"):
        answer = running.get("/readyz")
        running.get("/readyz")
    assert answer.status == 503
    detail = json.loads(answer.body)["checks"]["store"]["detail"]
    assert detail == "failed: ConnectionError"
    for leak in (b"hunter2", b"db.internal", b"10.3.0.7", b"5432", b"canary:"):
        assert leak not in answer.body
    # the message is for the operator, in the log: redacted, and once, not per probe
    [record] = [r for r in caplog.records if "readiness check store" in r.getMessage()]
    assert "db.internal" in record.getMessage() and "hunter2" not in record.getMessage()


def test_a_hanging_check_is_not_ready_within_the_deadline(running: Running) -> None:
    """A black-holed database never answers: /readyz still does, at its deadline."""
    release = threading.Event()
    started: list[float] = []

    def hangs() -> bool:
        started.append(time.monotonic())
        release.wait(30)
        return True

    readiness = Readiness({"store": hangs, "scheduler": lambda: True}, deadline=0.3)
    server = ApiServer(running.metrics.registry, readiness, host="127.0.0.1", port=0)
    server.start()
    try:
        for _ in range(3):
            began = time.monotonic()
            answer = Running(server, running.metrics, readiness, running.flags).get("/readyz")
            took = time.monotonic() - began
            assert answer.status == 503
            body = json.loads(answer.body)
            assert body["checks"]["store"] == {"ok": False, "detail": "no answer within 0.3 s"}
            assert body["checks"]["scheduler"] == {"ok": True}
            assert took < 2  # the deadline (0.3 s) plus a loaded machine's slack
        assert len(started) == 1  # the hanging run is waited on again, not started again
        release.set()  # the dependency answers again: ready again
        assert (
            Running(server, running.metrics, readiness, running.flags).get("/readyz").status == 200
        )
    finally:
        release.set()
        server.stop()


def test_the_deadline_bounds_every_evaluation() -> None:
    never = threading.Event()
    readiness = Readiness({"a": lambda: never.wait(30), "b": lambda: never.wait(30)}, deadline=0.2)
    try:
        began = time.monotonic()
        report = readiness.evaluate()
        took = time.monotonic() - began
    finally:
        never.set()
    assert not report.ready
    assert {c.detail for c in report.checks} == {"no answer within 0.2 s"}
    assert 0.2 <= took < 5  # at the deadline, not after the checks' 30 s


def test_stopping_makes_the_controller_unready_whatever_the_checks_say(running: Running) -> None:
    running.readiness.mark_stopping()
    answer = running.get("/readyz")
    assert answer.status == 503
    assert json.loads(answer.body)["stopping"] is True


def test_readiness_runs_the_checks_on_every_request(running: Running) -> None:
    running.get("/readyz")
    running.get("/readyz")
    assert sorted(running.flags.calls) == sorted(["store", "scheduler", "source"] * 2)


def test_metrics_speak_the_prometheus_text_format(running: Running) -> None:
    answer = running.get("/metrics")
    assert answer.status == 200
    assert answer.headers["Content-Type"].startswith("text/plain; version=")
    assert b"# TYPE canary_ticks_total counter" in answer.body
    assert b'canary_build_info{version="' in answer.body


def test_metrics_negotiate_openmetrics(running: Running) -> None:
    answer = running.get("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")


def test_head_has_headers_and_no_body(running: Running) -> None:
    answer = running.get("/healthz", method="HEAD")
    assert (answer.status, answer.headers["Content-Length"], answer.body) == (200, "3", b"")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/", 404, id="root"),
        pytest.param("GET", "/metricsz", 404, id="unknown-path"),
        pytest.param("POST", "/readyz", 405, id="post"),
        pytest.param("DELETE", "/metrics", 405, id="delete"),
    ],
)
def test_anything_else_is_refused(running: Running, method: str, path: str, status: int) -> None:
    answer = running.get(path, method=method)
    assert answer.status == status
    if status == 405:
        assert answer.headers["Allow"] == "GET, HEAD"


def test_stop_closes_the_port_and_is_idempotent(running: Running) -> None:
    host, port = running.server.address
    running.server.stop()
    running.server.stop()
    with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), timeout=2):
        pass


def test_the_server_works_as_a_context_manager_and_tells_its_port() -> None:
    readiness = Readiness({"store": lambda: True})
    server = ApiServer(ControllerMetrics().registry, readiness, host="127.0.0.1", port=0)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.address
    with server:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port not in (0, DEFAULT_PORT)
        with pytest.raises(RuntimeError, match="already started"):
            server.start()


def test_a_taken_port_fails_loudly(running: Running) -> None:
    _, port = running.server.address
    other = ApiServer(ControllerMetrics().registry, running.readiness, host="127.0.0.1", port=port)
    with pytest.raises(OSError, match="in use"):
        other.start()


def test_readiness_needs_a_check() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        Readiness({})


def _get(base: str, path: str) -> int:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


def test_metrics_can_be_served_apart_from_the_health_endpoints(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CANARY_API_HOST", "CANARY_METRICS_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CANARY_API_PORT", "0")
    monkeypatch.setenv("CANARY_METRICS_PORT", "0")
    metrics = ControllerMetrics()
    servers = api_servers(load_settings(), metrics.registry, Readiness({"store": lambda: True}))
    assert len(servers) == 2
    for server in servers:
        server.start()
    try:
        health, scrape = (server.url for server in servers)
        assert [_get(health, p) for p in ("/healthz", "/readyz", "/metrics")] == [200, 200, 404]
        assert [_get(scrape, p) for p in ("/healthz", "/readyz", "/metrics")] == [404, 404, 200]
        # loopback unless an address is asked for: no authentication on these endpoints
        assert {server.address[0] for server in servers} == {"127.0.0.1"}
    finally:
        for server in servers:
            server.stop()


def test_by_default_one_loopback_server_serves_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "CANARY_API_HOST",
        "CANARY_API_PORT",
        "CANARY_METRICS_HOST",
        "CANARY_METRICS_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.api_host, settings.api_port, settings.metrics_port) == (
        "127.0.0.1",
        8080,
        None,
    )
    monkeypatch.setenv("CANARY_API_PORT", "0")  # the test's own free port; the host stays default
    [server] = api_servers(
        load_settings(), ControllerMetrics().registry, Readiness({"a": lambda: True})
    )
    with server:
        assert server.address[0] == "127.0.0.1"
        assert [_get(server.url, p) for p in ("/healthz", "/readyz", "/metrics")] == [200, 200, 200]


def test_a_separate_metrics_host_is_used_for_metrics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_API_HOST", "127.0.0.1")
    monkeypatch.setenv("CANARY_API_PORT", "0")
    monkeypatch.setenv("CANARY_METRICS_HOST", "127.0.0.2")
    monkeypatch.setenv("CANARY_METRICS_PORT", "0")
    servers = api_servers(
        load_settings(), ControllerMetrics().registry, Readiness({"a": lambda: True})
    )
    for server in servers:
        server.start()
    try:
        assert [server.address[0] for server in servers] == ["127.0.0.1", "127.0.0.2"]
        assert _get(servers[1].url, "/metrics") == 200
    finally:
        for server in servers:
            server.stop()
