"""Rollout phases and the explicit table of allowed transitions.

    Pending ──> Shadowing ──> Progressing(step i) ──> Promoted
       │            │              │   ▲
       │            │              ▼   │
       │            └──────────> Paused
       └─────────── any live phase ──> RolledBack | Aborted | Failed

    GateRunning sits before any of the moves above that a gate of the policy
    guards (the start, a step, the promotion): Pending/Shadowing/Progressing/
    Paused ──> GateRunning ──> where the move was going, or back, or an ending.

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
    #: waiting for a gate (webhook or Job) before the start, a step or the promotion
    GATE_RUNNING = "GateRunning"
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

_GATE = frozenset({Phase.GATE_RUNNING})

ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.PENDING: frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED}) | _ENDINGS | _GATE,
    Phase.SHADOWING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PENDING}) | _ENDINGS | _GATE,
    Phase.PROGRESSING: frozenset({Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED, Phase.PENDING})
    | _ENDINGS
    | _GATE,
    Phase.PAUSED: frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PROMOTED, Phase.PENDING})
    | _ENDINGS
    | _GATE,
    # a gate passed: on to where the rollout was going (the next gate at the same point
    # is a move from GateRunning to GateRunning)
    Phase.GATE_RUNNING: frozenset(
        {Phase.GATE_RUNNING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.PROMOTED}
    )
    | frozenset({Phase.PENDING})
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
