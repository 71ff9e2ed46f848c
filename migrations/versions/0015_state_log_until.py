"""operator state audit: the end of a timed wrap-up

A wrap-up after a call lasts the site's ``console.wrap_up_s`` and then reads as ready without a
new row being written; the audit now keeps that end (``until``) so the KPIs can tell wrap-up time
from ready time. Rows written before this revision have no end: the KPIs count such a wrap-up up
to the operator's next change (see ari_app/web/kpi_states.py).

Revision ID: 0015
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("operator_state_log") as t:
        t.add_column(sa.Column("until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("operator_state_log") as t:
        t.drop_column("until")
