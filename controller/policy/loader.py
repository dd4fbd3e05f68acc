"""Load ModelRollout policies from YAML, reporting every problem with its position.

Whatever the input (an empty file, binary data, a list instead of a mapping,
huge numbers, alias bombs, several documents), loading either returns valid
policies or raises `PolicyError` holding every problem found: each with the
file, line and column, the field path (`spec.steps[2].weight`) and a plain
reason. Unknown fields come with a "did you mean" suggestion.

How: PyYAML composes the node tree (which knows where every value stands), the
plain data is constructed from the same nodes, pydantic validates the fields,
and `controller.policy.checks` runs the cross-field rules on every section that
is valid, so one bad section does not hide the problems of another.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_core import ErrorDetails

from controller.errors import PolicyError, Problem, Severity
from controller.policy import checks  # noqa: F401  (registers the cross-field checks)
from controller.policy.cross_field import run_checks
from controller.policy.gates import WebhookAllow
from controller.policy.model import (
    API_VERSION,
    DEFER_CHECKS,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    HEADER_NAME_PATTERN,
    KIND,
    SLACK_CHANNEL_PATTERN,
    SLACK_USER_PATTERN,
    ModelRollout,
    RolloutSpec,
)
from controller.policy.queries import CustomQueries

MAX_FILE_BYTES = 1024 * 1024
#: YAML nodes per document, counting every expansion of an alias
MAX_NODES = 20_000
POLICY_SUFFIXES = (".yaml", ".yml")

Path_ = tuple[str | int, ...]
Position = tuple[int, int]

# Metadata the API server sets on every object; a policy read from the cluster drops it.
SERVER_METADATA = (
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "managedFields",
    "ownerReferences",
    "selfLink",
)

_PATTERN_REASONS = {
    DNS_LABEL_PATTERN: "must be a DNS label: lowercase letters, digits and '-', "
    "starting and ending with a letter or digit",
    DNS_SUBDOMAIN_PATTERN: "must be a Kubernetes name: lowercase letters, digits, '-' and "
    "'.', starting and ending with a letter or digit",
    HEADER_NAME_PATTERN: "is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
    SLACK_CHANNEL_PATTERN: "must be a Slack channel name like #support-bot or an ID like C024BE91L",
    SLACK_USER_PATTERN: "must be a Slack user ID like U024BE7LH (not a name or @handle)",
}


@dataclass(frozen=True)
class LoadedPolicy:
    """A valid policy, where it came from, and the warnings it raised."""

    rollout: ModelRollout
    file: str
    line: int
    warnings: tuple[Problem, ...] = ()


@dataclass
class _Document:
    """One YAML document: its data and where each of its values and keys stands."""

    data: Any
    start: Position
    values: dict[Path_, Position] = field(default_factory=dict)
    keys: dict[Path_, Position] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def position(self, path: Path_, *, key: bool = False) -> Position:
        """Where `path` stands, or its closest enclosing value that does."""
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), 0, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return self.start


def format_path(path: Iterable[str | int]) -> str:
    """('spec', 'steps', 2, 'weight') -> 'spec.steps[2].weight'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_path(text: str) -> Path_:
    """'spec.steps[2].weight' -> ('spec', 'steps', 2, 'weight')."""
    out: list[str | int] = []
    for dotted in text.split("."):
        name, *indices = dotted.split("[")
        if name:
            out.append(name)
        out.extend(int(i.rstrip("]")) for i in indices if i.rstrip("]").isdigit())
    return tuple(out)


def _mark(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _index(doc: _Document, node: yaml.Node, path: Path_, budget: list[int], file: str) -> None:
    """Record the position of `node` and everything below it, within the node budget."""
    budget[0] -= 1
    if budget[0] < 0:
        return
    doc.values.setdefault(path, _mark(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, Position] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            if key in seen and key != "<<":
                line, column = _mark(key_node)
                doc.problems.append(
                    Problem(
                        f"duplicate key {key!r}; it is already set at line {seen[key][0]}",
                        format_path((*path, key)),
                        file,
                        line,
                        column,
                    )
                )
            seen.setdefault(key, _mark(key_node))
            doc.keys.setdefault((*path, key), _mark(key_node))
            _index(doc, value_node, (*path, key), budget, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(doc, item, (*path, i), budget, file)


def _documents(text: str, file: str) -> Iterator[_Document]:
    """The documents of a YAML stream; PolicyError on YAML that does not parse."""
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses unprintable characters
    except yaml.YAMLError as exc:
        raise PolicyError([Problem(f"not valid YAML: {exc}", "", file)]) from exc
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            doc = _Document(data=None, start=_mark(node))
            budget = [MAX_NODES]
            _index(doc, node, (), budget, file)
            if budget[0] < 0:
                raise PolicyError(
                    [
                        Problem(
                            f"the document has more than {MAX_NODES} values (counting "
                            "every use of an alias); a policy is never that large",
                            file=file,
                            line=doc.start[0],
                            column=doc.start[1],
                        )
                    ]
                )
            doc.data = loader.construct_document(node)
            yield doc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        reason = " ".join(str(p) for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise PolicyError([Problem(f"not valid YAML: {reason}", "", file, line, column)]) from exc
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise plain ValueErrors (e.g. a bad !!timestamp) and
        # recurse once per nesting level.
        raise PolicyError([Problem(f"not valid YAML: {exc}", "", file)]) from exc
    finally:
        loader.dispose()


# --- what pydantic knows about each path, for precise messages ----------------


def _unwrap(tp: Any) -> Any:
    """Strip Annotated and Optional from a type."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp
            tp = members[0]
        else:
            return tp


def _type_at(path: Sequence[str | int]) -> Any:
    """The declared type at `path` in a ModelRollout, or None when unknown."""
    tp: Any = ModelRollout
    for part in path:
        tp = _unwrap(tp)
        origin = get_origin(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str):
            fields = _fields_by_key(tp)
            if part not in fields:
                return None
            tp = fields[part]
        elif origin is list and isinstance(part, int):
            tp = get_args(tp)[0]
        elif origin is dict:
            tp = get_args(tp)[1]
        else:
            return None
    return _unwrap(tp)


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """A model's fields by the key a YAML document uses (its camelCase alias)."""
    return {
        (info.alias or to_camel(name)): info.annotation for name, info in model.model_fields.items()
    }


def _unknown_field_reason(parent: Path_, key: str | int) -> str:
    model = _type_at(parent)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"unknown field {key!r}"
    known = list(_fields_by_key(model))
    hint = get_close_matches(str(key), known, n=1, cutoff=0.6)
    if hint:
        return f"unknown field {key!r}; did you mean {hint[0]!r}?"
    return f"unknown field {key!r}; known fields here: {', '.join(known)}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _reason(error: ErrorDetails) -> str:
    """A plain-language reason for one pydantic error."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    got = _describe(error.get("input"))
    if kind == "missing":
        return "is required"
    if kind == "string_pattern_mismatch":
        return f"{_PATTERN_REASONS.get(ctx.get('pattern', ''), 'has the wrong format')} (got {got})"
    if kind == "enum":
        choices = [str(e.value) for e in _enum_choices(error["loc"])]
        value = str(error.get("input"))
        hint = get_close_matches(value, choices, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"must be one of {', '.join(choices)} (got {got}){suggestion}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')} (got {got})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be a mapping of fields (key: value), not {got}"
    if kind == "list_type":
        return f"must be a list, not {got}"
    if kind in ("int_type", "int_from_float", "int_parsing"):
        return f"must be a whole number, not {got}"
    if kind in ("float_type", "float_parsing"):
        return f"must be a number, not {got}"
    if kind in ("bool_type", "bool_parsing"):
        return f"must be true or false, not {got}"
    if kind in ("string_type",):
        return f"must be a string, not {got}"
    if kind in ("finite_number",):
        return "must be a finite number"
    if kind in ("too_short", "too_long"):
        items = "items" if error["loc"] and not isinstance(error.get("input"), str) else "chars"
        limit = ctx.get("min_length" if kind == "too_short" else "max_length")
        return (
            f"needs at least {limit} {items}" if kind == "too_short" else f"allows {limit} at most"
        )
    if kind in ("string_too_short", "string_too_long"):
        limit = ctx.get("min_length" if kind == "string_too_short" else "max_length")
        return (
            "must not be empty"
            if kind == "string_too_short"
            else f"is longer than {limit} characters"
        )
    message = error["msg"]
    if kind == "value_error":
        message = message.removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if kind.endswith(("_than", "_equal")) or kind.startswith(("greater", "less")):
        message = f"{message} (got {got})"
    return message


def _enum_choices(loc: Sequence[str | int]) -> list[Enum]:
    tp = _type_at(loc)
    return list(tp) if isinstance(tp, type) and issubclass(tp, Enum) else []


def _problems_from(exc: ValidationError, doc: _Document, file: str) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if error["type"] == "extra_forbidden":
            reason = _unknown_field_reason(loc[:-1], loc[-1])
            line, column = doc.position(loc, key=True)
        elif error["type"] == "missing" and loc[:-1] in doc.keys:
            reason = _reason(error)  # point at the key of the mapping that lacks the field
            line, column = doc.keys[loc[:-1]]
        else:
            reason = _reason(error)
            line, column = doc.position(loc)
        problems.append(Problem(reason, format_path(loc), file, line, column))
    return problems


@cache
def _section_adapter(name: str) -> TypeAdapter[Any]:
    info = RolloutSpec.model_fields[name]
    # The field's constraints (min_length, ...) without its alias, which only a model uses.
    annotated: Any = info.annotation
    for constraint in info.metadata:
        annotated = Annotated[annotated, constraint]
    return TypeAdapter(annotated)


def _valid_sections(spec: Any) -> dict[str, Any]:
    """The spec sections that are valid on their own, for the cross-field checks."""
    if not isinstance(spec, Mapping):
        return {}
    out: dict[str, Any] = {}
    for name, info in RolloutSpec.model_fields.items():
        key = info.alias or to_camel(name)
        if key not in spec:
            if not info.is_required():
                out[name] = info.get_default(call_default_factory=True)
            continue
        with contextlib.suppress(ValidationError):  # its errors are already reported
            out[name] = _section_adapter(name).validate_python(
                spec[key], context={DEFER_CHECKS: True}, by_alias=True, by_name=False
            )
    return out


def _check_document(
    doc: _Document,
    file: str,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> tuple[ModelRollout | None, list[Problem]]:
    problems = list(doc.problems)
    data = doc.data
    if not isinstance(data, Mapping):
        problems.append(
            Problem(
                f"a policy must be a mapping with apiVersion, kind, metadata and spec, "
                f"not {_describe(data)}",
                "",
                file,
                *doc.start,
            )
        )
        return None, problems
    if data.get("kind") not in (None, KIND) and isinstance(data.get("kind"), str):
        line, column = doc.position(("kind",))
        problems.append(
            Problem(
                f"is {data['kind']!r}: this is not a {KIND} ({API_VERSION})",
                "kind",
                file,
                line,
                column,
            )
        )
        return None, problems
    rollout: ModelRollout | None = None
    try:
        rollout = ModelRollout.model_validate(
            data, context={DEFER_CHECKS: True}, by_alias=True, by_name=False
        )
        sections = dict(rollout.spec)
    except ValidationError as exc:
        problems.extend(_problems_from(exc, doc, file))
        sections = _valid_sections(data.get("spec"))
    sections["custom_queries"] = custom_queries
    sections["webhook_allow"] = webhook_allow
    for problem in run_checks(sections):
        line, column = doc.position(parse_path(problem.path))
        problems.append(
            Problem(problem.message, problem.path, file, line, column, problem.severity)
        )
    if any(p.severity is Severity.ERROR for p in problems):
        rollout = None
    return rollout, problems


def check_text(
    text: str | bytes,
    file: str = "<policy>",
    *,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> tuple[list[LoadedPolicy], list[Problem]]:
    """Every valid policy in `text` and every problem (errors and warnings); never raises.

    `custom_queries` and `webhook_allow`: the operator's settings, when known (`deny`
    makes a custom query an error, a webhook gate's URL must be on the allowlist);
    None checks the policy alone."""
    if len(text) > MAX_FILE_BYTES:
        return [], [Problem(f"is larger than {MAX_FILE_BYTES // 1024} KiB; not a policy", "", file)]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return [], [Problem(f"is not UTF-8 text (byte {exc.start})", "", file)]
    if "\x00" in text:
        return [], [Problem("contains NUL bytes; not a text file", "", file)]
    policies: list[LoadedPolicy] = []
    problems: list[Problem] = []
    count = 0
    try:
        for doc in _documents(text, file):
            if doc.data is None:
                continue
            count += 1
            rollout, found = _check_document(doc, file, custom_queries, webhook_allow)
            problems.extend(found)
            if rollout is not None:
                warnings = tuple(p for p in found if p.severity is Severity.WARNING)
                policies.append(LoadedPolicy(rollout, file, doc.start[0], warnings))
    except PolicyError as exc:
        problems.extend(exc.problems)
    if count == 0 and not problems:
        problems.append(Problem(f"is empty: no {KIND} in it", "", file))
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return policies, problems


def load_text(
    text: str | bytes,
    file: str = "<policy>",
    *,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> list[LoadedPolicy]:
    """The policies in `text`; PolicyError with every problem if any is invalid."""
    policies, problems = check_text(
        text, file, custom_queries=custom_queries, webhook_allow=webhook_allow
    )
    if any(p.severity is Severity.ERROR for p in problems):
        raise PolicyError(problems)
    return policies


def load_file(
    path: str | Path,
    *,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> list[LoadedPolicy]:
    """The policies in the file at `path`; PolicyError if it is unreadable or invalid."""
    return load_text(
        _read(Path(path)), str(path), custom_queries=custom_queries, webhook_allow=webhook_allow
    )


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError([Problem(f"cannot read: {exc.strerror or exc}", "", str(path))]) from exc


def policy_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and the *.yaml / *.yml files below directories named, in order."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(
                sorted(p for p in path.rglob("*") if p.suffix in POLICY_SUFFIXES and p.is_file())
            )
        else:
            out.append(path)
    return out


def check_files(
    paths: Iterable[str | Path],
    *,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> tuple[list[LoadedPolicy], list[Problem]]:
    """Every valid policy and every problem in the files and directories named."""
    policies: list[LoadedPolicy] = []
    problems: list[Problem] = []
    for path in policy_files(paths):
        try:
            found, issues = check_text(
                _read(path), str(path), custom_queries=custom_queries, webhook_allow=webhook_allow
            )
        except PolicyError as exc:
            found, issues = [], list(exc.problems)
        policies.extend(found)
        problems.extend(issues)
    return policies, problems


def parse_object(
    obj: Mapping[str, Any],
    source: str = "<cluster>",
    *,
    custom_queries: CustomQueries | None = None,
    webhook_allow: WebhookAllow | None = None,
) -> ModelRollout:
    """A ModelRollout from a custom resource read from the API server.

    Server-set metadata and the status are dropped; everything else is validated
    exactly as a file would be. PolicyError when the object is invalid.
    """
    data = {k: v for k, v in obj.items() if k != "status"}
    metadata = data.get("metadata")
    if isinstance(metadata, Mapping):
        data["metadata"] = {k: v for k, v in metadata.items() if k not in SERVER_METADATA}
    doc = _Document(data=data, start=(1, 1))
    rollout, problems = _check_document(doc, source, custom_queries, webhook_allow)
    problems = [
        Problem(p.message, p.path, p.file, None, None, p.severity)
        for p in problems
        if p.severity is Severity.ERROR
    ]
    if rollout is None:
        raise PolicyError(problems or [Problem("invalid policy", "", source)])
    return rollout
