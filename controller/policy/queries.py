"""PromQL in a policy: where its placeholders may stand, and a query kept to one tenant.

A policy's custom queries are PromQL written by a tenant, run with the
controller's Prometheus credentials, and their values go to the tenant's Slack
channel and the audit. Two things follow, and both need to know the query's
structure, not its text:

- A template is checked before anything runs (`template_problems`):
  `{{model}}`, `{{version}}`, `{{cohort}}` and `{{namespace}}` only inside the
  quoted value of a label matcher (`version="{{version}}"`), `{{window}}` only
  where a duration goes (`[{{window}}]`, a subquery's range, `offset
  {{window}}`), and the query, filled in with stand-in values, must parse. A
  placeholder anywhere else either breaks the query at run time (every look
  NO_DATA, traffic held on the candidate) or lets a value change the query.
- A rendered query is scoped to a tenant (`scope`): every vector and range
  selector gets `label="value"` (the rollout's namespace) added, the way
  prom-label-proxy enforces a label, so a query cannot read another
  namespace's series whatever it names. A matcher the tenant wrote on that
  label is kept and ANDed with the added one, so it can only narrow the
  selection, never widen it.

The parser is `promql_parser` (bindings of the Rust `promql-parser` crate). It
parses to an AST but cannot print one back faithfully (its printer does not
escape strings), so `scope` inserts the matcher into the query's own text, at
places found by a small lexer, and then proves the result: the scoped query is
parsed again and must be the original AST with exactly the added matcher on
every selector, and nothing else changed. A query that cannot be proven is
refused, never sent unscoped.

    CustomQueries   how the operator treats custom queries: deny | scoped | allow
    tokenize        the lexer (placeholders, strings, comments, identifiers)
    placements      where each placeholder of a template stands
    template_problems   why a template cannot run, with the offset of each reason
    scope           a rendered query with the tenant label on every selector
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import promql_parser

from controller.errors import PermanentError


class CustomQueries(StrEnum):
    """How the controller treats a policy's custom (non-template) queries."""

    #: refused: a policy with a custom query is invalid and never starts
    DENY = "deny"
    #: run, with the tenant label injected into every selector
    SCOPED = "scoped"
    #: run as written: every tenant is trusted with every series Prometheus holds
    ALLOW = "allow"


class QueryError(PermanentError):
    """A query that does not parse, or that cannot be proven scoped to its tenant."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message)
        self.offset = offset


LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")

# --- strings ------------------------------------------------------------------------

_STRING_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_string(value: str, quote: str = '"') -> str:
    """`value` escaped to sit between `quote`s in a PromQL string literal.

    PromQL unquotes strings with Go's rules: backslash escapes, `\\n`, `\\xHH`.
    Control characters are written as escapes so a value cannot end a line (and
    with it the string) early; everything else is kept as UTF-8.
    """
    out = []
    for ch in value:
        if ch in _STRING_ESCAPES:
            out.append(_STRING_ESCAPES[ch])
        elif ch == quote:
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


# --- the lexer ----------------------------------------------------------------------


class Kind(StrEnum):
    IDENT = "identifier"
    NUMBER = "number"  # numbers and durations
    STRING = "string"
    OPERATOR = "operator"  # punctuation and operators, braces and brackets included
    PLACEHOLDER = "placeholder"  # a {{name}} outside strings and comments
    COMMENT = "comment"


@dataclass(frozen=True)
class Token:
    kind: Kind
    text: str
    start: int
    #: the placeholders inside a string or a comment: (name, offset in the query)
    inner: tuple[tuple[str, int], ...] = ()

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def _token_pattern(colon_starts_identifier: bool) -> re.Pattern[str]:
    ident_start = "A-Za-z_:" if colon_starts_identifier else "A-Za-z_"
    return re.compile(
        r"(?P<space>\s+)"
        r"|(?P<placeholder>\{\{\s*[^{}]*?\s*\}\})"
        r'|(?P<string>"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)'
        r"|(?P<comment>\#[^\n]*)"
        r"|(?P<number>(?:\d+(?:ms|[smhdwy]))+(?![A-Za-z0-9_])"
        r"|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
        rf"|(?P<ident>[{ident_start}][A-Za-z0-9_:]*)"
        r"|(?P<operator>==|!=|=~|!~|>=|<=|.)",
        re.DOTALL,
    )


# Inside brackets (`[5m:1m]`) a colon separates a subquery's range and step;
# elsewhere it may start a recording rule's name (`:requests:rate5m`).
_TOKEN = _token_pattern(colon_starts_identifier=True)
_TOKEN_IN_BRACKETS = _token_pattern(colon_starts_identifier=False)
_KINDS = {
    "placeholder": Kind.PLACEHOLDER,
    "string": Kind.STRING,
    "comment": Kind.COMMENT,
    "number": Kind.NUMBER,
    "ident": Kind.IDENT,
    "operator": Kind.OPERATOR,
}


def tokenize(text: str) -> list[Token]:
    """PromQL tokens of `text`, whitespace left out; QueryError on an unclosed string.

    Anything the lexer does not know becomes a one-character operator token: the
    parser, not the lexer, decides whether the query is PromQL.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    brackets = 0
    while i < n:
        match = (_TOKEN_IN_BRACKETS if brackets else _TOKEN).match(text, i)
        assert match is not None  # the operator branch matches any character
        group = match.lastgroup or "operator"
        body = match.group(0)
        i = match.end()
        if group == "space":
            continue
        kind = _KINDS[group]
        if kind is Kind.OPERATOR:
            if body in "\"'`":
                raise QueryError(
                    f"the string that starts at character {match.start() + 1} is not closed",
                    offset=match.start(),
                )
            if body == "[":
                brackets += 1
            elif body == "]":
                brackets = max(brackets - 1, 0)
        inner: tuple[tuple[str, int], ...] = ()
        if "{{" in body:
            inner = tuple(
                (m.group(1), match.start() + m.start()) for m in _PLACEHOLDER.finditer(body)
            )
        tokens.append(Token(kind, body, match.start(), inner))
    return tokens


def _code(tokens: Sequence[Token]) -> list[Token]:
    return [t for t in tokens if t.kind is not Kind.COMMENT]


# --- where placeholders stand --------------------------------------------------------


class Where(StrEnum):
    MATCHER_VALUE = "the quoted value of a label matcher"
    STRING = "a string that is not a label value"
    DURATION = "a duration"
    CODE = "the query itself, outside any string"
    COMMENT = "a comment"


@dataclass(frozen=True)
class Placement:
    """One placeholder of a template and where it stands."""

    name: str
    offset: int
    where: Where
    #: for a matcher value: the matcher's operator (=, !=, =~, !~)
    operator: str = ""


_MATCH_OPERATORS = frozenset({"=", "!=", "=~", "!~"})


def placements(template: str) -> list[Placement]:
    """Every placeholder of `template` with where it stands (QueryError: unclosed string)."""
    out: list[Placement] = []
    braces = brackets = 0
    previous: Token | None = None
    for token in tokenize(template):
        if token.kind is Kind.COMMENT:
            out.extend(Placement(name, at, Where.COMMENT) for name, at in token.inner)
            continue
        if token.kind is Kind.STRING and token.inner:
            operator = previous.text if previous is not None else ""
            value = braces > 0 and operator in _MATCH_OPERATORS
            out.extend(
                Placement(
                    name,
                    at,
                    Where.MATCHER_VALUE if value else Where.STRING,
                    operator if value else "",
                )
                for name, at in token.inner
            )
        elif token.kind is Kind.PLACEHOLDER:
            before = previous.text.lower() if previous is not None else ""
            duration = before == "[" or (before == ":" and brackets > 0) or before == "offset"
            out.extend(
                Placement(name, at, Where.DURATION if duration else Where.CODE)
                for name, at in token.inner
            )
        elif token.kind is Kind.OPERATOR:
            braces += {"{": 1, "}": -1}.get(token.text, 0)
            brackets += {"[": 1, "]": -1}.get(token.text, 0)
        previous = token
    return out


#: stand-in values a template is filled with to check that it parses
_PROBE_TEXT = "x"
_PROBE_DURATION = "5m"


def template_problems(
    template: str, names: Sequence[str], *, cohorts: int = 2
) -> list[tuple[int | None, str]]:
    """Why `template` cannot run, as (offset in the template or None, reason) pairs.

    `names` are the placeholders a policy may use (unknown ones are reported
    elsewhere); `cohorts` is how many cohorts the policy has (`{{cohort}}` stands
    for all of them, so outside a regex matcher it needs exactly one).
    """
    try:
        found = placements(template)
    except QueryError as exc:
        return [(exc.offset, str(exc))]
    problems: list[tuple[int | None, str]] = []
    for p in found:
        if p.name not in names:
            continue
        reason = _misplaced(p, cohorts)
        if reason is not None:
            problems.append((p.offset, reason))
    if problems:
        return problems
    filled = _fill(template, found)
    try:
        expr = parse(filled)
    except QueryError as exc:
        return [(None, f"does not parse as PromQL (placeholders filled in): {exc}")]
    kind = _result_kind(expr)
    if kind is not None:
        return [(None, f"must return an instant vector (one value per series), not {kind}")]
    return []


def _misplaced(p: Placement, cohorts: int) -> str | None:
    placeholder = "{{" + p.name + "}}"
    if p.where is Where.COMMENT:
        return f"{placeholder} in a comment: remove it (a value could end the comment)"
    if p.name == "window":
        if p.where is Where.DURATION:
            return None
        return (
            f"{placeholder} is a duration: use it as a range ([{placeholder}]), a subquery's "
            f"range or after offset, not in {p.where}"
        )
    if p.where is not Where.MATCHER_VALUE:
        return (
            f"{placeholder} must be inside the quoted value of a label matcher "
            f'({p.name}="{placeholder}"), not in {p.where}'
        )
    if p.name == "cohort" and p.operator in ("=", "!=") and cohorts != 1:
        return (
            f"{placeholder} stands for every cohort of the policy ({cohorts}); use it in a "
            f'regex matcher (cohort=~"{placeholder}") and group the query by cohort'
        )
    return None


def _fill(template: str, found: Sequence[Placement]) -> str:
    out: list[str] = []
    last = 0
    for p in sorted(found, key=lambda p: p.offset):
        match = _PLACEHOLDER.match(template, p.offset)
        assert match is not None
        out.append(template[last : p.offset])
        out.append(_PROBE_DURATION if p.where is Where.DURATION else _PROBE_TEXT)
        last = match.end()
    out.append(template[last:])
    return "".join(out)


def parse(query: str) -> Any:
    """The AST of `query` (a `promql_parser.Expr`); QueryError when it is not PromQL."""
    try:
        return promql_parser.parse(query)
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise QueryError(str(exc)) from exc


def _result_kind(expr: Any) -> str | None:
    """What a query returns, when that is plainly not an instant vector."""
    while isinstance(expr, promql_parser.ParenExpr):
        expr = expr.expr
    if isinstance(expr, promql_parser.MatrixSelector | promql_parser.SubqueryExpr):
        return "a range vector (wrap it in a function such as rate() or increase())"
    if isinstance(expr, promql_parser.NumberLiteral):
        return "a number"
    if isinstance(expr, promql_parser.StringLiteral):
        return "a string"
    return None


# --- scoping --------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "atan2", "inf", "nan", "start", "end"}
)
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "count",
        "min",
        "max",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "count_values",
        "quantile",
    }
)


@functools.lru_cache(maxsize=4096)
def scope(query: str, label: str, value: str) -> str:
    """`query` with `label="value"` added to every selector, proven by parsing it again.

    QueryError when `query` does not parse, uses `or` inside a selector's braces
    (which Prometheus does not run), or cannot be proven scoped. Cached: the
    selectors of built-in templates are the same at every look, and a parse of a
    large query costs about a millisecond.
    """
    if not LABEL_NAME.fullmatch(label):
        raise ValueError(f"{label!r} is not a label name")
    original = _shape(parse(query))  # refuses `or` between matchers
    matcher = f'{label}="{escape_string(value)}"'
    scoped = _insert(query, _insertions(tokenize(query), matcher))
    if not _proven(original, scoped, label, value):
        raise QueryError(
            f"the query could not be proven scoped to {label}={value!r}, so it is not run; "
            "write its selectors with braces (metric{}) and report the query as a bug"
        )
    return scoped


def is_scoped(original: Any, scoped: str, label: str, value: str) -> bool:
    """Whether `scoped` parses to the AST `original` with `label="value"` added to every
    selector and nothing else changed (the proof `scope` gives for what it returns)."""
    try:
        return _proven(_shape(original), scoped, label, value)
    except QueryError:
        return False


def _proven(original: Any, scoped: str, label: str, value: str) -> bool:
    try:
        result = parse(scoped)
    except QueryError:
        return False
    enforced = (str(promql_parser.MatchOp.Equal), label, value)
    return bool(_shape(result, remove=enforced) == original)


def selectors(expr: Any) -> list[Any]:
    """Every vector selector of `expr` (those inside range selectors included)."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(expr, pre_visit=visit)
    return found


def _insertions(tokens: Sequence[Token], matcher: str) -> Iterator[tuple[int, str]]:
    """Where the matcher goes: after every `{`, and braces after every bare metric name."""
    code = _code(tokens)
    braces = 0
    in_labels = labels_next = False
    for i, token in enumerate(code):
        after = code[i + 1] if i + 1 < len(code) else None
        following = after.text.lower() if after is not None else ""
        if token.kind is Kind.PLACEHOLDER:
            raise QueryError(f"{token.text} was not filled in", offset=token.start)
        if token.kind is Kind.OPERATOR:
            if token.text == "{":
                braces += 1
                yield token.end, matcher if following == "}" else matcher + ","
            elif token.text == "}":
                braces -= 1
            elif braces == 0 and token.text == "(":
                in_labels, labels_next = labels_next, False
            elif braces == 0 and token.text == ")":
                in_labels = False
            else:
                labels_next = False
            continue
        if braces or in_labels:
            continue
        labels_next = False
        if token.kind is not Kind.IDENT:
            continue
        word = token.text.lower()
        if word in _LABEL_LISTS:
            labels_next = True
            continue
        if word in _KEYWORDS or following in ("(", "{"):
            continue  # a keyword, a function or an aggregation, or braces that get it
        if word in _AGGREGATIONS and following in ("by", "without"):
            continue
        yield token.end, "{" + matcher + "}"


def _insert(text: str, insertions: Iterator[tuple[int, str]]) -> str:
    out: list[str] = []
    last = 0
    for at, piece in sorted(insertions, key=lambda x: x[0]):
        out.append(text[last:at])
        out.append(piece)
        last = at
    out.append(text[last:])
    return "".join(out)


def _shape(node: Any, remove: tuple[str, str, str] | None = None) -> Any:
    """A plain, comparable picture of an AST (`remove`: one matcher taken off each selector)."""
    if node is None or isinstance(node, bool | int | str | timedelta | datetime):
        return node
    if isinstance(node, float):
        return repr(node) if math.isnan(node) else node
    if isinstance(node, list | tuple):
        return tuple(_shape(item, remove) for item in node)
    if isinstance(node, promql_parser.Matcher):
        return (str(node.op), node.name, node.value)
    if isinstance(node, promql_parser.VectorSelector):
        if node.matchers.or_matchers:
            raise QueryError("`or` between label matchers is not PromQL that Prometheus runs")
        matchers = [_shape(m) for m in node.matchers.matchers]
        if remove is not None:
            if remove not in matchers:
                return ("unscoped selector", node.name)
            matchers.remove(remove)
        return (
            "VectorSelector",
            node.name,
            tuple(sorted(matchers)),
            _shape(node.offset),
            _shape(node.at),
        )
    if isinstance(node, promql_parser.Function):
        return ("Function", node.name)
    attributes = _attributes(node)
    if not attributes:
        return (type(node).__name__, str(node))
    return (type(node).__name__, tuple((k, _shape(v, remove)) for k, v in attributes.items()))


_ATTRIBUTES: dict[type, tuple[str, ...]] = {}


def _attributes(node: Any) -> Mapping[str, Any]:
    """The data attributes of a parser object: its fields, looked up once per type
    from the class (an instance's values would hide a field holding its own type)."""
    kind = type(node)
    names = _ATTRIBUTES.get(kind)
    if names is None:
        names = _ATTRIBUTES[kind] = tuple(
            name
            for name in dir(kind)
            if not name.startswith("_") and inspect.isdatadescriptor(getattr(kind, name))
        )
    return {name: getattr(node, name) for name in names}
