"""Rollout phases and the explicit table of allowed transitions.

    Pending ──> Shadowing ──> Progressing(step i) ──> Promoted
       │            │              │   ▲
       │            │              ▼   │
       │            └──────────> Paused
       └─────────── any live phase ──> RolledBack | Aborted | Failed

Every live phase can also go back to Pending: a new candidate version restarts
the rollout from the beginning. A terminal phase only leaves for Pending, the
same way. Nothing else is allowed; `check_transition` enforces it in `decide`.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    PENDING = "Pending"
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})
_ENDINGS = frozenset({Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED}) | _ENDINGS,
    Phase.SHADOWING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PENDING}) | _ENDINGS,
    Phase.PROGRESSING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED, Phase.PENDING})
    | _ENDINGS,
    Phase.PAUSED: frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTED, Phase.PENDING})
    | _ENDINGS,
    Phase.PROMOTED: frozenset({Phase.PENDING}),
    Phase.ROLLED_BACK: frozenset({Phase.PENDING}),
    Phase.ABORTED: frozenset({Phase.PENDING}),
    Phase.FAILED: frozenset({Phase.PENDING}),
}


class IllegalTransition(Exception):
    """A transition the table does not allow: a bug in `decide`, never user input."""


def check_transition(src: Phase, dst: Phase) -> None:
    if dst not in ALLOWED[src]:
        raise IllegalTransition(f"{src} -> {dst} is not an allowed transition")
