"""Call records: what the telephony side tells us about each caller's channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from ari_app.tickets.models import CallEvent, CallRecord, Ticket, table
from ari_app.tickets.writer import Writer, core

# Core statements, built once: these run several times per call (see tickets/service.py).
_CALLS, _EVENTS = table(CallRecord), table(CallEvent)
_CALL_OPEN = {dialect: upsert(_CALLS).on_conflict_do_nothing(index_elements=[_CALLS.c.channel_id])
              for dialect, upsert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))}
_CALL_ANSWERED = (update(_CALLS)
                  .where(_CALLS.c.channel_id == bindparam("ch"), _CALLS.c.answered_at.is_(None))
                  .values(answered_at=bindparam("at")))
_CALL_CLOSED = (update(_CALLS)
                .where(_CALLS.c.channel_id == bindparam("ch"), _CALLS.c.ended_at.is_(None))
                .values(ended_at=bindparam("at"), end_reason=bindparam("why")))
_LAST_EVENT = select(func.max(_EVENTS.c.seq)).where(_EVENTS.c.channel_id == bindparam("ch"))


class CallStore:
    """Journals idempotent writes keyed by channel id; never awaits the database."""

    def __init__(self, writer: Writer, site: str) -> None:
        self.writer, self.site = writer, site
        writer.register("call.opened", self._opened, holds_later=True)
        writer.register("call.answered", self._answered)
        writer.register("call.event", self._event)
        writer.register("call.closed", self._closed)

    def opened(self, channel_id: str, caller: str, dialled: str, at: datetime) -> None:
        self.writer.submit("call.opened", {"channel": channel_id, "caller": caller,
                                           "dialled": dialled, "at": at})

    def answered(self, channel_id: str, at: datetime) -> None:
        self.writer.submit("call.answered", {"channel": channel_id, "at": at})

    def event(self, channel_id: str, kind: str, at: datetime, detail: str = "") -> None:
        self.writer.submit("call.event", {"channel": channel_id, "kind": kind, "at": at,
                                          "detail": detail})

    def closed(self, channel_id: str, at: datetime, reason: str) -> None:
        self.writer.submit("call.closed", {"channel": channel_id, "at": at, "reason": reason})

    def _opened(self, s: Session, p: dict[str, Any]) -> None:
        # One statement, not a look and an insert: a call opened twice (an adopted call, a
        # replay) keeps its first row.
        conn = core(s)
        conn.execute(_CALL_OPEN[conn.dialect.name], {
            "channel_id": p["channel"], "site": self.site, "caller_number": p["caller"],
            "dialled": p["dialled"], "started_at": p["at"]})

    def _answered(self, s: Session, p: dict[str, Any]) -> None:
        core(s).execute(_CALL_ANSWERED, {"ch": p["channel"], "at": p["at"]})

    def _event(self, s: Session, p: dict[str, Any]) -> None:
        conn = core(s)
        last = conn.scalar(_LAST_EVENT, {"ch": p["channel"]})
        conn.execute(insert(_EVENTS), {"channel_id": p["channel"], "seq": (last or 0) + 1,
                                       "at": p["at"], "kind": p["kind"], "detail": p["detail"]})

    def _closed(self, s: Session, p: dict[str, Any]) -> None:
        core(s).execute(_CALL_CLOSED, {"ch": p["channel"], "at": p["at"], "why": p["reason"]})


async def open_calls(sessions: async_sessionmaker[AsyncSession], site: str
                     ) -> dict[str, datetime]:
    """Channel id -> arrival of every call the database holds as live (call row or ticket
    without an end time): what reconcile checks against the channels Asterisk still has."""
    tickets = table(Ticket)
    async with sessions() as s:
        rows = (await s.execute(select(tickets.c.channel_id, tickets.c.arrived_at).where(
            tickets.c.site == site, tickets.c.ended_at.is_(None),
            tickets.c.channel_id.is_not(None)))).all()
        calls = (await s.execute(select(_CALLS.c.channel_id, _CALLS.c.started_at).where(
            _CALLS.c.site == site, _CALLS.c.ended_at.is_(None)))).all()
    found = {str(ch): at for ch, at in calls}
    found |= {str(ch): at for ch, at in rows}
    return found
