"""A real headless Chromium (Debian's `chromium`) loads both pages of the demo's
cohort-regression run, finds the failed non-english × refusal-rate cell, and saves
the screenshots docs/dashboard.md shows (docs/img/dashboard-*.png).

Chromium is driven from the command line: `--dump-dom` prints the DOM after the
page's own script ran, `--screenshot` saves what a window of the given size shows.
The dashboard's clock is fixed relative to the rollout, and the store is named as
`canaryctl dashboard --database canary-demo.db` names it, so the screenshots read
the same from run to run (the demo is seeded).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from controller.api.server import BackgroundServer
from controller.dashboard import DashboardServer, create_app, open_store
from controller.store.memory import MemoryStore
from controller.store.records import StoredRollout
from tests.dashboard.conftest import KEY
from tests.dashboard.pages import Document
from tests.dashboard.test_unreadable_and_hostile import HOSTILE, T0, _hostile_store

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "docs" / "img"


def chromium() -> str:
    """Debian's chromium, installed by tools/ensure-chromium.sh when it is missing."""
    found = shutil.which("chromium")
    if found is None:
        done = subprocess.run(
            ["bash", str(ROOT / "tools" / "ensure-chromium.sh")],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"could not install Chromium for the browser test:\n{done.stderr}")
        found = shutil.which("chromium")
    assert found is not None, "chromium was installed but is not on PATH"
    return found


def run_chromium(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="canary-chromium-") as profile:
        done = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                *args,
            ],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=180,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def site(demo_db: Path, demo_rollout: StoredRollout) -> Iterator[str]:
    assert demo_rollout.created_at is not None
    now = demo_rollout.created_at + timedelta(minutes=10)
    opened = replace(open_store(str(demo_db)), source="sqlite:///canary-demo.db")
    server = DashboardServer(opened, port=0, clock=lambda: now)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        opened.store.close()


def test_chromium_shows_the_rollout_in_the_list(site: str) -> None:
    doc = Document(run_chromium("--dump-dom", site + "/"))
    row = doc.one("tr", data_rollout=KEY)
    assert "RolledBack" in row.content
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / "dashboard-rollouts.png"
    run_chromium("--window-size=1280,360", f"--screenshot={shot}", site + "/")
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_chromium_finds_the_failed_cell_the_timeline_and_the_charts(site: str) -> None:
    url = f"{site}/rollouts/{KEY}"
    doc = Document(run_chromium("--dump-dom", url))
    cell = doc.one("td", data_cohort="non-english", data_metric="refusal-rate")
    assert "verdict-fail" in cell.classes
    assert cell.attrs["data-verdict"] == "fail"
    assert [c for c in doc.find("td", "cell") if c.attrs["data-verdict"] == "fail"] == [cell]
    assert doc.find("rect", "look") and doc.find("li", "step")
    assert len(doc.find("figure", "chart")) == 16
    shot = SCREENSHOTS / "dashboard-rollout.png"
    run_chromium("--window-size=1280,1700", f"--screenshot={shot}", url)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_a_running_rollout_refreshes_itself_in_chromium_and_hostile_names_stay_text() -> None:
    """A live rollout whose cohort, reason and actor are `<script>alert(1)</script>`:
    Chromium runs no script but the dashboard's, and the page's own poll swaps in the
    next version of the page (its clock has moved on by then: age 3m, then 4m)."""
    store = MemoryStore()
    key = _hostile_store(store, phase="Shadowing")
    times = iter([T0 + timedelta(minutes=3)])

    def clock() -> datetime:
        return next(times, T0 + timedelta(minutes=4))

    app = create_app(store, source="memory", clock=clock, refresh_seconds=2)
    with BackgroundServer(app, host="127.0.0.1", port=0, name="test", serves="a test") as server:
        # virtual time: the page's timers run without waiting in real time
        dom = run_chromium(
            "--virtual-time-budget=8000", "--dump-dom", f"{server.url}/rollouts/{key}"
        )
    doc = Document(dom)
    assert [s.attrs.get("src") for s in doc.find("script")] == ["/static/dashboard.js"]
    assert doc.one("span", id="live").content.startswith("live · updated ")
    facts = doc.one("dl", "facts").content
    assert "age4m" in facts  # the second version of the page, fetched by the poll
    # the DOM holds the names as text (serialised escaped), never as elements
    assert HOSTILE not in dom
    assert HOSTILE in doc.one("section", "audit").content
