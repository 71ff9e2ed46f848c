"""SQLAlchemy models. Schema changes go through alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ari_app.tickets.db import UTCDateTime


class Base(DeclarativeBase):
    pass


class CallRecord(Base):
    """One caller's channel, from StasisStart to hangup. Keyed by channel id: writes are idempotent."""

    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(String(64), unique=True)
    site: Mapped[str] = mapped_column(String(32))
    caller_number: Mapped[str] = mapped_column(String(64), default="")
    dialled: Mapped[str] = mapped_column(String(32), default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)


class CallEvent(Base):
    """What happened on a call, in order (answered, playback, hangup...)."""

    __tablename__ = "call_events"
    __table_args__ = (
        UniqueConstraint("channel_id", "seq", name="uq_call_events_channel_seq"),
        Index("ix_call_events_channel", "channel_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("calls.channel_id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
