"""Spread ticks: each rollout at a stable offset of its interval, from its key; a rollout
not looked at in its current slot window is looked at once first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.runtime.slots import SlotTrigger, looked_at_in_slot, slot_offset, slot_start

NOW = datetime(2026, 12, 6, 9, 0, 0, 123000, tzinfo=UTC)


def test_offsets_are_stable_within_the_interval_and_spread_over_it() -> None:
    keys = [f"team-{i % 50:02d}/bot-{i:05d}" for i in range(3000)]
    offsets = [slot_offset(k, 30.0) for k in keys]
    assert offsets == [slot_offset(k, 30.0) for k in keys]  # the same in every process
    assert all(0 <= o < 30 for o in offsets)
    per_second = [0] * 30
    for o in offsets:
        per_second[int(o)] += 1
    # 100 per second on average: no second of the interval holds a burst
    assert max(per_second) < 150 and min(per_second) > 50


def test_a_trigger_without_a_first_look_fires_at_the_keys_slots() -> None:
    trigger = SlotTrigger("llm/bot", 30.0)
    first = trigger.get_next_fire_time(None, NOW)
    assert first is not None and NOW <= first < NOW + timedelta(seconds=30)
    assert first.timestamp() % 30 == pytest.approx(trigger.offset, abs=1e-6)
    second = trigger.get_next_fire_time(first, first)
    assert second == first + timedelta(seconds=30)


@pytest.mark.parametrize("seconds_into", [0.0, 1.0, 14.9, 15.1, 29.0])
def test_a_first_look_comes_at_once_then_the_slot_never_within_half_an_interval(
    seconds_into: float,
) -> None:
    trigger = SlotTrigger("llm/bot", 30.0)
    slot = slot_start(NOW.timestamp(), 30.0, trigger.offset)
    at = datetime.fromtimestamp(slot + seconds_into, UTC)
    trigger = SlotTrigger("llm/bot", 30.0, first=at)
    assert trigger.get_next_fire_time(None, at) == at
    then = trigger.get_next_fire_time(at, at)
    assert then is not None
    gap = (then - at).total_seconds()
    assert 15 <= gap <= 45
    assert then.timestamp() % 30 == pytest.approx(trigger.offset, abs=1e-6)


def test_a_rollout_looked_at_in_its_current_slot_window_waits_for_the_next() -> None:
    offset = slot_offset("llm/bot", 30.0)
    window = slot_start(NOW.timestamp(), 30.0, offset)
    inside = datetime.fromtimestamp(window + 0.5, UTC)
    before = datetime.fromtimestamp(window - 0.5, UTC)
    assert looked_at_in_slot(inside, NOW, "llm/bot", 30.0)
    assert not looked_at_in_slot(before, NOW, "llm/bot", 30.0)
    assert not looked_at_in_slot(None, NOW, "llm/bot", 30.0)


def test_an_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        SlotTrigger("llm/bot", 0.0)
