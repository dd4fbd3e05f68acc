"""Acting from Slack: buttons on the status message, `POST /slack/actions`, over real HTTP.

The rollout runs on the real executor (memory router, a judge that passes),
its messages go through the real delivery worker and `SlackNotifier` to the
local Slack API server, and the presses are Slack's documented payloads,
signed, posted to the controller's real API server. The store is real
Postgres (and SQLite where said).

Done when: a signed Abort from an allowed user rolls the rollout back at its
next tick and the thread shows it; unsigned, stale, forged and disallowed
requests change nothing; a replayed action produces exactly one command.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from controller.analysis.verdicts import Verdict
from controller.api import ApiServer, Readiness
from controller.api.slack_actions import SlackActions
from controller.api.slack_buttons import buttons
from controller.app import ManualCommands
from controller.engine.state import Cell, Look, RolloutState
from controller.notify import DeliveryWorker, SlackNotifier
from controller.notify.slack import web_client
from controller.policy import ModelRollout, load_text
from controller.routing import MemoryRouter, RouteTarget
from controller.runtime.executor import Executor, Observation
from controller.store.records import ManualCommand
from controller.store.sql import SqlStore, migrate
from tests.api import slack as requests
from tests.api.slack import SECRET, block_actions, form, post, sign, user, view_submission
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.notify import fake_slack
from tests.notify.fake_slack import TOKEN, FakeSlack
from tests.policy.base import policy

OWNER = "U024BE7LH"  # owners.slack.mention
OPERATOR = "W0OPS0001"  # owners.slack.operators
STRANGER = "U0STRANGE"
OWNERS = (
    '  owners: {slack: {channel: "#bot", mention: [U024BE7LH], operators: [W0OPS0001]}}\n  traffic:'
)
ROLLOUT = load_text(policy(("  traffic:", OWNERS)))[0].rollout
KEY = ROLLOUT.key
CHANNEL = "C0BOT0001"
T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


@dataclass
class Clock:
    at: datetime = T0

    def now(self) -> datetime:
        return self.at


class Passing:
    """Every cell passes: the rollout only stops because a human says so."""

    def observe(self, rollout: ModelRollout, state: RolloutState, now: datetime) -> Observation:
        return Observation(Look((Cell("refusal-rate", "overall", Verdict.PASS),)))


@dataclass
class World:
    """One rollout, its Slack thread, and the controller's endpoint."""

    store: SqlStore
    slack: FakeSlack
    actions: SlackActions
    server: ApiServer
    clock: Clock = field(default_factory=Clock)
    route: MemoryRouter = field(default_factory=lambda: MemoryRouter(RouteTarget.of(ROLLOUT)))

    @property
    def url(self) -> str:
        return f"{self.server.url}/slack/actions"

    def tick(self) -> None:
        Executor(self.store, self.clock).tick(ROLLOUT, self.route, Passing())
        self.clock.at += timedelta(minutes=1)

    def deliver(self) -> None:
        notifier = SlackNotifier(
            web_client(SecretStr(TOKEN), base_url=self.slack.base_url), controls=buttons
        )
        DeliveryWorker(self.store, [notifier], clock=self.clock).run_once()

    def top(self) -> dict[str, Any]:
        return next(m for m in self.slack.posted(CHANNEL) if m["thread_ts"] is None)

    def replies(self) -> list[str]:
        return [str(m["text"]) for m in self.slack.posted(CHANNEL) if m["thread_ts"] is not None]

    def button(self, label: str) -> dict[str, Any]:
        block = next(b for b in self.top()["blocks"] if b.get("block_id") == "canary_actions")
        return next(e for e in block["elements"] if e["text"]["text"] == label)

    def labels(self) -> list[str]:
        blocks = [b for b in self.top()["blocks"] if b.get("block_id") == "canary_actions"]
        return [e["text"]["text"] for b in blocks for e in b["elements"]]

    def press(self, label: str, who: str = OWNER, **extra: Any) -> bytes:
        payload = block_actions(
            self.top(),
            CHANNEL,
            self.button(label),
            who=user(who, {OWNER: "jane", OPERATOR: "omar"}.get(who, "mallory")),
            response_url=f"{self.slack.hooks_url}actions/T0CAG/1/abc",
            **extra,
        )
        return form(payload)

    def send(self, body: bytes, headers: dict[str, str] | None = None) -> requests.Reply:
        reply = post(self.url, body, sign(body) if headers is None else headers)
        assert self.actions.wait(30)
        return reply

    def commands(self) -> list[ManualCommand]:
        return list(self.store.commands(KEY))


def endpoint(store: SqlStore, slack: FakeSlack, clock: Clock) -> SlackActions:
    return SlackActions(
        signing_secret=SECRET,
        client=web_client(SecretStr(TOKEN), base_url=slack.base_url),
        store=store,
        submit=ManualCommands(store),
        response_url_prefix=slack.hooks_url,
        clock=clock,
    )


@pytest.fixture(params=["postgres", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_test_url")
    else:
        url = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(url)
    return url


@pytest.fixture
def world(database: str) -> Iterator[World]:
    store = SqlStore(database)
    clock = Clock()
    with fake_slack.running() as slack:
        actions = endpoint(store, slack, clock)
        readiness = Readiness({"store": lambda: True})
        server = ApiServer(
            CollectorRegistry(), readiness, port=0, health=False, metrics=False, slack=actions
        )
        with server:
            w = World(store, slack, actions, server, clock)
            w.tick()  # started: step 1
            w.deliver()
            yield w
        actions.close()
    store.close()


# --- done when: a signed Abort from an allowed user rolls back at the next tick --------


def test_a_signed_abort_from_an_owner_rolls_back_at_the_next_tick_and_the_thread_shows_it(
    world: World,
) -> None:
    assert world.labels() == ["Promote next step", "Pause", "Abort"]
    assert world.send(world.press("Abort")) == requests.Reply(200, "")
    (opened,) = world.slack.views
    assert opened["view"]["callback_id"] == "canary_abort"
    assert world.commands() == []  # the modal asks first

    submitted = form(
        view_submission(opened["view"], who=user(OWNER, "jane"), reason="answers in French")
    )
    assert world.send(submitted) == requests.Reply(200, "")
    (command,) = world.commands()
    assert (command.command, command.actor, command.reason) == (
        "abort",
        "jane (Slack U024BE7LH)",
        "answers in French",
    )
    assert command.args["slackUserId"] == OWNER
    assert command.args["slackUserName"] == "jane"
    assert world.replies()[-1].startswith(":no_entry: <@U024BE7LH> asked to abort *llm/bot-v2*")

    assert world.route.observe().weight == 5
    world.tick()  # the next tick applies it: traffic back on the baseline
    stored = world.store.get(KEY)
    assert stored is not None and stored.phase == "Aborted"
    assert world.route.observe().weight == 0
    assert world.route.backend == "bot-v1"
    (transition,) = [t for t in world.store.transitions(KEY) if t.to_phase == "Aborted"]
    assert (transition.actor, transition.cause) == ("jane (Slack U024BE7LH)", "Manual")

    world.deliver()
    aborted = world.replies()[-1]
    assert "Aborted by jane (Slack U024BE7LH): answers in French." in aborted
    assert world.labels() == []  # an ended rollout has no buttons


def test_an_operator_pauses_and_resumes_with_the_buttons_valid_in_each_phase(
    world: World,
) -> None:
    assert world.send(world.press("Pause", OPERATOR)).status == 200
    (pause,) = world.commands()
    assert (pause.command, pause.actor) == ("pause", "omar (Slack W0OPS0001)")
    assert any(
        "Pause requested by <@W0OPS0001>" in e["text"]
        for b in world.top()["blocks"]
        if b["type"] == "context"
        for e in b["elements"]
    )  # the pressed message says so in place of its buttons
    assert world.labels() == []
    world.tick()
    world.deliver()
    assert world.labels() == ["Promote next step", "Resume", "Abort"]
    assert world.send(world.press("Resume", OPERATOR)).status == 200
    world.tick()
    stored = world.store.get(KEY)
    assert stored is not None and stored.phase == "Progressing"
    assert [c.command for c in world.commands()] == ["pause", "resume"]


# --- done when: unsigned, stale, forged and disallowed requests change nothing -------


def _signed_badly(body: bytes, how: str) -> dict[str, str]:
    if how == "unsigned":
        return {"Content-Type": "application/x-www-form-urlencoded"}
    if how == "stale":
        return sign(body, at=int(time.time()) - 301)
    if how == "future":
        return sign(body, at=int(time.time()) + 301)
    if how == "forged":
        return sign(body, secret="not-the-signing-secret")
    if how == "tampered":  # signed, then the body changed
        return sign(body.replace(b"Pause", b"Pausf"))
    if how == "no-timestamp":
        return {k: v for k, v in sign(body).items() if k != "X-Slack-Request-Timestamp"}
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["unsigned", "stale", "future", "forged", "tampered", "no-timestamp"]
)
def test_a_request_without_slacks_valid_signature_gets_401_and_changes_nothing(
    world: World, how: str
) -> None:
    before = len(world.slack.calls)
    body = world.press("Pause")
    reply = world.send(body, _signed_badly(body, how))
    assert reply.status == 401
    assert reply.body.startswith("unauthorized: ")
    assert world.commands() == []
    assert len(world.slack.calls) == before  # not even an answer in Slack
    assert world.slack.responses == []


@pytest.mark.parametrize("label", ["Pause", "Abort"])
def test_a_user_not_among_the_owners_is_told_so_and_nothing_happens(
    world: World, label: str
) -> None:
    assert world.send(world.press(label, STRANGER)).status == 200
    (answer,) = world.slack.responses
    assert answer["response_type"] == "ephemeral"
    assert answer["replace_original"] is False
    assert answer["text"].startswith(":no_entry_sign: Not allowed: you are not allowed to act")
    assert world.commands() == []
    assert world.slack.views == []  # no Abort form either
    assert world.labels() == ["Promote next step", "Pause", "Abort"]


def test_a_stranger_submitting_an_abort_form_changes_nothing(world: World) -> None:
    world.send(world.press("Abort"))
    (opened,) = world.slack.views
    body = form(view_submission(opened["view"], who=user(STRANGER, "mallory"), reason="x"))
    assert world.send(body).status == 200
    assert world.commands() == []
    (ephemeral,) = world.slack.ephemerals
    assert (ephemeral["user"], ephemeral["channel"]) == (STRANGER, CHANNEL)
    assert "not allowed" in ephemeral["text"]


def test_a_command_that_does_not_apply_in_the_phase_is_refused_with_the_reason(
    world: World,
) -> None:
    body = world.press("Pause")
    world.send(body)
    world.tick()  # paused now; the same button pressed on a stale copy is a new request
    payload = _payload_of(body)
    payload["actions"][0]["value"] = payload["actions"][0]["value"].replace(
        '"shown":"', '"shown":"older#'
    )
    world.send(form(payload))
    assert [c.command for c in world.commands()] == ["pause"]
    assert world.slack.responses[-1]["text"].startswith("Nothing was done: cannot pause")


# --- done when: a replayed action produces exactly one command -------------------------


def test_slacks_retries_and_a_double_press_record_one_command(world: World) -> None:
    first = world.press("Pause")
    # pressed twice on the same message, before Slack showed the first press's answer
    again = world.press("Pause", trigger="99999.88888.ffff", action_ts="1548426419.000001")
    assert world.send(first).status == 200
    for retry in (1, 2):  # Slack did not see the first answer in time
        assert world.send(first, sign(first, retry=retry)).status == 200
    assert world.send(again).status == 200
    (command,) = world.commands()
    assert command.command == "pause"
    asked = [r for r in world.replies() if "asked to pause" in r]
    assert len(asked) == 1  # the thread says it once
    # Slack's retries are the same press: silent; the second press is told it was done
    (answer,) = world.slack.responses
    assert answer["text"].startswith("Already asked: pause by jane (Slack U024BE7LH) at ")


def test_an_abort_form_submitted_twice_records_one_command(world: World) -> None:
    world.send(world.press("Abort"))
    world.send(world.press("Abort", trigger="2.2.2", action_ts="2.2"))
    first, second = world.slack.views
    for opened in (first, second, second):
        body = form(view_submission(opened["view"], who=user(OWNER, "jane"), reason="bad"))
        assert world.send(body).status == 200
    assert [c.command for c in world.commands()] == ["abort"]


def test_two_replicas_receiving_the_same_press_record_one_command(
    postgres_test_url: str,  # noqa: F811
) -> None:
    migrate(postgres_test_url)
    clock = Clock()
    with fake_slack.running() as slack:
        stores = [SqlStore(postgres_test_url) for _ in range(2)]
        replicas = [endpoint(s, slack, clock) for s in stores]
        servers = [
            ApiServer(
                CollectorRegistry(),
                Readiness({"store": lambda: True}),
                port=0,
                health=False,
                metrics=False,
                slack=r,
            )
            for r in replicas
        ]
        for server in servers:
            server.start()
        try:
            world = World(stores[0], slack, replicas[0], servers[0], clock)
            world.tick()
            world.deliver()
            pressed = _payload_of(world.press("Pause"))
            value = pressed["actions"][0]["value"]
            for round_ in range(5):  # five presses, each arriving at both replicas at once
                pressed["actions"][0]["value"] = value.replace('"shown":"', f'"shown":"{round_}#')
                body = form(pressed)
                statuses = _at_once([f"{s.url}/slack/actions" for s in servers], body, sign(body))
                assert statuses == [200, 200]
            for replica in replicas:
                assert replica.wait(30)
            commands = stores[1].commands(KEY)
            assert [c.command for c in commands] == ["pause"] * 5  # one per press
            assert len({c.dedupe_key for c in commands}) == 5
            assert len([r for r in world.replies() if "asked to pause" in r]) == 5
        finally:
            for server in servers:
                server.stop()
            for replica in replicas:
                replica.close()
            for s in stores:
                s.close()


def _at_once(urls: list[str], body: bytes, headers: dict[str, str]) -> list[int]:
    """POST the same request to every URL at the same moment; the statuses."""
    barrier = threading.Barrier(len(urls))
    statuses: list[int] = [0] * len(urls)

    def send(i: int) -> None:
        barrier.wait()
        statuses[i] = post(urls[i], body, headers).status

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(urls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


# --- clear 400s ----------------------------------------------------------------------


def _payload_of(body: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(parse_qs(body.decode())["payload"][0])
    return parsed


@pytest.mark.parametrize(
    ("change", "says"),
    [
        pytest.param(lambda b: b"payload=%7Bnot+json", "`payload` is not JSON", id="malformed"),
        pytest.param(lambda b: b"text=hello", "exactly one `payload`", id="no-payload"),
        pytest.param(lambda b: b"payload=1&payload=2", "exactly one `payload`", id="two-payloads"),
        pytest.param(lambda b: b"payload=%5B%5D", "not an object with a `type`", id="a-list"),
        pytest.param(
            lambda b: form({**_payload_of(b), "type": "shortcut"}),
            "unknown action type 'shortcut'",
            id="unknown-type",
        ),
        pytest.param(
            lambda b: form(
                {
                    **_payload_of(b),
                    "actions": [{**_payload_of(b)["actions"][0], "action_id": "deploy_prod"}],
                }
            ),
            "unknown action 'deploy_prod'",
            id="unknown-action",
        ),
        pytest.param(
            lambda b: form(
                {
                    **_payload_of(b),
                    "actions": [{**_payload_of(b)["actions"][0], "value": "llm/bot-v2"}],
                }
            ),
            "not a canary-controller button value",
            id="foreign-value",
        ),
        pytest.param(
            lambda b: form({**_payload_of(b), "response_url": "http://10.0.0.1/steal"}),
            "response_url is not Slack's",
            id="foreign-response-url",
        ),
        pytest.param(
            lambda b: form({**_payload_of(b), "user": {"id": "not-a-user"}}),
            "payload.block_actions.user.id",
            id="bad-user",
        ),
    ],
)
def test_a_signed_request_that_is_not_a_known_action_gets_a_clear_400(
    world: World, change: Any, says: str
) -> None:
    body = change(world.press("Pause"))
    reply = world.send(body)
    assert reply.status == 400
    assert reply.body.startswith("bad request: ")
    assert says in reply.body
    assert world.commands() == []


def test_a_body_too_large_gets_400_before_it_is_read(world: World) -> None:
    body = b"payload=" + b"x" * (64 * 1024)
    reply = world.send(body)
    assert reply.status == 400
    assert "larger than 65536" in reply.body


def test_only_post_is_answered(world: World) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(world.url, timeout=10)
    caught.value.close()
    assert caught.value.code == 405
    assert caught.value.headers["Allow"] == "POST"


def test_an_abort_form_without_a_reason_asks_for_one(world: World) -> None:
    world.send(world.press("Abort"))
    (opened,) = world.slack.views
    body = form(view_submission(opened["view"], who=user(OWNER, "jane"), reason="  "))
    reply = world.send(body)
    assert reply.status == 200
    assert json.loads(reply.body) == {
        "response_action": "errors",
        "errors": {"reason": "Say why you abort."},
    }
    assert world.commands() == []
