"""The notification worker: delivers outbox rows by signed webhook and by e-mail, with capped back-off.

A notification (one per ticket and agency) is planned into one delivery per channel the agency
has: its webhook and, when it has an address, e-mail. Each delivery is claimed with a short
lease (a conditional UPDATE), so two workers (two nodes on one PostgreSQL) never send the same
one at once; it keeps its own attempts and error, so a webhook success never hides an e-mail
failure. Once a channel succeeds (2xx, or the mail server accepts the message) it is never sent
again; the agency deduplicates a resend after a crash by the X-Siaga-Notification-Id header
(and the e-mail's Message-ID).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from sqlalchemy import exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.tickets.models import Agency, LocationRecord, Notification, NotificationDelivery, Ticket
from ari_app.web import mail
from ari_app.web.actions import TicketBus
from ari_app.web.incidents import summary as incident_summary
from ari_app.web.links import LinkSigner

log = logging.getLogger(__name__)

CHANNELS = ("webhook", "email")


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """Delay after the n-th failed attempt: base, 2·base, 4·base... capped at max."""
    return float(min(base_s * (2 ** max(attempts - 1, 0)), max_s))


@dataclass
class Outcome:
    """One attempt on one channel: empty error is success; skipped means never tried."""

    error: str = ""
    permanent: bool = False
    skipped: bool = False


def summarise(n: Notification, deliveries: list[NotificationDelivery]) -> None:
    """The notification row's status for the console/API: any failed channel shows as failed."""
    states = {d.status for d in deliveries}
    if "pending" in states:
        n.status = "pending"
        n.next_attempt_at = min(d.next_attempt_at for d in deliveries if d.status == "pending")
    elif "failed" in states or "delivered" not in states:
        n.status = "failed"
    else:
        n.status = "delivered"
    n.attempts = sum(d.attempts for d in deliveries)
    n.last_error = "; ".join(f"{d.channel}: {d.last_error}" for d in deliveries
                             if d.last_error and d.status != "delivered")
    done = [d.delivered_at for d in deliveries if d.delivered_at is not None]
    n.delivered_at = min(done) if done else None
    n.lease_until = None


class OutboxWorker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], site: str, clock: Clock,
                 signer: LinkSigner, base_url: Callable[[], str], bus: TicketBus, *,
                 config: Site | None = None, var_dir: Path | None = None,
                 base_delay_s: float = 2.0, max_delay_s: float = 300.0, max_attempts: int = 12,
                 timeout_s: float = 10.0, lease_s: float = 60.0, poll_s: float = 5.0) -> None:
        self.sessions, self.site, self.clock, self.signer = sessions, site, clock, signer
        self.base_url, self.bus = base_url, bus
        self.config, self.var_dir = config, var_dir or Path("var")
        self.timezone = config.timezone if config is not None else ZoneInfo("UTC")
        self.base_delay_s, self.max_delay_s, self.max_attempts = base_delay_s, max_delay_s, max_attempts
        self.timeout_s, self.lease_s, self.poll_s = timeout_s, lease_s, poll_s
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._told_no_smtp = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.deliver_due()
                except Exception:  # a database outage must not end the worker
                    log.exception("notification worker pass failed; retrying")
                self._wake.clear()
                pause = await self._sleep_for()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):  # 3.11's wait_for can lose a cancel
                        await self._wake.wait()
        finally:
            if self._http is not None:
                await self._http.close()

    async def _sleep_for(self) -> float:
        try:
            async with self.sessions() as s:
                due = await s.scalar(select(Notification.next_attempt_at)
                                     .where(Notification.status == "pending")
                                     .order_by(Notification.next_attempt_at).limit(1))
        except Exception:
            return self.poll_s
        if due is None:
            return self.poll_s
        return max(0.05, min(self.poll_s, (due - self.clock.now()).total_seconds()))

    async def deliver_due(self) -> int:
        now = self.clock.now()
        async with self.sessions() as s:
            new = list(await s.scalars(
                select(Notification.id).join(Ticket, Ticket.id == Notification.ticket_id)
                .where(Notification.status == "pending", Ticket.site == self.site,
                       ~exists().where(NotificationDelivery.notification_id == Notification.id),
                       or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .order_by(Notification.id).limit(20)))
        for nid in new:
            if await self._claim(nid):
                await self._plan(nid)
        now = self.clock.now()
        async with self.sessions() as s:
            ids = list(await s.scalars(
                select(NotificationDelivery.id)
                .join(Notification, Notification.id == NotificationDelivery.notification_id)
                .join(Ticket, Ticket.id == Notification.ticket_id)
                .where(NotificationDelivery.status == "pending",
                       NotificationDelivery.next_attempt_at <= now, Ticket.site == self.site,
                       or_(NotificationDelivery.lease_until.is_(None),
                           NotificationDelivery.lease_until < now))
                .order_by(NotificationDelivery.next_attempt_at).limit(20)))
        sent = 0
        for did in ids:
            if await self._claim_delivery(did):
                await self._deliver(did)
                sent += 1
        return sent

    async def _claim(self, nid: int) -> bool:
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(Notification)
                .where(Notification.id == nid, Notification.status == "pending",
                       or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .values(lease_until=now + timedelta(seconds=self.lease_s)))
            return bool(getattr(result, "rowcount", 0) == 1)

    async def _claim_delivery(self, did: int) -> bool:
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.id == did, NotificationDelivery.status == "pending",
                       or_(NotificationDelivery.lease_until.is_(None),
                           NotificationDelivery.lease_until < now))
                .values(lease_until=now + timedelta(seconds=self.lease_s)))
            return bool(getattr(result, "rowcount", 0) == 1)

    async def _plan(self, nid: int) -> None:
        """One delivery per channel the agency has now; an agency with neither gets the webhook
        delivery, whose error tells the supervisor what to set."""
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            n = await s.get(Notification, nid)
            assert n is not None
            agency = await s.get(Agency, n.agency_id)
            assert agency is not None
            planned = await s.scalar(select(NotificationDelivery.id)
                                     .where(NotificationDelivery.notification_id == nid).limit(1))
            channels = [] if planned is not None else (
                [c for c in CHANNELS if (c == "webhook" and (agency.webhook_url or not agency.email))
                 or (c == "email" and agency.email)])
            for channel in channels:
                s.add(NotificationDelivery(notification_id=nid, channel=channel, status="pending",
                                           attempts=0, next_attempt_at=now, last_error=""))
            n.lease_until, n.next_attempt_at = None, now
        if channels:
            log.info("notification=%d to %s by %s", nid, agency.code, " and ".join(channels))

    async def payload(self, s: AsyncSession, n: Notification, agency: Agency,
                      ticket: Ticket) -> dict[str, Any]:
        locations = await s.scalars(select(LocationRecord).where(LocationRecord.ticket_id == ticket.id)
                                    .order_by(LocationRecord.received_at.desc()).limit(5))
        token = self.signer.sign(n.id, self.clock.now())
        base = self.base_url().rstrip("/")
        return {
            "notification_id": n.id,
            "agency": agency.code,
            "ticket": {
                "reference": ticket.reference, "kind": ticket.kind, "category": ticket.category,
                "priority": ticket.priority, "status": ticket.status, "silent": ticket.silent,
                "caller_number": ticket.caller_number, "notes": ticket.notes,
                "arrived_at": ticket.arrived_at.isoformat(),
                "locations": [{"source": loc.source, "latitude": loc.latitude,
                               "longitude": loc.longitude, "radius_m": loc.radius_m,
                               "received_at": loc.received_at.isoformat()} for loc in locations],
            },
            # tickets linked into one incident: this one notification stands for all of them
            "incident": await incident_summary(s, ticket.id),
            "dispatched_at": n.created_at.isoformat(),
            "dispatched_by": n.created_by,
            "ack_url": f"{base}/ack/{token}",
            "ack_api": f"{base}/api/v1/ack/{token}",
        }

    async def _deliver(self, did: int) -> None:
        async with self.sessions() as s:
            d = await s.get(NotificationDelivery, did)
            assert d is not None
            n = await s.get(Notification, d.notification_id)
            assert n is not None
            agency = await s.get(Agency, n.agency_id)
            ticket = await s.get(Ticket, n.ticket_id)
            assert agency is not None and ticket is not None
            payload = await self.payload(s, n, agency, ticket)
            nid, channel, attempt, ref = n.id, d.channel, d.attempts + 1, ticket.reference
        if channel == "webhook":
            outcome = await self._webhook(agency, nid, attempt, payload)
        elif channel == "email":
            outcome = await self._email(agency, attempt, payload)
        else:
            outcome = Outcome(f"unknown channel {channel!r}", permanent=True)
        await self._record(did, nid, channel, attempt, outcome, ref, agency.code)

    async def _webhook(self, agency: Agency, nid: int, attempt: int,
                       payload: dict[str, Any]) -> Outcome:
        if not agency.webhook_url:
            return Outcome(f"agency {agency.code} has no webhook URL (siaga112 agencies set)")
        body = json.dumps(payload, sort_keys=True).encode()
        try:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with self._http.post(
                agency.webhook_url, data=body, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                headers={"Content-Type": "application/json",
                         "X-Siaga-Signature": signature(agency.webhook_secret, body),
                         "X-Siaga-Notification-Id": str(nid),
                         "X-Siaga-Attempt": str(attempt),
                         "User-Agent": "siaga112-notifier"},
            ) as resp:
                if not 200 <= resp.status < 300:
                    return Outcome(f"HTTP {resp.status}: {(await resp.text())[:200]}")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return Outcome(f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__)
        return Outcome()

    async def _email(self, agency: Agency, attempt: int, payload: dict[str, Any]) -> Outcome:
        smtp = self.config.smtp if self.config is not None else None
        if smtp is None:
            where = self.config.file if self.config is not None else "the site file"
            reason = f"e-mail not sent: no [smtp] section in {where}"
            if not self._told_no_smtp:
                self._told_no_smtp = True
                log.warning("%s; agencies with an e-mail address get webhooks only", reason)
            return Outcome(reason, skipped=True)
        if not agency.email:
            return Outcome(f"agency {agency.code} has no e-mail address (siaga112 agencies set)")
        assert self.config is not None
        try:
            password = mail.read_password(self.var_dir, self.site) if smtp.username else None
            message = mail.build_message(
                smtp, agency.email, payload, agency_name=agency.name, site_code=self.site,
                site_name=self.config.name, tz=self.timezone, now=self.clock.now(), attempt=attempt)
            await asyncio.to_thread(mail.send, smtp, message, password)
        except mail.MailError as exc:
            return Outcome(str(exc), permanent=exc.permanent)
        return Outcome()

    async def _record(self, did: int, nid: int, channel: str, attempt: int, outcome: Outcome,
                      ref: str, agency: str) -> None:
        now = self.clock.now()
        error = outcome.error
        values: dict[str, Any] = {"attempts": attempt, "lease_until": None, "last_error": error}
        if outcome.skipped:
            values["status"] = "skipped"
        elif not error:
            values |= {"status": "delivered", "delivered_at": now}
            log.info("ticket=%s notification=%d %s delivered to %s (attempt %d)", ref, nid, channel,
                     agency, attempt)
        elif outcome.permanent or attempt >= self.max_attempts:
            values["status"] = "failed"
            log.error("ticket=%s notification=%d %s to %s failed for good after %d attempts: %s",
                      ref, nid, channel, agency, attempt, error)
        else:
            delay = backoff(attempt, self.base_delay_s, self.max_delay_s)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            log.warning("ticket=%s notification=%d %s to %s attempt %d failed (%s); retry in %.1f s",
                        ref, nid, channel, agency, attempt, error, delay)
        async with self.sessions() as s, s.begin():
            await s.execute(update(NotificationDelivery).where(NotificationDelivery.id == did)
                            .values(**values))
            await self._summarise(s, nid)
        self.bus.publish(ref, "notification", notification=nid, agency=agency, channel=channel,
                         delivery=values.get("status", "pending"), attempts=attempt)

    async def _summarise(self, s: AsyncSession, nid: int) -> None:
        # the row lock orders two workers finishing two channels of one notification
        n = await s.scalar(select(Notification).where(Notification.id == nid).with_for_update())
        assert n is not None
        deliveries = list(await s.scalars(select(NotificationDelivery)
                                          .where(NotificationDelivery.notification_id == nid)
                                          .order_by(NotificationDelivery.id)))
        if deliveries:
            summarise(n, deliveries)

    async def retry(self, nid: int) -> bool:
        """A supervisor sends the failed (or skipped) channels of a notification again, after
        fixing the agency's URL, address or the site's mail server."""
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.notification_id == nid,
                       NotificationDelivery.status.in_(("failed", "skipped")))
                .values(status="pending", attempts=0, next_attempt_at=now, lease_until=None,
                        last_error=""))
            ok = bool(getattr(result, "rowcount", 0))
            if ok:
                await self._summarise(s, nid)
            else:  # not planned yet (or from before deliveries existed): the notification itself
                result = await s.execute(
                    update(Notification).where(Notification.id == nid, Notification.status == "failed")
                    .values(status="pending", attempts=0, next_attempt_at=now, lease_until=None))
                ok = bool(getattr(result, "rowcount", 0) == 1)
        if ok:
            self.wake()
        return ok


async def deliveries(s: AsyncSession, site: str, *, status: str | None = None,
                     limit: int = 50) -> list[dict[str, Any]]:
    """Per-channel delivery state, newest first: what `siaga112 notifications list` shows."""
    q = (select(NotificationDelivery, Notification, Agency.code, Ticket.reference)
         .join(Notification, Notification.id == NotificationDelivery.notification_id)
         .join(Agency, Agency.id == Notification.agency_id)
         .join(Ticket, Ticket.id == Notification.ticket_id)
         .where(Ticket.site == site))
    if status:
        q = q.where(NotificationDelivery.status == status)
    rows = await s.execute(q.order_by(NotificationDelivery.id.desc()).limit(limit))
    return [{"notification": n.id, "ticket": ref, "agency": code, "channel": d.channel,
             "status": d.status, "attempts": d.attempts, "last_error": d.last_error,
             "next_attempt_at": _iso(d.next_attempt_at) if d.status == "pending" else None,
             "delivered_at": _iso(d.delivered_at)} for d, n, code, ref in rows]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
