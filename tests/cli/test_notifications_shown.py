"""`canaryctl history` and `status` show notifications that did not reach the owners.

A rejected bot token fails every message for good; a Slack answering 500 leaves
them queued with the error. Either way a human reading the CLI learns why the
owners heard nothing, and the token appears nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from controller.cli.main import app
from controller.engine.state import Look
from controller.notify import DeliveryWorker, SlackNotifier
from controller.policy import load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation
from controller.store.sql import SqlStore, migrate
from tests.notify import fake_slack
from tests.notify.fake_slack import TOKEN, FakeSlack
from tests.notify.samples import T0
from tests.policy.base import policy

runner = CliRunner()
ROLLOUT = load_text(policy(("  traffic:", '  owners: {slack: {channel: "#bot"}}\n  traffic:')))[
    0
].rollout
KEY = ROLLOUT.key


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


class NoMetrics:
    def observe(self, *_: object) -> Observation:
        return Observation(Look(error="metrics unavailable: nobody home"))


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack.running() as fake:
        yield fake


def _deliver(tmp_path: Path, slack: FakeSlack, token: str) -> Path:
    """Start the rollout (started, then holding for no data), deliver with `token`."""
    database = tmp_path / "canary.db"
    url = f"sqlite:///{database}"
    migrate(url)
    store = SqlStore(url)
    clock = Clock()
    try:
        executor = Executor(store, clock)
        for _ in range(2):
            executor.tick(ROLLOUT, MemoryRouter(RouteTarget.of(ROLLOUT)), NoMetrics())
            clock.at += timedelta(seconds=30)
        notifier = SlackNotifier.connect(SecretStr(token), base_url=slack.base_url, timeout=1)
        worker = DeliveryWorker(store, [notifier], clock=clock)
        for _ in range(3):
            worker.run_once()
    finally:
        store.close()
    return database


def _cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_a_rejected_token_shows_in_history_and_status(tmp_path: Path, slack: FakeSlack) -> None:
    wrong = "xoxb-0000-1111-revokedsecret"
    database = str(_deliver(tmp_path, slack, wrong))
    error = (
        "slack: slack chat.postMessage: invalid_auth (the bot token was rejected; check"
        " CANARY_SLACK_TOKEN)"
    )
    history = json.loads(_cli("history", KEY, "--database", database, "-o", "json"))
    notes = [e for e in history["events"] if e["kind"] == "notification"]
    assert [(n["event"], n["status"], n["attempts"], n["error"]) for n in notes] == [
        ("started", "failed", 1, error),
        ("holding", "failed", 1, error),
    ]
    [status] = json.loads(_cli("status", KEY, "--database", database, "-o", "json"))
    assert status["notifications"]["queued"] == 0
    assert status["notifications"]["failed"] == 2
    assert status["notifications"]["problems"][-1]["error"] == error
    text = _cli("status", KEY, "--database", database)
    assert f"notifications: 2 failed ({error})" in " ".join(text.split())
    shown = _cli("history", KEY, "--database", database)
    assert "notify started" in shown and "invalid_auth" in shown
    for output in (text, shown, json.dumps(history), json.dumps(status)):
        assert wrong not in output and "xoxb-" not in output


def test_a_slack_outage_shows_messages_queued_with_the_error(
    tmp_path: Path, slack: FakeSlack
) -> None:
    slack.fail("chat.postMessage", *[fake_slack.status(503)] * 3)
    database = str(_deliver(tmp_path, slack, TOKEN))
    [status] = json.loads(_cli("status", KEY, "--database", database, "-o", "json"))
    assert status["notifications"]["queued"] == 2
    assert status["notifications"]["failed"] == 0
    [problem] = status["notifications"]["problems"]
    assert (problem["event"], problem["status"]) == ("started", "pending")
    assert problem["error"].startswith("slack: slack chat.postMessage: Slack failed (HTTP 503")
    text = " ".join(_cli("status", KEY, "--database", database).split())
    assert "notifications: 2 queued, retrying (slack: slack chat.postMessage" in text
    history = json.loads(_cli("history", KEY, "--database", database, "-o", "json"))
    notes = [(e["event"], e["status"]) for e in history["events"] if e["kind"] == "notification"]
    assert notes == [("started", "pending"), ("holding", "pending")]


def test_the_demo_shows_the_slack_messages_with_their_evidence(tmp_path: Path) -> None:
    rolled_back = " ".join(_cli("demo", "--database", str(tmp_path / "r.db")).split())
    assert "Slack #support-bot · rolled-back" in rolled_back
    assert "@U024BE7LH Traffic is back on v6: refusal-rate failed in cohort non-english." in (
        rolled_back.replace(" │ ", " ")
    )
    for part in ("Baseline v6:", "Candidate v7:", "Limit: maxIncrease", "Interval:", "PromQL"):
        assert part in rolled_back
    promoted = " ".join(
        _cli("demo", "--scenario", "healthy", "--database", str(tmp_path / "h.db")).split()
    )
    assert "Slack #support-bot · promoted" in promoted
    assert "🎉 Promoted: llm/support-bot-v7" in promoted
    assert "Promoted after 1h55m: v7 now takes all traffic" in promoted
    assert "Per cohort (candidate vs baseline)" in promoted
    store = SqlStore(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        assert {m.status for m in store.outbox("llm/support-bot-v7")} == {"sent"}
    finally:
        store.close()
