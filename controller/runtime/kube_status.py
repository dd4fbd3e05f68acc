"""Report each tick on its ModelRollout: the `status` subresource (as a diff) and Events.

After a tick commits, `KubeStatusReporter.report` computes the whole status the
rollout should show (pure: `desired_status`), compares it with the status the
object has, and writes only what differs, as one JSON merge patch on the status
subresource; when nothing differs, nothing is written. Each phase or step
transition also becomes a core/v1 Event on the ModelRollout, whose reason names
the transition (`StepAdvanced`, `RolledBack`, ...) and whose message says why.

The status the object has is remembered from the last write, with the
resourceVersion that write returned; when the rollout the controller holds
carries another resourceVersion (someone else wrote the object, or it is a new
replica's first tick), it is read again first. So a steady rollout costs no
request at all. Every request goes through `controller.kube.Cluster` (one try
each, with the tick's timeout): its error mapping, its merge patch.

Reporting never fails or holds up a tick: every request has a short timeout,
all of a tick's requests share a small time budget, and a failure (timeout,
5xx, 409, 404) is logged and forgotten: the next tick writes whatever is still
different. Event names are derived from the transition, so an Event reported
twice is created once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from controller.analysis.verdicts import Verdict, worst
from controller.engine.phases import Phase
from controller.engine.state import Look, RolloutState, Transition
from controller.errors import CanaryError
from controller.kube.client import ApiClient
from controller.kube.cluster import Cluster, RetryPolicy
from controller.kube.objects import EVENT, merge_patch
from controller.policy import API_GROUP, API_VERSION, KIND, OVERALL, Cause, ModelRollout
from controller.policy.status import (
    CohortVerdicts,
    Condition,
    ConditionType,
    GateStatus,
    RolloutStatus,
)
from controller.runtime.executor import TickResult
from controller.runtime.kube_source import MODEL_ROLLOUTS, InvalidRollout

log = logging.getLogger(__name__)

JsonObject = dict[str, Any]
COMPONENT = "canary-controller"

#: every status field the controller owns (anything else in `status` is left alone)
OWNED = tuple(field.alias or name for name, field in RolloutStatus.model_fields.items())
_OWNED_CONDITIONS = frozenset(str(c) for c in ConditionType)
_ROLLED_BACK = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})
_MOVING = frozenset({Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.GATE_RUNNING})


# --- what the status should say (pure) -------------------------------------------------------


def desired_status(
    rollout: ModelRollout, result: TickResult, current: Mapping[str, Any], now: datetime
) -> JsonObject:
    """The status a tick's result calls for, given the `current` one (for the times of
    conditions that did not flip, and the verdicts of ticks that did not look)."""
    state = result.decision.state
    route = state.serving()
    generation = state.generation
    observed = max(generation, _int(current.get("observedGeneration")))
    conditions = _conditions(current)
    valid = conditions.get(str(ConditionType.VALID))
    if valid is None or valid.status == "True" or (valid.observed_generation or 0) <= generation:
        _set(conditions, ConditionType.VALID, True, "Valid", "", now, generation)
    if result.route_errors:
        error = result.route_errors[-1]
        _set(conditions, ConditionType.READY, False, "RouteWriteFailed", error, now, generation)
    elif state.restore_pending:
        message = "the route could not be given back yet; retried every tick"
        _set(conditions, ConditionType.READY, False, "RestorePending", message, now, generation)
    else:
        _set(conditions, ConditionType.READY, True, "RouteInSync", str(route), now, generation)
    reason = _reason(state)
    moving = state.phase in _MOVING
    _set(conditions, ConditionType.PROGRESSING, moving, reason, state.reason, now, generation)
    back = state.phase in _ROLLED_BACK
    message = state.reason if back else ""
    why = str(state.cause) if back and state.cause else reason
    _set(conditions, ConditionType.ROLLED_BACK, back, why, message, now, generation)
    verdicts = _verdicts(result.look)
    if verdicts is None and state.phase is not Phase.PENDING:
        verdicts = _kept_verdicts(current)
    status = RolloutStatus(
        observed_generation=observed,
        phase=str(state.phase),
        step=state.step + 1,
        steps=len(rollout.spec.steps),
        weight=route.weight,
        cohort_weights=route.cohort_weights or None,
        mirror_percent=route.mirror_percent or None,
        candidate_version=state.candidate_version,
        reason=state.reason or None,
        cause=state.cause,
        gate=_gate(rollout, state),
        last_transition_time=_seconds(state.step_since),
        verdicts=verdicts or None,
        conditions=_ordered(conditions),
    )
    return _json(status, current)


def invalid_status(
    invalid: InvalidRollout, current: Mapping[str, Any], now: datetime
) -> JsonObject:
    """The current status with `Valid=False`: the latest spec is ignored, and why."""
    conditions = _conditions(current)
    message = _truncate(invalid.message, 1024)
    generation = invalid.generation
    _set(conditions, ConditionType.VALID, False, "InvalidSpec", message, now, generation)
    kept = {k: v for k, v in current.items() if k in OWNED and k != "conditions"}
    try:
        status = RolloutStatus.model_validate(kept)
    except ValueError:  # a status someone broke: ours is rewritten by the next tick
        status = RolloutStatus()
    status = status.model_copy(
        update={
            "observed_generation": max(generation, _int(current.get("observedGeneration"))),
            "conditions": _ordered(conditions),
        }
    )
    return _json(status, current)


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> JsonObject:
    """The merge patch from `current` to `desired` over the owned fields only; {} if none."""
    have = {k: v for k, v in current.items() if k in OWNED}
    want = {k: v for k, v in desired.items() if k in OWNED}
    return merge_patch(have, want)


def _gate(rollout: ModelRollout, state: RolloutState) -> GateStatus | None:
    wait = state.gate
    if wait is None:
        return None
    gate = next((g for g in rollout.spec.gates if g.name == wait.name), None)
    at = str(gate.at) if gate is not None else str(wait.point)
    return GateStatus(name=wait.name, at=at, attempt=wait.attempt, since=_seconds(wait.since))


def _reason(state: RolloutState) -> str:
    if state.phase is Phase.PAUSED and state.waiting is not None:
        return "WaitingFor" + "".join(w.capitalize() for w in str(state.waiting).split("-"))
    return str(state.phase)


def _verdicts(look: Look | None) -> list[CohortVerdicts] | None:
    if look is None or not look.cells:
        return None
    cohorts: dict[str, dict[str, str]] = {}
    worst_of: dict[str, list[Verdict]] = {}
    for cell in look.cells:
        cohorts.setdefault(cell.cohort, {})[cell.metric] = str(cell.verdict)
        worst_of.setdefault(cell.cohort, []).append(cell.verdict)
    order = sorted(cohorts, key=lambda c: (c != OVERALL, list(cohorts).index(c)))
    return [
        CohortVerdicts(cohort=c, verdict=str(worst(worst_of[c])), metrics=cohorts[c]) for c in order
    ]


def _kept_verdicts(current: Mapping[str, Any]) -> list[CohortVerdicts] | None:
    """The verdicts of the last look (a tick without a look keeps them)."""
    try:
        return [CohortVerdicts.model_validate(v) for v in current.get("verdicts") or ()] or None
    except ValueError:  # someone else's edit: dropped, and written again at the next look
        return None


def _conditions(current: Mapping[str, Any]) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for raw in current.get("conditions") or ():
        try:
            condition = Condition.model_validate(raw)
        except ValueError:
            continue  # a condition someone else wrote badly is replaced, not kept
        if condition.type in _OWNED_CONDITIONS:
            found[condition.type] = condition
    return found


def _set(
    conditions: dict[str, Condition],
    kind: ConditionType,
    status: bool,
    reason: str,
    message: str,
    now: datetime,
    generation: int,
) -> None:
    """Set a condition; its lastTransitionTime moves only when its status flips."""
    value: Literal["True", "False"] = "True" if status else "False"
    before = conditions.get(str(kind))
    since = before.last_transition_time if before and before.status == value else _seconds(now)
    conditions[str(kind)] = Condition(
        type=str(kind),
        status=value,
        reason=reason,
        message=_truncate(message, 1024),
        last_transition_time=since,
        observed_generation=generation,
    )


def _ordered(conditions: dict[str, Condition]) -> list[Condition]:
    return [conditions[str(k)] for k in ConditionType if str(k) in conditions]


def _json(status: RolloutStatus, current: Mapping[str, Any]) -> JsonObject:
    """`status` as JSON, with what other writers put in `current` kept as it is: fields
    that are not ours, and conditions of other types (after ours)."""
    out = {k: v for k, v in current.items() if k not in OWNED}
    out.update(status.model_dump(mode="json", exclude_none=True))
    theirs = [
        c
        for c in current.get("conditions") or ()
        if isinstance(c, Mapping) and c.get("type") not in _OWNED_CONDITIONS
    ]
    if theirs:
        out["conditions"] = [*out.get("conditions", []), *theirs]
    return out


def _seconds(when: datetime) -> datetime:
    """Kubernetes times have whole seconds."""
    return when.astimezone(UTC).replace(microsecond=0)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- Events (pure) ---------------------------------------------------------------------------

_WARNINGS = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})
#: transitions whose Event is named by the cause: an ending other than a promotion, a pause
_STOPS = _WARNINGS | {Phase.PAUSED}


def event_reason(t: Transition) -> str:
    """The Event reason of a transition: what happened, in one CamelCase word. A rollout
    that ends or pauses is named by its cause code (`LimitBroken`, `NoData`, `Deadline`...),
    as in its status and messages; the message says which phase it went to."""
    to, src = t.to_phase, t.from_phase
    if t.cause is not None and to in _STOPS:
        return str(t.cause)
    if to is Phase.PENDING:
        return "Restarted"
    if to is Phase.PROGRESSING:
        if src is Phase.PAUSED:
            return "Resumed"
        return "StepAdvanced" if src is Phase.PROGRESSING else "Started"
    if to is Phase.SHADOWING:
        return "Resumed" if src is Phase.PAUSED else "Shadowing"
    return str(to)


def transition_event(rollout: ModelRollout, t: Transition, *, instance: str = "") -> JsonObject:
    """The core/v1 Event for transition `t` of `rollout`; named after the transition,
    so the same transition reported twice is the same Event."""
    meta = rollout.metadata
    steps = len(rollout.spec.steps)
    where = f"step {t.to_step + 1}/{steps}" if t.to_step >= 0 else "before the first step"
    message = f"{t.from_phase} -> {t.to_phase} ({where}): {t.reason}"
    if t.cause is not None:
        message += f" [{t.cause}]"
    if t.actor != "controller":
        message += f" (by {t.actor})"
    identity = (
        f"{meta.uid}|{t.at.isoformat()}|{t.from_phase}|{t.to_phase}|{t.from_step}|{t.to_step}"
    )
    return _event(
        namespace=meta.namespace,
        involved=_involved(meta.namespace, meta.name, meta.uid or ""),
        name=_event_name(meta.name, identity),
        reason=event_reason(t),
        message=message,
        # a rollout stopped because the judge could not measure or decide needs a human too
        warning=t.to_phase in _WARNINGS or t.cause in (Cause.NO_DATA, Cause.DEADLINE),
        when=t.at,
        instance=instance,
    )


def invalid_event(invalid: InvalidRollout, now: datetime, *, instance: str = "") -> JsonObject:
    """The Warning Event for a generation of a ModelRollout that is invalid."""
    return _event(
        namespace=invalid.namespace,
        involved=_involved(invalid.namespace, invalid.name, invalid.uid),
        name=_event_name(invalid.name, f"{invalid.uid}|{invalid.generation}|invalid"),
        reason="InvalidSpec",
        message=f"generation {invalid.generation} is invalid and ignored: {invalid.message}",
        warning=True,
        when=now,
        instance=instance,
    )


def _event_name(name: str, identity: str) -> str:
    """`<name>.<digest of identity>`, within the 253 characters of an object name."""
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return f"{name[:236].rstrip('.-')}.{digest}"


def _involved(namespace: str, name: str, uid: str) -> JsonObject:
    ref: JsonObject = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "namespace": namespace,
        "name": name,
    }
    if uid:
        ref["uid"] = uid
    return ref


def _event(
    *,
    namespace: str,
    involved: JsonObject,
    name: str,
    reason: str,
    message: str,
    warning: bool,
    when: datetime,
    instance: str,
) -> JsonObject:
    stamp = _seconds(when).strftime("%Y-%m-%dT%H:%M:%SZ")
    event: JsonObject = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": _truncate(message, 1024),
        "type": "Warning" if warning else "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": f"{API_GROUP}/{COMPONENT}",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
    if instance:
        event["source"]["host"] = instance
        event["reportingInstance"] = instance
    return event


# --- the writer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Known:
    """The status an object had after our last write, and the version that write made."""

    resource_version: str
    status: JsonObject


class _OutOfTime(Exception):
    """Internal: the tick's reporting budget is spent."""


class _Gone(Exception):
    """Internal: the ModelRollout no longer exists."""


class KubeStatusReporter:
    """A TickReporter that writes the ModelRollout status (as a diff) and Events."""

    def __init__(
        self,
        api: ApiClient,
        *,
        timeout: float = 2.0,
        budget: float = 5.0,
        instance: str = "",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`timeout` bounds each request, `budget` all the requests of one report."""
        # one try per request: a failure waits for the next tick, not for a backoff
        self._cluster = Cluster(api, timeout=timeout, retry=RetryPolicy(attempts=1))
        self.timeout = timeout
        self.budget = budget
        self.instance = instance
        self._clock = clock or (lambda: datetime.now(UTC))
        self._known: dict[str, _Known] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    # --- the two reports -------------------------------------------------------------------

    def report(self, rollout: ModelRollout, result: TickResult) -> None:
        deadline = time.monotonic() + self.budget
        now = self._clock()
        meta = rollout.metadata
        self._write_status(
            meta.namespace,
            meta.name,
            meta.resource_version,
            lambda current: desired_status(rollout, result, current, now),
            deadline,
        )
        for t in result.decision.transitions:
            self._create_event(transition_event(rollout, t, instance=self.instance), deadline)

    def report_invalid(self, invalid: InvalidRollout) -> None:
        """Say on the object that its latest spec is invalid (a source's `on_invalid`)."""
        deadline = time.monotonic() + self.budget
        now = self._clock()
        self._write_status(
            invalid.namespace,
            invalid.name,
            invalid.resource_version,
            lambda current: invalid_status(invalid, current, now),
            deadline,
        )
        self._create_event(invalid_event(invalid, now, instance=self.instance), deadline)

    # --- requests --------------------------------------------------------------------------

    def _write_status(
        self,
        namespace: str,
        name: str,
        version: str | None,
        build: Callable[[Mapping[str, Any]], JsonObject],
        deadline: float,
    ) -> None:
        key = f"{namespace}/{name}"
        with self._lock(key):
            try:
                known = self._known.get(key)
                if known is None or not version or known.resource_version != version:
                    known = self._read(namespace, name, deadline)
                desired = build(known.status)
                patch = status_patch(known.status, desired)
                if not patch:
                    self._known[key] = known
                    log.debug("status of %s unchanged: no write", key)
                    return
                self._known.pop(key, None)  # unknown until the write answers
                answer = self._cluster.patch_status(
                    MODEL_ROLLOUTS, namespace, name, patch, timeout=self._timeout(deadline)
                )
                if answer is None:
                    raise _Gone
                self._known[key] = _known(answer)
                log.debug("status of %s patched: %s", key, sorted(patch))
            except Exception as exc:  # a report never fails a tick
                self._known.pop(key, None)
                _log_failure(f"write the status of ModelRollout {key}", exc)

    def _read(self, namespace: str, name: str, deadline: float) -> _Known:
        found = self._cluster.get_status(
            MODEL_ROLLOUTS, namespace, name, timeout=self._timeout(deadline)
        )
        if found is None:
            raise _Gone
        return _known(found)

    def _create_event(self, event: JsonObject, deadline: float) -> None:
        namespace, name = event["metadata"]["namespace"], event["metadata"]["name"]
        try:
            if not self._cluster.create_new(
                EVENT, namespace, event, timeout=self._timeout(deadline)
            ):  # this transition was reported before
                log.debug("event %s/%s exists already", namespace, name)
        except Exception as exc:  # a report never fails a tick
            _log_failure(f"create the {event['reason']} event in {namespace}", exc)

    def _timeout(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0.01:
            raise _OutOfTime(f"the reporting budget of {self.budget}s is spent")
        return min(self.timeout, left)

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def _known(obj: Mapping[str, Any]) -> _Known:
    meta = obj.get("metadata") or {}
    return _Known(str(meta.get("resourceVersion") or ""), dict(obj.get("status") or {}))


def _log_failure(what: str, exc: Exception) -> None:
    status = getattr(exc, "status", None)
    if isinstance(exc, _Gone) or status == 404:
        log.info("could not %s: it no longer exists", what)
    elif isinstance(exc, CanaryError) and status is not None:
        log.warning("could not %s: HTTP %s: %s", what, status, exc)
    elif isinstance(exc, CanaryError | _OutOfTime):
        log.warning("could not %s: %s", what, exc)
    else:
        log.exception("could not %s", what)
