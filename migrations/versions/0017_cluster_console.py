"""every node's console shows every node's calls and acts on them (PostgreSQL)

Two tables, used only when several nodes share one PostgreSQL (``SIAGA112_NODE`` set), see
``ari_app/web/cluster.py``:

- ``cluster_live``: one row per node, its live state as JSON (waiting callers with their
  badges, calls in progress), rewritten when it changes and every few seconds.
- ``node_actions``: a console action on a live call of another node (supervise, hand over,
  conference an agency), written by the node whose console was used, taken and run by the
  node that holds the call, which writes back the HTTP status and JSON result.
  ``status`` 0: withdrawn by the requester (not taken in time; it never runs late).

Created on SQLite too (one schema for every backend); nothing uses them there.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_live",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("node", sa.String(32), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "node_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("node", sa.String(32), nullable=False),       # the node that holds the call
        sa.Column("from_node", sa.String(32), nullable=False),  # the node whose console asked
        sa.Column("call_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),  # JSON: username, role, operator
        sa.Column("body", sa.Text, nullable=False),   # JSON: the action's body, as posted
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("result", sa.Text, nullable=True),
    )
    op.create_index("ix_node_actions_open", "node_actions", ["site", "node", "taken_at"])


def downgrade() -> None:
    op.drop_index("ix_node_actions_open", table_name="node_actions")
    op.drop_table("node_actions")
    op.drop_table("cluster_live")
