"""Deliveries of outbox messages per sink, and each rollout's notification thread.

The outbox row keeps the summary (status, attempts, last error); each sink's own
progress (attempts recorded before sending, when the next attempt is due, where
the message went) lives in `notification_deliveries`, so Slack and a webhook
deliver independently. `notification_threads` remembers the Slack message that
opened a rollout's thread, so every later event is a reply to it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
When = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("outbox_id", Id, sa.ForeignKey("outbox.id"), primary_key=True),
        sa.Column("sink", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", When, nullable=True),
        sa.Column("delivered_at", When, nullable=True),
        sa.Column("ref", sa.String(255), nullable=True),
    )
    op.create_table(
        "notification_threads",
        sa.Column("rollout_id", Id, sa.ForeignKey("rollouts.id"), primary_key=True),
        sa.Column("sink", sa.String(32), primary_key=True),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("ts", sa.String(64), nullable=False),
        sa.Column("created_at", When, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("notification_threads")
    op.drop_table("notification_deliveries")
