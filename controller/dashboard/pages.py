"""What the dashboard's two pages show, read from the audit store into typed views.

Everything is read through `RolloutStore`, the same port `canaryctl status` and
`history` read, and turned here (once, at the edge) from the store's JSON into
frozen views; the templates only lay them out. The clock is an argument: a page
says how old a rollout is relative to `now`, and every other time relative to the
rollout's start (`T+5m`), as the demo and the Slack messages do.

A policy that no longer validates (an older version's, or a hand-written store)
still shows: the page falls back to what the audit itself recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from controller.analysis.verdicts import Verdict, worst
from controller.cases import EvalCase
from controller.dashboard.charts import Chart, chart
from controller.dashboard.formats import Unit
from controller.engine.phases import Phase
from controller.engine.state import RolloutState
from controller.policy import ModelRollout, format_duration
from controller.policy.gates import GatePoint
from controller.policy.templates import TEMPLATES, MetricKind
from controller.policy.templates import Unit as TemplateUnit
from controller.store.base import RolloutStore
from controller.store.records import AnalysisRecord, StoredRollout


@dataclass(frozen=True)
class RolloutRow:
    """One line of the rollouts page."""

    key: str
    namespace: str
    name: str
    model: str
    baseline: str
    candidate: str
    phase: str
    cause: str | None
    step: str  # "shadow", "step 2 of 5", "before step 1"
    weight: str  # "5%, non-english 10%", "mirror 100%"
    worst: str | None  # the worst critical verdict of the latest look
    age: timedelta
    owners: tuple[str, ...]
    live: bool
    #: the gate the rollout waits for: "replay-evals (preRollout, attempt 2)"
    gate: str | None = None


@dataclass(frozen=True)
class RolloutList:
    rows: tuple[RolloutRow, ...]
    namespaces: tuple[str, ...]  # every namespace in the store, for the filter
    phases: tuple[str, ...]
    namespace: str  # the filter ("" for all)
    phase: str

    @property
    def live(self) -> bool:
        return any(r.live for r in self.rows)


@dataclass(frozen=True)
class Check:
    """One limit of a cell, as the judge tested it."""

    limit: str
    threshold: float | None
    tolerance: float | None
    statement: str
    method: str
    verdict: str
    estimate: float | None
    lower: float | None
    upper: float | None
    alpha: float | None
    reason: str
    deciding: bool

    def limit_unit(self, unit: Unit) -> Unit:
        """The unit of the limit and its tolerance: the metric's, but a ratio is a number."""
        return unit if self.limit in ("max", "min", "maxIncrease", "maxDecrease") else Unit.PLAIN

    def tested_unit(self, unit: Unit) -> Unit:
        """The unit of what was tested (see `statement`): a rate's difference is in points,
        a latency's tail is tested as the share of requests beyond it."""
        return Unit.PERCENT if unit is Unit.PERCENT else Unit.PLAIN


@dataclass(frozen=True)
class Cell:
    """One metric in one cohort at one look, with the evidence the judge recorded."""

    metric: str
    cohort: str
    verdict: str
    critical: bool
    unit: Unit
    baseline: float | None
    candidate: float | None
    baseline_samples: float | None
    candidate_samples: float | None
    reason: str
    query: str
    checks: tuple[Check, ...]
    index: int  # for the cell's anchor (#cell-3): names may hold any character


@dataclass(frozen=True)
class Grid:
    """Cohorts down, metrics across, at one look."""

    metrics: tuple[str, ...]
    cohorts: tuple[str, ...]
    cells: tuple[Cell, ...]

    def cell(self, cohort: str, metric: str) -> Cell | None:
        for c in self.cells:
            if c.cohort == cohort and c.metric == metric:
                return c
        return None


@dataclass(frozen=True)
class Look:
    """One look of the judge: a mark on the timeline, a link to its grid."""

    tick: int
    at: datetime
    since_start: timedelta
    worst: str


@dataclass(frozen=True)
class StepView:
    """A stage of the policy (the shadow or a step) and how far the rollout got."""

    label: str
    weight: str
    hold: str
    cohort_weights: tuple[tuple[str, int], ...]
    pause: bool
    state: str  # "done", "current", "ended" (where it stopped), "ahead", "skipped"


@dataclass(frozen=True)
class Stage:
    """A stretch of time at one phase and step, between two transitions (the timeline)."""

    start: timedelta
    end: timedelta
    phase: str
    label: str


@dataclass(frozen=True)
class Event:
    """A line of the audit: a transition, a route write, a command or a notification."""

    at: datetime
    since_start: timedelta
    kind: str
    title: str
    detail: str
    actor: str
    cause: str | None
    problem: bool  # a failed route write, a failed delivery


@dataclass(frozen=True)
class CaseView:
    """An eval case recorded from a failing cell, as the regression set keeps it."""

    id: str
    at: datetime
    metric: str
    cohort: str
    summary: str


@dataclass(frozen=True)
class RolloutPage:
    row: RolloutRow
    reason: str
    started_at: datetime
    steps: tuple[StepView, ...]
    stages: tuple[Stage, ...]
    looks: tuple[Look, ...]
    look: Look | None  # the look the grid shows
    latest: bool
    grid: Grid | None
    charts: tuple[tuple[str, tuple[Chart, ...]], ...]  # per critical metric, a chart per cohort
    transitions: tuple[Event, ...]
    routes: tuple[Event, ...]
    commands: tuple[Event, ...]
    notifications: tuple[Event, ...]
    cases: tuple[CaseView, ...]
    span: timedelta  # from the start to the last record

    def x(self, delta: timedelta) -> float:
        """Where `delta` after the start lies on the timeline, 10..990 of 1000."""
        if self.span <= timedelta(0):
            return 500.0
        return 10 + 980 * min(max(delta / self.span, 0.0), 1.0)

    def earlier(self) -> Look | None:
        return self._step(-1)

    def later(self) -> Look | None:
        return self._step(1)

    def _step(self, by: int) -> Look | None:
        if self.look is None:
            return None
        i = self.looks.index(self.look) + by
        return self.looks[i] if 0 <= i < len(self.looks) else None


def _policy(row: StoredRollout) -> ModelRollout | None:
    try:
        return ModelRollout.model_validate(row.policy)
    except ValidationError:
        return None


def _units(policy: ModelRollout | None) -> dict[str, Unit]:
    units: dict[str, Unit] = {}
    for m in policy.spec.analysis.metrics if policy else ():
        if m.template is not None:
            unit = TEMPLATES[m.template].unit
            units[m.metric_name] = {
                TemplateUnit.RATIO: Unit.PERCENT,
                TemplateUnit.SECONDS: Unit.SECONDS,
                TemplateUnit.SCORE: Unit.SCORE,
            }.get(unit, Unit.PLAIN)
        elif m.metric_kind is MetricKind.PROPORTION:
            units[m.metric_name] = Unit.PERCENT
    return units


def _state(row: StoredRollout) -> RolloutState | None:
    try:
        return RolloutState.from_json(row.state)
    except (KeyError, TypeError, ValueError):
        return None


def _weight(state: RolloutState | None) -> str:
    if state is None:
        return "-"
    route = state.serving()
    if route.mirror_percent and not route.weight:
        return f"mirror {route.mirror_percent}%"
    text = f"{route.weight}%"
    text += "".join(f", {cohort} {w}%" for cohort, w in route.cohorts)
    if route.mirror_percent:
        text += f", mirror {route.mirror_percent}%"
    return text


def _step(row: StoredRollout, policy: ModelRollout | None) -> str:
    steps = len(policy.spec.steps) if policy else None
    if row.phase == Phase.SHADOWING:
        return "shadow"
    if row.step < 0:
        return "before step 1"
    return f"step {row.step + 1}" + (f" of {steps}" if steps else "")


def _owners(policy: ModelRollout | None) -> tuple[str, ...]:
    slack = policy.spec.owners.slack if policy else None
    return (slack.channel, *slack.mention) if slack else ()


def latest_look(store: RolloutStore, row: StoredRollout) -> list[AnalysisRecord]:
    """The cells of the rollout's latest look (as `canaryctl status` shows them)."""
    tick = int(row.state.get("tick", 0))
    found = list(store.analyses(row.key, since_tick=max(tick - 1, 0)))
    if not found:
        return []
    last = max(a.tick for a in found)
    return [a for a in found if a.tick == last]


def _worst(cells: Sequence[AnalysisRecord]) -> str | None:
    critical = [Verdict(a.verdict) for a in cells if a.evidence.get("critical", True)]
    return str(worst(critical)) if critical else None


def rollout_row(store: RolloutStore, row: StoredRollout, now: datetime) -> RolloutRow:
    policy = _policy(row)
    state = _state(row)
    spec = policy.spec if policy else None
    return RolloutRow(
        key=row.key,
        namespace=row.namespace,
        name=row.name,
        model=spec.model if spec else "-",
        baseline=spec.baseline.version if spec else "-",
        candidate=row.candidate_version,
        phase=row.phase,
        cause=str(state.cause) if state and state.cause else None,
        step=_step(row, policy),
        weight=_weight(state),
        worst=_worst(latest_look(store, row)),
        age=max(now - row.created_at, timedelta(0)) if row.created_at else timedelta(0),
        owners=_owners(policy),
        live=not _terminal(row.phase),
        gate=_gate(state),
    )


def _gate(state: RolloutState | None) -> str | None:
    wait = state.gate if state is not None else None
    if wait is None:
        return None
    at = f"beforeStep {wait.step + 1}" if wait.point is GatePoint.BEFORE_STEP else str(wait.point)
    return f"{wait.name} ({at}, attempt {wait.attempt})"


def _terminal(phase: str) -> bool:
    try:
        return Phase(phase).terminal
    except ValueError:
        return True


def rollout_list(
    store: RolloutStore, now: datetime, *, namespace: str = "", phase: str = ""
) -> RolloutList:
    rows = sorted(store.rollouts(), key=lambda r: r.key)
    shown = [
        r
        for r in rows
        if (not namespace or r.namespace == namespace) and (not phase or r.phase == phase)
    ]
    return RolloutList(
        rows=tuple(rollout_row(store, r, now) for r in shown),
        # a filter on a namespace (or phase) with no rollout stays shown as chosen
        namespaces=tuple(sorted({r.namespace for r in rows} | ({namespace} - {""}))),
        phases=tuple(dict.fromkeys([*(str(p) for p in Phase), *([phase] if phase else [])])),
        namespace=namespace,
        phase=phase,
    )


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _checks(evidence: Mapping[str, Any]) -> tuple[Check, ...]:
    decided_by = evidence.get("decidedBy")
    found = []
    for c in evidence.get("checks") or ():
        if not isinstance(c, Mapping):
            continue
        found.append(
            Check(
                limit=str(c.get("limit", "")),
                threshold=_float(c.get("threshold")),
                tolerance=_float(c.get("tolerance")),
                statement=str(c.get("statement", "")),
                method=str(c.get("method", "")),
                verdict=str(c.get("verdict", "")),
                estimate=_float(c.get("estimate")),
                lower=_float(c.get("lower")),
                upper=_float(c.get("upper")),
                alpha=_float(c.get("alpha")),
                reason=str(c.get("reason", "")),
                deciding=c.get("limit") == decided_by,
            )
        )
    return tuple(found)


def grid(cells: Sequence[AnalysisRecord], units: Mapping[str, Unit]) -> Grid:
    metrics = tuple(dict.fromkeys(a.metric for a in cells))
    cohorts = tuple(dict.fromkeys(a.cohort for a in cells))
    return Grid(
        metrics=metrics,
        cohorts=cohorts,
        cells=tuple(
            Cell(
                metric=a.metric,
                cohort=a.cohort,
                verdict=a.verdict,
                critical=bool(a.evidence.get("critical", True)),
                unit=units.get(a.metric, Unit.PLAIN),
                baseline=a.baseline_value,
                candidate=a.candidate_value,
                baseline_samples=a.baseline_samples,
                candidate_samples=a.candidate_samples,
                reason=str(a.evidence.get("reason", "")),
                query=a.query,
                checks=_checks(a.evidence),
                index=i,
            )
            for i, a in enumerate(cells)
        ),
    )


def _steps(policy: ModelRollout, row: StoredRollout) -> tuple[StepView, ...]:
    spec = policy.spec
    ended = _terminal(row.phase) and row.phase != Phase.PROMOTED
    shadowing = row.phase == Phase.SHADOWING or (row.step < 0 and spec.shadow is not None)

    def state_of(index: int) -> str:  # index -1 is the shadow
        if row.phase == Phase.PROMOTED:
            return "done"
        current = -1 if shadowing else row.step
        if index < current:
            return "done"
        if index == current:
            return "ended" if ended else "current"
        return "skipped" if ended else "ahead"

    views = []
    if spec.shadow is not None:
        views.append(
            StepView(
                label="shadow",
                weight=f"mirror {spec.shadow.mirror_percent}%",
                hold=format_duration(spec.shadow.duration),
                cohort_weights=(),
                pause=False,
                state=state_of(-1),
            )
        )
    for i, step in enumerate(spec.steps):
        views.append(
            StepView(
                label=f"step {i + 1}",
                weight=f"{step.weight}%",
                hold=format_duration(step.hold),
                cohort_weights=tuple(sorted(step.cohort_weights.items())),
                pause=step.pause,
                state=state_of(i),
            )
        )
    return tuple(views)


def _stage_label(phase: str, step: int, policy: ModelRollout | None) -> str:
    if phase == Phase.SHADOWING:
        return "shadow"
    if phase == Phase.PROGRESSING and step >= 0:
        weight = (
            f" · {policy.spec.steps[step].weight}%"
            if policy and step < len(policy.spec.steps)
            else ""
        )
        return f"step {step + 1}{weight}"
    return phase


def _events(
    store: RolloutStore, row: StoredRollout, start: datetime
) -> tuple[tuple[Event, ...], tuple[Event, ...], tuple[Event, ...], tuple[Event, ...]]:
    def event(
        at: datetime,
        kind: str,
        title: str,
        detail: str,
        actor: str = "",
        cause: str | None = None,
        problem: bool = False,
    ) -> Event:
        return Event(at, at - start, kind, title, detail, actor, cause, problem)

    transitions = tuple(
        event(t.at, "transition", f"{t.from_phase} → {t.to_phase}", t.reason, t.actor, t.cause)
        for t in store.transitions(row.key)
    )
    routes = tuple(
        event(
            r.at,
            "route",
            r.action,
            _route_detail(r.desired, r.reason)
            + (f"; failed: {r.error}" if r.error is not None else ""),
            problem=r.error is not None,
        )
        for r in store.route_actions(row.key)
    )
    commands = tuple(
        event(c.at, "command", c.command, c.reason, c.actor) for c in store.commands(row.key)
    )
    notifications = tuple(
        event(
            m.created_at,
            "notification",
            m.event,
            m.status
            + (f", {m.attempts} attempt(s)" if m.attempts > 1 else "")
            + (f": {m.last_error}" if m.last_error and m.status != "sent" else ""),
            problem=m.status == "failed",
        )
        for m in store.outbox(row.key)
    )
    return transitions, routes, commands, notifications


def _route_detail(desired: Mapping[str, Any], reason: str | None) -> str:
    if "restore" in desired:
        text = f"restore to {desired['restore']}"
    else:
        text = f"candidate {desired.get('weight', 0)}%"
        cohorts = desired.get("cohorts") or {}
        if isinstance(cohorts, Mapping):
            text += "".join(f", {k} {v}%" for k, v in sorted(cohorts.items()))
        if desired.get("mirrorPercent"):
            text += f", mirror {desired['mirrorPercent']}%"
    return f"{text} ({reason})" if reason else text


def _stages(
    transitions: Sequence[Event],
    records: Sequence[tuple[str, int]],
    end: timedelta,
    policy: ModelRollout | None,
) -> tuple[Stage, ...]:
    stages = []
    for i, (t, (phase, step)) in enumerate(zip(transitions, records, strict=True)):
        until = transitions[i + 1].since_start if i + 1 < len(transitions) else end
        stages.append(Stage(t.since_start, until, phase, _stage_label(phase, step, policy)))
    return tuple(stages)


def _case(case: EvalCase) -> CaseView:
    traces = (
        f"{len(case.trace_ids)} trace IDs"
        if case.trace_ids
        else f"no trace IDs ({case.trace_ids_reason or 'none found'})"
    )
    return CaseView(
        id=case.id,
        at=case.created_at,
        metric=case.metric,
        cohort=case.cohort,
        summary=(
            f"baseline {_arm(case.baseline.value, case.baseline.samples)}, "
            f"candidate {_arm(case.candidate.value, case.candidate.samples)}; {traces}"
        ),
    )


def _arm(value: float | None, samples: float | None) -> str:
    shown = "n/a" if value is None else f"{value:.4g}"
    return f"{shown} ({samples:,.0f} samples)" if samples is not None else shown


def rollout_page(
    store: RolloutStore,
    row: StoredRollout,
    now: datetime,
    *,
    tick: int | None = None,
) -> RolloutPage:
    """The page of one rollout, its grid at look `tick` (default: the latest look)."""
    policy = _policy(row)
    units = _units(policy)
    state = _state(row)
    analyses = store.analyses(row.key)
    records = store.transitions(row.key)
    start = state.started_at if state else (records[0].at if records else (row.created_at or now))
    by_tick: dict[int, list[AnalysisRecord]] = {}
    for a in analyses:
        by_tick.setdefault(a.tick, []).append(a)
    looks = tuple(
        Look(
            tick=t,
            at=cells[0].at,
            since_start=cells[0].at - start,
            worst=_worst(cells) or str(worst(Verdict(a.verdict) for a in cells)),
        )
        for t, cells in sorted(by_tick.items())
    )
    chosen = next((lk for lk in looks if lk.tick == tick), None) if tick is not None else None
    look = chosen or (looks[-1] if looks else None)
    transitions, routes, commands, notifications = _events(store, row, start)
    last = max(
        [lk.since_start for lk in looks] + [e.since_start for e in transitions] + [timedelta(0)]
    )
    charts = tuple(
        (metric, tuple(chart(a, units.get(metric, Unit.PLAIN), start, look) for a in series))
        for metric, series in _series(analyses).items()
    )
    return RolloutPage(
        row=rollout_row(store, row, now),
        reason=state.reason if state else "",
        started_at=start,
        steps=_steps(policy, row) if policy else (),
        stages=_stages(
            transitions, [(t.to_phase, t.to_step) for t in records], max(last, timedelta(0)), policy
        ),
        looks=looks,
        look=look,
        latest=look is not None and look == looks[-1],
        grid=grid(by_tick[look.tick], units) if look else None,
        charts=charts,
        transitions=transitions,
        routes=routes,
        commands=commands,
        notifications=notifications,
        cases=tuple(_case(c) for c in store.eval_cases(row.key)),
        span=last,
    )


def _series(analyses: Sequence[AnalysisRecord]) -> dict[str, list[list[AnalysisRecord]]]:
    """Per critical metric, per cohort (in the order first judged), every look of the cell."""
    cells: dict[str, dict[str, list[AnalysisRecord]]] = {}
    for a in analyses:
        if a.evidence.get("critical", True):
            cells.setdefault(a.metric, {}).setdefault(a.cohort, []).append(a)
    return {metric: list(cohorts.values()) for metric, cohorts in cells.items()}


__all__ = [
    "CaseView",
    "Cell",
    "Check",
    "Event",
    "Grid",
    "Look",
    "RolloutList",
    "RolloutPage",
    "RolloutRow",
    "Stage",
    "StepView",
    "grid",
    "rollout_list",
    "rollout_page",
    "rollout_row",
]
