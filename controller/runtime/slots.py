"""Each rollout's tick slot: a stable offset within its interval, from a hash of its key.

Scheduling every rollout's job at "now" makes every interval start with a burst
of N ticks and 8·N Prometheus queries, then nothing. Here a rollout is looked at
when wall-clock time reaches `offset (mod interval)`, the offset coming from a
hash of its key: the ticks are spread evenly over the interval, and every
replica computes the same slots, so a rollout handed from one replica to
another keeps its rhythm (the new owner looks at the next slot, the old one
looked at the last).

A rollout not looked at since its current slot began (a new one, or one taken
over from a replica that died) gets its first look at once and falls into its
slot afterwards; two looks are never less than half an interval apart.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger


def slot_offset(key: str, interval: float) -> float:
    """Seconds into each interval (0 <= offset < interval) at which `key` is looked at;
    the same in every process (not Python's salted `hash`)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * interval


def slot_start(at: float, interval: float, offset: float) -> float:
    """The start (Unix seconds) of the slot window holding `at`: the last slot time <= `at`."""
    return math.floor((at - offset) / interval) * interval + offset


def looked_at_in_slot(last_look: datetime | None, now: datetime, key: str, interval: float) -> bool:
    """Whether `key`'s last look falls in its current slot window (then the next look
    waits for the next slot; otherwise it is due at once)."""
    if last_look is None:
        return False
    start = slot_start(now.timestamp(), interval, slot_offset(key, interval))
    return last_look.timestamp() >= start


class SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 ships no types
    """An APScheduler trigger firing at `key`'s slots, and first at `first` if given."""

    def __init__(self, key: str, interval: float, *, first: datetime | None = None) -> None:
        if interval <= 0:
            raise ValueError("a slot interval must be positive")
        self.key = key
        self.interval = interval
        self.offset = slot_offset(key, interval)
        self.first = first

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is None:
            if self.first is not None:
                return self.first
            # the next slot from now on
            at = now.timestamp()
            start = slot_start(at, self.interval, self.offset)
            return _time(start if start >= at else start + self.interval)
        # The first slot at least half an interval after the previous look.
        after = previous_fire_time.timestamp() + self.interval / 2
        return _time(slot_start(after, self.interval, self.offset) + self.interval)

    def __str__(self) -> str:
        return f"slot[{self.offset:.3f}s of every {self.interval:g}s]"

    def __repr__(self) -> str:
        return f"<SlotTrigger ({self.key!r}, {self.interval:g}s, offset {self.offset:.3f}s)>"


def _time(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
