"""notification_deliveries: one row per channel (webhook, email) of a notification

Existing notifications were webhook-only: each becomes its webhook delivery with its state
(status, attempts, next attempt, lease, last error, delivery time) copied; the notification rows
themselves are left as they are, so nothing already stored is lost.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("notification_id", sa.Integer,
                  sa.ForeignKey("notifications.id", ondelete="CASCADE"), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("lease_until", TS),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("delivered_at", TS),
        sa.UniqueConstraint("notification_id", "channel", name="uq_notification_deliveries_channel"),
    )
    op.create_index("ix_notification_deliveries_due", "notification_deliveries",
                    ["status", "next_attempt_at"])
    op.execute(
        "INSERT INTO notification_deliveries (notification_id, channel, status, attempts, "
        "next_attempt_at, lease_until, last_error, delivered_at) "
        "SELECT id, channel, status, attempts, next_attempt_at, lease_until, last_error, delivered_at "
        "FROM notifications")


def downgrade() -> None:
    op.drop_index("ix_notification_deliveries_due", "notification_deliveries")
    op.drop_table("notification_deliveries")
