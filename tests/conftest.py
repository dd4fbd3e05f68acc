"""Session-wide: the throwaway Postgres (if the tests had to start one) stops at the end;
and, when the suite runs on several xdist workers (`make test`), each worker starts from
the environment a single process has, each module runs whole on one worker, the
`canaryctl run` modules share one worker, and the longest modules go first.

A worker's environment arrives with `COLUMNS=80` and `LINES=24` set, which a single
process does not have; rich's consoles, made when `controller.cli.main` is imported,
would then keep 80 columns whatever a test's `CliRunner` asks for. They are dropped
here, before any test module is imported.

`Lanes` (for `--dist loadscope`) hands out work a module at a time, so that a
module's servers start once, in collection order (`--no-loadscope-reorder`). The
`LIVE` modules run the controller as a process against real Postgres and
Prometheus under time bounds; they are one unit of work, so they run one after
another on one worker, as in a single process, while the other workers take the
rest. A module marked `long(seconds)` is moved to the front, longest first, so
that the minute-long ones (mostly waiting on real processes) overlap the rest of
the suite instead of starting last; the seconds are the module's time in a
single-process run on 2 vCPU (2026-12-06, `pytest --durations=120`), rounded, and
only order the work.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests.databases import stop_throwaway

#: the modules of the live lane
LIVE = frozenset(
    f"tests/runtime/test_{name}.py"
    for name in ("crash", "split_brain", "bad_edits", "store_outage", "run")
)

if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("COLUMNS", "LINES"):
        os.environ.pop(variable, None)


class Lanes(LoadScopeScheduling):
    """Whole modules as units of work, the live modules as one."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return "live" if module in LIVE else module


@pytest.hookimpl(optionalhook=True)  # a plain `pytest -p no:xdist` has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> Lanes | None:
    if config.getoption("dist") != "loadscope":
        return None
    return Lanes(config, log)  # type: ignore[arg-type]


def _seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("long")
    return float(marker.kwargs["seconds"]) if marker is not None else 0.0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: -_seconds(item))  # stable: modules stay in one piece


@pytest.fixture
def signals_restored() -> Iterator[None]:
    """For a test that calls `controller.app.run` in-process: the SIGTERM and SIGINT
    handlers it installs are put back as they were."""
    handlers = {number: signal.getsignal(number) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_throwaway()
