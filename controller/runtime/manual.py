"""Manual control: promote, pause, resume and abort, recorded with who and why.

A command is appended to the store's audit log; the engine applies it on the
rollout's next tick, in order, exactly once (its cursor is part of the state the
tick commits). So a command works the same whichever replica owns the rollout,
and survives a restart of every replica.
"""

from __future__ import annotations

from datetime import datetime

from controller.engine.phases import Phase
from controller.engine.state import CommandKind
from controller.errors import PermanentError
from controller.store.base import RolloutStore
from controller.store.records import ManualCommand

#: which phases each command makes sense in
_APPLIES_IN: dict[CommandKind, frozenset[Phase]] = {
    # promote while a gate runs: go on without it
    CommandKind.PROMOTE: frozenset(
        {Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING}
    ),
    CommandKind.PROMOTE_FULL: frozenset(
        {Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING}
    ),
    CommandKind.PAUSE: frozenset(
        {Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.GATE_RUNNING}
    ),
    CommandKind.RESUME: frozenset({Phase.PAUSED}),
    CommandKind.ABORT: frozenset(
        {Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.GATE_RUNNING}
    ),
}


def submit(
    store: RolloutStore,
    key: str,
    kind: CommandKind,
    *,
    actor: str,
    reason: str,
    now: datetime,
) -> ManualCommand:
    """Record `kind` for the rollout `key`; PermanentError when it cannot apply now."""
    stored = store.get(key)
    if stored is None:
        raise PermanentError(f"no rollout {key} is known to the controller")
    phase = Phase(stored.phase)
    if phase not in _APPLIES_IN[kind]:
        allowed = ", ".join(sorted(p.value for p in _APPLIES_IN[kind]))
        raise PermanentError(f"cannot {kind} {key}: it is {phase} (possible when: {allowed})")
    if not actor.strip():
        raise PermanentError("say who you are (actor), for the audit")
    return store.add_command(key, ManualCommand(now, str(kind), actor, reason))
