"""An idempotency key on manual commands, for commands given from Slack.

Slack may deliver one button press more than once (its retries, a double
click, two replicas behind one Ingress). `manual_commands.dedupe_key` is unique,
so the database keeps exactly one command per press, whichever replica wrote
it first; commands from `canaryctl` leave it NULL, which never conflicts.

Revision ID: 0006_slack_actions
Revises: 0005_lease_epoch
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_slack_actions"
down_revision = "0005_lease_epoch"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("manual_commands", sa.Column("dedupe_key", sa.String(255), nullable=True))
    op.create_index("ix_manual_commands_dedupe_key", "manual_commands", ["dedupe_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_manual_commands_dedupe_key", table_name="manual_commands")
    # Plain ALTER TABLE on both databases (SQLite 3.35+): a batch copy of the table
    # would drop the append-only triggers of manual_commands.
    op.execute("ALTER TABLE manual_commands DROP COLUMN dedupe_key")
