"""A tick's metric queries share one deadline: a slow Prometheus cannot hold a tick longer.

The fake Prometheus of the HTTP tests answers after a delay; the provider and the
judging observer must give up when the look's time is spent, not after each
query's own timeout in turn.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.decide import start
from controller.metrics import MetricsUnreachableError
from controller.metrics.prometheus import PrometheusProvider
from controller.policy import load_text
from controller.runtime.observer import JudgingObserver
from tests.metrics.test_http import CONTEXT, SPEC, Script, fake  # noqa: F401  (fixture)
from tests.policy.base import policy


def test_a_query_gets_only_what_is_left_of_the_deadline(fake: tuple[Script, str]) -> None:  # noqa: F811
    script, url = fake
    script.delay = 1.5
    provider = PrometheusProvider(url, timeout_seconds=10)
    began = time.monotonic()
    context = dataclasses.replace(CONTEXT, deadline=began + 0.3)
    with pytest.raises(MetricsUnreachableError):
        provider.fetch(SPEC, "v1", context)
    assert time.monotonic() - began < 1.2  # the 0.3 s left, not the 10 s timeout
    assert "timeout=300ms" in script.seen_params[-1] or "timeout=299ms" in script.seen_params[-1]
    provider.close()


def test_no_query_is_sent_once_the_deadline_has_passed(fake: tuple[Script, str]) -> None:  # noqa: F811
    script, url = fake
    provider = PrometheusProvider(url, timeout_seconds=10)
    context = dataclasses.replace(CONTEXT, deadline=time.monotonic() - 1)
    with pytest.raises(MetricsUnreachableError, match="no time left"):
        provider.fetch(SPEC, "v1", context)
    assert script.seen_params == []
    provider.close()


def test_a_look_at_a_slow_prometheus_ends_at_the_tick_timeout(fake: tuple[Script, str]) -> None:  # noqa: F811
    script, url = fake
    script.delay = 2.0
    rollout = load_text(policy())[0].rollout  # two metrics: four queries of 2 s each
    observer = JudgingObserver(PrometheusProvider(url, timeout_seconds=10), tick_timeout=0.5)
    now = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    state = start(rollout.spec, 1, now - timedelta(minutes=5))
    began = time.monotonic()
    observation = observer.observe(rollout, state, now)
    assert time.monotonic() - began < 1.5
    assert observation.look.cells
    assert all(c.verdict is Verdict.NO_DATA for c in observation.look.cells)
    assert len(script.seen_params) == 1  # the other queries had no time left: not sent
