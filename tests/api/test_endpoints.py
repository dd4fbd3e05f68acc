"""The three endpoints over real HTTP on 127.0.0.1: status codes, bodies, lifecycle."""

from __future__ import annotations

import json
import socket

import pytest

from controller.api import DEFAULT_PORT, ApiServer, Readiness
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


def test_a_check_that_raises_is_not_ready_and_its_secret_stays_inside(running: Running) -> None:
    running.flags.store_error = ConnectionError(
        "cannot reach postgresql+psycopg://canary:hunter2-pw@db:5432/canary"
    )
    answer = running.get("/readyz")
    assert answer.status == 503
    detail = json.loads(answer.body)["checks"]["store"]["detail"]
    assert detail == "ConnectionError: cannot reach postgresql+psycopg://canary:***@db:5432/canary"
    assert b"hunter2" not in answer.body


def test_stopping_makes_the_controller_unready_whatever_the_checks_say(running: Running) -> None:
    running.readiness.mark_stopping()
    answer = running.get("/readyz")
    assert answer.status == 503
    assert json.loads(answer.body)["stopping"] is True


def test_readiness_runs_the_checks_on_every_request(running: Running) -> None:
    running.get("/readyz")
    running.get("/readyz")
    assert running.flags.calls == ["store", "scheduler", "source"] * 2


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
