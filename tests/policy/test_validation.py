"""Broken policies: each problem is reported with the right field path, line and reason."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controller.errors import PolicyError, Severity
from controller.policy import check_text, load_text
from controller.policy.model import ModelRollout, tolerances
from tests.policy.base import BASE, policy


def test_tolerances_and_power_are_read() -> None:
    text = policy(
        ("max: 0.01}", "max: 0.01, maxIncrease: 0.005, tolerance: {max: 0.004, maxIncrease: 0}}"),
        ("    window: 5m\n", "    window: 5m\n    power: 0.9\n"),
    )
    [loaded] = load_text(text, "p.yaml")
    analysis = loaded.rollout.spec.analysis
    assert analysis.power == 0.9
    assert tolerances(analysis.metrics[1]) == {"max": 0.004, "maxIncrease": 0.0}
    assert tolerances(analysis.metrics[0]) == {}


def test_the_base_policy_is_valid() -> None:
    [loaded] = load_text(BASE, "base.yaml")
    spec = loaded.rollout.spec
    assert loaded.rollout.key == "llm/bot-v2"
    assert [s.weight for s in spec.steps] == [5, 50, 100]
    assert spec.steps[0].hold == timedelta(minutes=10)
    assert spec.steps[0].cohort_weights == {"mobile": 10}
    assert spec.analysis.min_samples == 200  # default
    assert loaded.warnings == ()


BROKEN = [
    pytest.param(
        policy(("{weight: 50, hold: 10m}", "{weight: 5, hold: 10m}")),
        "spec.steps[1].weight",
        14,
        "must be greater than the previous step's weight (5)",
        id="weights-not-increasing",
    ),
    pytest.param(
        policy(("{weight: 100}", "{weight: 90}")),
        "spec.steps[2].weight",
        15,
        "the last step must reach 100",
        id="last-step-below-100",
    ),
    pytest.param(
        policy(("{weight: 100}", "{weight: 101}")),
        "spec.steps[2].weight",
        15,
        "less than or equal to 100 (got 101)",
        id="weight-over-100",
    ),
    pytest.param(
        policy(("{weight: 5, hold", "{weight: 0, hold")),
        "spec.steps[0].weight",
        13,
        "greater than 0",
        id="weight-zero",
    ),
    pytest.param(
        policy(("{weight: 5, hold", "{weight: 5.5, hold")),
        "spec.steps[0].weight",
        13,
        "must be a whole number, not 5.5",
        id="weight-not-integer",
    ),
    pytest.param(
        policy(("{weight: 5, hold", "{weight: true, hold")),
        "spec.steps[0].weight",
        13,
        "whole number, not a boolean",
        id="weight-boolean",
    ),
    pytest.param(
        policy(("hold: 10m, cohortWeights", "hold: 10, cohortWeights")),
        "spec.steps[0].hold",
        13,
        "10 has no unit",
        id="duration-without-unit",
    ),
    pytest.param(
        policy(("hold: 10m, cohortWeights", "hold: ten minutes, cohortWeights")),
        "spec.steps[0].hold",
        13,
        "is not a duration",
        id="duration-in-words",
    ),
    pytest.param(
        policy(("route: bot}", "route: bot, stickyHeadr: x-id}")),
        "spec.traffic.stickyHeadr",
        8,
        "unknown field 'stickyHeadr'; did you mean 'stickyHeader'?",
        id="unknown-field-suggests",
    ),
    pytest.param(
        policy(("  model: bot\n", "  model: bot\n  zzz: 1\n")),
        "spec.zzz",
        6,
        "unknown field 'zzz'; known fields here: model, baseline",
        id="unknown-field-lists-known",
    ),
    pytest.param(
        policy(("{router: gateway-api", "{router: gateway")),
        "spec.traffic.router",
        8,
        "did you mean 'gateway-api'?",
        id="unknown-router",
    ),
    pytest.param(
        policy(("cohortWeights: {mobile: 10}", "cohortWeights: {mobil: 10}")),
        "spec.steps[0].cohortWeights.mobil",
        13,
        "no cohort is called 'mobil'; did you mean 'mobile'?",
        id="unknown-cohort-reference",
    ),
    pytest.param(
        policy(("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 150}")),
        "spec.steps[0].cohortWeights.mobile",
        13,
        "less than or equal to 100",
        id="cohort-weight-over-100",
    ),
    pytest.param(
        policy(("{name: non-english", "{name: mobile")),
        "spec.cohorts[1].name",
        11,
        "'mobile' is already the name of cohorts[0]",
        id="duplicate-cohort",
    ),
    pytest.param(
        policy(("{name: mobile, match", "{name: overall, match")),
        "spec.cohorts[0].name",
        10,
        "reserved",
        id="reserved-cohort-name",
    ),
    pytest.param(
        policy(('regex: "^(de|fr)"', 'regex: "^(?!en)"')),
        "spec.cohorts[1].match.regex",
        11,
        "does not compile as RE2, the dialect gateway-api runs header regexes in",
        id="lookahead-rejected-for-envoy",
    ),
    pytest.param(
        policy(('regex: "^(de|fr)"', 'regex: "^(de|fr"')),
        "spec.cohorts[1].match.regex",
        11,
        "missing )",
        id="regex-does-not-compile",
    ),
    pytest.param(
        policy(("{header: x-client, value", "{header: x client, value")),
        "spec.cohorts[0].match.header",
        10,
        "not a valid HTTP header name",
        id="bad-header-name",
    ),
    pytest.param(
        policy(("value: mobile}}", "value: mobile, prefix: m}}")),
        "spec.cohorts[0].match",
        10,
        "exactly one of value, prefix or regex (got value, prefix)",
        id="two-matchers",
    ),
    pytest.param(
        policy(("candidate: {version: v2", "candidate: {version: v1")),
        "spec.candidate.version",
        7,
        "is the baseline's version too (v1)",
        id="same-version",
    ),
    pytest.param(
        policy(("service: bot-v2}", "service: bot-v1}")),
        "spec.candidate.service",
        7,
        "the candidate needs its own",
        id="same-service",
    ),
    pytest.param(
        policy(("service: bot-v2}", "service: Bot_V2}")),
        "spec.candidate.service",
        7,
        "must be a DNS label",
        id="service-not-dns-label",
    ),
    pytest.param(
        policy(("interval: 30s", "interval: 10m")),
        "spec.analysis.interval",
        17,
        "must not be longer than analysis.window",
        id="interval-longer-than-window",
    ),
    pytest.param(
        policy(("template: refusal-rate,", "template: refusal,")),
        "spec.analysis.metrics[0].template",
        20,
        "did you mean 'refusal-rate'?",
        id="unknown-template",
    ),
    pytest.param(
        policy(("max: 0.01}", "max: 0.01, min: 0.02}")),
        "spec.analysis.metrics[1].min",
        21,
        "min (0.02) must be below max (0.01)",
        id="min-not-below-max",
    ),
    pytest.param(
        policy(("max: 0.01}", "max: 1.5}")),
        "spec.analysis.metrics[1].max",
        21,
        "error-rate is a ratio between 0 and 1",
        id="proportion-limit-out-of-range",
    ),
    pytest.param(
        policy(("max: 0.01}", "maxRatio: 0}")),
        "spec.analysis.metrics[1].maxRatio",
        21,
        "greater than 0",
        id="ratio-not-positive",
    ),
    pytest.param(
        policy(("maxIncrease: 0.02}", "maxIncrease: 0.02, tolerance: 0.03}")),
        "spec.analysis.metrics[0].tolerance",
        20,
        "0.03 is not below maxIncrease 0.02",
        id="tolerance-beyond-its-limit",
    ),
    pytest.param(
        policy(("max: 0.01}", "min: 0.9, tolerance: 0.8}")),
        "spec.analysis.metrics[1].tolerance",
        21,
        "0.8 is not above min 0.9",
        id="tolerance-on-the-wrong-side-of-min",
    ),
    pytest.param(
        policy(("max: 0.01}", "max: 0.01, maxIncrease: 0.005, tolerance: 0.002}")),
        "spec.analysis.metrics[1].tolerance",
        21,
        "give one per limit, {max: ..., maxIncrease: ...}",
        id="one-tolerance-for-two-limits",
    ),
    pytest.param(
        policy(("max: 0.01}", "max: 0.01, tolerance: {maxRatio: 1.1}}")),
        "spec.analysis.metrics[1].tolerance.maxRatio",
        21,
        "maxRatio is not a limit of this metric (its limits: max)",
        id="tolerance-for-a-missing-limit",
    ),
    pytest.param(
        policy(("    window: 5m\n", "    window: 5m\n    power: 0.5\n")),
        "spec.analysis.power",
        19,
        "greater than 0.5",
        id="power-at-one-half",
    ),
    pytest.param(
        policy(("    window: 5m\n", "    window: 5m\n    power: 1\n")),
        "spec.analysis.power",
        19,
        "less than 1",
        id="power-at-one",
    ),
    pytest.param(
        policy(("{template: error-rate, max: 0.01}", "{template: error-rate}")),
        "spec.analysis.metrics[1]",
        21,
        "give at least one limit",
        id="metric-without-limit",
    ),
    pytest.param(
        policy(("{template: error-rate, max: 0.01}", "{template: refusal-rate, max: 0.1}")),
        "spec.analysis.metrics[1]",
        21,
        "a second metric named 'refusal-rate'",
        id="duplicate-metric",
    ),
    pytest.param(
        policy(
            (
                "{template: error-rate, max: 0.01}",
                '{name: fmt, kind: proportion, query: "sum(x)", trials: "sum(y)", max: 0.1}',
            )
        ),
        "spec.analysis.metrics[1].query",
        21,
        "must use {{version}}",
        id="custom-query-without-version",
    ),
    pytest.param(
        policy(
            (
                "{template: error-rate, max: 0.01}",
                '{name: p9, kind: histogram, query: "x{v=\\"{{version}}\\"}", maxRatio: 2}',
            )
        ),
        "spec.analysis.metrics[1].quantile",
        21,
        "a histogram needs the quantile",
        id="custom-histogram-without-quantile",
    ),
    pytest.param(
        policy(("  analysis:\n", "  shadow: {mirrorPercent: 0, duration: 5m}\n  analysis:\n")),
        "spec.shadow.mirrorPercent",
        16,
        "greater than or equal to 1",
        id="mirror-percent-zero",
    ),
    pytest.param(
        policy(("metadata: {name: bot-v2,", "metadata: {name: Bot V2,")),
        "metadata.name",
        3,
        "must be a Kubernetes name",
        id="bad-name",
    ),
    pytest.param(
        policy(("apiVersion: canary.ai/v1alpha1", "apiVersion: canary.ai/v1")),
        "apiVersion",
        1,
        "must be 'canary.ai/v1alpha1'",
        id="wrong-api-version",
    ),
    pytest.param(
        policy(("  model: bot\n", "")),
        "spec.model",
        4,
        "is required",
        id="missing-required-field",
    ),
    pytest.param(
        policy(("window: 5m", "window: 5m\n    window: 6m")),
        "spec.analysis.window",
        19,
        "duplicate key 'window'; it is already set at line 18",
        id="duplicate-key",
    ),
    pytest.param(
        policy(("window: 5m", "window: 5m\n    deadline: 15m")),
        "spec.analysis.deadline",
        19,
        "is shorter than the sum of the steps' holds (20m)",
        id="deadline-shorter-than-the-holds",
    ),
    pytest.param(
        policy(
            ("  analysis:\n", "  shadow: {duration: 30m}\n  analysis:\n"),
            ("window: 5m", "window: 5m\n    deadline: 45m"),
        ),
        "spec.analysis.deadline",
        20,
        "shorter than the shadow's duration and the steps' holds together (50m)",
        id="deadline-shorter-than-shadow-and-holds",
    ),
    pytest.param(
        policy(("window: 5m", "window: 5m\n    deadline: soon")),
        "spec.analysis.deadline",
        19,
        "is not a duration",
        id="deadline-not-a-duration",
    ),
]


@pytest.mark.parametrize(("text", "path", "line", "reason"), BROKEN)
def test_a_broken_policy_names_path_line_and_reason(
    text: str, path: str, line: int, reason: str
) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, "broken.yaml")
    found = [p for p in caught.value.errors if p.path == path]
    assert found, f"no error at {path}; got: {caught.value}"
    assert any(reason in p.message for p in found), str(caught.value)
    assert found[0].line == line, str(caught.value)
    assert found[0].file == "broken.yaml"
    assert found[0].column is not None


ROUTER_LIMITS = [
    pytest.param(
        policy(("router: gateway-api", "router: nginx-ingress")),
        "spec.steps[0].cohortWeights.mobile",
        "nginx-ingress cannot give a cohort its own weight (10); it can only send a whole "
        "cohort to the candidate by header (100). Routers that can weight cohorts: "
        "gateway-api, istio",
        id="nginx-cannot-weight-a-cohort",
    ),
    pytest.param(
        policy(
            ("router: gateway-api", "router: nginx-ingress"),
            ("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 100, non-english: 100}"),
        ),
        "spec.steps[0].cohortWeights",
        "nginx-ingress can route at most 1 cohort(s) by header at a time, this step names 2",
        id="nginx-routes-one-header",
    ),
    pytest.param(
        policy(
            ("router: gateway-api", "router: nginx-ingress"),
            ("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 100}"),
            ("  analysis:\n", "  shadow: {mirrorPercent: 50, duration: 5m}\n  analysis:\n"),
        ),
        "spec.shadow.mirrorPercent",
        "nginx-ingress mirrors every request or none, not 50%; use 100, or a router that "
        "can: gateway-api, istio",
        id="nginx-mirrors-all-or-nothing",
    ),
    pytest.param(
        policy(
            ("router: gateway-api", "router: nginx-ingress"),
            ("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 100}"),
            ('regex: "^(de|fr)"', 'regex: "^(de|fr"'),
        ),
        "spec.cohorts[1].match.regex",
        "does not compile as PCRE, the dialect nginx-ingress runs header regexes in: "
        "compilation failed at position 7; missing closing parenthesis",
        id="pcre-checked-for-nginx",
    ),
]


@pytest.mark.parametrize(("text", "path", "reason"), ROUTER_LIMITS)
def test_router_capabilities_are_checked(text: str, path: str, reason: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, "p.yaml")
    assert any(p.path == path and reason in p.message for p in caught.value.errors), str(
        caught.value
    )


def test_pcre_accepts_what_re2_refuses_for_nginx() -> None:
    text = policy(
        ("router: gateway-api", "router: nginx-ingress"),
        ("cohortWeights: {mobile: 10}", "cohortWeights: {mobile: 100}"),
        ('regex: "^(de|fr)"', 'regex: "^(?!en)"'),
    )
    [loaded] = load_text(text)
    assert loaded.rollout.spec.cohorts[1].match.regex == "^(?!en)"


def test_sticky_header_on_a_router_without_it_is_a_warning() -> None:
    text = policy(("route: bot}", "route: bot, stickyHeader: x-conversation-id}"))
    [loaded] = load_text(text)
    [warning] = loaded.warnings
    assert warning.severity is Severity.WARNING
    assert warning.path == "spec.traffic.stickyHeader"
    assert "routers that can: istio" in warning.message
    assert warning.line == 8


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = policy(
        ("{weight: 50, hold: 10m}", "{weight: 50, hold: 10m, pasue: true}"),
        ("service: bot-v2}", "service: bot-v1}"),
        ("interval: 30s", "interval: 10m"),
        ("max: 0.01}", "max: 2}"),
    )
    _, problems = check_text(text, "p.yaml")
    assert {(p.path, p.line) for p in problems} == {
        ("spec.steps[1].pasue", 14),
        ("spec.candidate.service", 7),
        ("spec.analysis.interval", 17),
        ("spec.analysis.metrics[1].max", 21),
    }


def test_problems_in_several_documents_carry_their_own_lines() -> None:
    second = policy(("{weight: 100}", "{weight: 99}"))
    text = BASE + "---\n" + second
    with pytest.raises(PolicyError) as caught:
        load_text(text, "two.yaml")
    [problem] = caught.value.errors
    assert problem.path == "spec.steps[2].weight"
    assert problem.line == BASE.count("\n") + 1 + 15


def test_several_valid_documents_load_in_order() -> None:
    second = policy(("name: bot-v2,", "name: bot-v3,"))
    loaded = load_text(BASE + "---\n" + second + "---\n")
    assert [p.rollout.metadata.name for p in loaded] == ["bot-v2", "bot-v3"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "is empty", id="empty"),
        pytest.param("# only a comment\n", "is empty", id="only-comment"),
        pytest.param("- a\n- b\n", "must be a mapping", id="a-list"),
        pytest.param("just text", "must be a mapping", id="a-string"),
        pytest.param("a: [1, 2\n", "not valid YAML", id="unclosed-bracket"),
        pytest.param("a:\n\tb: 1\n", "not valid YAML", id="tab-indent"),
        pytest.param(
            "kind: Deployment\napiVersion: apps/v1\n", "not a ModelRollout", id="other-kind"
        ),
        pytest.param("a: !!python/object:os.system x\n", "not valid YAML", id="python-tag"),
        pytest.param("a: !!timestamp 2001-13-45\n", "not valid YAML", id="bad-timestamp"),
        pytest.param("[" * 5000, "not valid YAML", id="deep-nesting"),
        pytest.param(
            'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
            + "".join(
                f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n"
                for i in range(8)
            ),
            "has more than 20000 values",
            id="billion-laughs",
        ),
        pytest.param("a: &a [*a]\n", "not valid YAML", id="recursive-alias"),
        pytest.param(b"\xff\xfe\x00garbage", "not UTF-8", id="binary"),
        pytest.param("a: b\x00c", "NUL", id="nul-byte"),
    ],
)
def test_any_input_gives_a_policy_error(text: str | bytes, reason: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_text(text, "x.yaml")
    assert any(reason in p.message for p in caught.value.errors), str(caught.value)


def test_models_built_in_python_run_the_same_checks() -> None:
    [loaded] = load_text(BASE)
    data = loaded.rollout.model_dump(mode="json")
    data["spec"]["candidate"]["version"] = "v1"
    with pytest.raises(ValueError, match="is the baseline's version too"):
        ModelRollout.model_validate(data)


def test_a_policy_round_trips_through_its_json_form() -> None:
    [loaded] = load_text(BASE)
    data = loaded.rollout.model_dump(mode="json", exclude_none=True)
    assert data["spec"]["steps"][0] == {
        "weight": 5,
        "hold": "10m",
        "cohortWeights": {"mobile": 10},
        "pause": False,
    }
    assert ModelRollout.model_validate(data) == loaded.rollout


def test_the_deadline_defaults_to_twice_the_holds() -> None:
    spec = load_text(policy())[0].rollout.spec
    assert (spec.analysis.deadline, spec.deadline) == (None, timedelta(minutes=40))
    shadowed = load_text(policy(("  analysis:\n", "  shadow: {duration: 30m}\n  analysis:\n")))[
        0
    ].rollout.spec
    assert shadowed.deadline == timedelta(minutes=100)
    no_holds = load_text(
        policy(("hold: 10m, cohortWeights", "hold: 0s, cohortWeights"), ("hold: 10m}", "hold: 1m}"))
    )[0].rollout.spec
    assert no_holds.deadline == timedelta(minutes=30)  # never shorter than that
    given = load_text(policy(("window: 5m", "window: 5m\n    deadline: 2h")))[0].rollout.spec
    assert given.deadline == timedelta(hours=2)


def test_models_are_frozen() -> None:
    [loaded] = load_text(BASE)
    with pytest.raises(ValueError, match="frozen"):
        loaded.rollout.spec.steps[0].weight = 7  # type: ignore[misc]


def test_sticky_header_on_istio_warns_it_is_per_pod_not_per_version() -> None:
    text = policy(
        ("router: gateway-api", "router: istio"),
        ("route: bot}", "route: bot, stickyHeader: x-conversation-id}"),
    )
    [loaded] = load_text(text)
    [warning] = loaded.warnings
    assert "keeps a conversation on one pod within a version" in warning.message
