"""calls and call_events

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel_id", sa.String(64), nullable=False, unique=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("caller_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("dialled", sa.String(32), nullable=False, server_default=""),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("answered_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("end_reason", sa.String(40)),
    )
    op.create_table(
        "call_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("channel_id", sa.String(64),
                  sa.ForeignKey("calls.channel_id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.UniqueConstraint("channel_id", "seq", name="uq_call_events_channel_seq"),
    )
    op.create_index("ix_call_events_channel", "call_events", ["channel_id"])


def downgrade() -> None:
    op.drop_table("call_events")
    op.drop_table("calls")
