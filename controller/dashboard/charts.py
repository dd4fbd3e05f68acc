"""A chart of one metric in one cohort over the looks: baseline against candidate.

Drawn from the audit's recorded looks (each look keeps both versions' values), so
no Prometheus is needed to see how a rollout went. The geometry is computed here,
in plain numbers; the template writes it out as inline SVG, so the page needs no
charting library and no script.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from controller.dashboard.formats import Unit, offset, value
from controller.store.records import AnalysisRecord

if TYPE_CHECKING:
    from controller.dashboard.pages import Look

WIDTH, HEIGHT = 300, 140
LEFT, RIGHT, TOP, BOTTOM = 58, 10, 12, 22


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    tick: int
    verdict: str
    label: str  # the look's time and both values, for the point's tooltip


@dataclass(frozen=True)
class Chart:
    metric: str
    cohort: str
    baseline: tuple[Point, ...]
    candidate: tuple[Point, ...]
    y_labels: tuple[tuple[float, str], ...]  # (y, text), bottom and top of the scale
    x_labels: tuple[tuple[float, str], ...]
    limit: tuple[float, str] | None  # an absolute limit (max/min) inside the scale
    selected_x: float | None  # the look the grid shows
    latest: str  # the last look's values, for the caption
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM

    @property
    def empty(self) -> bool:
        return not self.baseline and not self.candidate

    @staticmethod
    def path(points: Sequence[Point]) -> str:
        """The points as an SVG polyline's `points` attribute."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in points)


def _absolute_limit(record: AnalysisRecord) -> tuple[str, float] | None:
    for check in record.evidence.get("checks") or ():
        limit, threshold = check.get("limit"), check.get("threshold")
        if limit in ("max", "min") and isinstance(threshold, int | float):
            return str(limit), float(threshold)
    return None


def chart(
    records: Sequence[AnalysisRecord], unit: Unit, start: datetime, selected: Look | None
) -> Chart:
    """The chart of one cell's looks, `records` oldest first; times from `start`."""
    metric, cohort = records[0].metric, records[0].cohort
    times = [(r.at - start).total_seconds() for r in records]
    values = [
        v
        for r in records
        for v in (r.baseline_value, r.candidate_value)
        if v is not None and math.isfinite(v)
    ]
    limit = _absolute_limit(records[-1])
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    # the limit is drawn when it is near the data: within half the data's range again
    spread = max(high - low, abs(high) * 0.05, 1e-9)
    if limit is not None and low - spread / 2 <= limit[1] <= high + spread / 2:
        low, high = min(low, limit[1]), max(high, limit[1])
    else:
        limit = None
    pad = max(high - low, abs(high) * 0.05, 1e-9) * 0.08
    low, high = low - pad, high + pad
    if unit in (Unit.PERCENT, Unit.SCORE, Unit.SECONDS):
        low = max(low, 0.0)
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)

    def x_of(t: float) -> float:
        if t1 == t0:
            return (LEFT + WIDTH - RIGHT) / 2
        return LEFT + (t - t0) / (t1 - t0) * (WIDTH - RIGHT - LEFT)

    def y_of(v: float) -> float:
        return HEIGHT - BOTTOM - (v - low) / (high - low) * (HEIGHT - BOTTOM - TOP)

    def points(baseline: bool) -> tuple[Point, ...]:
        out = []
        for r, t in zip(records, times, strict=True):
            v = r.baseline_value if baseline else r.candidate_value
            if v is None or not math.isfinite(v):
                continue
            label = (
                f"{offset(r.at - start)}: baseline {value(r.baseline_value, unit)}, "
                f"candidate {value(r.candidate_value, unit)} ({r.verdict})"
            )
            out.append(Point(x_of(t), y_of(v), r.tick, r.verdict, label))
        return tuple(out)

    chosen = next(
        (
            x_of(t)
            for r, t in zip(records, times, strict=True)
            if selected and r.tick == selected.tick
        ),
        None,
    )
    last = records[-1]
    return Chart(
        metric=metric,
        cohort=cohort,
        baseline=points(baseline=True),
        candidate=points(baseline=False),
        y_labels=((y_of(low), value(low, unit)), (y_of(high), value(high, unit))),
        x_labels=(
            (x_of(t0), offset(records[0].at - start)),
            (x_of(t1), offset(last.at - start)),
        ),
        limit=(y_of(limit[1]), f"{limit[0]} {value(limit[1], unit)}") if limit else None,
        selected_x=chosen,
        latest=f"baseline {value(last.baseline_value, unit)} · "
        f"candidate {value(last.candidate_value, unit)}",
    )
