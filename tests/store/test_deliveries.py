"""Delivery of the outbox per sink, and notification threads: Postgres, SQLite, memory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from controller.store import DeliveryStatus, OutboxMessage, StoredRollout, TickWrite
from controller.store.memory import MemoryStore
from controller.store.sql import SqlStore, migrate
from tests.databases import postgres_server_url  # noqa: F401  (fixture)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
SINKS = ("slack", "webhook")
Store = MemoryStore | SqlStore


@pytest.fixture(scope="module")
def postgres_url(postgres_server_url: str) -> str:  # noqa: F811
    migrate(postgres_server_url)
    return postgres_server_url


@pytest.fixture(params=["postgres", "sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'canary.db'}"
        migrate(url)
    sql = SqlStore(url)
    yield sql
    sql.close()


def _rollout(key: str) -> StoredRollout:
    namespace, name = key.split("/")
    return StoredRollout(key, namespace, name, 1, "v7", "Pending", 0, {}, {}, updated_at=T0)


def _with_messages(store: Store, *events: str) -> str:
    """A new rollout whose first tick queued one message per event; returns its key."""
    key = f"llm/bot-{uuid.uuid4().hex[:8]}"
    messages = tuple(
        OutboxMessage(f"{key}#{i}#{event}", event, {"event": event, "i": i}, T0)
        for i, event in enumerate(events)
    )
    store.commit(TickWrite(_rollout(key), None, messages=messages))
    return key


def _mine(store: Store, sink: str, key: str) -> list[tuple[str, str, int]]:
    return [(q.event, q.status, q.attempts) for q in store.undelivered(sink) if q.rollout == key]


def test_undelivered_messages_come_oldest_first_with_their_rollout(store: Store) -> None:
    first = _with_messages(store, "started", "step-advanced")
    second = _with_messages(store, "started")
    queued = [q for q in store.undelivered("slack") if q.rollout in (first, second)]
    assert [(q.rollout, q.event) for q in queued] == [
        (first, "started"),
        (first, "step-advanced"),
        (second, "started"),
    ]
    head = queued[0]
    assert (head.dedupe_key, head.payload, head.created_at) == (
        f"{first}#0#started",
        {"event": "started", "i": 0},
        T0,
    )
    assert (head.status, head.attempts, head.next_attempt_at) == ("pending", 0, None)
    assert [q.outbox_id for q in queued] == sorted(q.outbox_id for q in queued)


def test_an_attempt_is_recorded_before_sending_and_claimed_once(store: Store) -> None:
    key = _with_messages(store, "started")
    [queued] = [q for q in store.undelivered("slack") if q.rollout == key]
    until = T0 + timedelta(seconds=60)
    claim = {"attempts": 0, "now": T0, "until": until, "sinks": SINKS}
    assert store.claim_delivery(queued.outbox_id, "slack", **claim)
    assert not store.claim_delivery(queued.outbox_id, "slack", **claim)  # someone has it
    assert _mine(store, "slack", key) == [("started", "sending", 1)]
    [message] = store.outbox(key)
    assert (message.status, message.attempts) == ("sending", 1)
    [delivery] = store.deliveries(key)
    assert (delivery.sink, delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        "slack",
        "sending",
        1,
        until,
    )
    # While the claim runs, nobody else may try; once it has run out, one may.
    later = {"attempts": 1, "until": until + timedelta(seconds=60), "sinks": SINKS}
    assert not store.claim_delivery(queued.outbox_id, "slack", now=T0, **later)
    assert store.claim_delivery(queued.outbox_id, "slack", now=until, **later)
    assert _mine(store, "slack", key) == [("started", "sending", 2)]
    assert store.outbox(key)[0].attempts == 2


def test_a_message_is_sent_once_every_sink_has_it(store: Store) -> None:
    key = _with_messages(store, "rolled-back")
    [queued] = [q for q in store.undelivered("slack") if q.rollout == key]
    oid, at = queued.outbox_id, T0 + timedelta(seconds=1)
    for sink in SINKS:
        assert store.claim_delivery(oid, sink, attempts=0, now=T0, until=at, sinks=SINKS)
    assert store.finish_delivery(
        oid, "slack", attempt=1, status="sent", now=at, sinks=SINKS, ref="1700000000.000100"
    )
    assert _mine(store, "slack", key) == []
    assert _mine(store, "webhook", key) == [("rolled-back", "sending", 1)]
    assert store.outbox(key)[0].status == "sending"
    assert store.finish_delivery(oid, "webhook", attempt=1, status="sent", now=at, sinks=SINKS)
    [message] = store.outbox(key)
    assert (message.status, message.attempts, message.last_error) == ("sent", 2, None)
    slack, webhook = store.deliveries(key)
    assert (slack.sink, slack.status, slack.ref, slack.delivered_at) == (
        "slack",
        "sent",
        "1700000000.000100",
        at,
    )
    assert (webhook.sink, webhook.ref, webhook.next_attempt_at) == ("webhook", None, None)
    assert _mine(store, "webhook", key) == []


def test_a_transient_failure_waits_and_a_permanent_one_is_visible(store: Store) -> None:
    key = _with_messages(store, "started")
    [queued] = [q for q in store.undelivered("slack") if q.rollout == key]
    oid, retry_at = queued.outbox_id, T0 + timedelta(seconds=30)
    store.claim_delivery(oid, "slack", attempts=0, now=T0, until=T0, sinks=SINKS)
    store.finish_delivery(
        oid,
        "slack",
        attempt=1,
        status="pending",
        now=T0,
        sinks=SINKS,
        error="slack chat.postMessage: rate limited",
        retry_at=retry_at,
    )
    [again] = [q for q in store.undelivered("slack") if q.rollout == key]
    assert (again.status, again.attempts, again.next_attempt_at) == ("pending", 1, retry_at)
    message = store.outbox(key)[0]
    assert (message.status, message.last_error) == (
        "pending",
        "slack: slack chat.postMessage: rate limited",
    )
    assert not store.claim_delivery(oid, "slack", attempts=1, now=T0, until=T0, sinks=SINKS)
    assert store.claim_delivery(oid, "slack", attempts=1, now=retry_at, until=T0, sinks=SINKS)
    store.finish_delivery(
        oid,
        "slack",
        attempt=2,
        status="failed",
        now=retry_at,
        sinks=SINKS,
        error="channel_not_found",
    )
    assert _mine(store, "slack", key) == []  # never retried again
    store.claim_delivery(oid, "webhook", attempts=0, now=T0, until=T0, sinks=SINKS)
    store.finish_delivery(oid, "webhook", attempt=1, status="skipped", now=T0, sinks=SINKS)
    [message] = store.outbox(key)
    assert (message.status, message.attempts, message.last_error) == (
        "failed",
        3,
        "slack: channel_not_found",
    )


def test_a_late_result_of_a_taken_over_attempt_is_ignored(store: Store) -> None:
    key = _with_messages(store, "started")
    [queued] = [q for q in store.undelivered("slack") if q.rollout == key]
    oid = queued.outbox_id
    store.claim_delivery(oid, "slack", attempts=0, now=T0, until=T0, sinks=("slack",))
    store.claim_delivery(oid, "slack", attempts=1, now=T0, until=T0, sinks=("slack",))
    late = {"status": "pending", "now": T0, "sinks": ("slack",), "error": "timed out"}
    assert not store.finish_delivery(oid, "slack", attempt=1, **late)
    assert store.finish_delivery(oid, "slack", attempt=2, status="sent", now=T0, sinks=("slack",))
    assert store.outbox(key)[0].status == "sent"
    assert store.deliveries(key)[0].last_error is None


def test_every_skipped_sink_marks_the_message_skipped(store: Store) -> None:
    key = _with_messages(store, "started")
    [queued] = [q for q in store.undelivered("slack") if q.rollout == key]
    store.claim_delivery(queued.outbox_id, "slack", attempts=0, now=T0, until=T0, sinks=["slack"])
    store.finish_delivery(
        queued.outbox_id, "slack", attempt=1, status="skipped", now=T0, sinks=["slack"]
    )
    assert store.outbox(key)[0].status == DeliveryStatus.SKIPPED


def test_the_outbox_depth_counts_messages_some_sink_still_owes(store: Store) -> None:
    before = store.undelivered_count()
    key = _with_messages(store, "started", "promoted")
    assert store.undelivered_count() == before + 2
    oid = store.outbox(key)[0].id or 0
    store.claim_delivery(oid, "slack", attempts=0, now=T0, until=T0, sinks=["slack"])
    assert store.undelivered_count() == before + 2  # in flight still counts
    store.finish_delivery(oid, "slack", attempt=1, status="sent", now=T0, sinks=["slack"])
    assert store.undelivered_count() == before + 1


def test_the_first_thread_saved_stays(store: Store) -> None:
    key = _with_messages(store, "started")
    assert store.thread(key, "slack") is None
    first = store.save_thread(key, "slack", channel="C0001", ts="1700000000.000100", now=T0)
    second = store.save_thread(key, "slack", channel="C0002", ts="1700000099.000100", now=T0)
    assert first == second == store.thread(key, "slack")
    assert (first.rollout, first.sink, first.channel, first.ts, first.created_at) == (
        key,
        "slack",
        "C0001",
        "1700000000.000100",
        T0,
    )
    assert store.thread(key, "webhook") is None


def test_replicas_racing_for_one_message_one_sends_it(postgres_url: str) -> None:
    replicas = [SqlStore(postgres_url) for _ in range(4)]
    key = _with_messages(replicas[0], "rolled-back")
    oid = replicas[0].outbox(key)[0].id or 0
    barrier = threading.Barrier(len(replicas))
    won: list[bool] = []

    def claim(store: SqlStore) -> None:
        barrier.wait()
        won.append(
            store.claim_delivery(oid, "slack", attempts=0, now=T0, until=T0, sinks=["slack"])
        )

    threads = [threading.Thread(target=claim, args=(s,)) for s in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False, False, False, True]
    assert replicas[0].deliveries(key)[0].attempts == 1
    for store in replicas:
        store.close()


def test_messages_queued_before_migration_0002_are_delivered_after_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate(url, "0001")
    old = SqlStore(url)
    with old.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO rollouts (key, namespace, name, generation, candidate_version,"
                " phase, step, policy, state, revision, created_at, updated_at) VALUES"
                " ('llm/bot', 'llm', 'bot', 1, 'v7', 'Progressing', 0, '{}', '{}', 1,"
                " '2026-11-22 08:00:00', '2026-11-22 08:00:00')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO outbox (rollout_id, dedupe_key, event, payload, created_at, status,"
                " attempts) VALUES (1, 'k1', 'started', '{}', '2026-11-22 08:00:00', 'pending', 0)"
            )
        )
    old.close()
    migrate(url)
    store = SqlStore(url)
    [queued] = store.undelivered("slack")
    assert (queued.rollout, queued.dedupe_key, queued.created_at) == ("llm/bot", "k1", T0)
    assert store.claim_delivery(
        queued.outbox_id, "slack", attempts=0, now=T0, until=T0, sinks=["slack"]
    )
    store.close()
