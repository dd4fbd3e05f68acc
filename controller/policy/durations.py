"""Durations as people write them in a policy: `30s`, `10m`, `1h30m`, `500ms`.

A bare number is refused on purpose: `hold: 10` could mean seconds or minutes, and
a rollout that holds for ten seconds instead of ten minutes is a real incident.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h|d))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(DURATION_PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# Longer than anything a rollout waits for; also keeps timedelta far from overflow.
MAX_DURATION = timedelta(days=30)


def parse_duration(value: Any) -> timedelta:
    """`value` as a timedelta; ValueError with a plain reason when it is not a duration."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip()
        if not _WHOLE.match(text) or len(text) > 64:
            raise ValueError(
                f"{value!r} is not a duration; write a number and a unit, "
                "like 30s, 10m, 1h or 1h30m (units: ms, s, m, h, d)"
            )
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))
    elif isinstance(value, bool):
        raise ValueError("must be a duration like 30s, 10m or 1h, not a boolean")
    elif isinstance(value, int | float):
        raise ValueError(f"{value!r} has no unit; write it as a duration like {value}s or {value}m")
    else:
        raise ValueError("must be a duration like 30s, 10m or 1h")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError("is longer than 30 days; no rollout step should wait that long")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest policy spelling of `value`: 90s -> `1m30s`, 0.5s -> `500ms`."""
    millis = round(value.total_seconds() * 1000)
    if millis == 0:
        return "0s"
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: 30s, 10m, 1h30m (units ms, s, m, h, d).",
        }
    ),
]
