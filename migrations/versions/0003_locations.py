"""locations, input rejections, normalised caller key, confirmed silent emergencies

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tickets") as t:
        t.add_column(sa.Column("caller_key", sa.String(32), nullable=False, server_default=""))
        t.add_column(sa.Column("silent_confirmed", sa.Boolean, nullable=False,
                               server_default=sa.false()))
    op.create_index("ix_tickets_caller_key", "tickets", ["caller_key", "arrived_at"])
    op.create_table(
        "locations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="SET NULL")),
        sa.Column("caller_key", sa.String(32), nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("latitude", sa.Float),
        sa.Column("longitude", sa.Float),
        sa.Column("radius_m", sa.Float),
        sa.Column("confidence_pct", sa.Float),
        sa.Column("method", sa.String(16)),
        sa.Column("civic", sa.Text),
        sa.Column("fix_time", TS),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("warnings", sa.Text, nullable=False, server_default=""),
        sa.Column("raw", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_locations_caller", "locations", ["caller_key", "received_at"])
    op.create_index("ix_locations_ticket", "locations", ["ticket_id"])
    op.create_table(
        "input_rejections",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", TS, nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("origin", sa.String(128), nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw", sa.Text, nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("input_rejections")
    op.drop_table("locations")
    op.drop_index("ix_tickets_caller_key", "tickets")
    with op.batch_alter_table("tickets") as t:
        t.drop_column("silent_confirmed")
        t.drop_column("caller_key")
