"""The composition root delivers notifications: sinks from settings, a worker beside the ticks.

`run()` is started for real (directory source, the Gateway API router on the kmock
API server, SQLite) with Slack and a webhook configured; the rollout's first
tick queues "started", and the delivery worker, on its own thread, brings it to
both sinks while the controller runs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from controller.app import notifiers, run
from controller.demo import DEMO_POLICY
from controller.notify import SlackNotifier, WebhookNotifier
from controller.settings import Settings
from controller.store.sql import SqlStore
from tests.kube import KubeApi
from tests.notify import fake_slack, hook_receiver
from tests.notify.fake_slack import TOKEN, FakeSlack
from tests.notify.hook_receiver import Hook
from tests.routing.cases import HTTP_ROUTE, HTTP_ROUTES

KEY = "llm/support-bot-v7"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack.running(FakeSlack(channels={"support-bot": "C0SUPPORT1"})) as fake:
        yield fake


@pytest.fixture
def hook() -> Iterator[Hook]:
    with hook_receiver.running() as receiver:
        yield receiver


def test_the_sinks_follow_the_settings(slack: FakeSlack, hook: Hook) -> None:
    assert notifiers(Settings(slack_token=None, webhook_url=None)) == []
    both = notifiers(
        Settings(
            slack_token=SecretStr(TOKEN),
            slack_base_url=slack.base_url,
            webhook_url=SecretStr(hook.url),
        )
    )
    assert [type(n) for n in both] == [SlackNotifier, WebhookNotifier]
    slack_sink = both[0]
    assert isinstance(slack_sink, SlackNotifier)
    assert slack_sink.client.base_url == slack.base_url
    assert slack_sink.check() == "canary in Acme"


@pytest.mark.usefixtures("signals_restored")
def test_run_delivers_the_outbox_in_the_background(
    tmp_path: Path, slack: FakeSlack, hook: Hook
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "support-bot.yaml").write_text(DEMO_POLICY)
    database = f"sqlite:///{tmp_path / 'canary.db'}"
    stop = threading.Event()

    def stop_once_delivered() -> None:
        deadline = time.monotonic() + 60
        while not (slack.posted("C0SUPPORT1") and hook.bodies) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()

    with KubeApi() as kube:
        kube.server.register(HTTP_ROUTES, "HTTPRoute")
        route = {k: v for k, v in HTTP_ROUTE.items() if k != "status"}
        kube.server.put(HTTP_ROUTES, route)
        settings = Settings(
            source="directory",
            policy_dir=policies,
            database_url=SecretStr(database),
            kubeconfig=kube.write_kubeconfig(tmp_path / "kubeconfig"),
            prometheus_url="http://127.0.0.1:9",  # no metrics: the first tick needs none
            slack_token=SecretStr(TOKEN),
            slack_base_url=slack.base_url,
            webhook_url=SecretStr(hook.url),
            replica_id="wiring-test",
            sync_seconds=0.2,
            api_host="127.0.0.1",
            api_port=0,
        )
        watcher = threading.Thread(target=stop_once_delivered)
        watcher.start()
        try:
            run(settings, stop=stop)  # returns once `stop` is set and everything stopped
        finally:
            stop.set()
            watcher.join(5)
    [top] = slack.posted("C0SUPPORT1")
    assert top["metadata"]["event_payload"]["event"] == "started"
    assert top["blocks"][0]["text"]["text"] == f":rocket: Started: {KEY}"
    assert [b["event"] for b in hook.bodies] == ["started"]
    store = SqlStore(database)
    try:
        [message] = store.outbox(KEY)
        assert (message.event, message.status) == ("started", "sent")
        assert {d.sink: d.status for d in store.deliveries(KEY)} == {
            "slack": "sent",
            "webhook": "sent",
        }
        thread = store.thread(KEY, "slack")
        assert thread is not None and (thread.channel, thread.ts) == ("C0SUPPORT1", top["ts"])
    finally:
        store.close()
