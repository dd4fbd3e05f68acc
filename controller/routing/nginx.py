"""NGINX ingress (ingress-nginx): a canary Ingress beside the stable one.

ingress-nginx splits traffic between a stable Ingress and one canary Ingress
for the same host and path, annotated `nginx.ingress.kubernetes.io/canary`.
This router derives that canary Ingress from the stable one named by the
policy (same class, hosts, TLS and paths, but only the paths whose backend is
the baseline Service, switched to the candidate), and moves `canary-weight`
(out of `canary-weight-total: 100`). One cohort at a time can be sent wholly
to the candidate by header (`canary-by-header` plus `-value`, or `-pattern`,
PCRE); nginx cannot give a cohort its own weight. Shadow traffic uses
`mirror-target` on the *stable* Ingress, because ingress-nginx ignores every
non-canary annotation on a canary Ingress; it mirrors every request or none.

The stable Ingress is left alone except for that mirror annotation (recorded
in a snapshot annotation so it is recognised after a restart, and refused if
someone else's mirror-target is already there) and, on promotion, its
baseline backends, which then name the candidate. The canary Ingress is
labelled as managed, owned by the ModelRollout, and deleted when the rollout
ends: before the stable Ingress is touched on a rollback (traffic leaves the
candidate first), after it on a promotion (traffic never goes back to the
baseline in between).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from controller.kube.cluster import Cluster
from controller.kube.objects import INGRESS, JsonObject, Reconciled
from controller.policy import RouterKind
from controller.policy.route import NEUTRAL, PROMOTED, TOTAL, RouteState
from controller.routing.base import (
    SNAPSHOT_ANNOTATION,
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
    annotations_of,
    check_fence,
    child_name,
    epoch_token,
    header_regex,
    is_managed,
    managed_object,
    read_snapshot,
    set_annotations,
    write_snapshot,
)

PREFIX = "nginx.ingress.kubernetes.io/"
CANARY = PREFIX + "canary"
CANARY_WEIGHT = PREFIX + "canary-weight"
CANARY_WEIGHT_TOTAL = PREFIX + "canary-weight-total"
CANARY_BY_HEADER = PREFIX + "canary-by-header"
CANARY_BY_HEADER_VALUE = PREFIX + "canary-by-header-value"
CANARY_BY_HEADER_PATTERN = PREFIX + "canary-by-header-pattern"
MIRROR_TARGET = PREFIX + "mirror-target"
#: the annotations this router owns on the canary Ingress
CANARY_ANNOTATIONS = (
    CANARY,
    CANARY_WEIGHT,
    CANARY_WEIGHT_TOTAL,
    CANARY_BY_HEADER,
    CANARY_BY_HEADER_VALUE,
    CANARY_BY_HEADER_PATTERN,
)
#: the class annotation older Ingresses use instead of spec.ingressClassName
LEGACY_CLASS = "kubernetes.io/ingress.class"

log = logging.getLogger(__name__)


def canary_name(route: str) -> str:
    return child_name(route, "canary")


def _service(backend: Mapping[str, Any] | None) -> str | None:
    name = ((backend or {}).get("service") or {}).get("name")
    return str(name) if name is not None else None


def _paths(spec: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [
        path
        for rule in spec.get("rules") or []
        for path in (rule.get("http") or {}).get("paths") or []
    ]


def _backends(spec: Mapping[str, Any]) -> list[str]:
    found = [_service(p.get("backend")) for p in _paths(spec)]
    found.append(_service(spec.get("defaultBackend")))
    return sorted({s for s in found if s})


def check_stable(stable: Mapping[str, Any], target: RouteTarget) -> None:
    """Refuse an Ingress that is a canary itself or sends nothing to the baseline."""
    ref = INGRESS.ref(target.namespace, target.route)
    if annotations_of(stable).get(CANARY) == "true":
        raise UnsupportedRouteError(
            f"{ref} is itself a canary Ingress ({CANARY}); traffic.route must name the stable one"
        )
    backends = _backends(stable.get("spec") or {})
    if target.baseline not in backends:
        raise NotRoutedToBaselineError(
            f"{ref} sends no traffic to the baseline Service {target.baseline!r} "
            f"(its backends: {', '.join(backends) or 'none'})"
        )


def _switch(backend: Mapping[str, Any], service: str) -> JsonObject:
    switched = copy.deepcopy(dict(backend))
    switched["service"] = {**switched["service"], "name": service}
    return switched


def _switched_spec(spec: Mapping[str, Any], old: str, new: str, *, keep_others: bool) -> JsonObject:
    """`spec` with backends on Service `old` switched to `new`; other paths dropped unless kept."""
    out: JsonObject = {}
    for key, value in spec.items():
        if key == "defaultBackend":
            if _service(value) == old:
                out[key] = _switch(value, new)
            elif keep_others:
                out[key] = copy.deepcopy(value)
        elif key == "rules":
            rules = []
            for rule in value or []:
                http = rule.get("http")
                if http is None:
                    if keep_others:
                        rules.append(copy.deepcopy(rule))
                    continue
                paths = [
                    {**copy.deepcopy(p), "backend": _switch(p["backend"], new)}
                    if _service(p.get("backend")) == old
                    else copy.deepcopy(p)
                    for p in http.get("paths") or []
                    if keep_others or _service(p.get("backend")) == old
                ]
                if paths:
                    rules.append({**copy.deepcopy(rule), "http": {**http, "paths": paths}})
            out[key] = rules
        else:
            out[key] = copy.deepcopy(value)
    return out


def desired_canary(
    current: JsonObject | None,
    stable: Mapping[str, Any],
    target: RouteTarget,
    state: RouteState,
    *,
    epoch: int | None = None,
) -> JsonObject | None:
    """The canary Ingress for `state` (None: none is needed), derived from the stable Ingress;
    its snapshot annotation records the writer's lease `epoch` (see `check_fence`)."""
    name = canary_name(target.route)
    if current is not None and not is_managed(current, target.route):
        if state.weight == 0 and not state.cohorts:
            return current  # someone else's Ingress: never delete or change it
        raise OwnershipError(
            f"{INGRESS.ref(target.namespace, name)} exists and is not managed by "
            "canary-controller; rename or remove it"
        )
    if state.weight == 0 and not state.cohorts:
        return None
    obj = managed_object(
        current,
        api_version=INGRESS.api_version,
        kind=INGRESS.kind,
        namespace=target.namespace,
        name=name,
        managed_labels=target.managed_labels(),
        owner=target.owner.to_json() if target.owner else None,
    )
    values = {k: v for k, v in annotations_of(obj).items() if k not in CANARY_ANNOTATIONS}
    legacy_class = annotations_of(stable).get(LEGACY_CLASS)
    if legacy_class is not None:
        values[LEGACY_CLASS] = legacy_class
    values[CANARY] = "true"
    values[CANARY_WEIGHT] = str(state.weight)
    values[CANARY_WEIGHT_TOTAL] = str(TOTAL)
    for cohort_name, _ in state.cohorts:  # at most one (supported_state)
        match = target.cohort(cohort_name).match
        values[CANARY_BY_HEADER] = match.header
        if match.value is not None:
            values[CANARY_BY_HEADER_VALUE] = match.value
        else:
            values[CANARY_BY_HEADER_PATTERN] = header_regex(match) or ""
    set_annotations(obj, values)
    write_snapshot(obj, epoch_token(current, epoch) or None)
    obj["spec"] = _switched_spec(
        stable.get("spec") or {}, target.baseline, target.candidate, keep_others=False
    )
    return obj


def mirror_target(stable: Mapping[str, Any], target: RouteTarget, cluster_domain: str) -> str:
    """The URL ingress-nginx mirrors to: the candidate Service on the baseline's port."""
    for path in _paths(stable.get("spec") or {}):
        backend = path.get("backend")
        if _service(backend) == target.baseline:
            port = (backend or {}).get("service", {}).get("port", {}).get("number")
            if port is None:
                raise UnsupportedRouteError(
                    f"{INGRESS.ref(target.namespace, target.route)} names the baseline's port "
                    "by name; shadow traffic through mirror-target needs its number"
                )
            host = f"{target.candidate}.{target.namespace}.svc.{cluster_domain}"
            return f"http://{host}:{port}$request_uri"
    raise NotRoutedToBaselineError(
        f"{INGRESS.ref(target.namespace, target.route)} has no path to the baseline "
        f"Service {target.baseline!r} to mirror"
    )


def desired_stable(
    current: JsonObject,
    target: RouteTarget,
    state: RouteState,
    *,
    cluster_domain: str,
    promote: bool = False,
    epoch: int | None = None,
) -> JsonObject:
    """The stable Ingress: as it was, plus our mirror-target while mirroring (its snapshot
    records the writer's lease `epoch`); on promotion, with its baseline backends switched
    to the candidate."""
    obj = copy.deepcopy(current)
    snapshot = read_snapshot(current)
    values = annotations_of(obj)
    values.pop(SNAPSHOT_ANNOTATION, None)
    if snapshot is not None and values.get(MIRROR_TARGET) == snapshot.get("mirrorTarget"):
        values.pop(MIRROR_TARGET)
    set_annotations(obj, values)
    if state.mirror_percent:
        ours = mirror_target(current, target, cluster_domain)
        theirs = values.get(MIRROR_TARGET)
        if theirs is not None and theirs != ours:
            raise OwnershipError(
                f"{INGRESS.ref(target.namespace, target.route)} already mirrors to {theirs} "
                f"({MIRROR_TARGET}); canary-controller will not replace it"
            )
        set_annotations(obj, {**values, MIRROR_TARGET: ours})
        write_snapshot(
            obj,
            {"candidate": target.candidate, "mirrorTarget": ours, **epoch_token(current, epoch)},
        )
    if promote:
        obj["spec"] = _switched_spec(
            obj.get("spec") or {}, target.baseline, target.candidate, keep_others=True
        )
    return obj


def _int(value: object, default: int = 0) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


def observed_state(
    stable: Mapping[str, Any], canary: Mapping[str, Any] | None, target: RouteTarget
) -> RouteState:
    """The state the two Ingresses carry."""
    weight, cohorts = 0, {}
    if canary is not None and annotations_of(canary).get(CANARY) == "true":
        values = annotations_of(canary)
        total = _int(values.get(CANARY_WEIGHT_TOTAL), TOTAL) or TOTAL
        weight = min(TOTAL, round(_int(values.get(CANARY_WEIGHT)) * TOTAL / total))
        header = values.get(CANARY_BY_HEADER)
        for cohort in target.cohorts:
            match = cohort.match
            if header is None or header.lower() != match.header.lower():
                continue
            if match.value is not None:
                routed = values.get(CANARY_BY_HEADER_VALUE) == match.value
            else:
                routed = values.get(CANARY_BY_HEADER_PATTERN) == header_regex(match)
            if routed:
                cohorts[cohort.name] = TOTAL
    snapshot = read_snapshot(stable)
    ours = snapshot is not None and annotations_of(stable).get(MIRROR_TARGET) == snapshot.get(
        "mirrorTarget"
    )
    return RouteState(weight, cohorts, TOTAL if ours else 0)


class NginxRouter(RouterBase):
    """Routes through a managed canary Ingress beside the stable Ingress."""

    KIND = RouterKind.NGINX_INGRESS

    def __init__(
        self, target: RouteTarget, cluster: Cluster, *, cluster_domain: str = "cluster.local"
    ) -> None:
        super().__init__(target)
        self.cluster = cluster
        self.cluster_domain = cluster_domain
        self._ref = INGRESS.ref(target.namespace, target.route)

    def _stable(self) -> JsonObject:
        t = self.target
        stable = self.cluster.get(INGRESS, t.namespace, t.route)
        if stable is None:
            raise RouteNotFoundError(
                f"{INGRESS.ref(t.namespace, t.route)} not found: traffic.route must name "
                "the stable Ingress of the model, in the rollout's namespace"
            )
        check_stable(stable, t)
        return stable

    def observe(self) -> RouteState:
        stable = self._stable()
        canary = self.cluster.get(INGRESS, self.target.namespace, canary_name(self.target.route))
        return observed_state(stable, canary, self.target)

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        state = self.supported(desired)
        t = self.target
        stable = self._stable()
        if state.routes_anything:
            check_fence(stable, epoch, self._ref)
        canary = self._reconcile_canary(stable, state, epoch)
        routed = self.cluster.reconcile(
            INGRESS,
            t.namespace,
            t.route,
            lambda current: self._stable_for(current, state, epoch=epoch),
        )
        assert routed.object is not None
        return route_change(observed_state(routed.object, canary.object, t), canary, routed)

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        t = self.target
        if promote:
            canary_ref = INGRESS.ref(t.namespace, canary_name(t.route))
            check_fence(
                self.cluster.get(INGRESS, t.namespace, canary_name(t.route)), epoch, canary_ref
            )
            routed = self.cluster.reconcile(
                INGRESS,
                t.namespace,
                t.route,
                lambda current: self._stable_for(
                    current, NEUTRAL, promote=True, restoring=True, epoch=epoch
                ),
            )
            canary = self._reconcile_canary(routed.object, NEUTRAL)
        else:
            canary = self._reconcile_canary(None, NEUTRAL)
            routed = self.cluster.reconcile(
                INGRESS,
                t.namespace,
                t.route,
                lambda current: self._stable_for(current, NEUTRAL, restoring=True),
            )
        return route_change(PROMOTED if promote else NEUTRAL, canary, routed)

    def _stable_for(
        self,
        current: JsonObject | None,
        state: RouteState,
        *,
        promote: bool = False,
        restoring: bool = False,
        epoch: int | None = None,
    ) -> JsonObject | None:
        if current is None:
            if restoring and not promote:
                log.warning("%s is gone; nothing to give back", self._ref)
                return None
            raise RouteNotFoundError(f"{self._ref} not found")
        if state.routes_anything:
            check_stable(current, self.target)
        if state.routes_anything or promote:
            check_fence(current, epoch, self._ref)
        return desired_stable(
            current,
            self.target,
            state,
            cluster_domain=self.cluster_domain,
            promote=promote,
            epoch=epoch,
        )

    def _reconcile_canary(
        self, stable: JsonObject | None, state: RouteState, epoch: int | None = None
    ) -> Reconciled:
        t = self.target

        def build(current: JsonObject | None) -> JsonObject | None:
            if state.weight or state.cohorts:
                check_fence(current, epoch, INGRESS.ref(t.namespace, canary_name(t.route)))
            return desired_canary(current, stable or {}, t, state, epoch=epoch)

        return self.cluster.reconcile(INGRESS, t.namespace, canary_name(t.route), build)
