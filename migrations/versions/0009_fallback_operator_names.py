"""fallback tickets: the operator by name, when they answered, and the stage the call reached

Tickets the dialplan fallback made before this fix name the operator by the channel that
answered (``PJSIP/op29-00000241``), have no operator answer time and show status ``new`` although
an operator talked to the caller. Each such ticket is rewritten in place: operator ``op29``,
``operator_answered_at`` = end time minus the talk time the fallback record gave (ANSWEREDTIME,
kept in the "fallback ended" audit line), status ``in_call`` where it was ``new``; and an audit
line says what was changed and from what. Nothing else is touched; downgrade puts the channel
names back (from that audit line).

Revision ID: 0009
Revises: 0012
Create Date: 2026-12-01
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTION = "migrated 0009"


def _name(channel: str) -> str:
    endpoint = channel.split("/", 1)[1] if "/" in channel else channel
    head, sep, tail = endpoint.rpartition("-")
    return head if sep and len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) \
        else endpoint


def _aware(value: object) -> datetime | None:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def upgrade() -> None:
    conn = op.get_bind()
    tickets = sa.table("tickets", sa.column("id", sa.Integer), sa.column("operator", sa.String),
                       sa.column("status", sa.String),
                       sa.column("ended_at", sa.DateTime(timezone=True)),
                       sa.column("operator_answered_at", sa.DateTime(timezone=True)))
    audit = sa.table("ticket_audit", sa.column("ticket_id", sa.Integer),
                     sa.column("at", sa.DateTime(timezone=True)), sa.column("actor", sa.String),
                     sa.column("action", sa.String), sa.column("detail", sa.Text))
    rows = conn.execute(sa.select(tickets).where(tickets.c.operator.like("%/%"))).mappings().all()
    for t in rows:
        details = conn.execute(sa.select(audit.c.detail).where(
            audit.c.ticket_id == t["id"], audit.c.action == "fallback ended")).scalars().all()
        talked: float | None = None
        for d in details:
            try:
                talked = float(json.loads(d or "{}").get("answered_s") or "")
            except ValueError:
                continue
        changes: dict[str, object] = {"operator": _name(str(t["operator"]))}
        ended = _aware(t["ended_at"])
        if t["operator_answered_at"] is None and ended is not None and talked is not None:
            changes["operator_answered_at"] = ended - timedelta(seconds=talked)
        if t["status"] == "new":
            changes["status"] = "in_call"
        conn.execute(tickets.update().where(tickets.c.id == t["id"]).values(**changes))
        before = {"operator": t["operator"], "status": t["status"]}
        conn.execute(audit.insert().values(
            ticket_id=t["id"], at=datetime.now(UTC), actor="system", action=ACTION,
            detail=json.dumps({"before": before,
                               "after": {k: v.isoformat() if isinstance(v, datetime) else v
                                         for k, v in changes.items()}}, sort_keys=True)))


def downgrade() -> None:
    conn = op.get_bind()
    tickets = sa.table("tickets", sa.column("id", sa.Integer), sa.column("operator", sa.String),
                       sa.column("status", sa.String))
    audit = sa.table("ticket_audit", sa.column("ticket_id", sa.Integer),
                     sa.column("action", sa.String), sa.column("detail", sa.Text))
    for ticket_id, detail in conn.execute(
            sa.select(audit.c.ticket_id, audit.c.detail).where(audit.c.action == ACTION)).all():
        before = json.loads(detail)["before"]
        conn.execute(tickets.update().where(tickets.c.id == ticket_id)
                     .values(operator=before["operator"], status=before["status"]))
    conn.execute(audit.delete().where(audit.c.action == ACTION))
