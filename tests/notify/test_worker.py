"""The delivery worker against a fake Slack, with the real executor writing the outbox.

Done when: every event of a rollout reaches Slack in order as one thread; a
hanging Slack does not delay a rollback; no message is lost or doubled across a
restart (the worker dies between sending and marking, and starts again).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from controller.analysis.verdicts import Verdict
from controller.engine.state import Cell, Look, RolloutState
from controller.errors import PermanentError
from controller.notify import (
    Backoff,
    ConsoleNotifier,
    DeliveryWorker,
    Notification,
    Receipt,
    SlackNotifier,
    Thread,
    WebhookNotifier,
)
from controller.policy import ModelRollout, load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation
from controller.store import ManualCommand
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from controller.telemetry import ControllerMetrics
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.notify import fake_slack, hook_receiver
from tests.notify.fake_slack import TOKEN, FakeSlack
from tests.notify.hook_receiver import Hook
from tests.notify.samples import FAIL_REASON, T0, analysis
from tests.policy.base import policy

OWNERS = '  owners: {slack: {channel: "#bot", mention: [U024BE7LH]}}\n  traffic:'
ROLLOUT = load_text(policy(("  traffic:", OWNERS)))[0].rollout
KEY = ROLLOUT.key
FAST = Backoff(first=0.05, factor=2.0, longest=0.2)
Store = MemoryStore | SqlStore


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


@dataclass
class Judge:
    """An observer like `JudgingObserver`: cells for the engine, rows for the audit."""

    verdict: Verdict = Verdict.PASS  # of refusal-rate in mobile; every other cell passes
    error: str | None = None  # the metrics source failed: no cells at all
    #: an INCONCLUSIVE verdict means "fewer requests than minSamples" (else: undecided)
    waiting: bool = True

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        if self.error is not None:
            return Observation(Look(error=self.error))
        cells, rows = [], []
        for metric in ("refusal-rate", "error-rate"):
            for cohort in ("overall", "mobile"):
                bad = (metric, cohort) == ("refusal-rate", "mobile")
                verdict = self.verdict if bad else Verdict.PASS
                summary = FAIL_REASON if verdict is Verdict.FAIL else ""
                # INCONCLUSIVE here is "fewer requests than minSamples": the step holds
                waiting = verdict is Verdict.INCONCLUSIVE and self.waiting
                cells.append(
                    Cell(metric, cohort, verdict, summary=summary, waiting_for_traffic=waiting)
                )
                rows.append(analysis(state.tick + 1, metric, cohort, str(verdict), at=now))
        return Observation(Look(tuple(cells)), tuple(rows))


@dataclass
class Rollout:
    """The executor, its clock, route and judge: one rollout driven tick by tick."""

    store: Store
    clock: Clock = field(default_factory=Clock)
    judge: Judge = field(default_factory=Judge)
    route: MemoryRouter = field(default_factory=lambda: MemoryRouter(RouteTarget.of(ROLLOUT)))
    took: list[float] = field(default_factory=list)

    def tick(self, n: int = 1) -> None:
        executor = Executor(self.store, self.clock)
        for _ in range(n):
            began = time.monotonic()
            executor.tick(ROLLOUT, self.route, self.judge)
            self.took.append(time.monotonic() - began)
            self.clock.at += timedelta(minutes=1)

    def command(self, command: str) -> None:
        self.store.add_command(KEY, ManualCommand(self.clock.at, command, "alice", "checking"))
        self.tick()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":  # a database of its own: the worker reads every rollout
        url = request.getfixturevalue("postgres_test_url")
    else:
        url = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(url)
    sql = SqlStore(url)
    yield sql
    sql.close()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack.running() as fake:
        yield fake


def slack_notifier(slack: FakeSlack, token: str = TOKEN) -> SlackNotifier:
    return SlackNotifier.connect(SecretStr(token), base_url=slack.base_url, timeout=1)


def wait_for(done: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def delivered(store: Store, key: str = KEY) -> bool:
    return all(m.status in ("sent", "failed", "skipped") for m in store.outbox(key))


def keys_in_slack(slack: FakeSlack) -> list[str]:
    return [m["metadata"]["event_payload"]["dedupe_key"] for m in slack.posted()]


def assert_one_thread(slack: FakeSlack, store: Store) -> None:
    """Every message of the rollout in Slack once, in outbox order, one thread."""
    outbox = store.outbox(KEY)
    assert keys_in_slack(slack) == [m.dedupe_key for m in outbox]
    top, *replies = slack.posted()
    assert top["thread_ts"] is None
    assert [r["thread_ts"] for r in replies] == [top["ts"]] * len(replies)
    assert [m.status for m in outbox] == ["sent"] * len(outbox)
    thread = store.thread(KEY, "slack")
    assert thread is not None and (thread.channel, thread.ts) == ("C0BOT0001", top["ts"])
    refs = [d.ref for d in store.deliveries(KEY)]
    assert refs == [m["ts"] for m in slack.posted()]


# --- done when: one thread, in order -------------------------------------------------


def test_every_event_of_a_rollout_reaches_slack_in_order_as_one_thread(
    store: Store, slack: FakeSlack
) -> None:
    # Two replicas deliver at once, as they would in a cluster: still once each.
    workers = [
        DeliveryWorker(store, [slack_notifier(slack)], backoff=FAST, poll_every=0.01)
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        rollout = Rollout(store)
        rollout.tick(3)  # started
        rollout.judge.verdict = Verdict.INCONCLUSIVE
        rollout.tick(10)  # the hold passes, mobile is undecided: holding
        rollout.judge.verdict = Verdict.PASS
        rollout.tick()  # step 2
        rollout.command("pause")
        rollout.command("resume")
        rollout.tick(30)  # step 3, promoted
        wait_for(lambda: delivered(store))
    finally:
        for worker in workers:
            assert worker.stop()
    events = [m.event for m in store.outbox(KEY)]
    assert events == [
        "started",
        "holding",
        "step-advanced",
        "paused",
        "resumed",
        "step-advanced",
        "promoted",
    ]
    assert_one_thread(slack, store)
    texts = [c["blocks"][1]["text"]["text"] for c in slack.calls_of("chat.postMessage")]
    assert texts[1] == "Not enough traffic in cohort mobile yet: holding the step."
    assert texts[3].startswith("<@U024BE7LH> Paused by alice: checking. A human is needed")
    assert texts[6].startswith("Promoted after 26m: v2 now takes all traffic")
    top = slack.posted()[0]
    assert top["edited"]
    assert top["blocks"][0]["text"]["text"] == ":white_check_mark: llm/bot-v2: Promoted"
    assert len(slack.calls_of("chat.update")) == len(events) - 1


def test_no_data_and_an_abort_reach_the_thread_and_the_owners(slack: FakeSlack) -> None:
    store = MemoryStore()
    rollout = Rollout(store)
    rollout.tick()  # started
    rollout.judge.error = "metrics unavailable: Prometheus did not answer"
    rollout.tick(2)  # holding (once)
    rollout.command("abort")
    worker = DeliveryWorker(store, [slack_notifier(slack)], clock=Clock())
    for _ in range(4):
        worker.run_once()
    assert [m.event for m in store.outbox(KEY)] == ["started", "holding", "aborted"]
    assert_one_thread(slack, store)
    top, holding, aborted = slack.posted()
    assert holding["blocks"][1]["text"]["text"] == (
        "No data from Prometheus (metrics unavailable: Prometheus did not answer):"
        " holding the step."
    )
    assert holding["reply_broadcast"] is None  # a hold stays in the thread
    assert aborted["blocks"][0]["text"]["text"] == ":no_entry: Aborted: llm/bot-v2"
    assert aborted["blocks"][1]["text"]["text"] == "<@U024BE7LH> Aborted by alice: checking."
    assert aborted["reply_broadcast"] is True
    # the engine's cause code reaches Slack with the message it explains
    assert aborted["blocks"][2]["fields"][-1]["text"] == (
        "*Cause*\nManual: a human's command, or a pause kept for a human"
    )
    assert holding["blocks"][2]["fields"][-1]["text"].startswith("*Cause*\nNoData: ")
    assert aborted["text"].startswith("<@U024BE7LH> Aborted: llm/bot-v2 (bot v1 → v2), Aborted,")
    assert top["blocks"][0]["text"]["text"] == ":no_entry: llm/bot-v2: Aborted"


def test_an_undecided_candidate_pauses_at_the_deadline_and_is_never_called_failed(
    slack: FakeSlack,
) -> None:
    store = MemoryStore()
    rollout = Rollout(store)
    rollout.judge.verdict, rollout.judge.waiting = Verdict.INCONCLUSIVE, False
    rollout.tick(45)  # step 1 advances without a FAIL; 100 % waits for a decision; 40m
    worker = DeliveryWorker(store, [slack_notifier(slack)], clock=Clock())
    for _ in range(6):
        worker.run_once()
    assert [m.event for m in store.outbox(KEY)] == [
        "started",
        "step-advanced",
        "holding",
        "paused",
    ]
    assert [t.cause for t in store.transitions(KEY)] == [None, None, "Deadline"]
    *_, holding, paused = slack.posted()
    assert holding["blocks"][1]["text"]["text"] == (
        "Not decided yet in cohort mobile: holding before 100%."
    )
    assert paused["blocks"][1]["text"]["text"] == (
        "<@U024BE7LH> Undecided at the deadline (40m): refusal-rate in mobile: inconclusive,"
        " further samples needed unknown. A human decides: `canaryctl resume` (another"
        " deadline), `canaryctl promote` or `canaryctl abort`."
    )
    assert paused["blocks"][2]["fields"][-1]["text"] == (
        "*Cause*\nDeadline: the judge could not decide before the deadline"
    )
    assert "fail" not in paused["text"]
    assert rollout.route.observe().weight == 50  # paused where it was: nothing rolled back


# --- done when: a hanging Slack does not delay a rollback ----------------------------


def test_a_hanging_slack_does_not_delay_a_rollback(store: Store, slack: FakeSlack) -> None:
    slack.hang_all = True  # every call hangs until released
    patient = SlackNotifier.connect(SecretStr(TOKEN), base_url=slack.base_url, timeout=30)
    worker = DeliveryWorker(store, [patient], backoff=FAST, poll_every=0.01)
    worker.start()
    rollout = Rollout(store)
    rollout.tick(2)
    assert slack.hanging.wait(5)  # the worker is stuck inside a call to Slack now, for 30 s
    rollout.judge.verdict = Verdict.FAIL
    rollout.tick()  # the rollback
    # A generous bound, not a benchmark: far below the 30 s the worker is stuck for.
    assert rollout.took[-1] < 5.0
    assert rollout.route.backend == "bot-v1"
    stored = store.get(KEY)
    assert stored is not None and stored.phase == "RolledBack"
    assert [m.event for m in store.outbox(KEY)] == ["started", "rolled-back"]
    assert slack.posted() == []
    assert not worker.stop(timeout=0.1)  # still stuck in the hanging call

    slack.hang_all = False
    slack.release.set()
    worker.start()
    wait_for(lambda: delivered(store))
    assert worker.stop()
    assert_one_thread(slack, store)
    _, rolled_back = slack.posted()
    assert rolled_back["reply_broadcast"] is True
    assert rolled_back["text"].startswith("<@U024BE7LH> Rolled back: llm/bot-v2")
    cell = [b["text"]["text"] for b in rolled_back["blocks"] if "text" in b][2]
    assert cell == f":x: *refusal-rate* in cohort *mobile*: *fail*\n{FAIL_REASON}"
    assert any("*PromQL*" in b.get("text", {}).get("text", "") for b in rolled_back["blocks"])
    [delivery] = [d for d in store.deliveries(KEY) if d.ref == rolled_back["ts"]]
    assert delivery.attempts >= 1


# --- done when: nothing lost or doubled across a restart -----------------------------


def passes(worker: DeliveryWorker, n: int) -> None:
    for _ in range(n):
        worker.run_once()


class Killed(BaseException):
    """The process dies here (not an Exception: nothing in the worker catches it)."""


class DyingStore:
    """The real store, but the process dies at the `nth` call of `method`."""

    def __init__(self, store: Store, method: str, nth: int = 1) -> None:
        self.store, self.method, self.nth = store, method, nth

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.store, name)
        if name != self.method:
            return real

        def dying(*args: Any, **kwargs: Any) -> Any:
            self.nth -= 1
            if self.nth == 0:
                raise Killed(name)
            return real(*args, **kwargs)

        return dying


@pytest.mark.parametrize(
    ("method", "nth"),
    [
        pytest.param("save_thread", 1, id="opener-posted-thread-not-saved"),
        pytest.param("finish_delivery", 1, id="opener-posted-not-marked"),
        pytest.param("finish_delivery", 2, id="reply-posted-not-marked"),
        pytest.param("thread", 2, id="attempt-recorded-nothing-sent"),
    ],
)
def test_a_worker_killed_between_send_and_mark_neither_loses_nor_doubles(
    store: Store, slack: FakeSlack, method: str, nth: int
) -> None:
    rollout = Rollout(store)
    rollout.tick(21)  # started, two steps
    rollout.judge.verdict = Verdict.FAIL
    rollout.tick()  # rolled back
    clock = Clock(rollout.clock.at)
    dying = DeliveryWorker(
        DyingStore(store, method, nth),  # type: ignore[arg-type]
        [slack_notifier(slack)],
        clock=clock,
        backoff=FAST,
    )
    with pytest.raises(Killed):
        passes(dying, 10)
    posted_before = len(slack.posted())
    # The replacement must not touch the dead worker's claim until it runs out...
    restarted = DeliveryWorker(store, [slack_notifier(slack)], clock=clock, backoff=FAST)
    restarted.run_once()
    assert len(slack.posted()) == posted_before
    # ...then it finds what was sent, sends the rest, and nothing twice.
    clock.at += timedelta(minutes=5)
    for _ in range(10):
        restarted.run_once()
    assert_one_thread(slack, store)
    assert [m.event for m in store.outbox(KEY)] == [
        "started",
        "step-advanced",
        "step-advanced",
        "rolled-back",
    ]
    looked = slack.calls_of("conversations.replies") + slack.calls_of("conversations.history")
    assert looked  # the restarted worker looked before posting again


# --- order, backoff, rate limits, permanent errors -----------------------------------


def test_a_failing_message_holds_back_the_rest_of_its_rollout_only(
    slack: FakeSlack,
) -> None:
    store, clock = MemoryStore(), Clock()
    rollout = Rollout(store)
    rollout.tick(21)  # started, two steps
    other = load_text(policy(("  traffic:", OWNERS), ("name: bot-v2", "name: bot-v3")))[0].rollout
    Executor(store, rollout.clock).tick(other, MemoryRouter(RouteTarget.of(other)), Judge())
    worker = DeliveryWorker(
        store, [slack_notifier(slack)], clock=clock, backoff=Backoff(first=10, factor=3)
    )
    assert worker.run_once() == 2  # both rollouts' "started"
    slack.fail("chat.postMessage", fake_slack.status(500))
    assert worker.run_once() == 1  # bot-v2's step 2 fails; bot-v3 has nothing more
    [_, second, third] = store.outbox(KEY)
    assert (second.status, second.attempts) == ("pending", 1)
    assert second.last_error == (
        "slack: slack chat.postMessage: Slack failed (HTTP 500, Received a response in a"
        " non-JSON format: <html>upstream connect error</html>)"
    )
    assert store.deliveries(KEY)[1].next_attempt_at == clock.at + timedelta(seconds=10)
    assert worker.run_once() == 0  # backing off; step 3 waits behind step 2
    assert third.status == "pending"
    clock.at += timedelta(seconds=10)
    assert worker.run_once() == 1  # the retry looks in the thread first, then posts
    assert worker.run_once() == 1
    assert_one_thread_of(slack, store, KEY)
    assert slack.calls_of("conversations.replies")


def assert_one_thread_of(slack: FakeSlack, store: Store, key: str) -> None:
    mine = [k for k in keys_in_slack(slack) if k.startswith(key + "#")]
    assert mine == [m.dedupe_key for m in store.outbox(key)]


def test_a_rate_limit_pauses_the_sink_for_retry_after(slack: FakeSlack) -> None:
    store, clock = MemoryStore(), Clock()
    Rollout(store).tick(21)
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    worker = DeliveryWorker(store, [slack_notifier(slack)], clock=clock, metrics=metrics)
    slack.fail("chat.postMessage", fake_slack.ratelimited(30))
    assert worker.run_once() == 1
    first = store.deliveries(KEY)[0]
    assert (first.status, first.next_attempt_at) == ("pending", clock.at + timedelta(seconds=30))
    assert (
        registry.get_sample_value(
            "canary_notification_delivery_failures_total", {"channel": "slack"}
        )
        == 1.0
    )
    calls = len(slack.calls)
    clock.at += timedelta(seconds=29)
    assert worker.run_once() == 0
    assert len(slack.calls) == calls  # nothing sent to Slack while it asked us to wait
    clock.at += timedelta(seconds=1)
    for _ in range(5):
        worker.run_once()
    assert_one_thread(slack, store)
    assert registry.get_sample_value("canary_outbox_depth") == 0.0


@pytest.mark.parametrize(
    ("token", "channels", "error"),
    [
        pytest.param(
            "xoxb-9-9-revoked",
            {"bot": "C0BOT0001"},
            "slack: slack chat.postMessage: invalid_auth (the bot token was rejected; check"
            " CANARY_SLACK_TOKEN)",
            id="invalid_auth",
        ),
        pytest.param(
            TOKEN,
            {"elsewhere": "C0ELSE001"},
            "slack: slack chat.postMessage: channel_not_found (no such channel, or the bot cannot"
            " see it; invite the bot)",
            id="channel_not_found",
        ),
    ],
)
def test_a_permanent_error_is_recorded_and_never_retried(
    slack: FakeSlack,
    caplog: pytest.LogCaptureFixture,
    token: str,
    channels: dict[str, str],
    error: str,
) -> None:
    slack.channels = channels
    store, clock = MemoryStore(), Clock()
    Rollout(store).tick(21)
    worker = DeliveryWorker(store, [slack_notifier(slack, token)], clock=clock)
    caplog.set_level(logging.DEBUG)
    for _ in range(5):
        worker.run_once()
        clock.at += timedelta(hours=1)
    outbox = store.outbox(KEY)
    assert [(m.status, m.attempts, m.last_error) for m in outbox] == [("failed", 1, error)] * 3
    assert len(slack.calls_of("chat.postMessage")) == 3  # one try each, then left alone
    assert store.undelivered_count() == 0
    everything = caplog.text + repr(outbox) + repr(store.deliveries(KEY))
    assert token not in everything
    assert "xoxb-" not in everything


def test_the_token_never_appears_in_logs_errors_or_the_audit(
    store: Store, slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, slack-sdk's and urllib's included
    clock = Clock()
    rollout = Rollout(store, clock=clock)
    rollout.tick(21)
    rollout.judge.verdict = Verdict.FAIL
    rollout.tick()  # started, two steps, rolled back
    slack.fail(
        "chat.postMessage",
        fake_slack.ratelimited(1),
        fake_slack.status(500),
        fake_slack.HANG,
        fake_slack.LOSE_ANSWER,
    )
    worker = DeliveryWorker(store, [slack_notifier(slack)], clock=clock, backoff=FAST)
    for _ in range(20):
        worker.run_once()
        clock.at += timedelta(minutes=1)
    assert_one_thread(slack, store)
    assert {c.authorization for c in slack.calls} == {f"Bearer {TOKEN}"}  # sent, to Slack only
    with pytest.raises(PermanentError) as caught:
        slack_notifier(slack, TOKEN + "-revoked").check()
    errors: list[BaseException] = [caught.value]
    while errors[-1].__cause__ is not None:
        errors.append(errors[-1].__cause__)
    seen = "\n".join(
        [caplog.text]
        + [repr(r.args) + repr(r.__dict__) for r in caplog.records]
        + [f"{e!s} {e!r}" for e in errors]
        + [repr(x) for x in (store.outbox(KEY), store.deliveries(KEY), store.thread(KEY, "slack"))]
        + [repr(store.transitions(KEY)), repr(store.route_actions(KEY))]
    )
    assert "rate limited" in seen and "Slack failed (HTTP 500" in seen and "no answer" in seen
    assert TOKEN not in seen
    assert "fakesecrettoken" not in seen and "xoxb-" not in seen


def test_a_bug_in_a_notifier_gives_up_that_message_and_goes_on(slack: FakeSlack) -> None:
    class Broken:
        name = "broken"

        def __init__(self) -> None:
            self.seen: list[str] = []

        def deliver(self, note: Notification, thread: Thread | None, *, retry: bool) -> Receipt:
            self.seen.append(note.event)
            if note.event == "started":
                raise KeyError("blocks")
            return Receipt()

    store, broken = MemoryStore(), Broken()
    Rollout(store).tick(12)
    worker = DeliveryWorker(store, [broken], clock=Clock())
    for _ in range(3):
        worker.run_once()
    assert broken.seen == ["started", "step-advanced"]
    assert [(m.status, m.last_error) for m in store.outbox(KEY)] == [
        ("failed", "broken: internal error: KeyError: 'blocks'"),
        ("sent", None),
    ]


# --- other sinks ---------------------------------------------------------------------


@pytest.fixture
def hook() -> Iterator[Hook]:
    with hook_receiver.running() as receiver:
        yield receiver


def test_a_webhook_gets_the_same_events_without_holding_slack_back(
    slack: FakeSlack, hook: Hook
) -> None:
    store, clock = MemoryStore(), Clock()
    Rollout(store).tick(21)
    webhook = WebhookNotifier(SecretStr(hook.url), timeout=2)
    worker = DeliveryWorker(store, [slack_notifier(slack), webhook], clock=clock)
    hook.statuses = [503]
    for _ in range(4):
        worker.run_once()
    assert_one_thread_of(slack, store, KEY)  # Slack has everything
    assert hook.bodies == []
    assert [m.status for m in store.outbox(KEY)] == ["pending"] * 3  # the webhook owes them
    assert store.outbox(KEY)[
        0
    ].last_error == "webhook: webhook http://127.0.0.1:{}: HTTP 503".format(
        hook.url.split(":")[2].split("/")[0]
    )
    assert "s3cr3t" not in repr(store.outbox(KEY))
    clock.at += timedelta(seconds=20)
    for _ in range(4):
        worker.run_once()
    assert [m.status for m in store.outbox(KEY)] == ["sent"] * 3
    assert hook.keys == [m.dedupe_key for m in store.outbox(KEY)]
    assert [b["event"] for b in hook.bodies] == ["started", "step-advanced", "step-advanced"]
    assert hook.bodies[0]["schema"] == "canary-controller/notification/v1"
    assert hook.bodies[0]["rollout"] == KEY


def test_a_webhook_that_refuses_the_message_fails_it_for_good(hook: Hook) -> None:
    store = MemoryStore()
    Rollout(store).tick(2)
    hook.statuses = [404]
    worker = DeliveryWorker(store, [WebhookNotifier(SecretStr(hook.url))], clock=Clock())
    worker.run_once()
    [message] = store.outbox(KEY)
    assert (message.status, message.last_error) == (
        "failed",
        f"webhook: webhook {hook.url.split('/hooks')[0]}: HTTP 404",
    )


def test_an_unreachable_webhook_is_retried() -> None:
    store = MemoryStore()
    Rollout(store).tick(2)
    unused = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = unused.server_address[1]
    unused.server_close()  # nothing listens there now
    webhook = WebhookNotifier(SecretStr(f"http://127.0.0.1:{port}/x"), timeout=1)
    worker = DeliveryWorker(store, [webhook], clock=Clock(), backoff=Backoff(first=5))
    worker.run_once()
    [delivery] = store.deliveries(KEY)
    assert (delivery.status, delivery.next_attempt_at) == ("pending", T0 + timedelta(seconds=5))
    assert delivery.last_error is not None
    assert delivery.last_error.startswith(f"webhook http://127.0.0.1:{port}: no answer")
    with pytest.raises(PermanentError, match="absolute http"):
        WebhookNotifier(SecretStr("ftp://example/x"))


def test_the_console_prints_what_slack_would_show() -> None:
    store, out = MemoryStore(), io.StringIO()
    Rollout(store).tick(1)
    worker = DeliveryWorker(store, [ConsoleNotifier(out)], clock=Clock())
    worker.run_once()
    assert out.getvalue().splitlines()[:4] == [
        "To #bot:",
        "🚀 Started: llm/bot-v2",
        "═" * 21,
        "Step 1: 5% to candidate.",
    ]
    assert "  Traffic:              5% to candidate (mobile 10%)" in out.getvalue()
    assert store.outbox(KEY)[0].status == "sent"


def test_two_notifiers_with_one_name_are_refused() -> None:
    with pytest.raises(ValueError, match="share a name"):
        DeliveryWorker(MemoryStore(), [ConsoleNotifier(), ConsoleNotifier()])
