"""Slack actions, wired: the buttons per phase, the settings, the port, the store's key.

The buttons come from the same table `canaryctl` obeys (a table test here);
the signing secret is read like every secret (a variable or a file in the
secrets directory); `/slack/actions` is served on the API port or alone on
its own port (never beside `/metrics` then); and the store keeps one command
per key, on every store.
"""

from __future__ import annotations

import re
import textwrap
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from controller.api import Readiness
from controller.api.slack_buttons import AbortRef, ActionId, ButtonRef, abort_modal, buttons
from controller.app import api_servers, notifiers, slack_actions
from controller.engine.state import CommandKind
from controller.errors import PermanentError
from controller.notify import Notification, SlackNotifier
from controller.settings import Settings, load_settings
from controller.store import ManualCommand
from controller.store.memory import MemoryStore
from controller.store.records import StoredRollout, TickWrite
from controller.store.sql import SqlStore, migrate
from controller.telemetry import ControllerMetrics
from tests.databases import postgres_test_url  # noqa: F401  (fixture)
from tests.notify.samples import T0, outbox, payload

# --- the buttons, per phase -------------------------------------------------------------


def note(phase: str) -> Notification:
    message = outbox("step-advanced", payload("step-advanced", "step 2", phase=phase))
    return Notification.of("llm/support-bot-v7", message)


@pytest.mark.parametrize(
    ("phase", "labels"),
    [
        pytest.param("Pending", ["Promote next step", "Pause", "Abort"], id="pending"),
        pytest.param("Shadowing", ["Promote next step", "Pause", "Abort"], id="shadowing"),
        pytest.param("Progressing", ["Promote next step", "Pause", "Abort"], id="progressing"),
        pytest.param("Paused", ["Promote next step", "Resume", "Abort"], id="paused"),
        pytest.param("Promoted", [], id="promoted"),
        pytest.param("RolledBack", [], id="rolled-back"),
        pytest.param("Aborted", [], id="aborted"),
        pytest.param("Failed", [], id="failed"),
        pytest.param("Sideways", [], id="a-phase-of-a-newer-version"),
    ],
)
def test_the_status_message_offers_the_commands_valid_in_its_phase(
    phase: str, labels: list[str]
) -> None:
    blocks = buttons(note(phase))
    shown = [e["text"]["text"] for b in blocks for e in b["elements"]]
    assert shown == labels
    for block in blocks:
        for element in block["elements"]:
            ref = ButtonRef.decode(element["value"])
            assert ref == ButtonRef(rollout="llm/support-bot-v7", shown=note(phase).dedupe_key)


def test_a_button_is_one_request_per_message_and_command() -> None:
    first = ButtonRef(rollout="llm/bot", shown="llm/bot#t0#3#1#started")
    later = ButtonRef(rollout="llm/bot", shown="llm/bot#t0#9#1#paused")
    keys = {
        first.dedupe_key(CommandKind.PAUSE),
        first.dedupe_key(CommandKind.ABORT),
        later.dedupe_key(CommandKind.PAUSE),
    }
    assert len(keys) == 3
    assert first.dedupe_key(CommandKind.PAUSE) == ButtonRef.decode(first.encode()).dedupe_key(
        CommandKind.PAUSE
    )
    assert all(len(k) <= 255 for k in keys)  # fits the store's column


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("llm/bot", id="not-json"),
        pytest.param('{"rollout": "llm/bot"}', id="no-message"),
        pytest.param('{"rollout": "bot", "shown": "k"}', id="no-namespace"),
        pytest.param('{"rollout": "llm/bot", "shown": "k", "run": "rm"}', id="extra-field"),
    ],
)
def test_a_value_this_controller_did_not_write_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a canary-controller button value"):
        ButtonRef.decode(value)


def test_the_abort_modal_asks_for_a_reason_and_escapes_the_rollout() -> None:
    ref = AbortRef(button=ButtonRef(rollout="llm/<b>", shown="k"), channel="C1", message_ts="1.2")
    modal = abort_modal(ref)
    assert modal["callback_id"] == ActionId.ABORT.value
    assert AbortRef.decode(modal["private_metadata"]) == ref
    assert "*llm/&lt;b&gt;*" in modal["blocks"][0]["text"]["text"]
    (field,) = [b for b in modal["blocks"] if b["type"] == "input"]
    assert field["element"]["type"] == "plain_text_input"
    assert field.get("optional", False) is False


# --- settings and wiring ---------------------------------------------------------------


def test_the_signing_secret_is_read_from_the_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "slack_signing_secret").write_text("8f742231b10e8888abcd99yyyzzz85a5\n")
    monkeypatch.setenv("CANARY_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("CANARY_SLACK_SIGNING_SECRET", raising=False)
    settings = load_settings()
    assert settings.slack_signing_secret is not None
    assert settings.slack_signing_secret.get_secret_value().strip() == (
        "8f742231b10e8888abcd99yyyzzz85a5"
    )
    assert "8f742231" not in repr(settings)
    assert settings.redacted()["slack_signing_secret"] == "***"


def test_buttons_only_with_a_signing_secret() -> None:
    plain = notifiers(Settings(slack_token=SecretStr("xoxb-1")))
    acting = notifiers(
        Settings(slack_token=SecretStr("xoxb-1"), slack_signing_secret=SecretStr("s3cret"))
    )
    assert isinstance(plain[0], SlackNotifier) and plain[0].controls is None
    assert isinstance(acting[0], SlackNotifier) and acting[0].controls is buttons


def test_a_signing_secret_without_a_bot_token_is_refused_at_start() -> None:
    settings = Settings(slack_signing_secret=SecretStr("s3cret"), slack_token=None)
    with pytest.raises(PermanentError, match="CANARY_SLACK_TOKEN"):
        slack_actions(settings, MemoryStore())
    assert slack_actions(Settings(), MemoryStore()) is None


def _status(base: str, path: str) -> int:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


@pytest.fixture
def acting() -> Settings:
    return Settings(
        api_port=0,
        slack_token=SecretStr("xoxb-1"),
        slack_signing_secret=SecretStr("s3cret"),
    )


def _served(settings: Settings) -> list[list[int]]:
    """For each server `api_servers` makes: the status of /healthz, /metrics, /slack/actions."""
    actions = slack_actions(settings, MemoryStore())
    assert actions is not None
    servers = api_servers(
        settings, ControllerMetrics().registry, Readiness({"a": lambda: True}), slack=actions
    )
    for server in servers:
        server.start()
    try:
        paths = ("/healthz", "/metrics", "/slack/actions")
        return [[_status(s.url, p) for p in paths] for s in servers]
    finally:
        for server in servers:
            server.stop()
        actions.close()


def test_slack_actions_are_served_on_the_api_port_by_default(acting: Settings) -> None:
    # GET is refused with 405: the path is there, and takes only Slack's POSTs
    assert _served(acting) == [[200, 200, 405]]


def test_slack_actions_can_have_a_port_of_their_own_without_metrics(acting: Settings) -> None:
    settings = acting.model_copy(update={"slack_actions_port": 0, "metrics_port": 0})
    assert _served(settings) == [[200, 404, 404], [404, 200, 404], [404, 404, 405]]


# --- the store keeps one command per key -------------------------------------------------


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryStore | SqlStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_test_url")
    else:
        url = f"sqlite:///{tmp_path / 'canary.db'}"
    migrate(url)
    sql = SqlStore(url)
    yield sql
    sql.close()


def _new(key: str) -> TickWrite:
    namespace, name = key.split("/")
    stored = StoredRollout(key, namespace, name, 1, "v2", "Progressing", 0, {}, {})
    return TickWrite(stored, expected_revision=None)


def test_a_command_with_a_key_is_recorded_once(store: MemoryStore | SqlStore) -> None:
    store.commit(_new("llm/a"))
    store.commit(_new("llm/b"))
    pause = ManualCommand(T0, "pause", "jane (Slack U1)", "", {"slackUserId": "U1"}, None, "k1")
    first, written = store.add_command_once("llm/a", pause)
    assert written and first.id is not None and first.dedupe_key == "k1"
    again, written_again = store.add_command_once("llm/a", replace(pause, actor="omar"))
    assert (again, written_again) == (first, False)
    # a key is unique across rollouts too: the same press cannot land twice anywhere
    elsewhere, written_elsewhere = store.add_command_once("llm/b", pause)
    assert (elsewhere, written_elsewhere) == (first, False)
    assert store.command_with_key("k1") == first
    assert store.command_with_key("k2") is None
    # commands without a key (canaryctl's) never conflict with each other
    store.add_command("llm/a", ManualCommand(T0, "resume", "alice"))
    store.add_command("llm/a", ManualCommand(T0, "resume", "alice"))
    assert [c.command for c in store.commands("llm/a")] == ["pause", "resume", "resume"]
    assert store.commands("llm/b") == []
    with pytest.raises(ValueError, match="dedupe_key"):
        store.add_command_once("llm/a", ManualCommand(T0, "pause", "jane"))


# --- the docs' app manifest --------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[2] / "docs" / "slack.md"


def test_the_documented_app_manifest_turns_interactivity_on_with_the_scopes_used() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    manifest = next(
        yaml.safe_load(textwrap.dedent(b)) for b in blocks if "display_information" in b
    )
    interactivity = manifest["settings"]["interactivity"]
    assert interactivity["is_enabled"] is True
    assert interactivity["request_url"].startswith("https://")
    assert interactivity["request_url"].endswith("/slack/actions")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    # chat.postMessage, chat.update and chat.postEphemeral need chat:write; views.open and
    # response_url need none; the history and read scopes are the notifier's (lookups)
    assert scopes == {
        "chat:write",
        "channels:history",
        "groups:history",
        "channels:read",
        "groups:read",
    }
    for name in Settings.model_fields:
        if name.startswith("slack_") and name not in ("slack_token", "slack_base_url"):
            assert f"`CANARY_{name.upper()}`" in text or f"`CANARY_{name.upper()}`," in text, name
