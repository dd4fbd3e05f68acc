"""`canaryctl run` and `apply` find the cluster the way kubectl does, or say they cannot.

In order: CANARY_KUBECONFIG; the files of KUBECONFIG that exist (a path list,
merged, the first `current-context` winning); `~/.kube/config`; the pod's
service account. Outside a pod with none of them, `run` says so in one line and
exits 1, before anything (the store) is created. Each case runs the installed
`canaryctl` in an empty folder against the kmock API server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.cli.shell import CANARYCTL, canaryctl, clean_env
from tests.kube import KubeApi
from tests.metrics.servers import free_port
from tests.policy.base import BASE

MODELROLLOUTS = "canary.ai/v1alpha1/modelrollouts"


def _kubeconfig(path: Path, server: str, *, context: str = "kmock") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    with KubeApi() as api:
        api.server.register(MODELROLLOUTS, "ModelRollout")
        yield api


def test_run_without_any_configuration_says_so_in_one_line(tmp_path: Path) -> None:
    done = canaryctl("run", cwd=tmp_path, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: no Kubernetes configuration: no kubeconfig at {tmp_path}/.kube/config, "
        "and not in a pod (no service account); set CANARY_KUBECONFIG or KUBECONFIG"
    ]
    assert list(tmp_path.iterdir()) == []  # no store was created


def test_run_names_the_kubeconfig_files_it_looked_for(tmp_path: Path) -> None:
    done = canaryctl("run", cwd=tmp_path, env={"KUBECONFIG": "a.yaml:/nowhere/b.yaml"})
    assert done.returncode == 1
    assert "no kubeconfig at a.yaml, /nowhere/b.yaml, and not in a pod" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_canary_kubeconfig_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    _kubeconfig(tmp_path / ".kube" / "config", "http://127.0.0.1:9")
    done = canaryctl("run", cwd=tmp_path, env={"CANARY_KUBECONFIG": "missing.yaml"})
    assert done.returncode == 1
    assert done.stderr.strip() == "error: CANARY_KUBECONFIG names missing.yaml, which is not a file"


def _in_home(home: Path, server: str) -> dict[str, str]:
    _kubeconfig(home / ".kube" / "config", server)
    return {}


# (where the kubeconfig for `server` goes, in the folder `d`) -> environment
Setup = Callable[[Path, str], dict[str, str]]
SOURCES: dict[str, Setup] = {
    "CANARY_KUBECONFIG": lambda d, server: {
        "CANARY_KUBECONFIG": str(_kubeconfig(d / "k.yaml", server)),
        "KUBECONFIG": str(_kubeconfig(d / "other.yaml", "http://127.0.0.1:9")),
    },
    "KUBECONFIG list, first file missing": lambda d, server: {
        "KUBECONFIG": f"{d / 'missing.yaml'}{os.pathsep}{_kubeconfig(d / 'k.yaml', server)}"
    },
    "KUBECONFIG list, first current-context wins": lambda d, server: {
        "KUBECONFIG": os.pathsep.join(
            [
                str(_kubeconfig(d / "first.yaml", server, context="first")),
                str(_kubeconfig(d / "second.yaml", "http://127.0.0.1:9", context="second")),
            ]
        )
    },
    "~/.kube/config": _in_home,
}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_apply_finds_the_cluster_as_kubectl_does(
    tmp_path: Path, kube: KubeApi, source: str
) -> None:
    env = SOURCES[source](tmp_path, kube.url)
    (tmp_path / "bot.yaml").write_text(BASE)
    done = canaryctl("apply", "bot.yaml", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert "modelrollout llm/bot-v2 created" in done.stdout
    assert kube.server.get(MODELROLLOUTS, "llm", "bot-v2") is not None


def test_run_uses_kubeconfig(tmp_path: Path, kube: KubeApi) -> None:
    env = {
        "KUBECONFIG": str(_kubeconfig(tmp_path / "k.yaml", kube.url)),
        "CANARY_DATABASE_URL": f"sqlite:///{tmp_path / 'canary.db'}",
        "CANARY_API_HOST": "127.0.0.1",
        "CANARY_API_PORT": str(free_port()),
        "CANARY_LOG_FORMAT": "console",
    }
    process = subprocess.Popen(
        [CANARYCTL, "run"],
        cwd=tmp_path,
        env=clean_env(tmp_path, env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not kube.server.lists("modelrollouts") and time.monotonic() < deadline:
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        assert kube.server.lists("modelrollouts"), "the controller never listed ModelRollouts"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
