"""Fixtures: a fresh kmock API server per test, and a Cluster that does not really sleep."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.kube.cluster import Cluster, RetryPolicy
from tests.kube import KubeApi

#: a request that takes longer than this times out: long enough for a loaded 2-core CI
#: machine (0.5 s timed out there now and then, adding a retry the tests did not expect)
TIMEOUT = 2.0


class Sleeps(list[float]):
    """Records the backoff delays instead of sleeping them (the clock is ours in tests)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def kube() -> Iterator[KubeApi]:
    with KubeApi() as api:
        yield api


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def cluster(kube: KubeApi, sleeps: Sleeps) -> Iterator[Cluster]:
    client = kube.client()
    try:
        yield Cluster(client, timeout=TIMEOUT, retry=RetryPolicy(attempts=4), sleep=sleeps)
    finally:
        client.close()
