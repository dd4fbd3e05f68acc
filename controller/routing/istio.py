"""Istio: destination weights on the VirtualService routes that serve the baseline.

The http routes this router works on ("target routes") are those whose only
destination is the baseline Service (short name or FQDN). On each it splits
the destinations (baseline `TOTAL - weight`, candidate `weight`, a copy of the
baseline's destination with the candidate's host) and, for shadow traffic,
sets `mirror` to the candidate with `mirrorPercentage` (left out at 100%). A
cohort with its own weight gets a copy of the target route, its matches plus
the cohort's header match, placed right before the target route: Istio takes
the first route that matches, and placing it any earlier could take requests
from a more specific route of the user's.

A sticky header becomes a managed DestinationRule for the candidate's host
with a consistent hash on that header (`<route>-canary-sticky`), so a
conversation stays on one candidate pod. Two limits, documented in
docs/routing.md: the hash picks a pod *within* a version, while the split
between versions is per request (Envoy hashes after choosing the weighted
cluster), so a conversation can still move between versions while both have
weight; and no DestinationRule is created for the baseline's host, which
usually has one of its own already (Istio does not merge two).

What the router changes is recorded in the VirtualService in the
`canary.ai/route-snapshot` annotation, in the same write that changes it, so
`restore` works after a restart from the cluster alone.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from controller.kube.cluster import Cluster
from controller.kube.objects import DESTINATION_RULE, VIRTUAL_SERVICE, JsonObject, Reconciled
from controller.policy import HeaderMatch, RouterKind
from controller.policy.route import NEUTRAL, PROMOTED, TOTAL, RouteState
from controller.routing.base import (
    NotRoutedToBaselineError,
    OwnershipError,
    RouteChange,
    RouteNotFoundError,
    RouterBase,
    RouteTarget,
    UnsupportedRouteError,
    route_change,
)
from controller.routing.manifests import (
    check_fence,
    child_name,
    epoch_token,
    is_managed,
    managed_object,
    original_object,
    read_snapshot,
    write_snapshot,
)

log = logging.getLogger(__name__)


def sticky_rule_name(route: str) -> str:
    return child_name(route, "canary-sticky")


def _is_host(host: object, service: str, namespace: str) -> bool:
    """Whether a destination host names `service` in `namespace` (short name or FQDN)."""
    if not isinstance(host, str):
        return False
    return host in (service, f"{service}.{namespace}") or host.startswith(
        f"{service}.{namespace}.svc"
    )


def _destinations(http: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(http.get("route") or [])


def _host(dest: Mapping[str, Any]) -> object:
    return (dest.get("destination") or {}).get("host")


def _mirrors_to(http: Mapping[str, Any], service: str, namespace: str) -> bool:
    return _is_host((http.get("mirror") or {}).get("host"), service, namespace)


def _mentions(http: Mapping[str, Any], service: str, namespace: str) -> bool:
    return any(_is_host(_host(d), service, namespace) for d in _destinations(http)) or (
        _mirrors_to(http, service, namespace)
    )


def _is_target(http: Mapping[str, Any], target: RouteTarget) -> bool:
    dests = _destinations(http)
    return len(dests) == 1 and _is_host(_host(dests[0]), target.baseline, target.namespace)


def candidate_host(baseline_host: str, target: RouteTarget) -> str:
    """The candidate's host in the same form as the baseline's (`svc`, `svc.ns.svc...`)."""
    return target.candidate + baseline_host[len(target.baseline) :]


def header_condition(match: HeaderMatch) -> JsonObject:
    """A cohort's header match as an Istio StringMatch (regexes are RE2)."""
    if match.value is not None:
        return {"exact": match.value}
    if match.prefix is not None:
        return {"prefix": match.prefix}
    return {"regex": match.regex or ""}


def _with_header(matches: Sequence[Mapping[str, Any]] | None, match: HeaderMatch) -> list[Any]:
    name = match.header.lower()  # Istio only accepts lower-case header names
    out = []
    for m in matches or [{}]:
        headers = dict(m.get("headers") or {})
        if name in headers:
            raise UnsupportedRouteError(
                f"a route already matches header {name!r}; a cohort cannot add its own"
            )
        headers[name] = header_condition(match)
        out.append({**copy.deepcopy(dict(m)), "headers": headers})
    return out


def _candidate_destination(dest: Mapping[str, Any], target: RouteTarget) -> JsonObject:
    out = copy.deepcopy(dict(dest))
    destination = dict(out["destination"])
    destination["host"] = candidate_host(str(destination["host"]), target)
    destination.pop("subset", None)  # a subset belongs to the baseline host's DestinationRule
    out["destination"] = destination
    return out


def _routed(
    http: Mapping[str, Any], target: RouteTarget, share: int, mirror: int, *, split: bool = False
) -> JsonObject:
    """A target route (or a cohort's copy of it) sending `share` to the candidate."""
    out = copy.deepcopy(dict(http))
    dest = _destinations(http)[0]
    if share or split:
        out["route"] = [
            {**copy.deepcopy(dict(dest)), "weight": TOTAL - share},
            {**_candidate_destination(dest, target), "weight": share},
        ]
    if mirror:
        if "mirror" in http or "mirrors" in http:
            raise OwnershipError(
                f"a route of {VIRTUAL_SERVICE.ref(target.namespace, target.route)} already "
                "mirrors traffic; canary-controller will not replace it"
            )
        candidate = _candidate_destination(dest, target)["destination"]
        out["mirror"] = {k: v for k, v in candidate.items() if k in ("host", "port")}
        if mirror < TOTAL:
            out["mirrorPercentage"] = {"value": float(mirror)}
    return out


def original_service(vs: Mapping[str, Any], namespace: str) -> JsonObject:
    """The VirtualService without anything a router changed: what `restore` writes back."""
    return original_object(
        vs,
        namespace,
        rules="http",
        match="match",
        same_match=lambda m: m,
        mentions=_mentions,
        give_back=lambda http, saved, candidate: _given_back(http, saved, candidate, namespace),
        what="route of VirtualService",
    )


def _given_back(
    http: Mapping[str, Any], saved: Mapping[str, Any], candidate: str, namespace: str
) -> JsonObject:
    out = dict(http)
    out["route"] = copy.deepcopy(saved["route"])
    if _mirrors_to(http, candidate, namespace):
        out.pop("mirror", None)
        out.pop("mirrorPercentage", None)
    return out


def desired_service(
    vs: Mapping[str, Any], target: RouteTarget, state: RouteState, *, epoch: int | None = None
) -> JsonObject:
    """The VirtualService carrying `state`, built from the VirtualService as it is now; the
    snapshot records the writer's lease `epoch` (see `check_fence`)."""
    obj = original_service(vs, target.namespace)
    if not state.routes_anything:
        return obj
    routes: list[Mapping[str, Any]] = list((obj.get("spec") or {}).get("http") or [])
    targets = [i for i, http in enumerate(routes) if _is_target(http, target)]
    if not targets:
        _raise_not_routed(routes, target)
    out: list[Any] = []
    managed = []
    for i, http in enumerate(routes):
        if i not in targets:
            out.append(copy.deepcopy(dict(http)))
            continue
        for name, share in state.cohorts:
            # split even at 0%: the cohort's route always names the candidate, so it is
            # recognised as ours after a restart
            cohort = _routed(http, target, share, state.mirror_percent, split=True)
            cohort["match"] = _with_header(http.get("match"), target.cohort(name).match)
            base = f"{http['name']}-" if http.get("name") else ""
            cohort["name"] = f"{base}canary-{name}"
            out.append(cohort)
            managed.append(cohort["match"])
        out.append(_routed(http, target, state.weight, state.mirror_percent))
    obj["spec"]["http"] = out
    write_snapshot(
        obj,
        {
            "baseline": target.baseline,
            "candidate": target.candidate,
            "targets": [
                {"match": routes[i].get("match"), "route": routes[i].get("route")} for i in targets
            ],
            "managed": managed,
            **epoch_token(vs, epoch),
        },
    )
    return obj


def _raise_not_routed(routes: Sequence[Mapping[str, Any]], target: RouteTarget) -> None:
    ref = VIRTUAL_SERVICE.ref(target.namespace, target.route)
    for http in routes:
        if any(_is_host(_host(d), target.baseline, target.namespace) for d in _destinations(http)):
            raise UnsupportedRouteError(
                f"{ref} splits traffic between the baseline {target.baseline!r} and other "
                "destinations; canary-controller only routes http routes whose only "
                "destination is the baseline"
            )
    hosts = sorted({str(_host(d)) for http in routes for d in _destinations(http)})
    raise NotRoutedToBaselineError(
        f"{ref} has no http route sending traffic to the baseline Service {target.baseline!r} "
        f"(its destinations: {', '.join(hosts) or 'none'})"
    )


def promoted_service(vs: Mapping[str, Any], target: RouteTarget) -> JsonObject:
    """The original VirtualService with the candidate as the only destination of each target."""
    obj = original_service(vs, target.namespace)
    for http in (obj.get("spec") or {}).get("http") or []:
        if _is_target(http, target):
            http["route"] = [_candidate_destination(http["route"][0], target)]
    return obj


def desired_sticky_rule(
    current: JsonObject | None, target: RouteTarget, state: RouteState, host: str | None
) -> JsonObject | None:
    """The managed DestinationRule hashing on the sticky header (None: none is needed)."""
    name = sticky_rule_name(target.route)
    if current is not None and not is_managed(current, target.route):
        if not state.sticky_header:
            return current  # someone else's: never delete or change it
        raise OwnershipError(
            f"{DESTINATION_RULE.ref(target.namespace, name)} exists and is not managed by "
            "canary-controller; rename or remove it"
        )
    if not state.sticky_header or host is None:
        return None
    obj = managed_object(
        current,
        api_version=DESTINATION_RULE.api_version,
        kind=DESTINATION_RULE.kind,
        namespace=target.namespace,
        name=name,
        managed_labels=target.managed_labels(),
        owner=target.owner.to_json() if target.owner else None,
    )
    obj["spec"] = {
        "host": host,
        "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": state.sticky_header}}
        },
    }
    return obj


def _candidate_share(http: Mapping[str, Any], target: RouteTarget) -> int:
    dests = _destinations(http)
    default = TOTAL if len(dests) == 1 else 0
    total = sum(int(d.get("weight", default)) for d in dests)
    ours = sum(
        int(d.get("weight", default))
        for d in dests
        if _is_host(_host(d), target.candidate, target.namespace)
    )
    return round(ours * TOTAL / total) if total else 0


def _mirror_share(http: Mapping[str, Any], target: RouteTarget) -> int:
    if not _mirrors_to(http, target.candidate, target.namespace):
        return 0
    return round(float((http.get("mirrorPercentage") or {}).get("value", TOTAL)))


def observed_state(
    vs: Mapping[str, Any], rule: Mapping[str, Any] | None, target: RouteTarget
) -> RouteState:
    """The state a VirtualService (and the sticky DestinationRule, if any) carry."""
    snapshot = read_snapshot(vs) or {}
    managed = list(snapshot.get("managed") or [])
    weight: int | None = None
    mirror = 0
    cohorts: dict[str, int] = {}
    for http in (vs.get("spec") or {}).get("http") or []:
        match = http.get("match")
        if managed and match in managed:
            headers = ((match or [{}])[0]).get("headers") or {}
            for cohort in target.cohorts:
                found = headers.get(cohort.match.header.lower())
                if found == header_condition(cohort.match) and cohort.name not in cohorts:
                    cohorts[cohort.name] = _candidate_share(http, target)
        elif weight is None and any(
            _is_host(_host(d), target.baseline, target.namespace) for d in _destinations(http)
        ):
            weight = _candidate_share(http, target)
            mirror = _mirror_share(http, target)
    if weight is None:
        raise NotRoutedToBaselineError(
            f"{VIRTUAL_SERVICE.ref(target.namespace, target.route)} has no http route sending "
            f"traffic to the baseline Service {target.baseline!r}"
        )
    sticky = None
    if rule is not None and is_managed(rule, target.route):
        lb = ((rule.get("spec") or {}).get("trafficPolicy") or {}).get("loadBalancer") or {}
        sticky = (lb.get("consistentHash") or {}).get("httpHeaderName")
    return RouteState(weight, cohorts, mirror, sticky)


def _baseline_host(vs: Mapping[str, Any], target: RouteTarget) -> str | None:
    for http in (vs.get("spec") or {}).get("http") or []:
        for dest in _destinations(http):
            host = _host(dest)
            if _is_host(host, target.baseline, target.namespace):
                return str(host)
    return None


class IstioRouter(RouterBase):
    """Routes by destination weights and header-matched routes on a VirtualService."""

    KIND = RouterKind.ISTIO

    def __init__(self, target: RouteTarget, cluster: Cluster) -> None:
        super().__init__(target)
        self.cluster = cluster
        self._ref = VIRTUAL_SERVICE.ref(target.namespace, target.route)

    def _missing(self) -> RouteNotFoundError:
        return RouteNotFoundError(
            f"{self._ref} not found: traffic.route must name the VirtualService that serves "
            "the model, in the rollout's namespace"
        )

    def observe(self) -> RouteState:
        t = self.target
        vs = self.cluster.get(VIRTUAL_SERVICE, t.namespace, t.route)
        if vs is None:
            raise self._missing()
        rule = self.cluster.get(DESTINATION_RULE, t.namespace, sticky_rule_name(t.route))
        return observed_state(vs, rule, t)

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        state = self.supported(desired)
        t = self.target

        def build(current: JsonObject | None) -> JsonObject:
            if current is None:
                raise self._missing()
            if state.routes_anything:
                check_fence(current, epoch, self._ref)
            return desired_service(current, t, state, epoch=epoch)

        routed = self.cluster.reconcile(VIRTUAL_SERVICE, t.namespace, t.route, build)
        assert routed.object is not None
        baseline_host = _baseline_host(routed.object, t)
        host = candidate_host(baseline_host, t) if baseline_host else None
        sticky = self._reconcile_sticky(state, host)
        return route_change(observed_state(routed.object, sticky.object, t), routed, sticky)

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        t = self.target

        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                if promote:
                    raise self._missing()
                log.warning("%s is gone; nothing to give back", self._ref)
                return None
            if promote:
                check_fence(current, epoch, self._ref)
                return promoted_service(current, t)
            return original_service(current, t.namespace)

        routed = self.cluster.reconcile(VIRTUAL_SERVICE, t.namespace, t.route, build)
        sticky = self._reconcile_sticky(NEUTRAL, None)
        return route_change(PROMOTED if promote else NEUTRAL, routed, sticky)

    def _reconcile_sticky(self, state: RouteState, host: str | None) -> Reconciled:
        t = self.target
        return self.cluster.reconcile(
            DESTINATION_RULE,
            t.namespace,
            sticky_rule_name(t.route),
            lambda current: desired_sticky_rule(current, t, state, host),
        )
