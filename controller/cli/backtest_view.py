"""`canaryctl backtest`: a policy replayed over recorded Prometheus data, as a timeline.

Imported only by that command (it loads the engine and the judge, hence scipy).
The replay itself is `controller.runtime.backtest`; this module parses the times,
builds the Prometheus provider, shows a progress bar on a terminal for long
ranges, and prints the result for people or as one JSON object.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from controller.engine.state import EventKind
from controller.policy import ModelRollout, format_duration
from controller.runtime.backtest import (
    Backtest,
    FailedCell,
    MetricHistory,
    check_recorded,
    describe_versions,
    replay,
    ticks,
)
from controller.settings import redact_url

#: a replay of more ticks than this shows a progress bar (on a terminal)
PROGRESS_FROM = 120

_STYLE = {
    EventKind.ROLLED_BACK: "red",
    EventKind.PROMOTED: "green",
    EventKind.HOLDING: "yellow",
    EventKind.PAUSED: "yellow",
}


def run(
    rollout: ModelRollout,
    source: MetricHistory,
    start: datetime,
    end: datetime,
    *,
    progress_to: Console | None,
) -> Backtest:
    """Check that the range holds data, then replay it (with a progress bar on
    `progress_to` when it is a terminal and the range is long)."""
    check_recorded(rollout, source, start, end)
    total = ticks(start, end, rollout.spec.analysis.interval)
    with _progress(progress_to, total, start) as advance:
        return replay(rollout, source, start, end, progress=advance)


@contextmanager
def _progress(console: Console | None, total: int, start: datetime) -> Iterator[_Advance]:
    if console is None or not console.is_terminal or total <= PROGRESS_FROM:
        yield _Advance(None, None)
        return
    bar = Progress(
        TextColumn("replaying"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.description}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    with bar:
        yield _Advance(bar, bar.add_task("", total=total), start)


class _Advance:
    """Moves the bar to each tick the replay reaches, showing its simulated time."""

    def __init__(
        self, bar: Progress | None, task: TaskID | None, start: datetime | None = None
    ) -> None:
        self.bar = bar
        self.task = task
        self.start = start

    def __call__(self, at: datetime) -> None:
        if self.bar is None or self.task is None or self.start is None:
            return
        self.bar.update(self.task, advance=1, description=_offset(at - self.start))


# --- text ---------------------------------------------------------------------------------


def _offset(elapsed: timedelta) -> str:
    minutes = int(elapsed.total_seconds() // 60)
    return f"T+{minutes // 60}h{minutes % 60:02d}m"


def _clock(at: datetime, *, long: bool) -> str:
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M" if long else "%H:%M:%S")


def _utc(at: datetime) -> str:
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    if abs(value) < 1:
        return f"{value:.2%}"
    return f"{value:.4g}"


def _samples(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "—"


def print_backtest(
    console: Console, rollout: ModelRollout, result: Backtest, source: str, title: str = ""
) -> None:
    """The timeline: each decision, the first FAIL with its evidence, the outcome."""
    out = console
    if not console.is_terminal:  # a file, a pipe, a CI log: nothing is wrapped
        out = Console(file=console.file, width=10_000, highlight=False, soft_wrap=True)
    long = result.end - result.start > timedelta(hours=20)
    span = f"{_utc(result.start)} → {_utc(result.end)}"
    out.print(
        f"[bold]backtest {escape(title or rollout.key)}[/bold] · "
        f"{escape(describe_versions(rollout))} · {span}, a look every "
        f"{format_duration(result.interval)} · {escape(source)}"
    )
    out.print(
        "  the traffic split is the recorded one; the weights are those the policy would have "
        "asked for (see docs/backtest.md)"
    )
    for d in result.decisions:
        style = _STYLE.get(d.event, "")
        cause = f" \\[{d.cause}]" if d.cause else ""
        head = f"{d.event}{cause}"
        out.print(
            f"  {_offset(d.at - result.start)}  {_clock(d.at, long=long)}  "
            + (f"[{style}]{escape(head)}[/{style}]" if style else escape(head))
            + f"  {escape(d.reason)}"
        )
    fail = result.first_fail
    if fail is not None:
        out.print(
            f"[red]first FAIL[/red] at {_offset(fail.at - result.start)} "
            f"({_utc(fail.at)}, look {fail.look}):"
        )
        for cell in fail.cells:
            _print_cell(out, cell)
    else:
        out.print("no critical FAIL in the range")
    end = _offset(result.last - result.start)
    if result.outcome.terminal:
        out.print(f"outcome: {result.outcome} at {end}, after {result.looks} looks")
    else:
        out.print(
            f"outcome: still {result.outcome} when the range ended ({end}, step "
            f"{max(result.step + 1, 0)}), after {result.looks} looks"
        )


def _print_cell(out: Console, cell: FailedCell) -> None:
    breaker = " (circuit breaker)" if cell.breaker else ""
    out.print(f"  {escape(cell.metric)} in {escape(cell.cohort)}{breaker}: {escape(cell.reason)}")
    out.print(
        f"    baseline {_number(cell.baseline)} over {_samples(cell.baseline_samples)} samples, "
        f"candidate {_number(cell.candidate)} over {_samples(cell.candidate_samples)} samples"
    )
    if cell.query:
        out.print(f"    PromQL: {escape(cell.query)}")


def source_name(url: str) -> str:
    return f"Prometheus {redact_url(url)}"
