"""The `gates` section: every mistake an error with its path and line, nothing loaded."""

from __future__ import annotations

import pytest

from controller.errors import Severity
from controller.policy import check_text, load_text
from controller.policy.gates import GatePoint, OnFailure, WebhookAllow
from tests.policy.base import policy

HOOK = "webhook: {url: 'https://evals.example.com/run'}"
JOB = "job: {template: {template: {spec: {containers: [{name: e, image: 'evals:1'}]}}}}"
ALLOW = WebhookAllow.parse("https://evals.example.com/run,http://*.evals.svc:8080")
#: the first gate's line in `with_gates` (the base policy has 21 lines, then `gates:`)
LINE = 23


def with_gates(*gates: str) -> str:
    return policy() + "  gates:\n" + "".join(f"    - {g}\n" for g in gates)


def errors(text: str, allow: WebhookAllow | None = None) -> list[tuple[str, int | None, str]]:
    policies, problems = check_text(text, "p.yaml", webhook_allow=allow)
    found = [(p.path, p.line, p.message) for p in problems if p.severity is Severity.ERROR]
    if found:
        assert policies == []  # an invalid policy loads nothing
    return found


def test_a_valid_gates_section_loads_with_its_defaults() -> None:
    [loaded] = load_text(
        with_gates(
            "{name: evals, at: preRollout, retries: 2, " + HOOK + "}",
            "{name: load, at: {beforeStep: 3}, onFailure: pause, " + JOB + "}",
            "{name: report, at: postRollout, " + HOOK + "}",
        )
    )
    evals, load, report = loaded.rollout.spec.gates
    assert (evals.at.point, evals.retries, evals.failure_action) == (
        GatePoint.PRE_ROLLOUT,
        2,
        OnFailure.ROLLBACK,
    )
    assert (load.at.point, load.at.step, load.failure_action, load.kind) == (
        GatePoint.BEFORE_STEP,
        3,
        OnFailure.PAUSE,
        "job",
    )
    assert report.failure_action is OnFailure.IGNORE  # the default once the rollout ended
    # the policy as stored (and read back by a restarted controller) is the same policy
    dumped = loaded.rollout.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["spec"]["gates"][1]["at"] == {"beforeStep": 3}
    assert type(loaded.rollout).model_validate(dumped) == loaded.rollout


@pytest.mark.parametrize(
    ("gate", "path", "reason"),
    [
        pytest.param(
            "{name: g, at: preRollout, webhook: {url: 'ftp://evals/run'}}",
            "spec.gates[0].webhook.url",
            "is not an http:// or https:// URL",
            id="bad-scheme",
        ),
        pytest.param(
            "{name: g, at: preRollout, webhook: {url: 'https://'}}",
            "spec.gates[0].webhook.url",
            "has no host",
            id="no-host",
        ),
        pytest.param(
            "{name: g, at: preRollout, webhook: {url: 'https://u:p@evals.example.com/'}}",
            "spec.gates[0].webhook.url",
            "must not carry credentials",
            id="credentials",
        ),
        pytest.param(
            "{name: g, at: preRollout, webhook: {url: 'http://evals:99999/'}}",
            "spec.gates[0].webhook.url",
            "is not a URL",
            id="bad-port",
        ),
        pytest.param(
            "{name: g, at: {beforeStep: 4}, " + HOOK + "}",
            "spec.gates[0].at.beforeStep",
            "there is no step 4: the rollout has 3 step(s)",
            id="missing-step",
        ),
        pytest.param(
            "{name: g, at: {beforeStep: 0}, " + HOOK + "}",
            "spec.gates[0].at",
            "beforeStep must be a step number, 1 or more",
            id="step-zero",
        ),
        pytest.param(
            "{name: g, at: beforeStep, " + HOOK + "}",
            "spec.gates[0].at",
            "beforeStep needs its step",
            id="step-missing",
        ),
        pytest.param(
            "{name: g, at: prerollout, " + HOOK + "}",
            "spec.gates[0].at",
            "must be one of preRollout, beforePromotion, postRollout, onRollback",
            id="unknown-point",
        ),
        pytest.param(
            "{name: g, at: preRollout, job: {template: {template: {spec: {containers: []}}}}}",
            "spec.gates[0].job.template.spec.containers",
            "the Job's pod template has no containers",
            id="job-without-containers",
        ),
        pytest.param(
            "{name: g, at: preRollout, job: {template: {backoffLimit: 1}}}",
            "spec.gates[0].job.template",
            "a Job spec needs its pod `template`",
            id="job-without-pod-template",
        ),
        pytest.param(
            "{name: g, at: preRollout, job: {template: {template: {spec: "
            "{containers: [{name: e}]}}}}}",
            "spec.gates[0].job.template.spec.containers[0].image",
            "is required",
            id="container-without-image",
        ),
        pytest.param(
            "{name: g, at: preRollout}",
            "spec.gates[0]",
            "give exactly one of webhook or job",
            id="neither",
        ),
        pytest.param(
            "{name: g, at: preRollout, " + HOOK + ", " + JOB + "}",
            "spec.gates[0]",
            "give exactly one of webhook or job",
            id="both",
        ),
        pytest.param(
            "{name: g, at: onRollback, onFailure: rollback, " + HOOK + "}",
            "spec.gates[0].onFailure",
            "can only report: onFailure must be ignore",
            id="after-end-cannot-roll-back",
        ),
        pytest.param(
            "{name: g, at: preRollout, retries: 11, " + HOOK + "}",
            "spec.gates[0].retries",
            "less than or equal to 10",
            id="too-many-retries",
        ),
    ],
)
def test_a_bad_gate_is_an_error_at_its_path_and_line(gate: str, path: str, reason: str) -> None:
    [(where, line, message)] = errors(with_gates(gate))
    assert where == path
    assert line == LINE
    assert reason in message


def test_two_gates_with_one_name() -> None:
    text = with_gates(
        "{name: g, at: preRollout, " + HOOK + "}", "{name: g, at: beforePromotion, " + HOOK + "}"
    )
    assert errors(text) == [("spec.gates[1].name", LINE + 1, "'g' is already the name of gates[0]")]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        pytest.param("https://evals.example.com/run", True, id="exact"),
        pytest.param("https://evals.example.com/run/v2?model=bot", True, id="below-the-path"),
        pytest.param("https://evals.example.com/running", False, id="not-a-whole-segment"),
        pytest.param("https://evals.example.com/other", False, id="other-path"),
        pytest.param("http://evals.example.com/run", False, id="other-scheme"),
        pytest.param("https://evals.example.com:8443/run", False, id="other-port"),
        pytest.param("http://a.evals.svc:8080/x", True, id="wildcard-subdomain"),
        pytest.param("http://evals.svc:8080/x", False, id="wildcard-not-the-domain"),
        pytest.param("http://a.evals.svc/x", False, id="wildcard-other-port"),
        pytest.param("http://169.254.169.254/latest/meta-data", False, id="metadata-service"),
        pytest.param("http://kubernetes.default.svc/api", False, id="api-server"),
    ],
)
def test_the_allowlist(url: str, allowed: bool) -> None:
    assert ALLOW.allows(url) is allowed


def test_a_webhook_off_the_allowlist_is_refused_with_its_line() -> None:
    text = with_gates("{name: g, at: preRollout, webhook: {url: 'http://10.0.0.1/admin'}}")
    assert errors(text) == []  # the policy alone is fine
    [(where, line, message)] = errors(text, ALLOW)
    assert (where, line) == ("spec.gates[0].webhook.url", LINE)
    assert "is not in this controller's webhook allowlist" in message
    assert errors(with_gates("{name: g, at: preRollout, " + HOOK + "}"), ALLOW) == []


def test_an_empty_allowlist_allows_no_webhook() -> None:
    [(_, _, message)] = errors(
        with_gates("{name: g, at: preRollout, " + HOOK + "}"), WebhookAllow.parse("")
    )
    assert "CANARY_WEBHOOK_ALLOW is empty" in message


@pytest.mark.parametrize(
    "entry",
    ["ftp://x/", "https://", "https://a.*.example.com/", "https://u:p@x/"],
)
def test_a_bad_allowlist_entry_is_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="webhook allowlist entry"):
        WebhookAllow.parse(entry)


def test_an_allowlist_not_known_here_is_a_warning_not_a_pass() -> None:
    text = with_gates("{name: g, at: preRollout, webhook: {url: 'http://10.0.0.1/admin'}}")
    policies, problems = check_text(
        text, "p.yaml", webhook_allow=WebhookAllow.parse("", configured=False)
    )
    assert len(policies) == 1
    [warning] = problems
    assert (warning.severity, warning.path, warning.line) == (
        Severity.WARNING,
        "spec.gates[0].webhook.url",
        LINE,
    )
    assert "CANARY_WEBHOOK_ALLOW is not set here" in warning.message
