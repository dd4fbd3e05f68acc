"""What a replica's sync does to the leases, in a few statements whatever their number:
renew all its own, take free or expired ones in batches, release many, and say which
replicas are alive. The same on Postgres, SQLite and in memory."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from controller.store import ManualCommand
from controller.store.records import TickWrite
from controller.store.sql import SqlStore
from tests.databases import postgres_server_url  # noqa: F401  (fixture)
from tests.store.test_store import T0, Store, _rollout, postgres_url, store  # noqa: F401

TTL = timedelta(seconds=15)


def _keys(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"ns/lease-{run}-{i}" for i in range(count)]


def _replicas() -> tuple[str, str, str]:
    """Holder names of this test alone (the Postgres database is shared by the module)."""
    run = uuid.uuid4().hex[:8]
    return f"a-{run}", f"b-{run}", f"c-{run}"


def test_a_renewal_moves_on_every_live_lease_of_its_holder_and_no_other(store: Store) -> None:  # noqa: F811
    a, b, _c = _replicas()
    mine, theirs = _keys(3), _keys(1)
    assert sorted(store.claim(mine, a, TTL, T0)) == sorted(mine)
    assert store.claim(theirs, b, TTL, T0) == theirs
    renewed = store.renew_held(a, TTL, T0 + timedelta(seconds=10))
    assert sorted(renewed) == sorted(mine)
    later = T0 + timedelta(seconds=20)  # past the first expiry, within the renewed one
    assert all(store.lease(k, later) is not None for k in mine)
    assert store.lease(theirs[0], later) is None


def test_an_expired_lease_is_not_renewed_but_taken_again_with_a_new_epoch(store: Store) -> None:  # noqa: F811
    a, _b, _c = _replicas()
    (key,) = _keys(1)
    store.claim([key], a, TTL, T0)
    late = T0 + timedelta(seconds=16)
    assert store.renew_held(a, TTL, late) == []
    assert store.claim([key], a, TTL, late) == [key]
    lease = store.lease(key, late)
    assert lease is not None and (lease.holder, lease.epoch) == (a, 2)


def test_a_claim_takes_free_expired_and_new_leases_never_live_ones(store: Store) -> None:  # noqa: F811
    a, b, _ = _replicas()
    live, expired, released, new = _keys(4)
    store.claim([expired], b, timedelta(seconds=1), T0)
    store.claim([live, released], b, TTL, T0 + timedelta(seconds=10))
    store.release_all([released], b)
    now = T0 + timedelta(seconds=20)
    taken = store.claim([live, expired, released, new], a, TTL, now, batch=2)
    assert sorted(taken) == sorted([expired, released, new])
    leases = {k: store.lease(k, now) for k in (live, expired, released, new)}
    assert {k: (v.holder, v.epoch) for k, v in leases.items() if v is not None} == {
        live: (b, 1),
        expired: (a, 2),
        released: (a, 2),
        new: (a, 1),
    }


def test_release_all_frees_only_the_holders_leases_and_keeps_their_epochs(store: Store) -> None:  # noqa: F811
    a, b, _c = _replicas()
    mine, theirs = _keys(2), _keys(1)
    store.claim(mine, a, TTL, T0)
    store.claim(theirs, b, TTL, T0)
    store.release_all([*mine, *theirs], a)
    assert all(store.lease(k, T0) is None for k in mine)
    assert store.lease(theirs[0], T0) is not None
    assert sorted(store.claim(mine, b, TTL, T0)) == sorted(mine)
    leases = [store.lease(k, T0) for k in mine]
    assert {(lease.holder, lease.epoch) for lease in leases if lease is not None} == {(b, 2)}


def test_the_heartbeat_lists_the_live_replicas(store: Store) -> None:  # noqa: F811
    run = uuid.uuid4().hex[:8]
    a, b = f"a-{run}", f"b-{run}"
    assert store.heartbeat(a, TTL, T0)[a] == T0 + TTL
    live = store.heartbeat(b, TTL, T0 + timedelta(seconds=5))
    assert {a, b} <= set(live)
    # with the moment each heartbeat runs out, sorted by name
    assert (live[a], live[b]) == (T0 + TTL, T0 + timedelta(seconds=5) + TTL)
    assert list(live) == sorted(live)
    later = store.heartbeat(b, TTL, T0 + timedelta(seconds=16))
    assert b in later and a not in later  # a's row expired: a died
    store.leave(b)
    assert b not in store.heartbeat(a, TTL, T0 + timedelta(seconds=17))


def test_summaries_carry_what_a_sync_needs(store: Store) -> None:  # noqa: F811
    _a, _b, _c = _replicas()
    (key,) = _keys(1)
    row = _rollout(key, phase="RolledBack")
    store.commit(TickWrite(replace(row, state={"restorePending": True}), None))
    (summary,) = [s for s in store.summaries() if s.key == key]
    assert (summary.phase, summary.candidate_version, summary.restore_pending) == (
        "RolledBack",
        "v7",
        True,
    )
    assert summary.updated_at == T0


def test_a_tick_reads_its_lease_row_and_commands_at_once(store: Store) -> None:  # noqa: F811
    a, _b, _c = _replicas()
    (key,) = _keys(1)
    stored = store.commit(TickWrite(_rollout(key), None))
    first = store.add_command(key, ManualCommand(T0, "pause", "alice", "look"))
    second = store.add_command(key, ManualCommand(T0, "resume", "alice", "go"))
    assert first.id is not None
    store.claim([key], a, TTL, T0)
    read = store.read_tick(key, T0, commands_after=lambda row: first.id)
    assert read.lease is not None and (read.lease.holder, read.lease.epoch) == (a, 1)
    assert read.stored is not None and read.stored.revision == stored.revision
    assert [c.id for c in read.commands] == [second.id]
    ended = store.read_tick(key, T0 + timedelta(seconds=16), commands_after=lambda row: None)
    assert ended.lease is None and ended.commands == ()
    missing = store.read_tick(f"{key}-none", T0, commands_after=lambda row: 0)
    assert (missing.lease, missing.stored) == (None, None)


def test_a_ticks_read_sees_a_lease_without_a_row_and_a_row_without_a_lease(
    store: Store,  # noqa: F811
) -> None:
    a, _b, _c = _replicas()
    new, released = _keys(2)
    store.claim([new, released], a, TTL, T0)
    read = store.read_tick(new, T0, commands_after=lambda row: 0)
    assert read.lease is not None and (read.lease.holder, read.stored) == (a, None)
    stored = store.commit(TickWrite(_rollout(released), None))
    store.release(released, a)
    read = store.read_tick(released, T0, commands_after=lambda row: None)
    assert (read.lease, read.stored, read.commands) == (None, stored, ())


def test_a_ticks_read_and_fence_open_no_transaction(
    postgres_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Under READ COMMITTED each statement has its own snapshot anyway: a read-only
    # transaction around the tick's reads only added a BEGIN and a COMMIT round trip
    # each. libpq's protocol trace shows what the client sends.
    sql = SqlStore(postgres_url)
    try:
        (key,), (a, _, _) = _keys(1), _replicas()
        sql.claim([key], a, TTL, T0)
        sql.read_tick(key, T0, commands_after=lambda row: None)  # the pool has a connection
        raw = sql.engine.raw_connection()
        pgconn = raw.driver_connection.pgconn  # type: ignore[union-attr]
        raw.close()
        trace = tmp_path / "trace.txt"
        with trace.open("w") as stream:
            pgconn.trace(stream.fileno())
            read = sql.read_tick(key, T0, commands_after=lambda row: 0)
            lease = sql.lease(key, T0)
            pgconn.untrace()
        assert read.lease is not None and read.lease == lease
        sent = [line.split("\t") for line in trace.read_text().splitlines()]
        queries = [f[4] for f in sent if len(f) > 4 and f[1] == "F" and f[3] in ("Query", "Parse")]
        assert sum("SELECT leases." in q for q in queries) == 2
        assert not [q for q in queries if "BEGIN" in q or "COMMIT" in q]
    finally:
        sql.close()
