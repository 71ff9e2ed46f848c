"""caller outcomes and supervisor flag clears (ghost and prank screening)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as t:
        t.add_column(sa.Column("outcome", sa.String(16)))
    op.create_index("ix_tickets_outcome", "tickets", ["caller_key", "outcome", "arrived_at"])
    op.create_table(
        "caller_flag_clears",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("caller_key", sa.String(32), nullable=False),
        sa.Column("cleared_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cleared_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_caller_flag_clears_key", "caller_flag_clears", ["caller_key", "cleared_at"])


def downgrade() -> None:
    op.drop_table("caller_flag_clears")
    op.drop_index("ix_tickets_outcome", "tickets")
    with op.batch_alter_table("tickets") as t:
        t.drop_column("outcome")
