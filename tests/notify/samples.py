"""Notifications and analysis rows shaped like the engine's and the judge's, for tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controller.notify import Notification
from controller.store import AnalysisRecord, OutboxMessage

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
ROLLOUT = "llm/support-bot-v7"
QUERY = (
    'sum(increase(llm_refusals_total{model="support-bot",version="v7",'
    'cohort=~"non-english"}[5m])) / sum(increase(llm_requests_total{model="support-bot",'
    'version="v7",cohort=~"non-english"}[5m]))'
)
FAIL_REASON = (
    "candidate - baseline 0.041 breaks maxIncrease 0.02: with 99.5000% confidence it lies in"
    " [0.023, 0.059]"
)


def analysis(
    tick: int,
    metric: str = "refusal-rate",
    cohort: str = "non-english",
    verdict: str = "fail",
    *,
    at: datetime = T0,
    baseline: tuple[float, float] = (0.05, 4210),
    candidate: tuple[float, float] = (0.091, 1187),
) -> AnalysisRecord:
    """A row as `JudgingObserver` records it: values, samples and the limit checks."""
    return AnalysisRecord(
        at=at,
        tick=tick,
        metric=metric,
        cohort=cohort,
        verdict=verdict,
        query=QUERY,
        baseline_value=baseline[0],
        candidate_value=candidate[0],
        baseline_samples=baseline[1],
        candidate_samples=candidate[1],
        evidence={
            "reason": FAIL_REASON if verdict == "fail" else "",
            "critical": True,
            "decidedBy": "maxIncrease" if verdict in ("fail", "pass") else None,
            "noData": None,
            "checks": [
                {
                    "limit": "max",
                    "threshold": 0.1,
                    "verdict": "pass",
                    "statement": "candidate <= 0.1",
                    "method": "beta-mixture",
                    "estimate": candidate[0],
                    "lower": 0.07,
                    "upper": 0.095,
                    "alpha": 0.005,
                },
                {
                    "limit": "maxIncrease",
                    "threshold": 0.02,
                    "verdict": verdict,
                    "statement": "candidate - baseline <= 0.02",
                    "method": "normal-mixture",
                    "estimate": 0.041,
                    "allowed": 0.02,
                    "lower": 0.023,
                    "upper": 0.059,
                    "alpha": 0.005,
                    "reason": FAIL_REASON,
                },
            ],
        },
    )


def outbox(event: str, payload: dict[str, object], *, tick: int = 3) -> OutboxMessage:
    key = f"{ROLLOUT}#{T0.isoformat()}#{tick}#1#{event}"
    return OutboxMessage(key, event, payload, T0 + timedelta(minutes=tick))


def payload(event: str, text: str, **changes: object) -> dict[str, object]:
    """A payload as the executor's `_payload` writes it."""
    base: dict[str, object] = {
        "rollout": ROLLOUT,
        "model": "support-bot",
        "baseline": "v6",
        "candidate": "v7",
        "event": event,
        "text": text,
        "phase": "Progressing",
        "step": 0,
        "route": {
            "weight": 1,
            "cohorts": {"non-english": 5},
            "mirrorPercent": 0,
            "stickyHeader": "x-conversation-id",
        },
        "channel": "#bot",
        "mention": [],
        "cells": [],
    }
    base.update(changes)
    return base


def rollback(tick: int = 3) -> Notification:
    """The rollback of step 1: refusal-rate in non-english broke maxIncrease."""
    message = outbox(
        "rolled-back",
        payload(
            "rolled-back",
            "rolled back: refusal-rate in non-english: " + FAIL_REASON,
            phase="RolledBack",
            cause="LimitBroken",
            mention=["U024BE7LH"],
            cells=[
                {
                    "metric": "refusal-rate",
                    "cohort": "non-english",
                    "verdict": "fail",
                    "summary": FAIL_REASON,
                }
            ],
        ),
        tick=tick,
    )
    rows = [analysis(tick), analysis(tick, "error-rate", "non-english", "pass")]
    return Notification.of(ROLLOUT, message, analyses=rows, steps=5, started_at=T0)
