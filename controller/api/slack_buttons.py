"""The buttons on a rollout's Slack status message, and the Abort modal (pure).

The thread's top message, which `SlackNotifier` keeps current, carries one
button per command that applies in the rollout's phase (the table in
`controller.engine.commands`, the one `canaryctl` obeys too): **Promote next
step**, **Pause**, **Resume**, **Abort**. A button's `value` names the rollout
and the message it was pressed on (`ButtonRef`): pressing the same button on
the same message twice, or Slack delivering one press twice, is one request
(`dedupe_key`), while the same button on a later message is a new one.

Abort opens a modal that asks for a reason (`abort_modal`); its
`private_metadata` carries the button's identity and where the message is
(`AbortRef`), so the submission is deduplicated like a press and answered in
the same thread.

Slack hands `value` and `private_metadata` back as strings; they are written
and read only here, as JSON validated into these frozen models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.engine.commands import applicable
from controller.engine.state import CommandKind
from controller.notify.base import Notification

#: the actions block's id: found and replaced when a press is acknowledged
BLOCK_ID = "canary_actions"
#: the Abort modal's callback id, and its reason input's block and action ids
ABORT_CALLBACK = "canary_abort"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
MAX_REASON = 500


class ActionId(StrEnum):
    """A button's `action_id`, one per command a button can give."""

    PROMOTE = "canary_promote"
    PAUSE = "canary_pause"
    RESUME = "canary_resume"
    ABORT = "canary_abort"

    @property
    def command(self) -> CommandKind:
        return _COMMANDS[self]

    @property
    def label(self) -> str:
        return _LABELS[self]


_COMMANDS = {
    ActionId.PROMOTE: CommandKind.PROMOTE,
    ActionId.PAUSE: CommandKind.PAUSE,
    ActionId.RESUME: CommandKind.RESUME,
    ActionId.ABORT: CommandKind.ABORT,
}
_LABELS = {
    ActionId.PROMOTE: "Promote next step",
    ActionId.PAUSE: "Pause",
    ActionId.RESUME: "Resume",
    ActionId.ABORT: "Abort",
}
_STYLES = {ActionId.PROMOTE: "primary", ActionId.ABORT: "danger"}


class _Ref(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def encode(self) -> str:
        return self.model_dump_json()


class ButtonRef(_Ref):
    """What a button's `value` carries: the rollout and the message's own key."""

    rollout: str = Field(min_length=3, max_length=320, pattern=r"^[^/\s]+/[^/\s]+$")
    #: the outbox key of the event the message showed when it got its buttons
    shown: str = Field(min_length=1, max_length=400)

    @classmethod
    def decode(cls, value: str) -> ButtonRef:
        """ValueError (with the reason) for a value this controller did not write."""
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"not a canary-controller button value ({_first(exc)})") from exc

    def dedupe_key(self, command: CommandKind) -> str:
        """One command per (rollout, message, command), however often it arrives."""
        digest = hashlib.sha256(f"{self.rollout}\n{self.shown}\n{command}".encode()).hexdigest()
        return f"slack:{digest}"


class AbortRef(_Ref):
    """The Abort modal's `private_metadata`: the button pressed, and its message."""

    button: ButtonRef
    channel: str = Field(min_length=1, max_length=64)
    message_ts: str = Field(min_length=1, max_length=64)

    @classmethod
    def decode(cls, value: str) -> AbortRef:
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"not a canary-controller abort form ({_first(exc)})") from exc


def buttons(note: Notification) -> list[dict[str, Any]]:
    """The actions block for the status message after `note`: the buttons valid in its
    phase; none once the rollout has ended (or for a phase this version does not know)."""
    if note.phase is None:  # a phase this version does not know is read as none
        return []
    commands = set(applicable(note.phase))
    ref = ButtonRef(rollout=note.rollout, shown=note.dedupe_key).encode()
    elements = [_button(a, ref) for a in ActionId if a.command in commands]
    if not elements:
        return []
    return [{"type": "actions", "block_id": BLOCK_ID, "elements": elements}]


def _button(action: ActionId, value: str) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action.value,
        "text": {"type": "plain_text", "text": action.label},
        "value": value,
    }
    if action in _STYLES:
        button["style"] = _STYLES[action]
    return button


def abort_modal(ref: AbortRef) -> dict[str, Any]:
    """The modal Abort opens: the rollout, what aborting does, and a required reason."""
    rollout = ref.button.rollout
    return {
        "type": "modal",
        "callback_id": ABORT_CALLBACK,
        "private_metadata": ref.encode(),
        "title": {"type": "plain_text", "text": "Abort rollout"},
        "submit": {"type": "plain_text", "text": "Abort"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"Abort *{_escape(rollout)}*? All traffic goes back to the "
                    "baseline at the rollout's next tick, and the thread says who did it and why.",
                },
            },
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "label": {"type": "plain_text", "text": "Reason"},
                "element": {
                    "type": "plain_text_input",
                    "action_id": REASON_ACTION,
                    "multiline": True,
                    "max_length": MAX_REASON,
                    "placeholder": {"type": "plain_text", "text": "What is wrong?"},
                },
            },
        ],
    }


def without_buttons(blocks: Sequence[Any], note: str) -> list[Any]:
    """A message's blocks with its buttons replaced by `note` (mrkdwn), once pressed."""
    kept = [b for b in blocks if not (isinstance(b, dict) and b.get("block_id") == BLOCK_ID)]
    return [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": note}]}]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    return f"{where}: {error['msg']}"
