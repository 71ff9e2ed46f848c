"""A supervisor whispers into a live 112 call on their own phone (real Asterisk and SIPp)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import next_change
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.auth import add_user
from ari_app.web.profiles import link_operator
from tests.integration.conftest import PhoneFactory, StackFactory
from tests.integration.console_stack import browser, csrf_field, meta_csrf

WIB = ZoneInfo("Asia/Jakarta")
PASSWORD = "correct horse battery staple"


async def test_supervisor_whispers_into_a_live_call_from_their_own_phone_and_it_is_audited(
        make_stack: StackFactory, phone: PhoneFactory, jepara: Site) -> None:
    op_phone, op_contact = await phone("operator_answer_talk.xml", extra_args=["-d", "12000"])
    sup_phone, sup_contact = await phone("operator_answer_wait.xml", name="sup1")
    stack = await make_stack(operators=[("op1", op_contact), ("sup1", sup_contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)))
    app = stack.app
    assert app is not None
    app.states.set("sup1", "not_ready", actor="test", reason="meeting")  # never offered 112 calls
    async with app.sessions() as s, s.begin():
        await add_user(s, "boss", "supervisor", PASSWORD, app.settings.clock.now())
        await add_user(s, "sari", "operator", PASSWORD, app.settings.clock.now())
        await link_operator(s, "boss", "sup1")
    changes = app.live.listen()
    caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                            keys={"caller": "081277770077"}))
    try:
        bridged = await next_change(changes, "bridged", 40, operator="op1")
        call_id = bridged["call"]
        url = f"{stack.web_url}/console/calls/{call_id}/supervise"
        async with browser() as http:
            for user in ("sari", "boss"):
                http.cookie_jar.clear()
                async with http.get(stack.web_url + "/login") as resp:
                    form = csrf_field(await resp.text())
                async with http.post(stack.web_url + "/login", data={
                        "username": user, "password": PASSWORD, "csrf": form, "next": "/console"}) as resp:
                    csrf = meta_csrf(await resp.text())
                h = {"X-CSRF-Token": csrf}
                if user == "sari":
                    async with http.post(url, json={"mode": "listen"}, headers=h) as resp:
                        assert resp.status == 403  # operators cannot listen in
                    continue
                async with http.post(url, json={"mode": "spy"}, headers=h) as resp:
                    assert resp.status == 422
                async with http.post(url, json={"mode": "whisper"}, headers=h) as resp:
                    assert resp.status == 200, await resp.text()
        spying = ""
        for _ in range(50):  # the supervisor's phone answers within ~0.2 s
            spying = await asyncio.to_thread(stack.asterisk.cli, "core show channels concise")
            if "ChanSpy" in spying:
                break
            await asyncio.sleep(0.2)
        [line] = [ln for ln in spying.splitlines() if "ChanSpy" in ln]
        assert line.startswith("PJSIP/sup1-") and "!siaga112-supervise!whisper!" in line
        assert "PJSIP/op1-" in line and ",qEw" in line
        result = await caller
        assert result.ok, result.errors
        assert (await op_phone.wait(30)).successful == 1
        assert (await sup_phone.wait(30)).successful == 1  # ChanSpy ended with the call
        await stack.settle()
        async with app.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.channel_id == call_id))
            assert t is not None
            actions = [(a.actor, a.action) for a in await s.scalars(
                select(TicketAudit).where(TicketAudit.ticket_id == t.id))]
        assert ("boss", "supervisor whisper") in actions
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        app.live.unlisten(changes)
