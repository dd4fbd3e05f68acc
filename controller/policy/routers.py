"""What each kind of traffic router can do, as far as a policy is concerned.

The policy layer needs this table to reject a policy that asks a router for
something its data plane cannot do (before any traffic moves); the routing
package implements the routers and reports the same capabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from controller.policy.regex import RegexDialect


class RouterKind(StrEnum):
    NGINX_INGRESS = "nginx-ingress"
    GATEWAY_API = "gateway-api"
    ISTIO = "istio"


@dataclass(frozen=True)
class RouterCapabilities:
    """Which traffic features a router's data plane supports."""

    #: a cohort can get its own candidate weight (e.g. 5% of mobile users)
    weighted_cohorts: bool
    #: how many cohorts can be routed by header at once (None: no limit)
    header_cohorts: int | None
    #: requests can be mirrored to the candidate (shadow traffic)
    mirror: bool
    #: a percentage of requests, rather than all, can be mirrored
    partial_mirror: bool
    #: requests with the same header value go to the same backend pod (consistent hash).
    #: Envoy picks the version per request first, so this keeps a conversation on one
    #: pod *within* a version, not on one version (istio/istio#9764).
    sticky_header: bool
    #: the regex dialect its proxy uses for header matches
    regex_dialect: RegexDialect


CAPABILITIES: dict[RouterKind, RouterCapabilities] = {
    # One canary Ingress per host: canary-by-header takes a single header and sends
    # every matching request to the canary; mirror-target mirrors every request.
    RouterKind.NGINX_INGRESS: RouterCapabilities(
        weighted_cohorts=False,
        header_cohorts=1,
        mirror=True,
        partial_mirror=False,
        sticky_header=False,
        regex_dialect=RegexDialect.PCRE,
    ),
    # HTTPRoute rules with header matches and weighted backendRefs; RequestMirror
    # with `percent` (Gateway API >= 1.2).
    RouterKind.GATEWAY_API: RouterCapabilities(
        weighted_cohorts=True,
        header_cohorts=None,
        mirror=True,
        partial_mirror=True,
        sticky_header=False,
        regex_dialect=RegexDialect.RE2,
    ),
    # VirtualService http routes with header matches and weights, mirrorPercentage,
    # and a DestinationRule consistent hash on the sticky header (per pod, per version).
    RouterKind.ISTIO: RouterCapabilities(
        weighted_cohorts=True,
        header_cohorts=None,
        mirror=True,
        partial_mirror=True,
        sticky_header=True,
        regex_dialect=RegexDialect.RE2,
    ),
}


def routers_that(feature: str) -> list[str]:
    """Names of the routers whose capability `feature` is truthy, for error messages."""
    return [kind.value for kind, caps in CAPABILITIES.items() if getattr(caps, feature)]
