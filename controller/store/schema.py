"""The relational schema of the store (SQLAlchemy 2 typed models).

Alembic migrations under `migrations/` create exactly this schema (a test compares
them); the audit tables are append-only, enforced by database triggers, so not even
a bug in this code can rewrite history.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = JSON().with_variant(JSONB(), "postgresql")
Id = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only
When = DateTime(timezone=True)

#: tables no row of which may ever be updated or deleted
AUDIT_TABLES = ("transitions", "analysis_results", "route_actions", "manual_commands")


class Base(DeclarativeBase):
    pass


class RolloutRow(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(320), unique=True)
    namespace: Mapped[str] = mapped_column(String(63))
    name: Mapped[str] = mapped_column(String(253))
    generation: Mapped[int] = mapped_column(BigInteger)
    candidate_version: Mapped[str] = mapped_column(String(253))
    phase: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer)
    policy: Mapped[dict[str, Any]] = mapped_column(Json)
    state: Mapped[dict[str, Any]] = mapped_column(Json)
    revision: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(When)
    updated_at: Mapped[datetime] = mapped_column(When)


class TransitionRow(Base):
    __tablename__ = "transitions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(When)
    from_phase: Mapped[str] = mapped_column(String(32))
    to_phase: Mapped[str] = mapped_column(String(32))
    from_step: Mapped[int] = mapped_column(Integer)
    to_step: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(253))
    details: Mapped[dict[str, Any]] = mapped_column(Json)
    cause: Mapped[str | None] = mapped_column(String(32))


class AnalysisRow(Base):
    __tablename__ = "analysis_results"
    __table_args__ = (Index("ix_analysis_results_rollout_tick", "rollout_id", "tick"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"))
    tick: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(When)
    metric: Mapped[str] = mapped_column(String(63))
    cohort: Mapped[str] = mapped_column(String(63))
    verdict: Mapped[str] = mapped_column(String(16))
    query: Mapped[str] = mapped_column(Text)
    baseline_value: Mapped[float | None] = mapped_column(Float)
    candidate_value: Mapped[float | None] = mapped_column(Float)
    baseline_samples: Mapped[float | None] = mapped_column(Float)
    candidate_samples: Mapped[float | None] = mapped_column(Float)
    evidence: Mapped[dict[str, Any]] = mapped_column(Json)


class RouteActionRow(Base):
    __tablename__ = "route_actions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(When)
    action: Mapped[str] = mapped_column(String(32))
    desired: Mapped[dict[str, Any]] = mapped_column(Json)
    observed: Mapped[dict[str, Any] | None] = mapped_column(Json)
    changed: Mapped[bool]
    error: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)  # migration 0005_lease_epoch


class ManualCommandRow(Base):
    __tablename__ = "manual_commands"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    at: Mapped[datetime] = mapped_column(When)
    command: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(253))
    reason: Mapped[str] = mapped_column(Text)
    args: Mapped[dict[str, Any]] = mapped_column(Json)
    # migration 0006_slack_actions: one command per key, whichever replica writes it
    dedupe_key: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)


class OutboxRow(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    event: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(When)
    status: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)


class DeliveryRow(Base):
    """One outbox message's delivery to one sink (migration 0002); updated in place."""

    __tablename__ = "notification_deliveries"

    outbox_id: Mapped[int] = mapped_column(Id, ForeignKey("outbox.id"), primary_key=True)
    sink: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(When)
    delivered_at: Mapped[datetime | None] = mapped_column(When)
    ref: Mapped[str | None] = mapped_column(String(255))


class ThreadRow(Base):
    """Where a rollout's notifications are threaded in one sink (migration 0002)."""

    __tablename__ = "notification_threads"

    rollout_id: Mapped[int] = mapped_column(Id, ForeignKey("rollouts.id"), primary_key=True)
    sink: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(255))
    ts: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(When)


class LeaseRow(Base):
    """A rollout's lease. The row outlives its holder: a release clears `holder`
    (`NO_HOLDER`) and keeps `epoch`, so the next holder's epoch is higher still."""

    __tablename__ = "leases"

    rollout_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    holder: Mapped[str] = mapped_column(String(253), index=True)
    acquired_at: Mapped[datetime] = mapped_column(When)
    expires_at: Mapped[datetime] = mapped_column(When)
    epoch: Mapped[int] = mapped_column(BigInteger, server_default="0")  # migration 0005_lease_epoch


class ReplicaRow(Base):
    """A replica alive until `expires_at` (migration 0008_scale_replicas): its sync
    writes it, and every sync divides the rollouts among the live rows."""

    __tablename__ = "replicas"

    name: Mapped[str] = mapped_column(String(253), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(When)
    expires_at: Mapped[datetime] = mapped_column(When)


#: the holder of a released lease (a replica's ID is never empty)
NO_HOLDER = ""


class SourceProblemRow(Base):
    """Why the policy source holds a rollout as it is (migration 0003); updated in place."""

    __tablename__ = "source_problems"

    rollout_key: Mapped[str] = mapped_column(String(320), primary_key=True)
    problem: Mapped[str] = mapped_column(Text)
    since: Mapped[datetime] = mapped_column(When)


class EvalCaseRow(Base):
    """A failing cell recorded for the regression set (migration 0007_eval_cases).

    `record` is the case as `controller.cases.export_row` writes it; the columns
    beside it are what a listing filters and sorts on. Never updated."""

    __tablename__ = "eval_cases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    rollout_id: Mapped[int] = mapped_column(ForeignKey("rollouts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(When)
    cohort: Mapped[str] = mapped_column(String(63))
    metric: Mapped[str] = mapped_column(String(63))
    record: Mapped[dict[str, Any]] = mapped_column(Json)
