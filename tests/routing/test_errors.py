"""Clear errors, never a traceback: what is wrong and whether retrying can help.

Permanent: the route is missing, does not point at the baseline, its API (CRD)
is not installed, RBAC forbids a verb (named with the resource), the API server
refuses the object. Transient, retried with bounded backoff first: 5xx,
timeouts, an unreachable API server.
"""

from __future__ import annotations

import copy
import socket

import pytest

from controller.errors import PermanentError, TransientError
from controller.kube.cluster import Cluster, RetryPolicy
from controller.policy import RouterKind
from controller.routing import (
    ApiNotInstalledError,
    ApiUnavailableError,
    ForbiddenError,
    NotRoutedToBaselineError,
    RejectedError,
    RouteNotFoundError,
    RouteState,
)
from tests.kube import KubeApi, Slow
from tests.routing.cases import BASELINE, CASES, NAMESPACE, ROUTE, STICKY, rollout, target
from tests.routing.conftest import TIMEOUT, Sleeps

KINDS = [pytest.param(kind, id=str(kind)) for kind in CASES]
CRDS = [pytest.param(kind, id=str(kind)) for kind in (RouterKind.GATEWAY_API, RouterKind.ISTIO)]


def _step(kind: RouterKind) -> RouteState:
    return rollout(kind)[2][1]  # 5%, sticky where supported


@pytest.mark.parametrize("kind", KINDS)
def test_a_missing_route_is_a_permanent_error_naming_it(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    for path, resource_kind in case.apis:
        kube.server.register(path, resource_kind)
    router = case.make(target(), cluster)

    for call in (router.observe, lambda: router.apply(_step(kind))):
        with pytest.raises(RouteNotFoundError, match=f"{case.route_kind} {NAMESPACE}/{ROUTE}"):
            call()
    assert not router.restore().changed  # nothing to give back is not an error
    assert kube.server.writes() == []
    with pytest.raises(RouteNotFoundError):
        router.restore(promote=True)


def _pointing_elsewhere(kind: RouterKind) -> dict[str, object]:
    route = copy.deepcopy(CASES[kind].original)
    text = repr(route).replace(f"'{BASELINE}", "'support-bot-v5")
    return eval(text)  # the same route, with the baseline Service renamed everywhere


@pytest.mark.parametrize("kind", KINDS)
def test_a_route_not_sending_traffic_to_the_baseline_is_refused(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server, route=_pointing_elsewhere(kind))
    router = case.make(target(), cluster)

    with pytest.raises(NotRoutedToBaselineError, match=f"baseline Service '{BASELINE}'"):
        router.apply(_step(kind))
    with pytest.raises(NotRoutedToBaselineError, match="support-bot-v5"):
        router.apply(_step(kind))
    with pytest.raises(NotRoutedToBaselineError):
        router.observe()
    assert kube.server.writes() == []


@pytest.mark.parametrize("kind", CRDS)
def test_an_api_that_is_not_installed_is_named(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    router = case.make(target(), cluster)
    group = case.route_path.split("/")[0]

    for call in (router.observe, lambda: router.apply(_step(kind)), router.restore):
        with pytest.raises(ApiNotInstalledError, match=f"{case.route_kind} API \\({group}/v1"):
            call()
    assert kube.server.writes() == []


@pytest.mark.parametrize(
    ("kind", "method", "plural", "name", "verb"),
    [
        *[
            pytest.param(kind, "GET", CASES[kind].plural, ROUTE, "get", id=f"{kind}-get")
            for kind in CASES
        ],
        pytest.param(
            RouterKind.GATEWAY_API, "PATCH", "httproutes", ROUTE, "patch", id="gateway-api-patch"
        ),
        pytest.param(
            RouterKind.ISTIO, "PATCH", "virtualservices", ROUTE, "patch", id="istio-patch"
        ),
        pytest.param(
            RouterKind.ISTIO, "POST", "destinationrules", None, "create", id="istio-create"
        ),
        pytest.param(
            RouterKind.NGINX_INGRESS, "POST", "ingresses", None, "create", id="nginx-create"
        ),
    ],
)
def test_rbac_forbidden_names_the_verb_and_the_resource(
    kube: KubeApi,
    cluster: Cluster,
    kind: RouterKind,
    method: str,
    plural: str,
    name: str | None,
    verb: str,
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail(method, plural, name, 403)

    with pytest.raises(ForbiddenError) as raised:
        router.apply(RouteState(5, {}, 0, STICKY))

    error = raised.value
    assert isinstance(error, PermanentError)
    resource = next(p for p, _ in (*case.apis,) if p.endswith(f"/{plural}"))
    group = resource.split("/")[0]
    assert (error.verb, error.resource, error.namespace) == (verb, f"{plural}.{group}", NAMESPACE)
    assert f"RBAC forbids the controller to {verb} {plural}.{group}" in str(error)


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_are_retried_with_backoff(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("GET", case.plural, ROUTE, 500, 503)

    change = router.apply(_step(kind))

    assert change.state.weight == 5
    assert sleeps == [0.2, 0.4]


@pytest.mark.parametrize("kind", KINDS)
def test_server_errors_that_last_are_transient_errors(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("GET", case.plural, ROUTE, *[500] * 4)

    with pytest.raises(ApiUnavailableError, match=r"failed 4 times.*HTTP 500") as raised:
        router.observe()

    assert isinstance(raised.value, TransientError)
    assert raised.value.retry_after is not None
    assert sleeps == [0.2, 0.4, 0.8]


@pytest.mark.parametrize("kind", KINDS)
def test_a_slow_read_times_out_and_is_retried(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("GET", case.plural, ROUTE, Slow(TIMEOUT * 2))

    assert router.apply(_step(kind)).state.weight == 5
    assert sleeps == [0.2]


@pytest.mark.parametrize("kind", CRDS)
def test_a_write_that_landed_but_timed_out_is_not_done_twice(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    """The patch is applied but its answer is late: the retry carries a stale
    resourceVersion, gets 409, reads again and finds nothing left to do."""
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("PATCH", case.plural, ROUTE, Slow(TIMEOUT * 2))

    change = router.apply(RouteState(5))

    assert router.observe() == RouteState(5)
    assert change.state == RouteState(5)
    assert change.changed  # the write landed, though its answer was lost
    route = kube.server.objects[case.route_path, NAMESPACE, ROUTE]
    versions = [v for v in route.history if v is not None]
    assert len(versions) == 2, "created, then patched once"


def test_an_unreachable_api_server_is_a_transient_error(sleeps: Sleeps) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from kubernetes.client import ApiClient, Configuration

    config = Configuration(host=f"http://127.0.0.1:{port}")
    config.retries = 0
    with ApiClient(config) as client:
        cluster = Cluster(client, timeout=TIMEOUT, retry=RetryPolicy(attempts=2), sleep=sleeps)
        router = CASES[RouterKind.GATEWAY_API].make(target(), cluster)
        with pytest.raises(ApiUnavailableError, match=r"unavailable.*(Connection|refused)"):
            router.apply(RouteState(5))
    assert sleeps == [0.2]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(422, "refused to patch HTTPRoute llm/support-bot \\(HTTP 422\\)", id="422"),
        pytest.param(401, "did not accept the controller's credentials", id="401"),
    ],
)
def test_a_refused_write_is_a_permanent_error_with_the_servers_reason(
    kube: KubeApi, cluster: Cluster, status: int, expected: str
) -> None:
    case = CASES[RouterKind.GATEWAY_API]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("PATCH", "httproutes", ROUTE, status)

    with pytest.raises(RejectedError, match=expected):
        router.apply(RouteState(5))


def test_retry_after_from_the_server_stretches_the_backoff() -> None:
    policy = RetryPolicy(attempts=3, initial_delay=0.1, max_delay=2.0)
    assert policy.delay(0) == 0.1
    assert policy.delay(3) == 0.8
    assert policy.delay(0, retry_after=1.5) == 1.5
    assert policy.delay(0, retry_after=30) == 2.0


@pytest.mark.parametrize("kind", KINDS)
def test_a_404_on_a_write_is_read_again_and_retried(
    kube: KubeApi, cluster: Cluster, sleeps: Sleeps, kind: RouterKind
) -> None:
    """The object seemed gone when written (a delete and re-create in between): the router
    reads it again and writes what the fresh object needs."""
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    state = rollout(kind)[0][1]  # shadow: patches the route itself for every router
    kube.server.fail("PATCH", case.plural, ROUTE, 404)

    assert router.apply(state).state.mirror_percent == state.mirror_percent
    assert router.observe().mirror_percent == state.mirror_percent
    assert sleeps == [0.2]


@pytest.mark.parametrize("kind", KINDS)
def test_a_404_on_a_read_of_an_installed_api_is_a_missing_route(
    kube: KubeApi, cluster: Cluster, kind: RouterKind
) -> None:
    case = CASES[kind]
    case.install(kube.server)
    router = case.make(target(), cluster)
    kube.server.fail("GET", case.plural, ROUTE, 404)

    with pytest.raises(RouteNotFoundError, match="not found"):
        router.observe()
    assert router.observe() == RouteState()


def test_every_retry_is_reported_for_the_controllers_metrics(kube: KubeApi) -> None:
    case = CASES[RouterKind.GATEWAY_API]
    case.install(kube.server)
    retries: list[tuple[str, str]] = []
    kube.server.fail("GET", "httproutes", ROUTE, 503)
    kube.server.fail("PATCH", "httproutes", ROUTE, 409)
    with kube.client() as client:
        cluster = Cluster(
            client,
            timeout=TIMEOUT,
            sleep=lambda _: None,
            on_retry=lambda kind, reason: retries.append((kind.kind, reason)),
        )
        case.make(target(), cluster).apply(RouteState(5))
    assert retries == [("HTTPRoute", "unavailable"), ("HTTPRoute", "conflict")]
