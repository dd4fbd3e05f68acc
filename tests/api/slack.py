"""Slack's interactivity requests as Slack sends them: documented payloads, signed.

The payloads follow Slack's reference for `block_actions` (a button pressed on
a message) and `view_submission` (a modal submitted), with the fields Slack
sends that the controller does not read (`api_app_id`, `token`, `team`,
`enterprise`, `state`, ...), so the models are tried on the real shape. A
request is form-encoded (`payload=<json>`) and signed the way Slack signs
(`v0:<timestamp>:<body>`, HMAC-SHA256 with the app's signing secret).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
TEAM = {"id": "T0CAG", "domain": "acme-creamery"}


def user(user_id: str, name: str) -> dict[str, Any]:
    return {"id": user_id, "username": name, "name": name, "team_id": TEAM["id"]}


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def sign(
    body: bytes, *, secret: str = SECRET, at: int | None = None, retry: int | None = None
) -> dict[str, str]:
    """The headers Slack sends with `body`, signed at `at` (default: now)."""
    timestamp = str(int(time.time()) if at is None else at)
    base = b"v0:" + timestamp.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
    }
    if retry is not None:
        headers["X-Slack-Retry-Num"] = str(retry)
        headers["X-Slack-Retry-Reason"] = "http_timeout"
    return headers


def block_actions(
    message: dict[str, Any],
    channel: str,
    button: dict[str, Any],
    *,
    who: dict[str, Any],
    response_url: str,
    trigger: str = "12321423423.333649436676.d8c1bb837935619ccad0f624c448ffb3",
    action_ts: str = "1548426417.840180",
) -> dict[str, Any]:
    """A press of `button` on `message` in `channel`, as Slack documents it."""
    return {
        "type": "block_actions",
        "user": who,
        "api_app_id": "A0CA5",
        "token": "Shh_its_a_seekrit",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": trigger,
        "team": TEAM,
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "bot"},
        "message": {
            "type": "message",
            "user": "UBOT",
            "ts": message["ts"],
            "bot_id": "B1",
            "text": message["text"],
            "blocks": message["blocks"],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": "canary_actions",
                "text": {**button["text"], "emoji": True},
                "value": button["value"],
                **({"style": button["style"]} if "style" in button else {}),
                "type": "button",
                "action_ts": action_ts,
            }
        ],
    }


def view_submission(
    view: dict[str, Any], *, who: dict[str, Any], reason: str | None
) -> dict[str, Any]:
    """`view` (as opened with views.open) submitted with `reason` typed in."""
    values = {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}
    return {
        "type": "view_submission",
        "team": TEAM,
        "user": who,
        "api_app_id": "A0CA5",
        "token": "Shh_its_a_seekrit",
        "trigger_id": "12466734323.1395872398.7d8f9a1b2c3d4e5f",
        "view": {
            "id": "V0PKB1ZFV",
            "team_id": TEAM["id"],
            "type": "modal",
            "blocks": view["blocks"],
            "private_metadata": view["private_metadata"],
            "callback_id": view["callback_id"],
            "state": {"values": values},
            "hash": "1586542475.2qpUnlTR",
            "title": view["title"],
            "close": view["close"],
            "submit": view["submit"],
            "previous_view_id": None,
            "root_view_id": "V0PKB1ZFV",
            "app_id": "A0CA5",
            "external_id": "",
            "app_installed_team_id": TEAM["id"],
            "bot_id": "B1",
        },
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }


@dataclass(frozen=True)
class Reply:
    status: int
    body: str


def post(url: str, body: bytes, headers: dict[str, str]) -> Reply:
    """POST over real HTTP; any status is returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Reply(answer.status, answer.read().decode())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, exc.read().decode())
