"""The notification worker: delivers outbox rows as signed webhooks, with capped back-off.

Each notification is claimed with a short lease (a conditional UPDATE), so two workers (two
nodes on one PostgreSQL) never send the same row at once. Once an agency answers 2xx the row is
marked delivered and never sent again; the agency deduplicates a resend after a crash by the
X-Siaga-Notification-Id header.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.clock import Clock
from ari_app.tickets.models import Agency, LocationRecord, Notification, Ticket
from ari_app.web.actions import TicketBus
from ari_app.web.links import LinkSigner

log = logging.getLogger(__name__)


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """Delay after the n-th failed attempt: base, 2·base, 4·base... capped at max."""
    return float(min(base_s * (2 ** max(attempts - 1, 0)), max_s))


class OutboxWorker:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], site: str, clock: Clock,
                 signer: LinkSigner, base_url: Callable[[], str], bus: TicketBus, *,
                 base_delay_s: float = 2.0, max_delay_s: float = 300.0, max_attempts: int = 12,
                 timeout_s: float = 10.0, lease_s: float = 60.0, poll_s: float = 5.0) -> None:
        self.sessions, self.site, self.clock, self.signer = sessions, site, clock, signer
        self.base_url, self.bus = base_url, bus
        self.base_delay_s, self.max_delay_s, self.max_attempts = base_delay_s, max_delay_s, max_attempts
        self.timeout_s, self.lease_s, self.poll_s = timeout_s, lease_s, poll_s
        self._wake = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

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
                try:
                    await asyncio.wait_for(self._wake.wait(), pause)
                except TimeoutError:
                    pass
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
            ids = list(await s.scalars(
                select(Notification.id).join(Ticket, Ticket.id == Notification.ticket_id)
                .where(Notification.status == "pending", Notification.next_attempt_at <= now,
                       Ticket.site == self.site,
                       or_(Notification.lease_until.is_(None), Notification.lease_until < now))
                .order_by(Notification.next_attempt_at).limit(20)))
        sent = 0
        for nid in ids:
            if await self._claim(nid):
                await self._deliver(nid)
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
            "dispatched_at": n.created_at.isoformat(),
            "dispatched_by": n.created_by,
            "ack_url": f"{base}/ack/{token}",
            "ack_api": f"{base}/api/v1/ack/{token}",
        }

    async def _deliver(self, nid: int) -> None:
        async with self.sessions() as s:
            n = await s.get(Notification, nid)
            assert n is not None
            agency = await s.get(Agency, n.agency_id)
            ticket = await s.get(Ticket, n.ticket_id)
            assert agency is not None and ticket is not None
            body = json.dumps(await self.payload(s, n, agency, ticket), sort_keys=True).encode()
            attempt = n.attempts + 1
            url, secret_, ref = agency.webhook_url, agency.webhook_secret, ticket.reference
        error = ""
        if not url:
            error = f"agency {agency.code} has no webhook URL (siaga112 agencies set)"
        else:
            try:
                if self._http is None:
                    self._http = aiohttp.ClientSession()
                async with self._http.post(
                    url, data=body, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                    headers={"Content-Type": "application/json",
                             "X-Siaga-Signature": signature(secret_, body),
                             "X-Siaga-Notification-Id": str(nid),
                             "X-Siaga-Attempt": str(attempt),
                             "User-Agent": "siaga112-notifier"},
                ) as resp:
                    if not 200 <= resp.status < 300:
                        error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        await self._record(nid, attempt, error, ref, agency.code)

    async def _record(self, nid: int, attempt: int, error: str, ref: str, agency: str) -> None:
        now = self.clock.now()
        values: dict[str, Any] = {"attempts": attempt, "lease_until": None, "last_error": error}
        if not error:
            values |= {"status": "delivered", "delivered_at": now}
            log.info("ticket=%s notification=%d delivered to %s (attempt %d)", ref, nid, agency,
                     attempt)
        elif attempt >= self.max_attempts:
            values["status"] = "failed"
            log.error("ticket=%s notification=%d to %s failed for good after %d attempts: %s",
                      ref, nid, agency, attempt, error)
        else:
            delay = backoff(attempt, self.base_delay_s, self.max_delay_s)
            values["next_attempt_at"] = now + timedelta(seconds=delay)
            log.warning("ticket=%s notification=%d to %s attempt %d failed (%s); retry in %.1f s",
                        ref, nid, agency, attempt, error, delay)
        async with self.sessions() as s, s.begin():
            await s.execute(update(Notification).where(Notification.id == nid).values(**values))
        self.bus.publish(ref, "notification", notification=nid, agency=agency,
                         delivery=values.get("status", "pending"), attempts=attempt)

    async def retry(self, nid: int) -> bool:
        """A supervisor sends a failed notification again (after fixing the agency's URL)."""
        async with self.sessions() as s, s.begin():
            result = await s.execute(
                update(Notification).where(Notification.id == nid, Notification.status == "failed")
                .values(status="pending", attempts=0, next_attempt_at=self.clock.now(),
                        lease_until=None))
            ok = bool(getattr(result, "rowcount", 0) == 1)
        if ok:
            self.wake()
        return ok
