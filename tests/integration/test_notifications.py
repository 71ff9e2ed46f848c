"""Dispatch → outbox → signed webhook with retries → agency acknowledges via its signed link."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import select

from ari_app.config import Site
from ari_app.testing.ports import free_port
from ari_app.testing.web import web_session
from ari_app.tickets.models import Agency, Notification, Ticket, TicketAudit
from ari_app.web.outbox import backoff
from tests.integration.console_stack import WebStack, csrf_field, web_stack


class Receiver:
    """An agency's webhook endpoint, started late to play an outage."""

    def __init__(self, secret: str) -> None:
        self.secret, self.port = secret, free_port()
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.got_one = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        expected = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
        self.requests.append({"body": json.loads(body), "headers": dict(request.headers),
                              "signature_ok": hmac.compare_digest(
                                  request.headers.get("X-Siaga-Signature", ""), expected)})
        self.got_one.set()
        return web.json_response({"ok": True})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def _set_webhook(stack: WebStack, code: str, url: str) -> str:
    async with stack.app.sessions() as s, s.begin():
        agency = await s.scalar(select(Agency).where(Agency.code == code))
        assert agency is not None
        agency.webhook_url = url
        return agency.webhook_secret


async def _notification(stack: WebStack) -> Notification:
    async with stack.app.sessions() as s:
        n: Notification | None = await s.scalar(select(Notification))
        assert n is not None
        return n


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 2.0, 30.0) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]


async def test_agencies_seeded_with_generated_secrets_not_from_the_repo(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack, stack.app.sessions() as s:
        agencies = {a.code: a for a in await s.scalars(select(Agency))}
    assert set(agencies) == {"BPBD", "DAMKAR", "DINKES", "POLRES", "DISHUB"}
    secret_file = var_dir / "secrets" / "agency-jepara-DAMKAR.webhook"
    assert agencies["DAMKAR"].webhook_secret == secret_file.read_text().strip()
    assert len({a.webhook_secret for a in agencies.values()}) == 5
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"


async def test_webhook_down_for_a_while_is_retried_then_delivered_once_with_valid_signature(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        receiver = Receiver("")
        receiver.secret = await _set_webhook(stack, "DAMKAR", receiver.url)
        t = await stack.ticket("JPR-20250519-0001", channel_id="c1", caller_number="081234567890",
                               category="fire", status="classified")
        ids = await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1")
        # Same transaction: ticket dispatched, audit line and outbox row all there together.
        async with stack.app.sessions() as s:
            ticket = await s.scalar(select(Ticket).where(Ticket.id == t.id))
            assert ticket is not None and ticket.status == "dispatched"
            actions = [a.action for a in await s.scalars(
                select(TicketAudit).where(TicketAudit.ticket_id == t.id))]
            assert actions[-1] == "dispatched"
        await asyncio.sleep(1.5)  # the agency is down: connection refused, several attempts
        down = await _notification(stack)
        assert down.status == "pending" and down.attempts >= 2, (down.status, down.attempts)
        assert "Connect" in down.last_error or "refused" in down.last_error.lower(), down.last_error
        await receiver.start()
        try:
            await asyncio.wait_for(receiver.got_one.wait(), 10)
            await asyncio.sleep(2.0)  # any duplicate send would land here
            delivered = await _notification(stack)
            assert delivered.status == "delivered" and delivered.last_error == ""
            assert delivered.attempts == down.attempts + 1 or delivered.attempts > down.attempts
            # a dispatch to the same agency again sends nothing new
            assert await stack.console.actions.dispatch(t.reference, ["DAMKAR"], "op1") == []
            await asyncio.sleep(1.0)
        finally:
            await receiver.stop()
        assert len(receiver.requests) == 1
        [req] = receiver.requests
        assert req["signature_ok"]
        assert req["headers"]["X-Siaga-Notification-Id"] == str(ids[0])
        assert req["body"]["ticket"]["reference"] == "JPR-20250519-0001"
        assert req["body"]["ticket"]["category"] == "fire"
        assert req["body"]["ack_url"].startswith(stack.url + "/ack/")


async def test_agency_acknowledges_and_resolves_through_its_signed_link(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        receiver = Receiver("")
        receiver.secret = await _set_webhook(stack, "BPBD", receiver.url)
        await receiver.start()
        try:
            t = await stack.ticket("JPR-20250519-0002", channel_id="c2", category="natural_disaster")
            await stack.console.actions.dispatch(t.reference, ["BPBD"], "op1")
            await asyncio.wait_for(receiver.got_one.wait(), 10)
        finally:
            await receiver.stop()
        ack_url = receiver.requests[0]["body"]["ack_url"]
        async with web_session() as http:
            async with http.get(ack_url) as resp:
                assert resp.status == 200
                page = await resp.text()
                assert "JPR-20250519-0002" in page
            form_csrf = csrf_field(page)
            async with http.post(ack_url, data={"csrf": "wrong", "action": "acknowledge"}) as resp:
                assert resp.status == 403
            async with http.post(ack_url, data={"csrf": form_csrf, "action": "acknowledge",
                                                "evidence": "tim berangkat"}) as resp:
                assert resp.status == 200 and 'data-status="acknowledged"' in await resp.text()
            async with http.post(ack_url.replace("/ack/", "/api/v1/ack/"), json={
                    "action": "resolve", "evidence": "banjir surut",
                    "photo_url": "https://example.org/p.jpg"}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["status"] == "resolved"
            token = ack_url.rsplit("/", 1)[1]
            forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
            async with http.get(f"{stack.url}/ack/{forged}") as resp:
                assert resp.status == 403
        async with stack.app.sessions() as s:
            audit = [(a.actor, a.action) for a in await s.scalars(
                select(TicketAudit).where(TicketAudit.ticket_id == t.id).order_by(TicketAudit.id))]
            n = await s.scalar(select(Notification))
        assert audit[-2:] == [("agency:BPBD", "acknowledged"), ("agency:BPBD", "resolved")]
        assert n is not None and n.evidence == "tim berangkat\nbanjir surut"
        assert n.photo_url == "https://example.org/p.jpg"
        # an expired link is refused
        stack.app.settings.clock.advance(timedelta(days=8).total_seconds())
        async with web_session() as http, http.get(ack_url) as resp:
            assert resp.status == 403 and "expired" in await resp.text()
