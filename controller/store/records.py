"""What the store keeps, as frozen plain data (no SQLAlchemy), shared by every store.

JSON-valued fields (`policy`, `state`, `evidence`, ...) hold plain dicts of JSON
types, so any store can keep them and the audit can be read without our code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonDict = Mapping[str, Any]


@dataclass(frozen=True)
class StoredRollout:
    """The current state of one rollout; `revision` grows by one on every write."""

    key: str  # namespace/name
    namespace: str
    name: str
    generation: int
    candidate_version: str
    phase: str
    step: int
    policy: JsonDict
    state: JsonDict
    revision: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TransitionRecord:
    """One change of phase or step, and why (append-only)."""

    at: datetime
    from_phase: str
    to_phase: str
    from_step: int
    to_step: int
    reason: str
    actor: str = "controller"
    details: JsonDict = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class AnalysisRecord:
    """One verdict of one look: a metric in a cohort, with its evidence (append-only)."""

    at: datetime
    tick: int
    metric: str
    cohort: str
    verdict: str
    query: str = ""
    baseline_value: float | None = None
    candidate_value: float | None = None
    baseline_samples: float | None = None
    candidate_samples: float | None = None
    evidence: JsonDict = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class RouteActionRecord:
    """A write to (or restore of) the route, with what was wanted and found (append-only)."""

    at: datetime
    action: str
    desired: JsonDict
    observed: JsonDict | None = None
    changed: bool = False
    error: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class ManualCommand:
    """A command from a human (promote, pause, resume, abort), who, when and why."""

    at: datetime
    command: str
    actor: str
    reason: str = ""
    args: JsonDict = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True)
class OutboxMessage:
    """A notification to deliver; `dedupe_key` makes a second write of it a no-op."""

    dedupe_key: str
    event: str
    payload: JsonDict
    created_at: datetime
    status: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    id: int | None = None


@dataclass(frozen=True)
class TickWrite:
    """Everything one tick writes, in one transaction: the new state and its audit."""

    rollout: StoredRollout
    expected_revision: int | None  # None: the rollout is new
    transitions: tuple[TransitionRecord, ...] = ()
    analyses: tuple[AnalysisRecord, ...] = ()
    route_actions: tuple[RouteActionRecord, ...] = ()
    messages: tuple[OutboxMessage, ...] = ()
