"""How `canaryctl demo` looks: progress as the rollout runs, the messages owners would get.

With `--output json`, progress goes to stderr and stdout carries exactly one
JSON object at the end, for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from controller.demo import DemoResult, Scenario, demo_rollout, rehearse, run_demo
from controller.engine.executor import TickResult
from controller.engine.state import EventKind
from controller.notify import ConsoleNotifier, Notification
from controller.policy import ModelRollout
from controller.routing import TrafficRouter

_STYLE: dict[str, str] = {
    EventKind.ROLLED_BACK: "red",
    EventKind.ABORTED: "red",
    EventKind.PROMOTED: "green",
    EventKind.HOLDING: "yellow",
    EventKind.PAUSED: "yellow",
}


def _clock(simulated: timedelta) -> str:
    minutes = int(simulated.total_seconds() // 60)
    return f"T+{minutes // 60}h{minutes % 60:02d}m"


def _slack_panels(out: Console) -> ConsoleNotifier:
    """The console notifier, framing each message the owners would read in Slack."""

    def show(note: Notification, text: str) -> None:
        _, _, message = text.partition("\n")  # the panel's title says where it goes
        out.print(
            Panel(
                escape(message),
                title=f"Slack {escape(note.channel or '(no channel)')} · {note.event}",
                title_align="left",
                border_style=_STYLE.get(note.event, "blue"),
            )
        )

    return ConsoleNotifier(show=show)


def run_and_show(scenario: Scenario, database: Path, seed: int, *, json_output: bool) -> None:
    out = Console(stderr=json_output, highlight=False)
    rollout = demo_rollout()
    out.print(
        f"[bold]canary-controller demo[/bold] · scenario [cyan]{scenario}[/cyan] · "
        f"{rollout.key}: {rollout.spec.model} {rollout.spec.baseline.version} → "
        f"{rollout.spec.candidate.version}, {len(rollout.spec.cohorts)} cohorts, "
        f"judged every {rollout.spec.analysis.interval.total_seconds():.0f}s (simulated)"
    )
    started = time.monotonic()
    ticks = 0

    def progress(tick: TickResult, simulated: timedelta) -> None:
        nonlocal ticks
        ticks += 1
        state = tick.decision.state
        for t in tick.decision.transitions:
            cause = f" [{t.cause}]" if t.cause else ""
            out.print(
                f"{_clock(simulated):>9}  [bold]{t.from_phase} → {t.to_phase}{escape(cause)}[/bold]"
                f"  {escape(t.reason)}"
            )
        if ticks % 20 == 0 and not state.phase.terminal:
            verdicts: dict[str, int] = {}
            for cell in tick.look.cells if tick.look else ():
                verdicts[str(cell.verdict)] = verdicts.get(str(cell.verdict), 0) + 1
            summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
            out.print(
                f"[dim]{_clock(simulated):>9}  {state.phase} step {state.step + 1}, "
                f"candidate {state.route.weight}% · last look: {summary}[/dim]"
            )

    result = run_demo(
        scenario, database, seed=seed, progress=progress, notifiers=[_slack_panels(out)]
    )
    _summary(out, result, time.monotonic() - started)
    if json_output:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    if not result.phase.terminal:
        raise typer.Exit(1)


def _summary(out: Console, result: DemoResult, seconds: float) -> None:
    out.print(
        f"\n[bold]{result.phase}[/bold] after {result.steps_completed} completed step(s), "
        f"{_clock(result.simulated)} of simulated time in {seconds:.1f}s."
    )
    if result.failures:
        table = Table(title="why it rolled back")
        for column in ("metric", "cohort", "baseline", "candidate"):
            table.add_column(column)
        for f in result.failures:
            table.add_row(
                f.metric,
                f.cohort,
                "-" if f.baseline is None else f"{f.baseline:.4f}",
                "-" if f.candidate is None else f"{f.candidate:.4f}",
            )
        out.print(table)
    out.print(
        f"The audit is in {result.database}. Try:\n"
        f"  canaryctl history {result.key} --database {result.database}\n"
        f"  canaryctl status {result.key} --database {result.database}"
    )


def show_rehearsal(
    rollout: ModelRollout,
    router: TrafficRouter,
    scenario: Scenario,
    database: Path,
    pace: float,
    *,
    rps: float,
    json_output: bool,
) -> None:
    """Run `canaryctl rehearse` and show it like the demo, plus the route after each write."""
    out = Console(stderr=json_output, highlight=False)
    out.print(
        f"[bold]rehearsal[/bold] of {rollout.key} on {rollout.spec.traffic.router} route "
        f"{rollout.metadata.namespace}/{rollout.spec.traffic.route} · scenario {scenario}"
    )

    def progress(tick: TickResult, simulated: timedelta) -> None:
        for t in tick.decision.transitions:
            cause = escape(f" [{t.cause}]") if t.cause else ""
            out.print(
                f"{_clock(simulated):>9}  {t.from_phase} → {t.to_phase}{cause}  {escape(t.reason)}"
            )

    started = time.monotonic()
    result, routes = rehearse(
        rollout, router, scenario, database, pace=pace, rps=rps, progress=progress
    )
    for route in routes:
        out.print(f"  route: {escape(json.dumps(route))}")
    _summary(out, result, time.monotonic() - started)
    out.print("The route has been given back as it was before the rehearsal.")
    if json_output:
        sys.stdout.write(json.dumps({**result.to_json(), "routes": routes}) + "\n")
