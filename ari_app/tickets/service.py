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
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.models import LocationRecord, Ticket, TicketAudit, TicketCounter
from ari_app.tickets.writer import Writer

log = logging.getLogger(__name__)

STATUSES = ("new", "in_call", "classified", "dispatched", "acknowledged", "resolved", "closed",
            "abandoned", "prank", "duplicate", "forwarded")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def next_reference(s: AsyncSession, site: str, prefix: str, day: str) -> str:
    """``<PREFIX>-<YYYYMMDD>-<NNNN>``, counted per site and site-local day."""
    counter = await s.scalar(
        select(TicketCounter).where(TicketCounter.site == site, TicketCounter.day == day)
        .with_for_update())
    if counter is None:
        counter = TicketCounter(site=site, day=day, last=0)
        s.add(counter)
    counter.last += 1
    await s.flush()
    return f"{prefix}-{day}-{counter.last:04d}"


class TicketService:
    def __init__(self, writer: Writer, site: str, prefix: str, tz: ZoneInfo) -> None:
        self.writer, self.site, self.prefix, self.tz = writer, site, prefix, tz

    def open(self, channel_id: str, caller: str, at: datetime,
             on_reference: Callable[[str], None] | None = None, caller_key: str = "",
             attach_locations_since: datetime | None = None, **fields: Any) -> None:
        async def op(s: AsyncSession) -> None:
            ticket = await s.scalar(select(Ticket).where(Ticket.channel_id == channel_id))
            if ticket is None:
                day = at.astimezone(self.tz).strftime("%Y%m%d")
                ticket = Ticket(reference=await next_reference(s, self.site, self.prefix, day),
                                site=self.site, channel_id=channel_id, caller_number=caller,
                                caller_key=caller_key, arrived_at=at, status="new", **fields)
                s.add(ticket)
                await s.flush()
                if caller_key and attach_locations_since is not None:
                    # Locations (AML) that reached us before the call belong to it.
                    await s.execute(
                        update(LocationRecord)
                        .where(LocationRecord.caller_key == caller_key,
                               LocationRecord.ticket_id.is_(None),
                               LocationRecord.received_at >= attach_locations_since)
                        .values(ticket_id=ticket.id))
                s.add(TicketAudit(ticket_id=ticket.id, at=at, actor="system", action="opened",
                                  detail=json.dumps({"caller": caller, "channel": channel_id})))
                log.info("call=%s ticket=%s opened", channel_id, ticket.reference)
            if on_reference is not None:
                on_reference(ticket.reference)

        self.writer.submit(f"ticket open {channel_id}", op)

    def change(self, channel_id: str, action: str, at: datetime, actor: str = "system",
               only_if_unset: tuple[str, ...] = (), audit: dict[str, Any] | None = None,
               status_from: tuple[str, ...] | None = None, **fields: Any) -> None:
        """Set fields on the call's ticket and write one audit line describing the change."""

        async def op(s: AsyncSession) -> None:
            ticket = await s.scalar(select(Ticket).where(Ticket.channel_id == channel_id))
            if ticket is None:
                log.error("call=%s no ticket for %s", channel_id, action)
                return
            changed = {}
            for key, value in fields.items():
                if key in only_if_unset and getattr(ticket, key) is not None:
                    continue
                if key == "status" and status_from is not None and ticket.status not in status_from:
                    continue  # an operator's classification/dispatch during the call stands
                if getattr(ticket, key) != value:
                    setattr(ticket, key, value)
                    changed[key] = _jsonable(value)
            s.add(TicketAudit(ticket_id=ticket.id, at=at, actor=actor, action=action,
                              detail=json.dumps(changed | (audit or {}), sort_keys=True)))

        self.writer.submit(f"ticket {action} {channel_id}", op)
