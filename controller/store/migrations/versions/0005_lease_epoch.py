"""Lease epochs (fencing tokens), and a reason on route actions.

`leases.epoch` grows by one each time a rollout's lease changes hands; a route
write carries the writer's epoch, so a replica that lost its lease (paused, cut
off, slow) cannot move traffic toward the candidate behind the new owner's back.
Existing leases start at epoch 0; the next change of hands makes it 1.

`route_actions.reason` says why a route was written, or a write refused, outside
a tick's own decision: a stale replica's write that was fenced off, or an ended
rollout's route found carrying its candidate and put back.

Revision ID: 0005_lease_epoch
Revises: 0004_transition_cause
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_lease_epoch"
down_revision = "0004_transition_cause"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("leases", sa.Column("epoch", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("route_actions", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE on both databases (SQLite 3.35+): a batch copy of the table
    # would drop the append-only triggers of route_actions.
    op.execute("ALTER TABLE route_actions DROP COLUMN reason")
    op.execute("ALTER TABLE leases DROP COLUMN epoch")
