"""A policy replayed over recorded metrics: would it have caught that incident, and when?

`replay` runs a rollout as if it had started at `start`: every `analysis.interval`
it looks at the metrics *as they were at that instant* and lets the real engine
decide, until the rollout ends or the range does. Nothing here decides on its
own: the looks are the controller's own `JudgingObserver` (the same queries, the
same counts since the analysis began, the same step-by-step strata) over a
`MetricHistory`, evaluated at a past time, and every decision is the pure
`decide`. The loop only carries the state from one look to the next.

What cannot be replayed, and is not pretended:

- the traffic split is whatever the recorded data shows. The engine "moves" the
  candidate from step to step, but no route is written and the counts are the
  ones that were recorded, at the weights the route had then. A step's `hold` and
  `minSamples` are judged on that traffic (see docs/backtest.md);
- nobody answers a pause: a rollout that waits for a human (a step's `pause`, the
  manual gate, the deadline) stays paused, though a FAIL still rolls it back;
- human commands of a recorded rollout are not replayed: the backtest says what
  the policy alone would have done.

Errors, by class:

    CanaryError
    ├── BacktestRangeError     the range is empty, or longer than MAX_RANGE without `force`
    ├── NoRecordedDataError    neither version served a request in the range
    └── MetricsUnreachableError (from the metrics port)  the source stopped answering
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from controller.analysis import CellVerdict, Limit, VersionData
from controller.engine.decide import decide
from controller.engine.decide import start as first_state
from controller.engine.phases import Phase
from controller.engine.state import (
    Decision,
    EventKind,
    Look,
    Notify,
    RolloutState,
    Transition,
)
from controller.errors import CanaryError
from controller.metrics.base import (
    MetricProvider,
    MetricsUnreachableError,
    NoSeriesError,
    QueryContext,
)
from controller.policy import Cause, MetricSpec, ModelRollout
from controller.runtime.observer import JudgingObserver
from controller.store.records import StoredRollout, TransitionRecord

#: a longer range is refused unless forced: each look counts from the start of the
#: analysis, so a month of looks is a month of ever longer queries
MAX_RANGE = timedelta(days=30)


class BacktestRangeError(CanaryError):
    """The range cannot be replayed: empty, reversed, or too long without `force`."""


class NoRecordedDataError(CanaryError):
    """Neither version of the model served a recorded request in the range."""


class MetricHistory(MetricProvider, Protocol):
    """A metric source that can answer for the past.

    `fetch` counts up to `context.end`, which may be any past instant (Prometheus:
    an instant query with `time=`); `request_rates` says whether a version served
    anything over a span, so an empty range is named as such instead of being
    replayed as a rollout that never saw traffic.
    """

    def request_rates(
        self, model: str, version: str, namespace: str, *, over: timedelta, at: datetime
    ) -> dict[str, float]: ...


@dataclass(frozen=True)
class BacktestDecision:
    """One thing the engine decided during the replay: a transition, or a hold."""

    at: datetime
    event: EventKind
    phase: Phase
    #: the step index the rollout is at after it (-1 before the first step)
    step: int
    #: the candidate's weight the engine wanted after it, in percent
    weight: int
    reason: str
    cause: Cause | None = None


@dataclass(frozen=True)
class FailedCell:
    """A critical cell that FAILed, with the numbers and the PromQL behind it."""

    metric: str
    cohort: str
    reason: str
    baseline: float | None
    candidate: float | None
    baseline_samples: float | None
    candidate_samples: float | None
    query: str
    breaker: bool


@dataclass(frozen=True)
class FirstFail:
    """The first look at which a critical cell FAILed (the rollback's evidence)."""

    at: datetime
    look: int
    cells: tuple[FailedCell, ...]


@dataclass(frozen=True)
class Backtest:
    """What a policy would have done over a recorded range."""

    key: str
    start: datetime
    end: datetime
    interval: timedelta
    decisions: tuple[BacktestDecision, ...]
    first_fail: FirstFail | None
    #: the phase the rollout was in when it ended, or when the range did
    outcome: Phase
    #: how many times the metrics were looked at and judged
    looks: int
    #: the instant of the last tick (the end of the rollout, or the last one in range)
    last: datetime
    #: the step index at the end
    step: int = -1

    def minutes(self, at: datetime) -> float:
        """Minutes from the start of the replay to `at`."""
        return (at - self.start).total_seconds() / 60

    def to_json(self) -> dict[str, Any]:
        """`{"decisions", "first_fail", "outcome", "looks"}`: times as ISO 8601 (UTC) and
        minutes since the start, steps counted from 1 (0: before the first step)."""
        return {
            "decisions": [
                {
                    "at": d.at.isoformat(),
                    "minutes": round(self.minutes(d.at), 2),
                    "event": str(d.event),
                    "phase": str(d.phase),
                    "step": d.step + 1,
                    "weight": d.weight,
                    "reason": d.reason,
                    "cause": str(d.cause) if d.cause else None,
                }
                for d in self.decisions
            ],
            "first_fail": None
            if self.first_fail is None
            else {
                "at": self.first_fail.at.isoformat(),
                "minutes": round(self.minutes(self.first_fail.at), 2),
                "look": self.first_fail.look,
                "cells": [
                    {
                        "metric": c.metric,
                        "cohort": c.cohort,
                        "reason": c.reason,
                        "baseline": c.baseline,
                        "candidate": c.candidate,
                        "baseline_samples": c.baseline_samples,
                        "candidate_samples": c.candidate_samples,
                        "query": c.query,
                        "breaker": c.breaker,
                    }
                    for c in self.first_fail.cells
                ],
            },
            "outcome": str(self.outcome),
            "looks": self.looks,
        }


def check_range(start: datetime, end: datetime, *, force: bool = False) -> None:
    """BacktestRangeError unless `start` < `end` and, without `force`, the range is at
    most MAX_RANGE long."""
    if start.tzinfo is None or end.tzinfo is None:
        raise BacktestRangeError("--from and --to must carry a time zone")
    if end <= start:
        raise BacktestRangeError(
            f"--to ({end.isoformat()}) must be after --from ({start.isoformat()})"
        )
    if end - start > MAX_RANGE and not force:
        days = (end - start).total_seconds() / 86400
        raise BacktestRangeError(
            f"the range is {days:.1f} days long, more than {MAX_RANGE.days} days; "
            "pass --force to replay it anyway"
        )


def check_recorded(
    rollout: ModelRollout, source: MetricHistory, start: datetime, end: datetime
) -> None:
    """NoRecordedDataError unless the baseline or the candidate served requests in the
    range (MetricsUnreachableError, or another CanaryError, if the source cannot tell)."""
    spec = rollout.spec
    namespace = rollout.metadata.namespace
    for version in (spec.candidate.version, spec.baseline.version):
        try:
            rates = source.request_rates(spec.model, version, namespace, over=end - start, at=end)
        except NoSeriesError:
            continue
        if any(rate > 0 for rate in rates.values()):
            return
    raise NoRecordedDataError(
        f"no requests of {spec.model} {spec.baseline.version} or {spec.candidate.version} "
        f"in namespace {namespace} between {start.isoformat()} and {end.isoformat()}"
    )


class _Watched:
    """The source, with the first 'unreachable' kept: the judge reads a failed query as
    NO_DATA, which in a replay would be a fiction (Prometheus had the data, it did not
    answer now), so the replay stops on it instead."""

    def __init__(self, source: MetricProvider) -> None:
        self.source = source
        self.unreachable: MetricsUnreachableError | None = None

    def fetch(self, metric: MetricSpec, version: str, context: QueryContext) -> VersionData:
        try:
            return self.source.fetch(metric, version, context)
        except MetricsUnreachableError as exc:
            if self.unreachable is None:
                self.unreachable = exc
            raise


#: told of each tick's instant, for a progress bar
Progress = Callable[[datetime], None]


def ticks(start: datetime, end: datetime, interval: timedelta) -> int:
    """How many ticks a replay of [start, end] makes at most (the first at `start`)."""
    return int((end - start) / interval) + 1


def replay(
    rollout: ModelRollout,
    source: MetricProvider,
    start: datetime,
    end: datetime,
    *,
    progress: Progress | None = None,
) -> Backtest:
    """Run `rollout` from `start` to `end` (or its end) over recorded metrics.

    A tick every `analysis.interval` from `start`: the first starts the rollout
    without a look, as the controller's first tick does; each later one looks at the
    metrics at its instant and decides. MetricsUnreachableError if the source stops
    answering."""
    spec = rollout.spec
    key = rollout.key
    interval = spec.analysis.interval
    watched = _Watched(source)
    observer = JudgingObserver(watched)
    generation = rollout.metadata.generation or 1
    state = first_state(spec, generation, start)  # as the controller sees a new rollout
    decisions: list[BacktestDecision] = []
    first_fail: FirstFail | None = None
    looks = 0
    now = start
    for index in range(ticks(start, end, interval)):
        now = start + index * interval
        if progress is not None:
            progress(now)
        if state.phase is Phase.PENDING:
            look = Look()  # it has served nothing yet: it starts without a look
        else:
            look = observer.observe(rollout, state, now).look
            looks += 1
            if watched.unreachable is not None:
                raise MetricsUnreachableError(
                    f"{watched.unreachable} (at the look of {now.isoformat()})",
                    query=watched.unreachable.query,
                ) from watched.unreachable
            failed = observer.last[key].failures
            if failed and first_fail is None:
                first_fail = FirstFail(now, looks, tuple(_failed(c) for c in failed))
        decision = decide(spec, state, look, (), now)
        state = decision.state.evolve(generation=generation)
        decisions.extend(_decisions(decision, now))
        if state.phase.terminal:
            break
    return Backtest(
        key,
        start,
        end,
        interval,
        tuple(decisions),
        first_fail,
        state.phase,
        looks,
        now,
        state.step,
    )


def _decisions(decision: Decision, now: datetime) -> list[BacktestDecision]:
    """The transitions of one tick, and a hold it announced (not enough traffic, no data)."""
    state = decision.state
    out = [
        BacktestDecision(
            t.at,
            _event(t),
            t.to_phase,
            t.to_step,
            state.route.weight if not state.phase.terminal else _final_weight(state.phase),
            t.reason,
            t.cause,
        )
        for t in decision.transitions
    ]
    out.extend(
        BacktestDecision(now, a.event, state.phase, state.step, state.route.weight, a.text, a.cause)
        for a in decision.actions
        if isinstance(a, Notify) and a.event is EventKind.HOLDING
    )
    return out


def _event(t: Transition) -> EventKind:
    """What a transition is, in the words of the owners' notifications."""
    if t.to_phase is Phase.PENDING:
        return EventKind.RESTARTED
    if t.from_phase is Phase.PENDING:
        return EventKind.STARTED
    if t.from_phase is Phase.PAUSED and t.to_phase in (Phase.SHADOWING, Phase.PROGRESSING):
        return EventKind.RESUMED if t.to_step == t.from_step else EventKind.STEP_ADVANCED
    return {
        Phase.PAUSED: EventKind.PAUSED,
        Phase.PROMOTED: EventKind.PROMOTED,
        Phase.ROLLED_BACK: EventKind.ROLLED_BACK,
        Phase.ABORTED: EventKind.ABORTED,
        Phase.FAILED: EventKind.FAILED,
    }.get(t.to_phase, EventKind.STEP_ADVANCED)


def _final_weight(phase: Phase) -> int:
    return 100 if phase is Phase.PROMOTED else 0


def _failed(cell: CellVerdict) -> FailedCell:
    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return FailedCell(
        cell.metric,
        cell.cohort,
        cell.reason,
        finite(cell.baseline.value) if cell.baseline else None,
        finite(cell.candidate.value) if cell.candidate else None,
        finite(cell.baseline.samples) if cell.baseline else None,
        finite(cell.candidate.samples) if cell.candidate else None,
        cell.query,
        cell.decided_by is Limit.BREAKER,
    )


# --- a rollout recorded in the audit ---------------------------------------------------


@dataclass(frozen=True)
class RecordedRange:
    """Where a recorded rollout ran: from its start to its end (or to `now`)."""

    rollout: ModelRollout
    start: datetime
    end: datetime
    #: the phase it was recorded in
    phase: str
    ended: bool


def recorded_range(
    row: StoredRollout, transitions: Sequence[TransitionRecord], now: datetime
) -> RecordedRange:
    """The policy and time range of a rollout in the audit: from the start of its
    latest candidate's analysis to its last transition if it ended, else to `now`."""
    rollout = ModelRollout.model_validate(row.policy)
    state = RolloutState.from_json(row.state)
    ended = state.phase.terminal
    end = now
    if ended:
        last = [t.at for t in transitions if t.at >= state.analysis_since]
        end = max(last) if last else (row.updated_at or now)
    return RecordedRange(rollout, state.analysis_since, end, str(state.phase), ended)


def with_recorded_versions(policy: ModelRollout, recorded: ModelRollout) -> ModelRollout:
    """`policy`'s steps, cohorts and analysis, on the recorded rollout's model,
    versions and namespace: the data was recorded for those."""
    spec = policy.spec.model_copy(
        update={
            "model": recorded.spec.model,
            "baseline": recorded.spec.baseline,
            "candidate": recorded.spec.candidate,
        }
    )
    metadata = policy.metadata.model_copy(
        update={"name": recorded.metadata.name, "namespace": recorded.metadata.namespace}
    )
    return policy.model_copy(update={"spec": spec, "metadata": metadata})


def describe_versions(rollout: ModelRollout) -> str:
    spec = rollout.spec
    return f"{spec.model} {spec.baseline.version} → {spec.candidate.version}"
