"""Job gates through the real `kubernetes` client on the API emulator (kmock).

The emulator has no job controller: the tests set a Job's status the way the job
controller does (`Complete` or `Failed` conditions with their reasons).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.verdicts import Verdict
from controller.engine.phases import Phase
from controller.engine.state import Cell, GateOutcome, GateWait, Look, RolloutState
from controller.errors import PermanentError, TransientError
from controller.policy import ModelRollout, load_text
from controller.policy.gates import GatePoint, WebhookAllow
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation
from controller.runtime.gates import (
    CASES_FILE,
    GateRunners,
    JobGates,
    KubeSecretHeaders,
    WebhookGates,
    job_name,
)
from controller.store.memory import MemoryStore
from tests.kube import KubeApi
from tests.policy.base import policy

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
JOBS = "batch/v1/jobs"
CONFIG_MAPS = "v1/configmaps"
UID = "5b8e1c2a-0000-4000-8000-000000000001"
CASE = {"id": "c1", "model": "bot", "cohort": "non-english", "candidate_version": "v2"}
GATE = (
    "{name: evals, at: preRollout, job: {timeout: 15m, template: {template: {spec: "
    "{containers: [{name: evals, image: 'registry.example/evals:3', "
    "env: [{name: SUITE, value: regressions}, {name: CANARY_MODEL, value: spoofed}]}]}}}}}"
)
ROLLOUT = load_text(
    policy(
        (
            "metadata: {name: bot-v2, namespace: llm}",
            f"metadata: {{name: bot-v2, namespace: llm, uid: {UID}}}",
        )
    )
    + "  gates:\n    - "
    + GATE
    + "\n"
)[0].rollout


@dataclass
class Cases:
    def export_rows(self, model: str) -> Sequence[Mapping[str, Any]]:
        return [CASE] if model == "bot" else []


@pytest.fixture(name="kube")
def kube_fixture() -> Iterator[KubeApi]:
    with KubeApi() as api:
        api.server.register(JOBS, "Job", subresources=("status",))
        api.server.register(CONFIG_MAPS, "ConfigMap")
        yield api


@pytest.fixture(name="jobs")
def jobs_fixture(kube: KubeApi) -> Iterator[JobGates]:
    client = kube.client()
    try:
        yield JobGates(client, cases=Cases(), request_timeout=5)
    finally:
        client.close()


def waiting(attempt: int = 1) -> RolloutState:
    return RolloutState(
        phase=Phase.GATE_RUNNING,
        step=-1,
        candidate_version="v2",
        generation=1,
        started_at=T0,
        phase_since=T0,
        step_since=T0,
        analysis_since=T0,
        gate=GateWait("evals", GatePoint.PRE_ROLLOUT, T0, attempt=attempt),
    )


def finish(kube: KubeApi, name: str, condition: str, reason: str, message: str) -> None:
    """Set the Job's status as the job controller does when it ends."""
    job = kube.server.get(JOBS, "llm", name)
    assert job is not None
    counts = {"succeeded": 1} if condition == "Complete" else {"failed": 1}
    job["status"] = {
        **counts,
        "startTime": "2026-11-22T08:00:05Z",
        "conditions": [
            {
                "type": "SuccessCriteriaMet" if condition == "Complete" else "FailureTarget",
                "status": "True",
                "reason": reason,
                "message": message,
            },
            {"type": condition, "status": "True", "reason": reason, "message": message},
        ],
    }
    kube.call(lambda: kube.server.put(JOBS, job))


def check(jobs: JobGates, attempt: int = 1) -> Any:
    [gate] = ROLLOUT.spec.gates
    assert gate.job is not None
    return jobs.check(ROLLOUT, waiting(attempt), gate, gate.job)


def test_the_first_check_creates_the_job_with_the_context_and_the_cases(
    kube: KubeApi, jobs: JobGates
) -> None:
    result = check(jobs)
    name = job_name(ROLLOUT, waiting(), "evals", 1)
    assert (result.outcome, result.detail) == (GateOutcome.RUNNING, f"Job {name} created")
    job = kube.server.get(JOBS, "llm", name)
    assert job is not None
    assert job["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "canary.ai/v1alpha1",
            "kind": "ModelRollout",
            "name": "bot-v2",
            "uid": UID,
            "controller": True,
        }
    ]
    assert job["metadata"]["labels"]["canary.ai/gate"] == "evals"
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 900)
    assert spec["ttlSecondsAfterFinished"] == 3600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["SUITE"] == "regressions"  # the template's own
    assert env["CANARY_MODEL"] == "bot"  # the context wins over a template's spoof
    assert (env["CANARY_ROLLOUT"], env["CANARY_CANDIDATE_VERSION"]) == ("llm/bot-v2", "v2")
    assert (env["CANARY_GATE"], env["CANARY_GATE_ATTEMPT"], env["CANARY_PHASE"]) == (
        "evals",
        "1",
        "GateRunning",
    )
    assert env["CANARY_CASES_FILE"] == f"/var/run/canary/{CASES_FILE}"
    assert container["volumeMounts"] == [
        {"name": "canary-cases", "mountPath": "/var/run/canary", "readOnly": True}
    ]
    assert pod["volumes"] == [{"name": "canary-cases", "configMap": {"name": name}}]
    config_map = kube.server.get(CONFIG_MAPS, "llm", name)
    assert config_map is not None
    assert json.loads(config_map["data"][CASES_FILE]) == [CASE]
    assert config_map["metadata"]["ownerReferences"][0]["uid"] == UID


def test_a_job_still_running_is_running(kube: KubeApi, jobs: JobGates) -> None:
    check(jobs)
    result = check(jobs)
    assert (result.outcome, result.detail) == (GateOutcome.RUNNING, "running (0 active pod(s))")
    assert (
        len([r for r in kube.server.requests("POST") if r.resource and r.resource.plural == "jobs"])
        == 1
    )  # created once


def test_a_complete_job_passes_and_is_cleaned_up(kube: KubeApi, jobs: JobGates) -> None:
    check(jobs)
    name = job_name(ROLLOUT, waiting(), "evals", 1)
    finish(
        kube, name, "Complete", "CompletionsReached", "Reached expected number of succeeded pods"
    )
    result = check(jobs)
    assert result.outcome is GateOutcome.PASSED
    assert result.detail == (
        f"Job {name} succeeded (CompletionsReached: Reached expected number of succeeded pods)"
    )
    assert kube.server.get(JOBS, "llm", name) is None
    assert kube.server.get(CONFIG_MAPS, "llm", name) is None


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        pytest.param(
            "BackoffLimitExceeded", "Job has reached the specified backoff limit", id="failed"
        ),
        pytest.param(
            "DeadlineExceeded", "Job was active longer than specified deadline", id="timed-out"
        ),
    ],
)
def test_a_failed_job_fails_with_its_reason(
    kube: KubeApi, jobs: JobGates, reason: str, message: str
) -> None:
    check(jobs)
    name = job_name(ROLLOUT, waiting(), "evals", 1)
    finish(kube, name, "Failed", reason, message)
    result = check(jobs)
    assert result.outcome is GateOutcome.FAILED
    assert result.detail == f"Job {name} failed: {reason}: {message}"
    assert result.body == f"failed: {reason}: {message}"
    assert kube.server.get(JOBS, "llm", name) is None


def test_a_new_attempt_is_a_new_job_and_the_old_one_goes(kube: KubeApi, jobs: JobGates) -> None:
    check(jobs)
    first = job_name(ROLLOUT, waiting(), "evals", 1)
    check(jobs, attempt=2)
    second = job_name(ROLLOUT, waiting(), "evals", 2)
    assert first != second
    assert kube.server.get(JOBS, "llm", first) is None
    assert kube.server.get(JOBS, "llm", second) is not None


def test_rbac_forbidding_jobs_fails_the_gate_saying_so(kube: KubeApi) -> None:
    kube.server.fail("POST", "jobs", None, 403)
    client = kube.client()
    try:
        runner = GateRunners(WebhookGates(WebhookAllow()), JobGates(client, request_timeout=5))
        result = runner.check(ROLLOUT, waiting(), T0)
    finally:
        client.close()
    assert result.outcome is GateOutcome.FAILED
    assert "creating Job llm/" in result.detail and "HTTP 403" in result.detail


def test_an_unavailable_api_server_is_transient(kube: KubeApi, jobs: JobGates) -> None:
    kube.server.fail("GET", "jobs", None, 503)
    with pytest.raises(TransientError, match="HTTP 503"):
        check(jobs)


def test_job_gates_turned_off_fail_saying_so() -> None:
    result = GateRunners(WebhookGates(WebhookAllow())).check(ROLLOUT, waiting(), T0)
    assert result.outcome is GateOutcome.FAILED
    assert "Job gates are off on this controller" in result.detail


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Metrics:
    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.PASS),)))


def test_a_pre_rollout_job_gate_through_the_executor(kube: KubeApi) -> None:
    client = kube.client()
    store, clock = MemoryStore(), Clock()
    executor = Executor(
        store,
        clock,
        gates=GateRunners(WebhookGates(WebhookAllow()), JobGates(client, cases=Cases())),
    )
    route = MemoryRouter(RouteTarget.of(ROLLOUT))

    def tick() -> RolloutState:
        executor.tick(ROLLOUT, route, Metrics())
        clock.at += timedelta(minutes=1)
        stored = store.get(ROLLOUT.key)
        assert stored is not None
        return RolloutState.from_json(stored.state)

    try:
        assert tick().phase is Phase.GATE_RUNNING  # entered
        assert tick().phase is Phase.GATE_RUNNING  # the Job created
        assert tick().phase is Phase.GATE_RUNNING  # still running
        assert route.history == ()
        name = job_name(ROLLOUT, waiting(), "evals", 1)
        finish(kube, name, "Complete", "CompletionsReached", "done")
        state = tick()
    finally:
        client.close()
    assert (state.phase, state.step) == (Phase.PROGRESSING, 0)
    assert [s.weight for s in route.history] == [5]
    assert kube.server.get(JOBS, "llm", name) is None


def test_a_finished_job_is_deleted_with_its_pods(kube: KubeApi, jobs: JobGates) -> None:
    """The delete asks for background propagation: the Job's pods go with it."""
    check(jobs)
    name = job_name(ROLLOUT, waiting(), "evals", 1)
    finish(kube, name, "Complete", "CompletionsReached", "")
    check(jobs)
    [delete] = [r for r in kube.server.requests("DELETE") if "/jobs/" in r.url.path]
    assert delete.url.query.get("propagationPolicy") == "Background"


# --- webhook headers from a Secret, through the same cluster seam ------------------------------

SECRETS = "v1/secrets"


@pytest.fixture(name="secrets")
def secrets_fixture(kube: KubeApi) -> Iterator[KubeSecretHeaders]:
    kube.server.register(SECRETS, "Secret")
    client = kube.client()
    try:
        yield KubeSecretHeaders(client, request_timeout=5)
    finally:
        client.close()


def test_the_headers_of_a_secret_are_read_decoded(
    kube: KubeApi, secrets: KubeSecretHeaders
) -> None:
    token = base64.b64encode(b"Bearer s3cret\n").decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "hook", "namespace": "llm"},
    }
    kube.call(lambda: kube.server.put(SECRETS, {**secret, "data": {"Authorization": token}}))
    assert secrets.headers("llm", "hook") == {"Authorization": "Bearer s3cret"}


def test_a_missing_secret_fails_the_gate_for_good(secrets: KubeSecretHeaders) -> None:
    with pytest.raises(PermanentError, match=r"Secret llm/hook cannot be read \(HTTP 404\)"):
        secrets.headers("llm", "hook")


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (403, PermanentError, r"Secret llm/hook cannot be read \(HTTP 403\)"),  # for good
        (503, TransientError, "reading Secret llm/hook: HTTP 503"),  # tried again later
    ],
)
def test_a_secret_the_api_server_refuses_fails_the_gate_as_its_status_says(
    kube: KubeApi, secrets: KubeSecretHeaders, status: int, error: type[Exception], message: str
) -> None:
    kube.server.fail("GET", "secrets", "hook", status)
    with pytest.raises(error, match=message):
        secrets.headers("llm", "hook")
