"""Readiness: named checks that must all pass before the pod takes its share of work.

The controller is ready when its store answers, its scheduler runs and its
source of rollouts has synced once; each of these is a check, a callable that
returns True when fine and returns False or raises when not. They are passed in
by the composition root (`Readiness({"store": ..., "scheduler": ...})`), so this
module knows nothing about stores or schedulers and tests use plain functions.

`/readyz` always answers within about a second, whatever the checks do: each
check runs on a thread of its own, all at once, and one that has not answered
by the deadline (`DEFAULT_DEADLINE`; a black-holed database never answers) is
reported not ready ("no answer within 0.8 s"). A check still hanging from an
earlier request is waited on again, not started twice, so a dead dependency
costs one thread, not one per probe.

What `/readyz` says is seen by anyone who can reach the port, so a failure is
reported by its kind only (`OperationalError`), never by its message, which
may name hosts, ports or users; the message goes to the log, once per change.

Liveness is not here on purpose: `/healthz` only says the process still answers
HTTP. Restarting a pod because Postgres is down would not bring Postgres back;
it would only lose the ticks in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from controller.telemetry import redact

log = logging.getLogger(__name__)

#: how long `/readyz` waits for its checks (together, they run at once)
DEFAULT_DEADLINE = 0.8

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

    def __init__(self, checks: Mapping[str, Check], *, deadline: float = DEFAULT_DEADLINE) -> None:
        if not checks:
            raise ValueError("readiness needs at least one check")
        self._probes = {name: _Probe(name, check) for name, check in checks.items()}
        self.deadline = deadline
        self._stopping = threading.Event()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._probes)

    def mark_stopping(self) -> None:
        self._stopping.set()

    def evaluate(self) -> ReadinessReport:
        runs = [probe.start() for probe in self._probes.values()]
        until = time.monotonic() + self.deadline
        results = tuple(run.result(until, self.deadline) for run in runs)
        stopping = self._stopping.is_set()
        return ReadinessReport(
            ready=not stopping and all(r.ok for r in results), checks=results, stopping=stopping
        )


class _Run:
    """One run of one check, which requests wait on until their deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.done = threading.Event()
        self.outcome: CheckResult | None = None

    def result(self, until: float, deadline: float) -> CheckResult:
        if self.done.wait(max(0.0, until - time.monotonic())) and self.outcome is not None:
            return self.outcome
        return CheckResult(self.name, False, f"no answer within {deadline:g} s")


class _Probe:
    """One check, run on its own daemon thread, at most one run at a time."""

    def __init__(self, name: str, check: Check) -> None:
        self.name = name
        self.check = check
        self._lock = threading.Lock()
        self._run: _Run | None = None
        self._logged = ""

    def start(self) -> _Run:
        with self._lock:
            if self._run is not None and not self._run.done.is_set():
                return self._run  # still hanging since an earlier request: no second thread
            run = self._run = _Run(self.name)
        thread = threading.Thread(target=self._perform, args=(run,), daemon=True)
        thread.name = f"readyz-{self.name}"
        thread.start()
        return run

    def _perform(self, run: _Run) -> None:
        try:
            ok = bool(self.check())
        except Exception as exc:  # a failing check means "not ready", never a 500
            run.outcome = CheckResult(self.name, False, f"failed: {type(exc).__name__}")
            self._log(redact(f"{type(exc).__name__}: {exc}"))
        else:
            run.outcome = CheckResult(self.name, ok, "" if ok else "check returned false")
            self._log("")
        finally:
            run.done.set()

    def _log(self, message: str) -> None:
        """The failure's message in the log (redacted, once per change), not in /readyz."""
        if message == self._logged:
            return
        if message:
            log.warning("readiness check %s fails: %s", self.name, message)
        elif self._logged:
            log.info("readiness check %s passes again", self.name)
        self._logged = message
