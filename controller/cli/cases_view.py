"""`canaryctl cases`: the eval cases of the store as a table, and their export.

The export's contents come from `controller.cases` (the same rows the
notifications carry); this module only chooses the format and lays out the
listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from rich.table import Table

from controller.cases import EvalCase, render_csv, render_jsonl


class CaseFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


def render(cases: Sequence[EvalCase], fmt: CaseFormat) -> str:
    """The export of `cases` in `fmt` (CSV always has its header row)."""
    return render_csv(cases) if fmt is CaseFormat.CSV else render_jsonl(cases)


def cases_table(cases: Sequence[EvalCase]) -> Table:
    """One row per case: when, which rollout, cohort and metric, the numbers, trace IDs."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ("recorded", "rollout", "cohort", "metric", "baseline", "candidate", "traces"):
        table.add_column(column)
    for case in cases:
        traces = str(len(case.trace_ids)) if case.trace_ids else f"0 ({case.trace_ids_reason})"
        table.add_row(
            f"{case.created_at:%Y-%m-%d %H:%M:%S}",
            f"{case.rollout} ({case.baseline_version} → {case.candidate_version})",
            case.cohort,
            case.metric,
            _number(case.baseline.value, case.baseline.samples),
            _number(case.candidate.value, case.candidate.samples),
            traces,
        )
    return table


def _number(value: float | None, samples: float | None) -> str:
    shown = "n/a" if value is None else f"{value:.4g}"
    return f"{shown} ({samples:,.0f})" if samples is not None else shown
