"""The callback worklist in a real browser, with a real Asterisk and SIPp: an operator claims
a silent caller who was never reached, clicks to call (her own phone rings first, then the
caller is dialled through the carrier trunk) and records that the caller was reached."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.tickets.console_models import CallbackAttempt, CallbackClaim
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.auth import add_user
from ari_app.web.profiles import link_operator
from tests.e2e.browser import chromium, js_errors, new_page, screenshot
from tests.integration.conftest import PhoneFactory, StackFactory

pytestmark = pytest.mark.e2e

WIB = ZoneInfo("Asia/Jakarta")
CALLER = "081277770009"
REF = "JPR-20250519-0042"
PASSWORD = "correct horse battery staple"


async def test_operator_claims_a_callback_clicks_to_call_and_records_the_caller_reached(
        make_stack: StackFactory, phone: PhoneFactory, jepara: Any) -> None:
    # op1's phone answers at once and hangs up after 3 s of talk; the caller's phone (behind the
    # trunk) answers 0.2 s after it rings and waits for the BYE.
    op_phone, op_contact = await phone("operator_answer_talk.xml", extra_args=["-d", "3000"],
                                       answer_after_ms="200")
    callee, callee_contact = await phone("operator_answer_wait.xml", name="carrier",
                                         answer_after_ms="200")
    stack = await make_stack(operators=[("op1", op_contact)], trunk_contact=callee_contact,
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)))
    app = stack.app
    assert app is not None
    now = app.settings.clock.now()
    async with app.sessions() as s, s.begin():
        await add_user(s, "sari", "operator", PASSWORD, now)
        await link_operator(s, "sari", "op1")
        s.add(Ticket(reference=REF, site=stack.site.code, caller_number=CALLER, silent=True,
                     status="abandoned", callback_needed=True, priority=1,
                     arrived_at=now - timedelta(minutes=3), end_reason="caller hangup"))

    async with chromium() as browser:
        page = await new_page(browser)
        await page.goto(stack.web_url + "/login")
        await page.fill("input[name=username]", "sari")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url("**/console")
        await page.click("text=Telepon balik")
        row = page.locator(f"#callbacks tr[data-ref='{REF}']")
        await expect(row).to_contain_text("silent-unreached")
        await expect(row.locator(".badge")).to_have_text("DIAM")
        await row.locator("button.claim").click()
        await expect(row.locator(".owner")).to_have_text("milik Anda")
        await row.locator("button.call").click()
        await expect(page.locator("#callback-message")).to_contain_text("op1")

        # Her phone rang and answered; then the caller's phone got the call through the trunk.
        assert (await op_phone.wait(40)).successful == 1
        reached = await callee.wait(40)
        assert reached.successful == 1, reached.stdout[-2000:]
        [trace] = reached.workdir.glob("*_messages.log")
        invite = re.search(r"^INVITE sip:(\S+) SIP/2.0.*?^From: ([^\r\n]*)", trace.read_text(),
                           re.M | re.S)
        assert invite is not None
        assert invite.group(1).startswith(CALLER + "@")
        assert '"Siaga 112" <sip:112@' in invite.group(2)

        await row.locator("select[name=outcome]").select_option("reached")
        await row.locator("input[name=note]").fill("Penelepon aman, salah tekan")
        await row.locator("button.record").click()
        await expect(page.locator("#callback-message")).to_contain_text("selesai")
        await expect(page.locator("#no-callbacks")).to_be_visible()
        await screenshot(page, "callback-worklist-done")
        assert js_errors(page) == []

    async with app.sessions() as s:
        t = await s.scalar(select(Ticket).where(Ticket.reference == REF))
        assert t is not None and t.callback_needed is False
        [attempt] = list(await s.scalars(select(CallbackAttempt).where(CallbackAttempt.ticket_id == t.id)))
        assert (attempt.actor, attempt.outcome, attempt.note) == ("sari", "reached",
                                                                  "Penelepon aman, salah tekan")
        held = await s.get(CallbackClaim, t.id)
        assert held is not None and held.claimed_by == "sari" and held.done_at is not None
        actions = [a.action for a in await s.scalars(
            select(TicketAudit).where(TicketAudit.ticket_id == t.id).order_by(TicketAudit.id))]
    assert actions == ["callback claimed", "callback dialled", "callback reached"]
