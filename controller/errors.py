"""The one exception tree of canary-controller.

Every error the controller raises on purpose is a `CanaryError`; callers decide
what to do by its class, never by parsing its message::

    CanaryError
    ├── PolicyError          a policy is invalid; carries every problem found
    ├── TransientError       worth retrying (after `retry_after` seconds, if known):
    │   └── NoDataError      a source answered, but with nothing to judge
    ├── PermanentError       retrying will not help (missing route, RBAC forbidden, ...)
    └── FencedError          a write toward the candidate from a replica whose lease is stale

Errors raised while handling another are always chained (`raise ... from exc`),
so the original cause stays visible in logs without being re-parsed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class CanaryError(Exception):
    """Base class of every error canary-controller raises on purpose."""


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or suspicious) in a policy, located as precisely as known.

    `path` is the field path in the document (`spec.steps[2].weight`); `line` and
    `column` are 1-based positions in `file` when the policy came from a file.
    """

    message: str
    path: str = ""
    file: str = ""
    line: int | None = None
    column: int | None = None
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = self.file or "<policy>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        tag = "" if self.severity is Severity.ERROR else " warning:"
        return f"{where}:{tag}{field} {self.message}"


class PolicyError(CanaryError):
    """A policy could not be loaded or is invalid. Holds every problem found at once."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid policy")

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.ERROR)


class TransientError(CanaryError):
    """A failure that may go away by itself: retry, after `retry_after` seconds if given."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NoDataError(TransientError):
    """The source answered but had nothing to judge (no traffic yet, or no series)."""


class PermanentError(CanaryError):
    """A failure that retrying will not fix; a human has to change something."""


class FencedError(CanaryError):
    """A write toward the candidate was refused: the writer's lease is not the latest.

    The writer's lease expired or changed hands since its tick began (it was
    paused, slow, or cut off), or the route already carries a newer lease epoch.
    Neither transient (retrying with the same stale lease can never succeed) nor
    a reason to fail the rollout (the rollout is fine: another replica owns it).
    The tick that hits it stops, records the refusal in the audit and commits
    nothing.
    """
