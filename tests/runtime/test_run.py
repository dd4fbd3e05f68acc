"""`canaryctl run` serves /healthz, /readyz and /metrics with the values of its real work.

The controller runs as a subprocess in the live world (real Postgres, Prometheus,
the Gateway API router on kmock): the regressed rollout is rolled back, and the
self-metrics scraped from the process say so, with the ticks, queries and leases
that got it there. SIGTERM then stops it cleanly, leases released.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.store.sql import SqlStore
from tests.metrics.servers import LOOPBACK, free_port
from tests.runtime.live import NAMESPACE, start

pytestmark = pytest.mark.long(seconds=20)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _wait_until_ready(base: str, deadline: float, log: Path) -> None:
    ready: tuple[int, str] = (0, "")
    while time.monotonic() < deadline:
        try:
            ready = _get(f"{base}/readyz")
        except OSError:  # not listening yet
            time.sleep(0.2)
            continue
        if ready[0] == 200:
            break
        time.sleep(0.2)
    assert ready[0] == 200, (ready, log.read_text()[-3000:])
    assert json.loads(ready[1])["ready"] is True
    assert _get(f"{base}/healthz")[0] == 200


def test_the_running_controller_serves_health_readiness_and_real_metrics(
    world: dict[str, object],
) -> None:
    port = free_port()
    world["env"]["CANARY_API_PORT"] = str(port)  # type: ignore[index]
    base = f"http://{LOOPBACK}:{port}"
    store = SqlStore(str(world["url"]))
    try:
        _run_until_rolled_back(world, store, base)
        assert store.held_by("crash-test", datetime.now(UTC)) == []  # released at SIGTERM
    finally:
        store.close()


def _run_until_rolled_back(world: dict[str, object], store: SqlStore, base: str) -> None:
    process = start(world)
    log = Path(str(world["log"]))
    try:
        deadline = time.monotonic() + 60
        _wait_until_ready(base, deadline, log)
        bad = f"{NAMESPACE}/bad"
        samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        while time.monotonic() < deadline:
            row = store.get(bad)
            status, text = _get(f"{base}/metrics")
            assert status == 200
            samples = _samples(text)
            rolled_back = row is not None and row.phase == "RolledBack"
            if rolled_back and _value(samples, "canary_rollouts", phase="RolledBack") == 1:
                break
            time.sleep(0.3)
        row = store.get(bad)
        assert row is not None and row.phase == "RolledBack", log.read_text()[-3000:]
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(20)
    assert code == 0, log.read_text()[-3000:]

    # what the process did, as it told it
    assert _value(samples, "canary_ticks_total", outcome="ok") >= 2
    assert _value(samples, "canary_tick_duration_seconds_count") >= 2
    assert (
        _value(samples, "canary_rollbacks_total", rollout_namespace=NAMESPACE, rollout="bad") == 1
    )
    assert _value(samples, "canary_verdicts_total", verdict="fail", metric="refusal-rate") >= 1
    assert _value(samples, "canary_prometheus_query_duration_seconds_count") >= 2
    assert _value(samples, "canary_lease_changes_total", change="acquired") == 2
    assert (
        _value(
            samples,
            "canary_rollout_candidate_weight_percent",
            rollout_namespace=NAMESPACE,
            rollout="bad",
        )
        == 0
    )
    assert _value(samples, "canary_build_info", version=_version()) == 1
    assert _value(samples, "process_resident_memory_bytes") > 0
    # shut down cleanly: the port is closed and no lease is left behind
    try:
        _get(f"{base}/healthz")
        raise AssertionError("the port is still open after SIGTERM")
    except OSError:
        pass


def _version() -> str:
    from controller import __version__

    return __version__
