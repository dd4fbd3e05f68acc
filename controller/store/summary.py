"""How an outbox message's own status sums up its deliveries to every sink.

One pure function, shared by every store, so `canaryctl status` and `history`
read the same thing from Postgres, SQLite and memory: a message is `sent` once
each sink has it (or had nowhere to put it), `failed` once each sink is done and
one of them gave up for good, and otherwise still on its way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controller.store.records import Delivery, DeliveryStatus

#: statuses of a message (or a delivery) that some worker still has to act on
OPEN = (DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value)


@dataclass(frozen=True)
class OutboxSummary:
    status: str
    attempts: int
    last_error: str | None


def outbox_summary(deliveries: Iterable[Delivery], sinks: Sequence[str]) -> OutboxSummary:
    """The message's status over `sinks` (a sink not tried yet is pending), the
    attempts of every delivery, and the errors of those not delivered."""
    by_sink = {d.sink: d for d in deliveries}
    statuses = [
        DeliveryStatus(by_sink[sink].status) if sink in by_sink else DeliveryStatus.PENDING
        for sink in sinks
    ]
    if not statuses:
        status = DeliveryStatus.PENDING
    elif all(s is DeliveryStatus.SKIPPED for s in statuses):
        status = DeliveryStatus.SKIPPED
    elif all(s in (DeliveryStatus.SENT, DeliveryStatus.SKIPPED) for s in statuses):
        status = DeliveryStatus.SENT
    elif all(s.done for s in statuses):
        status = DeliveryStatus.FAILED
    elif DeliveryStatus.SENDING in statuses:
        status = DeliveryStatus.SENDING
    else:
        status = DeliveryStatus.PENDING
    errors = [
        f"{d.sink}: {d.last_error}"
        for d in sorted(by_sink.values(), key=lambda d: d.sink)
        if d.last_error and d.status not in (DeliveryStatus.SENT, DeliveryStatus.SKIPPED)
    ]
    return OutboxSummary(
        status=status.value,
        attempts=sum(d.attempts for d in by_sink.values()),
        last_error="; ".join(errors) or None,
    )
