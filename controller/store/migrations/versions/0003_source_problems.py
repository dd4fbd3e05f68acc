"""Why the policy source holds a rollout as it is, for `canaryctl status`.

The directory source leaves a rollout alone while its file is invalid, empty,
unreadable or briefly gone; there is no object to write a status on, so the
reason is kept here (one row per held rollout, updated in place, deleted when
the problem clears). Not audit: the log keeps the history.

Revision ID: 0003_source_problems
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_source_problems"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_problems",
        sa.Column("rollout_key", sa.String(320), primary_key=True),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_problems")
