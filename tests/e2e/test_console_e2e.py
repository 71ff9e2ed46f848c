"""The console in a real browser: a live 112 call, classify and dispatch, signed webhook, agency ack.

A real private Asterisk and SIPp carry the call; the app runs in-process; Debian's Chromium
(headless, through Playwright) is the operator's browser; a small aiohttp server plays the fire
brigade's webhook endpoint. Every wait is on an event (a DOM change, a received request).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from playwright.async_api import Page, async_playwright, expect
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.testing.ports import free_port
from ari_app.testing.web import web_session
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import Agency, Notification
from ari_app.web.agencies import seed_agencies
from ari_app.web.auth import add_user
from ari_app.web.console import console_for
from tests.integration.conftest import PhoneFactory, StackFactory

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--disable-component-update", "--disable-sync"]
WIB = ZoneInfo("Asia/Jakarta")
CALLER = "081299990002"
OPERATOR, PASSWORD = "e2e-op", "correct horse battery staple"
NOTES = "Rumah terbakar, Jl. Kartini 12"
TIMEOUT_MS = 30_000


class AgencyReceiver:
    """The fire brigade's webhook endpoint on loopback: records every request it gets."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.got = asyncio.Event()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/siaga112"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        self.got.set()
        return web.json_response({"received": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/siaga112", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def prepare_database(db_url: str, site_code: str, var_dir: Path, webhook_url: str) -> str:
    """The operator's account (as `siaga112 users add` makes it) and DAMKAR's webhook URL, set
    before the app starts (as `siaga112 agencies seed` / `agencies set` would); returns DAMKAR's
    webhook secret."""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            await add_user(s, OPERATOR, "operator", PASSWORD, Clock().now())
            await seed_agencies(s, site_code, var_dir)
            damkar = await s.scalar(select(Agency).where(Agency.site == site_code,
                                                         Agency.code == "DAMKAR"))
            assert damkar is not None
            damkar.webhook_url = webhook_url
            return damkar.webhook_secret
    finally:
        await engine.dispose()


async def log_in(page: Page, base_url: str) -> None:
    await page.goto(base_url + "/login")
    await page.fill("input[name=username]", OPERATOR)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await expect(page.locator("#sse-state")).to_have_attribute("data-state", "live",
                                                               timeout=TIMEOUT_MS)


async def test_operator_sees_live_call_dispatches_to_damkar_and_sees_the_agency_acknowledge(
        make_stack: StackFactory, phone: PhoneFactory, db_url: str, var_dir: Path) -> None:
    receiver = AgencyReceiver()
    await receiver.start()
    uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "8000"])
    # 10:00 WIB on a Monday: Jepara's centre is open, so the call reaches the operator.
    stack = await make_stack(operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)), start_app=False)
    secret = await prepare_database(db_url, stack.site.code, var_dir, receiver.url)
    app = await stack.start_app()
    caller: asyncio.Task[Any] | None = None
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                               args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900},
                                              ignore_https_errors=True)  # self-signed
                page.set_default_timeout(TIMEOUT_MS)
                await log_in(page, stack.web_url)
                await page.evaluate("window.__sameDocument = true")  # gone if the page reloads

                # The call shows up in the live queue without a reload, ticket reference and all.
                caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                                        keys={"caller": CALLER}))
                row = page.locator("#calls tbody tr", has_text=CALLER)
                await expect(row).to_have_attribute("data-stage", "bridged", timeout=40_000)
                await expect(row.locator("td").nth(4)).to_have_text(
                    f"{stack.site.reference_prefix}-20250519-0001")
                reference = await row.locator("td").nth(4).inner_text()

                # Open the ticket card, classify as fire, dispatch to DAMKAR.
                await row.click()
                card = page.locator(f"#card article[data-ref='{reference}']")
                await expect(card).to_be_visible()
                await card.locator("select[name=category]").select_option("fire")
                await card.locator("select[name=kind]").select_option("emergency")
                await card.locator("textarea[name=notes]").fill(NOTES)
                # A live update of this ticket while the operator types keeps what was typed.
                await page.evaluate("document.querySelector('#card article').dataset.old = '1'")
                console_for(app).bus.publish(reference, "in_call", action="located")
                await page.wait_for_function(
                    "() => { const a = document.querySelector('#card article');"
                    " return a !== null && a.dataset.old === undefined; }")
                await expect(card.locator("textarea[name=notes]")).to_have_value(NOTES)
                await expect(card.locator("select[name=category]")).to_have_value("fire")
                await card.locator("#classify").click()
                recent = page.locator("#recent tbody tr", has_text=reference)
                await expect(recent).to_contain_text("kebakaran")  # Bahasa Indonesia by default
                await expect(recent).to_contain_text(CALLER)
                await expect(page.locator("#card details")).to_contain_text(f"{OPERATOR} classified")
                await page.locator("#card input[name=agencies][value=DAMKAR]").check()
                await page.locator("#card #dispatch").click()
                await expect(page.locator("#card-status")).to_have_attribute("data-status", "dispatched")
                await expect(page.locator("#card-error")).to_have_text("")

                # The brigade receives one notification, signed with its secret.
                await asyncio.wait_for(receiver.got.wait(), 20)
                [(headers, body)] = receiver.requests
                expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                assert hmac.compare_digest(headers["X-Siaga-Signature"], expected)
                assert secret == (var_dir / "secrets" / f"agency-{stack.site.code}-DAMKAR.webhook"
                                  ).read_text().strip()
                payload = json.loads(body)
                assert payload["agency"] == "DAMKAR"
                assert payload["ticket"]["reference"] == reference
                assert payload["ticket"]["category"] == "fire"
                assert payload["ticket"]["caller_number"] == CALLER
                assert payload["dispatched_by"] == OPERATOR
                assert headers["X-Siaga-Notification-Id"] == str(payload["notification_id"])
                await expect(page.locator("#notifications .delivery")).to_have_attribute(
                    "data-status", "delivered")

                # The brigade acknowledges through the signed link; the console follows over SSE.
                async with web_session() as http, http.post(
                        payload["ack_api"],
                        json={"action": "acknowledge", "evidence": "Unit 2 berangkat, ETA 7 menit"},
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json())["status"] == "acknowledged"
                await expect(page.locator("#card-status")).to_have_attribute("data-status",
                                                                            "acknowledged")
                await expect(page.locator("#recent tbody tr", has_text=reference)
                             .locator(".status")).to_have_attribute("data-status", "acknowledged")
                await expect(page.locator("#notifications")).to_contain_text("Unit 2 berangkat")
                # times in the site's own zone (WIB), not UTC
                await expect(page.locator("#notifications")).to_contain_text("2025-05-19 10:0")
                assert await page.evaluate("window.__sameDocument === true")

                ARTIFACTS.mkdir(exist_ok=True)
                shot = ARTIFACTS / f".console-e2e-{os.getpid()}.png"
                await page.screenshot(path=str(shot), full_page=True)
                shot.replace(ARTIFACTS / "console-e2e.png")
            finally:
                await browser.close()

        result = await caller
        assert result.ok, result.errors
        assert (await uas.wait(30)).successful == 1
        await stack.settle()
        async with app.sessions() as s:
            n = await s.scalar(select(Notification))
        assert n is not None and n.status == "delivered" and n.acknowledged_at is not None
        assert n.evidence == "Unit 2 berangkat, ETA 7 menit"
    finally:
        if caller is not None and not caller.done():
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)
        await receiver.stop()
