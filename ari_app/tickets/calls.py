"""Call records: what the telephony side tells us about each caller's channel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ari_app.tickets.models import CallEvent, CallRecord
from ari_app.tickets.writer import Writer


class CallStore:
    """Journals idempotent writes keyed by channel id; never awaits the database."""

    def __init__(self, writer: Writer, site: str) -> None:
        self.writer, self.site = writer, site
        writer.register("call.opened", self._opened)
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
        exists = s.scalar(select(CallRecord.id).where(CallRecord.channel_id == p["channel"]))
        if exists is None:
            s.add(CallRecord(channel_id=p["channel"], site=self.site, caller_number=p["caller"],
                             dialled=p["dialled"], started_at=p["at"]))

    def _answered(self, s: Session, p: dict[str, Any]) -> None:
        rec = s.scalar(select(CallRecord).where(CallRecord.channel_id == p["channel"]))
        if rec is not None and rec.answered_at is None:
            rec.answered_at = p["at"]

    def _event(self, s: Session, p: dict[str, Any]) -> None:
        last = s.scalar(select(func.max(CallEvent.seq))
                              .where(CallEvent.channel_id == p["channel"]))
        s.add(CallEvent(channel_id=p["channel"], seq=(last or 0) + 1, at=p["at"], kind=p["kind"],
                        detail=p["detail"]))

    def _closed(self, s: Session, p: dict[str, Any]) -> None:
        rec = s.scalar(select(CallRecord).where(CallRecord.channel_id == p["channel"]))
        if rec is not None and rec.ended_at is None:
            rec.ended_at, rec.end_reason = p["at"], p["reason"]
