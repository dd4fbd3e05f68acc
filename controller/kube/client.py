"""The Kubernetes API client, built as kubectl builds it.

CANARY_KUBECONFIG; else the files of KUBECONFIG that exist, merged, with the first
`current-context`; else `~/.kube/config`; else, inside a pod, its service account.
`canaryctl run`, `rehearse` and `apply` all get their client here.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from kubernetes import config
from kubernetes.client import ApiClient, Configuration

from controller.errors import PermanentError
from controller.settings import Settings

#: the client's type, for the layers above that hand it to the seams here
__all__ = ["ApiClient", "kube_client"]


def kube_client(settings: Settings) -> ApiClient:
    """An API client configured as kubectl would be, or the pod's service account.

    CANARY_KUBECONFIG; else the files of KUBECONFIG that exist, merged; else
    `~/.kube/config`; else, inside a pod, its service account. With none of
    them, a `PermanentError` that says what was looked for.
    """
    if settings.kubeconfig is not None and not settings.kubeconfig.is_file():
        raise PermanentError(f"CANARY_KUBECONFIG names {settings.kubeconfig}, which is not a file")
    files = [f for f in settings.kubeconfig_files() if f.is_file()]
    # The client's own retries off: urllib3 would retry every request three times and
    # log each retry as a WARNING. The cluster seam, the watch and the status writer
    # retry and log themselves, once per failed operation.
    configuration = Configuration()
    configuration.retries = 0
    try:
        if files:
            # the kubernetes package has no type hints
            client: ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=os.pathsep.join(str(f) for f in files),
                context=_current_context(files),
                client_configuration=configuration,
            )
            return client
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException as exc:
        if files:
            where = ", ".join(str(f) for f in files)
            raise PermanentError(f"kubeconfig {where}: {exc}") from exc
        looked = ", ".join(str(f) for f in settings.kubeconfig_files())
        raise PermanentError(
            f"no Kubernetes configuration: no kubeconfig at {looked}, and not in a pod "
            "(no service account); set CANARY_KUBECONFIG or KUBECONFIG"
        ) from exc
    return ApiClient(configuration)


def _current_context(files: list[Path]) -> str | None:
    """The first `current-context` of `files`, as kubectl takes it (the client's merge
    would take the last)."""
    for f in files:
        try:
            loaded = yaml.safe_load(f.read_text())
        except (OSError, yaml.YAMLError):
            return None  # the client's own loading reports what is wrong with the file
        if isinstance(loaded, dict) and loaded.get("current-context"):
            return str(loaded["current-context"])
    return None
