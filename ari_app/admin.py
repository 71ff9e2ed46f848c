"""Admin commands behind the CLI: tickets, operators, shifts. Plain text or --json."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.config import Site
from ari_app.tickets.models import CallerFlagClear, Ticket, TicketAudit

TICKET_FIELDS = ("reference", "status", "kind", "category", "priority", "silent", "caller_number",
                 "operator", "agency", "menu_choice", "policy", "callback_needed", "arrived_at",
                 "answered_at", "queued_at", "operator_answered_at", "ended_at", "end_reason",
                 "recording_path", "notes", "outcome", "language", "operator_rung_at")


def _value(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def ticket_dict(t: Ticket) -> dict[str, Any]:
    return {f: _value(getattr(t, f)) for f in TICKET_FIELDS}


async def list_tickets(s: AsyncSession, site: str, *, status: str | None = None,
                       callback: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    q = select(Ticket).where(Ticket.site == site)
    if status:
        q = q.where(Ticket.status == status)
    order: list[Any] = [Ticket.id.desc()]
    if callback:
        q = q.where(Ticket.callback_needed.is_(True))
        # A silent caller nobody reached is called back first: they may be unable to speak.
        order.insert(0, (Ticket.outcome == "silent-unreached").desc())
    rows = await s.scalars(q.order_by(*order).limit(limit))
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


OUTCOMES = ("genuine", "complaint", "prank", "ghost", "abandoned", "silent-unreached")


async def caller_history(s: AsyncSession, key: str, since: datetime) -> dict[str, Any]:
    """Counts per outcome class for one normalised number, after the last supervisor clear."""
    cleared = await s.scalar(select(func.max(CallerFlagClear.cleared_at))
                             .where(CallerFlagClear.caller_key == key))
    q = select(Ticket.outcome, func.count()).where(Ticket.caller_key == key,
                                                   Ticket.arrived_at >= since)
    if cleared is not None:
        q = q.where(Ticket.arrived_at > cleared)
    counts = {o: 0 for o in OUTCOMES}
    for outcome, n in await s.execute(q.group_by(Ticket.outcome)):
        if outcome in counts:
            counts[outcome] = int(n)
    return {"caller": key, "since": since.isoformat(),
            "cleared_at": cleared.isoformat() if cleared else None, "counts": counts}


async def clear_flags(s: AsyncSession, key: str, by: str, reason: str, at: datetime) -> None:
    """A supervisor clears a number's prank/ghost history; audited on the number's tickets."""
    s.add(CallerFlagClear(caller_key=key, cleared_at=at, cleared_by=by, reason=reason))
    latest = await s.scalar(select(Ticket).where(Ticket.caller_key == key)
                            .order_by(Ticket.arrived_at.desc()).limit(1))
    if latest is not None:
        s.add(TicketAudit(ticket_id=latest.id, at=at, actor=by, action="flags cleared",
                          detail=json.dumps({"caller": key, "reason": reason})))


async def mark_ticket(s: AsyncSession, reference: str, status: str, by: str,
                      at: datetime) -> bool:
    """An operator marks a ticket prank/ghost/duplicate (counts for screening)."""
    t = await s.scalar(select(Ticket).where(Ticket.reference == reference))
    if t is None:
        return False
    before = {"status": t.status, "outcome": t.outcome}
    t.status = status
    if status in ("prank", "ghost"):
        t.outcome = status
    s.add(TicketAudit(ticket_id=t.id, at=at, actor=by, action="marked",
                      detail=json.dumps({"before": before, "status": status})))
    return True
