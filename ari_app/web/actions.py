"""What people do to tickets from the web: classify, dispatch (with its outbox rows), agency
acknowledge/resolve, web complaints. One transaction each, one audit line per change."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.clock import Clock
from ari_app.config import Site, is_http_url
from ari_app.location.numbers import normalise_msisdn
from ari_app.tickets.models import Agency, Notification, Ticket, TicketAudit
from ari_app.tickets.service import next_reference
from ari_app.web.incidents import incident_of, members

log = logging.getLogger(__name__)

SCREEN_STATUSES = ("prank", "ghost", "duplicate")
KINDS = ("emergency", "complaint", "information")
OPEN_STATUSES = ("new", "in_call", "classified")


class ActionError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class TicketBus:
    """Ticket changes for the console's live view (separate from the call bus)."""

    def __init__(self) -> None:
        self._listeners: set[Callable[[dict[str, Any]], None]] = set()

    def subscribe(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.add(fn)

    def unsubscribe(self, fn: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.discard(fn)

    def publish(self, reference: str, status: str, **data: Any) -> None:
        for fn in list(self._listeners):
            fn({"reference": reference, "status": status, **data})


def site_categories(site: Site) -> list[str]:
    cats = [o.category for o in site.menu.options.values()]
    return sorted(set(cats) | {"uncategorised", "other"})


@dataclass
class StepResult:
    reference: str
    status: str
    agency: str


class TicketActions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], site: Site, clock: Clock,
                 bus: TicketBus, on_dispatch: Callable[[], None] = lambda: None) -> None:
        self.sessions, self.site, self.clock, self.bus = sessions, site, clock, bus
        self.on_dispatch = on_dispatch

    async def _ticket(self, s: AsyncSession, reference: str) -> Ticket:
        ticket = await s.scalar(select(Ticket).where(Ticket.reference == reference,
                                                     Ticket.site == self.site.code)
                                .with_for_update())
        if ticket is None:
            raise ActionError(404, f"no ticket {reference}")
        return ticket

    async def classify(self, reference: str, actor: str, *, category: str | None = None,
                       kind: str | None = None, notes: str | None = None,
                       status: str | None = None) -> str:
        if category is not None and category not in site_categories(self.site):
            raise ActionError(422, f"category: expected one of {site_categories(self.site)}, "
                                   f"got {category!r}")
        if kind is not None and kind not in KINDS:
            raise ActionError(422, f"kind: expected one of {list(KINDS)}, got {kind!r}")
        if status is not None and status not in SCREEN_STATUSES:
            raise ActionError(422, f"status: expected one of {list(SCREEN_STATUSES)}, got {status!r}")
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            ticket = await self._ticket(s, reference)
            changed: dict[str, Any] = {}

            def put(key: str, value: Any) -> None:
                if getattr(ticket, key) != value:
                    setattr(ticket, key, value)
                    changed[key] = value

            if category is not None:
                put("category", category)
                agency = next((o.agency for o in self.site.menu.options.values()
                               if o.category == category and o.agency), None)
                if agency and ticket.agency is None:
                    put("agency", agency)
            if kind is not None:
                put("kind", kind)
            if notes is not None:
                put("notes", notes)
            if status is not None:
                put("status", status)
                if status in ("prank", "ghost"):
                    put("outcome", status)  # the screening AGI counts these per caller
            elif ticket.status == "new":
                put("status", "classified")
            s.add(TicketAudit(ticket_id=ticket.id, at=now, actor=actor, action="classified",
                              detail=json.dumps(changed, sort_keys=True)))
            result, shown = ticket.status, {"category": ticket.category, "caller": ticket.caller_number}
        log.info("ticket=%s classified by %s: %s", reference, actor, changed)
        self.bus.publish(reference, result, action="classified", **shown)
        return result

    async def dispatch(self, reference: str, codes: list[str], actor: str) -> list[int]:
        """Ticket → dispatched, audit line and one outbox row per agency, in one transaction."""
        if not codes or len(set(codes)) != len(codes):
            raise ActionError(422, "agencies: expected a non-empty list of distinct agency codes")
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            ticket = await self._ticket(s, reference)
            if ticket.status in SCREEN_STATUSES or ticket.status in ("resolved", "closed"):
                raise ActionError(409, f"ticket {reference} is {ticket.status}: not dispatched")
            incident = await incident_of(s, ticket.id)
            linked: list[Ticket] = []
            if incident is not None:  # one notification per agency, on the incident's first ticket
                linked = [m for m in await members(s, incident.id)
                          if m.status not in SCREEN_STATUSES and m.status not in ("resolved", "closed")]
                # the first ticket carries the notifications; if it was closed, the first open one
                ticket = next((m for m in linked if m.id == incident.primary_ticket_id),
                              linked[0] if linked else ticket)
            agencies = {a.code: a for a in await s.scalars(
                select(Agency).where(Agency.site == self.site.code, Agency.code.in_(codes),
                                     Agency.active.is_(True)))}
            unknown = [c for c in codes if c not in agencies]
            if unknown:
                raise ActionError(422, f"agencies: unknown agency code(s) {unknown}")
            already = set(await s.scalars(select(Notification.agency_id)
                                          .where(Notification.ticket_id == ticket.id)))
            created: list[Notification] = []
            for code in codes:
                if agencies[code].id in already:
                    continue  # dispatching twice to one agency sends one notification
                n = Notification(ticket_id=ticket.id, agency_id=agencies[code].id, channel="webhook",
                                 status="pending", attempts=0, next_attempt_at=now, created_at=now,
                                 created_by=actor, last_error="", evidence="", photo_url="")
                s.add(n)
                created.append(n)
            await s.flush()
            ticket.status = "dispatched"
            ticket.agency = ",".join(codes)[:32]
            s.add(TicketAudit(ticket_id=ticket.id, at=now, actor=actor, action="dispatched",
                              detail=json.dumps({"agencies": codes,
                                                 "notifications": [n.id for n in created]})))
            ids = [n.id for n in created]
            others = [m for m in linked if m.id != ticket.id]
            for m in others:
                m.status, m.agency = "dispatched", ",".join(codes)[:32]
                s.add(TicketAudit(ticket_id=m.id, at=now, actor=actor, action="dispatched",
                                  detail=json.dumps({"agencies": codes, "with": ticket.reference})))
            shown = [ticket.reference] + [m.reference for m in others]
        log.info("ticket=%s dispatched by %s to %s (notifications %s)", ",".join(shown), actor,
                 codes, ids)
        for ref in shown:
            self.bus.publish(ref, "dispatched", agencies=codes)
        self.on_dispatch()
        return ids

    async def agency_step(self, notification_id: int, action: str, *, evidence: str = "",
                          photo_url: str = "", actor: str = "") -> StepResult:
        """An agency acknowledges or resolves (with evidence); the ticket follows."""
        if action not in ("acknowledge", "resolve"):
            raise ActionError(422, "action: expected acknowledge or resolve")
        if photo_url and not is_http_url(photo_url):
            raise ActionError(422, "photo_url: expected an http(s) link")
        if len(evidence) > 4000 or len(photo_url) > 1000:
            raise ActionError(422, "evidence: at most 4000 characters; photo_url at most 1000")
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            n = await s.scalar(select(Notification).where(Notification.id == notification_id)
                               .with_for_update())
            if n is None:
                raise ActionError(404, "no such notification")
            agency = await s.get(Agency, n.agency_id)
            ticket = await s.scalar(select(Ticket).where(Ticket.id == n.ticket_id).with_for_update())
            assert agency is not None and ticket is not None
            who = actor or f"agency:{agency.code}"
            if action == "acknowledge" and n.acknowledged_at is not None:
                raise ActionError(409, f"already acknowledged at {n.acknowledged_at.isoformat()}")
            if action == "resolve" and n.resolved_at is not None:
                raise ActionError(409, f"already resolved at {n.resolved_at.isoformat()}")
            if n.acknowledged_at is None:
                n.acknowledged_at = now
            if action == "resolve":
                n.resolved_at = now
            if evidence:
                n.evidence = (n.evidence + "\n" + evidence).strip()
            if photo_url:
                n.photo_url = photo_url
            others = list(await s.scalars(select(Notification).where(
                Notification.ticket_id == ticket.id, Notification.id != n.id)))
            if action == "resolve" and all(o.resolved_at is not None for o in others):
                ticket.status = "resolved"
            elif ticket.status == "dispatched":
                ticket.status = "acknowledged"
            past = "acknowledged" if action == "acknowledge" else "resolved"
            s.add(TicketAudit(ticket_id=ticket.id, at=now, actor=who, action=past,
                              detail=json.dumps({"agency": agency.code, "notification": n.id,
                                                 "evidence": evidence, "photo_url": photo_url})))
            result = StepResult(ticket.reference, ticket.status, agency.code)
        log.info("ticket=%s %s by agency %s", result.reference, action, result.agency)
        self.bus.publish(result.reference, result.status, action=action, agency=result.agency)
        return result

    async def create_complaint(self, *, description: str, phone: str, name: str = "",
                               category: str = "complaint", actor: str = "web") -> str:
        """A complaint from the web form or API: a ticket like any other, kind complaint."""
        now = self.clock.now()
        try:
            key = normalise_msisdn(phone) if phone else ""
        except ValueError:
            key = ""
        async with self.sessions() as s, s.begin():
            day = now.astimezone(self.site.timezone).strftime("%Y%m%d")
            ticket = Ticket(reference=await s.run_sync(next_reference, self.site.code,
                                                       self.site.reference_prefix, day),
                            site=self.site.code, channel_id=None, caller_number=phone,
                            caller_key=key, kind="complaint", category=category, priority=5,
                            status="new", outcome="complaint", arrived_at=now,
                            notes=(f"{name}: " if name else "") + description)
            s.add(ticket)
            await s.flush()
            s.add(TicketAudit(ticket_id=ticket.id, at=now, actor=actor, action="opened",
                              # the name structured, so retention can find it in free text
                              detail=json.dumps({"channel": "web", "caller": phone,
                                                 **({"name": name} if name else {})})))
            reference = ticket.reference
        log.info("ticket=%s complaint opened via %s", reference, actor)
        self.bus.publish(reference, "new", action="opened", kind="complaint")
        return reference
