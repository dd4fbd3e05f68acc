"""PromQL in policies: scoping every selector to a tenant, and templates checked early."""

from __future__ import annotations

import promql_parser
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy.queries import (
    QueryError,
    Where,
    escape_string,
    is_scoped,
    parse,
    placements,
    scope,
    selectors,
    template_problems,
)
from controller.policy.templates import PLACEHOLDERS

NS = 'namespace="team-a"'

SCOPED = [
    pytest.param("foo", f"foo{{{NS}}}", id="a-selector-with-no-braces"),
    pytest.param("foo{}", f"foo{{{NS}}}", id="empty-braces"),
    pytest.param('{__name__=~".+"}', f'{{{NS},__name__=~".+"}}', id="every-metric-by-name"),
    pytest.param(
        'foo{a=~"x|y",b!~"z.*"}',
        f'foo{{{NS},a=~"x|y",b!~"z.*"}}',
        id="regex-matchers",
    ),
    pytest.param(
        'rate(foo{a="x"}[5m] offset 1m @ 100)',
        f'rate(foo{{{NS},a="x"}}[5m] offset 1m @ 100)',
        id="range-offset-at",
    ),
    pytest.param(
        "max_over_time(rate(foo[1m])[5m:30s] offset 2m)",
        f"max_over_time(rate(foo{{{NS}}}[1m])[5m:30s] offset 2m)",
        id="subquery",
    ),
    pytest.param(
        "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
        f"histogram_quantile(0.9, sum by (le) (rate(x_bucket{{{NS}}}[5m])))",
        id="nested-functions-and-by",
    ),
    pytest.param(
        "sum(a) by (cohort) / on(cohort) group_left(x) b",
        f"sum(a{{{NS}}}) by (cohort) / on(cohort) group_left(x) b{{{NS}}}",
        id="on-group-left",
    ),
    pytest.param(
        "a / ignoring(version, le) group_right b",
        f"a{{{NS}}} / ignoring(version, le) group_right b{{{NS}}}",
        id="ignoring-group-right",
    ),
    pytest.param(
        "sum without (pod) (a) and on () b unless c or d",
        f"sum without (pod) (a{{{NS}}}) and on () b{{{NS}}} unless c{{{NS}}} or d{{{NS}}}",
        id="set-operators",
    ),
    pytest.param(
        "SUM BY (a) (foo) AND ON (a) bar",
        f"SUM BY (a) (foo{{{NS}}}) AND ON (a) bar{{{NS}}}",
        id="upper-case-keywords",
    ),
    pytest.param(
        'topk(3, foo) + count_values("v", bar) + quantile(0.9, baz)',
        f'topk(3, foo{{{NS}}}) + count_values("v", bar{{{NS}}}) + quantile(0.9, baz{{{NS}}})',
        id="aggregations-with-parameters",
    ),
    pytest.param(
        'label_replace(foo, "dst", "$1", "src", "(.*)")',
        f'label_replace(foo{{{NS}}}, "dst", "$1", "src", "(.*)")',
        id="strings-are-not-selectors",
    ),
    pytest.param(
        "foo @ start() > bool 1 - -bar",
        f"foo{{{NS}}} @ start() > bool 1 - -bar{{{NS}}}",
        id="at-start-bool-unary",
    ),
    pytest.param(
        "foo # a comment with { and bar in it\n + bar offset -5m",
        f"foo{{{NS}}} # a comment with {{ and bar in it\n + bar{{{NS}}} offset -5m",
        id="comments-and-negative-offset",
    ),
    pytest.param(":rec:rule + vector(1)", f":rec:rule{{{NS}}} + vector(1)", id="recording-rule"),
    pytest.param('foo{a="b",}', f'foo{{{NS},a="b",}}', id="trailing-comma"),
    pytest.param(
        'foo{a="}{\\"{"}',
        f'foo{{{NS},a="}}{{\\"{{"}}',
        id="braces-inside-a-label-value",
    ),
]


@pytest.mark.parametrize(("query", "expected"), SCOPED)
def test_every_selector_gets_the_tenant_label(query: str, expected: str) -> None:
    scoped = scope(query, "namespace", "team-a")
    assert scoped == expected
    tree = parse(scoped)
    assert selectors(tree), "every case has at least one selector"
    for selector in selectors(tree):
        assert ("namespace", "team-a") in [(m.name, m.value) for m in selector.matchers.matchers]


ATTACK = 'sum(llm_requests_total{model="otherteam"}) + 0*sum(llm_requests_total{version="v2"})'


def test_the_cross_tenant_query_reads_only_its_own_namespace() -> None:
    scoped = scope(ATTACK, "namespace", "team-a")
    both = selectors(parse(scoped))
    assert len(both) == 2
    for selector in both:
        labels = {(m.name, m.value, str(m.op)) for m in selector.matchers.matchers}
        assert ("namespace", "team-a", "MatchOp.Equal") in labels


def test_a_matcher_on_the_tenant_label_is_anded_never_widening() -> None:
    scoped = scope('foo{namespace=~".+"} or bar{namespace="team-b"}', "namespace", "team-a")
    for selector in selectors(parse(scoped)):
        ours = [m for m in selector.matchers.matchers if m.name == "namespace"]
        assert len(ours) == 2  # theirs and ours: a series must match both
        assert ("team-a", "MatchOp.Equal") in {(m.value, str(m.op)) for m in ours}


@pytest.mark.parametrize(
    "value",
    [
        pytest.param('a"} or vector(1) #', id="quote-and-brace"),
        pytest.param("a\\", id="trailing-backslash"),
        pytest.param("a\nb", id="newline"),
        pytest.param("ünï €ode", id="unicode"),
    ],
)
def test_the_tenant_value_is_escaped(value: str) -> None:
    scoped = scope("foo + bar", "namespace", value)
    values = [
        m.value for s in selectors(parse(scoped)) for m in s.matchers.matchers
    ]  # what Prometheus reads back
    assert values == [value, value]


def test_a_custom_tenant_label() -> None:
    assert scope("foo", "team", "a") == 'foo{team="a"}'
    with pytest.raises(ValueError, match="not a label name"):
        scope("foo", "team-name", "a")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        pytest.param("sum(foo", "unclosed left parenthesis", id="does-not-parse"),
        pytest.param('foo{a="x" or b="y"}', "`or` between label matchers", id="or-matchers"),
        pytest.param('foo{a="x}', "unterminated quoted string", id="unclosed-string"),
    ],
)
def test_a_query_that_cannot_be_scoped_is_refused(query: str, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        scope(query, "namespace", "team-a")


@pytest.mark.parametrize(
    "scoped",
    [
        pytest.param(f"foo{{{NS}}} + bar", id="one-selector-missed"),
        pytest.param(f"foo{{{NS}}} + bar{{{NS}}} or vector(1)", id="something-added"),
        pytest.param(f"foo{{{NS}}} - bar{{{NS}}}", id="an-operator-changed"),
        pytest.param(f'foo{{{NS},a="y"}} + bar{{{NS}}}', id="a-matcher-added"),
        pytest.param(f'foo{{namespace=~"team-a"}} + bar{{{NS}}}', id="a-regex-not-equality"),
        pytest.param(f"foo{{{NS}}} + bar{{{NS}}}[5m]", id="does-not-parse"),
        pytest.param(f"foo{{{NS}}} offset 1m + bar{{{NS}}}", id="an-offset-added"),
    ],
)
def test_the_proof_refuses_anything_but_the_added_matcher(scoped: str) -> None:
    original = parse("foo + bar")
    assert is_scoped(original, f"foo{{{NS}}} + bar{{{NS}}}", "namespace", "team-a")
    assert not is_scoped(original, scoped, "namespace", "team-a")


def test_the_built_in_template_queries_scope() -> None:
    """The controller's own counting query, the largest it sends, scopes and proves."""
    from controller.metrics import promql

    window = promql.CountWindow.aligned(0, 3600, 15, 600)
    selector = 'llm_requests_total{model="m",version="v2"}'
    query = promql.tagged(
        {
            "events": promql.counter_increase(selector, ("cohort",), window),
            "trials": promql.counter_increase(selector, ("cohort", "le"), window),
        }
    )
    scoped = scope(query, "namespace", "team-a")
    assert scoped.count(NS) == 6  # three selectors per part
    assert len(selectors(parse(scoped))) == 6


# --- templates checked before anything runs --------------------------------------


@pytest.mark.parametrize(
    ("template", "where"),
    [
        pytest.param('x{version="{{version}}"}', [("version", Where.MATCHER_VALUE)], id="value"),
        pytest.param("x{version={{version}}}", [("version", Where.CODE)], id="unquoted"),
        pytest.param(
            'label_replace(x, "v", "{{version}}", "", "")',
            [("version", Where.STRING)],
            id="function-argument",
        ),
        pytest.param(
            "rate(x[{{window}}]) - x offset {{window}} + max_over_time(x[{{window}}:1m])",
            [("window", Where.DURATION)] * 3,
            id="durations",
        ),
        pytest.param("x # {{model}}\n", [("model", Where.COMMENT)], id="comment"),
    ],
)
def test_placements(template: str, where: list[tuple[str, Where]]) -> None:
    assert [(p.name, p.where) for p in placements(template)] == where


@pytest.mark.parametrize(
    ("template", "offset", "reason"),
    [
        pytest.param(
            "{version={{version}}}",
            9,
            "{{version}} must be inside the quoted value of a label matcher",
            id="placeholder-outside-quotes",
        ),
        pytest.param(
            'sum(x{version="{{version}}"}) + {{model}}',
            32,
            "must be inside the quoted value",
            id="placeholder-as-an-expression",
        ),
        pytest.param(
            'label_replace(x{version="{{version}}"}, "m", "{{model}}", "", "")',
            46,
            "not in a string that is not a label value",
            id="placeholder-in-a-function-argument",
        ),
        pytest.param(
            'x{version="{{version}}",w="{{window}}"}',
            27,
            "{{window}} is a duration",
            id="window-in-a-label-value",
        ),
        pytest.param(
            'x{version="{{version}}"} # {{model}}',
            27,
            "in a comment",
            id="placeholder-in-a-comment",
        ),
        pytest.param(
            'x{version="{{version}}",cohort="{{cohort}}"}',
            32,
            'use it in a regex matcher (cohort=~"{{cohort}}")',
            id="cohort-in-an-equality",
        ),
        pytest.param(
            'sum(rate(x{version="{{version}}"}[{{window}}])',
            None,
            "does not parse as PromQL (placeholders filled in): unclosed left parenthesis",
            id="does-not-parse",
        ),
        pytest.param(
            'x{version="{{version}}"}[{{window}}]',
            None,
            "must return an instant vector (one value per series), not a range vector",
            id="a-range-vector",
        ),
        pytest.param(
            'x{version="{{version}}',
            10,
            "the string that starts at character 11 is not closed",
            id="unclosed-string",
        ),
    ],
)
def test_template_problems(template: str, offset: int | None, reason: str) -> None:
    problems = template_problems(template, PLACEHOLDERS, cohorts=2)
    assert len(problems) == 1, problems
    [(at, message)] = problems
    assert reason in message
    assert at == offset  # 0-based, in the template


@pytest.mark.parametrize(
    "template",
    [
        'sum by (cohort) (increase(x{model="{{model}}",version="{{version}}",'
        'cohort=~"{{cohort}}"}[{{window}}]))',
        'x{version="{{version}}"} - x{version="{{version}}"} offset {{window}}',
        'max_over_time(x{version=~"{{version}}",namespace="{{namespace}}"}[{{window}}:30s])',
        "sum(x{version=`{{version}}`})",
    ],
)
def test_good_templates_pass(template: str) -> None:
    assert template_problems(template, PLACEHOLDERS, cohorts=2) == []


def test_cohort_in_an_equality_is_fine_with_one_cohort() -> None:
    template = 'x{version="{{version}}",cohort="{{cohort}}"}'
    assert template_problems(template, PLACEHOLDERS, cohorts=1) == []


def test_the_parser_is_the_library_the_docs_name() -> None:
    assert isinstance(parse("foo"), promql_parser.VectorSelector)


# --- any query built from PromQL's grammar scopes, and is proven -------------------

_VALUES = st.sampled_from(["x", 'a"}b', "{{", "#c", "\\", "ü", "a,b=c", ""])
_MATCHER = st.builds(
    lambda name, op, value: f'{name}{op}"{escape_string(value)}"',
    st.sampled_from(["model", "version", "namespace", "on", "by"]),
    st.sampled_from(["=", "!=", "=~", "!~"]),
    _VALUES.filter(lambda v: v not in ("{{", "\\")),  # keep regex matchers valid
)
_SELECTOR = st.one_of(
    st.sampled_from(["foo", "bar:rate5m", "sum_total", "offset_total"]),
    st.builds(
        lambda name, ms: name + "{" + ",".join(ms) + "}",
        st.sampled_from(["foo", "llm_requests_total"]),
        st.lists(_MATCHER, max_size=3),
    ),
    st.builds(
        lambda ms: '{__name__=~"foo|bar"' + "".join("," + m for m in ms) + "}",
        st.lists(_MATCHER, max_size=2),
    ),
)
_INSTANT = st.one_of(
    _SELECTOR,
    st.builds(lambda s: f"{s} offset 1m", _SELECTOR),
    st.builds(lambda s: f"rate({s}[5m] @ end())", _SELECTOR),
)


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # Operands in parentheses: the grammar's precedence is the parser's to test, not this.
    return st.one_of(
        st.builds(lambda e: f"sum by (cohort, le) ({e})", inner),
        st.builds(lambda e: f"topk(2, {e})", inner),
        st.builds(lambda a, b: f"({a}) + ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) / on(cohort) group_left(x) ({b})", inner, inner),
        st.builds(lambda a, b: f"({a}) and ignoring(version) ({b})", inner, inner),
        st.builds(lambda e: f"max_over_time(({e})[5m:1m] offset 30s)", inner),
        st.builds(lambda e: f'label_replace({e}, "a", "$1", "b", "(.*)")', inner),
        st.builds(lambda e: f"(-({e}) > bool 1 # {{ comment\n)", inner),
    )


_QUERIES = st.recursive(_INSTANT, _extend, max_leaves=6)


@given(query=_QUERIES, value=_VALUES)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_query_of_the_grammar_is_scoped_and_proven(query: str, value: str) -> None:
    original = selectors(parse(query))
    scoped = selectors(parse(scope(query, "namespace", value)))
    assert len(scoped) == len(original)
    for selector in scoped:
        assert ("namespace", value, "MatchOp.Equal") in {
            (m.name, m.value, str(m.op)) for m in selector.matchers.matchers
        }


@pytest.mark.parametrize(
    ("query", "missed"),
    [
        pytest.param("(a + b) + c", f"(a + b{{{NS}}}) + c{{{NS}}}", id="binary-in-binary"),
        pytest.param("((a)) + b", f"((a)) + b{{{NS}}}", id="parens-in-parens"),
        pytest.param("-(-a) + b", f"-(-a) + b{{{NS}}}", id="unary-in-unary"),
        pytest.param(
            "sum(sum(a)) + b", f"sum(sum(a)) + b{{{NS}}}", id="aggregation-in-aggregation"
        ),
        pytest.param("abs(abs(a)) + b", f"abs(abs(a)) + b{{{NS}}}", id="call-in-call"),
    ],
)
def test_the_proof_looks_inside_nodes_of_the_same_kind(query: str, missed: str) -> None:
    """A node whose child is of its own kind is compared whole (the nested one too)."""
    scoped = scope(query, "namespace", "team-a")
    assert scoped.count(NS) == len(selectors(parse(query)))
    assert not is_scoped(parse(query), missed, "namespace", "team-a")
