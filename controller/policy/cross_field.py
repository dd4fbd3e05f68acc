"""The registry of cross-field checks: `@check(...)` adds one, `run_checks` runs them.

The checks themselves are in `controller.policy.checks` (they read the models);
the models run them through this registry, which imports neither, so a spec built
in Python is checked as the loader checks it without an import loop. The policy
package imports the checks, so they are registered before any model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from controller.errors import Problem

CheckFn = Callable[..., Iterable[Problem]]
_CHECKS: list[tuple[tuple[str, ...], CheckFn]] = []


def check(*sections: str) -> Callable[[CheckFn], CheckFn]:
    """Register a check that reads the given spec sections (snake_case field names)."""

    def register(fn: CheckFn) -> CheckFn:
        _CHECKS.append((sections, fn))
        return fn

    return register


def run_checks(sections: Mapping[str, Any]) -> list[Problem]:
    """Every problem found by the checks whose sections are all in `sections`."""
    problems: list[Problem] = []
    for needs, fn in _CHECKS:
        if all(sections.get(name) is not None for name in needs):
            problems.extend(fn(*(sections[name] for name in needs)))
    return problems
