"""The ModelRollout policy: the contract platform teams write, as frozen models.

Field names are camelCase in YAML (as in every Kubernetes object) and snake_case
in Python. Every model is frozen and forbids unknown fields, so a typo is an
error, never a silently ignored setting.

Validation happens in two layers:
- per field (types, ranges, formats), by pydantic, which reports every bad field;
- across fields (cohort references, router capabilities, ...), by the checks in
  `controller.policy.checks`, which `RolloutSpec` runs after its fields are valid.
  The file loader runs the same checks itself, on every section that is valid,
  so one pass reports every problem of a file with its line and column.
"""

from __future__ import annotations

import re
from datetime import timedelta
from difflib import get_close_matches
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from controller.errors import Severity
from controller.policy.cross_field import run_checks
from controller.policy.durations import DURATION_PATTERN, Duration, parse_duration
from controller.policy.gates import Gate
from controller.policy.routers import RouterKind
from controller.policy.templates import PLACEHOLDERS, TEMPLATES, MetricKind

API_GROUP = "canary.ai"
API_VERSION = f"{API_GROUP}/v1alpha1"
KIND = "ModelRollout"
#: the pseudo-cohort that stands for all traffic in verdicts
OVERALL = "overall"

#: the shortest default `analysis.deadline`, for policies whose holds are (nearly) zero
MIN_DEADLINE = timedelta(minutes=30)

#: context key that makes RolloutSpec skip the cross-field checks (the loader runs them)
DEFER_CHECKS = "defer_checks"

# RFC 7230 token, as Gateway API's HTTPHeaderName; pseudo-headers (":path") excluded.
HEADER_NAME_PATTERN = r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]{1,256}$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
SLACK_CHANNEL_PATTERN = r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CG][A-Z0-9]{2,})$"
SLACK_USER_PATTERN = r"^[UW][A-Z0-9]{2,}$"
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class _Frozen(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        allow_inf_nan=False,
        str_max_length=4096,
        use_enum_values=False,
    )


StrictInt = Annotated[int, Strict()]
StrictBool = Annotated[bool, Strict()]
Percent = Annotated[int, Strict(), Field(ge=0, le=100)]
HeaderName = Annotated[str, Field(pattern=HEADER_NAME_PATTERN)]
DnsLabel = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]
DnsSubdomain = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
Text = Annotated[str, Field(min_length=1, max_length=253)]


def _parse_limit(value: Any) -> Any:
    """Limits are numbers; a latency limit may also be written as a duration (`2.5s`)."""
    if isinstance(value, str):
        try:
            return parse_duration(value).total_seconds()
        except ValueError:
            raise ValueError(
                f"{value!r} is not a number (a duration like 2.5s is allowed for latency)"
            ) from None
    return value


Limit = Annotated[
    float,
    Strict(),
    BeforeValidator(_parse_limit),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string", "pattern": DURATION_PATTERN}],
            "description": "A number; for latency metrics also a duration such as 2.5s.",
        }
    ),
]


class NoDataAction(StrEnum):
    """What to do at once when a look finds no data."""

    HOLD = "hold"
    ROLLBACK = "rollback"


class NoDataTimeout(StrEnum):
    """What to do when no data has arrived for `noData.timeout`."""

    ROLLBACK = "rollback"
    PAUSE = "pause"


class AdvanceOn(StrEnum):
    """When a step whose hold has passed gives way to the next one (before 100 %)."""

    # Going to 100 % (the last step, or the promotion) always needs every critical
    # cell to PASS or to be powered (its FAIL test would have caught a candidate at
    # the limit by now); this only decides the steps before it.

    #: every critical cell PASSes or is powered, at every step
    PASS = "pass"
    #: no critical cell FAILs and every critical cell has its `minSamples` (the default)
    NO_FAILURE = "no-failure"
    #: no critical cell FAILs, however few samples a cell has: for steps where small
    #: cohorts of a sampled metric cannot reach `minSamples` in any sane hold
    HOLD = "hold"


class Metadata(_Frozen):
    """The Kubernetes object metadata a policy uses; server-set fields are read-only."""

    name: DnsSubdomain
    namespace: DnsLabel = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Set by the API server on ModelRollout objects; never written by hand.
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None


class VersionRef(_Frozen):
    """One version of the model and the Kubernetes Service that serves it."""

    version: Text
    service: DnsLabel


class SlackOwners(_Frozen):
    """Where the rollout's messages go, who is mentioned, and who may act from Slack.

    The buttons on a rollout's Slack messages (promote, pause, resume, abort)
    act only for the users in `mention` or `operators`.
    """

    channel: Annotated[str, Field(pattern=SLACK_CHANNEL_PATTERN)]
    mention: list[Annotated[str, Field(pattern=SLACK_USER_PATTERN)]] = Field(
        default_factory=list, max_length=50
    )
    operators: list[Annotated[str, Field(pattern=SLACK_USER_PATTERN)]] = Field(
        default_factory=list, max_length=50
    )

    def may_act(self, user_id: str) -> bool:
        """Whether the Slack user `user_id` may press this rollout's buttons."""
        return user_id in self.mention or user_id in self.operators


class Owners(_Frozen):
    slack: SlackOwners | None = None


class Traffic(_Frozen):
    router: RouterKind
    route: DnsSubdomain
    sticky_header: HeaderName | None = None


class HeaderMatch(_Frozen):
    """Which requests belong to a cohort: a header equal to, starting with, or matching."""

    header: HeaderName
    value: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    prefix: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    regex: Annotated[str, Field(min_length=1, max_length=1024)] | None = None

    @model_validator(mode="after")
    def _exactly_one_matcher(self) -> HeaderMatch:
        given = [k for k in ("value", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PydanticCustomError(
                "matcher",
                "give exactly one of value, prefix or regex (got {got})",
                {"got": ", ".join(given) or "none"},
            )
        return self


class Cohort(_Frozen):
    """A user segment judged on its own (and routed on its own where the router can)."""

    name: DnsLabel
    match: HeaderMatch


class Shadow(_Frozen):
    """Mirror live requests to the candidate before it serves anyone."""

    mirror_percent: Annotated[int, Strict(), Field(ge=1, le=100)] = 100
    duration: Duration


class Step(_Frozen):
    """One traffic step: the candidate's weight, how long to hold, per-cohort weights."""

    weight: Annotated[int, Strict(), Field(gt=0, le=100)]
    hold: Duration = timedelta(0)
    cohort_weights: dict[str, Percent] = Field(default_factory=dict, max_length=64)
    pause: StrictBool = False


class NoData(_Frozen):
    """What to do while no data arrives: `action` at once, then `then` after `timeout`."""

    action: NoDataAction = NoDataAction.HOLD
    timeout: Duration = timedelta(minutes=10)
    then: NoDataTimeout = NoDataTimeout.PAUSE


class EvalCases(_Frozen):
    """What a rollback records of its failing cells, for the regression set.

    Each failing cell becomes an eval case with up to `maxTraceIds` trace IDs of
    bad candidate requests, from Prometheus exemplars (0: record the case alone).
    """

    max_trace_ids: Annotated[int, Strict(), Field(ge=0, le=1000)] = 20


class MetricSpec(_Frozen):
    """A metric to judge: a built-in `template`, or a custom `query` with its `kind`."""

    name: DnsLabel | None = None
    template: str | None = None
    kind: MetricKind | None = None
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    trials: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    quantile: Annotated[float, Strict(), Field(gt=0, lt=1)] | None = None
    threshold: Annotated[float, Strict(), Field(ge=0, le=1)] | None = None
    max: Limit | None = None
    min: Limit | None = None
    max_increase: Annotated[Limit, Field(ge=0)] | None = None
    max_decrease: Annotated[Limit, Field(ge=0)] | None = None
    max_ratio: Annotated[Limit, Field(gt=0)] | None = None
    #: the difference that is fine, on the scale of the limit: one number for a
    #: metric with one limit, or one per limit (`{max: 0.005, maxIncrease: 0.01}`)
    tolerance: Limit | dict[str, Limit] | None = None
    critical: StrictBool = True

    @property
    def metric_name(self) -> str:
        """The name verdicts and the audit use: `name`, else the template's name."""
        return self.name or self.template or ""

    @property
    def metric_kind(self) -> MetricKind:
        if self.template is not None:
            return TEMPLATES[self.template].kind
        assert self.kind is not None  # enforced by _coherent
        return self.kind

    @model_validator(mode="after")
    def _coherent(self, info: ValidationInfo) -> MetricSpec:
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        problems = metric_problems(self)
        if problems:
            raise PydanticCustomError("metric", "; ".join(m for _, m in problems))
        return self


def metric_problems(m: MetricSpec) -> list[tuple[str, str]]:
    """What is incoherent in `m`, as (camelCase field or "", reason) pairs."""
    if (m.template is None) == (m.query is None):
        return [("", "give either `template` (a built-in metric) or `query` (a custom one)")]
    out: list[tuple[str, str]] = []
    limits = {k: getattr(m, k) for k in ("max", "min", "max_increase", "max_decrease", "max_ratio")}
    if all(v is None for v in limits.values()):
        out.append(("", "give at least one limit: max, min, maxIncrease, maxDecrease or maxRatio"))
    if m.max is not None and m.min is not None and m.min >= m.max:
        out.append(("min", f"min ({m.min:g}) must be below max ({m.max:g})"))
    out.extend(tolerance_problems(m))
    bounded_as = ""
    if m.template is not None:
        template = TEMPLATES.get(m.template)
        if template is None:
            hint = get_close_matches(m.template, TEMPLATES, n=1)
            suggestion = f"did you mean {hint[0]!r}? " if hint else ""
            known = ", ".join(TEMPLATES)
            out.append(("template", f"unknown template {m.template!r}; {suggestion}known: {known}"))
            return out
        if m.kind is not None and m.kind is not template.kind:
            out.append(("kind", f"{template.name} is a {template.kind} metric, not {m.kind}"))
        for field in ("trials", "quantile"):
            if getattr(m, field) is not None:
                out.append((field, f"only for custom queries; {template.name} sets its own"))
        if m.threshold is not None and not template.accepts_threshold:
            out.append(("threshold", f"does not apply to {template.name}"))
        if template.bounded:
            bounded_as = f"{template.name} is a {template.unit} between 0 and 1"
    else:
        if m.name is None:
            out.append(("name", "a custom query needs a name"))
        if m.kind is None:
            out.append(("kind", "a custom query needs a kind: proportion, histogram or gauge"))
        if m.threshold is not None:
            out.append(("threshold", "only applies to the quality-score template"))
        if m.kind is MetricKind.PROPORTION and m.trials is None:
            out.append(("trials", "a proportion needs `trials`, the query counting requests"))
        if m.kind is not MetricKind.PROPORTION and m.trials is not None:
            out.append(("trials", "only applies to kind proportion"))
        if m.kind is MetricKind.HISTOGRAM and m.quantile is None:
            out.append(("quantile", "a histogram needs the quantile to judge, e.g. 0.95"))
        if m.kind is not MetricKind.HISTOGRAM and m.quantile is not None:
            out.append(("quantile", "only applies to kind histogram"))
        if m.kind is MetricKind.PROPORTION:
            bounded_as = "a proportion is a rate between 0 and 1"
        for field in ("query", "trials"):
            text = getattr(m, field)
            if text is not None:
                out.extend((field, reason) for reason in placeholder_problems(text))
    if bounded_as:
        for key in ("max", "min", "max_increase", "max_decrease"):
            value = limits[key]
            if value is not None and not 0 <= value <= 1:
                out.append((to_camel(key), f"{value:g} is out of range: {bounded_as}"))
    return out


#: each limit's camelCase name, its field, and which side of it a tolerance lies on
LIMIT_FIELDS = {
    "max": ("max", "below"),
    "min": ("min", "above"),
    "maxIncrease": ("max_increase", "below"),
    "maxDecrease": ("max_decrease", "below"),
    "maxRatio": ("max_ratio", "below"),
}


def tolerances(m: MetricSpec) -> dict[str, float]:
    """The explicit tolerance of each of `m`'s limits, by camelCase limit name."""
    if m.tolerance is None:
        return {}
    if isinstance(m.tolerance, dict):
        return dict(m.tolerance)
    given = [name for name, (field, _) in LIMIT_FIELDS.items() if getattr(m, field) is not None]
    return {given[0]: m.tolerance} if len(given) == 1 else {}


def tolerance_problems(m: MetricSpec) -> list[tuple[str, str]]:
    """A tolerance must lie strictly on the healthy side of its limit."""
    if m.tolerance is None:
        return []
    given = {name: getattr(m, field) for name, (field, _) in LIMIT_FIELDS.items()}
    given = {name: value for name, value in given.items() if value is not None}
    if not isinstance(m.tolerance, dict) and len(given) > 1:
        names = ", ".join(f"{name}: ..." for name in given)
        return [
            ("tolerance", f"the metric has {len(given)} limits: give one per limit, {{{names}}}")
        ]
    out: list[tuple[str, str]] = []
    path = "tolerance" if not isinstance(m.tolerance, dict) else "tolerance.{}"
    for name, value in tolerances(m).items():
        where = path.format(name)
        if name not in given:
            known = ", ".join(given) or "none"
            out.append((where, f"{name} is not a limit of this metric (its limits: {known})"))
            continue
        limit = given[name]
        side = LIMIT_FIELDS[name][1]
        if side == "below" and value >= limit:
            out.append(
                (
                    where,
                    f"{value:g} is not below {name} {limit:g}: a tolerance is the "
                    "difference that is fine, strictly on the healthy side of the limit",
                )
            )
        if side == "above" and value <= limit:
            out.append(
                (
                    where,
                    f"{value:g} is not above min {limit:g}: a tolerance is the "
                    "value that is fine, strictly on the healthy side of the limit",
                )
            )
        if name == "maxRatio" and value <= 0:
            out.append((where, f"{value:g} is not a ratio: it must be greater than 0"))
    return out


def placeholder_problems(query: str) -> list[str]:
    """Unknown placeholders in a custom query, and a missing {{version}}."""
    out = []
    used = set(_PLACEHOLDER.findall(query))
    for name in sorted(used - set(PLACEHOLDERS)):
        hint = get_close_matches(name, PLACEHOLDERS, n=1)
        suggestion = f" (did you mean {{{{{hint[0]}}}}}?)" if hint else ""
        known = ", ".join("{{" + p + "}}" for p in PLACEHOLDERS)
        out.append(f"unknown placeholder {{{{{name}}}}}{suggestion}; known: {known}")
    if "version" not in used:
        out.append("must use {{version}}, or baseline and candidate read the same series")
    return out


class Analysis(_Frozen):
    """How often to look, over what window, with what confidence, at which metrics."""

    interval: Duration = timedelta(seconds=30)
    window: Duration = timedelta(minutes=5)
    confidence: Annotated[float, Strict(), Field(ge=0.5, le=0.9999)] = 0.95
    #: the chance of catching a candidate at a limit within the planned information
    power: Annotated[float, Strict(), Field(gt=0.5, lt=1)] = 0.8
    min_samples: Annotated[int, Strict(), Field(ge=1, le=10_000_000)] = 200
    no_data: NoData = Field(default_factory=NoData)
    #: `no-failure`: a step advances once none FAILs and each has its minSamples;
    #: `hold`: once none FAILs, whatever the samples; `pass`: once every critical cell
    #: PASSes or is powered. Going to 100 % needs that at every setting
    advance_on: AdvanceOn = AdvanceOn.NO_FAILURE
    #: past it, a rollout whose cells are still undecided pauses for a human (never a
    #: rollback); default: twice the sum of the holds and the shadow, at least 30 minutes
    deadline: Duration | None = None
    metrics: list[MetricSpec] = Field(min_length=1, max_length=64)
    eval_cases: EvalCases = Field(default_factory=EvalCases)


class Promotion(_Frozen):
    #: wait for `canaryctl promote` before going to 100%
    manual_gate: StrictBool = False


class RolloutSpec(_Frozen):
    """What to roll out, how to route it, in which steps, judged on which metrics."""

    model: Text
    baseline: VersionRef
    candidate: VersionRef
    owners: Owners = Field(default_factory=Owners)
    traffic: Traffic
    cohorts: list[Cohort] = Field(default_factory=list, max_length=32)
    shadow: Shadow | None = None
    steps: list[Step] = Field(min_length=1, max_length=100)
    analysis: Analysis
    promotion: Promotion = Field(default_factory=Promotion)
    #: checks before and between steps, and after the end (`controller.policy.gates`)
    gates: list[Gate] = Field(default_factory=list, max_length=32)

    @model_validator(mode="after")
    def _cross_field_checks(self, info: ValidationInfo) -> RolloutSpec:
        if info.context and info.context.get(DEFER_CHECKS):
            return self
        errors = [p for p in run_checks(dict(self)) if p.severity is Severity.ERROR]
        if errors:
            raise PydanticCustomError("policy", "; ".join(f"{p.path}: {p.message}" for p in errors))
        return self

    @property
    def holds(self) -> timedelta:
        """The sum of the steps' holds and the shadow's duration: the shortest rollout."""
        shadow = self.shadow.duration if self.shadow is not None else timedelta(0)
        return sum((s.hold for s in self.steps), shadow)

    @property
    def deadline(self) -> timedelta:
        """`analysis.deadline`, or its default: twice the holds, at least `MIN_DEADLINE`."""
        if self.analysis.deadline is not None:
            return self.analysis.deadline
        return max(2 * self.holds, MIN_DEADLINE)

    def cohort(self, name: str) -> Cohort:
        """The cohort called `name` (KeyError when there is none)."""
        for cohort in self.cohorts:
            if cohort.name == name:
                return cohort
        raise KeyError(name)


class ModelRollout(_Frozen):
    """A rollout policy: the `ModelRollout` custom resource, or a policy file."""

    api_version: Literal["canary.ai/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelRollout"]
    metadata: Metadata
    spec: RolloutSpec

    @property
    def key(self) -> str:
        """`namespace/name`, the identity of a rollout everywhere."""
        return f"{self.metadata.namespace}/{self.metadata.name}"
