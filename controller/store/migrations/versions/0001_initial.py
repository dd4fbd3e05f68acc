"""The initial schema: rollouts, the append-only audit tables, outbox and leases.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)
AUDIT_TABLES = ("transitions", "analysis_results", "route_actions", "manual_commands")


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def _rollout_fk(index: bool = True) -> sa.Column[int]:
    return sa.Column(
        "rollout_id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        sa.ForeignKey("rollouts.id"),
        nullable=False,
        index=index,
    )


def upgrade() -> None:
    op.create_table(
        "rollouts",
        _id(),
        sa.Column("key", sa.String(320), nullable=False, unique=True),
        sa.Column("namespace", sa.String(63), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("candidate_version", sa.String(253), nullable=False),
        sa.Column("phase", sa.String(32), nullable=False, index=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("policy", Json, nullable=False),
        sa.Column("state", Json, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("updated_at", When, nullable=False),
    )
    op.create_table(
        "transitions",
        _id(),
        _rollout_fk(),
        sa.Column("at", When, nullable=False),
        sa.Column("from_phase", sa.String(32), nullable=False),
        sa.Column("to_phase", sa.String(32), nullable=False),
        sa.Column("from_step", sa.Integer(), nullable=False),
        sa.Column("to_step", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(253), nullable=False),
        sa.Column("details", Json, nullable=False),
    )
    op.create_table(
        "analysis_results",
        _id(),
        _rollout_fk(index=False),
        sa.Column("tick", sa.BigInteger(), nullable=False),
        sa.Column("at", When, nullable=False),
        sa.Column("metric", sa.String(63), nullable=False),
        sa.Column("cohort", sa.String(63), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("baseline_value", sa.Float(), nullable=True),
        sa.Column("candidate_value", sa.Float(), nullable=True),
        sa.Column("baseline_samples", sa.Float(), nullable=True),
        sa.Column("candidate_samples", sa.Float(), nullable=True),
        sa.Column("evidence", Json, nullable=False),
    )
    op.create_index("ix_analysis_results_rollout_tick", "analysis_results", ["rollout_id", "tick"])
    op.create_table(
        "route_actions",
        _id(),
        _rollout_fk(),
        sa.Column("at", When, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("desired", Json, nullable=False),
        sa.Column("observed", Json, nullable=True),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_table(
        "manual_commands",
        _id(),
        _rollout_fk(),
        sa.Column("at", When, nullable=False),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(253), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("args", Json, nullable=False),
    )
    op.create_table(
        "outbox",
        _id(),
        _rollout_fk(),
        sa.Column("dedupe_key", sa.String(255), nullable=False, unique=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", Json, nullable=False),
        sa.Column("created_at", When, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
    )
    op.create_table(
        "leases",
        sa.Column("rollout_key", sa.String(320), primary_key=True),
        sa.Column("holder", sa.String(253), nullable=False, index=True),
        sa.Column("acquired_at", When, nullable=False),
        sa.Column("expires_at", When, nullable=False),
    )
    _append_only()


def _append_only() -> None:
    """Triggers that refuse any UPDATE or DELETE on the audit tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION canary_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit table % is append-only', TG_TABLE_NAME; END $$"
        )
        for table in AUDIT_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION canary_append_only()"
            )
    else:
        for table in AUDIT_TABLES:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit table {table} is append-only'); END"
                )


def downgrade() -> None:
    for table in ("leases", "outbox", *reversed(AUDIT_TABLES), "rollouts"):
        op.drop_table(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS canary_append_only()")
