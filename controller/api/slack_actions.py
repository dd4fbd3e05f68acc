"""`POST /slack/actions`: the buttons on Slack messages, verified, authorized, once.

Slack posts an interactivity request when someone presses a button on a
rollout's status message (`block_actions`) or submits the Abort modal
(`view_submission`). Each request goes through, in order:

    size ─> signature (401) ─> form and payload (400) ─> 200, then in the background:
    authorize ─> the manual-command path, once ─> tell the thread and update the message

- **Verified.** Slack's v0 signature (`X-Slack-Signature` over
  `v0:<X-Slack-Request-Timestamp>:<body>`, HMAC-SHA256 with the app's signing
  secret) is checked by slack-sdk's `SignatureVerifier`, which compares in
  constant time and refuses a timestamp more than five minutes away. Missing,
  stale or wrong: 401, and nothing else happens.
- **Fast.** Slack waits three seconds for an answer. Everything that needs no
  database or Slack call (size, signature, payload, which button) is decided
  before answering; the rest runs on a small pool of threads after the 200, so
  a slow database cannot make Slack show an error or retry.
- **Authorized per rollout.** Only the users in the rollout's
  `owners.slack.mention` or `owners.slack.operators` may act; anyone else gets
  an ephemeral "not allowed" through the request's `response_url`, and nothing
  happens.
- **Once.** A command goes through `submit_once`, the same manual-command path
  `canaryctl` uses, with a key from the button's identity (rollout, message,
  command; `ButtonRef.dedupe_key`) that is unique in the store: Slack's retries
  (`X-Slack-Retry-Num`), a double press and two replicas receiving the same
  press record one command. The engine applies it at the rollout's next tick.
- **Audited and visible.** The command's actor is `name (Slack Uxxxx)`, its
  arguments keep the Slack user ID, name, team, channel and message; the
  thread gets a reply saying who asked for what, and the pressed message shows
  it in place of its buttons.
- **Never a crash.** A body too large, not a form, not JSON, of an unknown type
  or for an unknown button gets a 400 that says which; an error in the
  background is logged and, where possible, told to the user who pressed.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import parse_qs
from wsgiref.types import StartResponse, WSGIEnvironment

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from controller.api.slack_buttons import (
    ABORT_CALLBACK,
    MAX_REASON,
    REASON_ACTION,
    REASON_BLOCK,
    AbortRef,
    ActionId,
    ButtonRef,
    abort_modal,
    without_buttons,
)
from controller.engine.state import CommandKind
from controller.errors import CanaryError
from controller.policy import ModelRollout
from controller.store.records import ManualCommand, StoredRollout
from controller.telemetry import redact

log = logging.getLogger(__name__)

#: larger than any interactivity request for our messages (a few KiB), far below harm
MAX_BODY = 64 * 1024
#: requests waiting for, or in, the background pool before new ones are turned away
MAX_PENDING = 64
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")


# --- Slack's payloads, as Slack documents them (only the fields used) ----------------


class _Slack(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SlackUser(_Slack):
    id: Annotated[str, Field(pattern=_USER_ID.pattern, max_length=32)]
    username: str = Field(default="", max_length=200)
    name: str = Field(default="", max_length=200)
    team_id: str = Field(default="", max_length=32)

    @property
    def shown(self) -> str:
        """The user's name as Slack gave it, else the ID."""
        return (self.username or self.name or self.id).strip()[:80] or self.id


class ActionElement(_Slack):
    action_id: str = Field(max_length=255)
    block_id: str = Field(default="", max_length=255)
    type: str = Field(default="", max_length=64)
    value: str = Field(default="", max_length=2000)
    action_ts: str = Field(default="", max_length=64)


class Container(_Slack):
    type: str = ""
    message_ts: str | None = Field(default=None, max_length=64)
    channel_id: str | None = Field(default=None, max_length=64)


class Channel(_Slack):
    id: str = Field(max_length=64)


class Message(_Slack):
    ts: str = Field(max_length=64)
    text: str = ""
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class BlockActions(_Slack):
    """A button pressed on a message (`block_actions`)."""

    type: Literal["block_actions"]
    user: SlackUser
    trigger_id: str = Field(min_length=1, max_length=255)
    response_url: str | None = Field(default=None, max_length=2000)
    actions: list[ActionElement] = Field(min_length=1, max_length=1)
    container: Container | None = None
    channel: Channel | None = None
    message: Message | None = None


class PlainInput(_Slack):
    type: str = ""
    value: str | None = None


class ViewState(_Slack):
    values: dict[str, dict[str, PlainInput]] = Field(default_factory=dict)


class View(_Slack):
    callback_id: str = Field(default="", max_length=255)
    private_metadata: str = Field(default="", max_length=3000)
    state: ViewState = Field(default_factory=ViewState)


class ViewSubmission(_Slack):
    """A modal submitted (`view_submission`): the Abort modal's reason."""

    type: Literal["view_submission"]
    user: SlackUser
    view: View


Payload = Annotated[BlockActions | ViewSubmission, Field(discriminator="type")]
_PAYLOAD: TypeAdapter[BlockActions | ViewSubmission] = TypeAdapter(Payload)


# --- the ports -----------------------------------------------------------------------


class RolloutReader(Protocol):
    """What the endpoint reads of the store: the rollout's stored policy and phase."""

    def get(self, key: str) -> StoredRollout | None: ...


class SubmittedLike(Protocol):
    @property
    def command(self) -> ManualCommand: ...

    @property
    def repeated(self) -> bool: ...


class SubmitOnce(Protocol):
    """The manual-command path (`controller.runtime.manual.submit_once` on a store)."""

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
    ) -> SubmittedLike: ...


class Clock(Protocol):
    def now(self) -> datetime: ...


class _WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


Replier = Callable[[str, dict[str, Any]], None]


# --- answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one request; `job` is what runs after it, if anything."""

    status: int
    body: str = ""
    json_body: bool = False
    job: Callable[[], None] | None = field(default=None, compare=False)


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _bad(why: str) -> Answer:
    return Answer(400, f"bad request: {why}\n")


class NotAllowedError(CanaryError):
    """The Slack user may not act on this rollout."""


# --- the endpoint ---------------------------------------------------------------------


class SlackActions:
    """The `/slack/actions` WSGI application, and the background work it hands off.

    `client` is a slack-sdk `WebClient` with the bot token (thread replies,
    message updates, `views.open`); `reply` posts to a `response_url` (by
    default slack-sdk's `WebhookClient`), and only under `response_url_prefix`,
    Slack's own hooks host. `wait()` lets tests and shutdown let the
    background work finish.
    """

    def __init__(
        self,
        *,
        signing_secret: str,
        client: WebClient,
        store: RolloutReader,
        submit: SubmitOnce,
        response_url_prefix: str = "https://hooks.slack.com/",
        clock: Clock | None = None,
        reply: Replier | None = None,
        workers: int = 4,
    ) -> None:
        self.verifier = SignatureVerifier(signing_secret)
        self.client = client
        self.store = store
        self.submit = submit
        self.response_url_prefix = response_url_prefix
        self.clock = clock or _WallClock()
        self.reply = reply or _post_to_response_url
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="slack-actions")
        self._lock = threading.Lock()
        self._pending: set[Future[None]] = set()

    # --- HTTP --------------------------------------------------------------------

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            answer = self._answer(environ)
        except Exception:  # a bug: logged with its traceback, answered, never a dead server
            log.exception("answering a Slack action failed")
            answer = Answer(500, "internal error\n")
        if answer.job is not None and not self._start(answer.job):
            answer = Answer(503, "busy: too many Slack actions in progress; try again\n")
        body = answer.body.encode()
        kind = "application/json" if answer.json_body else "text/plain; charset=utf-8"
        start_response(
            f"{answer.status} {_REASONS.get(answer.status, '')}".rstrip(),
            [
                ("Content-Type", kind),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
                *([("Allow", "POST")] if answer.status == 405 else []),
            ],
        )
        return [body]

    def _answer(self, environ: WSGIEnvironment) -> Answer:
        if environ.get("REQUEST_METHOD") != "POST":
            return Answer(405, "POST only\n")
        length_header = str(environ.get("CONTENT_LENGTH") or "").strip()
        if not (length_header.isascii() and length_header.isdigit()):  # not "²", "٣"
            return _bad("a Content-Length is required")
        length = int(length_header)
        if length > MAX_BODY:
            return _bad(f"body of {length} bytes is larger than {MAX_BODY}")
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        headers = {
            "x-slack-request-timestamp": str(environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "")),
            "x-slack-signature": str(environ.get("HTTP_X_SLACK_SIGNATURE", "")),
            "x-slack-retry-num": str(environ.get("HTTP_X_SLACK_RETRY_NUM", "")),
            "content-type": str(environ.get("CONTENT_TYPE", "")),
        }
        return self.handle(body, headers)

    def handle(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """The answer to one request (headers by lower-case name), its job not started."""
        lower = {k.lower(): v for k, v in headers.items()}
        why = self._unverified(body, lower)
        if why is not None:
            log.warning("refused a Slack action: %s", why)
            return Answer(401, f"unauthorized: {why}\n")
        try:
            payload = _payload(body, lower.get("content-type", ""))
        except ValueError as exc:
            log.warning("refused a Slack action: %s", exc)
            return _bad(str(exc))
        retry = lower.get("x-slack-retry-num", "").strip()
        if isinstance(payload, BlockActions):
            return self._pressed(payload, retried=retry not in ("", "0"))
        return self._submitted(payload)

    def _unverified(self, body: bytes, headers: Mapping[str, str]) -> str | None:
        """Why the request is not Slack's, or None when its signature holds."""
        timestamp = headers.get("x-slack-request-timestamp", "").strip()
        signature = headers.get("x-slack-signature", "").strip()
        if not timestamp or not signature:
            return "missing X-Slack-Request-Timestamp or X-Slack-Signature"
        # The verifier needs an integer timestamp and an ASCII signature (compare_digest
        # refuses anything else), and decodes the body: shapes are checked first.
        if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
            return "malformed X-Slack-Request-Timestamp or X-Slack-Signature"
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return "the body is not UTF-8, so it cannot carry a valid signature"
        if not self.verifier.is_valid(body, timestamp, signature):
            return "invalid signature, or a timestamp more than 5 minutes away"
        return None

    def _pressed(self, payload: BlockActions, *, retried: bool) -> Answer:
        element = payload.actions[0]
        try:
            action = ActionId(element.action_id)
        except ValueError:
            return _bad(f"unknown action {element.action_id[:64]!r}")
        try:
            ref = ButtonRef.decode(element.value)
        except ValueError as exc:
            return _bad(f"action {action.value}: {exc}")
        url = payload.response_url
        if url is not None and not url.startswith(self.response_url_prefix):
            return _bad("response_url is not Slack's")
        press = Press(payload, action, ref, retried=retried)
        if action is ActionId.ABORT:
            if retried:  # the modal's trigger has expired by the time Slack retries
                log.info("Slack retried an Abort press on %s; its modal is not reopened", ref)
                return Answer(200)
            return Answer(200, job=lambda: self._open_abort(press))
        return Answer(200, job=lambda: self._command(press))

    def _submitted(self, payload: ViewSubmission) -> Answer:
        if payload.view.callback_id != ABORT_CALLBACK:
            return _bad(f"unknown view {payload.view.callback_id[:64]!r}")
        try:
            ref = AbortRef.decode(payload.view.private_metadata)
        except ValueError as exc:
            return _bad(f"view {ABORT_CALLBACK}: {exc}")
        field_ = payload.view.state.values.get(REASON_BLOCK, {}).get(REASON_ACTION)
        reason = (field_.value or "").strip()[:MAX_REASON] if field_ is not None else ""
        if not reason:
            errors = {"response_action": "errors", "errors": {REASON_BLOCK: "Say why you abort."}}
            return Answer(200, json.dumps(errors), json_body=True)
        return Answer(200, job=lambda: self._abort(payload.user, ref, reason))

    # --- the background ------------------------------------------------------------

    def _start(self, job: Callable[[], None]) -> bool:
        with self._lock:
            if len(self._pending) >= MAX_PENDING:
                return False
            future = self._pool.submit(self._run, job)
            self._pending.add(future)
        future.add_done_callback(self._done)
        return True

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:  # the pool would keep it silent: say it
            log.exception("a Slack action failed")

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the background work started so far; False if some still runs."""
        with self._lock:
            pending = set(self._pending)
        _, not_done = wait(pending, timeout=timeout)
        return not not_done

    def close(self, timeout: float = 5.0) -> None:
        self.wait(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _authorized(self, key: str, user: SlackUser) -> ModelRollout:
        """The rollout, if `user` may act on it; NotAllowedError or PermanentError if not."""
        stored = self.store.get(key)
        if stored is None:
            raise NotAllowedError(f"no rollout {key} is known to the controller")
        try:
            rollout = ModelRollout.model_validate(stored.policy)
        except ValidationError as exc:
            raise NotAllowedError(f"the stored policy of {key} cannot be read") from exc
        owners = rollout.spec.owners.slack if rollout.spec.owners else None
        if owners is None or not owners.may_act(user.id):
            raise NotAllowedError(
                f"you are not allowed to act on {key}: only the users in its "
                "owners.slack.mention or owners.slack.operators may"
            )
        return rollout

    def _command(self, press: Press) -> None:
        user, kind = press.payload.user, press.action.command
        try:
            self._authorized(press.ref.rollout, user)
            done = self.submit(
                press.ref.rollout,
                kind,
                actor=_actor(user),
                reason="",
                now=self.clock.now(),
                dedupe_key=press.ref.dedupe_key(kind),
                args=press.audit(),
            )
        except CanaryError as exc:
            self._refuse(press, kind, exc)
            return
        self._log(press.ref.rollout, user, kind, done)
        if done.repeated:
            if not press.retried:  # a second press, not Slack delivering the first again
                self._ephemeral(press, _already(done.command))
            return
        where = press.where()
        if where is None:
            return
        channel, ts = where
        self._tell_thread(
            channel,
            ts,
            f"{_EMOJI[kind]} <@{user.id}> asked to {_VERB[kind]} "
            f"*{_mrkdwn(press.ref.rollout)}*. {_NEXT_TICK}",
        )
        message = press.payload.message
        if message is not None:
            note = (
                f"{_EMOJI[kind]} {_VERB[kind].capitalize()} requested by <@{user.id}>. {_NEXT_TICK}"
            )
            self._slack(
                "chat.update",
                lambda: self.client.chat_update(
                    channel=channel,
                    ts=ts,
                    text=message.text or f"{press.ref.rollout}: {kind} requested",
                    blocks=without_buttons(message.blocks, note),
                ),
            )

    def _open_abort(self, press: Press) -> None:
        user = press.payload.user
        try:
            self._authorized(press.ref.rollout, user)
        except CanaryError as exc:
            self._refuse(press, CommandKind.ABORT, exc)
            return
        where = press.where()
        if where is None:
            self._ephemeral(press, "This message does not say where it is; use `canaryctl abort`.")
            return
        ref = AbortRef(button=press.ref, channel=where[0], message_ts=where[1])
        self._slack(
            "views.open",
            lambda: self.client.views_open(
                trigger_id=press.payload.trigger_id, view=abort_modal(ref)
            ),
        )

    def _abort(self, user: SlackUser, ref: AbortRef, reason: str) -> None:
        kind = CommandKind.ABORT
        audit = {
            **_who(user),
            "channel": ref.channel,
            "messageTs": ref.message_ts,
        }
        try:
            self._authorized(ref.button.rollout, user)
            done = self.submit(
                ref.button.rollout,
                kind,
                actor=_actor(user),
                reason=reason,
                now=self.clock.now(),
                dedupe_key=ref.button.dedupe_key(kind),
                args=audit,
            )
        except CanaryError as exc:
            log.warning("Slack abort of %s by %s refused: %s", ref.button.rollout, user.id, exc)
            refused = f"Nothing was done: {exc}"
            self._slack(
                "chat.postEphemeral",
                lambda: self.client.chat_postEphemeral(
                    channel=ref.channel, user=user.id, text=refused
                ),
            )
            return
        self._log(ref.button.rollout, user, kind, done)
        if done.repeated:
            return
        self._tell_thread(
            ref.channel,
            ref.message_ts,
            f"{_EMOJI[kind]} <@{user.id}> asked to abort *{_mrkdwn(ref.button.rollout)}*: "
            f"{_mrkdwn(reason)}. {_NEXT_TICK}",
        )

    # --- telling Slack ---------------------------------------------------------------

    def _refuse(self, press: Press, kind: CommandKind, exc: CanaryError) -> None:
        log.warning(
            "Slack %s of %s by %s refused: %s", kind, press.ref.rollout, press.payload.user.id, exc
        )
        text = (
            f":no_entry_sign: Not allowed: {exc}. Nothing was done."
            if isinstance(exc, NotAllowedError)
            else f"Nothing was done: {exc}"
        )
        self._ephemeral(press, text)

    def _ephemeral(self, press: Press, text: str) -> None:
        url = press.payload.response_url
        if url is None:
            return
        body = {"response_type": "ephemeral", "replace_original": False, "text": text}
        self._slack("response_url", lambda: self.reply(url, body))

    def _tell_thread(self, channel: str, ts: str, text: str) -> None:
        self._slack(
            "chat.postMessage",
            lambda: self.client.chat_postMessage(
                channel=channel, thread_ts=ts, text=text, unfurl_links=False, unfurl_media=False
            ),
        )

    def _slack(self, what: str, call: Callable[[], object]) -> None:
        """Make one Slack call; a failure is logged (the command, if any, stands)."""
        try:
            call()
        except SlackApiError as exc:
            error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
            log.warning("Slack %s failed: %s", what, redact(str(error or exc.response.status_code)))
        except (SlackClientError, OSError) as exc:
            log.warning("Slack %s failed: %s", what, redact(f"{type(exc).__name__}: {exc}"))

    def _log(self, key: str, user: SlackUser, kind: CommandKind, done: SubmittedLike) -> None:
        log.info(
            "%s of %s from Slack by %s (%s)%s",
            kind,
            key,
            user.shown,
            user.id,
            ": a repeat, nothing new recorded" if done.repeated else "",
            extra={"rollout": key},
        )


@dataclass(frozen=True)
class Press:
    """One button press, checked: which button, on which rollout's message."""

    payload: BlockActions
    action: ActionId
    ref: ButtonRef
    #: Slack sent it again (`X-Slack-Retry-Num` > 0): the user pressed once
    retried: bool = False

    def where(self) -> tuple[str, str] | None:
        """The channel and ts of the message pressed on (the thread's top message)."""
        p = self.payload
        channel = (p.container.channel_id if p.container else None) or (
            p.channel.id if p.channel else None
        )
        ts = (p.container.message_ts if p.container else None) or (
            p.message.ts if p.message else None
        )
        return (channel, ts) if channel and ts else None

    def audit(self) -> dict[str, Any]:
        where = self.where()
        return {
            **_who(self.payload.user),
            "action": self.action.value,
            "actionTs": self.payload.actions[0].action_ts,
            "channel": where[0] if where else None,
            "messageTs": where[1] if where else None,
        }


_VERB = {
    CommandKind.PROMOTE: "promote to the next step",
    CommandKind.PAUSE: "pause",
    CommandKind.RESUME: "resume",
    CommandKind.ABORT: "abort",
    CommandKind.PROMOTE_FULL: "promote to 100%",
}
_EMOJI = {
    CommandKind.PROMOTE: ":arrow_forward:",
    CommandKind.PAUSE: ":double_vertical_bar:",
    CommandKind.RESUME: ":arrow_forward:",
    CommandKind.ABORT: ":no_entry:",
    CommandKind.PROMOTE_FULL: ":fast_forward:",
}
_NEXT_TICK = "It applies at the rollout's next tick."


def _payload(body: bytes, content_type: str) -> BlockActions | ViewSubmission:
    """The payload of an interactivity request; ValueError saying what is wrong."""
    if content_type.partition(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise ValueError("expected an application/x-www-form-urlencoded body")
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=8)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"the form does not parse: {exc}") from exc
    values = form.get("payload") or []
    if len(values) != 1:
        raise ValueError("expected exactly one `payload` field")
    try:
        data = json.loads(values[0])
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"`payload` is not JSON: {str(exc)[:100]}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("`payload` is not an object with a `type`")
    if data["type"] not in ("block_actions", "view_submission"):
        raise ValueError(f"unknown action type {data['type'][:64]!r}")
    try:
        return _PAYLOAD.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "payload"
        raise ValueError(f"payload.{where}: {error['msg']}") from exc


def _who(user: SlackUser) -> dict[str, Any]:
    return {
        "via": "slack",
        "slackUserId": user.id,
        "slackUserName": user.shown,
        "slackTeamId": user.team_id or None,
    }


def _actor(user: SlackUser) -> str:
    """The audit's actor: the name first (what the thread reads), then the ID."""
    return f"{user.shown} (Slack {user.id})"


def _already(command: ManualCommand) -> str:
    return (
        f"Already asked: {command.command} by {command.actor} at "
        f"{command.at:%H:%M:%S} UTC. {_NEXT_TICK}"
    )


def _mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _post_to_response_url(url: str, body: dict[str, Any]) -> None:
    WebhookClient(url, timeout=5, retry_handlers=[]).send_dict(body)
