"""Incidents in a real browser, on a real database: the card suggests tickets of the same
category nearby (and from the same caller), two are linked into one incident, and dispatching
it sends the fire brigade one notification that lists both tickets."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import expect
from sqlalchemy import func, select, update

from ari_app.config import Site
from ari_app.testing.ports import free_port
from ari_app.tickets.models import Agency, LocationRecord, Notification, Ticket
from tests.e2e.browser import chromium, js_errors, new_page, screenshot
from tests.integration.console_stack import web_stack

pytestmark = pytest.mark.e2e

A, B, FAR, SAME_CALLER = ("JPR-20250519-0011", "JPR-20250519-0012", "JPR-20250519-0013",
                          "JPR-20250519-0014")


async def test_two_tickets_about_one_fire_are_linked_and_dispatched_once(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    got: list[dict[str, object]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append(json.loads(await request.read()))
        arrived.set()
        return web.json_response({"ok": True})

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with web_stack(db_url, var_dir, jepara) as stack:
            pw = await stack.add_user("sari", "operator")
            now = stack.app.settings.clock.now()
            async with stack.app.sessions() as s, s.begin():
                await s.execute(update(Agency).where(Agency.code == "DAMKAR")
                                .values(webhook_url=f"http://127.0.0.1:{port}/hook"))
            spots = {A: (-6.58870, 110.66840, 0, "+6281200000011", "fire"),
                     B: (-6.59100, 110.66900, 10, "+6281200000012", "fire"),       # ~265 m, 10 min
                     FAR: (-6.63400, 110.66840, 12, "+6281200000013", "fire"),     # ~5 km
                     SAME_CALLER: (None, None, 20, "+6281200000011", "health")}
            for ref, (lat, lon, minutes, key, category) in spots.items():
                t = await stack.ticket(ref, caller_number="0" + key[3:], caller_key=key,
                                       category=category, status="classified",
                                       arrived_at=now - timedelta(minutes=30 - minutes))
                if lat is not None:
                    async with stack.app.sessions() as s, s.begin():
                        s.add(LocationRecord(ticket_id=t.id, caller_key=key, source="aml",
                                             latitude=lat, longitude=lon, radius_m=15.0,
                                             received_at=t.arrived_at))

            async with chromium() as browser:
                page = await new_page(browser)
                await page.goto(stack.url + "/login")
                await page.fill("input[name=username]", "sari")
                await page.fill("input[name=password]", pw)
                await page.click("button[type=submit]")
                await page.wait_for_url("**/console")
                await page.locator("#recent tbody tr", has_text=A).click()
                suggested = page.locator("#candidates li")
                await expect(suggested).to_have_count(2)
                await expect(page.locator(f"#candidates li[data-ref='{B}']")).to_contain_text(
                    "kategori sama")
                await expect(page.locator(f"#candidates li[data-ref='{SAME_CALLER}']")).to_contain_text(
                    "penelepon yang sama")
                await page.locator(f"#candidates li[data-ref='{B}'] button.link").click()
                await expect(page.locator("#incident-tickets li")).to_have_count(2)
                await expect(page.locator(f"#candidates li[data-ref='{B}']")).to_have_count(0)

                await page.locator("#card input[name=agencies][value=DAMKAR]").check()
                await page.locator("#card #dispatch").click()
                await expect(page.locator("#card-status")).to_have_attribute("data-status", "dispatched")
                await asyncio.wait_for(arrived.wait(), 20)
                await page.locator("#recent tbody tr", has_text=B).click()
                await expect(page.locator(f"#card article[data-ref='{B}'] #card-status")).to_have_attribute(
                    "data-status", "dispatched")
                await expect(page.locator("#incident")).to_be_visible()
                await screenshot(page, "incident-linked-dispatched")
                assert js_errors(page) == []

            async with stack.app.sessions() as s:
                notifications = await s.scalar(select(func.count()).select_from(Notification))
                statuses = dict((await s.execute(select(Ticket.reference, Ticket.status))).all())
            assert notifications == 1
            assert statuses[A] == statuses[B] == "dispatched"
            assert statuses[FAR] == statuses[SAME_CALLER] == "classified"
            [payload] = got
            assert payload["agency"] == "DAMKAR"
            incident = payload["incident"]
            assert isinstance(incident, dict)
            assert [t["reference"] for t in incident["tickets"]] == [A, B]
    finally:
        await runner.cleanup()
