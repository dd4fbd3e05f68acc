"""Manual control: promote, pause, resume and abort, recorded with who and why.

A command is appended to the store's audit log; the engine applies it on the
rollout's next tick, in order, exactly once (its cursor is part of the state the
tick commits). So a command works the same whichever replica owns the rollout,
and survives a restart of every replica.

`submit` is what `canaryctl` calls; `submit_once` is the same path for a command
that may arrive more than once (Slack's buttons): its `dedupe_key` is unique in
the store, so a repeat records nothing and returns the command recorded first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.engine.commands import APPLIES_IN
from controller.engine.phases import Phase
from controller.engine.state import CommandKind
from controller.errors import PermanentError
from controller.store.base import RolloutStore
from controller.store.records import ManualCommand


@dataclass(frozen=True)
class Submitted:
    """The command as stored; `repeated` when an earlier request had recorded it."""

    command: ManualCommand
    repeated: bool = False


def submit(
    store: RolloutStore,
    key: str,
    kind: CommandKind,
    *,
    actor: str,
    reason: str,
    now: datetime,
    args: Mapping[str, Any] | None = None,
) -> ManualCommand:
    """Record `kind` for the rollout `key`; PermanentError when it cannot apply now."""
    _check(store, key, kind, actor)
    return store.add_command(key, ManualCommand(now, str(kind), actor, reason, dict(args or {})))


def submit_once(
    store: RolloutStore,
    key: str,
    kind: CommandKind,
    *,
    actor: str,
    reason: str,
    now: datetime,
    dedupe_key: str,
    args: Mapping[str, Any] | None = None,
) -> Submitted:
    """`submit`, at most once per `dedupe_key`, across retries and replicas.

    A repeat is answered with the first command even when the rollout has moved
    on since (the first one was applied): it is the same request, not a new one.
    """
    earlier = store.command_with_key(dedupe_key)
    if earlier is not None:
        return Submitted(earlier, repeated=True)
    _check(store, key, kind, actor)
    command = ManualCommand(now, str(kind), actor, reason, dict(args or {}), dedupe_key=dedupe_key)
    stored, written = store.add_command_once(key, command)
    return Submitted(stored, repeated=not written)


def _check(store: RolloutStore, key: str, kind: CommandKind, actor: str) -> None:
    stored = store.get(key)
    if stored is None:
        raise PermanentError(f"no rollout {key} is known to the controller")
    phase = Phase(stored.phase)
    if phase not in APPLIES_IN[kind]:
        allowed = ", ".join(sorted(p.value for p in APPLIES_IN[kind]))
        raise PermanentError(f"cannot {kind} {key}: it is {phase} (possible when: {allowed})")
    if not actor.strip():
        raise PermanentError("say who you are (actor), for the audit")
