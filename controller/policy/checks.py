"""Cross-field checks of a rollout spec: the rules no single field can enforce.

Each check names the spec sections it reads (`@check("traffic", "cohorts")`) and
yields `Problem`s with the exact field path. `run_checks` runs every check whose
sections are all present and valid, so the file loader can report these problems
even when some other section of the same file is broken. One "section" is not
part of the spec: `custom_queries` and `webhook_allow`, the operator's settings,
present only when the caller gives them (the command line and the controller do).

The registry (`check`, `run_checks`) is in `controller.policy.cross_field`: the
models run the checks through it without importing this module.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta
from difflib import get_close_matches

from controller.errors import Problem, Severity
from controller.policy.cross_field import check
from controller.policy.durations import format_duration
from controller.policy.gates import (
    Gate,
    OnFailure,
    WebhookAllow,
    job_template_problems,
    url_problem,
)
from controller.policy.model import (
    OVERALL,
    Analysis,
    Cohort,
    Shadow,
    Step,
    Traffic,
    VersionRef,
    metric_problems,
)
from controller.policy.queries import CustomQueries, template_problems
from controller.policy.regex import regex_problem
from controller.policy.routers import CAPABILITIES, routers_that
from controller.policy.templates import PLACEHOLDERS, TEMPLATES


def _error(path: str, message: str) -> Problem:
    return Problem(message=message, path=f"spec.{path}")


def _warning(path: str, message: str) -> Problem:
    return Problem(message=message, path=f"spec.{path}", severity=Severity.WARNING)


def _names(items: Iterable[str]) -> str:
    return ", ".join(items) or "none"


@check("steps")
def _steps_increase(steps: list[Step]) -> Iterator[Problem]:
    for i in range(1, len(steps)):
        if steps[i].weight <= steps[i - 1].weight:
            yield _error(
                f"steps[{i}].weight",
                f"must be greater than the previous step's weight ({steps[i - 1].weight}); "
                "step weights only go up",
            )
    if steps[-1].weight != 100:
        yield _error(
            f"steps[{len(steps) - 1}].weight",
            f"the last step must reach 100 (it is {steps[-1].weight}); "
            "add a final step {weight: 100}",
        )
    for name, weight in steps[-1].cohort_weights.items():
        if steps[-1].weight == 100 and weight != 100:
            yield _error(
                f"steps[{len(steps) - 1}].cohortWeights.{name}",
                f"is {weight}, but at the last step every cohort is on the candidate (100)",
            )


@check("baseline", "candidate")
def _versions_differ(baseline: VersionRef, candidate: VersionRef) -> Iterator[Problem]:
    if baseline.version == candidate.version:
        yield _error("candidate.version", f"is the baseline's version too ({baseline.version})")
    if baseline.service == candidate.service:
        yield _error(
            "candidate.service",
            f"is the baseline's service too ({baseline.service}); the candidate needs its own",
        )


@check("cohorts")
def _cohort_names(cohorts: list[Cohort]) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, cohort in enumerate(cohorts):
        if cohort.name == OVERALL:
            yield _error(f"cohorts[{i}].name", f"'{OVERALL}' is reserved for all traffic together")
        if cohort.name in seen:
            yield _error(
                f"cohorts[{i}].name",
                f"{cohort.name!r} is already the name of cohorts[{seen[cohort.name]}]",
            )
        seen.setdefault(cohort.name, i)


@check("cohorts", "steps")
def _cohort_references(cohorts: list[Cohort], steps: list[Step]) -> Iterator[Problem]:
    names = [c.name for c in cohorts]
    for i, step in enumerate(steps):
        for name in step.cohort_weights:
            if name not in names:
                hint = get_close_matches(name, names, n=1)
                suggestion = f"did you mean {hint[0]!r}? " if hint else ""
                yield _error(
                    f"steps[{i}].cohortWeights.{name}",
                    f"no cohort is called {name!r}; {suggestion}cohorts: {_names(names)}",
                )


@check("traffic", "steps")
def _router_weights_cohorts(traffic: Traffic, steps: list[Step]) -> Iterator[Problem]:
    caps = CAPABILITIES[traffic.router]
    for i, step in enumerate(steps):
        if not caps.weighted_cohorts:
            for name, weight in step.cohort_weights.items():
                if weight != 100:
                    yield _error(
                        f"steps[{i}].cohortWeights.{name}",
                        f"{traffic.router} cannot give a cohort its own weight ({weight}); "
                        "it can only send a whole cohort to the candidate by header (100). "
                        "Routers that can weight cohorts: "
                        f"{_names(routers_that('weighted_cohorts'))}",
                    )
        limit = caps.header_cohorts
        if limit is not None and len(step.cohort_weights) > limit:
            yield _error(
                f"steps[{i}].cohortWeights",
                f"{traffic.router} can route at most {limit} cohort(s) by header at a time, "
                f"this step names {len(step.cohort_weights)}",
            )


@check("traffic", "shadow")
def _router_mirrors(traffic: Traffic, shadow: Shadow) -> Iterator[Problem]:
    caps = CAPABILITIES[traffic.router]
    if not caps.mirror:
        yield _error(
            "shadow",
            f"{traffic.router} cannot mirror traffic; routers that can: "
            f"{_names(routers_that('mirror'))}",
        )
    elif shadow.mirror_percent < 100 and not caps.partial_mirror:
        yield _error(
            "shadow.mirrorPercent",
            f"{traffic.router} mirrors every request or none, not {shadow.mirror_percent}%; "
            f"use 100, or a router that can: {_names(routers_that('partial_mirror'))}",
        )


@check("traffic")
def _router_sticky(traffic: Traffic) -> Iterator[Problem]:
    if traffic.sticky_header is None:
        return
    if not CAPABILITIES[traffic.router].sticky_header:
        yield _warning(
            "traffic.stickyHeader",
            f"{traffic.router} cannot hash a header to keep a conversation on one backend, "
            "so it is ignored; routers that can: "
            f"{_names(routers_that('sticky_header'))}",
        )
    else:
        yield _warning(
            "traffic.stickyHeader",
            f"{traffic.router} keeps a conversation on one pod within a version; the proxy "
            "picks baseline or candidate per request, so a conversation can still switch "
            "versions while both serve traffic",
        )


@check("traffic", "cohorts")
def _cohort_regexes(traffic: Traffic, cohorts: list[Cohort]) -> Iterator[Problem]:
    dialect = CAPABILITIES[traffic.router].regex_dialect
    for i, cohort in enumerate(cohorts):
        if cohort.match.regex is None:
            continue
        reason = regex_problem(cohort.match.regex, dialect)
        if reason is not None:
            yield _error(
                f"cohorts[{i}].match.regex",
                f"does not compile as {dialect.upper()}, the dialect {traffic.router} "
                f"runs header regexes in: {reason}",
            )


@check("analysis")
def _analysis(analysis: Analysis) -> Iterator[Problem]:
    if analysis.interval > analysis.window:
        yield _error(
            "analysis.interval",
            "must not be longer than analysis.window, or some traffic is never looked at",
        )
    if analysis.interval.total_seconds() <= 0:
        yield _error("analysis.interval", "must be longer than 0s")
    if analysis.no_data.timeout < analysis.interval:
        yield _warning(
            "analysis.noData.timeout",
            "is shorter than analysis.interval, so one empty look already times out",
        )
    seen: dict[str, int] = {}
    for i, metric in enumerate(analysis.metrics):
        for field, reason in metric_problems(metric):
            yield _error(f"analysis.metrics[{i}]" + (f".{field}" if field else ""), reason)
        name = metric.metric_name
        if name and name in seen:
            yield _error(
                f"analysis.metrics[{i}]",
                f"a second metric named {name!r} (as metrics[{seen[name]}]); "
                "give one of them a distinct `name`",
            )
        seen.setdefault(name, i)


@check("steps", "analysis")
def _holds_cover_a_look(steps: list[Step], analysis: Analysis) -> Iterator[Problem]:
    for i, step in enumerate(steps):
        if step.hold and step.hold < analysis.interval:
            yield _warning(
                f"steps[{i}].hold",
                "is shorter than analysis.interval, so this step is judged at most once",
            )


@check("steps", "analysis")
def _deadline_covers_the_holds(steps: list[Step], analysis: Analysis) -> Iterator[Problem]:
    holds = sum((s.hold for s in steps), timedelta(0))
    if analysis.deadline is not None and analysis.deadline < holds:
        yield _error(
            "analysis.deadline",
            f"is shorter than the sum of the steps' holds ({format_duration(holds)}), "
            "so every rollout would stop at it; make it longer (the default is twice the holds)",
        )


@check("steps", "shadow", "analysis")
def _deadline_covers_the_shadow(
    steps: list[Step], shadow: Shadow, analysis: Analysis
) -> Iterator[Problem]:
    holds = sum((s.hold for s in steps), timedelta(0))
    deadline = analysis.deadline
    if deadline is not None and holds <= deadline < holds + shadow.duration:
        yield _error(
            "analysis.deadline",
            f"is shorter than the shadow's duration and the steps' holds together "
            f"({format_duration(holds + shadow.duration)}), so every rollout would stop at it; "
            "make it longer (the default is twice that)",
        )


@check("shadow", "analysis")
def _shadow_covers_a_look(shadow: Shadow, analysis: Analysis) -> Iterator[Problem]:
    if shadow.duration < analysis.interval:
        yield _warning(
            "shadow.duration", "is shorter than analysis.interval, so shadow is never judged"
        )


@check("analysis", "cohorts")
def _query_templates(analysis: Analysis, cohorts: list[Cohort]) -> Iterator[Problem]:
    for i, metric in enumerate(analysis.metrics):
        if metric.template is not None:
            continue
        for field in ("query", "trials"):
            text = getattr(metric, field)
            if text is None:
                continue
            for offset, reason in template_problems(text, PLACEHOLDERS, cohorts=len(cohorts)):
                where = f"at character {offset + 1}: " if offset is not None else ""
                yield _error(f"analysis.metrics[{i}].{field}", where + reason)


@check("analysis", "custom_queries")
def custom_query_problems(analysis: Analysis, mode: CustomQueries) -> Iterator[Problem]:
    """Custom queries refused by the operator's setting (`deny`)."""
    if mode is not CustomQueries.DENY:
        return
    for i, metric in enumerate(analysis.metrics):
        if metric.query is not None:
            yield _error(
                f"analysis.metrics[{i}].query",
                "custom queries are turned off on this controller (CANARY_CUSTOM_QUERIES="
                f"deny); use a built-in template: {_names(TEMPLATES)}",
            )


@check("gates", "steps")
def _gates(gates: list[Gate], steps: list[Step]) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, gate in enumerate(gates):
        where = f"gates[{i}]"
        if gate.name in seen:
            yield _error(
                f"{where}.name", f"{gate.name!r} is already the name of gates[{seen[gate.name]}]"
            )
        seen.setdefault(gate.name, i)
        step = gate.at.step
        if step is not None and step > len(steps):
            yield _error(
                f"{where}.at.beforeStep",
                f"there is no step {step}: the rollout has {len(steps)} step(s), numbered from 1",
            )
        if gate.at.point.after_end and gate.on_failure not in (None, OnFailure.IGNORE):
            yield _error(
                f"{where}.onFailure",
                f"a {gate.at.point} gate runs once the rollout has ended, so it can only "
                f"report: onFailure must be ignore (got {gate.on_failure})",
            )
        if gate.webhook is not None:
            problem = url_problem(gate.webhook.url)
            if problem is not None:
                yield _error(f"{where}.webhook.url", problem)
        if gate.job is not None:
            for field, reason in job_template_problems(gate.job.template):
                yield _error(f"{where}.job.{field}", reason)


@check("gates", "webhook_allow")
def webhook_allow_problems(gates: list[Gate], allow: WebhookAllow) -> Iterator[Problem]:
    """Webhook URLs the operator's allowlist (`CANARY_WEBHOOK_ALLOW`) does not allow."""
    for i, gate in enumerate(gates):
        if gate.webhook is None or url_problem(gate.webhook.url) is not None:
            continue
        if not allow.configured:
            yield _warning(
                f"gates[{i}].webhook.url",
                "not checked against a webhook allowlist: CANARY_WEBHOOK_ALLOW is not set "
                "here (a controller without it refuses every webhook gate)",
            )
        elif not allow.allows(gate.webhook.url):
            allowed = allow.text.strip() or "none: CANARY_WEBHOOK_ALLOW is empty"
            yield _error(
                f"gates[{i}].webhook.url",
                f"is not in this controller's webhook allowlist (allowed: {allowed})",
            )
