"""The gate runner: calls a gate's webhook, or runs its Kubernetes Job, one attempt a tick.

The engine decides (`decide` takes a `GateResult` as it takes a look); this module
only performs an attempt and reports how it went:

- **webhook**: one JSON POST (`gate_payload`) to the gate's URL, with the headers of
  its Secret (`headersFrom`), within its `timeout` (the answer's body included).
  2xx passes, anything else fails; redirects are not followed (a redirect could
  leave the operator's allowlist, which is checked again before every call).
  At most 4 KiB of the body is read and kept as evidence, however large it is.
- **job**: a Job made from the gate's template in the rollout's namespace, owned
  by the ModelRollout (ownerReference: deleting it deletes the Job), with the
  same context as `CANARY_*` environment variables and the eval cases mounted from
  a ConfigMap as `/var/run/canary/cases.json`. Its name is derived from the
  rollout, the gate and the attempt, so a tick finds the Job an earlier tick made;
  the first tick of an attempt creates it (RUNNING), later ticks read its status.
  `Complete` passes, `Failed` fails (its `activeDeadlineSeconds` is the gate's
  timeout, so a Job that runs too long fails as `DeadlineExceeded`). A finished
  Job and its ConfigMap are deleted once read, and so are the Jobs of the gate's
  earlier attempts; `ttlSecondsAfterFinished` removes any the controller missed.

Both carry this model's recorded eval cases as `canaryctl cases export` rows,
from a `CaseSource`. Jobs, ConfigMaps and Secrets are read and written through
`controller.kube.Cluster` (one try per request: the gate's next tick is the retry),
so its error mapping is the one: 403 and invalid objects fail the gate, 5xx,
timeouts and throttling are transient.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from controller import __version__
from controller.cases import EvalCase, export_rows
from controller.engine.state import GateOutcome, GateResult, RolloutState
from controller.errors import PermanentError, TransientError
from controller.kube.client import ApiClient
from controller.kube.cluster import Cluster, RetryPolicy
from controller.kube.errors import ForbiddenError
from controller.kube.objects import CONFIG_MAP, JOB, SECRET, JsonObject
from controller.policy import ModelRollout
from controller.policy.gates import EVIDENCE_BYTES, Gate, JobGate, WebhookAllow, WebhookGate
from controller.routing.base import OwnerReference

log = logging.getLogger(__name__)

#: the payload's schema name, for receivers that check what they were sent
GATE_SCHEMA = "canary-controller/gate/v1"
#: where a Job gate finds the eval cases
CASES_DIR = "/var/run/canary"
CASES_FILE = "cases.json"
#: finished gate Jobs the controller did not delete are removed this long after
JOB_TTL_SECONDS = 3600
ROLLOUT_LABEL = "canary.ai/rollout"
GATE_LABEL = "canary.ai/gate"


class CaseSource(Protocol):
    """The eval cases recorded for a model, as `canaryctl cases export` rows."""

    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]: ...


class NoCases:
    """A source with no recorded cases."""

    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]:
        return []


class CaseStore(Protocol):
    """Where the eval cases are recorded (`RolloutStore.eval_cases`)."""

    def eval_cases(self, key: str | None = None) -> Sequence[EvalCase]: ...


class StoreCases:
    """A model's recorded eval cases from the store, rendered by the same function as
    `canaryctl cases export` (oldest first)."""

    def __init__(self, store: CaseStore) -> None:
        self.store = store

    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]:
        return export_rows(c for c in self.store.eval_cases() if c.model == model)


class SecretHeaders(Protocol):
    """The headers a webhook gate sends: each key of a Secret is a header name."""

    def headers(self, namespace: str, secret: str) -> dict[str, str]: ...


def gate_payload(
    rollout: ModelRollout, state: RolloutState, gate: Gate, cases: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What a gate is told: the rollout, its versions and services, where it stands,
    the gate and attempt, and the model's recorded eval cases."""
    spec = rollout.spec
    wait = state.gate
    namespace = rollout.metadata.namespace
    return {
        "schema": GATE_SCHEMA,
        "rollout": rollout.key,
        "namespace": namespace,
        "name": rollout.metadata.name,
        "model": spec.model,
        "baseline": {"version": spec.baseline.version, "service": spec.baseline.service},
        "candidate": {
            "version": spec.candidate.version,
            "service": spec.candidate.service,
            "host": f"{spec.candidate.service}.{namespace}.svc",
        },
        "phase": str(state.phase),
        "step": state.step + 1,
        "steps": len(spec.steps),
        "weights": state.route.to_json(),
        "gate": {
            "name": gate.name,
            "at": str(gate.at),
            "attempt": wait.attempt if wait is not None else 1,
            "kind": gate.kind,
        },
        "cases": list(cases),
    }


def _result(
    state: RolloutState, outcome: GateOutcome, detail: str = "", body: str = ""
) -> GateResult:
    wait = state.gate
    assert wait is not None
    return GateResult(wait.name, wait.attempt, outcome, detail, body)


def clip(text: str, limit: int = EVIDENCE_BYTES) -> str:
    """`text` cut to at most `limit` UTF-8 bytes, on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit].decode(errors="ignore")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx answer is the gate's answer: it fails


class WebhookGates:
    """Calls webhook gates (see the module doc)."""

    def __init__(
        self,
        allow: WebhookAllow,
        *,
        cases: CaseSource | None = None,
        secrets: SecretHeaders | None = None,
    ) -> None:
        self.allow = allow
        self.cases: CaseSource = cases or NoCases()
        self.secrets = secrets
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

    def check(
        self, rollout: ModelRollout, state: RolloutState, gate: Gate, hook: WebhookGate
    ) -> GateResult:
        if not self.allow.allows(hook.url):
            return _result(
                state, GateOutcome.FAILED, "the URL is not in this controller's webhook allowlist"
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"canary-controller/{__version__}",
        }
        if hook.headers_from is not None:
            if self.secrets is None:
                return _result(
                    state, GateOutcome.FAILED, "headersFrom needs access to Secrets (a cluster)"
                )
            try:
                found = self.secrets.headers(
                    rollout.metadata.namespace, hook.headers_from.secret_name
                )
            except PermanentError as exc:
                return _result(state, GateOutcome.FAILED, str(exc))
            headers.update(found)
        body = json.dumps(
            gate_payload(rollout, state, gate, self.cases.export_rows(rollout.spec.model)),
            ensure_ascii=False,
        ).encode()
        return self._post(state, hook, body, headers)

    def _post(
        self, state: RolloutState, hook: WebhookGate, body: bytes, headers: dict[str, str]
    ) -> GateResult:
        timeout = hook.timeout.total_seconds()
        deadline = time.monotonic() + timeout
        request = urllib.request.Request(hook.url, data=body, headers=headers, method="POST")
        try:
            try:
                response = self._opener.open(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                response = exc  # a non-2xx answer still has a body worth keeping
            with response:
                status = response.status
                text, truncated = _read_some(response, deadline)
        except TimeoutError:
            return _result(state, GateOutcome.FAILED, f"no answer within {timeout:g}s")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return _result(state, GateOutcome.FAILED, f"the call failed: {reason}")
        detail = f"HTTP {status}" + (" (body cut at 4 KiB)" if truncated else "")
        if status is not None and 200 <= status < 300:
            return _result(state, GateOutcome.PASSED, detail, text)
        return _result(state, GateOutcome.FAILED, detail, text)


def _read_some(response: Any, deadline: float) -> tuple[str, bool]:
    """At most `EVIDENCE_BYTES` of the body, before `deadline`; whether there was more.
    TimeoutError once the deadline passes (a body trickled out slowly)."""
    data = b""
    while len(data) <= EVIDENCE_BYTES:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
        if sock is not None:
            sock.settimeout(left)
        chunk = response.read1(EVIDENCE_BYTES + 1 - len(data))
        if not chunk:
            return clip(data.decode(errors="replace")), False
        data += chunk
    return clip(data[:EVIDENCE_BYTES].decode(errors="ignore")), True


class KubeSecretHeaders:
    """Webhook headers from a Secret in the rollout's namespace (real client)."""

    def __init__(self, api: ApiClient, *, request_timeout: float = 10.0) -> None:
        self._cluster = _cluster(api, request_timeout)
        self.request_timeout = request_timeout

    def headers(self, namespace: str, secret: str) -> dict[str, str]:
        unreadable = f"headersFrom: Secret {namespace}/{secret} cannot be read"
        try:
            found = self._cluster.get(SECRET, namespace, secret)
        except ForbiddenError as exc:
            raise PermanentError(f"{unreadable} (HTTP 403)") from exc
        except (PermanentError, TransientError) as exc:
            raise TransientError(_say(f"reading Secret {namespace}/{secret}", exc)) from exc
        if found is None:
            raise PermanentError(f"{unreadable} (HTTP 404)")
        out: dict[str, str] = {}
        for key, value in (found.get("data") or {}).items():
            text = base64.b64decode(value).decode(errors="replace").strip()
            if "\r" in text or "\n" in text:
                raise PermanentError(f"headersFrom: {secret}.{key} holds a line break")
            out[key] = text
        return out


def job_name(rollout: ModelRollout, state: RolloutState, gate: str, attempt: int) -> str:
    """The Job of one attempt: the same name on every tick, a new one per attempt and
    per rollout start (63 characters at most)."""
    digest = hashlib.sha256(
        f"{rollout.key}\n{state.started_at.isoformat()}\n{gate}\n{attempt}".encode()
    ).hexdigest()[:8]
    return f"{rollout.metadata.name[:30].rstrip('-.')}-{gate[:16].rstrip('-')}-{attempt}-{digest}"


def _label(text: str) -> str:
    """A label value for `text` (a hash when it is longer than 63)."""
    return text if len(text) <= 63 else hashlib.sha256(text.encode()).hexdigest()[:63]


def gate_job(
    rollout: ModelRollout,
    state: RolloutState,
    gate: Gate,
    job: JobGate,
    name: str,
) -> dict[str, Any]:
    """The Job of one attempt of `gate`: the template, the context as environment
    variables, the cases' ConfigMap mounted, owned by the ModelRollout."""
    wait = state.gate
    assert wait is not None
    spec: dict[str, Any] = copy.deepcopy(job.template)
    spec.setdefault("backoffLimit", 0)  # the gate's `retries` are the retries
    spec.setdefault("ttlSecondsAfterFinished", JOB_TTL_SECONDS)
    spec["activeDeadlineSeconds"] = max(1, int(job.timeout.total_seconds()))
    pod = spec["template"].setdefault("spec", {})
    pod.setdefault("restartPolicy", "Never")
    pod["volumes"] = [
        *[v for v in pod.get("volumes", []) if v.get("name") != "canary-cases"],
        {"name": "canary-cases", "configMap": {"name": name}},
    ]
    context = gate_env(rollout, state, gate)
    for container in pod["containers"]:
        own = [e for e in container.get("env", []) if e.get("name") not in context]
        container["env"] = [*own, *({"name": k, "value": v} for k, v in context.items())]
        container["volumeMounts"] = [
            *[m for m in container.get("volumeMounts", []) if m.get("name") != "canary-cases"],
            {"name": "canary-cases", "mountPath": CASES_DIR, "readOnly": True},
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": rollout.metadata.namespace,
            "labels": _labels(rollout, gate),
            "ownerReferences": _owners(rollout),
        },
        "spec": spec,
    }


def gate_env(rollout: ModelRollout, state: RolloutState, gate: Gate) -> dict[str, str]:
    """The context a Job gate gets, as `CANARY_*` environment variables."""
    payload = gate_payload(rollout, state, gate, ())
    return {
        "CANARY_ROLLOUT": rollout.key,
        "CANARY_NAMESPACE": rollout.metadata.namespace,
        "CANARY_MODEL": rollout.spec.model,
        "CANARY_BASELINE_VERSION": rollout.spec.baseline.version,
        "CANARY_BASELINE_SERVICE": rollout.spec.baseline.service,
        "CANARY_CANDIDATE_VERSION": rollout.spec.candidate.version,
        "CANARY_CANDIDATE_SERVICE": rollout.spec.candidate.service,
        "CANARY_CANDIDATE_HOST": payload["candidate"]["host"],
        "CANARY_PHASE": str(state.phase),
        "CANARY_STEP": str(payload["step"]),
        "CANARY_WEIGHTS": json.dumps(payload["weights"], sort_keys=True),
        "CANARY_GATE": gate.name,
        "CANARY_GATE_AT": str(gate.at),
        "CANARY_GATE_ATTEMPT": str(payload["gate"]["attempt"]),
        "CANARY_CASES_FILE": f"{CASES_DIR}/{CASES_FILE}",
    }


def _labels(rollout: ModelRollout, gate: Gate) -> dict[str, str]:
    return {
        ROLLOUT_LABEL: _label(rollout.metadata.name),
        GATE_LABEL: gate.name,
        "app.kubernetes.io/managed-by": "canary-controller",
    }


def _owners(rollout: ModelRollout) -> list[dict[str, Any]]:
    """The ModelRollout as owner (none for a policy file: it has no uid)."""
    uid = rollout.metadata.uid
    return [OwnerReference(rollout.metadata.name, uid).to_json()] if uid else []


class JobGates:
    """Runs Job gates through the real Kubernetes client (see the module doc)."""

    def __init__(
        self, api: ApiClient, *, cases: CaseSource | None = None, request_timeout: float = 10.0
    ) -> None:
        self._cluster = _cluster(api, request_timeout)
        self.cases: CaseSource = cases or NoCases()
        self.request_timeout = request_timeout

    def check(
        self, rollout: ModelRollout, state: RolloutState, gate: Gate, job: JobGate
    ) -> GateResult:
        wait = state.gate
        assert wait is not None
        namespace = rollout.metadata.namespace
        name = job_name(rollout, state, gate.name, wait.attempt)
        try:
            found = self._cluster.get(JOB, namespace, name)
        except (PermanentError, TransientError) as exc:
            raise _api_error(f"reading Job {namespace}/{name}", exc) from exc
        if found is None:
            self._start(rollout, state, gate, job, name)
            return _result(state, GateOutcome.RUNNING, f"Job {name} created")
        outcome, detail = _job_outcome(found.get("status") or {})
        if outcome is GateOutcome.RUNNING:
            return _result(state, outcome, detail)
        self._delete(namespace, name)
        return _result(state, outcome, f"Job {name} {detail}", clip(detail))

    def _start(
        self, rollout: ModelRollout, state: RolloutState, gate: Gate, job: JobGate, name: str
    ) -> None:
        namespace = rollout.metadata.namespace
        self._delete_earlier(rollout, gate, name)
        cases = json.dumps(list(self.cases.export_rows(rollout.spec.model)), ensure_ascii=False)
        config_map = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": _labels(rollout, gate),
                "ownerReferences": _owners(rollout),
            },
            "data": {CASES_FILE: cases},
        }
        try:
            # one that exists was made by an earlier tick that did not commit
            self._cluster.create_new(CONFIG_MAP, namespace, config_map)
            if not self._cluster.create_new(
                JOB, namespace, gate_job(rollout, state, gate, job, name)
            ):
                return
        except (PermanentError, TransientError) as exc:
            raise _api_error(f"creating Job {namespace}/{name}", exc) from exc
        log.info("%s: gate %s: Job %s created", rollout.key, gate.name, name)

    def _delete_earlier(self, rollout: ModelRollout, gate: Gate, name: str) -> None:
        """Delete the Jobs of this gate's earlier attempts (a gate run again)."""
        selector = f"{ROLLOUT_LABEL}={_label(rollout.metadata.name)},{GATE_LABEL}={gate.name}"
        try:
            jobs = self._cluster.list_objects(
                JOB, rollout.metadata.namespace, label_selector=selector
            )
        except (PermanentError, TransientError) as exc:
            log.warning("%s: could not list earlier gate Jobs: %s", rollout.key, exc)
            return
        wanted = _labels(rollout, gate)
        for item in jobs:
            meta = item.get("metadata") or {}
            labels = meta.get("labels") or {}
            other = meta.get("name")
            mine = all(labels.get(k) == wanted[k] for k in (ROLLOUT_LABEL, GATE_LABEL))
            if other and other != name and mine:
                self._delete(rollout.metadata.namespace, other)

    def _delete(self, namespace: str, name: str) -> None:
        """Delete a gate's Job (its pods with it) and its ConfigMap; a failure is logged,
        `ttlSecondsAfterFinished` and the owner reference clean up after it."""
        try:
            self._cluster.delete(JOB, namespace, name, propagation="Background")
        except (PermanentError, TransientError) as exc:
            log.warning("could not delete gate Job %s/%s: %s", namespace, name, exc)
        try:
            self._cluster.delete(CONFIG_MAP, namespace, name)
        except (PermanentError, TransientError) as exc:
            log.warning("could not delete gate ConfigMap %s/%s: %s", namespace, name, exc)


def _cluster(api: ApiClient, request_timeout: float) -> Cluster:
    """The gates' way to the cluster: one try per request (the next tick retries)."""
    return Cluster(api, timeout=request_timeout, retry=RetryPolicy(attempts=1))


def _job_outcome(status: JsonObject) -> tuple[GateOutcome, str]:
    """A Job's status as a gate outcome, the way `kubectl wait` reads it."""
    for condition in status.get("conditions") or []:
        if condition.get("status") != "True":
            continue
        text = ": ".join(x for x in (condition.get("reason"), condition.get("message")) if x)
        if condition.get("type") == "Complete":
            return GateOutcome.PASSED, "succeeded" + (f" ({text})" if text else "")
        if condition.get("type") == "Failed":
            return GateOutcome.FAILED, "failed" + (f": {text}" if text else "")
    return GateOutcome.RUNNING, f"running ({status.get('active') or 0} active pod(s))"


def _say(what: str, exc: PermanentError | TransientError) -> str:
    """`what` failed, with the HTTP status the API server answered (if it answered)."""
    status = getattr(exc, "status", None)
    return f"{what}: HTTP {status}: {exc}" if status is not None else f"{what}: {exc}"


def _api_error(what: str, exc: PermanentError | TransientError) -> PermanentError | TransientError:
    """The kube layer's error, said as what the gate was doing; permanent stays permanent."""
    if isinstance(exc, PermanentError):
        return PermanentError(_say(what, exc))
    return TransientError(_say(what, exc))


class GateRunners:
    """The `GateRunner` of the controller: webhook gates, and Job gates when a cluster
    is there (without one, a Job gate fails, saying so)."""

    def __init__(self, webhooks: WebhookGates, jobs: JobGates | None = None) -> None:
        self.webhooks = webhooks
        self.jobs = jobs

    def check(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> GateResult:
        wait = state.gate
        assert wait is not None
        gate = next((g for g in rollout.spec.gates if g.name == wait.name), None)
        if gate is None:
            return _result(state, GateOutcome.PASSED, "no longer in the policy")
        if gate.webhook is not None:
            return self.webhooks.check(rollout, state, gate, gate.webhook)
        assert gate.job is not None
        if self.jobs is None:
            return _result(
                state,
                GateOutcome.FAILED,
                "Job gates are off on this controller (CANARY_JOB_GATES; they need a cluster)",
            )
        try:
            return self.jobs.check(rollout, state, gate, gate.job)
        except PermanentError as exc:
            return _result(state, GateOutcome.FAILED, str(exc), clip(str(exc)))
