"""What the store keeps, as frozen plain data (no SQLAlchemy), shared by every store.

JSON-valued fields (`policy`, `state`, `evidence`, ...) hold plain dicts of JSON
types, so any store can keep them and the audit can be read without our code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from controller.cases import EvalCase

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
    #: why a transition ended or paused the rollout, or a human's (a `Cause` code)
    cause: str | None = None


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
    #: why a write was made or refused outside a tick's decision (a route put back, a
    #: stale replica's write fenced off); None for the writes a tick decided
    reason: str | None = None


@dataclass(frozen=True)
class Lease:
    """Who owns a rollout until when, and the lease's `epoch`: the fencing token.

    The epoch grows by one every time the lease changes hands (another holder, or
    the same holder again after its lease expired or was released), and never
    goes back: a write stamped with an older epoch comes from a replica that has
    lost the rollout since, however sure it still is that it owns it.
    """

    key: str
    holder: str
    epoch: int
    expires_at: datetime


@dataclass(frozen=True)
class ManualCommand:
    """A command from a human (promote, pause, resume, abort), who, when and why.

    `dedupe_key` makes a command idempotent where it comes from a system that may
    deliver one request twice (a Slack button pressed twice, Slack's retries, two
    replicas behind one Ingress): the store keeps one command per key.
    """

    at: datetime
    command: str
    actor: str
    reason: str = ""
    args: JsonDict = field(default_factory=dict)
    id: int | None = None
    dedupe_key: str | None = None


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


class DeliveryStatus(StrEnum):
    """Where one message stands with one sink (Slack, a webhook, the console).

    A message's own `status` in the outbox sums up its deliveries to every
    configured sink: `sent` when each sink has it (or `skipped` it), `failed`
    when each sink is done and one gave up for good, otherwise `sending` while an
    attempt is in flight and `pending` between attempts.
    """

    PENDING = "pending"  # not tried yet, or waiting for `next_attempt_at` after a failure
    SENDING = "sending"  # an attempt was recorded and may be in flight (or died with its worker)
    SENT = "sent"
    SKIPPED = "skipped"  # the sink has nowhere to send it (e.g. no Slack channel in the policy)
    FAILED = "failed"  # permanently: a human must fix the cause (token, channel, ...)

    @property
    def done(self) -> bool:
        return self in (DeliveryStatus.SENT, DeliveryStatus.SKIPPED, DeliveryStatus.FAILED)


@dataclass(frozen=True)
class Delivery:
    """One outbox message's delivery to one sink, as visible in history and status.

    `attempts` counts attempts *recorded before sending*, so a worker that died
    after sending left `attempts > 0` behind: the next attempt must first look
    whether the message already arrived. While `status` is `sending`,
    `next_attempt_at` is when the attempt's claim runs out (another worker may
    then take it over); while `pending`, when the next attempt is due.
    """

    outbox_id: int
    sink: str
    status: str = DeliveryStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    ref: str | None = None  # where it went, e.g. the Slack message's `ts`


@dataclass(frozen=True)
class QueuedMessage:
    """An outbox message that one sink has not delivered yet, with that sink's progress."""

    rollout: str  # the rollout's key
    outbox_id: int
    dedupe_key: str
    event: str
    payload: JsonDict
    created_at: datetime
    status: str = DeliveryStatus.PENDING  # this sink's
    attempts: int = 0  # this sink's
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class NotificationThread:
    """Where a rollout's conversation lives in one sink: the message that opened it.

    For Slack, `channel` is the channel ID (chat.update and conversations.replies
    need the ID, not the name) and `ts` the top message's timestamp.
    """

    rollout: str
    sink: str
    channel: str
    ts: str
    created_at: datetime


@dataclass(frozen=True)
class TickWrite:
    """Everything one tick writes, in one transaction: the new state and its audit."""

    rollout: StoredRollout
    expected_revision: int | None  # None: the rollout is new
    transitions: tuple[TransitionRecord, ...] = ()
    analyses: tuple[AnalysisRecord, ...] = ()
    route_actions: tuple[RouteActionRecord, ...] = ()
    messages: tuple[OutboxMessage, ...] = ()
    #: the failing cells of a rollback (or a captured abort), for the regression set;
    #: a case already in the store (same ID) is not written again
    eval_cases: tuple[EvalCase, ...] = ()


@dataclass(frozen=True)
class SourceProblem:
    """Why a rollout's source holds it as it is (an invalid or vanished policy file),
    since when; not audit: updated in place and gone when the problem clears."""

    key: str
    problem: str
    since: datetime


@dataclass(frozen=True)
class RolloutSummary:
    """What the controller's sync needs of a rollout, without its policy or state JSON."""

    key: str
    phase: str
    candidate_version: str
    restore_pending: bool
    #: when the rollout was last committed (its last look, for a tick's slot)
    updated_at: datetime
    #: a gate runs (an ended rollout's postRollout / onRollback gate still needs ticks)
    gate_running: bool = False


@dataclass(frozen=True)
class TickRead:
    """What a tick reads before it acts, in one call: its lease, its row, and the
    manual commands after the cursor the caller derives from that row."""

    lease: Lease | None
    stored: StoredRollout | None
    commands: tuple[ManualCommand, ...] = ()
