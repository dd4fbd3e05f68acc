"""Eval cases: a production failure, recorded so that an eval harness can replay it.

Offline evals miss what real users do; the requests that broke a rollout are the
regression set's best source. When a critical metric FAILs and the rollout rolls
back (or a human aborts with `--capture`), the controller records one `EvalCase`
per failing cell: the rollout, the versions, the cohort with its header match,
the metric with its direction, limit and tolerance, both versions' values and
samples, the time window, the PromQL, and the trace IDs of bad candidate
requests (from Prometheus exemplars), or why there are none.

This module is the one definition of the record and of its export, shared by
`canaryctl cases export`, the notification payloads (Slack, webhook) and the
store. It imports nothing of the controller, so every layer may use it.

The export is one flat JSON object per case (`export_row`), with a stable set
of keys, in JSON Lines or CSV. `EvalCase.from_row` reads a row back (the outbox
keeps a notification's cases as rows).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

#: the keys of an exported case, in order (CSV columns)
EXPORT_KEYS = (
    "id",
    "created_at",
    "rollout",
    "model",
    "baseline_version",
    "candidate_version",
    "cohort",
    "match",
    "metric",
    "direction",
    "limit",
    "tolerance",
    "baseline",
    "candidate",
    "window_start",
    "window_end",
    "promql",
    "trace_ids",
    "trace_ids_reason",
    "trigger",
)

#: how many trace IDs a case keeps when the policy does not say (`analysis.evalCases`)
DEFAULT_MAX_TRACE_IDS = 20


class Direction(StrEnum):
    """Which way the metric gets worse."""

    HIGHER_IS_WORSE = "higher-is-worse"  # refusals, errors, latency, feedback rates
    LOWER_IS_WORSE = "lower-is-worse"  # quality scores


class Trigger(StrEnum):
    """What made the controller record the case."""

    ROLLBACK = "rollback"  # a critical FAIL rolled the rollout back
    ABORT = "abort"  # a human aborted with --capture


@dataclass(frozen=True)
class CaseLimit:
    """The limit that the candidate broke: its policy name (`maxIncrease`) and value."""

    name: str
    value: float


@dataclass(frozen=True)
class CaseArm:
    """One version's value in the metric's unit, and the samples it is from."""

    value: float | None
    samples: float | None


@dataclass(frozen=True)
class EvalCase:
    """One failing cell of a rollout, as a regression-set entry an eval harness replays.

    `match` is the cohort's header match as the policy writes it
    (`{"header": "accept-language", "regex": "^(de|fr)"}`), empty for `overall`.
    `trace_ids` are bad candidate requests of that cohort in the window, newest
    first; when there are none, `trace_ids_reason` says why (no exemplars, the
    metric has no bad-request counter, Prometheus did not answer...).
    """

    id: str
    created_at: datetime
    rollout: str
    model: str
    baseline_version: str
    candidate_version: str
    cohort: str
    metric: str
    direction: Direction
    limit: CaseLimit | None
    tolerance: float | None
    baseline: CaseArm
    candidate: CaseArm
    window_start: datetime
    window_end: datetime
    promql: str
    trigger: Trigger = Trigger.ROLLBACK
    match: Mapping[str, str] = field(default_factory=dict)
    trace_ids: tuple[str, ...] = ()
    trace_ids_reason: str | None = None

    @staticmethod
    def make_id(rollout: str, started_at: datetime, tick: int, metric: str, cohort: str) -> str:
        """The same failing cell of the same tick gets the same ID (a re-decided tick
        after a crash records it once)."""
        text = f"{rollout}\n{started_at.isoformat()}\n{tick}\n{metric}\n{cohort}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EvalCase:
        """Read an exported row back (ValueError/KeyError/TypeError when it is not one)."""
        limit = row.get("limit")
        return cls(
            id=str(row["id"]),
            created_at=datetime.fromisoformat(str(row["created_at"])),
            rollout=str(row["rollout"]),
            model=str(row["model"]),
            baseline_version=str(row["baseline_version"]),
            candidate_version=str(row["candidate_version"]),
            cohort=str(row["cohort"]),
            match={str(k): str(v) for k, v in dict(row.get("match") or {}).items()},
            metric=str(row["metric"]),
            direction=Direction(row["direction"]),
            limit=CaseLimit(str(limit["name"]), float(limit["value"])) if limit else None,
            tolerance=_number(row.get("tolerance")),
            baseline=_arm(row.get("baseline")),
            candidate=_arm(row.get("candidate")),
            window_start=datetime.fromisoformat(str(row["window_start"])),
            window_end=datetime.fromisoformat(str(row["window_end"])),
            promql=str(row.get("promql") or ""),
            trace_ids=tuple(str(t) for t in row.get("trace_ids") or ()),
            trace_ids_reason=(
                str(row["trace_ids_reason"]) if row.get("trace_ids_reason") else None
            ),
            trigger=Trigger(row.get("trigger") or Trigger.ROLLBACK),
        )


def export_row(case: EvalCase) -> dict[str, Any]:
    """One case as the export's flat JSON object (keys in `EXPORT_KEYS` order)."""
    return {
        "id": case.id,
        "created_at": case.created_at.isoformat(),
        "rollout": case.rollout,
        "model": case.model,
        "baseline_version": case.baseline_version,
        "candidate_version": case.candidate_version,
        "cohort": case.cohort,
        "match": dict(case.match),
        "metric": case.metric,
        "direction": str(case.direction),
        "limit": {"name": case.limit.name, "value": case.limit.value} if case.limit else None,
        "tolerance": case.tolerance,
        "baseline": {"value": case.baseline.value, "samples": case.baseline.samples},
        "candidate": {"value": case.candidate.value, "samples": case.candidate.samples},
        "window_start": case.window_start.isoformat(),
        "window_end": case.window_end.isoformat(),
        "promql": case.promql,
        "trace_ids": list(case.trace_ids),
        "trace_ids_reason": case.trace_ids_reason,
        "trigger": str(case.trigger),
    }


def export_rows(cases: Iterable[EvalCase]) -> list[dict[str, Any]]:
    """Every case as an export row, in the order given."""
    return [export_row(c) for c in cases]


def render_jsonl(cases: Iterable[EvalCase]) -> str:
    """JSON Lines: one case per line (and a final newline when there are any)."""
    lines = [json.dumps(row, ensure_ascii=False) for row in export_rows(cases)]
    return "".join(line + "\n" for line in lines)


def render_csv(cases: Iterable[EvalCase]) -> str:
    """CSV with a header row: nested values (match, limit, arms) as JSON, trace IDs
    separated by spaces (a trace ID never contains one)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_KEYS, lineterminator="\n")
    writer.writeheader()
    for row in export_rows(cases):
        writer.writerow(
            {
                key: (
                    " ".join(value)
                    if key == "trace_ids"
                    else json.dumps(value, ensure_ascii=False)
                    if isinstance(value, dict)
                    else ""
                    if value is None
                    else value
                )
                for key, value in row.items()
            }
        )
    return out.getvalue()


def trace_id_count(cases: Sequence[EvalCase]) -> int:
    """How many distinct trace IDs the cases carry between them."""
    return len({t for c in cases for t in c.trace_ids})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _arm(value: Any) -> CaseArm:
    if not isinstance(value, Mapping):
        return CaseArm(None, None)
    return CaseArm(_number(value.get("value")), _number(value.get("samples")))
