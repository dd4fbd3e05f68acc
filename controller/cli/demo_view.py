"""How `canaryctl demo` looks: progress as the rollout runs, the messages owners would get.

With `--output json`, progress goes to stderr and stdout carries exactly one
JSON object at the end, for scripts.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from controller.demo import DemoResult, demo_rollout, rehearse, run_demo
from controller.engine.state import EventKind
from controller.notify import ConsoleNotifier, Notification
from controller.policy import ModelRollout, format_duration
from controller.routing import TrafficRouter
from controller.runtime.executor import TickResult
from controller.scenarios import Scenario

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


def _console(*, stderr: bool) -> Console:
    """A console for the demo's progress: on a terminal, lines wrap at its width; to a
    file, a pipe or a CI log, never (rich would break them at 80 columns, mid-phrase)."""
    out = Console(stderr=stderr, highlight=False)
    out.soft_wrap = not out.is_terminal
    return out


def _slack_panels(out: Console) -> ConsoleNotifier:
    """The console notifier, framing each message the owners would read in Slack (on a
    terminal; elsewhere a title line and the message, with no box and no wrapping)."""

    def show(note: Notification, text: str) -> None:
        _, _, message = text.partition("\n")  # the panel's title says where it goes
        title = f"Slack {escape(note.channel or '(no channel)')} · {note.event}"
        if not out.is_terminal:
            out.print(f"{title}:")
            for line in message.splitlines():
                out.print(f"  {escape(line)}")
            return
        out.print(
            Panel(
                escape(message),
                title=title,
                title_align="left",
                border_style=_STYLE.get(note.event, "blue"),
            )
        )

    return ConsoleNotifier(show=show)


def run_and_show(scenario: Scenario, database: Path, seed: int, *, json_output: bool) -> None:
    out = _console(stderr=json_output)
    rollout = demo_rollout()
    out.print(
        f"[bold]canary-controller demo[/bold] · scenario [cyan]{scenario}[/cyan] · "
        f"{rollout.key}: {rollout.spec.model} {rollout.spec.baseline.version} → "
        f"{rollout.spec.candidate.version}, {len(rollout.spec.cohorts)} cohorts, "
        f"judged every {format_duration(rollout.spec.analysis.interval)} (simulated)"
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
    me, database = _canaryctl(), shlex.quote(str(result.database))
    out.print(
        f"The audit is in {escape(str(result.database))}. Try:\n"
        f"  {escape(me)} history {result.key} --database {escape(database)}\n"
        f"  {escape(me)} status {result.key} --database {escape(database)}"
    )


def _canaryctl() -> str:
    """How to run this `canaryctl` from here, for the hints: its name when PATH finds
    this one, else its path (relative when inside this folder, as `.venv/bin/canaryctl`)."""
    mine = Path(sys.executable).with_name("canaryctl")
    if not mine.exists():
        return "canaryctl"
    found = shutil.which("canaryctl")
    if found is not None and Path(found).resolve() == mine.resolve():
        return "canaryctl"
    if mine.is_relative_to(Path.cwd()):
        return shlex.quote(str(mine.relative_to(Path.cwd())))
    return shlex.quote(str(mine))


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
    out = _console(stderr=json_output)
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
