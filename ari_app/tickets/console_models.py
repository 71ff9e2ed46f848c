"""Tables of the operator console (migration 0012): profiles, operator states, callbacks,
incidents."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from ari_app.tickets.db import UTCDateTime
from ari_app.tickets.models import Base


class ConsoleProfile(Base):
    """A console user's language and the SIP operator they take calls as (none: no calls)."""

    __tablename__ = "console_profiles"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    lang: Mapped[str | None] = mapped_column(String(8), nullable=True)
    operator_name: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)


class OperatorStateRow(Base):
    """An operator's current console state; no row reads as ready."""

    __tablename__ = "operator_states"

    operator_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))          # ready, not_ready, wrap_up
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)  # break, training, meeting
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # wrap-up end


class OperatorStateLog(Base):
    """Every state change, with who and when (the KPIs read time per state from here)."""

    __tablename__ = "operator_state_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operator_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    previous: Mapped[str | None] = mapped_column(String(16), nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    # a timed wrap-up's end, after which it reads as ready with no row of its own (0015)
    until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class CallbackAttempt(Base):
    """One try at calling a caller back, with its outcome (reached, no_answer, busy, wrong_number)."""

    __tablename__ = "callback_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")


class CallbackClaim(Base):
    """Who owns a ticket's callback; done_at is set once the caller was reached."""

    __tablename__ = "callback_claims"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"),
                                           primary_key=True)
    claimed_by: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class Incident(Base):
    """Tickets about one event (thirty callers, one fire); dispatched once, from its primary."""

    __tablename__ = "incidents"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(32))
    primary_ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(64))


class IncidentTicket(Base):
    """A ticket's incident (a ticket is in one incident at most)."""

    __tablename__ = "incident_tickets"

    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"),
                                           primary_key=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id", ondelete="CASCADE"))
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    linked_by: Mapped[str] = mapped_column(String(64))
