"""Session-wide: the throwaway Postgres (if the tests had to start one) stops at the end."""

from __future__ import annotations

import pytest

from tests.databases import stop_throwaway


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_throwaway()
