"""The audit store: current rollout state, the append-only audit trail, leases, and the
outbox with its deliveries to Slack and other sinks.

`records` and `base` are plain data and Protocols (no SQLAlchemy), so the pure
engine can depend on them; `sql` is the SQLAlchemy implementation (Postgres in
production, SQLite embedded), `memory` the in-memory one for tests and the demo.
"""

from controller.store.base import LeaseStore, NotificationStore, RolloutStore, StaleStateError
from controller.store.records import (
    AnalysisRecord,
    Delivery,
    DeliveryStatus,
    Lease,
    ManualCommand,
    NotificationThread,
    OutboxMessage,
    QueuedMessage,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)

__all__ = [
    "AnalysisRecord",
    "Delivery",
    "DeliveryStatus",
    "Lease",
    "LeaseStore",
    "ManualCommand",
    "NotificationStore",
    "NotificationThread",
    "OutboxMessage",
    "QueuedMessage",
    "RolloutStore",
    "RouteActionRecord",
    "StaleStateError",
    "StoredRollout",
    "TickWrite",
    "TransitionRecord",
]
