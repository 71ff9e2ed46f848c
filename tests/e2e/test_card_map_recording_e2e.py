"""The call card in a real browser, on a real database (no call needed): the map draws every
location's marker and accuracy circle with no tile server reachable; the recording plays for a
supervisor and is refused (403) to an operator who did not take the call."""

from __future__ import annotations

import math
import struct
import wave
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, Route, expect
from sqlalchemy import select

from ari_app.config import Site
from ari_app.routing.operators import add_operator
from ari_app.tickets.models import LocationRecord, Ticket, TicketAudit
from ari_app.web.profiles import link_operator
from tests.e2e.browser import chromium, js_errors, new_page, screenshot
from tests.integration.console_stack import WebStack, web_stack

pytestmark = pytest.mark.e2e

REF = "JPR-20250519-0007"


def tone_wav(path: Path, seconds: float = 1.5) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / 8000)))
                               for i in range(int(8000 * seconds))))


async def offline(page: Page) -> list[str]:
    """Only the app itself answers; every other host (the tile server) is unreachable."""
    refused: list[str] = []

    async def route(r: Route) -> None:
        if r.request.url.startswith(("https://127.0.0.1", "http://127.0.0.1", "data:")):
            await r.continue_()
        else:
            refused.append(r.request.url)
            await r.abort("internetdisconnected")

    await page.route("**/*", route)
    return refused


async def log_in(page: Page, stack: WebStack, user: str, password: str) -> None:
    await page.goto(stack.url + "/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")


async def test_map_draws_offline_and_recording_plays_for_supervisor_but_not_other_operator(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    assert (Path(__file__).resolve().parents[2] / "ari_app/web/static/vendor/leaflet/leaflet.js"
            ).exists(), "Leaflet is not vendored: run ./scripts/vendor.sh (setup does)"
    wav = var_dir / "asterisk" / "spool" / "recording" / "call-7.wav"
    tone_wav(wav)
    async with web_stack(db_url, var_dir, jepara) as stack:
        boss_pw = await stack.add_user("boss", "supervisor")
        budi_pw = await stack.add_user("budi", "operator")
        now = stack.app.settings.clock.now()
        async with stack.app.sessions() as s, s.begin():
            await add_operator(s, jepara, "op_budi", "Budi", now)
            await link_operator(s, "budi", "op_budi")
        t = await stack.ticket(REF, channel_id="call-7", caller_number="081299990007",
                               operator="op_sari", recording_path=str(wav), silent=True,
                               status="classified", category="fire")
        async with stack.app.sessions() as s, s.begin():
            s.add(LocationRecord(ticket_id=t.id, caller_key="+6281299990007", source="pidf",
                                 latitude=-6.5887, longitude=110.6684, radius_m=850.0,
                                 method="Cell", received_at=now - timedelta(seconds=40)))
            s.add(LocationRecord(ticket_id=t.id, caller_key="+6281299990007", source="aml",
                                 latitude=-6.5891, longitude=110.6690, radius_m=12.0,
                                 method="GPS", received_at=now - timedelta(seconds=5)))

        async with chromium() as browser:
            page = await new_page(browser)
            refused = await offline(page)
            await log_in(page, stack, "boss", boss_pw)
            await page.locator("#recent tbody tr", has_text=REF).click()
            box = page.locator("#card #map")
            await expect(box).to_have_attribute("data-drawn", "2")
            await expect(box.locator("path.loc-marker")).to_have_count(2)
            await expect(box.locator("path.loc-circle")).to_have_count(2)
            await expect(box.locator(".leaflet-control-attribution")).to_contain_text("OpenStreetMap")
            assert any("tile.openstreetmap.org" in u for u in refused)  # tried, unreachable, fine
            await expect(page.locator("#card-silent")).to_be_visible()

            audio = page.locator("#card audio#recording")
            await expect(audio).to_be_attached()
            played = await audio.evaluate(
                "a => a.play().then(() => new Promise("
                "ok => a.addEventListener('ended', () => ok(a.duration))))")
            assert 1.0 < played < 2.0  # the whole 1.5 s file played
            await screenshot(page, "card-map-offline-recording")
            assert js_errors(page) == []

            other = await new_page(browser)
            await offline(other)
            await log_in(other, stack, "budi", budi_pw)
            await other.locator("#recent tbody tr", has_text=REF).click()
            await expect(other.locator("#card article")).to_be_visible()
            await expect(other.locator("#card audio")).to_have_count(0)
            resp = await other.request.get(f"{stack.url}/console/recording/{REF}")
            assert resp.status == 403

        async with stack.app.sessions() as s:
            audit = [(a.actor, a.action) for a in await s.scalars(
                select(TicketAudit).join(Ticket, Ticket.id == TicketAudit.ticket_id)
                .where(Ticket.reference == REF).order_by(TicketAudit.id))]
        assert ("boss", "recording played") in audit and ("budi", "recording refused") in audit
