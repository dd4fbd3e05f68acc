"""How the dashboard writes numbers and times: the filters its templates use."""

from __future__ import annotations

import math
from datetime import timedelta
from enum import StrEnum


class Unit(StrEnum):
    """How a metric's values read: a rate as a percentage, a latency in seconds."""

    PERCENT = "percent"  # a 0..1 rate, shown as 4.92%
    SECONDS = "seconds"
    SCORE = "score"  # 0..1, shown as 0.812
    PLAIN = "plain"


def value(number: float | None, unit: Unit = Unit.PLAIN) -> str:
    """A metric's value in its unit; `-` when there is none."""
    if number is None or not math.isfinite(number):
        return "-"
    if unit is Unit.PERCENT:
        return f"{number * 100:.2f}%"
    if unit is Unit.SECONDS:
        return f"{number * 1000:.0f} ms" if abs(number) < 1 else f"{number:.3g} s"
    if unit is Unit.SCORE:
        return f"{number:.3f}"
    return f"{number:.4g}"


def count(number: float | None) -> str:
    """A sample count: whole numbers with thousands separators."""
    if number is None or not math.isfinite(number):
        return "-"
    return f"{number:,.0f}" if abs(number - round(number)) < 1e-9 else f"{number:,.1f}"


def offset(delta: timedelta) -> str:
    """Time since the rollout started: `T+0h05m`, as the demo prints it."""
    seconds = max(int(delta.total_seconds()), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"T+{hours}h{minutes:02d}m" + (f"{seconds:02d}s" if seconds else "")


def age(delta: timedelta) -> str:
    """How long ago, in its largest unit or two: `45s`, `12m`, `3h20m`, `2d5h`."""
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h" if hours else f"{days}d"
