"""Slack: one thread per rollout, through the real slack-sdk `WebClient`.

The first message delivered for a rollout (normally "started") opens its thread;
every later event is a reply (`thread_ts`), and after each reply the top message
is rewritten (`chat.update`) to show the rollout's current phase, so the channel
reads as one line per rollout. Rollbacks, aborts and failures are also broadcast
to the channel (`reply_broadcast`): on-call should not have to open a thread to
learn that traffic was taken off a model.

Exactly once, as far as Slack allows. Every message carries its outbox key in
Slack's message metadata (`event_type` `canary_rollout_event`). When an earlier
attempt of the same message was recorded (the worker died after sending, or the
answer timed out after Slack had posted), the notifier first looks for the key:
in the thread (`conversations.replies`), or in the channel's recent history
(`conversations.history`) for a message that would open the thread, and finds
the message already posted instead of posting it twice. Looking needs the
history scopes (and `conversations.list`'s read scopes for a channel given by
name); when Slack refuses the look for good, the message is posted anyway:
read twice is better than never read.

Errors are sorted once, here, into the controller's tree: HTTP 429 is a
`TransientError` with Slack's `Retry-After`; HTTP 5xx, timeouts and unreachable
hosts are transient; an `ok: false` answer is permanent (`invalid_auth`,
`channel_not_found`, `not_in_channel`, ...), except the few codes Slack uses for
its own trouble. The client's built-in retries are off: a blind resend of
`chat.postMessage` after a lost answer would post twice, and the worker's backoff
should be the only one. The bot token lives in the `WebClient` and nowhere else:
not in errors, not in logs (slack-sdk masks the Authorization header itself).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

from pydantic import SecretStr
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse

from controller.errors import PermanentError, TransientError
from controller.notify.base import Notification, Receipt, Thread
from controller.notify.messages import slack_message, status_message
from controller.settings import Settings
from controller.telemetry import redact

log = logging.getLogger(__name__)
#: slack-sdk logs each failed request at ERROR; every failure is raised to us and
#: logged once, with the rollout, by the worker, so the client's own lines are muted
_SDK_LOG = logging.getLogger("controller.notify.slack.sdk")
_SDK_LOG.setLevel(logging.CRITICAL)

#: Slack message metadata type of every message this controller posts
EVENT_TYPE = "canary_rollout_event"
#: events also shown in the channel, not only in the rollout's thread
BROADCAST = frozenset({"rolled-back", "aborted", "failed", "route-corrected"})
#: `ok: false` codes that mean Slack's trouble, not ours: retry them
TRANSIENT_CODES = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
#: what an owner has to do about a permanent error, shown in history and status
HINTS: Mapping[str, str] = {
    "invalid_auth": "the bot token was rejected; check CANARY_SLACK_TOKEN",
    "not_authed": "no bot token was sent; check CANARY_SLACK_TOKEN",
    "token_revoked": "the bot token was revoked; install the app again",
    "account_inactive": "the bot's account is deactivated",
    "channel_not_found": "no such channel, or the bot cannot see it; invite the bot",
    "not_in_channel": "the bot is not in the channel; invite it",
    "is_archived": "the channel is archived",
    "missing_scope": "the bot token lacks a scope (chat:write, channels:history, ...)",
}
#: how far back, before a message was queued, a lost post may be found in history
LOOKBACK = timedelta(minutes=5)
#: pages of history or replies to read when looking for a lost post
MAX_PAGES = 10
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")  # names are lower case

#: Blocks added to the thread's top message after an event, such as the buttons that
#: act on the rollout (`controller.api.slack_buttons`); set only when Slack can call back
Controls = Callable[[Notification], Sequence[dict[str, Any]]]


class SlackNotifier:
    """Posts rollout events to the channel in each policy's `owners.slack`.

    `client` is a slack-sdk `WebClient`; `from_settings` (or `connect`) makes one
    with the bot token, base URL and timeout, and no built-in retries.
    `default_channel` receives the events of rollouts that name no channel;
    without it those events are skipped (recorded as such, not failed).
    """

    name = "slack"

    def __init__(
        self,
        client: WebClient,
        *,
        default_channel: str | None = None,
        controls: Controls | None = None,
    ) -> None:
        self.client = client
        self.default_channel = default_channel
        self.controls = controls
        self._channel_ids: dict[str, str] = {}

    @classmethod
    def connect(
        cls,
        token: SecretStr,
        *,
        base_url: str = "https://slack.com/api/",
        timeout: int = 10,
        default_channel: str | None = None,
        controls: Controls | None = None,
    ) -> SlackNotifier:
        """A notifier on a new `WebClient` (timeout in whole seconds, as slack-sdk takes it)."""
        client = web_client(token, base_url=base_url, timeout=timeout)
        return cls(client, default_channel=default_channel, controls=controls)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        timeout: int = 10,
        default_channel: str | None = None,
        controls: Controls | None = None,
    ) -> SlackNotifier:
        """The notifier for `CANARY_SLACK_TOKEN` and `CANARY_SLACK_BASE_URL`."""
        if settings.slack_token is None:
            raise PermanentError("no Slack token configured (CANARY_SLACK_TOKEN)")
        return cls.connect(
            settings.slack_token,
            base_url=settings.slack_base_url,
            timeout=timeout,
            default_channel=default_channel,
            controls=controls,
        )

    def check(self) -> str:
        """Who the token belongs to (`auth.test`): call at startup to fail loudly early."""
        answer = self._call("auth.test", self.client.auth_test)
        return f"{answer.get('user', '?')} in {answer.get('team', '?')}"

    # --- delivering ----------------------------------------------------------------

    def deliver(self, note: Notification, thread: Thread | None, *, retry: bool) -> Receipt:
        channel = note.channel or self.default_channel
        if not channel:
            return Receipt(skipped=True)
        if retry:
            found = self._look_for(note, channel, thread)
            if found is not None:
                log.info(
                    "%s was already in Slack (%s); not posting it again",
                    note.dedupe_key,
                    found.ts,
                    extra={"rollout": note.rollout},
                )
                if thread is None:
                    return Receipt(found.ts, opened=found)
                self._update_top(thread, note)
                return Receipt(found.ts)
        message = slack_message(note)
        blocks = list(message.blocks)
        if thread is None:  # the message that opens the thread is its top message
            blocks += self._controls(note)
        args: dict[str, Any] = {
            "channel": thread.channel if thread else channel,
            "text": message.text,
            "blocks": blocks,
            "metadata": metadata(note),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if thread is not None:
            args["thread_ts"] = thread.ts
            if note.event in BROADCAST:
                args["reply_broadcast"] = True
        answer = self._call("chat.postMessage", self.client.chat_postMessage, **args)
        ts, channel_id = str(answer["ts"]), str(answer["channel"])
        if thread is None:
            return Receipt(ts, opened=Thread(channel_id, ts))
        self._update_top(thread, note)
        return Receipt(ts)

    def _update_top(self, thread: Thread, note: Notification) -> None:
        """Show the current phase on the thread's top message.

        Slack's own trouble is retried (the reply is then found, not re-posted);
        a top message that cannot be updated (deleted, too old) is only logged:
        the reply, which is what the owners must read, is in the thread.
        """
        top = status_message(note)
        try:
            self._call(
                "chat.update",
                self.client.chat_update,
                channel=thread.channel,
                ts=thread.ts,
                text=top.text,
                blocks=[*top.blocks, *self._controls(note)],
            )
        except PermanentError as exc:
            log.warning(
                "could not update the top message of %s: %s",
                note.rollout,
                exc,
                extra={"rollout": note.rollout},
            )

    def _controls(self, note: Notification) -> list[dict[str, Any]]:
        return list(self.controls(note)) if self.controls is not None else []

    # --- finding a message posted before -------------------------------------------

    def _look_for(self, note: Notification, channel: str, thread: Thread | None) -> Thread | None:
        """`_find`, but a lookup Slack refuses for good (a token without the history
        scopes, say) posts the message rather than failing it: a message the owners
        might read twice beats one they never read."""
        try:
            return self._find(note, channel, thread)
        except PermanentError as exc:
            log.warning(
                "cannot look for %s in Slack before posting it again: %s",
                note.dedupe_key,
                exc,
                extra={"rollout": note.rollout},
            )
            return None

    def _find(self, note: Notification, channel: str, thread: Thread | None) -> Thread | None:
        """The message carrying `note`'s key, if an earlier attempt posted it."""
        if thread is not None:
            pages = self._pages(
                "conversations.replies",
                self.client.conversations_replies,
                channel=thread.channel,
                ts=thread.ts,
                include_all_metadata=True,
                limit=200,
            )
            channel_id = thread.channel
        else:
            found_id = self._channel_id(channel)
            if found_id is None:
                log.warning(
                    "cannot look for %s in %s (no channel ID); posting it",
                    note.dedupe_key,
                    channel,
                    extra={"rollout": note.rollout},
                )
                return None
            channel_id = found_id
            pages = self._pages(
                "conversations.history",
                self.client.conversations_history,
                channel=channel_id,
                oldest=f"{(note.created_at - LOOKBACK).timestamp():.6f}",
                include_all_metadata=True,
                limit=200,
            )
        for page in pages:
            for message in page.get("messages") or ():
                if carries(message, note.dedupe_key):
                    return Thread(channel_id, str(message["ts"]))
        return None

    def _channel_id(self, channel: str) -> str | None:
        """The ID of a channel given by name (`#support-bot`), via `conversations.list`."""
        if _CHANNEL_ID.fullmatch(channel):
            return channel
        name = channel.removeprefix("#")
        if name in self._channel_ids:
            return self._channel_ids[name]
        pages = self._pages(
            "conversations.list",
            self.client.conversations_list,
            types="public_channel,private_channel",
            exclude_archived=True,
            limit=1000,
        )
        for page in pages:
            for found in page.get("channels") or ():
                self._channel_ids[str(found.get("name"))] = str(found.get("id"))
            if name in self._channel_ids:
                return self._channel_ids[name]
        return None

    def _pages(
        self, method: str, call: Callable[..., SlackResponse], **args: Any
    ) -> Iterator[Mapping[str, Any]]:
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            answer = self._call(method, call, **args, **({"cursor": cursor} if cursor else {}))
            yield answer
            cursor = (answer.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                return

    # --- one call, its errors sorted -------------------------------------------------

    def _call(
        self, method: str, call: Callable[..., SlackResponse], **args: Any
    ) -> Mapping[str, Any]:
        try:
            response = call(**args)
        except SlackApiError as exc:
            raise _api_error(method, exc.response) from exc
        except (SlackClientError, OSError) as exc:  # timeouts and refused connections
            raise TransientError(
                redact(f"slack {method}: no answer ({type(exc).__name__}: {exc})")
            ) from exc
        data = response.data
        return data if isinstance(data, dict) else {}


def web_client(token: SecretStr, *, base_url: str, timeout: int = 10) -> WebClient:
    """A slack-sdk client without built-in retries (the callers retry, once) whose own
    failure lines are muted (the callers log each failure once, with its context)."""
    return WebClient(
        token=token.get_secret_value(),
        base_url=base_url,
        timeout=timeout,
        retry_handlers=[],
        logger=_SDK_LOG,
    )


def metadata(note: Notification) -> dict[str, Any]:
    """The Slack message metadata that lets a retry find a message posted before."""
    return {
        "event_type": EVENT_TYPE,
        "event_payload": {
            "dedupe_key": note.dedupe_key,
            "rollout": note.rollout,
            "event": note.event,
        },
    }


def carries(message: Mapping[str, Any], dedupe_key: str) -> bool:
    """Whether a message from Slack is the one posted for `dedupe_key`."""
    meta = message.get("metadata") or {}
    payload = meta.get("event_payload") or {}
    return bool(meta.get("event_type") == EVENT_TYPE and payload.get("dedupe_key") == dedupe_key)


def _api_error(method: str, response: SlackResponse) -> TransientError | PermanentError:
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or "unknown_error")
    status = response.status_code
    if status == 429:
        retry_after = _seconds(
            response.headers.get("Retry-After", response.headers.get("retry-after"))
        )
        return TransientError(
            f"slack {method}: rate limited (HTTP 429); retry after {retry_after:g}s",
            retry_after=retry_after,
        )
    if status >= 500 or code in TRANSIENT_CODES:
        return TransientError(redact(f"slack {method}: Slack failed (HTTP {status}, {code[:200]})"))
    hint = HINTS.get(code)
    return PermanentError(redact(f"slack {method}: {code}" + (f" ({hint})" if hint else "")))


def _seconds(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 1.0
