"""The audit store: current rollout state, the append-only audit trail, leases, outbox.

`records` and `base` are plain data and a Protocol (no SQLAlchemy), so the pure
engine can depend on them; `sql` is the SQLAlchemy implementation (Postgres in
production, SQLite embedded), `memory` the in-memory one for tests and the demo.
"""

from controller.store.base import LeaseStore, RolloutStore, StaleStateError
from controller.store.records import (
    AnalysisRecord,
    ManualCommand,
    OutboxMessage,
    RouteActionRecord,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)

__all__ = [
    "AnalysisRecord",
    "LeaseStore",
    "ManualCommand",
    "OutboxMessage",
    "RolloutStore",
    "RouteActionRecord",
    "StaleStateError",
    "StoredRollout",
    "TickWrite",
    "TransitionRecord",
]
