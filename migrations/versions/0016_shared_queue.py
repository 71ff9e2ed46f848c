"""the waiting queue and the operator claims shared by several nodes (PostgreSQL)

Three tables, used only when a site runs several nodes on one PostgreSQL (``cluster.node`` set):

- ``queue_nodes``: one row per node, its heartbeat; a node whose heartbeat is older than its
  lease is dead, and its rows below are cleared by any living node.
- ``queue_callers``: every caller waiting on any node, with priority, the time it joined (the
  node's wall clock) and the operator it was offered, if any.
- ``queue_operators``: one row per operator; ``call_id`` set while a caller on ``node`` holds the
  claim (from the offer, through ringing and the conversation). Claims are taken with
  ``SELECT ... FOR UPDATE SKIP LOCKED``.

The tables are created on SQLite too (one schema for every backend); nothing uses them there.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "queue_nodes",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("node", sa.String(32), primary_key=True),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_s", sa.Float, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "queue_callers",
        sa.Column("call_id", sa.String(64), primary_key=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("joined_at", sa.Float, nullable=False),  # epoch seconds, the node's clock
        sa.Column("offered_to", sa.String(64), nullable=True),
        sa.Column("tried", sa.Text, nullable=False, server_default=""),  # " op1 op2 "
    )
    op.create_index("ix_queue_callers_order", "queue_callers", ["site", "priority", "joined_at"])
    op.create_table(
        "queue_operators",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("operator", sa.String(64), primary_key=True),
        sa.Column("call_id", sa.String(64), nullable=True),
        sa.Column("node", sa.String(32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("queue_operators")
    op.drop_index("ix_queue_callers_order", table_name="queue_callers")
    op.drop_table("queue_callers")
    op.drop_table("queue_nodes")
