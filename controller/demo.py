"""`canaryctl demo`: the whole product on embedded defaults, on an accelerated clock.

Nothing is scripted: the real engine and the real judge run a real policy
(a support-bot rollout), the in-memory router carries the weights, and
a seeded traffic simulator serves baseline and candidate per cohort, read back
through the same counts Prometheus would return. The audit goes to a SQLite file
that `canaryctl history` and `status` read afterwards.

Scenarios:
- `cohort-regression`: fine overall (within the 2-point margin), but non-English
  users are refused twice as often by the candidate; the judge catches that
  cohort while the candidate only sees mirrored traffic, and rolls back before
  any user is served by it, and records the failing cohort as an eval case with
  the trace IDs of the candidate's refusals (`canaryctl cases export`);
- `healthy`: the candidate is as good as the baseline and is promoted;
- `outage`: Prometheus goes silent at the second step; the rollout holds, then
  follows the policy's noData rule;
- `gate-replay`: the cohort-regression rollout, then the same candidate again
  (`support-bot-v7-retry`) with a preRollout gate: a local webhook (`ReplayGate`)
  that gets the model's recorded eval cases and fails the candidate when one of
  them is a non-English failure of this very version. The retry is stopped
  before it shadows: its route is never touched.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from controller.engine.phases import Phase
from controller.engine.state import Notify
from controller.metrics.simulated import (
    Behaviour,
    CohortTraffic,
    SimulatedProvider,
    TrafficSimulator,
)
from controller.notify import DeliveryWorker, Notifier
from controller.policy import Cause, ModelRollout, load_text
from controller.policy.gates import WebhookAllow
from controller.routing import MemoryRouter, RouteChange, RouteState, RouteTarget, TrafficRouter
from controller.runtime.cases import ExemplarCaseRecorder
from controller.runtime.executor import Executor, GateRunner, TickResult
from controller.runtime.gates import CaseSource, GateRunners, StoreCases, WebhookGates
from controller.runtime.observer import JudgingObserver
from controller.scenarios import Scenario
from controller.store.sql import SqlStore, migrate

DEMO_POLICY = """\
apiVersion: canary.ai/v1alpha1
kind: ModelRollout
metadata: {name: support-bot-v7, namespace: llm}
spec:
  model: support-bot
  baseline:  {version: v6, service: support-bot-v6}
  candidate: {version: v7, service: support-bot-v7}
  owners: {slack: {channel: "#support-bot", mention: ["U024BE7LH"]}}
  traffic: {router: gateway-api, route: support-bot}
  cohorts:
    - {name: non-english, match: {header: accept-language, regex: "^(de|fr|es|ja|zh)"}}
    - {name: mobile,      match: {header: x-client, value: mobile}}
    - {name: power-users, match: {header: x-user-tier, value: power}}
  shadow: {mirrorPercent: 100, duration: 30m}
  steps:
    - {weight: 1, hold: 10m, cohortWeights: {non-english: 5, power-users: 5}}
    - {weight: 5, hold: 15m}
    - {weight: 20, hold: 30m}
    - {weight: 50, hold: 30m}
    - {weight: 100}
  analysis:
    interval: 30s
    window: 5m
    confidence: 0.95
    minSamples: 200
    noData: {action: hold, timeout: 10m, then: rollback}
    metrics:
      - {template: refusal-rate,  maxIncrease: 0.02, max: 0.10}
      - {template: quality-score, maxDecrease: 0.03}
      - {template: latency-p95,   maxRatio: 1.25, max: 2.5s}
      - {template: error-rate,    max: 0.01}
"""

#: the cohort the demo's candidate regressed in, which the replay gate looks for
REPLAYED_COHORT = "non-english"
#: the path of the demo's replay gate
REPLAY_PATH = "/replay"


def retry_rollout(url: str) -> ModelRollout:
    """The demo policy again, for the same candidate, behind a preRollout replay gate."""
    text = DEMO_POLICY.replace("name: support-bot-v7,", "name: support-bot-v7-retry,", 1)
    text += (
        "  gates:\n"
        f"    - {{name: replay-evals, at: preRollout, webhook: {{url: '{url}', timeout: 10s}}}}\n"
    )
    [loaded] = load_text(text, "<demo policy>")
    return loaded.rollout


def replay_verdict(payload: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    """The replay gate's answer to one call: 422 with the cases it replayed when any
    recorded case of the model is a failure in `REPLAYED_COHORT` of this candidate
    version, else 200. Honest and simple: it looks at the recorded failures, it does
    not call the model."""
    version = str(payload.get("candidate", {}).get("version", ""))
    cases = [c for c in payload.get("cases", ()) if isinstance(c, Mapping)]
    broken = [
        c
        for c in cases
        if c.get("cohort") == REPLAYED_COHORT and c.get("candidate_version") == version
    ]
    if broken:
        return 422, {
            "passed": False,
            "replayed": len(cases),
            "failed": [
                {"id": c.get("id"), "metric": c.get("metric"), "cohort": c.get("cohort")}
                for c in broken
            ],
            "reason": f"{version} failed {REPLAYED_COHORT} users before",
        }
    return 200, {"passed": True, "replayed": len(cases)}


@contextmanager
def replay_gate() -> Iterator[str]:
    """The demo's gate: `replay_verdict` served on a free loopback port; yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            try:
                payload = json.loads(self.rfile.read(length))
                status, answer = replay_verdict(payload if isinstance(payload, dict) else {})
            except ValueError:
                status, answer = 400, {"error": "not JSON"}
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{REPLAY_PATH}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def demo_cases(store: SqlStore) -> CaseSource:
    """The eval cases the demo's store recorded, as the replay gate gets them."""
    return StoreCases(store)


#: requests per second reaching the model; the cohorts split them
RPS = 60.0
#: a rollout never takes longer than this in simulated time
MAX_SIMULATED = timedelta(hours=6)


def scenario_cohorts(scenario: Scenario, rollout: ModelRollout) -> list[CohortTraffic]:
    """The policy's cohorts (60% of the traffic between them) and everyone else.

    In `cohort-regression` the candidate refuses twice as often in the first
    cohort only (the whole traffic when there are none): small enough to hide
    in the overall rate, not in that cohort's.
    """
    baseline, candidate = rollout.spec.baseline.version, rollout.spec.candidate.version
    names = [c.name for c in rollout.spec.cohorts]
    regressed = names[0] if names else "other"
    same, worse = Behaviour(), Behaviour(refusal_rate=0.10)
    shares = {name: 0.6 / len(names) for name in names}
    shares["other"] = 1.0 - sum(shares.values())
    return [
        CohortTraffic(
            name,
            share,
            {
                baseline: same,
                candidate: worse
                if scenario in (Scenario.COHORT_REGRESSION, Scenario.GATE_REPLAY)
                and name == regressed
                else same,
            },
        )
        for name, share in shares.items()
    ]


@dataclass
class DemoClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass(frozen=True)
class Failure:
    metric: str
    cohort: str
    baseline: float | None
    candidate: float | None


@dataclass
class DemoResult:
    scenario: Scenario
    phase: Phase
    steps_completed: int
    failures: list[Failure] = field(default_factory=list)
    database: str = ""
    key: str = ""
    simulated: timedelta = timedelta(0)
    messages: list[Notify] = field(default_factory=list)
    cause: Cause | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": str(self.scenario),
            "phase": str(self.phase),
            "cause": str(self.cause) if self.cause else None,
            "steps_completed": self.steps_completed,
            "failures": [
                {
                    "metric": f.metric,
                    "cohort": f.cohort,
                    "baseline": f.baseline,
                    "candidate": f.candidate,
                }
                for f in self.failures
            ],
            "database": self.database,
        }


Progress = Callable[[TickResult, timedelta], None]


def demo_rollout() -> ModelRollout:
    [loaded] = load_text(DEMO_POLICY, "<demo policy>")
    return loaded.rollout


def run_demo(
    scenario: Scenario,
    database: Path,
    *,
    seed: int = 7,
    progress: Progress | None = None,
    pace: float = 0.0,
    rollout: ModelRollout | None = None,
    router: TrafficRouter | None = None,
    rps: float = RPS,
    notifiers: Sequence[Notifier] = (),
) -> DemoResult:
    """Run one rollout to its end on simulated time; the audit goes to `database` (recreated).

    By default the demo policy on the in-memory router; `canaryctl rehearse` passes
    a policy of its own, its real router, and `pace` seconds between looks.
    The outbox is delivered to `notifiers` after each tick, the way the controller's
    delivery worker would (here in step with the simulated clock).

    `gate-replay` runs the cohort-regression rollout first, then the retry behind its
    replay gate, in the same store; the result is the retry's.
    """
    database.unlink(missing_ok=True)
    url = f"sqlite:///{database}"
    migrate(url)
    if scenario is not Scenario.GATE_REPLAY:
        return _run(scenario, database, seed, progress, pace, rollout, router, rps, notifiers)
    if rollout is not None or router is not None:
        raise ValueError("gate-replay runs the demo's own rollouts, not a policy of yours")
    _run(Scenario.COHORT_REGRESSION, database, seed, progress, pace, None, None, rps, notifiers)
    with replay_gate() as gate_url:
        return _run(
            scenario,
            database,
            seed,
            progress,
            pace,
            retry_rollout(gate_url),
            None,
            rps,
            notifiers,
            gates=lambda store: GateRunners(
                WebhookGates(WebhookAllow.parse(gate_url), cases=demo_cases(store))
            ),
        )


def _run(
    scenario: Scenario,
    database: Path,
    seed: int,
    progress: Progress | None,
    pace: float,
    rollout: ModelRollout | None,
    router: TrafficRouter | None,
    rps: float,
    notifiers: Sequence[Notifier],
    *,
    gates: Callable[[SqlStore], GateRunner] | None = None,
) -> DemoResult:
    store = SqlStore(f"sqlite:///{database}")
    rollout = rollout or demo_rollout()
    start = datetime.now(UTC).replace(microsecond=0)
    clock = DemoClock(start)
    simulator = TrafficSimulator(
        model=rollout.spec.model,
        baseline=rollout.spec.baseline.version,
        candidate=rollout.spec.candidate.version,
        cohorts=scenario_cohorts(scenario, rollout),
        requests_per_second=rps,
        start=start,
        seed=seed,
        scrape_interval=timedelta(seconds=15),
    )
    provider = SimulatedProvider(simulator)
    observer = JudgingObserver(provider)
    router = router or MemoryRouter(RouteTarget.of(rollout))
    # the simulator keeps the trace IDs of bad requests, as exemplars would
    executor = Executor(
        store,
        clock,
        cases=ExemplarCaseRecorder(provider),
        gates=gates(store) if gates is not None else None,
    )
    delivery = DeliveryWorker(store, notifiers, clock=clock) if notifiers else None
    interval = rollout.spec.analysis.interval
    result = DemoResult(scenario, Phase.PENDING, 0, database=str(database), key=rollout.key)
    try:
        for _ in range(int(MAX_SIMULATED / interval) + 2):
            route = router.observe()
            # The simulator splits requests and cannot copy them: shadow traffic (a
            # mirror) is approximated by an even split, so both versions are measured.
            share = route.weight or min(route.mirror_percent, 50)
            simulator.set_weights(share, dict(route.cohorts))
            simulator.advance_to(clock.now())
            if scenario is Scenario.OUTAGE:
                provider.down = _in_outage(result.steps_completed, route.weight)
            tick = executor.tick(rollout, router, observer)
            state = tick.decision.state
            result.phase = state.phase
            result.cause = state.cause
            result.steps_completed = _steps_completed(state.phase, state.step)
            result.simulated = clock.now() - start
            result.messages.extend(a for a in tick.decision.actions if isinstance(a, Notify))
            if progress is not None:
                progress(tick, result.simulated)
            if delivery is not None:
                delivery.run_once()
            if state.phase.terminal or result.simulated >= MAX_SIMULATED:
                if state.phase is Phase.ROLLED_BACK:
                    result.failures = _failures(store, rollout.key)
                break
            clock.at += interval
            if pace:
                time.sleep(pace)
    finally:
        store.close()
    return result


def _in_outage(steps_completed: int, weight: int) -> bool:
    """Prometheus goes silent once the rollout has reached its second step (5%)."""
    return steps_completed >= 1 and weight >= 5


def _steps_completed(phase: Phase, step: int) -> int:
    if phase is Phase.PROMOTED:
        return step + 1
    return max(step, 0)


def _failures(store: SqlStore, key: str) -> list[Failure]:
    rows = store.analyses(key)
    if not rows:
        return []
    last_tick = rows[-1].tick
    return [
        Failure(r.metric, r.cohort, r.baseline_value, r.candidate_value)
        for r in rows
        if r.tick == last_tick and r.verdict == "fail" and r.evidence.get("critical", True)
    ]


class RehearsalRouter:
    """A real router that never really promotes: a rehearsal always gives the route back.

    Promotion would leave the candidate as the route's only backend; in a
    rehearsal that is recorded as a promotion but carried out as a restore.
    """

    def __init__(self, router: TrafficRouter) -> None:
        self.router = router
        self.routes: list[dict[str, Any]] = []

    @property
    def kind(self) -> Any:
        return self.router.kind

    @property
    def capabilities(self) -> Any:
        return self.router.capabilities

    def observe(self) -> RouteState:
        return self.router.observe()

    def apply(self, desired: RouteState, *, epoch: int | None = None) -> RouteChange:
        change = self.router.apply(desired, epoch=epoch)
        if change.changed:
            self.routes.append(
                {**self.router.observe().to_json(), "writes": [str(w) for w in change.writes]}
            )
        return change

    def restore(self, *, promote: bool = False, epoch: int | None = None) -> RouteChange:
        change = self.router.restore(promote=False)
        self.routes.append(
            {**self.router.observe().to_json(), "restored": True, "promoted": promote}
        )
        return change


def rehearse(
    rollout: ModelRollout,
    router: TrafficRouter,
    scenario: Scenario,
    database: Path,
    *,
    pace: float,
    seed: int = 7,
    rps: float = RPS,
    progress: Progress | None = None,
) -> tuple[DemoResult, list[dict[str, Any]]]:
    """Drive `rollout`'s real router through the simulated rollout, then give the route back.

    Returns the result and the route as it was after each write.
    """
    rehearsal = RehearsalRouter(router)
    try:
        result = run_demo(
            scenario,
            database,
            seed=seed,
            progress=progress,
            pace=pace,
            rollout=rollout,
            router=rehearsal,
            rps=rps,
        )
    finally:
        if rehearsal.observe() != RouteState():
            rehearsal.restore()
    return result, rehearsal.routes
