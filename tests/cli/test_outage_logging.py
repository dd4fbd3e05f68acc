"""An API server outage is one log line per failed operation, not a flood.

The kubernetes client's own urllib3 retries are off (they logged three WARNING
lines per failed call, about 60 a minute): each failed list or watch of
ModelRollouts is one line saying how often it has failed in a row and when the
next try is, and a route request retried within a tick is one error when it
gives up (and one INFO line when it gets through after failing). Checked with
the installed `canaryctl run` in an empty folder against a dead API server and
against kmock answering 503, and with the cluster seam under caplog.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from controller.kube.client import kube_client
from controller.kube.cluster import Cluster, RetryPolicy
from controller.kube.errors import ApiUnavailableError
from controller.kube.objects import HTTP_ROUTE
from controller.settings import Settings
from tests.cli.shell import CANARYCTL, clean_env
from tests.kube import KubeApi
from tests.metrics.servers import free_port
from tests.routing.cases import HTTP_ROUTE as ROUTE

MODELROLLOUTS = "canary.ai/v1alpha1/modelrollouts"
HTTP_ROUTES = "gateway.networking.k8s.io/v1/httproutes"
FAILED_LIST = re.compile(
    r"ModelRollout list on all namespaces failed \((?P<why>.*)\), (?P<count>\d+) time\(s\) "
    r"in a row; next try in (?P<delay>[\d.]+)s, at \d\d:\d\d:\d\dZ$"
)


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server}}],
                "users": [{"name": "u", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def _run_until(tmp_path: Path, server: str, done: Callable[[str], bool]) -> str:
    """`canaryctl run` against `server` until `done(stderr so far)`; its whole stderr."""
    env = {
        "KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", server)),
        "CANARY_DATABASE_URL": f"sqlite:///{tmp_path / 'canary.db'}",
        "CANARY_API_HOST": "127.0.0.1",
        "CANARY_API_PORT": str(free_port()),
        "CANARY_LOG_FORMAT": "console",
    }
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [CANARYCTL, "run"],
            cwd=tmp_path,
            env=clean_env(tmp_path, env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 90
            while not done(log.read_text()) and time.monotonic() < deadline:
                assert process.poll() is None, log.read_text()
                time.sleep(0.1)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    return log.read_text()


def _failed_lists(stderr: str) -> list[re.Match[str]]:
    return [m for line in stderr.splitlines() if (m := FAILED_LIST.search(line))]


def test_a_dead_api_server_is_one_line_per_failed_list(tmp_path: Path) -> None:
    stderr = _run_until(
        tmp_path, f"http://127.0.0.1:{free_port()}", lambda text: len(_failed_lists(text)) >= 4
    )
    assert "Retrying" not in stderr  # urllib3's own retry warnings
    assert "urllib3" not in stderr
    failed = _failed_lists(stderr)
    assert [int(m["count"]) for m in failed] == list(range(1, len(failed) + 1))
    assert [float(m["delay"]) for m in failed[:4]] == [0.5, 1.0, 2.0, 4.0]
    assert all("Connection refused" in m["why"] for m in failed)
    # nothing else said about the API server meanwhile
    assert [line for line in stderr.splitlines() if "WARNING" in line] == [m.string for m in failed]


def test_503s_are_counted_then_the_list_succeeds(tmp_path: Path) -> None:
    with KubeApi() as kube:
        kube.server.register(MODELROLLOUTS, "ModelRollout")
        kube.server.fail("GET", "modelrollouts", None, 503, 503, 503)
        stderr = _run_until(
            tmp_path, kube.url, lambda text: "listed 0 ModelRollouts in all namespaces" in text
        )
        lists = len(kube.server.lists("modelrollouts"))
    failed = _failed_lists(stderr)
    assert [int(m["count"]) for m in failed] == [1, 2, 3]
    assert all(m["why"].startswith("HTTP 503") for m in failed)
    assert lists == 4  # three refused, one answered: no hidden retries


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    with KubeApi() as api:
        api.server.register(HTTP_ROUTES, "HTTPRoute")
        yield api


def _cluster(tmp_path: Path, server: str) -> Cluster:
    settings = Settings(kubeconfig=_kubeconfig(tmp_path / "kubeconfig", server))
    return Cluster(
        kube_client(settings), timeout=2.0, retry=RetryPolicy(attempts=4), sleep=lambda s: None
    )


def test_a_route_request_that_gives_up_logs_no_warning_per_try(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = _cluster(tmp_path, f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.DEBUG), pytest.raises(ApiUnavailableError) as raised:
        cluster.get(HTTP_ROUTE, "llm", "bot")
    assert "failed 4 times" in str(raised.value)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []  # urllib3's too
    assert not [r for r in caplog.records if r.name.startswith("urllib3") and "Retrying" in r.msg]
    tries = [r for r in caplog.records if r.name == "controller.kube.cluster"]
    assert len(tries) == 3  # the retries, at DEBUG: the error itself is the one line


def test_a_route_request_that_gets_through_says_so_once(
    tmp_path: Path, kube: KubeApi, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = _cluster(tmp_path, kube.url)
    name, namespace = ROUTE["metadata"]["name"], ROUTE["metadata"]["namespace"]
    kube.server.put(HTTP_ROUTES, ROUTE)
    kube.server.fail("GET", "httproutes", name, 503, 503)
    with caplog.at_level(logging.INFO):
        found = cluster.get(HTTP_ROUTE, namespace, name)
    assert found is not None and found["metadata"]["name"] == name
    [line] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.INFO and r.name.startswith("controller.")
    ]
    assert line.startswith(
        f"get HTTPRoute {namespace}/{name} succeeded after 2 failed tries (HTTP 503"
    )
    assert len(kube.server.requests("GET")) == 3
