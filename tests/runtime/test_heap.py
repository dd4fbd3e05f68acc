"""The start-up heap is frozen out of later collections; later garbage is still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from controller.runtime.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_objects_alive_at_start_up_are_frozen_and_later_cycles_still_collected() -> None:
    kept = _Node()
    frozen = freeze_startup_heap()
    # what the freeze counted is frozen; a frozen object freed since (by its refcount,
    # e.g. in a thread an earlier test left) leaves the count, nothing joins it
    assert 0 < gc.get_freeze_count() <= frozen
    assert not any(o is kept for o in gc.get_objects())  # out of every generation

    later = _Node()
    gone = weakref.ref(later)
    del later
    gc.collect()
    assert gone() is None
