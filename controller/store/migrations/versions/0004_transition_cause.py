"""The cause code of each transition (`LimitBroken`, `NoData`, `Deadline`, ...).

A column of its own, not a key in `details`, so the audit can be queried by cause
(how many rollouts did the deadline pause this month?) without our code. It is
nullable: transitions on evidence have no cause, and those recorded before this
revision have none either; adding a nullable column rewrites no row, so the
append-only triggers are not involved.

Revision ID: 0004_transition_cause
Revises: 0003_source_problems
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_transition_cause"
down_revision = "0003_source_problems"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("transitions", sa.Column("cause", sa.String(32), nullable=True))


def downgrade() -> None:
    # a plain ALTER on both Postgres and SQLite (3.35+): a batch copy of the table
    # on SQLite would drop its append-only triggers with it
    op.execute("ALTER TABLE transitions DROP COLUMN cause")
