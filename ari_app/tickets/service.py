"""Ticket service: open at StasisStart, change with an audit line, never block the call.

Every operation is queued on the Writer and keyed by the caller's channel id, so replaying it
(after a crash or a database outage) changes nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ari_app.tickets.models import LocationRecord, Ticket, TicketAudit, TicketCounter
from ari_app.tickets.writer import Writer

log = logging.getLogger(__name__)

STATUSES = ("new", "in_call", "classified", "dispatched", "acknowledged", "resolved", "closed",
            "abandoned", "prank", "duplicate", "forwarded")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def next_reference(s: Session, site: str, prefix: str, day: str) -> str:
    """``<PREFIX>-<YYYYMMDD>-<NNNN>``, counted per site and site-local day."""
    counter = s.scalar(
        select(TicketCounter).where(TicketCounter.site == site, TicketCounter.day == day)
        .with_for_update())
    if counter is None:
        counter = TicketCounter(site=site, day=day, last=0)
        s.add(counter)
    counter.last += 1
    s.flush()
    return f"{prefix}-{day}-{counter.last:04d}"


class TicketService:
    def __init__(self, writer: Writer, site: str, prefix: str, tz: ZoneInfo) -> None:
        self.writer, self.site, self.prefix, self.tz = writer, site, prefix, tz
        writer.register("ticket.open", self._open)
        writer.register("ticket.change", self._change)

    def open(self, channel_id: str, caller: str, at: datetime,
             on_reference: Callable[[str], None] | None = None, caller_key: str = "",
             attach_locations_since: datetime | None = None, **fields: Any) -> None:
        def done(reference: Any) -> None:
            if on_reference is not None and isinstance(reference, str):
                on_reference(reference)

        self.writer.submit("ticket.open", {
            "channel": channel_id, "caller": caller, "at": at, "caller_key": caller_key,
            "attach_since": attach_locations_since, "fields": fields}, done)

    def _open(self, s: Session, p: dict[str, Any]) -> str:
        channel_id, at, caller_key = p["channel"], p["at"], p["caller_key"]
        ticket = s.scalar(select(Ticket).where(Ticket.channel_id == channel_id))
        if ticket is None:
            day = at.astimezone(self.tz).strftime("%Y%m%d")
            ticket = Ticket(reference=next_reference(s, self.site, self.prefix, day),
                            site=self.site, channel_id=channel_id, caller_number=p["caller"],
                            caller_key=caller_key, arrived_at=at, status="new", **p["fields"])
            s.add(ticket)
            s.flush()
            if caller_key and p["attach_since"] is not None:
                # Locations (AML) that reached us before the call belong to it.
                s.execute(
                    update(LocationRecord)
                    .where(LocationRecord.caller_key == caller_key,
                           LocationRecord.ticket_id.is_(None),
                           LocationRecord.received_at >= p["attach_since"])
                    .values(ticket_id=ticket.id))
            s.add(TicketAudit(ticket_id=ticket.id, at=at, actor="system", action="opened",
                              detail=json.dumps({"caller": p["caller"], "channel": channel_id})))
            log.info("call=%s ticket=%s opened", channel_id, ticket.reference)
        return ticket.reference

    def change(self, channel_id: str, action: str, at: datetime, actor: str = "system",
               only_if_unset: tuple[str, ...] = (), audit: dict[str, Any] | None = None,
               status_from: tuple[str, ...] | None = None, **fields: Any) -> None:
        """Set fields on the call's ticket and write one audit line describing the change."""
        self.writer.submit("ticket.change", {
            "channel": channel_id, "action": action, "at": at, "actor": actor,
            "only_if_unset": list(only_if_unset), "audit": audit or {},
            "status_from": list(status_from) if status_from is not None else None,
            "fields": fields})

    def _change(self, s: Session, p: dict[str, Any]) -> None:
        ticket = s.scalar(select(Ticket).where(Ticket.channel_id == p["channel"]))
        if ticket is None:
            log.error("call=%s no ticket for %s", p["channel"], p["action"])
            return
        changed = {}
        status_from = p["status_from"]
        for key, value in p["fields"].items():
            if key in p["only_if_unset"] and getattr(ticket, key) is not None:
                continue
            if key == "status" and status_from is not None and ticket.status not in status_from:
                continue  # an operator's classification/dispatch during the call stands
            if getattr(ticket, key) != value:
                setattr(ticket, key, value)
                changed[key] = _jsonable(value)
        s.add(TicketAudit(ticket_id=ticket.id, at=p["at"], actor=p["actor"], action=p["action"],
                          detail=json.dumps(changed | p["audit"], sort_keys=True)))
