"""ModelRollout objects on the kmock API server, for the source and status tests."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi

from controller.backoff import Backoff
from controller.runtime.kube_source import InvalidRollout, KubernetesSource
from tests.kube import KubeApi
from tests.policy.base import BASE

MODELROLLOUTS = "canary.ai/v1alpha1/modelrollouts"
EVENTS = "v1/events"
GROUP, VERSION, PLURAL = "canary.ai", "v1alpha1", "modelrollouts"
MERGE_PATCH = "application/merge-patch+json"

#: short enough to keep the tests fast, long enough not to race the emulator's poll
WATCH_SECONDS = 1
GRACE = 0.5
FAST = Backoff(first=0.05, factor=2.0, longest=0.2)


def rollout(name: str = "bot-v2", namespace: str = "llm", **spec: Any) -> dict[str, Any]:
    """The base policy as a ModelRollout object named `name` in `namespace`."""
    obj: dict[str, Any] = yaml.safe_load(BASE)
    obj["metadata"] = {"name": name, "namespace": namespace}
    obj["spec"].update(spec)
    return obj


def wait_for(what: str, check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Rollouts:
    """Creates, changes and deletes ModelRollouts through the real client, as kubectl would."""

    def __init__(self, kube: KubeApi, client: ApiClient) -> None:
        self.kube = kube
        self.api = CustomObjectsApi(client)

    def create(self, obj: dict[str, Any]) -> None:
        namespace = obj["metadata"]["namespace"]
        self.api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)

    def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=MERGE_PATCH
        )

    def delete(self, namespace: str, name: str) -> None:
        self.api.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def stored(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.kube.server.get(MODELROLLOUTS, namespace, name)

    def events(self) -> list[dict[str, Any]]:
        """Every Event stored on the server, oldest first."""
        return [
            dict(obj.raw)
            for (resource, _, _), obj in list(self.kube.server.objects.items())
            if resource.plural == "events" and not obj.deleted
        ]


# Imported by the test modules; named so that the test parameters do not shadow the imports.


@pytest.fixture(name="kube")
def kube_fixture() -> Iterator[KubeApi]:
    with KubeApi() as api:
        api.server.register(MODELROLLOUTS, "ModelRollout", subresources=("status",))
        yield api


@pytest.fixture(name="client")
def client_fixture(kube: KubeApi) -> Iterator[ApiClient]:
    api = kube.client()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(name="rollouts")
def rollouts_fixture(kube: KubeApi, client: ApiClient) -> Rollouts:
    return Rollouts(kube, client)


class Invalids(list[InvalidRollout]):
    def __call__(self, invalid: InvalidRollout) -> None:
        self.append(invalid)


def watching(
    client: ApiClient,
    namespace: str = "",
    on_invalid: Callable[[InvalidRollout], None] | None = None,
) -> KubernetesSource:
    """A source with short watches and fast backoff (stop it!)."""
    return KubernetesSource(
        client,
        namespace=namespace,
        watch_seconds=WATCH_SECONDS,
        grace_seconds=GRACE,
        request_timeout=2.0,
        backoff=FAST,
        on_invalid=on_invalid,
    )
