"""What a real API server adds to an HTTPRoute: the Gateway API v1 CRD's schema defaults.

Written out here, apart from the router's own normalisation, so the tests that
make kmock behave like a v1.26+ API server with the Gateway API v1 (standard
channel) CRDs installed do not check the router against itself. The defaults,
from the CRD's `+kubebuilder:default` markers:

- `spec.rules` absent: one rule matching every path;
- `rules[].matches` absent: `[{path: {type: PathPrefix, value: /}}]`;
- `matches[].path` absent: `{type: PathPrefix, value: /}`; `path.type`: PathPrefix,
  `path.value`: `/`;
- `matches[].headers[].type` and `matches[].queryParams[].type`: Exact;
- `parentRefs[]`: `group: gateway.networking.k8s.io`, `kind: Gateway`;
- `backendRefs[]` (of rules and of RequestMirror filters): `group: ""`,
  `kind: Service`; a rule's `backendRefs[].weight`: 1;
- `RequestRedirect.statusCode`: 302.
"""

from __future__ import annotations

import copy
from typing import Any

JsonObject = dict[str, Any]


def _ref(ref: JsonObject, *, weighted: bool) -> None:
    ref.setdefault("group", "")
    ref.setdefault("kind", "Service")
    if weighted:
        ref.setdefault("weight", 1)


def _filters(filters: list[JsonObject]) -> None:
    for flt in filters:
        mirror = flt.get("requestMirror")
        if isinstance(mirror, dict) and isinstance(mirror.get("backendRef"), dict):
            _ref(mirror["backendRef"], weighted=False)
        redirect = flt.get("requestRedirect")
        if isinstance(redirect, dict):
            redirect.setdefault("statusCode", 302)


def http_route_defaults(spec: JsonObject) -> JsonObject:
    """`spec` as the API server stores it (a copy)."""
    spec = copy.deepcopy(spec)
    for parent in spec.get("parentRefs") or []:
        parent.setdefault("group", "gateway.networking.k8s.io")
        parent.setdefault("kind", "Gateway")
    if "rules" not in spec:
        spec["rules"] = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]
    for rule in spec["rules"]:
        if "matches" not in rule:
            rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
        for match in rule["matches"]:
            path = match.setdefault("path", {})
            path.setdefault("type", "PathPrefix")
            path.setdefault("value", "/")
            for header in match.get("headers") or []:
                header.setdefault("type", "Exact")
            for param in match.get("queryParams") or []:
                param.setdefault("type", "Exact")
        _filters(rule.get("filters") or [])
        for ref in rule.get("backendRefs") or []:
            _ref(ref, weighted=True)
            _filters(ref.get("filters") or [])
    return spec
