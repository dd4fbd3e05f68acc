"""Placeholders: no value, however hostile, can change the shape of a query."""

from __future__ import annotations

import re

import pytest

from controller.metrics import promql
from controller.metrics.promql import CountWindow, Duration, OneOf, QueryTemplateError, render

HOSTILE = [
    pytest.param('v7"} or vector(1) #', id="closing-quote-and-brace"),
    pytest.param("v7\\", id="trailing-backslash"),
    pytest.param('v7\\"} or vector(1)', id="backslash-before-quote"),
    pytest.param("v7\nor vector(1)", id="newline"),
    pytest.param("v7\r\t\x00\x1b\x7f", id="control-characters"),
    pytest.param("v7'`", id="other-quotes"),
    pytest.param("{{model}}", id="a-placeholder-as-value"),
    pytest.param("ünï €ode 🙂", id="unicode"),
    pytest.param("", id="empty"),
]


def go_unquote(literal: str) -> str:
    """The value PromQL reads from a double-quoted literal (Go escapes we emit)."""
    assert literal.startswith('"') and literal.endswith('"')
    body = literal[1:-1]
    out, i = [], 0
    while i < len(body):
        ch = body[i]
        assert ch != '"', "an unescaped quote would end the string"
        assert ch != "\n", "a raw newline ends a PromQL string"
        if ch == "\\":
            nxt = body[i + 1]
            if nxt == "x":
                out.append(chr(int(body[i + 2 : i + 4], 16)))
                i += 4
                continue
            out.append({"n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "'": "'"}[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def go_regex_literal(pattern: str) -> str:
    """The literal text an escaped regex matches, refusing any unescaped operator."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i + 1])
            i += 2
            continue
        assert ch not in "\\.+*?()|[]{}^$", f"unescaped regex operator {ch!r}"
        out.append(ch)
        i += 1
    return "".join(out)


@pytest.mark.parametrize("value", HOSTILE)
def test_a_label_value_stays_inside_its_string(value: str) -> None:
    query = render('sum(x{version="{{version}}",job="a"})', {"version": value})
    match = re.fullmatch(r'sum\(x\{version=("(?:[^"\\\n]|\\.)*"),job="a"\}\)', query)
    assert match is not None, query
    assert go_unquote(match.group(1)) == value


@pytest.mark.parametrize("value", HOSTILE)
def test_a_regex_matcher_matches_the_value_literally(value: str) -> None:
    query = render('x{cohort=~"{{cohort}}"}', {"cohort": OneOf((value,))})
    match = re.fullmatch(r'x\{cohort=~("(?:[^"\\\n]|\\.)*")\}', query)
    assert match is not None, query
    assert go_regex_literal(go_unquote(match.group(1))) == value


def test_regex_metacharacters_in_cohort_names_are_escaped() -> None:
    query = render('x{cohort=~"{{cohort}}"}', {"cohort": OneOf(("mob|ile.*", "a+b"))})
    assert query == 'x{cohort=~"mob\\\\|ile\\\\.\\\\*|a\\\\+b"}'


def test_cohort_alternation_needs_a_regex_matcher() -> None:
    with pytest.raises(QueryTemplateError, match="regex matcher"):
        render('x{cohort="{{cohort}}"}', {"cohort": OneOf(("a", "b"))})
    assert render('x{cohort="{{cohort}}"}', {"cohort": OneOf(("a",))}) == 'x{cohort="a"}'
    assert render('x{cohort=~"{{cohort}}"}', {"cohort": OneOf(())}) == 'x{cohort=~".*"}'


def test_spaces_around_the_regex_operator_are_understood() -> None:
    query = render('x{cohort !~ "{{cohort}}"}', {"cohort": OneOf(("a.b",))})
    assert query == 'x{cohort !~ "a\\\\.b"}'


def test_single_quoted_strings_escape_their_own_quote() -> None:
    query = render("x{version='{{version}}'}", {"version": 'it\'s "v7"'})
    assert query == "x{version='it\\'s \"v7\"'}"


def test_raw_strings_refuse_a_backtick() -> None:
    assert render("x{version=`{{version}}`}", {"version": 'a"\\b'}) == 'x{version=`a"\\b`}'
    with pytest.raises(QueryTemplateError, match="backtick"):
        render("x{version=`{{version}}`}", {"version": "a`b"})


@pytest.mark.parametrize(
    "template",
    [
        pytest.param('x{version="v"} {{model}}', id="bare-value"),
        pytest.param('{{model}}_requests_total{version="v"}', id="metric-name"),
        pytest.param('x{version="v"} # {{model}}\n', id="in-a-comment"),
    ],
)
def test_placeholders_outside_strings_are_refused(template: str) -> None:
    with pytest.raises(QueryTemplateError):
        render(template, {"model": "or", "version": "v"})
    assert promql.check_template(template, ["model", "version"])


def test_the_window_renders_as_a_duration_where_a_duration_goes() -> None:
    query = render(
        'increase(x{v="{{version}}"}[{{window}}])', {"version": "v", "window": Duration(330)}
    )
    assert query == 'increase(x{v="v"}[330s])'
    assert Duration(1.5).render() == "1500ms"


def test_escaped_quotes_in_the_template_itself_are_kept() -> None:
    query = render('x{a="say \\"{{version}}\\"", b="{{version}}"}', {"version": 'q"'})
    assert query == 'x{a="say \\"q\\"\\"", b="q\\""}'


def test_values_are_not_scanned_for_placeholders_again() -> None:
    query = render('x{a="{{model}}",b="{{version}}"}', {"model": "{{version}}", "version": "v2"})
    assert query == 'x{a="{{version}}",b="v2"}'


def test_unknown_placeholders_are_refused() -> None:
    with pytest.raises(QueryTemplateError, match="unknown placeholder"):
        render('x{a="{{modle}}"}', {"model": "m"})


def test_label_selector_escapes_values_and_checks_names() -> None:
    assert promql.label_selector("up", {"job": 'a"b'}) == 'up{job="a\\"b"}'
    with pytest.raises(QueryTemplateError):
        promql.label_selector("up or vector(1)", {})
    with pytest.raises(QueryTemplateError):
        promql.label_selector("up", {'job"': "a"})


def test_count_windows_align_to_the_step() -> None:
    w = CountWindow.aligned(1003.7, 1321.2, 15, 600)
    assert (w.start, w.end, w.steps) == (1005.0 - 15, 1320.0, 22)
    query = promql.counter_increase("x", ("cohort",), w)
    # (end - start - step/2) keeps the step at `start` itself out of the sum
    assert "[322500ms:15s]" in query
    assert "last_over_time(x[600s] offset 15s)" in query


def test_an_empty_window_counts_nothing() -> None:
    w = CountWindow.aligned(1000.0, 1000.5, 1, 60)
    assert w.steps == 0
    assert promql.counter_increase("x", ("cohort",), w) == "sum by (cohort) (x - x)"


def test_parts_are_tagged_in_one_query() -> None:
    query = promql.tagged({"events": "a", "trials": "b"})
    assert query == (
        'label_replace(a, "__canary_part", "events", "", "") or '
        'label_replace(b, "__canary_part", "trials", "", "")'
    )
