"""Live replicas, so that each replica can take its fair share of the rollouts.

Every replica's sync writes its row (`expires_at` = now + the lease TTL) and reads
the rows still live: that list is what each replica divides the rollouts by
(rendezvous hashing of a rollout's key over the live replicas). A replica that
stops deletes its row; one that dies drops out when its row expires, at the
same time as its leases.

Revision ID: 0008_scale_replicas
Revises: 0007_eval_cases
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_scale_replicas"
down_revision = "0007_eval_cases"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "replicas",
        sa.Column("name", sa.String(253), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("replicas")
