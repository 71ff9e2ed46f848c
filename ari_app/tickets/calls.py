"""Call records: what the telephony side tells us about each caller's channel."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.models import CallEvent, CallRecord
from ari_app.tickets.writer import Writer


class CallStore:
    """Queues idempotent writes keyed by channel id; never awaits the database."""

    def __init__(self, writer: Writer, site: str) -> None:
        self.writer, self.site = writer, site

    def opened(self, channel_id: str, caller: str, dialled: str, at: datetime) -> None:
        async def op(s: AsyncSession) -> None:
            exists = await s.scalar(select(CallRecord.id).where(CallRecord.channel_id == channel_id))
            if exists is None:
                s.add(CallRecord(channel_id=channel_id, site=self.site, caller_number=caller,
                                 dialled=dialled, started_at=at))

        self.writer.submit(f"call {channel_id} opened", op)

    def answered(self, channel_id: str, at: datetime) -> None:
        async def op(s: AsyncSession) -> None:
            rec = await s.scalar(select(CallRecord).where(CallRecord.channel_id == channel_id))
            if rec is not None and rec.answered_at is None:
                rec.answered_at = at

        self.writer.submit(f"call {channel_id} answered", op)

    def event(self, channel_id: str, kind: str, at: datetime, detail: str = "") -> None:
        async def op(s: AsyncSession) -> None:
            last = await s.scalar(
                select(func.max(CallEvent.seq)).where(CallEvent.channel_id == channel_id))
            s.add(CallEvent(channel_id=channel_id, seq=(last or 0) + 1, at=at, kind=kind,
                            detail=detail))

        self.writer.submit(f"call {channel_id} {kind}", op)

    def closed(self, channel_id: str, at: datetime, reason: str) -> None:
        async def op(s: AsyncSession) -> None:
            rec = await s.scalar(select(CallRecord).where(CallRecord.channel_id == channel_id))
            if rec is not None and rec.ended_at is None:
                rec.ended_at, rec.end_reason = at, reason

        self.writer.submit(f"call {channel_id} closed", op)
