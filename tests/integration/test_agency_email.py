"""Dispatch → outbox → e-mail to the agency through a real SMTP server on loopback (aiosmtpd),
next to (never instead of) the signed webhook; each channel delivered once, attempts apart."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from ari_app.config import SITES_DIR, Site, SmtpSettings
from ari_app.testing.ports import free_port
from ari_app.testing.web import web_session
from ari_app.tickets.models import Agency, LocationRecord, Notification, NotificationDelivery
from ari_app.web.actions import TicketBus
from ari_app.web.outbox import backoff
from tests.integration.console_stack import WebStack, web_stack
from tests.integration.test_admin_cli import cli
from tests.integration.test_notifications import Receiver

AGENCY_MAIL = "damkar@jeparakab.go.id"


class Mailbox:
    """A real SMTP server (aiosmtpd) in the test's event loop; keeps what it accepted."""

    def __init__(self, *, reject_rcpt: str | None = None, port: int | None = None,
                 password: str | None = None) -> None:
        self.port = port or free_port()
        self.reject_rcpt, self.password = reject_rcpt, password
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[str] = []
        self.got_one = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.reject_rcpt:
            return self.reject_rcpt
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
        self.got_one.set()
        return "250 2.0.0 queued"

    def _auth(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
              data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(data, LoginPassword) and data.login == b"siaga"
              and data.password == (self.password or "").encode())
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        kw: dict[str, Any] = {}
        if self.password is not None:
            kw = {"auth_required": True, "auth_require_tls": False, "authenticator": self._auth}
        self.server = await loop.create_server(
            lambda: SMTP(self, hostname="mail.jeparakab.test", **kw), "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class Deliveries:
    """The worker's delivery reports on the ticket bus, to await instead of sleeping."""

    def __init__(self, bus: TicketBus) -> None:
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.changed = asyncio.Event()
        bus.subscribe(self._on)

    def _on(self, event: dict[str, Any]) -> None:
        if event["status"] == "notification":
            self.events.append((time.monotonic(), event))
            self.changed.set()

    def of(self, channel: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, e in self.events if e["channel"] == channel]

    async def until(self, check: Callable[[dict[str, Any]], bool], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not any(check(e) for _, e in self.events):
                self.changed.clear()
                await self.changed.wait()


def with_smtp(site: Site, mailbox: Mailbox, username: str | None = None) -> Site:
    return dataclasses.replace(site, smtp=SmtpSettings(
        host="127.0.0.1", port=mailbox.port, from_address="112@jeparakab.go.id", starttls=False,
        username=username, timeout_s=5.0))


async def set_agency(stack: WebStack, code: str, *, email_: str = "", webhook: str = "") -> str:
    async with stack.app.sessions() as s, s.begin():
        agency = await s.scalar(select(Agency).where(Agency.code == code))
        assert agency is not None
        agency.email, agency.webhook_url = email_, webhook
        return agency.webhook_secret


async def channels(stack: WebStack) -> dict[str, NotificationDelivery]:
    async with stack.app.sessions() as s:
        return {d.channel: d for d in await s.scalars(select(NotificationDelivery))}


async def notification(stack: WebStack) -> Notification:
    async with stack.app.sessions() as s:
        n: Notification | None = await s.scalar(select(Notification))
        assert n is not None
        return n


def done(channel: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["channel"] == channel and e["delivery"] == state


async def test_dispatched_ticket_reaches_agency_mailbox_once_with_reference_and_signed_links(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    mailbox = Mailbox()
    await mailbox.start()
    try:
        async with web_stack(db_url, var_dir, with_smtp(jepara, mailbox)) as stack:
            reports = Deliveries(stack.console.bus)
            await set_agency(stack, "DAMKAR", email_=AGENCY_MAIL)
            arrived = datetime(2025, 5, 19, 7, 3, 10, tzinfo=UTC)  # 14:03:10 WIB
            t = await stack.ticket("JPR-20250519-0011", channel_id="m1", caller_number="081234567890",
                                   category="fire", priority=1, status="classified", arrived_at=arrived)
            async with stack.app.sessions() as s, s.begin():
                s.add(LocationRecord(ticket_id=t.id, caller_key="+6281234567890", source="aml",
                                     latitude=-6.5887, longitude=110.6684, radius_m=850.0,
                                     received_at=arrived, warnings="", raw="lt=-6.5887"))
            [nid] = await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
            await asyncio.wait_for(mailbox.got_one.wait(), 15)
            await reports.until(done("email", "delivered"))
            # a later pass and a second dispatch to the same agency send nothing more
            assert await stack.console.worker.deliver_due() == 0
            assert await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1") == []
            assert await stack.console.worker.deliver_due() == 0
            by_channel = await channels(stack)
            n = await notification(stack)
            [msg] = mailbox.messages
            body = msg.get_content()
            ack_url = next(w for w in body.split() if w.startswith(stack.url + "/ack/"))
            async with web_session() as http, http.get(ack_url) as resp:
                assert resp.status == 200
                assert "JPR-20250519-0011" in await resp.text()
    finally:
        await mailbox.stop()
    assert list(by_channel) == ["email"]  # no webhook URL, so no webhook delivery to fail
    assert by_channel["email"].status == "delivered" and by_channel["email"].attempts == 1
    assert n.status == "delivered" and n.last_error == "" and n.delivered_at is not None
    assert mailbox.envelopes == [("112@jeparakab.go.id", [AGENCY_MAIL])]
    assert msg["To"] == AGENCY_MAIL and msg["X-Siaga-Notification-Id"] == str(nid)
    assert "JPR-20250519-0011" in msg["Subject"]
    assert "Nomor tiket / Reference:        JPR-20250519-0011" in body
    assert "Kategori / Category:            fire" in body
    assert "Prioritas / Priority:           1" in body
    assert "-6.58870, 110.66840 ±850 m (aml" in body
    assert "2025-05-19 14:03:10 WIB" in body
    assert f"{stack.url}/api/v1/ack/{ack_url.rsplit('/', 1)[1]}" in body


async def test_mail_server_down_is_retried_with_backoff_then_delivered_once(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    mailbox = Mailbox()  # not started yet: the agency's mail server is down
    async with web_stack(db_url, var_dir, with_smtp(jepara, mailbox)) as stack:
        reports = Deliveries(stack.console.bus)
        base, cap = stack.console.worker.base_delay_s, stack.console.worker.max_delay_s
        await set_agency(stack, "DAMKAR", email_=AGENCY_MAIL)
        t = await stack.ticket("JPR-20250519-0012", channel_id="m2", category="fire",
                               status="classified")
        await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
        await reports.until(lambda e: e["channel"] == "email" and e["attempts"] >= 3)
        down = (await channels(stack))["email"]
        assert down.status == "pending" and down.attempts >= 3
        assert "refused" in down.last_error.lower(), down.last_error
        assert "email: " in (await notification(stack)).last_error
        failed_at = [at for at, _ in reports.of("email")]
        for n in (1, 2):  # never earlier than the back-off allows (base, then 2·base)
            assert failed_at[n] - failed_at[n - 1] >= backoff(n, base, cap) * 0.9, failed_at
        await mailbox.start()
        try:
            await asyncio.wait_for(mailbox.got_one.wait(), 15)
            await reports.until(done("email", "delivered"))
            assert await stack.console.worker.deliver_due() == 0
            delivered = (await channels(stack))["email"]
        finally:
            await mailbox.stop()
    assert len(mailbox.messages) == 1
    assert delivered.status == "delivered" and delivered.last_error == ""
    assert delivered.attempts > down.attempts
    assert mailbox.messages[0]["X-Siaga-Attempt"] == str(delivered.attempts)


async def test_permanent_rejection_is_failed_with_the_server_reply_and_shown_to_a_supervisor(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    reply = "550 5.1.1 <damkar@jeparakab.go.id>: Recipient address rejected: User unknown"
    mailbox = Mailbox(reject_rcpt=reply)
    receiver = Receiver("")
    await mailbox.start()
    await receiver.start()
    try:
        async with web_stack(db_url, var_dir, with_smtp(jepara, mailbox)) as stack:
            reports = Deliveries(stack.console.bus)
            receiver.secret = await set_agency(stack, "DAMKAR", email_=AGENCY_MAIL,
                                               webhook=receiver.url)
            t = await stack.ticket("JPR-20250519-0013", channel_id="m3", category="fire",
                                   status="classified")
            [nid] = await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
            await reports.until(done("email", "failed"))
            await reports.until(done("webhook", "delivered"))
            assert await stack.console.worker.deliver_due() == 0  # a 5xx is not retried
            by_channel = await channels(stack)
            token = await stack.token("sup1", "supervisor")
            async with web_session(headers={"Authorization": f"Bearer {token}"}) as http:
                async with http.get(f"{stack.url}/api/v1/tickets/{t.reference}") as resp:
                    assert resp.status == 200, await resp.text()
                    [shown] = (await resp.json())["notifications"]
                async with http.post(f"{stack.url}/api/v1/notifications/{nid}/retry") as resp:
                    retry_status = resp.status
            await reports.until(lambda e: e["channel"] == "email" and e["delivery"] == "failed"
                                and sum(1 for _, x in reports.of("email")) >= 2)
        listed = await asyncio.to_thread(cli, var_dir, db_url,
                                         "notifications", "list", "--status", "failed", "--json")
    finally:
        await receiver.stop()
        await mailbox.stop()
    email_ = by_channel["email"]
    assert email_.status == "failed" and email_.attempts == 1
    assert email_.last_error.startswith("SMTP 550 5.1.1"), email_.last_error
    assert "User unknown" in email_.last_error
    # the webhook got through, and that does not hide the refused e-mail
    assert by_channel["webhook"].status == "delivered" and len(receiver.requests) == 1
    assert shown["status"] == "failed" and "email: SMTP 550" in shown["last_error"], shown
    assert retry_status == 200  # a supervisor may send the refused e-mail again...
    assert len(receiver.requests) == 1  # ...without sending the delivered webhook twice
    assert mailbox.messages == []
    assert listed.returncode == 0, listed.stderr
    [row] = json.loads(listed.stdout)
    assert (row["ticket"], row["agency"], row["channel"]) == ("JPR-20250519-0013", "DAMKAR", "email")
    assert "User unknown" in row["last_error"]


async def test_webhook_and_email_both_configured_each_delivered_once(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    mailbox = Mailbox()
    receiver = Receiver("")
    await mailbox.start()
    await receiver.start()
    try:
        async with web_stack(db_url, var_dir, with_smtp(jepara, mailbox)) as stack:
            reports = Deliveries(stack.console.bus)
            receiver.secret = await set_agency(stack, "BPBD", email_="pusdalops@bpbd.jeparakab.go.id",
                                               webhook=receiver.url)
            t = await stack.ticket("JPR-20250519-0014", channel_id="m4", category="natural_disaster",
                                   status="classified")
            [nid] = await stack.console.actions.dispatch(t.reference, ["BPBD"], "op1")
            await asyncio.wait_for(asyncio.gather(mailbox.got_one.wait(), receiver.got_one.wait()), 15)
            await reports.until(done("email", "delivered"))
            await reports.until(done("webhook", "delivered"))
            assert await stack.console.worker.deliver_due() == 0
            by_channel = await channels(stack)
            n = await notification(stack)
            signer, base = stack.console.worker.signer, stack.url
    finally:
        await receiver.stop()
        await mailbox.stop()
    assert len(mailbox.messages) == 1 and len(receiver.requests) == 1
    assert {c: (d.status, d.attempts) for c, d in by_channel.items()} == {
        "webhook": ("delivered", 1), "email": ("delivered", 1)}
    assert n.status == "delivered" and n.attempts == 2 and n.last_error == ""
    [req] = receiver.requests
    assert req["signature_ok"]
    assert req["headers"]["X-Siaga-Notification-Id"] == mailbox.messages[0]["X-Siaga-Notification-Id"]
    assert int(mailbox.messages[0]["X-Siaga-Notification-Id"]) == nid
    # Each delivery signs its link when it is sent (valid 7 days from then): the two links
    # differ only if the second ticked between them, and both acknowledge this notification.
    mailed = next(w for w in mailbox.messages[0].get_content().split()
                  if w.startswith(base + "/ack/"))
    now = datetime.now(UTC)
    for link in (req["body"]["ack_url"], mailed):
        assert link.startswith(base + "/ack/") and signer.verify(link.rsplit("/", 1)[1], now) == nid


async def test_without_smtp_email_is_not_attempted_reason_recorded_and_webhook_unchanged(
        db_url: str, var_dir: Path, jepara: Site, caplog: pytest.LogCaptureFixture) -> None:
    assert jepara.smtp is None  # the shipped site files configure no mail server
    receiver = Receiver("")
    await receiver.start()
    caplog.set_level(logging.WARNING, logger="ari_app.web.outbox")
    try:
        async with web_stack(db_url, var_dir, jepara) as stack:
            reports = Deliveries(stack.console.bus)
            for code in ("DAMKAR", "BPBD"):
                receiver.secret = await set_agency(stack, code, email_=f"{code.lower()}@jeparakab.go.id",
                                                   webhook=receiver.url)
            t = await stack.ticket("JPR-20250519-0015", channel_id="m5", category="fire",
                                   status="classified")
            await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
            await reports.until(done("webhook", "delivered"))
            await reports.until(done("email", "skipped"))
            t2 = await stack.ticket("JPR-20250519-0016", channel_id="m6", category="fire",
                                    status="classified")
            await stack.console.actions.dispatch(t2.reference, ["BPBD"], "op1")
            await reports.until(lambda e: e["delivery"] == "skipped" and e["agency"] == "BPBD")
            async with stack.app.sessions() as s:
                rows = list(await s.execute(select(NotificationDelivery.channel,
                                                   NotificationDelivery.status,
                                                   NotificationDelivery.attempts,
                                                   NotificationDelivery.last_error)
                                            .order_by(NotificationDelivery.id)))
                statuses = set(await s.scalars(select(Notification.status)))
    finally:
        await receiver.stop()
    skipped = [r for r in rows if r.channel == "email"]
    assert len(skipped) == 2 and all(r.status == "skipped" and r.attempts == 1 for r in skipped)
    assert all(r.last_error == "e-mail not sent: no [smtp] section in config/sites/jepara.toml"
               for r in skipped), skipped
    assert [r.status for r in rows if r.channel == "webhook"] == ["delivered", "delivered"]
    assert statuses == {"delivered"} and len(receiver.requests) == 2
    told = [r for r in caplog.records if "no [smtp] section" in r.getMessage()]
    assert len(told) == 1  # logged once, not once per notification


async def test_admin_sets_agency_email_and_smtp_password_with_clear_errors(
        db_url: str, tmp_path: Path, var_dir: Path, jepara: Site) -> None:
    plain_url = db_url
    seeded = await asyncio.to_thread(cli, var_dir, db_url, "agencies", "seed")
    assert seeded.returncode == 0, seeded.stderr
    bad = await asyncio.to_thread(cli, var_dir, plain_url, "agencies", "set", "DAMKAR",
                                  "--email", "damkar@jeparakab")
    assert bad.returncode == 2
    assert "--email: expected an e-mail address" in bad.stderr and "damkar@jeparakab" in bad.stderr
    ok = await asyncio.to_thread(cli, var_dir, plain_url, "agencies", "set", "DAMKAR",
                                 "--email", AGENCY_MAIL)
    assert ok.returncode == 0, ok.stderr
    assert f"e-mail {AGENCY_MAIL}" in ok.stdout
    site_file = tmp_path / "jepara-mail.toml"
    site_file.write_text((SITES_DIR / "jepara.toml").read_text()
                         + '\n[smtp]\nhost = "127.0.0.1"\nport = 2525\nfrom = "112@jeparakab.go.id"\n'
                           'starttls = false\nusername = "siaga"\n')
    saved = await asyncio.to_thread(_cli_stdin, var_dir, plain_url, "s3cret-mail\n", "--site",
                                    str(site_file), "smtp", "password", "--password-stdin")
    assert saved.returncode == 0, saved.stderr
    secret_file = var_dir / "secrets" / "smtp-jepara.password"
    assert secret_file.read_text() == "s3cret-mail\n"
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    no_user = await asyncio.to_thread(_cli_stdin, var_dir, plain_url, "x\n", "smtp", "password",
                                      "--password-stdin")
    assert no_user.returncode == 2 and "smtp.username is not set" in no_user.stderr
    async with web_stack(db_url, var_dir, jepara) as stack, stack.app.sessions() as s:
        agency = await s.scalar(select(Agency).where(Agency.code == "DAMKAR"))
    assert agency is not None and agency.email == AGENCY_MAIL


async def test_mail_server_login_uses_the_password_from_var_secrets(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    mailbox = Mailbox(password="s3cret-mail")
    await mailbox.start()
    try:
        async with web_stack(db_url, var_dir, with_smtp(jepara, mailbox, username="siaga")) as stack:
            reports = Deliveries(stack.console.bus)
            await set_agency(stack, "DAMKAR", email_=AGENCY_MAIL)
            t = await stack.ticket("JPR-20250519-0017", channel_id="m7", category="fire",
                                   status="classified")
            await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
            await reports.until(lambda e: e["channel"] == "email" and e["attempts"] >= 1)
            missing = (await channels(stack))["email"]
            (var_dir / "secrets").mkdir(exist_ok=True)
            (var_dir / "secrets" / "smtp-jepara.password").write_text("s3cret-mail\n")
            await asyncio.wait_for(mailbox.got_one.wait(), 15)
            await reports.until(done("email", "delivered"))
    finally:
        await mailbox.stop()
    assert missing.status == "pending" and "smtp-jepara.password" in missing.last_error
    assert mailbox.logins == ["siaga"] and len(mailbox.messages) == 1


def _cli_stdin(var_dir: Path, db_url: str, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "SIAGA112_SITE": "jepara"}
    return subprocess.run([sys.executable, "-m", "ari_app.cli", "--var-dir", str(var_dir), *args],
                          input=stdin, capture_output=True, text=True, timeout=60, env=env,
                          check=False)


async def test_upgrade_keeps_webhook_notifications_already_stored(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from ari_app.tickets.db import make_engine
    from ari_app.tickets.migrate import alembic_config, upgrade

    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0006")
    engine = make_engine(db_url)
    at = datetime(2025, 5, 19, 7, 0, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            for code in ("BPBD", "DAMKAR"):
                await conn.execute(text("INSERT INTO agencies (site, code, name, webhook_secret)"
                                        " VALUES ('jepara', :code, :code, 'k')"), {"code": code})
            await conn.execute(text(
                "INSERT INTO tickets (reference, site, caller_number, caller_key, kind, category, priority,"
                " status, silent, silent_confirmed, notes, callback_needed, arrived_at) VALUES "
                "('JPR-20250519-0099', 'jepara', '', '', 'emergency', 'fire', 1, 'dispatched', false,"
                " false, '', false, :at)"), {"at": at})
            for code, status, attempts, error in (("BPBD", "delivered", 3, ""),
                                                  ("DAMKAR", "failed", 12, "HTTP 500: down")):
                await conn.execute(text(
                    "INSERT INTO notifications (ticket_id, agency_id, channel, status, attempts,"
                    " next_attempt_at, last_error, created_at, delivered_at) VALUES ((SELECT id FROM"
                    " tickets), (SELECT id FROM agencies WHERE code = :code), 'webhook', :status,"
                    " :attempts, :at, :error, :at, :delivered)"),
                    {"code": code, "status": status, "attempts": attempts, "at": at, "error": error,
                     "delivered": at if status == "delivered" else None})
        await asyncio.to_thread(upgrade, db_url)
        async with engine.connect() as conn:
            copied = [tuple(r) for r in await conn.execute(text(
                "SELECT d.channel, d.status, d.attempts, d.last_error, d.delivered_at IS NOT NULL"
                " FROM notification_deliveries d JOIN notifications n ON n.id = d.notification_id"
                " ORDER BY n.id"))]
            kept = (await conn.execute(text("SELECT count(*) FROM notifications"))).scalar_one()
    finally:
        await engine.dispose()
    assert copied == [("webhook", "delivered", 3, "", True),
                      ("webhook", "failed", 12, "HTTP 500: down", False)]
    assert kept == 2
