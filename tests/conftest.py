"""Session-wide: the throwaway Postgres (if the tests had to start one) stops at the end,
and, when the suite runs on several xdist workers (`make test`), each worker starts from
the environment a single process has and takes the longest modules first.

A worker's environment arrives with `COLUMNS=80` and `LINES=24` set, which a single
process does not have; rich's consoles, made when `controller.cli.main` is imported,
would then keep 80 columns whatever a test's `CliRunner` asks for. They are dropped
here, before any test module is imported.

xdist hands out whole modules (`--dist loadscope`) in collection order
(`--no-loadscope-reorder`); a module marked `long(seconds)` is moved to the front,
longest first, so that the few minute-long ones (mostly waiting on real processes)
overlap the rest of the suite instead of starting last and running alone.
"""

from __future__ import annotations

import os

import pytest

from tests.databases import stop_throwaway

if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("COLUMNS", "LINES"):
        os.environ.pop(variable, None)


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return float(marker.kwargs["seconds"]) if marker is not None else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: -_seconds(item))  # stable: modules stay in one piece


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_throwaway()
