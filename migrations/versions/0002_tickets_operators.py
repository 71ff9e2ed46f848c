"""tickets, audit trail, reference counters, operators, shifts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ticket_counters",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("day", sa.String(8), primary_key=True),
        sa.Column("last", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reference", sa.String(32), nullable=False, unique=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(64), unique=True),
        sa.Column("caller_number", sa.String(64), nullable=False, server_default=""),
        sa.Column("kind", sa.String(16), nullable=False, server_default="emergency"),
        sa.Column("category", sa.String(32), nullable=False, server_default="uncategorised"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="5"),
        sa.Column("status", sa.String(16), nullable=False, server_default="new"),
        sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("menu_choice", sa.String(16)),
        sa.Column("operator", sa.String(64)),
        sa.Column("agency", sa.String(32)),
        sa.Column("policy", sa.String(64)),
        sa.Column("recording_path", sa.Text),
        sa.Column("notes", sa.Text, nullable=False, server_default=""),
        sa.Column("callback_needed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("arrived_at", TS, nullable=False),
        sa.Column("answered_at", TS),
        sa.Column("queued_at", TS),
        sa.Column("operator_answered_at", TS),
        sa.Column("ended_at", TS),
        sa.Column("end_reason", sa.String(40)),
    )
    op.create_index("ix_tickets_caller", "tickets", ["caller_number"])
    op.create_index("ix_tickets_status", "tickets", ["status"])
    op.create_table(
        "ticket_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_ticket_audit_ticket", "ticket_audit", ["ticket_id"])
    op.create_table(
        "operators",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("display_name", sa.String(128), nullable=False, server_default=""),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("sip_md5", sa.String(32), nullable=False),
        sa.Column("contact", sa.String(255)),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "shifts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("operator_id", sa.Integer, sa.ForeignKey("operators.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("starts_at", TS, nullable=False),
        sa.Column("ends_at", TS, nullable=False),
    )
    op.create_index("ix_shifts_time", "shifts", ["starts_at", "ends_at"])


def downgrade() -> None:
    for table in ("shifts", "operators", "ticket_audit", "tickets", "ticket_counters"):
        op.drop_table(table)
