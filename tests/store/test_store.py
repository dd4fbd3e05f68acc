"""The store contract, on real Postgres, on SQLite, and in memory."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from controller.errors import PermanentError
from controller.store import (
    AnalysisRecord,
    Lease,
    ManualCommand,
    OutboxMessage,
    RouteActionRecord,
    StaleStateError,
    StoredRollout,
    TickWrite,
    TransitionRecord,
)
from controller.store.memory import MemoryStore
from controller.store.schema import AUDIT_TABLES, Base
from controller.store.sql import SqlStore, migrate
from tests.databases import postgres_server_url  # noqa: F401  (fixture)

T0 = datetime(2026, 11, 22, 8, 0, tzinfo=UTC)
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


def _rollout(key: str, *, phase: str = "Pending", step: int = 0) -> StoredRollout:
    namespace, name = key.split("/")
    return StoredRollout(
        key=key,
        namespace=namespace,
        name=name,
        generation=1,
        candidate_version="v7",
        phase=phase,
        step=step,
        policy={"spec": {"model": "bot"}},
        state={"tick": 0},
        updated_at=T0,
    )


def _key() -> str:
    return f"llm/bot-{uuid.uuid4().hex[:8]}"


def _transition(src: str, dst: str, at: datetime = T0) -> TransitionRecord:
    return TransitionRecord(at, src, dst, 0, 1, f"{src} -> {dst}", details={"why": "test"})


def test_a_new_rollout_then_a_tick(store: Store) -> None:
    key = _key()
    first = store.commit(TickWrite(_rollout(key), None, transitions=(_transition("", "Pending"),)))
    assert first.revision == 1
    assert first.created_at == T0
    later = T0 + timedelta(seconds=30)
    second = store.commit(
        TickWrite(
            _rollout(key, phase="Progressing", step=1).__class__(
                **{**_rollout(key, phase="Progressing", step=1).__dict__, "updated_at": later}
            ),
            expected_revision=1,
            transitions=(_transition("Pending", "Progressing", later),),
        )
    )
    assert (second.revision, second.phase, second.step) == (2, "Progressing", 1)
    assert second.created_at == T0
    assert second.updated_at == later
    assert store.get(key) == second
    assert [t.to_phase for t in store.transitions(key)] == ["Pending", "Progressing"]
    assert store.transitions(key)[1].details == {"why": "test"}


def test_a_stale_tick_writes_nothing(store: Store) -> None:
    key = _key()
    store.commit(TickWrite(_rollout(key), None))
    store.commit(TickWrite(_rollout(key, phase="Progressing"), 1))
    with pytest.raises(StaleStateError):
        store.commit(
            TickWrite(
                _rollout(key, phase="RolledBack"),
                expected_revision=1,
                transitions=(_transition("Progressing", "RolledBack"),),
                messages=(OutboxMessage("k1", "rolled-back", {}, T0),),
            )
        )
    assert store.get(key).phase == "Progressing"  # type: ignore[union-attr]
    assert store.transitions(key) == []
    assert store.outbox(key) == []


def test_creating_the_same_rollout_twice_is_stale(store: Store) -> None:
    key = _key()
    store.commit(TickWrite(_rollout(key), None))
    with pytest.raises(StaleStateError):
        store.commit(TickWrite(_rollout(key), None))


def test_audit_rows_keep_every_field_in_order(store: Store) -> None:
    key = _key()
    analyses = tuple(
        AnalysisRecord(
            at=T0,
            tick=tick,
            metric="refusal-rate",
            cohort=cohort,
            verdict="PASS",
            query='sum(llm_refusals_total{version="v7"})',
            baseline_value=0.05,
            candidate_value=0.051,
            baseline_samples=1000,
            candidate_samples=250,
            evidence={"upper": 0.012, "limit": "maxIncrease"},
        )
        for tick in (1, 2)
        for cohort in ("overall", "mobile")
    )
    action = RouteActionRecord(T0, "apply", {"weight": 5}, {"weight": 0}, changed=True)
    store.commit(TickWrite(_rollout(key), None, analyses=analyses, route_actions=(action,)))
    found = store.analyses(key)
    assert [(a.tick, a.cohort) for a in found] == [(a.tick, a.cohort) for a in analyses]
    assert found[0].evidence == {"upper": 0.012, "limit": "maxIncrease"}
    assert found[0].candidate_samples == 250
    assert [a.tick for a in store.analyses(key, since_tick=2)] == [2, 2]
    [stored_action] = store.route_actions(key)
    assert (stored_action.desired, stored_action.observed, stored_action.changed) == (
        {"weight": 5},
        {"weight": 0},
        True,
    )


def _look(tick: int, at: datetime) -> tuple[AnalysisRecord, ...]:
    """A look's analysis rows, with the strings and numbers a text encoding could bend."""
    return tuple(
        AnalysisRecord(
            at=at,
            tick=tick,
            metric=metric,
            cohort=cohort,
            verdict="PASS" if tick % 2 else "INCONCLUSIVE",
            query='sum by (cohort, version) (rate(x{version=~"v7|v6", a="{\\"q\\",}"}[5m]))\n',
            baseline_value=0.1 + 0.2,
            candidate_value=float("inf") if cohort == "mobile" else None,
            baseline_samples=1e-300,
            candidate_samples=None,
            evidence={"upper": 0.012, "cells": [{"é": '\\"', "n": None}], "ok": True},
        )
        for metric in ("refusal-rate", "latency-p95")
        for cohort in ("overall", "mobile", "NULL")
    )


def test_a_look_that_only_adds_analysis_rows_keeps_every_field(store: Store) -> None:
    # On Postgres such a write goes as one statement; the same rows come back as
    # from a write that also has a transition (the general path).
    key, other = _key(), _key()
    for k in (key, other):
        store.commit(TickWrite(_rollout(k), None))
    later = T0 + timedelta(seconds=30)
    moved = replace(_rollout(key, phase="Progressing", step=2), updated_at=later)
    written = store.commit(TickWrite(moved, 1, analyses=_look(1, later)))
    assert (written.revision, written.phase, written.step) == (2, "Progressing", 2)
    assert (written.created_at, written.updated_at) == (T0, later)
    assert store.get(key) == written
    store.commit(
        TickWrite(
            replace(_rollout(other, phase="Progressing", step=2), updated_at=later),
            1,
            transitions=(_transition("Pending", "Progressing", later),),
            analyses=_look(1, later),
        )
    )
    found = [replace(a, id=None) for a in store.analyses(key)]
    assert found == [replace(a, id=None) for a in store.analyses(other)]
    assert found == list(_look(1, later))
    with pytest.raises(StaleStateError):
        store.commit(TickWrite(replace(moved, phase="RolledBack"), 1, analyses=_look(2, later)))
    assert store.get(key) == written
    assert [a.tick for a in store.analyses(key)] == [1] * 6


def test_a_transition_keeps_its_cause(store: Store) -> None:
    key = _key()
    paused = replace(_transition("Progressing", "Paused"), cause="Deadline")
    store.commit(TickWrite(_rollout(key), None, transitions=(_transition("", "Pending"), paused)))
    assert [t.cause for t in store.transitions(key)] == [None, "Deadline"]


def test_an_outbox_message_is_written_once(store: Store) -> None:
    key = _key()
    message = OutboxMessage(f"{key}/started", "started", {"text": "hi"}, T0)
    store.commit(TickWrite(_rollout(key), None, messages=(message,)))
    store.commit(TickWrite(_rollout(key), 1, messages=(message,)))
    [stored] = store.outbox(key)
    assert (stored.event, stored.payload, stored.status) == ("started", {"text": "hi"}, "pending")


def test_commands_are_read_after_a_cursor(store: Store) -> None:
    key = _key()
    store.commit(TickWrite(_rollout(key), None))
    pause = store.add_command(key, ManualCommand(T0, "pause", "alice", "looks odd"))
    store.add_command(key, ManualCommand(T0, "resume", "bob", "fine", {"x": 1}))
    assert [c.command for c in store.commands(key)] == ["pause", "resume"]
    [resume] = store.commands(key, after_id=pause.id or 0)
    assert (resume.actor, resume.reason, resume.args) == ("bob", "fine", {"x": 1})


def test_leases_expire_and_move_to_another_holder(store: Store) -> None:
    key, ttl = _key(), timedelta(seconds=15)
    assert store.acquire(key, "replica-a", ttl, T0)
    assert not store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=5))
    assert store.acquire(key, "replica-a", ttl, T0 + timedelta(seconds=10))  # renewal
    assert not store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=20))
    assert store.held_by("replica-a", T0 + timedelta(seconds=20)) == [key]
    # replica-a stops renewing: its lease ends 15 s after the last renewal
    assert store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=26))
    assert store.held_by("replica-a", T0 + timedelta(seconds=26)) == []
    assert not store.acquire(key, "replica-a", ttl, T0 + timedelta(seconds=27))
    store.release(key, "replica-a")  # not the holder: nothing happens
    assert store.held_by("replica-b", T0 + timedelta(seconds=27)) == [key]
    store.release(key, "replica-b")
    assert store.acquire(key, "replica-a", ttl, T0 + timedelta(seconds=28))


def test_the_lease_epoch_grows_each_time_the_lease_changes_hands(store: Store) -> None:
    key, ttl = _key(), timedelta(seconds=15)
    assert store.lease(key, T0) is None
    assert store.acquire(key, "replica-a", ttl, T0)
    assert store.lease(key, T0) == Lease(key, "replica-a", 1, T0 + ttl)
    assert store.acquire(key, "replica-a", ttl, T0 + timedelta(seconds=10))  # renewal
    assert store.lease(key, T0 + timedelta(seconds=10)) == Lease(
        key, "replica-a", 1, T0 + timedelta(seconds=25)
    )
    assert not store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=20))
    assert store.lease(key, T0 + timedelta(seconds=20)).epoch == 1  # type: ignore[union-attr]
    # expired: nobody holds it until someone takes it, and the taker gets a new epoch
    assert store.lease(key, T0 + timedelta(seconds=26)) is None
    assert store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=26))
    assert store.lease(key, T0 + timedelta(seconds=26)) == Lease(
        key, "replica-b", 2, T0 + timedelta(seconds=41)
    )
    # a release keeps the epoch: the next holder's is higher, even the same replica's
    store.release(key, "replica-b")
    assert store.lease(key, T0 + timedelta(seconds=27)) is None
    assert store.held_by("replica-b", T0 + timedelta(seconds=27)) == []
    assert store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=28))
    assert store.lease(key, T0 + timedelta(seconds=28)).epoch == 3  # type: ignore[union-attr]
    # the same holder after its own lease expired: a new tenure, a new epoch
    assert store.acquire(key, "replica-b", ttl, T0 + timedelta(seconds=60))
    assert store.lease(key, T0 + timedelta(seconds=60)).epoch == 4  # type: ignore[union-attr]
    # epochs are per rollout
    other = _key()
    assert store.acquire(other, "replica-a", ttl, T0 + timedelta(seconds=60))
    assert store.lease(other, T0 + timedelta(seconds=60)).epoch == 1  # type: ignore[union-attr]


def test_a_route_action_is_appended_without_a_revision(store: Store) -> None:
    key = _key()
    store.commit(
        TickWrite(_rollout(key), None, route_actions=(RouteActionRecord(T0, "apply", {}),))
    )
    refused = RouteActionRecord(
        T0 + timedelta(seconds=1),
        "apply",
        {"weight": 10},
        error="fenced: replica-b holds the lease now",
        reason="a stale replica's write toward the candidate was refused",
    )
    store.append_route_action(key, refused)
    actions = store.route_actions(key)
    assert [a.action for a in actions] == ["apply", "apply"]
    assert actions[-1] == replace(refused, id=actions[-1].id)
    assert store.get(key).revision == 1  # type: ignore[union-attr]  # the state is untouched
    with pytest.raises(PermanentError):
        store.append_route_action(_key(), refused)


def test_two_holders_racing_for_an_expired_lease_one_takes_it(postgres_url: str) -> None:
    key, ttl = _key(), timedelta(seconds=15)
    stores = [SqlStore(postgres_url) for _ in range(6)]
    assert stores[0].acquire(key, "replica-0", ttl, T0)
    later = T0 + timedelta(seconds=30)  # replica-0's lease has expired
    barrier = threading.Barrier(len(stores) - 1)
    won: list[str] = []

    def take(store: SqlStore, holder: str) -> None:
        barrier.wait()
        if store.acquire(key, holder, ttl, later):
            won.append(holder)

    threads = [
        threading.Thread(target=take, args=(s, f"replica-{n}"))
        for n, s in enumerate(stores)
        if n > 0
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1, won
    assert stores[0].lease(key, later) == Lease(key, won[0], 2, later + ttl)
    for store in stores:
        store.close()


@pytest.mark.parametrize("table", AUDIT_TABLES)
@pytest.mark.parametrize("verb", ["UPDATE", "DELETE"])
def test_audit_tables_refuse_updates_and_deletes(postgres_url: str, table: str, verb: str) -> None:
    store = SqlStore(postgres_url)
    key = _key()
    store.commit(
        TickWrite(
            _rollout(key),
            None,
            transitions=(_transition("", "Pending"),),
            analyses=(AnalysisRecord(T0, 1, "m", "overall", "PASS"),),
            route_actions=(RouteActionRecord(T0, "apply", {}),),
        )
    )
    store.add_command(key, ManualCommand(T0, "pause", "alice"))
    sql = f"UPDATE {table} SET at = at" if verb == "UPDATE" else f"DELETE FROM {table}"
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text(sql))
    store.close()


def test_sqlite_audit_tables_are_append_only_too(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    migrate(url)
    store = SqlStore(url)
    key = _key()
    store.commit(TickWrite(_rollout(key), None, transitions=(_transition("", "Pending"),)))
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as connection:
        connection.execute(text("DELETE FROM transitions"))
    store.close()


def test_a_transition_recorded_before_the_cause_column_reads_without_one(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url, "0002")
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO rollouts (key, namespace, name, generation, candidate_version,"
                " phase, step, policy, state, revision, created_at, updated_at) VALUES"
                " ('llm/old', 'llm', 'old', 1, 'v7', 'Pending', 0, '{}', '{}', 1, :t, :t)"
            ),
            {"t": T0},
        )
        connection.execute(
            text(
                "INSERT INTO transitions (rollout_id, at, from_phase, to_phase, from_step,"
                " to_step, reason, actor, details) VALUES"
                " (1, :t, '', 'Pending', -1, -1, 'new rollout', 'controller', '{}')"
            ),
            {"t": T0},
        )
    engine.dispose()
    migrate(url)
    store = SqlStore(url)
    [old] = store.transitions("llm/old")
    assert (old.reason, old.cause) == ("new rollout", None)
    store.close()
    migrate(url, "0002", downgrade=True)  # and back: the audit stays append-only
    engine = create_engine(url)
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM transitions"))
    engine.dispose()


def _diff(url: str) -> list[Any]:
    engine = create_engine(url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    engine.dispose()
    return list(diff)


def test_migrations_create_exactly_the_models(postgres_url: str, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'm.db'}"
    migrate(sqlite_url)
    assert _diff(postgres_url) == []
    assert _diff(sqlite_url) == []


def test_migrations_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    migrate(url)
    migrate(url, "base", downgrade=True)
    engine = create_engine(url)
    with engine.connect() as connection:
        tables = connection.execute(text("SELECT name FROM sqlite_master WHERE type='table'"))
        assert {row[0] for row in tables} == {"alembic_version"}
    engine.dispose()
    migrate(url)
    assert _diff(url) == []


def test_two_replicas_racing_on_one_rollout_one_wins(postgres_url: str) -> None:
    key = _key()
    replicas = [SqlStore(postgres_url) for _ in range(4)]
    replicas[0].commit(TickWrite(_rollout(key), None))
    outcomes: list[str] = []
    barrier = threading.Barrier(len(replicas))

    def tick(store: SqlStore, n: int) -> None:
        barrier.wait()
        try:
            store.commit(
                TickWrite(
                    _rollout(key, phase="Progressing", step=n),
                    expected_revision=1,
                    transitions=(_transition("Pending", f"Progressing-{n}"),),
                )
            )
            outcomes.append("won")
        except StaleStateError:
            outcomes.append("stale")

    threads = [threading.Thread(target=tick, args=(s, n)) for n, s in enumerate(replicas)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["stale", "stale", "stale", "won"]
    assert len(replicas[0].transitions(key)) == 1
    for store in replicas:
        store.close()
