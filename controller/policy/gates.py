"""Gates: checks that run before and between a rollout's steps, and after it ends.

A gate is a web call (`webhook`) or a Kubernetes Job (`job`) that must succeed
before the rollout goes on. It runs at one point of the rollout (`at`):

    preRollout        before the shadow or the first step: no user has seen the candidate
    beforeStep: N     before step N (1-based) gets its traffic
    beforePromotion   at the last step, before the rollout is promoted
    postRollout       after the promotion (a report; nothing is left to stop)
    onRollback        after a rollback (a report; the traffic is back already)

A gate that still fails after its `retries` does what `onFailure` says:
`rollback` (the default before and between steps), `pause` for a human, or
`ignore` (the only choice, and the default, once the rollout has ended).

Webhook URLs are checked against the operator's allowlist (`CANARY_WEBHOOK_ALLOW`,
`WebhookAllow`): without it, a tenant who may write a ModelRollout could make the
controller call any service its network reaches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from controller.policy.durations import Duration

#: how much of a webhook's response body (and of a Job's message) a gate keeps
EVIDENCE_BYTES = 4096


class GatePoint(StrEnum):
    """Where in a rollout a gate runs."""

    PRE_ROLLOUT = "preRollout"
    BEFORE_STEP = "beforeStep"
    BEFORE_PROMOTION = "beforePromotion"
    POST_ROLLOUT = "postRollout"
    ON_ROLLBACK = "onRollback"

    @property
    def after_end(self) -> bool:
        """Runs once the rollout has ended: it can report, not stop anything."""
        return self in (GatePoint.POST_ROLLOUT, GatePoint.ON_ROLLBACK)


class OnFailure(StrEnum):
    """What a gate that failed (after its retries) does to the rollout."""

    ROLLBACK = "rollback"
    PAUSE = "pause"
    IGNORE = "ignore"


@dataclass(frozen=True)
class GateAt:
    """A gate's point; `step` is the 1-based step of `beforeStep`, else None."""

    point: GatePoint
    step: int | None = None

    def __str__(self) -> str:
        return f"beforeStep {self.step}" if self.step is not None else str(self.point)


def _parse_at(value: Any) -> GateAt:
    if isinstance(value, GateAt):
        return value
    simple = [str(p) for p in GatePoint if p is not GatePoint.BEFORE_STEP]
    if isinstance(value, str):
        if value in simple:
            return GateAt(GatePoint(value))
        if value == GatePoint.BEFORE_STEP:
            raise PydanticCustomError("gate_at", "beforeStep needs its step: {beforeStep: 2}")
        raise PydanticCustomError(
            "gate_at",
            "must be one of {choices}, or {{beforeStep: N}} (got {got!r})",
            {"choices": ", ".join(simple), "got": value},
        )
    if isinstance(value, Mapping) and set(value) == {"beforeStep"}:
        step = value["beforeStep"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise PydanticCustomError(
                "gate_at",
                "beforeStep must be a step number, 1 or more (got {got!r})",
                {"got": step},
            )
        return GateAt(GatePoint.BEFORE_STEP, step)
    raise PydanticCustomError(
        "gate_at",
        "must be one of {choices}, or {{beforeStep: N}}",
        {"choices": ", ".join(simple)},
    )


def _dump_at(at: GateAt) -> str | dict[str, int]:
    return {"beforeStep": at.step} if at.step is not None else str(at.point)


At = Annotated[
    GateAt,
    BeforeValidator(_parse_at),
    PlainSerializer(_dump_at),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "string",
                    "enum": [str(p) for p in GatePoint if p is not GatePoint.BEFORE_STEP],
                },
                {
                    "type": "object",
                    "properties": {"beforeStep": {"type": "integer", "minimum": 1}},
                    "required": ["beforeStep"],
                    "additionalProperties": False,
                },
            ],
            "description": "preRollout, {beforeStep: N}, beforePromotion, postRollout or "
            "onRollback.",
        }
    ),
]


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
    )


class SecretRef(_Frozen):
    """A Secret in the rollout's namespace; each of its keys is a header name."""

    secret_name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")]


class WebhookGate(_Frozen):
    """A JSON POST; any 2xx answer passes."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    #: the longest one call may take, the answer's body included
    timeout: Duration = timedelta(seconds=30)
    #: headers to send (an Authorization token, say), read from a Secret at each call
    headers_from: SecretRef | None = None


#: the shortest time a webhook gate's attempt may stay undecided (`Gate.timeout`)
WEBHOOK_UNDECIDED = timedelta(minutes=5)
#: the longest a Job gate may run when its policy does not say
DEFAULT_JOB_TIMEOUT = timedelta(minutes=10)


class JobGate(_Frozen):
    """A Kubernetes Job made from `template` (a Job's spec) in the rollout's namespace."""

    template: Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "description": "A Job's spec (batch/v1 JobSpec) with its pod template.",
            }
        ),
    ]
    timeout: Duration = DEFAULT_JOB_TIMEOUT


class Gate(_Frozen):
    """A check at one point of the rollout: a webhook or a Job (exactly one)."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")]
    at: At
    webhook: WebhookGate | None = None
    job: JobGate | None = None
    #: default: rollback before or between steps, ignore once the rollout has ended
    on_failure: OnFailure | None = None
    #: further attempts after a failed one, before `onFailure` applies
    retries: Annotated[int, Strict(), Field(ge=0, le=10)] = 0

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        if (self.webhook is None) == (self.job is None):
            raise PydanticCustomError("gate", "give exactly one of webhook or job")
        return self

    @property
    def failure_action(self) -> OnFailure:
        """`onFailure`, or its default for this gate's point."""
        if self.on_failure is not None:
            return self.on_failure
        return OnFailure.IGNORE if self.at.point.after_end else OnFailure.ROLLBACK

    @property
    def kind(self) -> str:
        return "webhook" if self.webhook is not None else "job"

    @property
    def timeout(self) -> timedelta:
        """The longest one attempt may stay undecided: a Job's `timeout`; for a webhook,
        whose call always answers within its `timeout`, the time an attempt may be kept
        from calling (the Secret of its headers unreadable, say): twice that, at least
        `WEBHOOK_UNDECIDED`."""
        if self.webhook is not None:
            return max(2 * self.webhook.timeout, WEBHOOK_UNDECIDED)
        assert self.job is not None
        return self.job.timeout


def gates_at(gates: Iterable[Gate], point: GatePoint, step: int | None = None) -> list[Gate]:
    """The gates at `point` (for beforeStep: before the 1-based `step`), in policy order."""
    return [g for g in gates if g.at.point is point and g.at.step == step]


# --- checks ----------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's URL, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"{url!r} is not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"{url!r} is not an http:// or https:// URL"
    if not parts.hostname:
        return f"{url!r} has no host"
    if parts.username or parts.password:
        return "must not carry credentials; use headersFrom with a Secret"
    if port == 0:
        return f"{url!r} has port 0"
    if parts.fragment:
        return f"{url!r} has a fragment (#...), which is never sent"
    return None


def job_template_problems(template: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What is wrong with a Job gate's template (a Job's spec), as (subpath, reason)."""
    pod = template.get("template")
    if not isinstance(pod, Mapping):
        return [("template", "a Job spec needs its pod `template` with `spec.containers`")]
    spec = pod.get("spec")
    containers = spec.get("containers") if isinstance(spec, Mapping) else None
    if not isinstance(containers, list) or not containers:
        return [("template.spec.containers", "the Job's pod template has no containers")]
    out: list[tuple[str, str]] = []
    for i, container in enumerate(containers):
        where = f"template.spec.containers[{i}]"
        if not isinstance(container, Mapping):
            out.append((where, "must be a container (a mapping with name and image)"))
            continue
        for key in ("name", "image"):
            if not isinstance(container.get(key), str) or not container.get(key):
                out.append((f"{where}.{key}", "is required"))
    restart = spec.get("restartPolicy") if isinstance(spec, Mapping) else None
    if restart not in (None, "Never", "OnFailure"):
        out.append(("template.spec.restartPolicy", "a Job's pods restart Never or OnFailure"))
    return out


@dataclass(frozen=True)
class AllowedUrl:
    """One allowlist entry: a scheme, a host (`*.example.com` for its subdomains), a
    port, and a path prefix (whole segments)."""

    scheme: str
    host: str
    port: int
    path: str

    def matches(self, url: str) -> bool:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme != self.scheme or _port(parts.scheme, parts.port) != self.port:
            return False
        if self.host.startswith("*."):
            if not host.endswith(self.host[1:]) or host == self.host[2:]:
                return False
        elif host != self.host:
            return False
        path = parts.path or "/"
        prefix = self.path.rstrip("/")
        return path == prefix or path.startswith(prefix + "/") or not prefix


def _port(scheme: str, port: int | None) -> int:
    return port if port is not None else (443 if scheme == "https" else 80)


@dataclass(frozen=True)
class WebhookAllow:
    """The operator's allowlist of webhook URLs (`CANARY_WEBHOOK_ALLOW`): comma-separated
    URL prefixes such as `https://evals.internal.example.com/hooks,http://*.evals.svc:8080`.
    Empty: no webhook gate is allowed."""

    entries: tuple[AllowedUrl, ...] = ()
    text: str = ""
    #: False: the operator's setting is not known here (`canaryctl validate` on a machine
    #: without CANARY_WEBHOOK_ALLOW): URLs are not checked, a warning says so. The
    #: controller always checks: unset is empty there.
    configured: bool = True

    @classmethod
    def parse(cls, text: str, *, configured: bool = True) -> WebhookAllow:
        """ValueError naming the bad entry."""
        entries = []
        for raw in (part.strip() for part in text.split(",")):
            if not raw:
                continue
            probe = raw.replace("://*.", "://wildcard.", 1)
            problem = url_problem(probe)
            if problem is not None:
                raise ValueError(f"webhook allowlist entry {raw!r}: {problem}")
            parts = urlsplit(raw)
            netloc_host = parts.netloc.rsplit("@", 1)[-1]
            host = netloc_host.rsplit(":", 1)[0] if not netloc_host.endswith("]") else netloc_host
            host = host.strip("[]").lower()
            if "*" in host and not (host.startswith("*.") and "*" not in host[2:]):
                raise ValueError(f"webhook allowlist entry {raw!r}: only a leading *. is allowed")
            entries.append(
                AllowedUrl(
                    parts.scheme,
                    host,
                    _port(parts.scheme, urlsplit(probe).port),
                    parts.path or "/",
                )
            )
        return cls(tuple(entries), text, configured)

    def allows(self, url: str) -> bool:
        return any(entry.matches(url) for entry in self.entries)
