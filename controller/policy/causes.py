"""Why a rollout ended or paused: one code, the same everywhere it is shown.

The engine names the cause of every transition that ends or pauses a rollout
(and of a human's resume or promotion); Slack and the webhook, the ModelRollout
status (`cause`, beside the free-text `reason`), Kubernetes Events (their
`reason`), `canaryctl history` and `status`, and the audit store all carry the
same code, so a script, an alert rule and a person read the same thing.

The codes live here, at the bottom of the layers, because every layer above
shows them and none of them may import the engine.

A rollout that advances or is promoted on its evidence has no cause: the
evidence is the reason. Words matter most where they could mislead: only
`LimitBroken` and `CircuitBreaker` mean that a metric failed. `NoData` and
`Deadline` say the judge could not measure, or could not decide in time; they
are never worded as a failed metric.
"""

from __future__ import annotations

from enum import StrEnum


class Cause(StrEnum):
    """The cause of a transition, as every surface spells it."""

    #: a critical metric breaks its limit in some cohort, with the policy's confidence
    LIMIT_BROKEN = "LimitBroken"
    #: a gross failure caught by the circuit breaker, before the statistics had enough samples
    CIRCUIT_BREAKER = "CircuitBreaker"
    #: the metrics could not be measured (Prometheus unreachable, a rejected query, no
    #: series) for longer than `noData` allows
    NO_DATA = "NoData"
    #: past `analysis.deadline`, some cells are still undecided: a human decides
    DEADLINE = "Deadline"
    #: a human's command (abort, pause, resume, promote, deleting the ModelRollout), or a
    #: pause the policy keeps for a human (a step's `pause: true`, `promotion.manualGate`)
    MANUAL = "Manual"
    #: the route cannot carry the rollout (missing, forbidden, not pointing at the baseline)
    ROUTE_FAILED = "RouteFailed"
    #: a gate (a webhook or a Job the policy runs before or between steps) failed
    GATE_FAILED = "GateFailed"

    @property
    def failed_metric(self) -> bool:
        """Does this cause mean a metric failed? (Only then may a message say so.)"""
        return self in (Cause.LIMIT_BROKEN, Cause.CIRCUIT_BREAKER)

    @property
    def meaning(self) -> str:
        """One line for people: what the code means."""
        return _MEANINGS[self]


_MEANINGS = {
    Cause.LIMIT_BROKEN: "a critical metric breaks its limit",
    Cause.CIRCUIT_BREAKER: "the circuit breaker caught a gross failure",
    Cause.NO_DATA: "the metrics could not be measured",
    Cause.DEADLINE: "the judge could not decide before the deadline",
    Cause.MANUAL: "a human's command, or a pause kept for a human",
    Cause.ROUTE_FAILED: "the route cannot carry the rollout",
    Cause.GATE_FAILED: "a gate of the policy (a webhook or a Job) failed",
}
