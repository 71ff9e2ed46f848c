"""The operator's screen in a real browser, with a real Asterisk and SIPp phones.

Sari (console user) is linked to SIP operator op1, whose phone is a SIPp UAS. Not ready, her
phone gets no INVITE while a caller waits and the queue counts the wait up; ready, the phone
rings and the call's card pops before she answers; after the call she is in wrap-up and the
next caller waits until she presses ready again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import Page, expect
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.live import next_change
from ari_app.testing.sipp import SippProcess
from ari_app.tickets.console_models import OperatorStateLog
from ari_app.web.auth import add_user
from ari_app.web.profiles import link_operator
from tests.e2e.browser import chromium, js_errors, new_page, screenshot
from tests.integration.conftest import PhoneFactory, StackFactory, replace_site

pytestmark = pytest.mark.e2e

WIB = ZoneInfo("Asia/Jakarta")
FIRST, SECOND = "081277770001", "081277770002"
PASSWORD = "correct horse battery staple"


def invites(uas: SippProcess) -> int:
    """INVITEs the SIPp phone has received so far, from its live message trace."""
    traces = list(uas.workdir.glob("*_messages.log"))
    if not traces:
        return 0
    return len(re.findall(r"^INVITE sip:", traces[0].read_text(errors="replace"), re.M))


async def log_in(page: Page, base_url: str, user: str) -> None:
    await page.goto(base_url + "/login")
    await page.fill("input[name=username]", user)
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console")
    await expect(page.locator("#sse-state")).to_have_attribute("data-state", "live")


async def wait_seconds_grow(page: Page, selector: str) -> None:
    """The shown waiting time goes up by itself (no reload, no new event from the server)."""
    first = int(await page.locator(selector).get_attribute("data-seconds") or "0")
    await page.wait_for_function(
        "([sel, v]) => { const e = document.querySelector(sel);"
        " return e !== null && Number(e.dataset.seconds) > v; }", arg=[selector, first + 1])


async def test_not_ready_gets_no_invite_ready_pops_the_card_and_wrap_up_holds_the_next_call(
        make_stack: StackFactory, phone: PhoneFactory, jepara: Any) -> None:
    # op1's phone answers 4 s after it starts ringing and hangs up after 3 s of talk.
    uas, contact = await phone("operator_answer_talk.xml", calls=2, extra_args=["-d", "3000"],
                               answer_after_ms="4000")
    site = replace_site(jepara, console=dataclasses.replace(jepara.console, wrap_up_s=600))
    stack = await make_stack(site, operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)))
    app = stack.app
    assert app is not None
    async with app.sessions() as s, s.begin():
        await add_user(s, "sari", "operator", PASSWORD, app.settings.clock.now())
        await link_operator(s, "sari", "op1")
    callers: list[asyncio.Task[Any]] = []
    try:
        async with chromium() as browser:
            page = await new_page(browser)
            await log_in(page, stack.web_url, "sari")
            me = page.locator("#my-state")
            await expect(me).to_have_attribute("data-state", "ready")
            await expect(page.locator("#my-phone")).to_have_attribute("data-registered", "1")
            await page.click("#state-break")
            await expect(me).to_have_attribute("data-state", "not_ready")
            await expect(me).to_have_attribute("data-reason", "break")
            await expect(me).to_contain_text("Istirahat")

            # A caller presses 2 (fire) and waits: op1 is not ready, so its phone stays silent.
            callers.append(asyncio.create_task(stack.call(
                "caller_key.xml", template={"digit": "2"}, keys={"caller": FIRST})))
            waiting = page.locator("#waiting tbody tr", has_text=FIRST)
            await expect(waiting).to_contain_text("antre", timeout=40_000)  # queued, in Indonesian
            await expect(page.locator("#waiting-count")).to_have_text("1")
            await wait_seconds_grow(page, "#waiting tbody tr .wait")
            await wait_seconds_grow(page, "#longest-wait")
            await expect(waiting.locator(".prio")).to_have_text("1")  # fire: priority 1, red
            assert "prio-1" in (await waiting.get_attribute("class") or "")
            assert invites(uas) == 0
            await screenshot(page, "operator-not-ready-queue")

            # Ready: the phone rings and the card pops before the operator answers.
            await page.click("#state-ready")
            card = page.locator("#card article")
            await expect(card).to_be_visible()
            await expect(page.locator("#card-caller")).to_contain_text(FIRST)
            await expect(page.locator("#card-category")).to_have_attribute("data-category", "fire")
            row = page.locator("#calls tbody tr", has_text=FIRST)
            assert await row.get_attribute("data-stage") == "ringing"  # not answered yet
            assert invites(uas) == 1
            await screenshot(page, "operator-screen-pop")
            await expect(row).to_have_attribute("data-stage", "bridged", timeout=20_000)
            await expect(page.locator("#waiting-count")).to_have_text("0")

            # The operator hangs up: wrap-up, and the next caller is held away from the phone.
            await expect(me).to_have_attribute("data-state", "wrap_up", timeout=20_000)
            callers.append(asyncio.create_task(stack.call(
                "caller_key.xml", template={"digit": "1"}, keys={"caller": SECOND})))
            second = page.locator("#waiting tbody tr", has_text=SECOND)
            await expect(second).to_contain_text("antre", timeout=40_000)
            await wait_seconds_grow(page, "#waiting tbody tr .wait")
            assert invites(uas) == 1
            await screenshot(page, "operator-wrap-up-holds")
            await page.click("#state-ready")
            await expect(page.locator("#card-caller")).to_contain_text(SECOND)
            assert invites(uas) == 2
            await expect(page.locator("#calls tbody tr", has_text=SECOND)).to_have_attribute(
                "data-stage", "bridged", timeout=20_000)
            assert js_errors(page) == []

        for task in callers:
            result = await task
            assert result.ok, result.errors
        assert (await uas.wait(30)).successful == 2
        await stack.settle()
        async with app.sessions() as s:
            changes = [(r.state, r.reason, r.actor) for r in await s.scalars(
                select(OperatorStateLog).where(OperatorStateLog.operator_name == "op1")
                .order_by(OperatorStateLog.id))]
        assert changes == [("not_ready", "break", "sari"), ("ready", None, "sari"),
                           ("wrap_up", None, "system"), ("ready", None, "sari"),
                           ("wrap_up", None, "system")]
    finally:
        for task in callers:
            if not task.done():
                task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)


async def test_a_key_pressed_while_the_operators_phone_rings_shows_its_category_on_the_popped_card(
        make_stack: StackFactory, phone: PhoneFactory) -> None:
    # op1's phone rings as soon as the caller is answered (a human first) and answers 12 s
    # later; the caller thinks for 4 s after the answer, then presses 2 (fire).
    uas, contact = await phone("operator_answer_talk.xml", answer_after_ms="12000",
                               extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)))
    app = stack.app
    assert app is not None
    async with app.sessions() as s, s.begin():
        await add_user(s, "sari", "operator", PASSWORD, app.settings.clock.now())
        await link_operator(s, "sari", "op1")
    changes = app.live.listen()
    caller: asyncio.Task[Any] | None = None
    try:
        async with chromium() as browser:
            page = await new_page(browser)
            await log_in(page, stack.web_url, "sari")
            await expect(page.locator("#my-state")).to_have_attribute("data-state", "ready")
            await page.evaluate("window.sameDocument = true")  # gone if the page reloads
            caller = asyncio.create_task(stack.call(
                "caller_key.xml", template={"digit": "2", "key_after_ms": "4000"},
                keys={"caller": FIRST}))
            ringing = await next_change(changes, "ringing", timeout=30, operator="op1")
            call_id = ringing["call"]

            # The card pops while the phone rings, before any key: no category yet.
            card = page.locator(f'#card article[data-call="{call_id}"]')
            await expect(card).to_be_visible()
            await expect(page.locator("#card-caller")).to_contain_text(FIRST)
            category = page.locator("#card-category")
            await expect(category).to_have_attribute("data-category", "uncategorised")
            await expect(category).to_contain_text("belum dikategorikan")
            await expect(page.locator("#card-menu")).to_have_text("—")
            # ... and that was before the key: the call bus has no menu answer yet.
            assert all(c["stage"] != "menu" for c in drain(changes)), "the key came too early"
            await screenshot(page, "operator-card-ringing-no-key")

            # The caller presses 2: the same card, no reload, shows fire at priority 1.
            await expect(category).to_have_attribute("data-category", "fire", timeout=20_000)
            await expect(category).to_contain_text("kebakaran (prioritas 1)")
            await expect(page.locator("#card-menu")).to_have_text("2")
            row = page.locator(f'#calls tr[data-call="{call_id}"]')
            # still not answered: the phone rings on (the caller's row shows the menu stage)
            assert await row.get_attribute("data-stage") == "menu"
            assert app.live.state[call_id]["operator"] == "op1"
            await app.writer.flush(10)
            [ticket] = await stack.tickets()
            assert ticket.operator_rung_at is not None and ticket.operator_answered_at is None
            assert await page.evaluate("window.sameDocument === true")
            await screenshot(page, "operator-card-key-while-ringing")

            await expect(row).to_have_attribute("data-stage", "bridged", timeout=30_000)
            assert js_errors(page) == []
        assert caller is not None
        result = await caller
        assert result.ok, result.errors
        assert (await uas.wait(30)).successful == 1
        await stack.settle()
        [ticket] = await stack.tickets()
        assert (ticket.category, ticket.priority, ticket.operator) == ("fire", 1, "op1")
        actions = [a.action for a in await stack.audit(ticket)]
        assert actions.index("ringing") < actions.index("menu") < actions.index("operator answered")
    finally:
        app.live.unlisten(changes)
        if caller is not None and not caller.done():
            caller.cancel()
            await asyncio.gather(caller, return_exceptions=True)


def drain(changes: asyncio.Queue[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every change already on the queue, without waiting."""
    out = []
    while not changes.empty():
        out.append(changes.get_nowait())
    return out
