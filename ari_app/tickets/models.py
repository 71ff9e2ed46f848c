"""SQLAlchemy models. Schema changes go through alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

from sqlalchemy import ForeignKey, Index, Integer, String, Table, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ari_app.tickets.db import UTCDateTime


class Base(DeclarativeBase):
    pass


def table(model: type[Base]) -> Table:
    """A model's table, for Core statements (the write path's hot code)."""
    return cast(Table, model.__table__)


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


class TicketCounter(Base):
    """Per-site, per-local-day sequence for public references (JPR-20250519-0001)."""

    __tablename__ = "ticket_counters"

    site: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class Ticket(Base):
    """A case: opened when the call arrives (before answer), kept whatever happens after."""

    __tablename__ = "tickets"
    __table_args__ = (Index("ix_tickets_caller", "caller_number"),
                      Index("ix_tickets_status", "status"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(32), unique=True)
    site: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    caller_number: Mapped[str] = mapped_column(String(64), default="")
    caller_key: Mapped[str] = mapped_column(String(32), default="")  # normalised (+62...)
    kind: Mapped[str] = mapped_column(String(16), default="emergency")
    category: Mapped[str] = mapped_column(String(32), default="uncategorised")
    priority: Mapped[int] = mapped_column(Integer, default=5)
    status: Mapped[str] = mapped_column(String(16), default="new")
    silent: Mapped[bool] = mapped_column(default=False)
    silent_confirmed: Mapped[bool] = mapped_column(default=False)
    menu_choice: Mapped[str | None] = mapped_column(String(16), nullable=True)
    operator: Mapped[str | None] = mapped_column(String(64), nullable=True)
    agency: Mapped[str | None] = mapped_column(String(32), nullable=True)
    policy: Mapped[str | None] = mapped_column(String(64), nullable=True)
    recording_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    callback_needed: Mapped[bool] = mapped_column(default=False)
    # genuine, complaint, abandoned (hung up before a human, having pressed or spoken),
    # silent-unreached (no key, no speech, hung up before a human: never screened, called back
    # first), prank and ghost (an operator's judgement only)
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)  # NULL: the site's
    operator_rung_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime())
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    operator_answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # retention (UU 27/2022): a legal hold keeps everything; the marks say what was removed
    legal_hold: Mapped[bool] = mapped_column(default=False)
    anonymised_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    recording_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class TicketAudit(Base):
    """Every change to a ticket: who, when, what."""

    __tablename__ = "ticket_audit"
    __table_args__ = (Index("ix_ticket_audit_ticket", "ticket_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")


class Operator(Base):
    """An operator and their PJSIP endpoint. Only the digest hash of the SIP password is kept."""

    __tablename__ = "operators"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    site: Mapped[str] = mapped_column(String(32))
    sip_md5: Mapped[str] = mapped_column(String(32))
    contact: Mapped[str | None] = mapped_column(String(255), nullable=True)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Shift(Base):
    __tablename__ = "shifts"
    __table_args__ = (Index("ix_shifts_time", "starts_at", "ends_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operator_id: Mapped[int] = mapped_column(ForeignKey("operators.id", ondelete="CASCADE"))
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LocationRecord(Base):
    """A caller location from any source, kept with its raw message (attached or waiting)."""

    __tablename__ = "locations"
    __table_args__ = (Index("ix_locations_caller", "caller_key", "received_at"),
                      Index("ix_locations_ticket", "ticket_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"),
                                                  nullable=True)
    caller_key: Mapped[str] = mapped_column(String(32), default="")
    source: Mapped[str] = mapped_column(String(16))
    latitude: Mapped[float | None] = mapped_column(nullable=True)
    longitude: Mapped[float | None] = mapped_column(nullable=True)
    radius_m: Mapped[float | None] = mapped_column(nullable=True)
    confidence_pct: Mapped[float | None] = mapped_column(nullable=True)
    method: Mapped[str | None] = mapped_column(String(16), nullable=True)
    civic: Mapped[str | None] = mapped_column(Text, nullable=True)
    fix_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    warnings: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[str] = mapped_column(Text, default="")


class InputRejection(Base):
    """Every rejected external input (AML, PIDF-LO, headers, API bodies), with its reason."""

    __tablename__ = "input_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(32))
    origin: Mapped[str] = mapped_column(String(128), default="")
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[str] = mapped_column(Text, default="")


class CallerFlagClear(Base):
    """A supervisor cleared a number's prank/ghost history: earlier tickets stop counting."""

    __tablename__ = "caller_flag_clears"
    __table_args__ = (Index("ix_caller_flag_clears_key", "caller_key", "cleared_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    caller_key: Mapped[str] = mapped_column(String(32))
    cleared_at: Mapped[datetime] = mapped_column(UTCDateTime())
    cleared_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text, default="")


class Agency(Base):
    """An agency tickets are dispatched to (fire brigade, BPBD...). Seeded per site from config."""

    __tablename__ = "agencies"
    __table_args__ = (UniqueConstraint("site", "code", name="uq_agencies_site_code"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    site: Mapped[str] = mapped_column(String(32))
    code: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    phone: Mapped[str] = mapped_column(String(32), default="")
    webhook_url: Mapped[str] = mapped_column(Text, default="")
    webhook_secret: Mapped[str] = mapped_column(String(128))  # generated at seed time
    email: Mapped[str] = mapped_column(String(255), default="")
    active: Mapped[bool] = mapped_column(default=True)


class Notification(Base):
    """Outbox row: written with the dispatch, delivered by the worker, acknowledged by the agency."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("ticket_id", "agency_id", name="uq_notifications_ticket_agency"),
                      Index("ix_notifications_due", "status", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    agency_id: Mapped[int] = mapped_column(ForeignKey("agencies.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16), default="webhook")
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending/delivered/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(64), default="")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    evidence: Mapped[str] = mapped_column(Text, default="")
    photo_url: Mapped[str] = mapped_column(Text, default="")


class NotificationDelivery(Base):
    """One channel (webhook, email) of a notification: each is sent once, with its own attempts.

    The notification row keeps a summary of its deliveries (status, attempts, last_error) for the
    console and the API; the worker writes both in one transaction.
    """

    __tablename__ = "notification_deliveries"
    __table_args__ = (UniqueConstraint("notification_id", "channel",
                                       name="uq_notification_deliveries_channel"),
                      Index("ix_notification_deliveries_due", "status", "next_attempt_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    notification_id: Mapped[int] = mapped_column(ForeignKey("notifications.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(16))  # webhook, email
    # pending, delivered, failed (given up or refused for good), skipped (channel not configured)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class User(Base):
    """A console user. Only the argon2 hash of the password is kept; no default account exists."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # operator, supervisor, admin
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token for the REST API; only its SHA-256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)  # None: pre-0011
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_by: Mapped[str] = mapped_column(String(64), default="")


class ConsoleSession(Base):
    """A logged-in browser: the cookie holds a random id (only its SHA-256 is kept) and a CSRF token."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class JournalApplied(Base):
    """Which local journal entries (per node) reached the database: replays apply nothing twice."""

    __tablename__ = "journal_applied"

    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)


class AdminAudit(Base):
    """Every change to users, tokens, agencies, operators, shifts, site settings, locks and
    retention: who, when, what before and after (JSON)."""

    __tablename__ = "admin_audit"
    __table_args__ = (Index("ix_admin_audit_entity", "entity", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(128))
    entity: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(40))
    before: Mapped[str] = mapped_column(Text, default="")
    after: Mapped[str] = mapped_column(Text, default="")


class LoginThrottle(Base):
    """Failed logins per user name and per source address; a lock refuses even the right password."""

    __tablename__ = "login_throttle"
    __table_args__ = (UniqueConstraint("kind", "key", name="uq_login_throttle_kind_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(8))     # user, address
    key: Mapped[str] = mapped_column(String(128))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
