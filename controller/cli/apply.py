"""`canaryctl apply`: a validated policy into the cluster, or into the directory source.

Nothing is written unless the whole file is valid. In the cluster, a new
ModelRollout is created and an existing one gets the file's spec (a merge patch
of `spec`, labels and annotations), so re-applying the same file changes nothing.
"""

from __future__ import annotations

from pathlib import Path

from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from controller.errors import PermanentError, TransientError
from controller.policy import API_GROUP, ModelRollout
from controller.policy.crd import PLURAL, VERSION


def to_directory(rollout: ModelRollout, source: Path, directory: Path) -> Path:
    """Copy the policy file into the directory source, named after the rollout."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{rollout.metadata.namespace}.{rollout.metadata.name}.yaml"
    temporary = target.with_suffix(".yaml.tmp")
    temporary.write_bytes(source.read_bytes())
    temporary.replace(target)  # atomic: the controller never reads half a file
    return target


def to_cluster(rollout: ModelRollout, client: ApiClient) -> str:
    """Create or update the ModelRollout object; returns "created" or "configured"."""
    api = CustomObjectsApi(client)
    body = rollout.model_dump(mode="json", exclude_none=True)
    meta = rollout.metadata
    body["metadata"] = {
        "name": meta.name,
        "namespace": meta.namespace,
        "labels": dict(meta.labels),
        "annotations": dict(meta.annotations),
    }
    try:
        api.create_namespaced_custom_object(API_GROUP, VERSION, meta.namespace, PLURAL, body)
        return "created"
    except ApiException as exc:
        if exc.status != 409:
            raise _error(exc, "create") from exc
    patch = {
        "metadata": {
            "labels": body["metadata"]["labels"],
            "annotations": body["metadata"]["annotations"],
        },
        "spec": body["spec"],
    }
    try:
        api.patch_namespaced_custom_object(
            API_GROUP, VERSION, meta.namespace, PLURAL, meta.name, patch
        )
    except ApiException as exc:
        raise _error(exc, "patch") from exc
    return "configured"


def _error(exc: ApiException, verb: str) -> Exception:
    where = f"{verb} {PLURAL}.{API_GROUP}"
    if exc.status == 404:
        return PermanentError(f"{where}: the ModelRollout CRD is not installed (install the chart)")
    if exc.status == 403:
        return PermanentError(f"{where}: forbidden by RBAC")
    if exc.status in (400, 422):
        return PermanentError(f"{where}: the API server rejected it: {exc.reason}")
    return TransientError(f"{where}: the API server answered {exc.status} {exc.reason}")
