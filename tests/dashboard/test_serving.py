"""`canaryctl dashboard` as a user runs it, and the controller's own dashboard port."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import pytest

from controller.app import dashboard_servers
from controller.settings import Settings
from controller.store.sql import SqlStore
from tests.cli.shell import CANARYCTL, canaryctl, clean_env
from tests.dashboard.conftest import KEY
from tests.dashboard.pages import Document, fetch

#: `canaryctl dashboard` started with SIGINT ignored, as a background job of a
#: non-interactive shell is (its children inherit that): Ctrl-C must still stop it
SIGINT_IGNORED = ["bash", "-c", 'trap "" INT; exec "$0" "$@"']


@pytest.mark.parametrize("launch", [[], SIGINT_IGNORED], ids=["plain", "sigint-ignored"])
def test_canaryctl_dashboard_serves_the_demo_store_until_interrupted(
    demo_db: Path, launch: list[str]
) -> None:
    process = subprocess.Popen(
        [*launch, CANARYCTL, "dashboard", "--database", demo_db.name, "--port", "0"],
        cwd=demo_db.parent,
        env=clean_env(demo_db.parent),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"dashboard of sqlite:///{demo_db.name} at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0].rstrip("/")
        doc = Document(fetch(url + "/").body)
        assert doc.one("tr", data_rollout=KEY)
        page = Document(fetch(f"{url}/rollouts/{KEY}").body)
        cell = page.one("td", data_cohort="non-english", data_metric="refusal-rate")
        assert cell.attrs["data-verdict"] == "fail"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()  # not left running into the next tests
            process.communicate()
            raise
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr


def test_canaryctl_dashboard_refuses_what_holds_no_store(tmp_path: Path) -> None:
    done = canaryctl("dashboard", "--database", "sqlite://", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == "error: sqlite:// is an in-memory database, which holds no store"


def test_canaryctl_dashboard_says_when_the_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = canaryctl("dashboard", "--database", "x.db", "--port", str(port), cwd=tmp_path)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert list(tmp_path.iterdir()) == []


def test_the_controller_serves_it_only_on_its_own_port(demo_db: Path) -> None:
    url = f"sqlite:///{demo_db}"
    store = SqlStore(url)
    try:
        assert dashboard_servers(Settings(database_url=url), store) == []
        [server] = dashboard_servers(Settings(database_url=url, dashboard_port=0), store)
        with server:
            assert server.address[0] == "127.0.0.1"  # the API host's loopback default
            answer = fetch(server.url + "/")
            assert answer.status == 200
            assert Document(answer.body).one("tr", data_rollout=KEY)
    finally:
        store.close()
