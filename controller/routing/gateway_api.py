"""Gateway API: weighted backendRefs on the HTTPRoute rules that serve the baseline.

The rules this router works on ("target rules") are those whose only backend
is the baseline Service. On each it splits the backends (baseline
`TOTAL - weight`, candidate `weight`, a copy of the baseline's ref with the
candidate's name) and, for shadow traffic, adds a `RequestMirror` filter to the
candidate (with `percent` below 100: standard since Gateway API v1.3,
GEP-3171). A cohort with its own weight gets one more rule per target rule,
appended at the end: the target's rule with each of its matches plus the
cohort's header match, which Gateway API ranks above the target rule (more
header matches win), and its own split.

Everything else on the route (other rules, parentRefs, hostnames, filters,
timeouts, annotations, status) is never touched. What the router changes is
recorded in the route itself, in the `canary.ai/route-snapshot` annotation, in
the same write that changes it: the target rules' original backendRefs (keyed
by their matches) and the matches of the cohort rules it added. A restarted
controller gives the route back from that alone; a rule edited by someone
else during the rollout is kept as they left it.

The API server stores an HTTPRoute with its CRD's schema defaults filled in
(`weight: 1`, `group: ""` and `kind: Service` on backendRefs, a `PathPrefix /`
match on a rule without one, ...), so what is read back never equals what was
written field for field. Every comparison (is there anything to write? which
saved rule is this? is this one of our cohort rules?) is therefore made on
`with_defaults` of both sides: the router writes only on a real change.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from controller.kube.cluster import Cluster
from controller.kube.objects import HTTP_ROUTE, JsonObject
from controller.policy import HeaderMatch, RouterKind
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
    check_fence,
    epoch_token,
    escape_regex,
    original_object,
    read_snapshot,
    write_snapshot,
)

log = logging.getLogger(__name__)

#: HTTPRoute's own limit on spec.rules (the API server rejects more)
MAX_RULES = 16
MIRROR = "RequestMirror"


#: the match a rule without `matches` gets (and a match without `path`)
DEFAULT_PATH: JsonObject = {"type": "PathPrefix", "value": "/"}


def _default_ref(ref: Mapping[str, Any], *, weighted: bool) -> JsonObject:
    out = {"group": "", "kind": "Service", **ref}
    if weighted:
        out.setdefault("weight", 1)
    return out


def _default_filters(filters: Sequence[Mapping[str, Any]]) -> list[JsonObject]:
    out: list[JsonObject] = []
    for given in filters:
        flt = copy.deepcopy(dict(given))
        mirror = flt.get("requestMirror")
        if isinstance(mirror, dict) and isinstance(mirror.get("backendRef"), Mapping):
            mirror["backendRef"] = _default_ref(mirror["backendRef"], weighted=False)
        redirect = flt.get("requestRedirect")
        if isinstance(redirect, dict):
            redirect.setdefault("statusCode", 302)
        out.append(flt)
    return out


def default_matches(matches: Sequence[Mapping[str, Any]] | None) -> list[JsonObject]:
    """A rule's matches with the defaults the API server fills in (see `with_defaults`)."""
    out = []
    for match in [{}] if matches is None else matches:
        m = copy.deepcopy(dict(match))
        m["path"] = {**DEFAULT_PATH, **(m.get("path") or {})}
        for key in ("headers", "queryParams"):
            if key in m:
                m[key] = [{"type": "Exact", **h} for h in m[key] or []]
        out.append(m)
    return out


def with_defaults(spec: Mapping[str, Any]) -> JsonObject:
    """An HTTPRoute spec as the API server stores it, with the Gateway API v1 CRD's
    schema defaults applied (pure; the argument is not changed):

    - `parentRefs[]`: `group: gateway.networking.k8s.io`, `kind: Gateway`;
    - `rules` absent: one rule matching `PathPrefix /`; `rules[].matches` absent:
      `[{path: {type: PathPrefix, value: /}}]`; a match's `path` absent: the same,
      `path.type`: PathPrefix, `path.value`: `/`;
    - `headers[].type` and `queryParams[].type` of a match: Exact;
    - `backendRefs[]` (a rule's, and a RequestMirror filter's): `group: ""`,
      `kind: Service`; a rule's `backendRefs[].weight`: 1;
    - `requestRedirect.statusCode`: 302.

    Both sides of a comparison go through it, so a default written out and one
    left to the server compare equal. `port` has no default (it is required for
    a Service, and validation, not defaulting, enforces that).
    """
    out = copy.deepcopy(dict(spec))
    if "parentRefs" in out:
        out["parentRefs"] = [
            {"group": "gateway.networking.k8s.io", "kind": "Gateway", **p}
            for p in out["parentRefs"] or []
        ]
    rules = out.get("rules")
    out["rules"] = [_default_rule(rule) for rule in ([{}] if rules is None else rules)]
    return out


def _default_rule(rule: Mapping[str, Any]) -> JsonObject:
    out = copy.deepcopy(dict(rule))
    out["matches"] = default_matches(rule.get("matches"))
    if "filters" in out:
        out["filters"] = _default_filters(out["filters"] or [])
    if "backendRefs" in out:
        refs = []
        for given in out["backendRefs"] or []:
            ref = _default_ref(given, weighted=True)
            if "filters" in ref:
                ref["filters"] = _default_filters(ref["filters"] or [])
            refs.append(ref)
        out["backendRefs"] = refs
    return out


def same_route(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two HTTPRoutes are the same once the API server's defaults are applied.

    The snapshot annotation is compared by what it says, not as text: the rules
    saved in it were read from the server, whose key order and defaults may
    differ from those of the route it was first written from.
    """
    return _semantic(a) == _semantic(b)


def _semantic(obj: Mapping[str, Any]) -> JsonObject:
    out = {**obj, "spec": with_defaults(obj.get("spec") or {})}
    snapshot = read_snapshot(obj)
    if snapshot is not None:
        meta = dict(obj.get("metadata") or {})
        annotations = {**(meta.get("annotations") or {})}
        annotations[SNAPSHOT_ANNOTATION] = {
            **snapshot,
            "targets": [
                {
                    **t,
                    "matches": default_matches(t.get("matches")),
                    "backendRefs": [
                        _default_ref(r, weighted=True) for r in t.get("backendRefs") or []
                    ],
                }
                for t in snapshot.get("targets") or []
            ],
            "managed": [default_matches(m) for m in snapshot.get("managed") or []],
        }
        out["metadata"] = {**meta, "annotations": annotations}
    return out


def _points_at(ref: Mapping[str, Any], service: str, namespace: str) -> bool:
    return (
        ref.get("group", "") in ("", "core")
        and ref.get("kind", "Service") == "Service"
        and ref.get("name") == service
        and ref.get("namespace", namespace) == namespace
    )


def _mirrors_to(flt: Mapping[str, Any], service: str, namespace: str) -> bool:
    if flt.get("type") != MIRROR:
        return False
    return _points_at((flt.get("requestMirror") or {}).get("backendRef") or {}, service, namespace)


def _refs(rule: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(rule.get("backendRefs") or [])


def _mentions(rule: Mapping[str, Any], service: str, namespace: str) -> bool:
    return any(_points_at(r, service, namespace) for r in _refs(rule)) or any(
        _mirrors_to(f, service, namespace) for f in rule.get("filters") or []
    )


def _is_target(rule: Mapping[str, Any], target: RouteTarget) -> bool:
    refs = _refs(rule)
    return len(refs) == 1 and _points_at(refs[0], target.baseline, target.namespace)


def header_match(match: HeaderMatch) -> JsonObject:
    """A cohort's header match as an HTTPHeaderMatch (no prefix type: a RE2 regex)."""
    if match.value is not None:
        return {"type": "Exact", "name": match.header, "value": match.value}
    regex = match.regex if match.regex is not None else "^" + escape_regex(match.prefix or "")
    return {"type": "RegularExpression", "name": match.header, "value": regex}


def _with_header(matches: Sequence[Mapping[str, Any]] | None, header: JsonObject) -> list[Any]:
    out = []
    for m in matches or [{}]:
        if any(h.get("name", "").lower() == header["name"].lower() for h in m.get("headers") or []):
            raise UnsupportedRouteError(
                f"a rule already matches header {header['name']!r}; a cohort cannot add its own"
            )
        out.append({**copy.deepcopy(dict(m)), "headers": [*(m.get("headers") or []), header]})
    return out


def _mirror_filter(ref: Mapping[str, Any], target: RouteTarget, percent: int) -> JsonObject:
    backend: JsonObject = {"name": target.candidate}
    if "port" in ref:
        backend["port"] = ref["port"]
    mirror: JsonObject = {"backendRef": backend}
    if percent < TOTAL:  # without `percent`, every request; works before Gateway API v1.3
        mirror["percent"] = percent
    return {"type": MIRROR, "requestMirror": mirror}


def _routed(
    rule: Mapping[str, Any], target: RouteTarget, share: int, mirror: int, *, split: bool = False
) -> JsonObject:
    """A target rule (or a cohort's copy of it) sending `share` to the candidate."""
    out = copy.deepcopy(dict(rule))
    ref = _refs(rule)[0]
    if share or split:
        out["backendRefs"] = [
            {**copy.deepcopy(dict(ref)), "weight": TOTAL - share},
            {**copy.deepcopy(dict(ref)), "name": target.candidate, "weight": share},
        ]
    if mirror:
        if any(f.get("type") == MIRROR for f in rule.get("filters") or []):
            raise OwnershipError(
                f"a rule of {HTTP_ROUTE.ref(target.namespace, target.route)} already mirrors "
                "traffic; canary-controller will not add a second mirror"
            )
        out["filters"] = [*(out.get("filters") or []), _mirror_filter(ref, target, mirror)]
    return out


def original_route(route: Mapping[str, Any], namespace: str) -> JsonObject:
    """The route without anything a router changed: what `restore` writes back."""
    return original_object(
        route,
        namespace,
        rules="rules",
        match="matches",
        same_match=default_matches,
        mentions=_mentions,
        give_back=lambda rule, saved, candidate: _given_back(rule, saved, candidate, namespace),
        what="rule of HTTPRoute",
    )


def _given_back(
    rule: Mapping[str, Any], saved: Mapping[str, Any], candidate: str, namespace: str
) -> JsonObject:
    out = dict(rule)
    out["backendRefs"] = copy.deepcopy(saved["backendRefs"])
    filters = [f for f in rule.get("filters") or [] if not _mirrors_to(f, candidate, namespace)]
    if filters or saved.get("hadFilters"):
        out["filters"] = filters
    else:
        out.pop("filters", None)
    return out


def desired_route(
    route: Mapping[str, Any], target: RouteTarget, state: RouteState, *, epoch: int | None = None
) -> JsonObject:
    """The HTTPRoute carrying `state`, built from the route as it is now; the snapshot
    records the writer's lease `epoch` (see `check_fence`)."""
    obj = original_route(route, target.namespace)
    if not state.routes_anything:
        return obj
    ref = HTTP_ROUTE.ref(target.namespace, target.route)
    rules: list[Mapping[str, Any]] = list((obj.get("spec") or {}).get("rules") or [])
    targets = [i for i, rule in enumerate(rules) if _is_target(rule, target)]
    if not targets:
        for rule in rules:
            if any(_points_at(r, target.baseline, target.namespace) for r in _refs(rule)):
                raise UnsupportedRouteError(
                    f"{ref} splits traffic between the baseline {target.baseline!r} and other "
                    "backends; canary-controller only routes rules whose only backend is the "
                    "baseline"
                )
        backends = sorted({str(r.get("name")) for rule in rules for r in _refs(rule)})
        raise NotRoutedToBaselineError(
            f"{ref} has no rule sending traffic to the baseline Service {target.baseline!r} "
            f"(its backends: {', '.join(backends) or 'none'})"
        )
    out_rules = [
        _routed(rule, target, state.weight, state.mirror_percent)
        if i in targets
        else copy.deepcopy(dict(rule))
        for i, rule in enumerate(rules)
    ]
    managed = []
    for name, share in state.cohorts:
        header = header_match(target.cohort(name).match)
        for i in targets:
            # split even at 0%: the cohort's rule always names the candidate, so it is
            # recognised as ours after a restart
            rule = _routed(rules[i], target, share, state.mirror_percent, split=True)
            rule["matches"] = _with_header(rules[i].get("matches"), header)
            if "name" in rule:  # rule names are unique within a route
                rule["name"] = f"{rule['name']}-canary-{name}"[:253]
            out_rules.append(rule)
            managed.append(rule["matches"])
    if len(out_rules) > MAX_RULES:
        raise UnsupportedRouteError(
            f"{ref} would need {len(out_rules)} rules ({len(targets)} routed rule(s) for each of "
            f"{len(state.cohorts)} cohort(s) with its own weight); an HTTPRoute has at most "
            f"{MAX_RULES}"
        )
    obj["spec"]["rules"] = out_rules
    write_snapshot(
        obj,
        {
            "baseline": target.baseline,
            "candidate": target.candidate,
            "targets": [
                {
                    "matches": rules[i].get("matches"),
                    "backendRefs": rules[i].get("backendRefs"),
                    "hadFilters": "filters" in rules[i],
                }
                for i in targets
            ],
            "managed": managed,
            **epoch_token(route, epoch),
        },
    )
    return obj


def promoted_route(route: Mapping[str, Any], target: RouteTarget) -> JsonObject:
    """The original route with the candidate as the only backend of every target rule."""
    obj = original_route(route, target.namespace)
    for rule in (obj.get("spec") or {}).get("rules") or []:
        if _is_target(rule, target):
            rule["backendRefs"] = [{**rule["backendRefs"][0], "name": target.candidate}]
    return obj


def _candidate_share(rule: Mapping[str, Any], target: RouteTarget) -> int:
    refs = _refs(rule)
    total = sum(int(r.get("weight", 1)) for r in refs)
    ours = sum(
        int(r.get("weight", 1)) for r in refs if _points_at(r, target.candidate, target.namespace)
    )
    return round(ours * TOTAL / total) if total else 0


def _mirror_share(rule: Mapping[str, Any], target: RouteTarget) -> int:
    for flt in rule.get("filters") or []:
        if _mirrors_to(flt, target.candidate, target.namespace):
            return int((flt.get("requestMirror") or {}).get("percent", TOTAL))
    return 0


def observed_state(route: Mapping[str, Any], target: RouteTarget) -> RouteState:
    """The state an HTTPRoute carries (ValueError-free: odd weights are read as shares)."""
    snapshot = read_snapshot(route) or {}
    managed = [default_matches(m) for m in snapshot.get("managed") or []]
    cohort_headers = [(c.name, {"type": "Exact", **header_match(c.match)}) for c in target.cohorts]
    weight: int | None = None
    mirror = 0
    cohorts: dict[str, int] = {}
    for rule in (route.get("spec") or {}).get("rules") or []:
        matches = default_matches(rule.get("matches"))
        if managed and matches in managed:
            headers = matches[0].get("headers") or []
            for name, header in cohort_headers:
                if header in headers and name not in cohorts:
                    cohorts[name] = _candidate_share(rule, target)
        elif weight is None and any(
            _points_at(r, target.baseline, target.namespace) for r in _refs(rule)
        ):
            weight = _candidate_share(rule, target)
            mirror = _mirror_share(rule, target)
    if weight is None:
        raise NotRoutedToBaselineError(
            f"{HTTP_ROUTE.ref(target.namespace, target.route)} has no rule sending traffic "
            f"to the baseline Service {target.baseline!r}"
        )
    return RouteState(weight, cohorts, mirror)


class GatewayApiRouter(RouterBase):
    """Routes by weighted backendRefs and extra header-matched rules on an HTTPRoute."""

    KIND = RouterKind.GATEWAY_API

    def __init__(self, target: RouteTarget, cluster: Cluster) -> None:
        super().__init__(target)
        self.cluster = cluster
        self._ref = HTTP_ROUTE.ref(target.namespace, target.route)

    def _missing(self) -> RouteNotFoundError:
        return RouteNotFoundError(
            f"{self._ref} not found: traffic.route must name the HTTPRoute that serves "
            "the model, in the rollout's namespace"
        )

    def observe(self) -> RouteState:
        route = self.cluster.get(HTTP_ROUTE, self.target.namespace, self.target.route)
        if route is None:
            raise self._missing()
        return observed_state(route, self.target)

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        state = self.supported(desired)

        def build(current: JsonObject | None) -> JsonObject:
            if current is None:
                raise self._missing()
            if state.routes_anything:
                check_fence(current, epoch, self._ref)
            return _unless_same(current, desired_route(current, self.target, state, epoch=epoch))

        done = self.cluster.reconcile(HTTP_ROUTE, self.target.namespace, self.target.route, build)
        assert done.object is not None
        return route_change(observed_state(done.object, self.target), done)

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        def build(current: JsonObject | None) -> JsonObject | None:
            if current is None:
                if promote:
                    raise self._missing()
                log.warning("%s is gone; nothing to give back", self._ref)
                return None
            if promote:
                check_fence(current, epoch, self._ref)
                return _unless_same(current, promoted_route(current, self.target))
            return _unless_same(current, original_route(current, self.target.namespace))

        done = self.cluster.reconcile(HTTP_ROUTE, self.target.namespace, self.target.route, build)
        return route_change(PROMOTED if promote else NEUTRAL, done)


def _unless_same(current: JsonObject, desired: JsonObject) -> JsonObject:
    """`current` itself (nothing to write) when `desired` differs from it only by
    defaults the API server fills in; `desired` otherwise."""
    return current if same_route(current, desired) else desired
