"""Admin commands behind the CLI: tickets, operators, shifts. Plain text or --json."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.config import Site
from ari_app.tickets.models import Operator, Shift, Ticket, TicketAudit

TICKET_FIELDS = ("reference", "status", "kind", "category", "priority", "silent", "caller_number",
                 "operator", "agency", "menu_choice", "policy", "callback_needed", "arrived_at",
                 "answered_at", "queued_at", "operator_answered_at", "ended_at", "end_reason",
                 "recording_path", "notes")


def _value(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def ticket_dict(t: Ticket) -> dict[str, Any]:
    return {f: _value(getattr(t, f)) for f in TICKET_FIELDS}


async def list_tickets(s: AsyncSession, site: str, *, status: str | None = None,
                       callback: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    q = select(Ticket).where(Ticket.site == site)
    if status:
        q = q.where(Ticket.status == status)
    if callback:
        q = q.where(Ticket.callback_needed.is_(True))
    rows = await s.scalars(q.order_by(Ticket.id.desc()).limit(limit))
    return [ticket_dict(t) for t in rows]


async def show_ticket(s: AsyncSession, reference: str) -> dict[str, Any] | None:
    t = await s.scalar(select(Ticket).where(Ticket.reference == reference))
    if t is None:
        return None
    audit = await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == t.id)
                            .order_by(TicketAudit.id))
    data = ticket_dict(t)
    data["audit"] = [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                      "detail": json.loads(a.detail or "{}")} for a in audit]
    return data


def format_tickets(rows: list[dict[str, Any]], site: Site) -> str:
    if not rows:
        return "no tickets"
    lines = [f"{'reference':<20} {'status':<10} {'category':<16} {'pri':>3} {'caller':<16} "
             f"{'operator':<10} arrived ({site.timezone.key})"]
    for r in rows:
        arrived = datetime.fromisoformat(r["arrived_at"]).astimezone(site.timezone)
        lines.append(f"{r['reference']:<20} {r['status']:<10} {r['category']:<16} "
                     f"{r['priority']:>3} {r['caller_number']:<16} {r['operator'] or '-':<10} "
                     f"{arrived:%Y-%m-%d %H:%M:%S}")
    return "\n".join(lines)


def format_ticket(data: dict[str, Any]) -> str:
    lines = [f"{k:>22}: {'' if data[k] is None else data[k]}" for k in TICKET_FIELDS]
    lines.append("audit:")
    for a in data["audit"]:
        lines.append(f"  {a['at']}  {a['actor']:<10} {a['action']:<18} {json.dumps(a['detail'])}")
    return "\n".join(lines)


async def list_shifts(s: AsyncSession, site: str) -> list[dict[str, Any]]:
    rows = await s.execute(select(Operator.name, Shift.starts_at, Shift.ends_at)
                           .join(Shift, Shift.operator_id == Operator.id)
                           .where(Operator.site == site).order_by(Shift.starts_at))
    return [{"operator": n, "starts_at": a.isoformat(), "ends_at": b.isoformat()}
            for n, a, b in rows]
