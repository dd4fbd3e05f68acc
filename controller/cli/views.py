"""What the CLI shows, built from the store: status rows, verdict grids, the history.

Plain functions from records to dicts (for `--output json`) and to rich
renderables (for people), so both outputs always say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from controller.engine.phases import Phase
from controller.engine.state import RolloutState
from controller.errors import PermanentError
from controller.policy import Cause, ModelRollout, format_duration
from controller.store.base import RolloutStore, SourceProblemStore
from controller.store.records import AnalysisRecord, OutboxMessage, StoredRollout


class StatusStore(RolloutStore, SourceProblemStore, Protocol):
    """What `canaryctl status` reads: rollouts, and why a source holds one as it is."""


VERDICT_STYLE = {
    "pass": "green",
    "fail": "bold red",
    "inconclusive": "yellow",
    "no-data": "magenta",
}


def resolve(store: RolloutStore, name: str) -> StoredRollout:
    """The rollout called `namespace/name`, or `name` when that is unique."""
    rows = store.rollouts()
    matches = [r for r in rows if r.key == name or (r.name == name and "/" not in name)]
    if not matches:
        known = ", ".join(r.key for r in rows) or "none yet"
        raise PermanentError(f"no rollout {name!r} in the store (known: {known})")
    if len(matches) > 1:
        keys = ", ".join(r.key for r in matches)
        raise PermanentError(f"{name!r} is ambiguous ({keys}); give namespace/name")
    return matches[0]


def last_look(store: RolloutStore, row: StoredRollout) -> list[AnalysisRecord]:
    """The verdicts of the rollout's latest look."""
    tick = RolloutState.from_json(row.state).tick
    found = list(store.analyses(row.key, since_tick=max(tick - 1, 0)))
    if not found:
        return []
    latest = max(a.tick for a in found)
    return [a for a in found if a.tick == latest]


def hold_progress(row: StoredRollout, now: datetime) -> tuple[float, float] | None:
    """(seconds held, seconds to hold) at the current step or shadow, if any."""
    policy = ModelRollout.model_validate(row.policy)
    state = RolloutState.from_json(row.state)
    since = state.step_since
    if state.phase is Phase.SHADOWING and policy.spec.shadow is not None:
        total = policy.spec.shadow.duration
    elif state.phase is Phase.PROGRESSING and 0 <= state.step < len(policy.spec.steps):
        total = policy.spec.steps[state.step].hold
    else:
        return None
    held = min(max(now - since, timedelta(0)), total)
    return held.total_seconds(), total.total_seconds()


def status_json(store: StatusStore, row: StoredRollout, now: datetime) -> dict[str, Any]:
    state = RolloutState.from_json(row.state)
    held = store.source_problem(row.key)
    progress = hold_progress(row, now)
    route = state.serving().to_json()
    return {
        "rollout": row.key,
        "phase": row.phase,
        "step": row.step + 1,
        "route": route,
        "candidate": row.candidate_version,
        "reason": state.reason,
        "cause": state.cause,
        "waiting": state.waiting,
        "gate": state.gate.to_json() if state.gate is not None else None,
        "hold": {"held_s": progress[0], "total_s": progress[1]} if progress else None,
        "verdicts": [
            {"metric": a.metric, "cohort": a.cohort, "verdict": a.verdict}
            for a in last_look(store, row)
        ],
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
        "notifications": notifications_json(store.outbox(row.key)),
        "source_problem": (
            {"problem": held.problem, "since": held.since.isoformat()} if held else None
        ),
    }


def notifications_json(outbox: Sequence[OutboxMessage]) -> dict[str, Any]:
    """How the rollout's notifications stand: still queued, given up on, and why."""
    return {
        "queued": sum(m.status in ("pending", "sending") for m in outbox),
        "failed": sum(m.status == "failed" for m in outbox),
        "problems": [
            {"event": m.event, "status": m.status, "attempts": m.attempts, "error": m.last_error}
            for m in outbox
            if m.last_error and m.status != "sent"
        ][-5:],
    }


def status_view(store: StatusStore, row: StoredRollout, now: datetime) -> RenderableType:
    data = status_json(store, row, now)
    route = data["route"]
    head = Table.grid(padding=(0, 2))
    head.add_row(
        Text(row.key, style="bold"),
        Text(row.phase, style=_phase_style(row.phase)),
        f"step {data['step']}" if row.step >= 0 else "before step 1",
        f"candidate {route.get('weight', 0)}%"
        + "".join(f", {k} {v}%" for k, v in route.get("cohorts", {}).items())
        + (f", mirror {route['mirrorPercent']}%" if route.get("mirrorPercent") else ""),
    )
    parts: list[RenderableType] = [head, _reason_line(data["cause"], data["reason"])]
    gate = data["gate"]
    if gate:
        since = datetime.fromisoformat(gate["since"])
        waited = format_duration(max(now - since, timedelta(0)))
        verb = "failed, paused" if row.phase == "Paused" else "running"
        parts.append(
            Text(
                f"gate {gate['name']} ({gate['point']}): {verb}, attempt {gate['attempt']}, "
                f"for {waited}",
                style="bold cyan",
            )
        )
    if data["source_problem"]:
        parts.append(Text(f"held: {data['source_problem']['problem']}", style="bold yellow"))
    if data["hold"]:
        held, total = data["hold"]["held_s"], data["hold"]["total_s"]
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            "hold",
            ProgressBar(total=max(total, 1), completed=held, width=30),
            f"{format_duration(timedelta(seconds=round(held)))}"
            f"/{format_duration(timedelta(seconds=round(total)))}",
        )
        parts.append(bar)
    grid = verdict_grid(last_look(store, row))
    if grid is not None:
        parts.append(grid)
    notes = _notifications_line(data["notifications"])
    if notes is not None:
        parts.append(notes)
    return Group(*parts)


def _reason_line(cause: str | None, reason: str) -> Text:
    """The reason, after its cause code when it has one."""
    line = Text()
    if cause:
        line.append(f"[{cause}] ", style=_CAUSE_STYLE.get(cause, "yellow"))
    line.append(reason, style="dim")
    return line


def _notifications_line(data: dict[str, Any]) -> Text | None:
    """A line only when owners may be missing messages: failed, or queued behind an error."""
    problems = data["problems"]
    if data["failed"]:
        line = f"notifications: {data['failed']} failed"
        if problems:
            line += f" ({problems[-1]['error']})"
        return Text(line, style="bold red")
    if problems:
        return Text(
            f"notifications: {data['queued']} queued, retrying ({problems[-1]['error']})",
            style="yellow",
        )
    return None


def verdict_grid(cells: Sequence[AnalysisRecord]) -> Table | None:
    """Cohorts down, metrics across, each cell its verdict."""
    if not cells:
        return None
    metrics = list(dict.fromkeys(a.metric for a in cells))
    cohorts = list(dict.fromkeys(a.cohort for a in cells))
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("cohort")
    for metric in metrics:
        table.add_column(metric)
    by = {(a.cohort, a.metric): a.verdict for a in cells}
    for cohort in cohorts:
        table.add_row(
            cohort,
            *(
                Text(by.get((cohort, m), "-"), style=VERDICT_STYLE.get(by.get((cohort, m), ""), ""))
                for m in metrics
            ),
        )
    return table


def history_json(store: RolloutStore, row: StoredRollout) -> dict[str, Any]:
    analyses = store.analyses(row.key)
    by_time: dict[datetime, list[AnalysisRecord]] = {}
    for a in analyses:
        by_time.setdefault(a.at, []).append(a)
    events = []
    for t in store.transitions(row.key):
        looked = [a for a in by_time.get(t.at, []) if a.evidence.get("critical", True)]
        evidence = [_evidence(a) for a in _deciding(t.cause, t.to_phase, looked)]
        events.append(
            {
                "at": t.at.isoformat(),
                "kind": "transition",
                "from": t.from_phase,
                "to": t.to_phase,
                "step": t.to_step + 1,
                "actor": t.actor,
                "cause": t.cause,
                "reason": t.reason,
                "evidence": evidence,
                "gate": t.details.get("gate"),
            }
        )
    for c in store.commands(row.key):
        events.append(
            {
                "at": c.at.isoformat(),
                "kind": "command",
                "command": c.command,
                "actor": c.actor,
                "reason": c.reason,
            }
        )
    for r in store.route_actions(row.key):
        events.append(
            {
                "at": r.at.isoformat(),
                "kind": "route",
                "action": r.action,
                "desired": r.desired,
                "error": r.error,
                "reason": r.reason,
            }
        )
    for m in store.outbox(row.key):
        events.append(
            {
                "at": m.created_at.isoformat(),
                "kind": "notification",
                "event": m.event,
                "status": m.status,
                "attempts": m.attempts,
                "error": m.last_error,
            }
        )
    events.sort(key=lambda e: (e["at"], e["kind"] != "route"))
    return {"rollout": row.key, "phase": row.phase, "events": events}


def _deciding(
    cause: str | None, to_phase: str, looked: Sequence[AnalysisRecord]
) -> list[AnalysisRecord]:
    """The cells a transition was decided on, chosen by its cause: the failures for a
    failed metric, the cells without data for NoData, the undecided ones for Deadline.
    (Transitions recorded before causes existed: the failures, else what kept it.)"""
    if cause in (Cause.LIMIT_BROKEN, Cause.CIRCUIT_BREAKER):
        return [a for a in looked if a.verdict == "fail"]
    if cause == Cause.NO_DATA:
        return [a for a in looked if a.verdict == "no-data"]
    if cause == Cause.DEADLINE:
        return [a for a in looked if a.verdict != "pass"]
    if cause is not None:
        return []
    return [a for a in looked if a.verdict == "fail"] or [
        a
        for a in looked
        if a.verdict in ("no-data", "inconclusive") and Phase(to_phase) is not Phase.PROGRESSING
    ]


def _evidence(a: AnalysisRecord) -> dict[str, Any]:
    return {
        "metric": a.metric,
        "cohort": a.cohort,
        "verdict": a.verdict,
        "baseline": a.baseline_value,
        "candidate": a.candidate_value,
        "baseline_samples": a.baseline_samples,
        "candidate_samples": a.candidate_samples,
        "reason": a.evidence.get("reason", ""),
        "query": a.query,
    }


def history_view(data: dict[str, Any]) -> Table:
    table = Table(title=f"{data['rollout']} ({data['phase']})", show_lines=False)
    table.add_column("when")
    table.add_column("what")
    table.add_column("who")
    table.add_column("details", overflow="fold")
    for e in data["events"]:
        when = e["at"][:19].replace("T", " ")
        if e["kind"] == "transition":
            what = Text(f"{e['from']} → {e['to']}", style=_phase_style(e["to"]))
            if e.get("cause"):
                what.append(f"\n{e['cause']}", style=_CAUSE_STYLE.get(e["cause"], "yellow"))
            details = escape(e["reason"])
            for ev in e["evidence"]:
                details += (
                    f"\n  {escape(ev['metric'])} in {escape(ev['cohort'])}: {ev['verdict']}"
                    f" (baseline {_num(ev['baseline'])} n={_num(ev['baseline_samples'])},"
                    f" candidate {_num(ev['candidate'])} n={_num(ev['candidate_samples'])})"
                )
            gate = e.get("gate")
            if gate:
                details += f"\n  gate {escape(gate['name'])} attempt {gate['attempt']}: "
                details += escape(gate["detail"] or gate["outcome"])
                if gate["body"]:
                    details += f"\n  {escape(gate['body'])}"
            table.add_row(when, what, e["actor"], details)
        elif e["kind"] == "command":
            table.add_row(when, f"command {e['command']}", e["actor"], escape(e["reason"]))
        elif e["kind"] == "notification":
            table.add_row(when, Text(f"notify {e['event']}", style="dim"), "", _delivery(e))
        else:
            desired = e["desired"]
            text = (
                f"restore to {desired['restore']}"
                if "restore" in desired
                else f"candidate {desired.get('weight', 0)}%"
            )
            if e["error"]:
                text += f" [red]failed: {escape(e['error'])}[/red]"
            if e.get("reason"):
                text += f"\n  {escape(e['reason'])}"
            table.add_row(when, Text(f"route {e['action']}", style="dim"), "", text)
    return table


def _delivery(e: dict[str, Any]) -> str:
    """Where a notification stands, with the error a human has to fix, if any."""
    attempts = f", {e['attempts']} attempt(s)" if e["attempts"] > 1 else ""
    if e["status"] == "failed":
        return f"[red]failed{attempts}: {escape(e['error'] or '')}[/red]"
    if e["status"] in ("pending", "sending"):
        if e["error"]:
            return f"[yellow]{e['status']}, retrying{attempts}: {escape(e['error'])}[/yellow]"
        return str(e["status"])
    return f"{e['status']}{attempts}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}"


#: only a failed metric is red: not measuring or not deciding in time is not a failure
_CAUSE_STYLE: dict[str, str] = {
    Cause.LIMIT_BROKEN: "bold red",
    Cause.CIRCUIT_BREAKER: "bold red",
    Cause.ROUTE_FAILED: "red",
    Cause.NO_DATA: "magenta",
    Cause.DEADLINE: "yellow",
    Cause.MANUAL: "cyan",
    Cause.GATE_FAILED: "red",
}


_PHASE_STYLES = {
    Phase.ROLLED_BACK: "bold red",
    Phase.ABORTED: "red",
    Phase.FAILED: "red",
    Phase.PROMOTED: "bold green",
    Phase.PAUSED: "yellow",
}


def _phase_style(phase: str) -> str:
    return _PHASE_STYLES.get(Phase(phase), "cyan")
