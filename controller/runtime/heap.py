"""The start-up heap, kept out of the garbage collector's full collections.

By the time the controller starts, the process holds everything imported and built
once and for good: modules, pydantic schemas, SQLAlchemy's tables and compiled
statements, the wiring. CPython's cyclic collector walks all of it at every full
(oldest generation) collection, a few times a minute at scale, in the thread of the
tick that happened to allocate at that moment. `gc.freeze()` moves those objects
to a permanent generation that no collection walks; what ticks allocate afterwards
is collected as before.

The price: a cycle among the frozen objects that becomes garbage later is never
freed. Start-up objects live as long as the process, so nothing is lost in practice.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once, then keep every object alive now out of later collections;
    returns how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
