"""The engine's Observer, backed by a metric provider and the analysis judge.

Counts run from the start of the analysis (`state.analysis_since`) to this look,
so the judge's anytime-valid tests see every request the candidate served; the
full verdicts go to the audit, the engine gets the per-cell summary it decides on.

The judge also gets the counts as they were when each later traffic step began
(`state.step_starts`), so it compares the versions step by step and a baseline
drifting over the rollout does not bias the contrast. Those counts never change
once the step has begun: each is asked for once and kept (`_Snapshots`) until
the rollout ends, restarts or is not looked at for `FORGET_AFTER`. One that
failed is asked for again at the next look; until then the judge compares
cumulative counts.
The queries of one look share a deadline (see `JudgingObserver`), passed down in the
`QueryContext`: each query gets what is left of it, and none is cut off by force.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from controller.analysis import CellVerdict, Judgement, JudgeOptions, MetricObservation, judge
from controller.analysis.observations import VersionData
from controller.analysis.verdicts import Limit, NoDataReason, Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.metrics.base import MetricProvider, QueryContext, collect
from controller.policy import ModelRollout
from controller.runtime.executor import Observation
from controller.store.records import AnalysisRecord

#: the snapshots of a rollout not looked at for this long are dropped (a rollout
#: that ended, was deleted or moved to another replica); asked for again if needed
FORGET_AFTER = timedelta(hours=1)
#: the others' snapshots are swept for staleness at most this often: every look
#: scanning every rollout's made a tick's cost grow with N (a rollout's own snapshot
#: is checked at its own look, so none is ever used past `FORGET_AFTER`)
SWEEP_EVERY = timedelta(minutes=1)


@dataclass
class _Snapshots:
    """One rollout's counts at its steps' starts, for one candidate and analysis start."""

    candidate: str
    analysis_since: datetime
    seen: datetime
    at: dict[datetime, Mapping[str, MetricObservation]] = field(default_factory=dict)


class JudgingObserver:
    """Looks at a rollout's metrics through `provider` and judges them."""

    def __init__(
        self,
        provider: MetricProvider,
        options: JudgeOptions | None = None,
        *,
        tick_timeout: float | None = None,
    ) -> None:
        """`tick_timeout`: the queries of one look share min(analysis.interval, this)
        seconds (the interval alone if None), so a slow metrics source never holds a
        tick's thread past its interval; a query with no time left is NO_DATA."""
        self.provider = provider
        self.options = options
        self.tick_timeout = tick_timeout
        self.last: dict[str, Judgement] = {}
        self._snapshots: dict[str, _Snapshots] = {}
        self._swept: datetime | None = None

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        spec = rollout.spec
        budget = spec.analysis.interval.total_seconds()
        if self.tick_timeout is not None:
            budget = min(budget, self.tick_timeout)
        cohorts = tuple(c.name for c in spec.cohorts)
        context = QueryContext(
            model=spec.model,
            namespace=rollout.metadata.namespace,
            start=state.analysis_since,
            end=max(now, state.analysis_since),
            window=spec.analysis.window,
            cohorts=cohorts,
            deadline=time.monotonic() + budget,
        )
        observations = collect(
            self.provider,
            spec.analysis.metrics,
            baseline=spec.baseline.version,
            candidate=spec.candidate.version,
            context=context,
        )
        step_starts = self._step_starts(rollout, state, context, now)
        judgement = judge(
            spec.analysis,
            cohorts,
            observations,
            at=now,
            options=self.options,
            step_starts=step_starts,
        )
        self.last[rollout.key] = judgement
        cells = tuple(engine_cell(c) for c in judgement.cells)
        records = tuple(audit_record(c, state.tick + 1, now) for c in judgement.cells)
        return Observation(Look(cells), records, judgement.cells)

    def _step_starts(
        self, rollout: ModelRollout, state: RolloutState, context: QueryContext, now: datetime
    ) -> list[Mapping[str, MetricObservation]]:
        """The counts at the start of each step after the first, oldest first: each
        asked for once (evaluated at the step's start), then taken from the cache."""
        self._forget(now)
        if state.phase.terminal:
            self._snapshots.pop(rollout.key, None)
            return []
        kept = self._snapshots.get(rollout.key)
        if (
            kept is None
            or now - kept.seen > FORGET_AFTER
            or kept.candidate != state.candidate_version
            or kept.analysis_since != state.analysis_since
        ):
            kept = _Snapshots(state.candidate_version, state.analysis_since, now)
            self._snapshots[rollout.key] = kept
        kept.seen = now
        starts = [at for at in state.step_starts if context.start < at <= context.end]
        kept.at = {at: kept.at[at] for at in starts if at in kept.at}
        out = []
        for at in starts:
            snapshot = kept.at.get(at)
            if snapshot is None:
                spec = rollout.spec
                snapshot = collect(
                    self.provider,
                    spec.analysis.metrics,
                    baseline=spec.baseline.version,
                    candidate=spec.candidate.version,
                    context=dataclasses.replace(context, end=at),
                )
                if all(_measured(o) for o in snapshot.values()):
                    kept.at[at] = snapshot  # a failure is asked for again next look
            out.append(snapshot)
        return out

    def _forget(self, now: datetime) -> None:
        swept = self._swept
        if swept is not None and swept <= now < swept + SWEEP_EVERY:
            return
        self._swept = now
        # `list` copies the items in one step: ticks on other threads add to the dict
        stale = [k for k, v in list(self._snapshots.items()) if now - v.seen > FORGET_AFTER]
        for key in stale:
            self._snapshots.pop(key, None)


def _measured(observation: MetricObservation) -> bool:
    return isinstance(observation.baseline, VersionData) and isinstance(
        observation.candidate, VersionData
    )


def engine_cell(c: CellVerdict) -> Cell:
    """What the engine decides on. A candidate without requests yet is not missing
    data but not enough evidence: INCONCLUSIVE, waiting for traffic, never `noData`."""
    no_traffic = c.verdict is Verdict.NO_DATA and c.no_data is NoDataReason.NO_CANDIDATE_TRAFFIC
    return Cell(
        c.metric,
        c.cohort,
        Verdict.INCONCLUSIVE if no_traffic else c.verdict,
        c.critical,
        summary=c.reason,
        breaker=c.verdict is Verdict.FAIL and c.decided_by is Limit.BREAKER,
        powered=c.powered,
        waiting_for_traffic=no_traffic or c.waiting_for_traffic,
        candidate_samples=_finite(c.candidate.samples) if c.candidate else None,
        needed_samples=_finite(c.needed_samples),
    )


def audit_record(cell: CellVerdict, tick: int, at: datetime) -> AnalysisRecord:
    return AnalysisRecord(
        at=at,
        tick=tick,
        metric=cell.metric,
        cohort=cell.cohort,
        verdict=str(cell.verdict),
        query=cell.query,
        baseline_value=_finite(cell.baseline.value) if cell.baseline else None,
        candidate_value=_finite(cell.candidate.value) if cell.candidate else None,
        baseline_samples=_finite(cell.baseline.samples) if cell.baseline else None,
        candidate_samples=_finite(cell.candidate.samples) if cell.candidate else None,
        evidence=_json(
            {
                "reason": cell.reason,
                "critical": cell.critical,
                "decidedBy": cell.decided_by,
                "noData": cell.no_data,
                "powered": cell.powered,
                "neededSamples": _finite(cell.needed_samples),
                "checks": [_fields(check) for check in cell.checks],
            }
        ),
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _json(value: Any) -> Any:
    """Plain JSON: enums as their values, non-finite floats as None, dataclasses as
    their fields (what `dataclasses.asdict` would give, without its deep copy of
    every value: the checks of 16 cells per tick, each JSON the moment after)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _fields(value)
    return value


def _fields(value: Any) -> dict[str, Any]:
    # About 900 values a tick (16 cells, their checks' fields): the plain ones are
    # taken as they are without going through `_json`'s tests.
    out: dict[str, Any] = {}
    for name in _field_names(type(value)):
        item = getattr(value, name)
        kind = item.__class__
        if item is None or kind is str or kind is bool or kind is int:
            out[name] = item
        elif kind is float or isinstance(item, float):  # numpy's floats are floats too
            out[name] = item if math.isfinite(item) else None
        elif isinstance(item, Enum):
            out[name] = item.value
        else:
            out[name] = _json(item)
    return out


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(kind: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(kind)
    if names is None:
        names = _FIELD_NAMES[kind] = tuple(f.name for f in dataclasses.fields(kind))
    return names
