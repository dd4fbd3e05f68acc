"""The SQLAlchemy store: Postgres (psycopg 3) in production, SQLite embedded.

A tick is one transaction: the rollout row is updated only if its `revision` is
still the one the tick read (optimistic concurrency: a replica that lost its lease
cannot overwrite the new owner's state), and the audit rows and outbox messages
go in with it or not at all.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from select import POLLIN, POLLPRI
from select import poll as socket_poll
from typing import Any, TypeVar, cast

import psycopg
from alembic import command
from alembic.config import Config
from psycopg.abc import RV, PQGen
from psycopg.errors import _WaitTimeout  # what `Connection.wait` raises at its timeout
from sqlalchemy import (
    ColumnElement,
    Engine,
    String,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Row, make_url
from sqlalchemy.exc import DisconnectionError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from controller.cases import EvalCase, export_row
from controller.errors import PermanentError, TransientError
from controller.settings import Settings, redact_url
from controller.store.base import StaleStateError
from controller.store.records import (
    AnalysisRecord,
    Delivery,
    DeliveryStatus,
    Lease,
    ManualCommand,
    NotificationThread,
    OutboxMessage,
    QueuedMessage,
    RolloutSummary,
    RouteActionRecord,
    SourceProblem,
    StoredRollout,
    TickRead,
    TickWrite,
    TransitionRecord,
)
from controller.store.schema import (
    NO_HOLDER,
    AnalysisRow,
    DeliveryRow,
    EvalCaseRow,
    LeaseRow,
    ManualCommandRow,
    OutboxRow,
    ReplicaRow,
    RolloutRow,
    RouteActionRow,
    SourceProblemRow,
    ThreadRow,
    TransitionRow,
)
from controller.store.summary import OPEN, outbox_summary

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(
    url: str,
    revision: str = "head",
    *,
    downgrade: bool = False,
    timeouts: DatabaseTimeouts | None = None,
) -> None:
    """Upgrade (or downgrade) the database at `url` to `revision` (`canaryctl db upgrade`).

    On Postgres, connecting is bounded by `timeouts` and a dead peer is noticed by
    TCP keepalives, so `canaryctl run` facing a black-holed database fails at start
    instead of hanging; no statement timeout, since a migration may take long."""
    run = command.downgrade if downgrade else command.upgrade
    config = _config(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        config.attributes["connect_args"] = (timeouts or DatabaseTimeouts()).connection_args()
    try:
        run(config, revision)
    except OperationalError as exc:
        raise TransientError(f"database {redact_url(url)} is unreachable: {exc.orig}") from exc


def _command(r: ManualCommandRow) -> ManualCommand:
    return ManualCommand(_utc(r.at), r.command, r.actor, r.reason, r.args, r.id, r.dedupe_key)


def _utc(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything here is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long the store waits for Postgres, so that a database that is down, or
    black-holed (the connection open, no bytes coming back), fails a call within
    seconds instead of freezing the tick that made it.

    `connect_seconds` bounds opening a connection (libpq's `connect_timeout`, whole
    seconds, at least 2); `statement_seconds` is the server's `statement_timeout`;
    the client gives up on any one answer `ANSWER_MARGIN_SECONDS` after it (a server
    that never answers cannot enforce its own timeout) and closes the connection;
    `keepalive_seconds` is the idle time before TCP keepalive probes, and the
    `tcp_user_timeout` for unacknowledged data, so a dead peer is noticed on an idle
    pooled connection too; `pool_seconds` bounds the wait for a free pooled connection.
    """

    connect_seconds: int = 5
    statement_seconds: float = 5.0
    keepalive_seconds: int = 10
    pool_seconds: float = 5.0

    @property
    def answer_seconds(self) -> float:
        return self.statement_seconds + ANSWER_MARGIN_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> DatabaseTimeouts:
        return cls(
            connect_seconds=settings.database_connect_timeout_seconds,
            statement_seconds=settings.database_statement_timeout_seconds,
            keepalive_seconds=settings.database_keepalive_seconds,
            pool_seconds=settings.database_pool_timeout_seconds,
        )

    def connect_args(self, url: URL) -> dict[str, Any]:
        """libpq parameters for these timeouts (any `options` of the URL are kept)."""
        statement = f"-c statement_timeout={round(self.statement_seconds * 1000)}"
        given = url.query.get("options")
        given = " ".join(given) if isinstance(given, tuple) else given
        return {
            **self.connection_args(),
            "options": f"{given} {statement}" if given else statement,
        }

    def connection_args(self) -> dict[str, Any]:
        """libpq parameters that bound connecting and notice a dead peer, with no
        statement timeout: what migrations use, whose statements may take long."""
        return {
            "connect_timeout": self.connect_seconds,
            "keepalives": 1,
            "keepalives_idle": self.keepalive_seconds,
            "keepalives_interval": max(1, self.keepalive_seconds // 3),
            "keepalives_count": 3,
            "tcp_user_timeout": self.keepalive_seconds * 1000,
        }


#: how long after the statement timeout the client stops waiting for an answer
ANSWER_MARGIN_SECONDS = 1.0


class _AnsweredConnection(psycopg.Connection[Any]):
    """A psycopg connection that stops waiting for an answer after `answer_seconds`.

    psycopg waits for the server without a limit once a query is sent; the server's
    own `statement_timeout` cannot help when the server (or something in between)
    accepts bytes and never answers. The wait gets a limit here; when it passes, the
    connection is closed (its protocol state is unknown), so the pool drops it.
    """

    answer_seconds: float | None = None

    def wait(self, gen: PQGen[RV], interval: float = 0.1, timeout: float | None = None) -> RV:
        try:
            return super().wait(
                gen, interval, timeout if timeout is not None else self.answer_seconds
            )
        except _WaitTimeout as exc:
            self.close()
            raise psycopg.OperationalError(
                f"no answer from the database within {self.answer_seconds:g} s"
            ) from exc


def create_db_engine(url: str, timeouts: DatabaseTimeouts | None = None) -> Engine:
    """An engine for `url`; on Postgres (psycopg) every wait is bounded by `timeouts`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        timeouts = timeouts or DatabaseTimeouts()
        engine = create_engine(
            url,
            pool_timeout=timeouts.pool_seconds,
            connect_args=timeouts.connect_args(parsed),
        )
        answer_seconds = timeouts.answer_seconds
        event.listen(engine, "checkout", _dead_at_checkout)

        @event.listens_for(engine, "do_connect")
        def _bounded_connection(
            _dialect: Any, _record: Any, cargs: Any, cparams: Any
        ) -> _AnsweredConnection:
            connection = _AnsweredConnection.connect(*cargs, **cparams)
            connection.answer_seconds = answer_seconds
            return connection

        return engine
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            cursor.close()

    return engine


def _dead_at_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled Postgres connection the server has closed, without a round trip.

    What `pool_pre_ping` does with a `SELECT 1` at every checkout (three a tick), this
    does by looking at the socket: an idle connection has nothing to read unless the
    server closed it or said why it will (a restart, `pg_terminate_backend`, an idle
    timeout), or TCP keepalive found the peer dead (`DatabaseTimeouts`). The pool then
    drops it and checks out another, as after a failed ping. A peer that vanished and
    is not yet known dead is found by the statement's own bounded wait, as a ping
    would have been (`_AnsweredConnection`).
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        raise DisconnectionError("the connection is closed")
    poll = socket_poll()
    poll.register(dbapi_connection.pgconn.socket, POLLIN | POLLPRI)
    if poll.poll(0):
        raise DisconnectionError("the server closed the connection, or is closing it")


class SqlStore:
    """RolloutStore and LeaseStore on a SQL database migrated by `migrate`."""

    def __init__(
        self, url: str, *, engine: Engine | None = None, timeouts: DatabaseTimeouts | None = None
    ) -> None:
        self.url = url
        self.engine = engine or create_db_engine(url, timeouts)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        #: the same pool, its connections in autocommit while checked out from here
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        with self._errors(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """A transaction on a bare connection: what a tick's commit uses, Core
        statements only. A `Session` would build and tear down its
        unit of work, and ORM-enabled statements look for objects to synchronise, on
        every call: several times a tick, for rows it never keeps."""
        with self._errors(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads outside any transaction (autocommit): a tick's read
        and its fence. Under READ COMMITTED every statement takes its own snapshot,
        in a transaction or not, so a read-only transaction buys nothing but its
        BEGIN and COMMIT, two round trips; the tick's one transaction is its commit."""
        with self._errors(), self._autocommit.connect() as connection:
            yield connection

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise TransientError(f"database {redact_url(self.url)}: {exc.orig}") from exc
        except PoolTimeoutError as exc:
            raise TransientError(
                f"database {redact_url(self.url)}: no free connection in the pool: {exc}"
            ) from exc

    # --- rollouts and their audit ------------------------------------------------

    def commit(self, write: TickWrite) -> StoredRollout:
        r = write.rollout
        now = r.updated_at or _now()
        values: dict[str, Any] = {
            "namespace": r.namespace,
            "name": r.name,
            "generation": r.generation,
            "candidate_version": r.candidate_version,
            "phase": r.phase,
            "step": r.step,
            "policy": dict(r.policy),
            "state": dict(r.state),
            "updated_at": now,
        }
        try:
            if self._one_statement(write):
                with self._reading() as a:
                    found = a.exec_driver_sql(
                        _UPDATE_WITH_ANALYSES, _update_with_analyses(write, values)
                    ).one_or_none()
                if found is None:
                    raise StaleStateError(
                        f"{r.key} is no longer at revision {write.expected_revision}"
                    )
                _, created_at = found
                revision = cast(int, write.expected_revision) + 1
                return _written(r, values, revision, created_at, now)
            with self._connection() as c:
                if write.expected_revision is None:
                    revision = 1
                    rollout_id, created_at = c.execute(
                        insert(_ROLLOUTS)
                        .values(
                            key=r.key, revision=revision, created_at=r.created_at or now, **values
                        )
                        .returning(_ROLLOUTS.c.id, _ROLLOUTS.c.created_at)
                    ).one()
                else:
                    revision = write.expected_revision + 1
                    found = c.execute(
                        _UPDATE_ROLLOUT,
                        {
                            "k": r.key,
                            "expected": write.expected_revision,
                            "revision": revision,
                            **values,
                        },
                    ).one_or_none()
                    if found is None:
                        raise StaleStateError(
                            f"{r.key} is no longer at revision {write.expected_revision}"
                        )
                    rollout_id, created_at = found
                self._append(c, rollout_id, write)
        except IntegrityError as exc:
            raise StaleStateError(f"{r.key} was created concurrently") from exc
        return _written(r, values, revision, created_at, now)

    def _one_statement(self, write: TickWrite) -> bool:
        """Whether `write` is a look's usual write (the row updated, analysis rows and
        nothing else) on Postgres: then it goes as one statement in autocommit
        (`_UPDATE_WITH_ANALYSES`), one round trip instead of BEGIN, the `UPDATE`, the
        inserts and COMMIT. One statement is one transaction: all of it or none."""
        return (
            write.expected_revision is not None
            and bool(write.analyses)
            and not (write.transitions or write.route_actions)
            and not (write.messages or write.eval_cases)
            and self.engine.dialect.name == "postgresql"
        )

    def _append(self, s: Connection, rollout_id: int, write: TickWrite) -> None:
        # Core inserts of many rows at once (executemany, which the dialect sends as
        # multi-row INSERTs), not ORM objects nor the ORM's bulk path: a tick writes
        # some 16 analysis rows, and building an object per row cost more CPU than the
        # database spends on them.
        audit: tuple[tuple[type[_AnyAuditRow], Sequence[_AnyAudit]], ...] = (
            (TransitionRow, write.transitions),
            (AnalysisRow, write.analyses),
            (RouteActionRow, write.route_actions),
        )
        for row_type, records in audit:
            if records:
                s.execute(
                    _INSERTS[row_type.__tablename__], [_values(rollout_id, r) for r in records]
                )
        if write.messages:
            rows = [
                {
                    "rollout_id": rollout_id,
                    "dedupe_key": m.dedupe_key,
                    "event": m.event,
                    "payload": dict(m.payload),
                    "created_at": m.created_at,
                    "status": m.status,
                    "attempts": m.attempts,
                    "last_error": m.last_error,
                }
                for m in write.messages
            ]
            dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
            s.execute(dialect.insert(OutboxRow.__table__).values(rows).on_conflict_do_nothing())
        if write.eval_cases:
            cases = [
                {
                    "id": c.id,
                    "rollout_id": rollout_id,
                    "created_at": c.created_at,
                    "cohort": c.cohort,
                    "metric": c.metric,
                    "record": export_row(c),
                }
                for c in write.eval_cases
            ]
            dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
            s.execute(dialect.insert(EvalCaseRow.__table__).values(cases).on_conflict_do_nothing())

    def get(self, key: str) -> StoredRollout | None:
        with self._transaction() as s:
            row = s.scalars(select(RolloutRow).where(RolloutRow.key == key)).one_or_none()
            return _rollout(row) if row is not None else None

    def rollouts(self) -> Sequence[StoredRollout]:
        with self._transaction() as s:
            return [_rollout(r) for r in s.scalars(select(RolloutRow).order_by(RolloutRow.key))]

    def summaries(self) -> Sequence[RolloutSummary]:
        restore_pending = RolloutRow.state["restorePending"].as_boolean()
        stmt = select(
            RolloutRow.key,
            RolloutRow.phase,
            RolloutRow.candidate_version,
            restore_pending,
            RolloutRow.updated_at,
            RolloutRow.state["gate"],
        ).order_by(RolloutRow.key)
        with self._transaction() as s:
            return [
                RolloutSummary(key, phase, candidate, bool(pending), _utc(updated), bool(gate))
                for key, phase, candidate, pending, updated, gate in s.execute(stmt)
            ]

    def _rollout_id(self, s: Session, key: str) -> int:
        found = s.scalars(select(RolloutRow.id).where(RolloutRow.key == key)).one_or_none()
        if found is None:
            raise PermanentError(f"no rollout {key} in the store")
        return found

    def transitions(self, key: str) -> Sequence[TransitionRecord]:
        return self._history(key, TransitionRow, TransitionRecord)

    def analyses(self, key: str, *, since_tick: int = 0) -> Sequence[AnalysisRecord]:
        return self._history(key, AnalysisRow, AnalysisRecord, AnalysisRow.tick >= since_tick)

    def route_actions(self, key: str) -> Sequence[RouteActionRecord]:
        return self._history(key, RouteActionRow, RouteActionRecord)

    def _history(
        self,
        key: str,
        row_type: type[_AuditRow],
        record_type: type[_Audit],
        *where: ColumnElement[bool],
    ) -> list[_Audit]:
        """The audit rows of one kind of a rollout, oldest first, as records."""
        with self._transaction() as s:
            rid = self._rollout_id(s, key)
            rows = s.scalars(
                select(row_type).where(row_type.rollout_id == rid, *where).order_by(row_type.id)
            )
            return [_record(record_type, r) for r in rows]

    def append_route_action(self, key: str, action: RouteActionRecord) -> None:
        with self._transaction() as s:
            s.add(_row(RouteActionRow, self._rollout_id(s, key), action))

    def add_command(self, key: str, cmd: ManualCommand) -> ManualCommand:
        with self._transaction() as s:
            row = ManualCommandRow(**_command_values(self._rollout_id(s, key), cmd))
            s.add(row)
            s.flush()
            return replace(cmd, id=row.id)

    def add_command_once(self, key: str, cmd: ManualCommand) -> tuple[ManualCommand, bool]:
        if not cmd.dedupe_key:
            raise ValueError("add_command_once needs a command with a dedupe_key")
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self._transaction() as s:
            # The unique index decides between replicas: the loser writes nothing.
            written = s.execute(
                dialect.insert(ManualCommandRow)
                .values(**_command_values(self._rollout_id(s, key), cmd))
                .on_conflict_do_nothing(index_elements=["dedupe_key"])
                .returning(ManualCommandRow.id)
            ).scalar_one_or_none()
            if written is not None:
                return replace(cmd, id=written), True
            row = s.scalars(
                select(ManualCommandRow).where(ManualCommandRow.dedupe_key == cmd.dedupe_key)
            ).one()
            return _command(row), False

    def command_with_key(self, dedupe_key: str) -> ManualCommand | None:
        with self._transaction() as s:
            row = s.scalars(
                select(ManualCommandRow).where(ManualCommandRow.dedupe_key == dedupe_key)
            ).one_or_none()
            return _command(row) if row is not None else None

    def commands(self, key: str, *, after_id: int = 0) -> Sequence[ManualCommand]:
        with self._transaction() as s:
            rid = self._rollout_id(s, key)
            rows = s.scalars(
                select(ManualCommandRow)
                .where(ManualCommandRow.rollout_id == rid, ManualCommandRow.id > after_id)
                .order_by(ManualCommandRow.id)
            )
            return [_command(r) for r in rows]

    def outbox(self, key: str) -> Sequence[OutboxMessage]:
        with self._transaction() as s:
            rid = self._rollout_id(s, key)
            rows = s.scalars(
                select(OutboxRow).where(OutboxRow.rollout_id == rid).order_by(OutboxRow.id)
            )
            return [
                OutboxMessage(
                    dedupe_key=r.dedupe_key,
                    event=r.event,
                    payload=r.payload,
                    created_at=_utc(r.created_at),
                    status=r.status,
                    attempts=r.attempts,
                    last_error=r.last_error,
                    id=r.id,
                )
                for r in rows
            ]

    def eval_cases(self, key: str | None = None) -> Sequence[EvalCase]:
        stmt = select(EvalCaseRow.record)
        with self._transaction() as s:
            if key is not None:
                stmt = stmt.where(EvalCaseRow.rollout_id == self._rollout_id(s, key))
            rows = s.scalars(stmt.order_by(EvalCaseRow.created_at, EvalCaseRow.id))
            return [EvalCase.from_row(r) for r in rows]

    # --- delivery of the outbox --------------------------------------------------

    def undelivered(self, sink: str, *, limit: int = 500) -> Sequence[QueuedMessage]:
        stmt = (
            select(OutboxRow, RolloutRow.key, DeliveryRow)
            .join(RolloutRow, RolloutRow.id == OutboxRow.rollout_id)
            .outerjoin(
                DeliveryRow,
                and_(DeliveryRow.outbox_id == OutboxRow.id, DeliveryRow.sink == sink),
            )
            .where(
                OutboxRow.status.in_(OPEN),
                or_(DeliveryRow.sink.is_(None), DeliveryRow.status.in_(OPEN)),
            )
            .order_by(OutboxRow.id)
            .limit(limit)
        )
        with self._transaction() as s:
            return [
                QueuedMessage(
                    rollout=key,
                    outbox_id=m.id,
                    dedupe_key=m.dedupe_key,
                    event=m.event,
                    payload=m.payload,
                    created_at=_utc(m.created_at),
                    status=d.status if d is not None else DeliveryStatus.PENDING,
                    attempts=d.attempts if d is not None else 0,
                    next_attempt_at=_maybe_utc(d.next_attempt_at) if d is not None else None,
                )
                for m, key, d in s.execute(stmt)
            ]

    def claim_delivery(
        self,
        outbox_id: int,
        sink: str,
        *,
        attempts: int,
        now: datetime,
        until: datetime,
        sinks: Sequence[str],
    ) -> bool:
        with self._transaction() as s:
            self._lock_message(s, outbox_id)
            if attempts == 0:
                dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
                claimed = s.execute(
                    dialect.insert(DeliveryRow)
                    .values(
                        outbox_id=outbox_id,
                        sink=sink,
                        status=DeliveryStatus.SENDING,
                        attempts=1,
                        next_attempt_at=until,
                    )
                    .on_conflict_do_nothing()
                    .returning(DeliveryRow.attempts)
                ).scalar_one_or_none()
            else:
                claimed = s.execute(
                    update(DeliveryRow)
                    .where(
                        DeliveryRow.outbox_id == outbox_id,
                        DeliveryRow.sink == sink,
                        DeliveryRow.attempts == attempts,
                        DeliveryRow.status.in_(OPEN),
                        or_(
                            DeliveryRow.next_attempt_at.is_(None),
                            DeliveryRow.next_attempt_at <= now,
                        ),
                    )
                    .values(
                        status=DeliveryStatus.SENDING,
                        attempts=attempts + 1,
                        next_attempt_at=until,
                    )
                    .returning(DeliveryRow.attempts)
                ).scalar_one_or_none()
            if claimed is None:
                return False
            self._summarise(s, outbox_id, sinks)
            return True

    def finish_delivery(
        self,
        outbox_id: int,
        sink: str,
        *,
        attempt: int,
        status: str,
        now: datetime,
        sinks: Sequence[str],
        error: str | None = None,
        retry_at: datetime | None = None,
        ref: str | None = None,
    ) -> bool:
        outcome = DeliveryStatus(status)
        with self._transaction() as s:
            self._lock_message(s, outbox_id)
            found = s.execute(
                update(DeliveryRow)
                .where(
                    DeliveryRow.outbox_id == outbox_id,
                    DeliveryRow.sink == sink,
                    DeliveryRow.attempts == attempt,
                    DeliveryRow.status == DeliveryStatus.SENDING,
                )
                .values(
                    status=outcome,
                    last_error=error,
                    next_attempt_at=retry_at if outcome is DeliveryStatus.PENDING else None,
                    delivered_at=now if outcome in _DELIVERED else None,
                    ref=ref,
                )
                .returning(DeliveryRow.sink)
            ).scalar_one_or_none()
            if found is None:
                return False
            self._summarise(s, outbox_id, sinks)
            return True

    def _lock_message(self, s: Session, outbox_id: int) -> None:
        """Write-lock the outbox row first, so deliveries of one message to several
        sinks update its summary one after the other (and SQLite takes its write
        lock up front instead of failing to upgrade a read lock later)."""
        found = s.execute(
            update(OutboxRow)
            .where(OutboxRow.id == outbox_id)
            .values(attempts=OutboxRow.attempts)
            .returning(OutboxRow.id)
        ).scalar_one_or_none()
        if found is None:
            raise PermanentError(f"no outbox message {outbox_id} in the store")

    def _summarise(self, s: Session, outbox_id: int, sinks: Sequence[str]) -> None:
        rows = s.scalars(select(DeliveryRow).where(DeliveryRow.outbox_id == outbox_id)).all()
        summary = outbox_summary([_delivery(r) for r in rows], sinks)
        s.execute(
            update(OutboxRow)
            .where(OutboxRow.id == outbox_id)
            .values(status=summary.status, attempts=summary.attempts, last_error=summary.last_error)
        )

    def deliveries(self, key: str) -> Sequence[Delivery]:
        with self._transaction() as s:
            rid = self._rollout_id(s, key)
            rows = s.scalars(
                select(DeliveryRow)
                .join(OutboxRow, OutboxRow.id == DeliveryRow.outbox_id)
                .where(OutboxRow.rollout_id == rid)
                .order_by(DeliveryRow.outbox_id, DeliveryRow.sink)
            )
            return [_delivery(r) for r in rows]

    def undelivered_count(self) -> int:
        with self._transaction() as s:
            return s.execute(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.status.in_(OPEN))
            ).scalar_one()

    def thread(self, key: str, sink: str) -> NotificationThread | None:
        with self._transaction() as s:
            row = s.execute(
                select(ThreadRow)
                .join(RolloutRow, RolloutRow.id == ThreadRow.rollout_id)
                .where(RolloutRow.key == key, ThreadRow.sink == sink)
            ).scalar_one_or_none()
            return _thread(key, row) if row is not None else None

    def save_thread(
        self, key: str, sink: str, *, channel: str, ts: str, now: datetime
    ) -> NotificationThread:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        with self._transaction() as s:
            rid = self._rollout_id(s, key)
            s.execute(
                dialect.insert(ThreadRow)
                .values(rollout_id=rid, sink=sink, channel=channel, ts=ts, created_at=now)
                .on_conflict_do_nothing()
            )
            row = s.execute(
                select(ThreadRow).where(ThreadRow.rollout_id == rid, ThreadRow.sink == sink)
            ).scalar_one()
            return _thread(key, row)

    # --- leases ----------------------------------------------------------------

    def acquire(self, key: str, holder: str, ttl: timedelta, now: datetime) -> bool:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(LeaseRow).values(
            rollout_key=key, holder=holder, acquired_at=now, expires_at=now + ttl, epoch=1
        )
        # A renewal: the same holder, its lease still live. Anything else is a new
        # tenure (another holder, or this one after an expiry or a release): a new epoch.
        renewal = (LeaseRow.holder == stmt.excluded.holder) & (LeaseRow.expires_at >= now)
        # The upsert is one statement: of two replicas racing for a free or expired
        # lease, the database lets exactly one of them take it.
        stmt = stmt.on_conflict_do_update(
            index_elements=[LeaseRow.rollout_key],
            set_={
                "holder": stmt.excluded.holder,
                "expires_at": stmt.excluded.expires_at,
                "acquired_at": case((renewal, LeaseRow.acquired_at), else_=now),
                "epoch": case((renewal, LeaseRow.epoch), else_=LeaseRow.epoch + 1),
            },
            where=(LeaseRow.holder == stmt.excluded.holder)
            | (LeaseRow.holder == NO_HOLDER)
            | (LeaseRow.expires_at < now),
        ).returning(LeaseRow.holder)
        with self._transaction() as s:
            return s.execute(stmt).scalar_one_or_none() == holder

    def lease(self, key: str, now: datetime) -> Lease | None:
        with self._reading() as c:
            row = c.execute(_LEASE, {"k": key, "now": now}).one_or_none()
            if row is None:
                return None
            return Lease(key, row.holder, row.epoch, _utc(row.expires_at))

    def release(self, key: str, holder: str) -> None:
        # The row stays, with its epoch, so the next holder's epoch is higher still.
        with self._transaction() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.rollout_key == key, LeaseRow.holder == holder)
                .values(holder=NO_HOLDER)
            )

    def held_by(self, holder: str, now: datetime) -> Sequence[str]:
        with self._transaction() as s:
            return list(
                s.scalars(
                    select(LeaseRow.rollout_key)
                    .where(LeaseRow.holder == holder, LeaseRow.expires_at >= now)
                    .order_by(LeaseRow.rollout_key)
                )
            )

    def renew_held(self, holder: str, ttl: timedelta, now: datetime) -> Sequence[str]:
        with self._transaction() as s:
            return list(
                s.scalars(
                    update(LeaseRow)
                    .where(LeaseRow.holder == holder, LeaseRow.expires_at >= now)
                    .values(expires_at=now + ttl)
                    .returning(LeaseRow.rollout_key)
                )
            )

    def claim(
        self, keys: Sequence[str], holder: str, ttl: timedelta, now: datetime, *, batch: int = 500
    ) -> Sequence[str]:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        taken: list[str] = []
        for start in range(0, len(keys), batch):
            chunk = list(keys[start : start + batch])
            with self._transaction() as s:
                # Rows nobody has ever held: inserted, unless another replica just did.
                taken += s.scalars(
                    dialect.insert(LeaseRow)
                    .values(
                        [
                            {
                                "rollout_key": key,
                                "holder": holder,
                                "acquired_at": now,
                                "expires_at": now + ttl,
                                "epoch": 1,
                            }
                            for key in chunk
                        ]
                    )
                    .on_conflict_do_nothing()
                    .returning(LeaseRow.rollout_key)
                )
                # Free or expired rows: locked without waiting (a row another replica is
                # taking right now is skipped), then taken with a new epoch.
                free = (
                    select(LeaseRow.rollout_key)
                    .where(
                        LeaseRow.rollout_key.in_(chunk),
                        (LeaseRow.holder == NO_HOLDER) | (LeaseRow.expires_at < now),
                    )
                    .with_for_update(skip_locked=True)
                )
                taken += s.scalars(
                    update(LeaseRow)
                    .where(LeaseRow.rollout_key.in_(free.scalar_subquery()))
                    .values(
                        holder=holder,
                        acquired_at=now,
                        expires_at=now + ttl,
                        epoch=LeaseRow.epoch + 1,
                    )
                    .returning(LeaseRow.rollout_key)
                )
        return taken

    def release_all(self, keys: Sequence[str], holder: str) -> None:
        if not keys:
            return
        with self._transaction() as s:
            s.execute(
                update(LeaseRow)
                .where(LeaseRow.rollout_key.in_(list(keys)), LeaseRow.holder == holder)
                .values(holder=NO_HOLDER)
            )

    def heartbeat(self, replica: str, ttl: timedelta, now: datetime) -> Mapping[str, datetime]:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(ReplicaRow).values(name=replica, started_at=now, expires_at=now + ttl)
        stmt = stmt.on_conflict_do_update(
            index_elements=[ReplicaRow.name], set_={"expires_at": stmt.excluded.expires_at}
        )
        with self._transaction() as s:
            s.execute(stmt)
            live = s.execute(
                select(ReplicaRow.name, ReplicaRow.expires_at)
                .where(ReplicaRow.expires_at >= now)
                .order_by(ReplicaRow.name)
            )
            return {name: _utc(expires_at) for name, expires_at in live}

    def leave(self, replica: str) -> None:
        with self._transaction() as s:
            s.execute(delete(ReplicaRow).where(ReplicaRow.name == replica))

    def read_tick(
        self, key: str, now: datetime, *, commands_after: Callable[[StoredRollout], int | None]
    ) -> TickRead:
        with self._reading() as c:
            # The live lease and the row in one round trip: always one row, its lease
            # columns or its rollout's NULL when there is none.
            row = c.execute(_TICK_READ, {"k": key, "now": now}).one()
            lease = (
                Lease(key, row.lease_holder, row.lease_epoch, _utc(row.lease_expires_at))
                if row.lease_holder is not None
                else None
            )
            if row.id is None:
                return TickRead(lease, None)
            stored = _rollout(row)
            after = commands_after(stored)
            if after is None:
                return TickRead(lease, stored)
            commands = c.execute(_COMMANDS, {"rollout": row.id, "after": after})
            return TickRead(
                lease,
                stored,
                tuple(
                    ManualCommand(_utc(m.at), m.command, m.actor, m.reason, m.args, m.id)
                    for m in commands
                ),
            )

    # --- why the source holds a rollout ---------------------------------------------

    def record_source_problem(self, key: str, problem: str | None, now: datetime) -> None:
        with self._transaction() as s:
            if problem is None:
                s.execute(delete(SourceProblemRow).where(SourceProblemRow.rollout_key == key))
                return
            dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
            stmt = dialect.insert(SourceProblemRow).values(
                rollout_key=key, problem=problem, since=now
            )
            s.execute(
                stmt.on_conflict_do_update(
                    index_elements=[SourceProblemRow.rollout_key],
                    set_={"problem": stmt.excluded.problem, "since": stmt.excluded.since},
                    where=SourceProblemRow.problem != stmt.excluded.problem,
                )
            )

    def source_problem(self, key: str) -> SourceProblem | None:
        with self._transaction() as s:
            row = s.get(SourceProblemRow, key)
            return None if row is None else SourceProblem(key, row.problem, _utc(row.since))


_DELIVERED = (DeliveryStatus.SENT, DeliveryStatus.SKIPPED)

# The statements of every tick, built once: SQLAlchemy caches their compiled form
# by a key it would otherwise work out from a new statement object every time.
_ROLLOUTS = cast(Table, RolloutRow.__table__)
_LEASES = cast(Table, LeaseRow.__table__)
#: a lease someone holds at `now`
_LIVE = and_(_LEASES.c.holder != NO_HOLDER, _LEASES.c.expires_at >= bindparam("now"))
_LEASE = select(_LEASES.c.holder, _LEASES.c.epoch, _LEASES.c.expires_at).where(
    _LEASES.c.rollout_key == bindparam("k"), _LIVE
)
_WANTED = select(bindparam("k", type_=String()).label("key")).subquery("wanted")
_TICK_READ = select(
    _LEASES.c.holder.label("lease_holder"),
    _LEASES.c.epoch.label("lease_epoch"),
    _LEASES.c.expires_at.label("lease_expires_at"),
    *_ROLLOUTS.c,
).select_from(
    _WANTED.outerjoin(
        _LEASES,
        and_(_LEASES.c.rollout_key == _WANTED.c.key, _LIVE),
    ).outerjoin(_ROLLOUTS, _ROLLOUTS.c.key == _WANTED.c.key)
)
_COMMANDS = (
    select(ManualCommandRow.__table__)
    .where(
        ManualCommandRow.__table__.c.rollout_id == bindparam("rollout"),
        ManualCommandRow.__table__.c.id > bindparam("after"),
    )
    .order_by(ManualCommandRow.__table__.c.id)
)
_UPDATE_ROLLOUT = (
    update(_ROLLOUTS)
    .where(_ROLLOUTS.c.key == bindparam("k"), _ROLLOUTS.c.revision == bindparam("expected"))
    .returning(_ROLLOUTS.c.id, _ROLLOUTS.c.created_at)
)
_INSERTS = {
    row.__tablename__: insert(cast(Table, row.__table__))
    for row in (TransitionRow, AnalysisRow, RouteActionRow)
}


#: A look's usual write in one statement: the row updated if still at the revision the
#: tick read, and its analysis rows inserted from one array per column, joined to the
#: updated row (so none go in if the revision moved on). Data-modifying `WITH` parts
#: run to completion whether the outer query reads them or not.
_ANALYSIS_ARRAYS = (
    ("tick", "bigint"),
    ("at", "timestamptz"),
    ("metric", "text"),
    ("cohort", "text"),
    ("verdict", "text"),
    ("query", "text"),
    ("baseline_value", "float8"),
    ("candidate_value", "float8"),
    ("baseline_samples", "float8"),
    ("candidate_samples", "float8"),
    ("evidence", "jsonb"),
)
_UPDATE_WITH_ANALYSES = (
    "WITH updated AS ("
    " UPDATE rollouts SET namespace = %(namespace)s, name = %(name)s,"
    " generation = %(generation)s, candidate_version = %(candidate_version)s,"
    " phase = %(phase)s, step = %(step)s,"
    " policy = %(policy)s::jsonb, state = %(state)s::jsonb,"
    " updated_at = %(updated_at)s, revision = %(revision)s"
    " WHERE key = %(k)s AND revision = %(expected)s"
    " RETURNING id, created_at"
    "), analyses AS ("
    f" INSERT INTO analysis_results (rollout_id, {', '.join(c for c, _ in _ANALYSIS_ARRAYS)})"
    " SELECT updated.id, a.* FROM updated, unnest("
    # the arrays in binary: in text, every string element would be quoted and escaped
    + ", ".join(f"%(a_{c})b::{t}[]" for c, t in _ANALYSIS_ARRAYS)
    + ") AS a"
    ") SELECT id, created_at FROM updated"
)


def _update_with_analyses(write: TickWrite, values: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of `_UPDATE_WITH_ANALYSES` (a driver-level statement: no
    SQLAlchemy types apply); JSON as the text SQLAlchemy's JSON type would send
    (`json.dumps`), read by Postgres as the same `jsonb`."""
    expected = cast(int, write.expected_revision)
    params: dict[str, Any] = {
        **values,
        "policy": json.dumps(values["policy"]),
        "state": json.dumps(values["state"]),
        "k": write.rollout.key,
        "expected": expected,
        "revision": expected + 1,
    }
    for column, _ in _ANALYSIS_ARRAYS:
        found = [getattr(a, column) for a in write.analyses]
        params[f"a_{column}"] = (
            [json.dumps(_plain(v)) for v in found] if column == "evidence" else found
        )
    return params


def _written(
    r: StoredRollout, values: Mapping[str, Any], revision: int, created_at: datetime, now: datetime
) -> StoredRollout:
    """What a commit wrote, as a read would return it: no second round trip."""
    return replace(
        r,
        policy=values["policy"],
        state=values["state"],
        revision=revision,
        created_at=_utc(created_at),
        updated_at=_utc(now),
    )


def _maybe_utc(value: datetime | None) -> datetime | None:
    return _utc(value) if value is not None else None


#: the audit records, each kept in the row of the same name's columns
_Audit = TypeVar("_Audit", TransitionRecord, AnalysisRecord, RouteActionRecord)
_AuditRow = TypeVar("_AuditRow", TransitionRow, AnalysisRow, RouteActionRow)
_AnyAudit = TransitionRecord | AnalysisRecord | RouteActionRecord
_AnyAuditRow = TransitionRow | AnalysisRow | RouteActionRow


def _row(
    row_type: type[_AuditRow],
    rollout_id: int,
    record: _AnyAudit,
) -> _AuditRow:
    """The row of an audit record (see `_values`)."""
    return row_type(**_values(rollout_id, record))


def _values(rollout_id: int, record: _AnyAudit) -> dict[str, object]:
    """The columns of an audit record's row: one per field of the record (its `id` is
    the database's); JSON fields are copied into plain dicts."""
    values = {
        f.name: _plain(getattr(record, f.name))
        for f in dataclasses.fields(record)
        if f.name != "id"
    }
    return {"rollout_id": rollout_id, **values}


def _record(record_type: type[_Audit], row: _AnyAuditRow) -> _Audit:
    """The record of an audit row: the one mapping back, the inverse of `_row`."""
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(record_type)}
    return record_type(**{**values, "at": _utc(row.at)})


def _command_values(rollout_id: int, cmd: ManualCommand) -> dict[str, Any]:
    """The columns of a manual command's row (its `id` is the database's)."""
    return {
        "rollout_id": rollout_id,
        "at": cmd.at,
        "command": cmd.command,
        "actor": cmd.actor,
        "reason": cmd.reason,
        "args": dict(cmd.args),
        "dedupe_key": cmd.dedupe_key,
    }


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) else value


def _delivery(row: DeliveryRow) -> Delivery:
    return Delivery(
        outbox_id=row.outbox_id,
        sink=row.sink,
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_at=_maybe_utc(row.next_attempt_at),
        delivered_at=_maybe_utc(row.delivered_at),
        ref=row.ref,
    )


def _thread(key: str, row: ThreadRow) -> NotificationThread:
    return NotificationThread(key, row.sink, row.channel, row.ts, _utc(row.created_at))


def _rollout(row: RolloutRow | Row[Any]) -> StoredRollout:
    return StoredRollout(
        key=row.key,
        namespace=row.namespace,
        name=row.name,
        generation=row.generation,
        candidate_version=row.candidate_version,
        phase=row.phase,
        step=row.step,
        policy=row.policy,
        state=row.state,
        revision=row.revision,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )
