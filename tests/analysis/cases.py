"""Small builders for judge tests: policies and observations in one line each."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from controller.analysis import (
    Gauge,
    Histogram,
    Judgement,
    MetricObservation,
    Proportion,
    Sample,
    VersionData,
    judge,
)
from controller.policy import Analysis, MetricSpec

AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LATENCY_BOUNDS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, math.inf)
SCORE_BOUNDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, math.inf)


def metric(**fields: Any) -> MetricSpec:
    return MetricSpec.model_validate(fields)


def analysis(*metrics: MetricSpec, confidence: float = 0.95, min_samples: int = 200) -> Analysis:
    return Analysis(metrics=list(metrics), confidence=confidence, min_samples=min_samples)


def observation(
    name: str,
    baseline: Mapping[str, Sample] | VersionData,
    candidate: Mapping[str, Sample] | VersionData,
) -> dict[str, MetricObservation]:
    def data(x: Mapping[str, Sample] | VersionData) -> VersionData:
        return x if isinstance(x, VersionData) else VersionData(x)

    return {name: MetricObservation(name, data(baseline), data(candidate))}


def run(
    spec: MetricSpec,
    baseline: Mapping[str, Sample] | VersionData,
    candidate: Mapping[str, Sample] | VersionData,
    *,
    cohorts: Sequence[str] = (),
    min_samples: int = 200,
    confidence: float = 0.95,
) -> Judgement:
    return judge(
        analysis(spec, confidence=confidence, min_samples=min_samples),
        list(cohorts),
        observation(spec.metric_name, baseline, candidate),
        at=AT,
    )


def p(events: float, trials: float) -> Proportion:
    return Proportion(events, trials)


def latency(n: float, median: float, sigma: float = 0.4) -> Histogram:
    """Expected bucket counts of n lognormal latencies (no sampling noise)."""
    cdf = stats.lognorm.cdf(np.array(LATENCY_BOUNDS[:-1]), sigma, scale=median)
    cumulative = (*(float(n * c) for c in cdf), float(n))
    mean = median * math.exp(sigma * sigma / 2)
    return Histogram(LATENCY_BOUNDS, cumulative, n * mean)


def scores(n: float, a: float, b: float) -> Histogram:
    """Expected bucket counts of n Beta(a, b) scores."""
    cdf = stats.beta.cdf(np.array(SCORE_BOUNDS[:-1]), a, b)
    cumulative = (*(float(n * c) for c in cdf), float(n))
    return Histogram(SCORE_BOUNDS, cumulative, n * a / (a + b))


def gauge(value: float, samples: float | None = None) -> Gauge:
    return Gauge(value, samples)
