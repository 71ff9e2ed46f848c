"""Incidents: tickets about one event linked together, suggested, and dispatched once.

Thirty callers about one fire make thirty tickets; linked into one incident, each agency gets
one notification (on the incident's primary ticket, its first) that lists every ticket. The
console suggests candidates for a ticket: open tickets of the same category within the site's
radius and time window (``console.incident_radius_m`` / ``incident_window_min``), or from the
same caller.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.config import ConsoleSettings
from ari_app.tickets.console_models import Incident, IncidentTicket
from ari_app.tickets.models import LocationRecord, Ticket, TicketAudit

CLOSED = ("resolved", "closed", "prank", "ghost", "duplicate")


class IncidentError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class Candidate:
    reference: str
    category: str
    caller: str
    arrived_at: datetime
    reason: str                 # "same_caller" or "nearby"
    distance_m: float | None


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine) in metres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    return 2 * 6371000.0 * math.asin(math.sqrt(h))


def incident_reference(incident_id: int) -> str:
    return f"INC-{incident_id}"


async def _best_points(s: AsyncSession, ticket_ids: list[int]) -> dict[int, tuple[float, float]]:
    """Each ticket's most precise point (smallest radius, newest first on a tie)."""
    best: dict[int, tuple[float, tuple[float, float]]] = {}
    if not ticket_ids:
        return {}
    for loc in await s.scalars(select(LocationRecord).where(
            LocationRecord.ticket_id.in_(ticket_ids), LocationRecord.latitude.is_not(None))
            .order_by(LocationRecord.received_at.desc())):
        assert loc.ticket_id is not None and loc.latitude is not None and loc.longitude is not None
        radius = loc.radius_m if loc.radius_m is not None else 1e9
        if loc.ticket_id not in best or radius < best[loc.ticket_id][0]:
            best[loc.ticket_id] = (radius, (loc.latitude, loc.longitude))
    return {tid: point for tid, (_, point) in best.items()}


async def _ticket(s: AsyncSession, site: str, reference: str) -> Ticket:
    t = await s.scalar(select(Ticket).where(Ticket.site == site, Ticket.reference == reference))
    if t is None:
        raise IncidentError(404, f"no ticket {reference}")
    return t


async def incident_of(s: AsyncSession, ticket_id: int) -> Incident | None:
    link = await s.get(IncidentTicket, ticket_id)
    return await s.get(Incident, link.incident_id) if link is not None else None


async def members(s: AsyncSession, incident_id: int) -> list[Ticket]:
    return list(await s.scalars(select(Ticket).join(IncidentTicket, IncidentTicket.ticket_id == Ticket.id)
                                .where(IncidentTicket.incident_id == incident_id)
                                .order_by(Ticket.arrived_at, Ticket.id)))


async def candidates(s: AsyncSession, site: str, reference: str,
                     settings: ConsoleSettings) -> list[Candidate]:
    t = await _ticket(s, site, reference)
    mine = await incident_of(s, t.id)
    window = timedelta(minutes=settings.incident_window_min)
    others = list(await s.scalars(select(Ticket).where(
        Ticket.site == site, Ticket.id != t.id, Ticket.status.not_in(CLOSED),
        Ticket.arrived_at >= t.arrived_at - window, Ticket.arrived_at <= t.arrived_at + window)
        .order_by(Ticket.arrived_at)))
    linked = {link.ticket_id for link in await s.scalars(
        select(IncidentTicket).where(IncidentTicket.incident_id == mine.id))} if mine else set()
    points = await _best_points(s, [t.id] + [o.id for o in others])
    here = points.get(t.id)
    found: list[Candidate] = []
    for o in others:
        if o.id in linked:
            continue
        if t.caller_key and o.caller_key == t.caller_key:
            found.append(Candidate(o.reference, o.category, o.caller_number, o.arrived_at,
                                   "same_caller", None))
            continue
        there = points.get(o.id)
        if (o.category == t.category and t.category != "uncategorised" and here is not None
                and there is not None):
            d = distance_m(here, there)
            if d <= settings.incident_radius_m:
                found.append(Candidate(o.reference, o.category, o.caller_number, o.arrived_at,
                                       "nearby", round(d)))
    return found


async def link(s: AsyncSession, site: str, references: list[str], actor: str,
               now: datetime) -> Incident:
    """Link tickets into one incident (the existing incident of any of them, else a new one)."""
    if len(set(references)) < 2:
        raise IncidentError(422, "tickets: expected at least two distinct ticket references")
    tickets = [await _ticket(s, site, ref) for ref in references]
    found = {i.id: i for i in [await incident_of(s, t.id) for t in tickets] if i is not None}
    if len(found) > 1:
        raise IncidentError(409, "these tickets are already in different incidents: "
                                 + ", ".join(incident_reference(i) for i in sorted(found)))
    if found:
        incident = next(iter(found.values()))
    else:
        first = min(tickets, key=lambda x: (x.arrived_at, x.id))
        incident = Incident(site=site, primary_ticket_id=first.id, created_at=now, created_by=actor)
        s.add(incident)
        await s.flush()
    for t in tickets:
        if await s.get(IncidentTicket, t.id) is None:
            s.add(IncidentTicket(ticket_id=t.id, incident_id=incident.id, linked_at=now, linked_by=actor))
            s.add(TicketAudit(ticket_id=t.id, at=now, actor=actor, action="linked to incident",
                              detail=json.dumps({"incident": incident_reference(incident.id)})))
    return incident


async def unlink(s: AsyncSession, site: str, reference: str, actor: str, now: datetime) -> None:
    t = await _ticket(s, site, reference)
    held = await s.get(IncidentTicket, t.id)
    if held is None:
        raise IncidentError(409, f"ticket {reference} is in no incident")
    incident = await s.get(Incident, held.incident_id)
    assert incident is not None
    if incident.primary_ticket_id == t.id and len(await members(s, incident.id)) > 1:
        raise IncidentError(409, f"ticket {reference} is the incident's first ticket: "
                                 "unlink the others first")
    await s.delete(held)
    s.add(TicketAudit(ticket_id=t.id, at=now, actor=actor, action="unlinked from incident",
                      detail=json.dumps({"incident": incident_reference(incident.id)})))


async def summary(s: AsyncSession, ticket_id: int) -> dict[str, Any] | None:
    """The incident a ticket belongs to, with every ticket in it (card, agency payload)."""
    incident = await incident_of(s, ticket_id)
    if incident is None:
        return None
    return {"reference": incident_reference(incident.id), "id": incident.id,
            "primary_ticket_id": incident.primary_ticket_id,
            "tickets": [{"reference": m.reference, "category": m.category, "status": m.status,
                         "caller_number": m.caller_number, "arrived_at": m.arrived_at.isoformat(),
                         "primary": m.id == incident.primary_ticket_id}
                        for m in await members(s, incident.id)]}
