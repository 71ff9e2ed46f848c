"""security: admin audit, login throttle, API token expiry/revocation, retention marks

All additive. Existing API tokens keep expires_at NULL (made before expiry existed: they do not
expire, but can be revoked, and `siaga112 users tokens` shows them as "no expiry"). Existing
tickets get legal_hold false and no anonymised/recording-deleted marks.

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("entity", sa.String(32), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("before", sa.Text, nullable=False, server_default=""),
        sa.Column("after", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_admin_audit_entity", "admin_audit", ["entity", "key"])
    op.create_table(
        "login_throttle",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_failure_at", TS, nullable=False),
        sa.Column("locked_until", TS),
        sa.UniqueConstraint("kind", "key", name="uq_login_throttle_kind_key"),
    )
    # plain ADD COLUMN (SQLite does it in place): a batch copy of tickets would drop the old
    # table, and with foreign keys on that cascades into notifications and audit rows
    op.add_column("api_tokens", sa.Column("expires_at", TS))
    op.add_column("api_tokens", sa.Column("revoked_at", TS))
    op.add_column("api_tokens", sa.Column("revoked_by", sa.String(64), nullable=False,
                                          server_default=""))
    op.add_column("tickets", sa.Column("legal_hold", sa.Boolean, nullable=False,
                                       server_default=sa.false()))
    op.add_column("tickets", sa.Column("anonymised_at", TS))
    op.add_column("tickets", sa.Column("recording_deleted_at", TS))


def downgrade() -> None:
    for table, column in (("tickets", "recording_deleted_at"), ("tickets", "anonymised_at"),
                          ("tickets", "legal_hold"), ("api_tokens", "revoked_by"),
                          ("api_tokens", "revoked_at"), ("api_tokens", "expires_at")):
        op.drop_column(table, column)  # SQLite 3.35+ drops a column in place
    op.drop_table("login_throttle")
    op.drop_index("ix_admin_audit_entity", "admin_audit")
    op.drop_table("admin_audit")
