"""Times as `canaryctl backtest` takes them: `now`, `now-90m`, or ISO 8601.

Apart from the backtest's view so that a mistyped time is refused before the
engine and the judge (scipy) are loaded.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^now(?:\s*-\s*(?P<ago>\S+))?$")
_AGO = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w))+$")
_AGO_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class TimeFormatError(ValueError):
    """A --from / --to value that is not a time."""


def parse_time(text: str, now: datetime) -> datetime:
    """`now`, `now-90m` (a policy duration ago), or ISO 8601 (`2026-12-06T08:00:00Z`;
    without a zone, UTC)."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        ago = relative.group("ago")
        if ago is None:
            return now
        if not _AGO.match(ago):
            raise TimeFormatError(
                f"{text!r}: {ago!r} is not a duration; write now-90m, now-2h or now-7d"
            )
        seconds = sum(float(n) * _UNIT[u] for n, u in _AGO_PART.findall(ago))
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise TimeFormatError(
            f"{text!r} is not a time; write ISO 8601 (2026-12-06T08:00:00Z), now, or now-2h"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
