"""HTTP answers a real Prometheus rarely gives on demand: overload, auth, TLS, garbage.

A stdlib HTTP(S) server on 127.0.0.1 plays Prometheus' API for one query; the
provider must type each answer correctly and send its credentials.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest.mock import ANY
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr

from controller.analysis import FailureKind, MeasurementFailure, Proportion, VersionData
from controller.errors import PermanentError, TransientError
from controller.metrics import BadQueryError, MetricsUnreachableError, QueryContext, collect
from controller.metrics.prometheus import PrometheusProvider, form_body
from controller.policy import MetricSpec
from controller.settings import Settings
from tests.metrics.servers import LOOPBACK, free_port
from tests.serving import serving

SPEC = MetricSpec(template="error-rate", max=0.01)
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
CONTEXT = QueryContext(model="m", namespace="n", start=NOW - timedelta(minutes=10), end=NOW)
OK_BODY = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {"metric": {"cohort": "a", "__canary_part": "events"}, "value": [0, "3"]},
            {"metric": {"cohort": "a", "__canary_part": "trials"}, "value": [0, "100"]},
        ],
    },
}


@dataclass
class Script:
    """What the fake Prometheus answers, and what it was asked."""

    status: int = 200
    body: bytes = json.dumps(OK_BODY).encode()
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    seen_headers: list[dict[str, str]] = field(default_factory=list)
    seen_params: list[str] = field(default_factory=list)


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._answer(self.path)

        def do_POST(self) -> None:
            # the provider sends its query as a form body: seen as if in the URL
            length = int(self.headers.get("Content-Length") or 0)
            self._answer(f"{self.path}?{self.rfile.read(length).decode()}")

        def _answer(self, seen: str) -> None:
            script.seen_headers.append(dict(self.headers))
            script.seen_params.append(seen)
            time.sleep(script.delay)
            self.send_response(script.status)
            for k, v in script.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(script.body)))
            self.end_headers()
            self.wfile.write(script.body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake() -> Iterator[tuple[Script, str]]:
    script = Script()
    server = ThreadingHTTPServer((LOOPBACK, free_port()), _handler(script))
    with serving(server):
        yield script, f"http://{LOOPBACK}:{server.server_address[1]}"


def _error(error_type: str, message: str) -> bytes:
    return json.dumps({"status": "error", "errorType": error_type, "error": message}).encode()


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "retry_after"),
    [
        pytest.param(
            503,
            _error("unavailable", "too many queries"),
            {"Retry-After": "7"},
            MetricsUnreachableError,
            7.0,
            id="503-overloaded",
        ),
        pytest.param(429, b"slow down", {}, MetricsUnreachableError, None, id="429-rate-limited"),
        pytest.param(
            502, b"<html>bad gateway</html>", {}, MetricsUnreachableError, None, id="502-proxy"
        ),
        pytest.param(
            400, _error("bad_data", "parse error"), {}, BadQueryError, None, id="400-bad-data"
        ),
        pytest.param(
            422, _error("execution", "many-to-many"), {}, BadQueryError, None, id="422-execution"
        ),
        pytest.param(401, b"unauthorized", {}, PermanentError, None, id="401-no-credentials"),
        pytest.param(403, b"forbidden", {}, PermanentError, None, id="403-forbidden"),
        pytest.param(200, b"{not json", {}, MetricsUnreachableError, None, id="200-garbage"),
    ],
)
def test_answers_are_typed(
    fake: tuple[Script, str],
    status: int,
    body: bytes,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    script, url = fake
    script.status, script.body, script.headers = status, body, headers
    provider = PrometheusProvider(url, timeout_seconds=2)
    with pytest.raises(error) as info:
        provider.fetch(SPEC, "v1", CONTEXT)
    assert str(status) in str(info.value) or status == 200
    assert getattr(info.value, "query", "").startswith("label_replace(") or error is PermanentError
    if isinstance(info.value, TransientError):
        assert info.value.retry_after == retry_after
    # both versions in one query: one request, the same typed error for each
    script.seen_params.clear()
    both = provider.fetch_versions(SPEC, ("v2", "v1"), CONTEXT)
    assert both is not None and len(script.seen_params) == 1
    assert {type(e) for e in both.values()} == {type(info.value)}
    provider.close()


def _series(version: str, cohort: str, part: str, value: str) -> dict[str, object]:
    labels = {"cohort": cohort, "version": version, "__canary_part": part}
    return {"metric": labels, "value": [0, value]}


def test_both_versions_come_from_one_request_and_are_read_apart(fake: tuple[Script, str]) -> None:
    script, url = fake
    result = [
        _series("v2", "a", "events", "3"),
        _series("v2", "a", "trials", "100"),
        _series("v1", "a", "events", "1"),
        _series("v1", "a", "trials", "50"),
        _series("v1", "b", "events", "0"),
        _series("v1", "b", "trials", "20"),
    ]
    script.body = json.dumps({"status": "success", "data": {"result": result}}).encode()
    provider = PrometheusProvider(url, timeout_seconds=2)
    got = collect(provider, [SPEC], baseline="v1", candidate="v2", context=CONTEXT)
    assert len(script.seen_params) == 1
    assert "version%3D~%22v2%7Cv1%22" in script.seen_params[0]
    observation = got[SPEC.metric_name]
    assert observation.candidate == VersionData({"a": Proportion(3, 100)}, query=ANY)
    assert observation.baseline == VersionData(
        {"a": Proportion(1, 50), "b": Proportion(0, 20)}, query=ANY
    )
    # one version's series are ambiguous: that version only is a failure of its kind
    script.body = json.dumps(
        {"status": "success", "data": {"result": [*result, _series("v2", "a", "events", "4")]}}
    ).encode()
    got = collect(provider, [SPEC], baseline="v1", candidate="v2", context=CONTEXT)
    candidate = got[SPEC.metric_name].candidate
    assert isinstance(candidate, MeasurementFailure)
    assert candidate.kind is FailureKind.AMBIGUOUS
    assert isinstance(got[SPEC.metric_name].baseline, VersionData)
    provider.close()


def test_a_slow_prometheus_times_out_as_unreachable(fake: tuple[Script, str]) -> None:
    script, url = fake
    script.delay = 1.5
    provider = PrometheusProvider(url, timeout_seconds=0.3)
    started = time.monotonic()
    with pytest.raises(MetricsUnreachableError, match="unreachable"):
        provider.fetch(SPEC, "v1", CONTEXT)
    assert time.monotonic() - started < 1.4  # no retry loop behind the timeout
    provider.close()


def test_a_closed_port_is_unreachable() -> None:
    provider = PrometheusProvider(f"http://{LOOPBACK}:{free_port()}", timeout_seconds=1)
    with pytest.raises(MetricsUnreachableError):
        provider.fetch(SPEC, "v1", CONTEXT)
    provider.close()


def test_token_timeout_and_time_come_from_settings(fake: tuple[Script, str]) -> None:
    script, url = fake
    settings = Settings(
        prometheus_url=url, prometheus_token=SecretStr("s3cret"), prometheus_timeout_seconds=4
    )
    provider = PrometheusProvider.from_settings(settings, step_seconds=60)
    data = provider.fetch(SPEC, "v1", CONTEXT)
    assert data.by_cohort["a"].samples == 100  # type: ignore[union-attr]
    assert script.seen_headers[-1]["Authorization"] == "Bearer s3cret"
    path = script.seen_params[-1]
    assert f"time={NOW.timestamp():.3f}" in path
    assert "timeout=4s" in path
    assert "s3cret" not in repr(provider)
    provider.close()


@pytest.fixture
def tls(tmp_path: Path) -> Iterator[tuple[str, Path, Script]]:
    """An HTTPS fake Prometheus with a self-signed certificate for 127.0.0.1."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    script = Script()
    server = ThreadingHTTPServer((LOOPBACK, free_port()), _handler(script))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield f"https://{LOOPBACK}:{server.server_address[1]}", cert, script


def test_the_ca_file_is_trusted_and_nothing_else(tls: tuple[str, Path, Script]) -> None:
    url, cert, _ = tls
    trusted = PrometheusProvider(url, ca_file=cert, timeout_seconds=2)
    assert trusted.fetch(SPEC, "v1", CONTEXT).by_cohort["a"].samples == 100  # type: ignore[union-attr]
    trusted.close()
    untrusted = PrometheusProvider(url, timeout_seconds=2)
    with pytest.raises(PermanentError, match="TLS"):
        untrusted.fetch(SPEC, "v1", CONTEXT)
    untrusted.close()


def test_every_query_is_reported_with_its_latency_and_error_class(
    fake: tuple[Script, str],
) -> None:
    script, url = fake
    seen: list[tuple[float, str | None]] = []
    provider = PrometheusProvider.from_settings(
        Settings(prometheus_url=url), on_query=lambda seconds, error: seen.append((seconds, error))
    )
    provider.fetch(SPEC, "v1", CONTEXT)
    script.status, script.body = 503, _error("unavailable", "too many queries")
    with pytest.raises(MetricsUnreachableError):
        provider.fetch(SPEC, "v1", CONTEXT)
    script.status, script.body = 400, _error("bad_data", "parse error")
    with pytest.raises(BadQueryError):
        provider.fetch(SPEC, "v1", CONTEXT)
    assert [error for _, error in seen] == [None, "MetricsUnreachableError", "BadQueryError"]
    assert all(seconds >= 0 for seconds, _ in seen)
    provider.close()


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"query": "up", "time": "1740830400.000"}, id="plain"),
        pytest.param(
            {
                "query": 'sum by (cohort) (increase(x{model="m",cohort=~"a|b"}[300s:15s])) '
                '/ 2 + label_replace(y, "__canary_part", "events", "", "")',
                "timeout": "9s",
            },
            id="promql-punctuation",
        ),
        pytest.param({"query": 'x{cohort="d\\"é 日本 €\\n%+&="}'}, id="quotes-unicode-escapes"),
        pytest.param({"q r": "~_.-*'()!/:;@,$?#[]"}, id="every-ascii-sign"),
        pytest.param({"all": "".join(chr(c) for c in range(1, 256))}, id="every-latin-1-char"),
    ],
)
def test_the_form_body_is_what_urlencode_makes(fields: dict[str, str]) -> None:
    assert form_body(fields) == urlencode(fields)


def test_proxy_variables_are_not_read(
    fake: tuple[Script, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The settings are the only reader of the environment: a proxy named there is not
    used (it would be a dead port here), nor looked up on every request."""
    _, url = fake
    dead = f"http://{LOOPBACK}:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    provider = PrometheusProvider(url, timeout_seconds=2)
    assert provider.fetch(SPEC, "v1", CONTEXT).by_cohort["a"].samples == 100  # type: ignore[union-attr]
    provider.close()
