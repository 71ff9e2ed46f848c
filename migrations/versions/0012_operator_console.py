"""operator console: per-user language and SIP operator link, operator states and their audit,
callback claims and attempts, incidents (tickets linked into one)

All additive: new tables only. A user with no console_profiles row reads as the site's language
(Bahasa Indonesia) with no linked operator; an operator with no operator_states row reads as
ready, so a site that never opens the console is rung exactly as before.

Revision ID: 0012
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "console_profiles",
        sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("lang", sa.String(8), nullable=True),
        sa.Column("operator_name", sa.String(64), nullable=True, unique=True),
    )
    op.create_table(
        "operator_states",
        sa.Column("operator_name", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("since", TS, nullable=False),
        sa.Column("until", TS, nullable=True),
    )
    op.create_table(
        "operator_state_log",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("operator_name", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("previous", sa.String(16), nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
    )
    op.create_index("ix_operator_state_log_at", "operator_state_log", ["operator_name", "at"])
    op.create_table(
        "callback_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "callback_claims",
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("claimed_by", sa.String(64), nullable=False),
        sa.Column("claimed_at", TS, nullable=False),
        sa.Column("done_at", TS, nullable=True),
    )


    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("primary_ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "incident_tickets",
        sa.Column("ticket_id", sa.Integer, sa.ForeignKey("tickets.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("incident_id", sa.Integer, sa.ForeignKey("incidents.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("linked_at", TS, nullable=False),
        sa.Column("linked_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_incident_tickets_incident", "incident_tickets", ["incident_id"])


def downgrade() -> None:
    op.drop_index("ix_incident_tickets_incident", "incident_tickets")
    op.drop_table("incident_tickets")
    op.drop_table("incidents")
    op.drop_table("callback_claims")
    op.drop_table("callback_attempts")
    op.drop_index("ix_operator_state_log_at", "operator_state_log")
    op.drop_table("operator_state_log")
    op.drop_table("operator_states")
    op.drop_table("console_profiles")
