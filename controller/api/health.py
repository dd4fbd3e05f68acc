"""Readiness: named checks that must all pass before the pod takes its share of work.

The controller is ready when its store answers, its scheduler runs and its
source of rollouts has synced once; each of these is a check, a callable that
returns True when fine and returns False or raises when not. They are passed in
by the composition root (`Readiness({"store": ..., "scheduler": ...})`), so this
module knows nothing about stores or schedulers and tests use plain functions.

Liveness is not here on purpose: `/healthz` only says the process still answers
HTTP. Restarting a pod because Postgres is down would not bring Postgres back;
it would only lose the ticks in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller.telemetry import redact

#: A readiness check: True when ready; False, or an exception, when not.
Check = Callable[[], bool]


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check, with a redacted reason when it failed."""

    name: str
    ok: bool
    detail: str = ""


@dataclass(frozen=True)
class ReadinessReport:
    """Every check's outcome; ready only if all passed and the process is not stopping."""

    ready: bool
    checks: tuple[CheckResult, ...]
    stopping: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "ready": self.ready,
            "stopping": self.stopping,
            "checks": {
                c.name: {"ok": c.ok, **({"detail": c.detail} if c.detail else {})}
                for c in self.checks
            },
        }


class Readiness:
    """Evaluates the named checks on every `/readyz` request.

    `mark_stopping()` makes the controller unready at once, whatever the checks
    say, so that during a graceful shutdown the Service stops sending scrapes
    and the rollout of a new ReplicaSet waits for the replacement pod.
    """

    def __init__(self, checks: Mapping[str, Check]) -> None:
        if not checks:
            raise ValueError("readiness needs at least one check")
        self._checks = dict(checks)
        self._stopping = threading.Event()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    def mark_stopping(self) -> None:
        self._stopping.set()

    def evaluate(self) -> ReadinessReport:
        results = tuple(_run(name, check) for name, check in self._checks.items())
        stopping = self._stopping.is_set()
        return ReadinessReport(
            ready=not stopping and all(r.ok for r in results), checks=results, stopping=stopping
        )


def _run(name: str, check: Check) -> CheckResult:
    try:
        ok = bool(check())
    except Exception as exc:  # a failing check means "not ready", never a 500
        # The message may quote a connection string: redact before it leaves the pod.
        return CheckResult(name, False, redact(f"{type(exc).__name__}: {exc}"))
    return CheckResult(name, ok, "" if ok else "check returned false")
