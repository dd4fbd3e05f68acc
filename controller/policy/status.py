"""The ModelRollout `status`: what the controller reports back on the object.

Written only by the controller (through the status subresource), read by
`kubectl get modelrollouts` (the printer columns show `phase`, `step` and
`weight`), `kubectl wait --for=condition=...` and dashboards. It lives beside
the spec models so that `make crd` generates its schema from the same source.

Conditions follow the Kubernetes convention (`type`, `status`, `reason`,
`message`, `lastTransitionTime`, `observedGeneration`); `lastTransitionTime`
changes only when a condition's `status` flips.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from controller.policy.causes import Cause


class ConditionType(StrEnum):
    """The conditions the controller sets on a ModelRollout."""

    #: the spec passed validation; False: the latest generation is invalid and ignored
    VALID = "Valid"
    #: the route carries what the rollout wants (False while a route write fails)
    READY = "Ready"
    #: the rollout is moving through its steps (False once paused or ended)
    PROGRESSING = "Progressing"
    #: traffic was taken back from the candidate (rolled back, aborted or failed)
    ROLLED_BACK = "RolledBack"


class _Status(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )


class Condition(_Status):
    """One condition, as in every Kubernetes object's status."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class CohortVerdicts(_Status):
    """The judge's verdicts on one cohort (`overall` is all traffic) at the last look."""

    cohort: str
    #: the worst verdict of the cohort's metrics: pass, inconclusive, no-data or fail
    verdict: str
    #: each metric's verdict
    metrics: dict[str, str] = Field(default_factory=dict)


class GateStatus(_Status):
    """The gate a rollout waits for."""

    name: str
    #: preRollout, beforeStep N, beforePromotion, postRollout or onRollback
    at: str
    attempt: int
    since: datetime


class RolloutStatus(_Status):
    """What the controller reports on a ModelRollout."""

    observed_generation: int | None = Field(
        default=None, description="The spec generation this status describes."
    )
    phase: str | None = Field(
        default=None,
        description="Pending, Shadowing, Progressing, GateRunning, Paused, Promoted, "
        "RolledBack, Aborted or Failed.",
    )
    step: int | None = Field(
        default=None, description="The current step, 1-based; 0 before the first step."
    )
    steps: int | None = Field(default=None, description="How many steps the rollout has.")
    weight: int | None = Field(
        default=None, description="Percent of traffic the candidate serves now."
    )
    cohort_weights: dict[str, int] | None = Field(
        default=None, description="Cohorts with a candidate weight of their own, in percent."
    )
    mirror_percent: int | None = Field(
        default=None, description="Percent of requests mirrored to the candidate."
    )
    candidate_version: str | None = None
    reason: str | None = Field(default=None, description="Why the last transition happened.")
    cause: Cause | None = Field(
        default=None,
        description="The cause code of the last transition that ended or paused the rollout, "
        "or that a human asked for: LimitBroken, CircuitBreaker, NoData, Deadline, Manual, "
        "RouteFailed or GateFailed. Absent after a transition on evidence (a step advanced, a "
        "promotion).",
    )
    gate: GateStatus | None = Field(
        default=None,
        description="The gate the rollout waits for (GateRunning), or that paused it after "
        "failing, or that runs after it ended.",
    )
    last_transition_time: datetime | None = None
    verdicts: list[CohortVerdicts] | None = Field(
        default=None, description="The judge's verdicts per cohort at the last look."
    )
    conditions: Annotated[
        list[Condition] | None,
        Field(
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            }
        ),
    ] = None
