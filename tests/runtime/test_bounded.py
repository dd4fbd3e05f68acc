"""A tick waits for the store only so long; a store that does not answer is skipped
until its late call returns, instead of stacking threads behind it."""

from __future__ import annotations

import threading
import time

import pytest

from controller.errors import TransientError
from controller.runtime.bounded import BoundedCalls


def test_a_late_call_is_given_up_and_the_store_skipped_until_it_returns() -> None:
    calls = BoundedCalls()
    answer = threading.Event()
    began = time.monotonic()
    with pytest.raises(TransientError, match=r"did not answer within 0\.2 s"):
        calls.call(lambda: answer.wait(10), wait=0.2)
    assert time.monotonic() - began < 1
    assert calls.late == 1
    with pytest.raises(TransientError, match="earlier call"):
        calls.call(lambda: "never run", wait=5)
    answer.set()
    deadline = time.monotonic() + 5
    while calls.late and time.monotonic() < deadline:
        time.sleep(0.01)
    assert calls.call(lambda: "answered", wait=1) == "answered"
    calls.close()


def test_the_calls_own_errors_pass_through() -> None:
    calls = BoundedCalls()

    def refused() -> None:
        raise TransientError("connection refused")

    with pytest.raises(TransientError, match="connection refused"):
        calls.call(refused, wait=1)
    assert calls.late == 0
    calls.close()
