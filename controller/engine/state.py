"""The engine's data: rollout state, what a look found, commands, actions.

All frozen. `decide` takes a state and returns a new one; the executor turns the
actions into effects; the store keeps `RolloutState.to_json()` between ticks, so a
restarted controller continues from exactly the state it last committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from controller.analysis.verdicts import Verdict
from controller.engine.phases import Phase
from controller.policy.causes import Cause
from controller.policy.gates import GatePoint
from controller.policy.route import RouteState


class Waiting(StrEnum):
    """Why a paused rollout waits for a human."""

    OPERATOR = "operator"  # `canaryctl pause`
    STEP_PAUSE = "step-pause"  # a step with `pause: true`
    MANUAL_GATE = "manual-gate"  # promotion.manualGate before 100%
    NO_DATA = "no-data"  # noData.then: pause
    DEADLINE = "deadline"  # still undecided past analysis.deadline
    GATE_FAILED = "gate-failed"  # a gate failed and its onFailure is pause
    #: no longer set (undecided cells now wait for the deadline); kept so that states
    #: stored by earlier versions still load
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class GateWait:
    """The gate a rollout waits for: which, where, which attempt, since when.

    `step` is the 0-based step a `beforeStep` gate lets the rollout enter (-1
    otherwise). The runner names the attempt's Job after `attempt`, so a new
    attempt is a new Job and a result always belongs to the attempt it reports.
    """

    name: str
    point: GatePoint
    since: datetime
    step: int = -1
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "point": str(self.point),
            "since": self.since.isoformat(),
            "step": self.step,
            "attempt": self.attempt,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GateWait:
        return cls(
            name=str(data["name"]),
            point=GatePoint(data["point"]),
            since=datetime.fromisoformat(str(data["since"])),
            step=int(data["step"]),
            attempt=int(data["attempt"]),
        )


class GateOutcome(StrEnum):
    """What the runner found of one attempt of a gate."""

    RUNNING = "running"  # a Job not finished yet
    PASSED = "passed"
    FAILED = "failed"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one attempt of a gate: an input of `decide`, like a look.

    `detail` says what happened in a few words (`HTTP 503`, `Job failed:
    BackoffLimitExceeded`); `body` is the evidence kept in the audit and shown on
    Slack when the gate fails: the response body or the Job's message, at most
    4 KiB (`EVIDENCE_BYTES`).
    """

    name: str
    attempt: int
    outcome: GateOutcome
    detail: str = ""
    body: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "attempt": self.attempt,
            "outcome": str(self.outcome),
            "detail": self.detail,
            "body": self.body,
        }


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout is; everything `decide` needs to remember between ticks."""

    phase: Phase
    step: int  # index into spec.steps; -1 before the first step
    candidate_version: str
    generation: int
    started_at: datetime
    phase_since: datetime
    step_since: datetime
    analysis_since: datetime  # the judge counts from here
    tick: int = 0
    no_data_since: datetime | None = None
    undecided_since: datetime | None = None  # hold passed, verdicts not all PASS yet
    paused_from: Phase | None = None
    waiting: Waiting | None = None
    command_cursor: int = 0
    reason: str = ""
    route: RouteState = field(default_factory=RouteState)
    restore_pending: bool = False  # the rollout ended but restoring the route failed
    #: the cause of the latest transition that has one (see `Cause`); None after a
    #: transition on evidence (a start, a step advanced, a promotion)
    cause: Cause | None = None
    #: `analysis.deadline` counts from here: the start, moved on by the time spent
    #: waiting for a human, and reset when a human lets a deadline pause go on
    deadline_from: datetime | None = None
    #: when each traffic step after the first began, oldest first (a step entered from
    #: the shadow counts: the candidate's traffic changed there); the observer asks for
    #: the counts at each so the judge compares the versions step by step. Cleared by a
    #: restart; states stored before it load with none (cumulative counts).
    step_starts: tuple[datetime, ...] = ()
    #: the critical cells (metric, cohort) that have PASSed at some look since the analysis
    #: began. A PASS is an anytime-valid crossing: once reached it holds for the rest of
    #: the rollout (a later look's noise does not re-open the cell). It counts towards
    #: 100 %; a later FAIL still rolls back. Cleared by a restart.
    passed: tuple[tuple[str, str], ...] = ()
    #: the gate the rollout waits for: in GateRunning, paused after a gate failed, or
    #: ended with a postRollout / onRollback gate still to run
    gate: GateWait | None = None

    def to_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return value.isoformat() if value is not None else None

        return {
            "phase": str(self.phase),
            "step": self.step,
            "candidateVersion": self.candidate_version,
            "generation": self.generation,
            "startedAt": when(self.started_at),
            "phaseSince": when(self.phase_since),
            "stepSince": when(self.step_since),
            "analysisSince": when(self.analysis_since),
            "tick": self.tick,
            "noDataSince": when(self.no_data_since),
            "undecidedSince": when(self.undecided_since),
            "pausedFrom": str(self.paused_from) if self.paused_from else None,
            "waiting": str(self.waiting) if self.waiting else None,
            "commandCursor": self.command_cursor,
            "reason": self.reason,
            "route": self.route.to_json(),
            "restorePending": self.restore_pending,
            "cause": str(self.cause) if self.cause else None,
            "deadlineFrom": when(self.deadline_from),
            "stepStarts": [at.isoformat() for at in self.step_starts],
            "passed": [[metric, cohort] for metric, cohort in self.passed],
            "gate": self.gate.to_json() if self.gate is not None else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutState:
        def when(key: str) -> datetime | None:
            value = data.get(key)
            return datetime.fromisoformat(value) if value else None

        def required(key: str) -> datetime:
            value = when(key)
            assert value is not None, f"state has no {key}"
            return value

        return cls(
            phase=Phase(data["phase"]),
            step=int(data["step"]),
            candidate_version=str(data["candidateVersion"]),
            generation=int(data["generation"]),
            started_at=required("startedAt"),
            phase_since=required("phaseSince"),
            step_since=required("stepSince"),
            analysis_since=required("analysisSince"),
            tick=int(data["tick"]),
            no_data_since=when("noDataSince"),
            undecided_since=when("undecidedSince"),
            paused_from=Phase(data["pausedFrom"]) if data.get("pausedFrom") else None,
            waiting=Waiting(data["waiting"]) if data.get("waiting") else None,
            command_cursor=int(data["commandCursor"]),
            reason=str(data["reason"]),
            route=RouteState.from_json(data["route"]),
            restore_pending=bool(data.get("restorePending", False)),
            cause=Cause(data["cause"]) if data.get("cause") else None,
            deadline_from=when("deadlineFrom"),
            step_starts=tuple(datetime.fromisoformat(at) for at in data.get("stepStarts") or ()),
            passed=tuple((str(m), str(c)) for m, c in data.get("passed") or ()),
            gate=GateWait.from_json(data["gate"]) if data.get("gate") else None,
        )

    def serving(self) -> RouteState:
        """What the route carries now: the recorded state while the rollout runs; once it
        ended and the route was given back, all traffic to the candidate if it was
        promoted, none otherwise (`route` keeps the last state written during the rollout)."""
        if self.phase.terminal and not self.restore_pending:
            return RouteState(weight=100 if self.phase is Phase.PROMOTED else 0)
        return self.route

    @property
    def needs_ticks(self) -> bool:
        """Whether the controller still has work for the rollout: it runs, or it ended
        and its route has not been given back yet."""
        return not self.phase.terminal or self.restore_pending

    @property
    def deadline_start(self) -> datetime:
        """Where `analysis.deadline` counts from."""
        return self.deadline_from or self.started_at

    def evolve(self, **changes: Any) -> RolloutState:
        return replace(self, **changes)


@dataclass(frozen=True)
class Cell:
    """One verdict of a look, as the engine needs it: which metric, cohort, and how bad.

    NO_DATA means a failed measurement only (the query failed, no series); a cell
    whose candidate has not served `minSamples` requests yet is INCONCLUSIVE and
    `waiting_for_traffic`.
    """

    metric: str
    cohort: str
    verdict: Verdict
    critical: bool = True
    summary: str = ""
    #: a FAIL decided by the circuit breaker (a gross failure), not by a limit's test
    breaker: bool = False
    #: the FAIL test has had the information to catch a candidate at the limit with the
    #: declared power: not failing by now is enough to promote
    powered: bool = False
    #: INCONCLUSIVE because the candidate has fewer than `minSamples` requests
    waiting_for_traffic: bool = False
    #: the candidate's samples so far, and the estimated further ones this cell needs
    candidate_samples: float | None = None
    needed_samples: float | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.metric, self.cohort)

    @property
    def decided_enough_to_promote(self) -> bool:
        """PASS, or powered and not failing: what promotion to 100 % needs of a critical cell."""
        return self.verdict is Verdict.PASS or (self.powered and self.verdict is not Verdict.FAIL)


@dataclass(frozen=True)
class Look:
    """What one look at the metrics found: every cell, or why there were none."""

    cells: tuple[Cell, ...] = ()
    error: str | None = None  # the metrics source failed (e.g. Prometheus unreachable)


class CommandKind(StrEnum):
    PROMOTE = "promote"  # to the next step (past a pause or the manual gate)
    PROMOTE_FULL = "promote-full"  # straight to 100% and Promoted
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"  # roll back, by hand


@dataclass(frozen=True)
class Command:
    id: int
    kind: CommandKind
    actor: str
    reason: str = ""
    #: an abort that records the look's failing (or suspect) cells as eval cases
    capture: bool = False


class EventKind(StrEnum):
    """What the owners are told about (Slack, webhook, console)."""

    STARTED = "started"
    STEP_ADVANCED = "step-advanced"
    ROLLED_BACK = "rolled-back"
    PROMOTED = "promoted"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    HOLDING = "holding"  # not enough traffic / no data
    RESTARTED = "restarted"
    FAILED = "failed"
    #: an ended rollout's route was found carrying its candidate again, and put back
    ROUTE_CORRECTED = "route-corrected"
    #: a gate failed and its onFailure is ignore (or it ran after the end): told, no move
    GATE_FAILED = "gate-failed"


@dataclass(frozen=True)
class ApplyRoute:
    """Make the route carry `state` (idempotent: no write when it already does)."""

    state: RouteState


@dataclass(frozen=True)
class RestoreRoute:
    """Give the route back: to the baseline, or with the candidate as the only backend."""

    promoted: bool


@dataclass(frozen=True)
class RouteOutcome:
    """What became of a tick's route actions, as far as the engine must know it
    (`route_written` turns it into the state that follows)."""

    #: whether the tick's restore reached the route (None: it restored nothing)
    restored: bool | None = None
    #: why the route cannot carry the rollout at all: an apply's permanent error
    unroutable: str | None = None


@dataclass(frozen=True)
class Notify:
    event: EventKind
    text: str
    cells: tuple[Cell, ...] = ()
    mention: bool = False
    cause: Cause | None = None
    #: the gate result this message is about (its body is shown when it failed)
    gate: GateResult | None = None


Action = ApplyRoute | RestoreRoute | Notify


@dataclass(frozen=True)
class Transition:
    """One change of phase or step, for the audit trail."""

    at: datetime
    from_phase: Phase
    to_phase: Phase
    from_step: int
    to_step: int
    reason: str
    actor: str = "controller"
    cause: Cause | None = None
    #: the gate result that made the transition (kept in the audit with its body)
    gate: GateResult | None = None


@dataclass(frozen=True)
class Decision:
    """What `decide` returns: the next state, the effects to perform, the audit."""

    state: RolloutState
    actions: tuple[Action, ...] = ()
    transitions: tuple[Transition, ...] = ()
    applied_commands: tuple[Command, ...] = ()
