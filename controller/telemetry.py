"""What the controller tells its operators about itself: metrics and structured logs.

Metrics. `ControllerMetrics` holds every self-metric as a plain prometheus-client
object on one `CollectorRegistry`, and a small method per thing worth counting,
so the runtime never builds label sets by hand. The composition root makes one
instance and hands it to the runtime (to record) and to `controller.api` (to
serve `/metrics`); tests make their own on a fresh registry, so nothing here is
a process-wide global except what Python's logging already is.

Label values are bounded on purpose: a rollout's namespace and name (tens in a
cluster), a phase, a verdict, a metric name from a policy, an error class name.
The rollout's namespace is the label `rollout_namespace`, not `namespace`: the
Prometheus Operator gives every scraped series a `namespace` label (the pod's),
and a clash would rename ours to `exported_namespace`.
Free text such as a rollback reason belongs in the logs and the audit store, not
in a label, where every distinct value would be a new time series forever.

Logs. `configure_logging(settings)` installs one handler on the root logger that
writes one JSON object per line (or a console line, `CANARY_LOG_FORMAT=console`)
with `time`, `level`, `logger`, `message`, the rollout context bound with
`log_context(...)` or passed as `extra=`, and any other `extra=` fields. Every
string that leaves the process through a log line first goes through `redact`:
the values of the configured secrets, Slack tokens, bearer tokens, JWTs and URL
passwords never reach a log, even when a library puts them in an exception.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import IO, Any
from urllib.parse import urlsplit

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from pydantic import SecretStr

from controller import __version__
from controller.settings import Settings

__all__ = [
    "CONTEXT_FIELDS",
    "ConsoleFormatter",
    "ControllerMetrics",
    "JsonFormatter",
    "LeaseChange",
    "Redactor",
    "TickOutcome",
    "bound_context",
    "configure_logging",
    "log_context",
    "redact",
]

# --- metrics -------------------------------------------------------------------------

#: Every metric this module defines starts with this, so a dashboard can find them all.
PREFIX = "canary"

#: Tick durations: most ticks are a few Prometheus queries and one store write.
TICK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Prometheus answers in milliseconds when healthy; the client gives up at its timeout.
QUERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: A sync is a few statements whatever the number of rollouts; at half the lease TTL
#: it is a problem (the controller warns), at the TTL leases expire while held.
SYNC_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0)


class TickOutcome(StrEnum):
    """How one tick of one rollout ended (the `outcome` label of the tick metrics)."""

    OK = "ok"
    #: a CanaryError or an unexpected exception, or the store could not be reached (the
    #: tick then acted from memory, toward the baseline only); ticked again next interval
    ERROR = "error"
    #: another replica wrote the rollout first, or holds its lease now
    SKIPPED = "skipped"


class LeaseChange(StrEnum):
    """What happened to one rollout's lease on this replica."""

    ACQUIRED = "acquired"  # newly taken (not a renewal)
    LOST = "lost"  # another replica holds it now
    RELEASED = "released"  # given up on purpose, e.g. at shutdown


class ControllerMetrics:
    """The controller's self-metrics and the calls that record them.

    Pass `registry` to put the metrics on an existing registry; by default a new
    one is made, with the process, platform and GC collectors on it too, which
    is what `/metrics` should serve. (prometheus-client's global registry is
    not used, so tests and several instances in one process never collide.)
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        if registry is None:
            registry = CollectorRegistry(auto_describe=True)
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self._lock = threading.Lock()
        self._phases_seen: set[str] = set()
        p = PREFIX

        self.build_info = Info(
            f"{p}_build", "Version of the running controller.", registry=registry
        )
        self.build_info.info({"version": __version__})

        self.rollouts = Gauge(
            f"{p}_rollouts",
            "Rollouts known to this replica, by phase (terminal phases included).",
            ["phase"],
            registry=registry,
        )
        self.candidate_weight = Gauge(
            f"{p}_rollout_candidate_weight_percent",
            "Share of traffic (0-100) the candidate receives, as last written to the route.",
            ["rollout_namespace", "rollout"],
            registry=registry,
        )
        self.gate_waiting = Gauge(
            f"{p}_rollout_gate_waiting",
            "1 while a rollout waits for the gate named in `gate` (running, or paused after it "
            "failed); 0 once it no longer does.",
            ["rollout_namespace", "rollout", "gate"],
            registry=registry,
        )
        self._gates: dict[tuple[str, str], str] = {}
        self.ticks = Counter(
            f"{p}_ticks",
            "Ticks of rollouts run by this replica, by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.tick_duration = Histogram(
            f"{p}_tick_duration_seconds",
            "Wall time of one tick: observe, judge, decide, act.",
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.rollbacks = Counter(
            f"{p}_rollbacks",
            "Rollouts rolled back (automatically or by hand).",
            ["rollout_namespace", "rollout"],
            registry=registry,
        )
        self.promotions = Counter(
            f"{p}_promotions",
            "Rollouts promoted: the candidate took all traffic.",
            ["rollout_namespace", "rollout"],
            registry=registry,
        )
        self.verdicts = Counter(
            f"{p}_verdicts",
            "Verdicts of the judge, by verdict and by policy metric.",
            ["verdict", "metric"],
            registry=registry,
        )
        self.prometheus_query_duration = Histogram(
            f"{p}_prometheus_query_duration_seconds",
            "Latency of queries to Prometheus, failed ones included.",
            buckets=QUERY_BUCKETS,
            registry=registry,
        )
        self.prometheus_query_errors = Counter(
            f"{p}_prometheus_query_errors",
            "Queries to Prometheus that failed, by error class.",
            ["error"],
            registry=registry,
        )
        self.route_write_retries = Counter(
            f"{p}_route_write_retries",
            "Writes to a route retried, by router and reason (conflict, unavailable, ...).",
            ["router", "reason"],
            registry=registry,
        )
        self.outbox_depth = Gauge(
            f"{p}_outbox_depth",
            "Notifications waiting in the outbox to be delivered.",
            registry=registry,
        )
        self.delivery_failures = Counter(
            f"{p}_notification_delivery_failures",
            "Failed attempts to deliver a notification, by channel (slack, console).",
            ["channel"],
            registry=registry,
        )
        self.leases_held = Gauge(
            f"{p}_leases_held",
            "Rollout leases this replica holds now.",
            registry=registry,
        )
        self.lease_changes = Counter(
            f"{p}_lease_changes",
            "Lease ownership changes on this replica: acquired, lost, released.",
            ["change"],
            registry=registry,
        )
        self.sync_duration = Histogram(
            f"{p}_sync_duration_seconds",
            "Wall time of one sync: heartbeat, lease renewal and claims, jobs. Keep it well"
            " under the lease TTL (the controller warns at half of it).",
            buckets=SYNC_BUCKETS,
            registry=registry,
        )
        self.replicas_live = Gauge(
            f"{p}_replicas_live",
            "Replicas alive as this replica's last sync saw them (the rollouts are shared"
            " among them).",
            registry=registry,
        )
        self.store_pending_writes = Gauge(
            f"{p}_store_pending_writes",
            "Rollouts whose ticks acted without the store (toward the baseline only) and"
            " whose writes wait in memory to be recorded.",
            registry=registry,
        )
        self.store_down_endings = Counter(
            f"{p}_store_down_endings",
            "Rollouts ended by a tick that could not reach the store (route given back"
            " first, recorded later), by the phase they ended in.",
            ["phase"],
            registry=registry,
        )

    # --- rollouts ----------------------------------------------------------------

    def set_rollout_phases(self, phases: Iterable[str]) -> None:
        """Set the by-phase gauge from the phase of every rollout, e.g. after a sync.

        A phase seen before and now absent is set to 0 rather than dropped, so a
        graph falls to zero instead of ending.
        """
        counts: dict[str, int] = {}
        for phase in phases:
            counts[str(phase)] = counts.get(str(phase), 0) + 1
        with self._lock:
            self._phases_seen.update(counts)
            for phase in self._phases_seen:
                self.rollouts.labels(phase=phase).set(counts.get(phase, 0))

    def set_rollout_gate(self, namespace: str, rollout: str, gate: str | None) -> None:
        """Record the gate a rollout waits for (None: none); the previous one falls to 0."""
        with self._lock:
            before = self._gates.get((namespace, rollout))
            if before is not None and before != gate:
                self.gate_waiting.labels(
                    rollout_namespace=namespace, rollout=rollout, gate=before
                ).set(0)
            if gate is None:
                self._gates.pop((namespace, rollout), None)
                return
            self._gates[(namespace, rollout)] = gate
            self.gate_waiting.labels(rollout_namespace=namespace, rollout=rollout, gate=gate).set(1)

    def set_candidate_weight(self, namespace: str, rollout: str, percent: float) -> None:
        """Record the candidate's traffic share (0-100) after a route write or read-back."""
        self.candidate_weight.labels(rollout_namespace=namespace, rollout=rollout).set(percent)

    def record_rollback(self, namespace: str, rollout: str) -> None:
        self.rollbacks.labels(rollout_namespace=namespace, rollout=rollout).inc()

    def record_promotion(self, namespace: str, rollout: str) -> None:
        self.promotions.labels(rollout_namespace=namespace, rollout=rollout).inc()

    def forget_rollout(self, namespace: str, rollout: str) -> None:
        """Drop the per-rollout gauge of a deleted rollout (counters keep their history)."""
        try:
            self.candidate_weight.remove(namespace, rollout)
        except KeyError:
            return

    # --- ticks and verdicts ------------------------------------------------------

    def record_tick(self, seconds: float, outcome: TickOutcome = TickOutcome.OK) -> None:
        self.ticks.labels(outcome=str(outcome)).inc()
        self.tick_duration.observe(seconds)

    @contextmanager
    def time_tick(self) -> Iterator[None]:
        """Time the block as one tick: `ok` if it returns, `error` if it raises (re-raised)."""
        start = time.perf_counter()
        outcome = TickOutcome.ERROR
        try:
            yield
            outcome = TickOutcome.OK
        finally:
            self.record_tick(time.perf_counter() - start, outcome)

    def record_verdict(self, verdict: str, metric: str) -> None:
        """Count one verdict (`pass`, `fail`, `inconclusive`, ...) on one policy metric."""
        self.verdicts.labels(verdict=str(verdict), metric=metric).inc()

    # --- Prometheus ----------------------------------------------------------------

    def record_prometheus_query(self, seconds: float, *, error: str | None = None) -> None:
        """One query's latency; `error` (an error class name) if it failed."""
        self.prometheus_query_duration.observe(seconds)
        if error is not None:
            self.prometheus_query_errors.labels(error=error).inc()

    @contextmanager
    def time_prometheus_query(self) -> Iterator[None]:
        """Time the block as one query; an exception counts as an error of its class."""
        start = time.perf_counter()
        error: str | None = None
        try:
            yield
        except BaseException as exc:
            error = type(exc).__name__
            raise
        finally:
            self.record_prometheus_query(time.perf_counter() - start, error=error)

    # --- routes, outbox, leases ----------------------------------------------------

    def record_route_write_retry(self, router: str, reason: str) -> None:
        """A write to a route is tried again (`reason`: conflict, unavailable, ...)."""
        self.route_write_retries.labels(router=router, reason=reason).inc()

    def set_outbox_depth(self, pending: int) -> None:
        self.outbox_depth.set(pending)

    def record_delivery_failure(self, channel: str) -> None:
        self.delivery_failures.labels(channel=channel).inc()

    def set_leases_held(self, count: int) -> None:
        self.leases_held.set(count)

    def record_lease_change(self, change: LeaseChange) -> None:
        self.lease_changes.labels(change=str(change)).inc()

    def record_sync(self, seconds: float, *, replicas: int) -> None:
        """One sync's duration, and the live replicas it saw."""
        self.sync_duration.observe(seconds)
        self.replicas_live.set(replicas)

    # --- the store ------------------------------------------------------------------

    def set_store_pending_writes(self, rollouts: int) -> None:
        """How many rollouts have tick writes waiting for the store."""
        self.store_pending_writes.set(rollouts)

    def record_store_down_ending(self, phase: str) -> None:
        """A tick without the store ended a rollout (RolledBack, Aborted, Failed)."""
        self.store_down_endings.labels(phase=phase).inc()


# --- redaction -----------------------------------------------------------------------

MASK = "***"

#: Patterns of secrets recognisable by their shape, whoever configured them.
_SHAPES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: bot, user, app-level, refresh, config (xoxb-, xoxp-, xapp-, xoxe-...).
    (re.compile(r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9-]+"), MASK),
    # A password in a URL's userinfo: scheme://user:password@host
    (re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]+@"), r"\g<head>:***@"),
    # An Authorization header's credential, whatever it looks like.
    (
        re.compile(
            r"(?i)\b(?P<head>authorization[\"']?\s*[:=]\s*[\"']?(?:(?:bearer|basic)\s+)?)"
            r"[^\s\"',}]+"
        ),
        r"\g<head>***",
    ),
    # A bearer or basic credential elsewhere: at least 8 characters
    # with a digit or a symbol in them, so that "basic sanity checks" stays readable.
    (
        re.compile(
            r"(?i)\b(?P<scheme>bearer|basic)\s+"
            r"(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}"
        ),
        r"\g<scheme> ***",
    ),
    # JWTs, such as Kubernetes service-account tokens.
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"), MASK),
    # key=value secrets in DSNs and query strings: password=..., token=...
    (
        re.compile(r"(?i)\b(?P<key>password|passwd|pwd|token|secret|api[_-]?key)=[^&\s'\"]+"),
        r"\g<key>=***",
    ),
)

#: Shorter configured secrets are not masked: masking "a" everywhere would hide the logs.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Masks known secret values and secret-shaped strings in text. Thread-safe."""

    def __init__(self, secrets: Iterable[str | SecretStr | None] = ()) -> None:
        self._lock = threading.Lock()
        # Longest first, so a secret that contains another is masked whole.
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str | SecretStr | None) -> None:
        """Remember secret values to mask wherever they appear."""
        new = set()
        for secret in secrets:
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            if value and len(value) >= MIN_SECRET_LENGTH:
                new.add(value)
        with self._lock:
            merged = new.union(self._secrets)
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _SHAPES:
            text = pattern.sub(replacement, text)
        return text


#: The process's redactor: `configure_logging` adds the configured secrets to it.
REDACTOR = Redactor()


def redact(text: str) -> str:
    """`text` with every known or secret-shaped value masked; for logs and HTTP answers."""
    return REDACTOR(text)


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value in `settings`, and the passwords inside secret URLs."""
    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr):
            continue
        secret = value.get_secret_value()
        found.append(secret)
        if name.endswith("_url"):
            try:
                password = urlsplit(secret).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    return found


# --- context bound to log lines ------------------------------------------------------

#: The fields that say which rollout a line is about; formatters put them first.
CONTEXT_FIELDS = ("rollout", "namespace", "step", "phase")

_context: ContextVar[Mapping[str, Any]] = ContextVar(
    "canary_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields (`rollout=`, `namespace=`, `step=`, `phase=`, ...) to every log line
    written in this block, by this thread or task; None values are left out.

    Blocks nest: an inner block adds to and may override the outer one's fields.
    """
    bound = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _context.set(bound)
    try:
        yield
    finally:
        _context.reset(token)


def bound_context() -> Mapping[str, Any]:
    """The fields bound by the enclosing `log_context` blocks."""
    return dict(_context.get())


# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def _fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """Context and `extra=` fields of a record: bound context first, `extra=` wins."""
    fields = dict(_context.get())
    for key, value in record.__dict__.items():
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_"):
            fields[key] = value
    ordered = {k: fields.pop(k) for k in CONTEXT_FIELDS if k in fields}
    ordered.update(sorted(fields.items()))
    return ordered


def _safe(value: Any, redactor: Redactor) -> Any:
    """A JSON-ready, redacted copy of `value`."""
    if isinstance(value, SecretStr):
        return MASK
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, Mapping):
        return {str(k): _safe(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_safe(v, redactor) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return redactor(str(value))


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extras, error.

    Every string is redacted before it is written; a value that is not JSON
    (a path, an enum, an exception) is written as its redacted `str()`.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redactor(record.getMessage()),
        }
        for key, value in _fields_of(record).items():
            line.setdefault(key, _safe(value, self.redactor))
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            line["error"] = {
                "type": type(exc).__name__,
                "message": self.redactor(str(exc)),
                "stack": self.redactor("".join(traceback.format_exception(exc)).rstrip()),
            }
        elif record.stack_info:
            line["stack"] = self.redactor(record.stack_info)
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


class ConsoleFormatter(logging.Formatter):
    """One readable line for people at a terminal; redacted like the JSON lines.

    `12:00:01.250 INFO  controller.runtime [llm/bot step=2 phase=Progressing] message k=v`
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or REDACTOR

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        fields = _fields_of(record)
        where = ""
        if "rollout" in fields or "namespace" in fields:
            namespace = fields.pop("namespace", None)
            rollout = fields.pop("rollout", "")
            where = f"{namespace}/{rollout}" if namespace else str(rollout)
        tags = [where] if where else []
        tags += [f"{k}={fields.pop(k)}" for k in ("step", "phase") if k in fields]
        context = f" [{' '.join(tags)}]" if tags else ""
        extras = "".join(f" {k}={_safe(v, self.redactor)}" for k, v in fields.items())
        text = (
            f"{moment} {record.levelname:<7} {record.name}{context} "
            f"{self.redactor(record.getMessage())}{extras}"
        )
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + self.redactor("".join(traceback.format_exception(record.exc_info[1])))
        return self.redactor(text.rstrip())


#: Libraries that narrate every request or job at INFO; their warnings still show.
QUIET_LOGGERS = ("apscheduler", "urllib3", "kubernetes", "alembic.runtime.migration")


def configure_logging(settings: Settings, *, stream: IO[str] | None = None) -> logging.Handler:
    """Send every log line to `stream` (stderr) as JSON or console lines, redacted.

    Honours `CANARY_LOG_LEVEL` and `CANARY_LOG_FORMAT` (through `settings`) and
    adds the settings' secrets to the process's redactor. Calling it again
    replaces the handler it installed before; handlers others installed stay.
    Returns the handler.
    """
    REDACTOR.add(*secrets_of(settings))
    formatter: logging.Formatter = (
        ConsoleFormatter(REDACTOR) if settings.log_format == "console" else JsonFormatter(REDACTOR)
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    quiet = logging.NOTSET if settings.log_level == "DEBUG" else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    # urllib3 logs each of its own retries as a WARNING ("Retrying (Retry(total=2, ...")),
    # three per failed request: the callers say once what failed, how often and when next.
    logging.getLogger("urllib3").setLevel(
        logging.NOTSET if settings.log_level == "DEBUG" else logging.ERROR
    )
    logging.captureWarnings(True)
    return handler


_HANDLER_NAME = "canary-controller"
