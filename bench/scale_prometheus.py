"""A stand-in Prometheus for the scale benchmark: the HTTP API v1, answered from a model.

The scale benchmark measures the controller, not Prometheus, so this server
answers the controller's real queries (the PromQL `PrometheusProvider` renders
from the built-in templates) with what a Prometheus holding the metric contract
of the demo would return: one sample per cohort and query part (`events` /
`trials`, or a histogram's `bucket` per `le`, `count`, `sum`), and per version
when the query selects both (`version=~"a|b"`, grouped by version), counted over
the span of the query's subquery, for steady healthy traffic of both versions.
It runs in its own process so its CPU time is never counted as the controller's.

It counts what it is asked (`GET /bench/stats`), so queries per tick come from
the server side, not from the controller's own bookkeeping. `/api/v1/query_range`
is not used by the provider and answers 400, as would any other unknown path.

    python -m bench.scale_prometheus --speedup 10 --cohorts a,b,c
    # prints {"port": N} on stdout once it listens on 127.0.0.1:N
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PART_LABEL = "__canary_part"
#: `label_replace(EXPR, "__canary_part", "NAME", "", "")`, as `promql.tagged` writes it
_PART = re.compile(r'label_replace\((.*?), "' + PART_LABEL + r'", "(\w+)", "", ""\)', re.DOTALL)
_METRIC = re.compile(r"\b(llm_[a-z_]+)\{")
_SUBQUERY = re.compile(r"\[(\d+(?:ms|s)):(\d+(?:ms|s))\]")
#: `version=~"a|b"`: the provider's query for both versions at once, grouped by version
_VERSIONS = re.compile(r'version=~"((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")

#: requests per second of each version (the candidate sees mirrored or split traffic
#: at the same rate: the benchmark is about cost, not about detection)
RPS = 20.0
REFUSAL_RATE = 0.05
ERROR_RATE = 0.005
JUDGED_SHARE = 0.10
#: cumulative share of observations at or below each bucket bound
QUALITY_BUCKETS = ((0.2, 0.02), (0.4, 0.06), (0.6, 0.18), (0.8, 0.55), (0.9, 0.8), (1.0, 1.0))
LATENCY_BUCKETS = (
    (0.25, 0.1),
    (0.5, 0.35),
    (1.0, 0.75),
    (2.0, 0.97),
    (4.0, 0.995),
    (8.0, 1.0),
)


def _seconds(duration: str) -> float:
    return int(duration[:-2]) / 1000 if duration.endswith("ms") else float(duration[:-1])


@dataclass(frozen=True)
class Traffic:
    """Steady traffic of one version, shared by the cohorts (in simulated seconds)."""

    cohorts: tuple[str, ...]
    shares: tuple[float, ...]
    speedup: float

    def requests(self, share: float, seconds: float) -> float:
        return round(RPS * share * seconds * self.speedup)


def answer(query: str, traffic: Traffic) -> list[dict[str, Any]]:
    """The instant vector Prometheus would return for one of the provider's queries."""
    pieces = _PART.findall(query)
    if not pieces:
        return []
    found = _SUBQUERY.search(query)
    # A zero-length count (`x - x`) is 0 for every group; otherwise the subquery spans
    # (start, end] less half a step.
    seconds = _seconds(found.group(1)) + _seconds(found.group(2)) / 2 if found else 0.0
    out: list[dict[str, Any]] = []
    for expr, part in pieces:
        metric = _METRIC.search(expr)
        if metric is None:
            continue
        name = metric.group(1)
        # one version (no version label, as `by (cohort)` leaves none) or several
        versions = _VERSIONS.search(expr)
        labelled: list[dict[str, str]] = (
            [{"version": _version(v)} for v in versions.group(1).split("|")] if versions else [{}]
        )
        for version in labelled:
            for cohort, share in zip(traffic.cohorts, traffic.shares, strict=True):
                requests = traffic.requests(share, seconds)
                labels = {"cohort": cohort, **version, PART_LABEL: part}
                out.extend(_series(name, expr, part, labels, requests))
    return out


def _version(matched: str) -> str:
    """A version of the regex matcher as the provider escaped it (PromQL string escapes
    of RE2's `\\` escapes): the label value it matches."""
    return _UNESCAPE.sub(r"\1", matched.replace("\\\\", "\\"))


def _series(
    name: str, expr: str, part: str, labels: dict[str, str], requests: float
) -> list[dict[str, Any]]:
    if name == "llm_refusals_total":
        return [_sample(labels, requests * REFUSAL_RATE)]
    if name == "llm_requests_total":
        errors = 'outcome="error"' in expr
        return [_sample(labels, round(requests * ERROR_RATE) if errors else requests)]
    quality = name.startswith("llm_quality_score")
    observed = round(requests * JUDGED_SHARE) if quality else requests
    if part == "count":
        return [_sample(labels, observed)]
    if part == "sum":
        return [_sample(labels, observed * (0.8 if quality else 1.1))]
    buckets = QUALITY_BUCKETS if quality else LATENCY_BUCKETS
    out = [_sample({**labels, "le": f"{le:g}"}, round(observed * share)) for le, share in buckets]
    out.append(_sample({**labels, "le": "+Inf"}, observed))
    return out


def _sample(labels: dict[str, str], value: float) -> dict[str, Any]:
    return {"metric": labels, "value": [0, f"{value:g}"]}


class Stats:
    """What the server was asked, for queries per tick."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}
        self.series = 0

    def count(self, path: str, series: int) -> None:
        with self._lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            self.series += series

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": dict(self.requests), "series": self.series}


class PrometheusServer(ThreadingHTTPServer):
    daemon_threads = True
    # The controller's worker threads all connect at once; the default backlog is 5.
    request_queue_size = 256

    def __init__(self, traffic: Traffic) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.traffic = traffic
        self.stats = Stats()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A controller killed with SIGKILL (the failover part) drops its connections.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the provider reuses its connections
    # Headers and body are two writes; without TCP_NODELAY (which Prometheus, a Go
    # server, sets) Nagle and the client's delayed ACK add 40 ms to every answer.
    disable_nagle_algorithm = True
    server: PrometheusServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/bench/stats":
            self._send(200, self.server.stats.to_json())
            return
        self._api(parts.path, parse_qs(parts.query))

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        parts = urlsplit(self.path)
        self._api(parts.path, {**parse_qs(parts.query), **parse_qs(body)})

    def _api(self, path: str, params: dict[str, list[str]]) -> None:
        if path != "/api/v1/query" or "query" not in params:
            self.server.stats.count(path, 0)
            self._send(400, {"status": "error", "errorType": "bad_data", "error": "unsupported"})
            return
        at = float(params.get("time", ["0"])[0])
        result = answer(params["query"][0], self.server.traffic)
        for series in result:
            series["value"][0] = at
        self.server.stats.count(path, len(result))
        self._send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # one line per query would cost more than the answer


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speedup", type=float, default=1.0)
    parser.add_argument("--cohorts", default="non-english,mobile,power-users")
    parser.add_argument("--shares", default="0.3,0.3,0.4")
    args = parser.parse_args(argv)
    cohorts = tuple(args.cohorts.split(","))
    shares = tuple(float(s) for s in args.shares.split(","))
    server = PrometheusServer(Traffic(cohorts, shares, args.speedup))
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
