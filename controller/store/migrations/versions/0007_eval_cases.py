"""Eval cases: the failing cells of rollbacks, recorded for the regression set.

One row per failing metric × cohort of a rollback (or of an abort with
`--capture`), keyed by the case's own ID so that a tick decided again after a
crash records it once. `record` holds the case as the export writes it; the
columns beside it are what listings filter and sort on. Append-only, like the
audit tables: triggers refuse any UPDATE or DELETE.

Revision ID: 0007_eval_cases
Revises: 0006_slack_actions
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007_eval_cases"
down_revision = "0006_slack_actions"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "eval_cases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("rollout_id", Id, sa.ForeignKey("rollouts.id"), nullable=False, index=True),
        sa.Column("created_at", When, nullable=False),
        sa.Column("cohort", sa.String(63), nullable=False),
        sa.Column("metric", sa.String(63), nullable=False),
        sa.Column("record", Json, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION canary_eval_cases_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit table % is append-only', TG_TABLE_NAME; END $$"
        )
        op.execute(
            "CREATE TRIGGER eval_cases_append_only BEFORE UPDATE OR DELETE ON eval_cases "
            "FOR EACH ROW EXECUTE FUNCTION canary_eval_cases_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER eval_cases_no_{verb.lower()} BEFORE {verb} ON eval_cases "
                "BEGIN SELECT RAISE(ABORT, 'audit table eval_cases is append-only'); END"
            )


def downgrade() -> None:
    op.drop_table("eval_cases")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS canary_eval_cases_append_only()")
