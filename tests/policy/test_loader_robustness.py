"""Whatever the input, loading returns policies or raises PolicyError, nothing else."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.errors import PolicyError, Problem
from controller.policy import check_text, load_text
from tests.policy.base import BASE

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["10m", "0s", "1e400", "-1", "100", "nginx-ingress", "^(?!x)", "{{version}}"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=12), children, max_size=4),
    ),
    max_leaves=20,
)


def _load(text: str | bytes) -> None:
    error: PolicyError | None = None
    try:
        load_text(text, "fuzz.yaml")
    except PolicyError as exc:  # anything else fails the test
        error = exc
    if error is not None:
        assert error.problems, "a PolicyError always says what is wrong"
        assert all(isinstance(p, Problem) and p.message for p in error.problems)


@FAST
@given(st.text(max_size=300))
def test_any_text(text: str) -> None:
    _load(text)


@FAST
@given(st.binary(max_size=300))
def test_any_bytes(data: bytes) -> None:
    _load(data)


@FAST
@given(values)
def test_any_yaml_structure(value: Any) -> None:
    _load(yaml.safe_dump(value))


@FAST
@given(st.lists(values, min_size=1, max_size=3))
def test_several_documents(documents: list[Any]) -> None:
    _load(yaml.safe_dump_all(documents))


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, child in node.items():
            out.extend(_paths(child, (*path, key)))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            out.extend(_paths(child, (*path, i)))
    return out


BASE_DATA = yaml.safe_load(BASE)
BASE_PATHS = _paths(BASE_DATA)[1:]


@FAST
@given(st.lists(st.tuples(st.sampled_from(BASE_PATHS), values), min_size=1, max_size=3))
def test_a_valid_policy_with_any_value_replaced(edits: list[tuple[tuple[Any, ...], Any]]) -> None:
    data = yaml.safe_load(BASE)
    for path, value in edits:
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit replaced this part of the tree
    text = yaml.safe_dump(data)
    _load(text)
    policies, problems = check_text(text, "fuzz.yaml")
    # Every reported problem that names a field is located in the file.
    assert all(p.line is not None for p in problems if p.path)
    assert len(policies) <= 1


@FAST
@given(st.sampled_from(BASE_PATHS))
def test_removing_any_field_is_handled(path: tuple[Any, ...]) -> None:
    data = yaml.safe_load(BASE)
    node = data
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    _load(yaml.safe_dump(data))
