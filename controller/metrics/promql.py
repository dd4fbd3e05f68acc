"""PromQL text: placeholders filled in safely, and exact counter increases.

Placeholders. A custom query is PromQL written by a person, with `{{model}}`,
`{{version}}`, `{{cohort}}`, `{{window}}` and `{{namespace}}` in it. Their values
come from the policy (a model name may be any text), so substituting them as
plain text would let a value close a string and add its own selectors or
operators (`v7"} or vector(1) #`). `render` therefore reads the query the way
Prometheus' lexer does and escapes each value for the place it lands in, in one
pass (a value is never scanned for placeholders again):

- inside a double- or single-quoted string: the value is escaped as a string
  literal (backslash, the quote, newlines and other control characters);
- inside the string of a regex matcher (`=~`, `!~`): the value is first
  escaped as a regex (Go's `regexp.QuoteMeta`), then as a string; `{{cohort}}`
  there stands for every cohort of the policy, as an alternation;
- inside a raw (backtick) string: inserted as is, refused if it has a backtick;
- outside strings: only `{{window}}` may appear (it renders as a duration such
  as `3600s`); any other placeholder there is refused, as is any placeholder
  inside a `#` comment (a newline in the value would end the comment).

Exact increases. Prometheus' `increase()` extrapolates to the ends of its range,
so it returns fractional, slightly inflated counts. The judge wants the number
of requests since the analysis started, exactly. `counter_increase` sums, per
series, the step-to-step increases of the counter over the analysis, counting
a drop as a restart (the new value is the increase since the restart), and
bridging scrape gaps shorter than the lookback. Steps are aligned to the
analysis start, so the sum telescopes to exactly `value(end) - value(start)`
for every series that did not restart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.errors import PermanentError
from controller.policy.queries import escape_string

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
#: Go's regexp.QuoteMeta escapes exactly these characters
_REGEX_SPECIAL = frozenset("\\.+*?()|[]{}^$")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class QueryTemplateError(PermanentError):
    """A query cannot be rendered safely (a placeholder where a value could escape)."""


@dataclass(frozen=True)
class Duration:
    """A placeholder value that is a PromQL duration, e.g. the analysis window."""

    seconds: float

    def render(self) -> str:
        millis = max(round(self.seconds * 1000), 1)
        return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class OneOf:
    """A placeholder value that stands for any of several label values (cohorts)."""

    values: tuple[str, ...]


Value = str | Duration | OneOf


def regex_escape(value: str) -> str:
    """`value` as an RE2 regex matching exactly itself (Go's `regexp.QuoteMeta`)."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in value)


def quote(value: str) -> str:
    """`value` as a double-quoted PromQL string literal."""
    return '"' + escape_string(value) + '"'


def _regex_text(value: Value, name: str) -> str:
    if isinstance(value, OneOf):
        if not value.values:
            return ".*"
        return "|".join(regex_escape(v) for v in value.values)
    if isinstance(value, Duration):
        return regex_escape(value.render())
    return regex_escape(value)


def _plain_text(value: Value, name: str) -> str:
    if isinstance(value, OneOf):
        if len(value.values) != 1:
            raise QueryTemplateError(
                f"{{{{{name}}}}} stands for {len(value.values)} values here; use it in a "
                f'regex matcher ({name}=~"{{{{{name}}}}}") and group the query by {name}'
            )
        return value.values[0]
    if isinstance(value, Duration):
        return value.render()
    return value


def _substitute(
    name: str, values: Mapping[str, Value], *, where: str, quote_char: str, regex: bool
) -> str:
    if name not in values:
        raise QueryTemplateError(f"unknown placeholder {{{{{name}}}}}")
    value = values[name]
    if where == "comment":
        raise QueryTemplateError(f"{{{{{name}}}}} in a comment: remove it, comments are not safe")
    if where == "code":
        if isinstance(value, Duration):
            return value.render()
        raise QueryTemplateError(
            f'{{{{{name}}}}} must be inside a quoted string (e.g. label="{{{{{name}}}}}"); '
            "outside one, a value could change the query"
        )
    text = _regex_text(value, name) if regex else _plain_text(value, name)
    if quote_char == "`":
        if "`" in text:
            raise QueryTemplateError(
                f"the value of {{{{{name}}}}} has a backtick: use a quoted string"
            )
        return text
    return escape_string(text, quote_char)


def render(template: str, values: Mapping[str, Value]) -> str:
    """`template` with every placeholder replaced by its escaped value (see module doc)."""
    out: list[str] = []
    i, n = 0, len(template)
    state = "code"
    quote_char = ""
    regex = False
    code_tail = ""  # the last non-blank code characters, to spot =~ and !~
    while i < n:
        match = _PLACEHOLDER.match(template, i) if template.startswith("{{", i) else None
        if match is not None:
            where = "string" if state == "string" else state
            out.append(
                _substitute(match.group(1), values, where=where, quote_char=quote_char, regex=regex)
            )
            if state == "code":
                code_tail = (code_tail + "x")[-2:]
            i = match.end()
            continue
        ch = template[i]
        out.append(ch)
        i += 1
        if state == "code":
            if ch in "\"'`":
                state, quote_char = "string", ch
                regex = code_tail in ("=~", "!~")
            elif ch == "#":
                state = "comment"
            elif not ch.isspace():
                code_tail = (code_tail + ch)[-2:]
        elif state == "string":
            if ch == "\\" and quote_char != "`" and i < n:
                out.append(template[i])
                i += 1
            elif ch == quote_char:
                state = "code"
                code_tail = (code_tail + "x")[-2:]
        elif state == "comment" and ch == "\n":
            state = "code"
    return "".join(out)


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses."""
    return set(_PLACEHOLDER.findall(template))


def check_template(template: str, names: Sequence[str]) -> list[str]:
    """Why `template` could not be rendered safely (empty when it can).

    Renders it with harmless stand-in values, so a policy can be checked before
    anything is queried: a placeholder outside a string or in a comment shows
    up here.
    """
    probe: dict[str, Value] = dict.fromkeys(names, "x")
    probe["window"] = Duration(300)
    probe["cohort"] = OneOf(("a", "b"))
    try:
        render(template, probe)
    except QueryTemplateError as exc:
        return [str(exc)]
    return []


# --- exact increases ------------------------------------------------------------


def label_selector(metric: str, labels: Mapping[str, str]) -> str:
    """`metric{label="value",...}` with every value escaped."""
    if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", metric):
        raise QueryTemplateError(f"{metric!r} is not a metric name")
    matchers = []
    for name, value in labels.items():
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise QueryTemplateError(f"{name!r} is not a label name")
        matchers.append(f"{name}={quote(value)}")
    return f"{metric}{{{','.join(matchers)}}}"


@dataclass(frozen=True)
class CountWindow:
    """When counting starts and ends, aligned to the evaluation step.

    Times are Unix seconds. `start` and `end` are multiples of `step`, so the
    subquery's steps fall exactly on start + step, ..., end.
    """

    start: float
    end: float
    step: float
    lookback: float

    @classmethod
    def aligned(cls, start: float, end: float, step: float, lookback: float) -> CountWindow:
        if step <= 0:
            raise ValueError("the step must be positive")
        first = math.floor(start / step) * step
        last = math.floor(end / step) * step
        return cls(first, max(last, first), step, lookback)

    @property
    def steps(self) -> int:
        return round((self.end - self.start) / self.step)


def counter_increase(selector: str, by: Sequence[str], window: CountWindow) -> str:
    """PromQL for the exact increase of counters from `window.start` to `window.end`.

    Evaluated at `window.end`, it returns one sample per `by` group. Per series
    and per step: the increase since the previous step when the counter did not
    drop, else its value (it restarted from zero). The previous value is the last
    sample within `lookback`, so a missed scrape or a stale marker does not look
    like a new series. Steps are summed over (start, end]: the subquery range is
    shortened by half a step so the step at `start` itself is never included,
    whichever way a Prometheus version treats the range's left edge.
    """
    if window.steps <= 0:
        # Nothing has elapsed: an empty result (0 for every group) by construction.
        return f"sum by ({', '.join(by)}) ({selector} - {selector})"
    step = Duration(window.step).render()
    lookback = Duration(window.lookback).render()
    span = Duration(window.end - window.start - window.step / 2).render()
    current = f"({selector} + 0)"
    previous = f"last_over_time({selector}[{lookback}] offset {step})"
    grouping = ", ".join(by)
    per_step = f"sum by ({grouping}) ((({current} - {previous}) >= 0) or {current})"
    return f"sum by ({grouping}) (sum_over_time(({per_step})[{span}:{step}]))"


PART_LABEL = "__canary_part"


def tagged(parts: Mapping[str, str]) -> str:
    """Several queries in one, each result tagged with its part name.

    One HTTP request per metric (and version, or both grouped by version) returns
    events and trials (or a histogram's buckets, count and sum) evaluated at the
    same instant.
    """
    pieces = [
        f'label_replace({expr}, "{PART_LABEL}", {quote(name)}, "", "")'
        for name, expr in parts.items()
    ]
    return " or ".join(pieces)
