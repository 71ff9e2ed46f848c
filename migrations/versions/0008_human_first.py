"""a human first: the caller's language, when an operator's phone first rang, silent-unreached

- ``tickets.language``: the language the caller heard (``en`` after pressing 0). Rows from
  before this revision are NULL and read as the site's first language (the only one callers
  could hear then).
- ``tickets.operator_rung_at``: when the first operator's phone was rung for this caller (time
  to a human, /kpi). NULL on older rows: their KPIs show time to an operator's answer only.
- How old ``ghost`` rows are read: until now the system itself wrote ``outcome = 'ghost'`` for a
  caller who pressed no key and hung up before a human answered. That is the silent caller the
  screening must never count. An operator's own judgement (``siaga112 tickets mark ... ghost``
  or the console) also set ``status = 'ghost'``, and those rows keep ``ghost``. Every other
  ``ghost`` row no operator answered becomes ``silent-unreached`` (never screened, first on the
  callback list, and flagged for a call back), with an audit line on the ticket that keeps the
  old value. Nothing is deleted; the downgrade turns those rows back into ``ghost``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYSTEM_GHOST = ("outcome = 'ghost' AND status <> 'ghost' AND operator_answered_at IS NULL")
AUDIT = ('{"outcome": {"before": "ghost", "after": "silent-unreached"}, "why": "written by the '
         'system for a caller with no key who hung up before a human: read as a silent caller '
         '(migration 0008)"}')


def upgrade() -> None:
    with op.batch_alter_table("tickets") as t:
        t.add_column(sa.Column("language", sa.String(8), nullable=True))
        t.add_column(sa.Column("operator_rung_at", sa.DateTime(timezone=True), nullable=True))
    audit = sa.table("ticket_audit", sa.column("ticket_id", sa.Integer),
                     sa.column("at", sa.DateTime(timezone=True)), sa.column("actor", sa.String),
                     sa.column("action", sa.String), sa.column("detail", sa.Text))
    tickets = sa.table("tickets", sa.column("id", sa.Integer),
                       sa.column("ended_at", sa.DateTime(timezone=True)),
                       sa.column("arrived_at", sa.DateTime(timezone=True)))
    op.execute(audit.insert().from_select(
        ["ticket_id", "at", "actor", "action", "detail"],
        sa.select(tickets.c.id, sa.func.coalesce(tickets.c.ended_at, tickets.c.arrived_at),
                  sa.literal("migration"), sa.literal("outcome reread"), sa.literal(AUDIT))
        .where(sa.text(SYSTEM_GHOST))))
    op.execute(f"UPDATE tickets SET outcome = 'silent-unreached', callback_needed = "
               f"{'1' if op.get_bind().dialect.name == 'sqlite' else 'true'} WHERE {SYSTEM_GHOST}")


def downgrade() -> None:
    op.execute("UPDATE tickets SET outcome = 'ghost' WHERE outcome = 'silent-unreached'")
    op.execute("DELETE FROM ticket_audit WHERE action = 'outcome reread' AND actor = 'migration'")
    with op.batch_alter_table("tickets") as t:
        t.drop_column("operator_rung_at")
        t.drop_column("language")
