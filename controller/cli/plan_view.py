"""`canaryctl plan` and `validate --plan`: a policy's plan as tables, or as JSON.

Imported only by those commands: it loads the planner, hence numpy and scipy,
which `canaryctl --help` and a plain `validate` must not pay for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from controller.analysis.planning import format_minutes
from controller.analysis.rollout_plan import (
    ASSUMED,
    Plan,
    PlanInputError,
    Traffic,
    cohort_shares,
    plan_rollout,
    sample_shares,
)
from controller.errors import CanaryError
from controller.policy import RolloutSpec
from controller.policy.loader import LoadedPolicy
from controller.settings import Settings

#: the request rate planned with when neither --rps nor --prometheus is given
DEFAULT_RPS = 100.0
#: how far back --prometheus reads the baseline's request rates
HISTORY = timedelta(hours=24)


def parse_shares(
    values: Sequence[str], option: str = "--cohort-share", example: str = "mobile=0.2"
) -> dict[str, float]:
    """`NAME=FRACTION` options as a mapping (PlanInputError when one is malformed)."""
    out: dict[str, float] = {}
    for value in values:
        name, sep, fraction = value.partition("=")
        try:
            share = float(fraction)
        except ValueError:
            share = math.nan
        if not sep or not name or math.isnan(share):
            raise PlanInputError(f"{option} {value!r}: expected NAME=FRACTION, e.g. {example}")
        if not 0.0 < share <= 1.0:
            raise PlanInputError(f"{option} {value}: a share must be in (0, 1]")
        out[name] = share
    return out


def traffic_for(
    spec: RolloutSpec,
    namespace: str,
    *,
    rps: float | None,
    shares: Mapping[str, float],
    prometheus: str | None,
    settings: Settings,
    samples: Mapping[str, float] | None = None,
) -> Traffic:
    """The traffic to plan with: given, or the baseline's last 24 hours in Prometheus.

    Sample shares (`--sample-share`) are as given; with `--prometheus`, a metric
    whose template counts its samples and that is not given is measured: its
    samples per request of the baseline over the same 24 hours."""
    cohorts = [c.name for c in spec.cohorts]
    metrics = [m.metric_name for m in spec.analysis.metrics]
    given_samples = sample_shares(metrics, samples or {})
    sample_source = "--sample-share" if given_samples else ""
    if prometheus is None:
        source = "--rps" if rps is not None else "default; give --rps or --prometheus"
        total = rps if rps is not None else DEFAULT_RPS
        return Traffic(total, cohort_shares(cohorts, shares), source, given_samples, sample_source)
    from controller.runtime.oneshot import prometheus_at

    provider = prometheus_at(prometheus, settings)
    now = datetime.now(UTC)
    try:
        rates = provider.request_rates(
            spec.model, spec.baseline.version, namespace, over=HISTORY, at=now
        )
        unmeasured = [m for m in spec.analysis.metrics if m.metric_name not in given_samples]
        measured_samples = provider.sample_shares(
            unmeasured, spec.model, spec.baseline.version, namespace, over=HISTORY, at=now
        )
    except CanaryError as exc:
        raise PlanInputError(f"--prometheus: {exc}") from exc
    finally:
        provider.close()
    if measured_samples:
        sample_source = ", ".join(
            [*(["--sample-share"] if given_samples else []), "the baseline's last 24 h"]
        )
    measured = sum(rates.values())
    if measured <= 0:
        raise PlanInputError(
            f"--prometheus: no requests of {spec.model} {spec.baseline.version} in namespace "
            f"{namespace} in the last 24 hours"
        )
    given = {c: rates.get(c, 0.0) / measured for c in cohorts}
    given.update(shares)
    source = f"baseline {spec.baseline.version}, last 24 h in Prometheus"
    if rps is not None:
        source += " (cohort shares; the rate from --rps)"
    return Traffic(
        rps if rps is not None else measured,
        cohort_shares(cohorts, given),
        source,
        {**measured_samples, **given_samples},
        sample_source,
    )


def plan_policy(policy: LoadedPolicy, traffic: Traffic) -> Plan:
    return plan_rollout(policy.rollout.spec, traffic)


# --- JSON ------------------------------------------------------------------------------


def _minutes(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def _pair(pair: tuple[float, float]) -> dict[str, float | None]:
    return {"median": _minutes(pair[0]), "p80": _minutes(pair[1])}


def plan_json(policy: LoadedPolicy, plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON: minutes, null for never."""
    traffic = plan.traffic
    periods = []
    for name, hold, median, p80 in plan.period_ends:
        periods.append(
            {
                "step": name,
                "holdMinutes": _minutes(hold),
                "endsMinutes": {"median": _minutes(median), "p80": _minutes(p80)},
                "cells": [
                    {
                        "cohort": r.cohort,
                        "metric": r.metric,
                        "critical": r.critical,
                        "requestsPerSecond": round(r.requests_per_second, 4),
                        "weight": round(r.weight, 4),
                        "healthyDecidesMinutes": _pair(r.healthy),
                        "atLimitFailsMinutes": _pair(r.at_limit),
                        "poweredMinutes": _minutes(r.powered),
                    }
                    for r in plan.rows
                    if r.period == name
                ],
            }
        )
    return {
        "file": policy.file,
        "line": policy.line,
        "name": policy.rollout.metadata.name,
        "namespace": policy.rollout.metadata.namespace,
        "traffic": {
            "requestsPerSecond": traffic.requests_per_second,
            "source": traffic.source,
            "cohortShares": {k: round(v, 4) for k, v in traffic.shares.items()},
            "restShare": round(traffic.rest, 4),
            # per metric, samples per request (a metric not named: one per request)
            "sampleShares": {k: round(v, 4) for k, v in traffic.sample_shares.items()},
            "sampleSource": traffic.sample_source,
        },
        "assumed": {_camel(k): v for k, v in ASSUMED.items()},
        "tests": plan.tests,
        "steps": periods,
        "schedule": [
            {
                "cohort": c.cohort,
                "metric": c.metric,
                "critical": c.critical,
                "healthyDecidesMinutes": _pair(c.healthy),
                "atLimitFailsMinutes": _pair(c.at_limit),
                "poweredMinutes": _minutes(c.powered),
            }
            for c in plan.cells
        ],
        "promotionMinutes": _pair(plan.promotion),
        "deadlineMinutes": _minutes(plan.deadline.total_seconds() / 60),
        "gauges": list(plan.gauges),
        "warnings": list(plan.warnings),
    }


# --- text ------------------------------------------------------------------------------


def _pair_text(pair: tuple[float, float]) -> str:
    return f"{format_minutes(pair[0])} / {format_minutes(pair[1])}"


def _table(title: str, first: Sequence[str]) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in first:
        table.add_column(name, no_wrap=True)
    for name in ("healthy decides", "at limit FAILs", "powered"):
        table.add_column(name, no_wrap=True, justify="right")
    return table


def print_plan(console: Console, policy: LoadedPolicy, plan: Plan) -> None:
    """The plan as tables; off a terminal nothing is wrapped (the tables are as wide
    as they need to be, and lines of text are never broken)."""
    traffic = plan.traffic
    shares = ", ".join(f"{k} {v:.0%}" for k, v in traffic.shares.items())
    lines = [
        f"[bold]{escape(policy.rollout.key)}[/bold]  ({escape(policy.file)}:{policy.line})",
        f"traffic: {traffic.requests_per_second:g} req/s ({escape(traffic.source)}); "
        f"cohorts: {escape(shares) or 'none'}, the rest {traffic.rest:.0%}",
        *(
            [
                "sampled: "
                + ", ".join(f"{k} {v:.0%}" for k, v in traffic.sample_shares.items())
                + f" of the requests ({escape(traffic.sample_source)}); every other metric "
                "one per request"
            ]
            if traffic.sample_shares
            else []
        ),
        f"{plan.tests} critical tests share the confidence budget; the baseline is assumed "
        "as in docs/judge.md (Planning a rollout); minutes are median / 80th percentile",
    ]
    tables = []
    for name, hold, _, _ in plan.period_ends:
        table = _table(
            f"{name}, hold {format_minutes(hold)}: minutes at this step's weight",
            ("cohort", "metric", "req/s", "weight"),
        )
        for r in plan.rows:
            if r.period != name:
                continue
            table.add_row(
                r.cohort,
                r.metric + ("" if r.critical else " (advisory)"),
                f"{r.requests_per_second:.3g}",
                f"{r.weight:.1%}" + (" mirrored" if r.period == "shadow" else ""),
                _pair_text(r.healthy),
                _pair_text(r.at_limit),
                format_minutes(r.powered),
            )
        tables.append(table)
    along = _table(
        "Along the schedule: minutes from the start of the analysis (counts cumulative)",
        ("cohort", "metric"),
    )
    for c in plan.cells:
        along.add_row(
            c.cohort,
            c.metric + ("" if c.critical else " (advisory)"),
            _pair_text(c.healthy),
            _pair_text(c.at_limit),
            format_minutes(c.powered),
        )
    tables.append(along)
    out = console
    if not console.is_terminal:  # a file, a pipe, a CI log: as wide as the tables are
        out = Console(file=console.file, width=10_000, highlight=False, soft_wrap=True)
    for line in lines:
        out.print(line)
    for table in tables:
        out.print()
        out.print(table)
    out.print()
    holds = sum(hold for _, hold, _, _ in plan.period_ends)
    out.print(
        f"promotion to 100 %: {_pair_text(plan.promotion)} "
        f"(the holds alone: {format_minutes(holds)}; "
        f"analysis.deadline {format_minutes(plan.deadline.total_seconds() / 60)})"
    )
    if plan.gauges:
        out.print(f"compared as they are, at every look: {escape(', '.join(plan.gauges))}")
    for warning in plan.warnings:
        out.print(f"[yellow]WARN[/yellow]  {escape(warning)}")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)
