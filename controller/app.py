"""The composition root: the one place concrete classes are chosen and wired.

`canaryctl run` calls `run(settings)`: it migrates the store, builds the
controller (source, routers, metrics provider, judge, reporters), serves
/healthz, /readyz and /metrics (and Slack's /slack/actions, given a signing
secret), delivers the outbox to Slack and the webhook on a worker of its own,
and on SIGTERM becomes unready, finishes the ticks in flight, releases its
leases and stops.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from sqlalchemy import text

from controller import __version__
from controller.api.health import Readiness
from controller.api.server import ApiServer, BackgroundServer
from controller.api.slack_actions import SlackActions
from controller.api.slack_buttons import buttons
from controller.dashboard.server import DashboardServer, OpenedStore
from controller.engine.phases import Phase
from controller.engine.state import CommandKind
from controller.errors import CanaryError, PermanentError
from controller.kube.client import ApiClient, kube_client
from controller.kube.cluster import Cluster
from controller.metrics.base import MetricProvider
from controller.metrics.exemplars import TraceSource
from controller.metrics.prometheus import PrometheusProvider
from controller.notify import DeliveryWorker, Notifier, SlackNotifier, WebhookNotifier
from controller.notify.slack import web_client
from controller.policy import ModelRollout
from controller.routing.base import RouteTarget, TrafficRouter
from controller.routing.registry import router_for
from controller.runtime.admission import QueryAdmission
from controller.runtime.cases import ExemplarCaseRecorder
from controller.runtime.controller import Controller, LogReporter, RouterFactory, TickReporter
from controller.runtime.executor import GateRunner, Observer, TickResult
from controller.runtime.gates import (
    GateRunners,
    JobGates,
    KubeSecretHeaders,
    StoreCases,
    WebhookGates,
)
from controller.runtime.heap import freeze_startup_heap
from controller.runtime.manual import Submitted, submit_once
from controller.runtime.observer import JudgingObserver
from controller.runtime.sources import DEFAULT_GRACE, DirectorySource, RolloutSource
from controller.settings import Settings, redact_url
from controller.store.base import RolloutStore
from controller.store.sql import DatabaseTimeouts, SqlStore, migrate
from controller.telemetry import ControllerMetrics

if TYPE_CHECKING:
    from controller.runtime.kube_source import KubernetesSource

log = logging.getLogger(__name__)


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class MetricsReporter:
    """Records each tick's outcome in the controller's self-metrics."""

    def __init__(self, metrics: ControllerMetrics) -> None:
        self.metrics = metrics

    def report(self, rollout: ModelRollout, result: TickResult) -> None:
        ns, name = rollout.metadata.namespace, rollout.metadata.name
        state = result.decision.state
        self.metrics.set_candidate_weight(ns, name, state.serving().weight)
        self.metrics.set_rollout_gate(ns, name, state.gate.name if state.gate else None)
        for t in result.decision.transitions:
            if t.to_phase is Phase.ROLLED_BACK:
                self.metrics.record_rollback(ns, name)
            elif t.to_phase is Phase.PROMOTED:
                self.metrics.record_promotion(ns, name)
        for cell in result.look.cells if result.look else ():
            self.metrics.record_verdict(str(cell.verdict), cell.metric)


class ClusterRoutes:
    """One router per rollout, from the policy's `traffic.router`, on one API client."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._routers: dict[tuple[str, str], TrafficRouter] = {}
        self._lock = threading.Lock()

    def __call__(self, rollout: ModelRollout) -> TrafficRouter:
        key = (rollout.key, repr(RouteTarget.of(rollout)))
        with self._lock:
            if key not in self._routers:
                self._routers[key] = router_for(rollout, self.cluster)
            return self._routers[key]


@dataclass
class Wiring:
    """What `build` made, for `run` and for tests."""

    controller: Controller
    store: SqlStore
    metrics: ControllerMetrics
    readiness: Readiness
    api_client: ApiClient | None
    #: the ModelRollout watch (with source=kubernetes), stopped after the controller
    kube_source: KubernetesSource | None = None


def build(
    settings: Settings,
    *,
    source: RolloutSource | None = None,
    routes: RouterFactory | None = None,
    provider: MetricProvider | None = None,
    observer: Observer | None = None,
    reporters: tuple[TickReporter, ...] = (),
    gates: GateRunner | None = None,
    traces: TraceSource | None = None,
) -> Wiring:
    """The controller for `settings`; any piece can be replaced (tests, the demo)."""
    store = SqlStore(
        settings.database_url.get_secret_value(),
        timeouts=DatabaseTimeouts.from_settings(settings),
    )
    metrics = ControllerMetrics()
    api_client = kube_client(settings) if routes is None or source is None else None
    kube_source: KubernetesSource | None = None
    if source is None:
        if settings.source == "directory":
            # A vanished file ends its rollout only after two syncs, so an editor's
            # delete-and-rewrite or a `mv` away and back ends nothing.
            source = DirectorySource(
                settings.policy_dir,
                grace=max(DEFAULT_GRACE, 2 * settings.sync_seconds),
                on_problem=lambda key, why: store.record_source_problem(
                    key, why, datetime.now(UTC)
                ),
            )
        else:
            from controller.runtime.kube_source import KubernetesSource
            from controller.runtime.kube_status import KubeStatusReporter

            assert api_client is not None
            # Status and Events go to the objects the source reads, invalid ones included.
            status = KubeStatusReporter(api_client, instance=settings.replica_id)
            kube_source = KubernetesSource(
                api_client,
                namespace=settings.namespace,
                on_invalid=status.report_invalid,
                custom_queries=settings.custom_queries,
                webhook_allow=settings.webhook_allowlist,
            )
            kube_source.start()
            source = kube_source
            reporters = (*reporters, status)
    if routes is None:
        assert api_client is not None
        routes = ClusterRoutes(
            Cluster(
                api_client,
                on_retry=lambda kind, reason: metrics.record_route_write_retry(kind.kind, reason),
            )
        )
    if provider is None:
        provider = PrometheusProvider.from_settings(
            settings,
            on_query=lambda seconds, error: metrics.record_prometheus_query(seconds, error=error),
        )
    if observer is None:
        observer = JudgingObserver(provider, tick_timeout=settings.tick_timeout_seconds)
    if traces is None and isinstance(provider, TraceSource):
        traces = provider  # the trace IDs of eval cases come from the same Prometheus
    if gates is None:
        gates = gate_runners(settings, api_client, store)
    controller = Controller(
        gates=gates,
        store=store,
        source=QueryAdmission(source, settings.custom_queries, settings.webhook_allowlist),
        routes=routes,
        observer=observer,
        cases=ExemplarCaseRecorder(traces) if traces is not None else None,
        clock=WallClock(),
        replica=settings.replica_id,
        lease_ttl=timedelta(seconds=settings.lease_ttl_seconds),
        sync_every=settings.sync_seconds,
        reporters=(LogReporter(), MetricsReporter(metrics), *reporters),
        metrics=metrics,
        store_wait=settings.tick_store_wait_seconds,
        tick_threads=settings.tick_threads,
    )

    def store_answers() -> bool:
        with store.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True

    readiness = Readiness(
        {
            "store": store_answers,
            "scheduler": lambda: controller.scheduler.running,
            "source": lambda: controller.ready,
        }
    )
    return Wiring(controller, store, metrics, readiness, api_client, kube_source)


def gate_runners(
    settings: Settings, api_client: ApiClient | None, store: RolloutStore
) -> GateRunners:
    """The policies' gates: webhooks to the allowlisted URLs; Jobs (and webhook headers
    from Secrets) when the controller has a cluster, Jobs only with CANARY_JOB_GATES.
    Both get the model's eval cases recorded in `store`."""
    cases = StoreCases(store)
    secrets = KubeSecretHeaders(api_client) if api_client is not None else None
    jobs = (
        JobGates(api_client, cases=cases) if api_client is not None and settings.job_gates else None
    )
    return GateRunners(WebhookGates(settings.webhook_allowlist, cases=cases, secrets=secrets), jobs)


def notifiers(settings: Settings) -> list[Notifier]:
    """The sinks the outbox is delivered to: Slack with CANARY_SLACK_TOKEN, the JSON
    webhook with CANARY_WEBHOOK_URL; none without either (messages stay queued).
    With CANARY_SLACK_SIGNING_SECRET too, Slack's status messages carry buttons."""
    found: list[Notifier] = []
    if settings.slack_token is not None:
        controls = buttons if settings.slack_signing_secret is not None else None
        found.append(SlackNotifier.from_settings(settings, controls=controls))
    if settings.webhook_url is not None:
        found.append(WebhookNotifier(settings.webhook_url))
    return found


def run(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run the controller until SIGTERM / SIGINT (or `stop` is set)."""
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing ticks in flight", signal.Signals(signum).name)
        stop.set()

    # Before anything starts: the ModelRollout watch begins listing while the rest is
    # still being built, and a SIGTERM then must still end in an orderly stop.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # First: with no cluster to talk to, nothing else (the store) is touched.
    kube_client(settings).close()  # type: ignore[no-untyped-call]  # the client has no annotations
    migrate(
        settings.database_url.get_secret_value(),
        timeouts=DatabaseTimeouts.from_settings(settings),
    )
    sinks = notifiers(settings)  # first: a bad webhook URL fails before anything starts
    wiring = build(settings)
    # Delivery runs on threads of its own: a slow or failing sink never holds up a tick.
    delivery = DeliveryWorker(wiring.store, sinks, metrics=wiring.metrics) if sinks else None
    actions = slack_actions(settings, wiring.store)
    servers: list[BackgroundServer] = [
        *api_servers(settings, wiring.metrics.registry, wiring.readiness, slack=actions),
        *dashboard_servers(settings, wiring.store),
    ]
    for server in servers:
        server.start()
    freeze_startup_heap()
    wiring.controller.start()
    if delivery is not None:
        delivery.start()
        _check_slack(sinks)
    log.info(
        "controller %s running as %s (source: %s)",
        __version__,
        settings.replica_id,
        settings.source,
    )
    stop.wait()
    wiring.readiness.mark_stopping()
    wiring.controller.stop()
    if wiring.kube_source is not None:
        wiring.kube_source.stop()
    if delivery is not None and not delivery.stop():
        log.warning("a notification was still in flight at shutdown; it is retried on restart")
    for server in servers:
        server.stop()
    if actions is not None:
        actions.close()
    wiring.store.close()
    log.info("stopped")


def api_servers(
    settings: Settings,
    registry: CollectorRegistry,
    readiness: Readiness,
    *,
    slack: SlackActions | None = None,
) -> list[ApiServer]:
    """The health endpoints and /metrics on one server (CANARY_API_HOST/PORT), or /metrics
    on a second one when CANARY_METRICS_PORT is set (CANARY_METRICS_HOST, else the API host).
    `slack` (/slack/actions) goes on the API server, or on a server of its own when
    CANARY_SLACK_ACTIONS_PORT is set (CANARY_SLACK_ACTIONS_HOST, else the API host)."""
    own_port = settings.slack_actions_port is not None
    with_api = slack if not own_port else None
    if settings.metrics_port is None:
        servers = [
            ApiServer(
                registry, readiness, host=settings.api_host, port=settings.api_port, slack=with_api
            )
        ]
    else:
        servers = [
            ApiServer(
                registry,
                readiness,
                host=settings.api_host,
                port=settings.api_port,
                metrics=False,
                slack=with_api,
            ),
            ApiServer(
                registry,
                readiness,
                host=settings.metrics_host or settings.api_host,
                port=settings.metrics_port,
                health=False,
            ),
        ]
    if slack is not None and settings.slack_actions_port is not None:
        servers.append(
            ApiServer(
                registry,
                readiness,
                host=settings.slack_actions_host or settings.api_host,
                port=settings.slack_actions_port,
                health=False,
                metrics=False,
                slack=slack,
            )
        )
    return servers


class ManualCommands:
    """The manual-command path `canaryctl` takes, for Slack's buttons: once per key."""

    def __init__(self, store: RolloutStore) -> None:
        self.store = store

    def __call__(
        self,
        key: str,
        kind: CommandKind,
        *,
        actor: str,
        reason: str,
        now: datetime,
        dedupe_key: str,
        args: Mapping[str, Any] | None = None,
    ) -> Submitted:
        return submit_once(
            self.store,
            key,
            kind,
            actor=actor,
            reason=reason,
            now=now,
            dedupe_key=dedupe_key,
            args=args,
        )


def slack_actions(settings: Settings, store: RolloutStore) -> SlackActions | None:
    """`/slack/actions` with CANARY_SLACK_SIGNING_SECRET (and the bot token it answers
    with); None without a signing secret. PermanentError with a secret but no token."""
    secret = settings.slack_signing_secret
    if secret is None:
        return None
    if settings.slack_token is None or not secret.get_secret_value().strip():
        raise PermanentError(
            "Slack actions need both CANARY_SLACK_SIGNING_SECRET (not empty) and "
            "CANARY_SLACK_TOKEN (to answer in the thread and open the Abort form)"
        )
    return SlackActions(
        signing_secret=secret.get_secret_value().strip(),
        client=web_client(settings.slack_token, base_url=settings.slack_base_url),
        store=store,
        submit=ManualCommands(store),
        response_url_prefix=settings.slack_response_url_prefix,
    )


def dashboard_servers(settings: Settings, store: SqlStore) -> list[BackgroundServer]:
    """The read-only dashboard over the controller's own store, when CANARY_DASHBOARD_PORT
    is set (on CANARY_DASHBOARD_HOST, else the API host); none otherwise."""
    if settings.dashboard_port is None:
        return []
    source = redact_url(settings.database_url.get_secret_value())
    return [
        DashboardServer(
            OpenedStore(store, source, hint="The controller's store: see its log."),
            host=settings.dashboard_host or settings.api_host,
            port=settings.dashboard_port,
        )
    ]


def _check_slack(sinks: list[Notifier]) -> None:
    """Say in the log, at startup, whether Slack takes the bot token (after the
    controller started: a slow Slack delays no tick)."""
    for sink in sinks:
        if isinstance(sink, SlackNotifier):
            try:
                log.info("Slack notifications as %s", sink.check())
            except CanaryError as exc:
                log.error("Slack notifications will fail: %s", exc)
