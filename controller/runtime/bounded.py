"""Waiting for the store at most so long before a tick acts without it.

The database's own timeouts (connect, statement, keepalive) end every call to a
dead or black-holed Postgres, but not quickly enough for a tick: libpq waits at
least 2 s to connect, and a tick's lease, state and commands are three calls. A
tick therefore reads them through `BoundedCalls`: the reads run on a thread of
their own, and the tick stops waiting after a limit (a fraction of its interval)
and acts from the state kept in memory, toward the baseline only. The call goes
on until the database timeouts end it; it only reads (and renews a lease), so
its late answer is simply dropped.

While such a late call is still running, the store is taken to be unreachable:
the next calls fail at once instead of stacking up threads behind it, and the
first call after it returns tries the store again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from controller.errors import TransientError

T = TypeVar("T")


class BoundedCalls:
    """Runs calls on a small pool of threads and stops waiting for each after a limit."""

    def __init__(self, *, workers: int = 4, name: str = "store-read") -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._late = 0

    @property
    def late(self) -> int:
        """Calls given up on that are still running."""
        with self._lock:
            return self._late

    def call(self, fn: Callable[[], T], *, wait: float) -> T:
        """`fn()`'s result, or TransientError if it takes longer than `wait` seconds
        (or an earlier call given up on is still running). `fn`'s own errors pass."""
        with self._lock:
            if self._late:
                raise TransientError("the store has not answered an earlier call yet")
        future = self._pool.submit(fn)
        try:
            return future.result(timeout=wait)
        except FutureTimeout:
            with self._lock:
                self._late += 1
            future.add_done_callback(self._arrived)
            raise TransientError(f"the store did not answer within {wait:g} s") from None

    def _arrived(self, _future: Future[Any]) -> None:
        with self._lock:
            self._late -= 1

    def close(self) -> None:
        """Stop taking calls; late ones finish on their own (their answers unused)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
