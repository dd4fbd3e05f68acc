"""The route's desired state: the candidate's shares of traffic that a rollout asks for.

A `RouteState` is a value: what a policy step (or the shadow phase) wants the
route to carry. The engine decides which one the route should carry; a router
(`controller.routing`) makes the cluster carry it and reads it back. It lives
here, below both, so that the pure engine never imports an adapter for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.policy.model import Shadow, Step

#: weights are shares of this total: percent of requests
TOTAL = 100


def _percent(name: str, value: object) -> int:
    # bool is an int in Python; a weight of True is a bug, not 1%.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer percent, not {value!r}")
    if not 0 <= value <= TOTAL:
        raise ValueError(f"{name} must be between 0 and {TOTAL}, not {value}")
    return value


@dataclass(frozen=True)
class RouteState:
    """What the route carries: integer shares of traffic, in percent.

    `weight` is the candidate's share of all traffic that matches no routed
    cohort; the baseline gets the rest (`TOTAL - weight`), so a split always
    sums to the total. `cohorts` gives a cohort its own candidate share
    (`("mobile", 5)`); a cohort not listed simply gets `weight`. It is held as
    sorted `(name, weight)` pairs, so states compare and hash by value; pass a
    mapping or pairs. `mirror_percent` copies that share of requests to the
    candidate (responses discarded). `sticky_header` keeps a conversation on
    one backend where the router can (see `supported_state`).
    """

    weight: int = 0
    cohorts: tuple[tuple[str, int], ...] = ()
    mirror_percent: int = 0
    sticky_header: str | None = None

    def __init__(
        self,
        weight: int = 0,
        cohorts: Mapping[str, int] | tuple[tuple[str, int], ...] = (),
        mirror_percent: int = 0,
        sticky_header: str | None = None,
    ) -> None:
        pairs = dict(cohorts.items() if isinstance(cohorts, Mapping) else cohorts)
        for name, share in pairs.items():
            _percent(f"cohort {name!r} weight", share)
        object.__setattr__(self, "weight", _percent("weight", weight))
        object.__setattr__(self, "cohorts", tuple(sorted(pairs.items())))
        object.__setattr__(self, "mirror_percent", _percent("mirror_percent", mirror_percent))
        object.__setattr__(self, "sticky_header", sticky_header or None)

    @property
    def baseline_weight(self) -> int:
        return TOTAL - self.weight

    @property
    def cohort_weights(self) -> dict[str, int]:
        return dict(self.cohorts)

    @property
    def sends_traffic(self) -> bool:
        """Whether any request reaches the candidate (served or mirrored)."""
        return bool(self.weight or self.mirror_percent or any(w for _, w in self.cohorts))

    @property
    def routes_anything(self) -> bool:
        """Whether the route differs from the original at all (cohort rules count, even at 0)."""
        return bool(self.weight or self.mirror_percent or self.cohorts)

    @classmethod
    def for_step(cls, step: Step, *, sticky_header: str | None = None) -> RouteState:
        """The state of a policy step: its weight and its cohorts' own weights."""
        return cls(step.weight, step.cohort_weights, 0, sticky_header)

    @classmethod
    def for_shadow(cls, shadow: Shadow, *, sticky_header: str | None = None) -> RouteState:
        """Shadow traffic: no user is served by the candidate, a share is mirrored to it."""
        return cls(0, (), shadow.mirror_percent, sticky_header)

    def to_json(self) -> dict[str, Any]:
        return {
            "weight": self.weight,
            "cohorts": dict(self.cohorts),
            "mirrorPercent": self.mirror_percent,
            "stickyHeader": self.sticky_header,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RouteState:
        return cls(
            int(data.get("weight", 0)),
            {str(k): int(v) for k, v in dict(data.get("cohorts") or {}).items()},
            int(data.get("mirrorPercent", 0)),
            data.get("stickyHeader") or None,
        )

    def __str__(self) -> str:
        parts = [f"candidate {self.weight}%"]
        parts += [f"{name} {share}%" for name, share in self.cohorts]
        if self.mirror_percent:
            parts.append(f"mirror {self.mirror_percent}%")
        if self.sticky_header:
            parts.append(f"sticky on {self.sticky_header}")
        return ", ".join(parts)


#: the route as it was: everything to the baseline
NEUTRAL = RouteState()
#: the route after a promotion: everything to the candidate, its only backend
PROMOTED = RouteState(TOTAL)
