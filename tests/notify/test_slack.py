"""SlackNotifier through the real slack-sdk WebClient, against a local fake Slack."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from controller.errors import PermanentError, TransientError
from controller.notify import Notification, Receipt, SlackNotifier, Thread
from controller.notify.messages import slack_message, status_message
from controller.settings import Settings
from tests.notify import fake_slack
from tests.notify.fake_slack import HANG, LOSE_ANSWER, TOKEN, FakeSlack
from tests.notify.samples import ROLLOUT, T0, outbox, payload, rollback

CHANNEL = "C0BOT0001"


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with fake_slack.running() as fake:
        yield fake


def notifier(slack: FakeSlack, token: str = TOKEN) -> SlackNotifier:
    return SlackNotifier.connect(SecretStr(token), base_url=slack.base_url, timeout=1)


def started() -> Notification:
    return Notification.of(
        ROLLOUT,
        outbox("started", payload("started", "step 1: 1% to candidate"), tick=1),
        steps=5,
    )


def metadata(note: Notification) -> dict[str, Any]:
    return {
        "event_type": "canary_rollout_event",
        "event_payload": {"dedupe_key": note.dedupe_key, "rollout": ROLLOUT, "event": note.event},
    }


def test_the_first_message_opens_the_thread(slack: FakeSlack) -> None:
    note = started()
    receipt = notifier(slack).deliver(note, None, retry=False)
    [top] = slack.posted()
    assert receipt == Receipt(top["ts"], opened=Thread(CHANNEL, top["ts"]))
    [call] = slack.calls_of("chat.postMessage")
    message = slack_message(note)
    assert call == {
        "channel": "#bot",
        "text": message.text,
        "blocks": list(message.blocks),
        "metadata": metadata(note),
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert slack.calls_of("chat.update") == []


def test_a_rollback_is_a_reply_that_mentions_the_owners_and_updates_the_top(
    slack: FakeSlack,
) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    assert opened is not None
    note = rollback()
    receipt = client.deliver(note, opened, retry=False)
    top, reply = slack.posted()
    assert receipt == Receipt(reply["ts"])
    [call] = slack.calls_of("chat.postMessage")[1:]
    assert call == {
        "channel": CHANNEL,
        "thread_ts": top["ts"],
        "reply_broadcast": True,  # a rollback shows in the channel too
        "text": slack_message(note).text,
        "blocks": list(slack_message(note).blocks),
        "metadata": metadata(note),
        "unfurl_links": False,
        "unfurl_media": False,
    }
    assert call["text"].startswith("<@U024BE7LH> Rolled back: llm/support-bot-v7")
    assert call["blocks"][1]["text"]["text"].startswith("<@U024BE7LH> ")
    [update] = slack.calls_of("chat.update")
    assert update == {
        "channel": CHANNEL,
        "ts": top["ts"],
        "text": status_message(note).text,
        "blocks": list(status_message(note).blocks),
    }
    assert top["edited"] and top["blocks"][0]["text"]["text"].endswith(": RolledBack")


def test_an_ordinary_reply_is_not_broadcast(slack: FakeSlack) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    step = Notification.of(
        ROLLOUT, outbox("step-advanced", payload("step-advanced", "step 2: 5% to candidate"))
    )
    client.deliver(step, opened, retry=False)
    [call] = slack.calls_of("chat.postMessage")[1:]
    assert call["thread_ts"] == slack.posted()[0]["ts"]
    assert "reply_broadcast" not in call


@pytest.mark.parametrize(
    ("fault", "error", "text", "retry_after"),
    [
        pytest.param(
            fake_slack.ratelimited(7),
            TransientError,
            "slack chat.postMessage: rate limited (HTTP 429); retry after 7s",
            7.0,
            id="429",
        ),
        pytest.param(
            fake_slack.status(500),
            TransientError,
            "slack chat.postMessage: Slack failed (HTTP 500, Received a response in a non-JSON"
            " format: <html>upstream connect error</html>)",
            None,
            id="500",
        ),
        pytest.param(
            fake_slack.error("service_unavailable"),
            TransientError,
            "slack chat.postMessage: Slack failed (HTTP 200, service_unavailable)",
            None,
            id="slack-trouble",
        ),
        pytest.param(
            fake_slack.error("channel_not_found"),
            PermanentError,
            "slack chat.postMessage: channel_not_found (no such channel, or the bot cannot see"
            " it; invite the bot)",
            None,
            id="channel-not-found",
        ),
        pytest.param(
            fake_slack.error("invalid_blocks"),
            PermanentError,
            "slack chat.postMessage: invalid_blocks",
            None,
            id="unknown-error",
        ),
    ],
)
def test_slack_errors_are_sorted_into_transient_and_permanent(
    slack: FakeSlack,
    fault: fake_slack.Fault,
    error: type[Exception],
    text: str,
    retry_after: float | None,
) -> None:
    slack.fail("chat.postMessage", fault)
    with pytest.raises(error) as caught:
        notifier(slack).deliver(started(), None, retry=False)
    assert str(caught.value) == text
    if isinstance(caught.value, TransientError):
        assert caught.value.retry_after == retry_after
    assert slack.posted() == []


def test_a_rejected_token_is_permanent_and_never_shown(slack: FakeSlack) -> None:
    wrong = "xoxb-9999-8888-wrongsecret"
    with pytest.raises(PermanentError) as caught:
        notifier(slack, wrong).deliver(started(), None, retry=False)
    assert str(caught.value) == (
        "slack chat.postMessage: invalid_auth (the bot token was rejected; check"
        " CANARY_SLACK_TOKEN)"
    )
    chain = [caught.value, caught.value.__cause__]
    assert all(wrong not in str(e) for e in chain)
    assert slack.calls[0].authorization == f"Bearer {wrong}"  # it was sent, only to Slack


def test_a_hanging_slack_times_out_as_transient(slack: FakeSlack) -> None:
    slack.fail("chat.postMessage", HANG)
    began = time.monotonic()
    with pytest.raises(TransientError, match=r"slack chat.postMessage: no answer \(TimeoutError"):
        notifier(slack).deliver(started(), None, retry=False)
    assert time.monotonic() - began < 3


def test_a_retry_finds_a_reply_already_in_the_thread(slack: FakeSlack) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    assert opened is not None
    slack.fail("chat.postMessage", LOSE_ANSWER)  # posted, but the answer never comes
    with pytest.raises(TransientError):
        client.deliver(rollback(), opened, retry=False)
    assert len(slack.posted()) == 2
    receipt = client.deliver(rollback(), opened, retry=True)
    assert receipt == Receipt(slack.posted()[1]["ts"])
    assert len(slack.posted()) == 2  # not posted twice
    [lookup] = slack.calls_of("conversations.replies")
    assert lookup["channel"] == CHANNEL
    assert lookup["ts"] == opened.ts
    assert lookup["include_all_metadata"] in ("1", "true")
    assert slack.calls_of("chat.update")[-1]["ts"] == opened.ts  # the top is still updated


def test_a_retry_finds_the_message_that_opened_the_thread(slack: FakeSlack) -> None:
    client = notifier(slack)
    slack.fail("chat.postMessage", LOSE_ANSWER)
    with pytest.raises(TransientError):
        client.deliver(started(), None, retry=False)
    receipt = client.deliver(started(), None, retry=True)
    [top] = slack.posted()
    assert receipt == Receipt(top["ts"], opened=Thread(CHANNEL, top["ts"]))
    assert slack.calls_of("conversations.list")  # "#bot" is looked up by name, once
    [history] = slack.calls_of("conversations.history")
    assert history["channel"] == CHANNEL
    assert float(history["oldest"]) == (T0.timestamp() + 60 - 300)  # 5 min before queueing


def test_a_retry_posts_when_the_message_is_not_there(slack: FakeSlack) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    receipt = client.deliver(rollback(), opened, retry=True)
    top, reply = slack.posted()
    assert receipt.ref == reply["ts"]
    assert reply["thread_ts"] == top["ts"]


def test_a_top_message_that_cannot_be_updated_does_not_fail_the_reply(slack: FakeSlack) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    slack.fail("chat.update", fake_slack.error("cant_update_message"))
    assert client.deliver(rollback(), opened, retry=False).ref == slack.posted()[1]["ts"]
    slack.fail("chat.update", fake_slack.ratelimited(3))
    with pytest.raises(TransientError) as caught:
        client.deliver(rollback(), opened, retry=False)
    assert caught.value.retry_after == 3.0


def test_a_rollout_without_a_channel_is_skipped(slack: FakeSlack) -> None:
    note = Notification.of(ROLLOUT, outbox("started", payload("started", "go", channel=None)))
    assert notifier(slack).deliver(note, None, retry=False) == Receipt(skipped=True)
    assert slack.calls == []
    fallback = SlackNotifier.connect(
        SecretStr(TOKEN), base_url=slack.base_url, timeout=1, default_channel="#bot"
    )
    assert fallback.deliver(note, None, retry=False).opened is not None


def test_the_token_is_checked_at_startup_from_settings(slack: FakeSlack) -> None:
    settings = Settings(slack_token=SecretStr(TOKEN), slack_base_url=slack.base_url)
    assert SlackNotifier.from_settings(settings).check() == "canary in Acme"
    bad = Settings(slack_token=SecretStr("xoxb-0-0-nope"), slack_base_url=slack.base_url)
    with pytest.raises(PermanentError, match="invalid_auth"):
        SlackNotifier.from_settings(bad).check()
    with pytest.raises(PermanentError, match="no Slack token configured"):
        SlackNotifier.from_settings(Settings(slack_token=None))


def test_a_retry_that_may_not_look_posts_rather_than_losing_the_message(
    slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    client = notifier(slack)
    opened = client.deliver(started(), None, retry=False).opened
    slack.fail("conversations.replies", fake_slack.error("missing_scope"))
    receipt = client.deliver(rollback(), opened, retry=True)
    top, reply = slack.posted()
    assert receipt.ref == reply["ts"] and reply["thread_ts"] == top["ts"]
    assert "cannot look for llm/support-bot-v7#" in caplog.text
    assert "missing_scope" in caplog.text
