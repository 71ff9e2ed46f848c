"""Hand-over to an agency (real Asterisk and SIPp): after conferencing the fire brigade the
operator keys *0# and is let go; the caller and the brigade stay connected and keep talking."""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from ari_app.clock import Clock
from ari_app.live import next_change
from ari_app.web.auth import add_user
from ari_app.web.profiles import link_operator
from tests.integration.conftest import PhoneFactory, StackFactory
from tests.integration.console_stack import browser, log_in

WIB = ZoneInfo("Asia/Jakarta")
PASSWORD = "correct horse battery staple"


def rtp_counts(stats: str) -> dict[str, tuple[str, int, int]]:
    """`pjsip show channelstats`: channel -> (bridge, RTP packets received, packets sent)."""
    out: dict[str, tuple[str, int, int]] = {}
    for line in stats.splitlines():
        f = line.split()
        if len(f) >= 9 and f[4].isdigit() and f[8].isdigit():
            out[f[1]] = (f[0], int(f[4]), int(f[8]))
    return out


async def test_after_the_operator_hands_over_caller_and_fire_brigade_still_exchange_audio(
        make_stack: StackFactory, phone: PhoneFactory) -> None:
    # The brigade answers 0.2 s after it rings, well before the operator keys *0# (2 s of talk).
    fire_brigade, trunk = await phone("operator_answer_talk.xml", name="113", extra_args=["-d", "6000"],
                                      answer_after_ms="200")
    uas, contact = await phone("operator_hands_over.xml", handover_after_ms="2000",
                               answer_after_ms="200")
    stack = await make_stack(operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)),
                             trunk_contact=trunk.replace("sip:113@", "sip:"))
    app = stack.app
    assert app is not None
    changes = app.live.listen()
    caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                            keys={"caller": "081277770113"}))
    try:
        handed = await next_change(changes, "handed_over", 60)
        assert handed["agencies"] == ["113"] and handed["operator"] == "op1"
        assert "op1" not in app.roster.reserved  # free for the next 112 call already
        assert (await uas.wait(20)).successful == 1  # the app hung up the operator's phone
        first = rtp_counts(await asyncio.to_thread(stack.asterisk.cli, "pjsip show channelstats"))
        assert len(first) == 2 and all(c.startswith("carrier-") for c in first), first  # no op1
        assert len({bridge for bridge, _, _ in first.values()}) == 1  # caller and brigade, one bridge
        flowing = False
        for _ in range(25):  # RTP both ways on both legs, sampled over at most 5 s
            await asyncio.sleep(0.2)
            now = rtp_counts(await asyncio.to_thread(stack.asterisk.cli, "pjsip show channelstats"))
            flowing = set(now) == set(first) and all(
                now[c][1] > first[c][1] and now[c][2] > first[c][2] for c in first)
            if flowing:
                break
        assert flowing, (first, now)
        result = await caller  # the brigade hangs up after its 6 s; then the caller gets a BYE
        assert result.ok, result.errors
        assert (await fire_brigade.wait(20)).successful == 1
        await stack.settle()
        [ticket] = await stack.tickets()
        assert ticket.end_reason == "agency hangup" and ticket.operator == "op1"
        assert ticket.recording_path  # MixMonitor on the caller's channel recorded it all
        [handed_audit] = [a for a in await stack.audit(ticket) if a.action == "handed over"]
        assert handed_audit.actor == "op1" and '"agencies": ["113"]' in handed_audit.detail
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        app.live.unlisten(changes)


async def test_blind_transfer_from_the_console_lets_the_operator_go_when_the_agency_answers(
        make_stack: StackFactory, phone: PhoneFactory) -> None:
    fire_brigade, trunk = await phone("operator_answer_talk.xml", name="113", extra_args=["-d", "3000"],
                                      answer_after_ms="200")
    uas, contact = await phone("operator_answer_wait.xml")  # talks until the app lets it go
    stack = await make_stack(operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0, tzinfo=WIB)),
                             trunk_contact=trunk.replace("sip:113@", "sip:"))
    app = stack.app
    assert app is not None
    async with app.sessions() as s, s.begin():
        await add_user(s, "sari", "operator", PASSWORD, app.settings.clock.now())
        await add_user(s, "budi", "operator", PASSWORD, app.settings.clock.now())
        await link_operator(s, "sari", "op1")
    changes = app.live.listen()
    caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                            keys={"caller": "081277770114"}))
    try:
        call_id = (await next_change(changes, "bridged", 40, operator="op1"))["call"]
        url = f"{stack.web_url}/console/calls/{call_id}/handover"
        async with browser() as http:
            h = {"X-CSRF-Token": await log_in(http, stack.web_url, "budi", PASSWORD)}
            async with http.post(url, json={"mode": "blind", "number": "113"}, headers=h) as resp:
                assert resp.status == 403  # not budi's call
            http.cookie_jar.clear()
            h = {"X-CSRF-Token": await log_in(http, stack.web_url, "sari", PASSWORD)}
            async with http.post(url, json={"mode": "warm"}, headers=h) as resp:
                assert resp.status == 409  # nobody to hand over to yet
            async with http.post(url, json={"mode": "blind", "number": "999"}, headers=h) as resp:
                assert resp.status == 422
            async with http.post(url, json={"mode": "blind", "number": "113"}, headers=h) as resp:
                assert resp.status == 202, await resp.text()
        handed = await next_change(changes, "handed_over", 30)
        assert handed["agencies"] == ["113"]
        assert (await uas.wait(20)).successful == 1  # let go by the app once the brigade answered
        result = await caller
        assert result.ok, result.errors
        assert (await fire_brigade.wait(20)).successful == 1
        await stack.settle()
        [ticket] = await stack.tickets()
        assert ticket.end_reason == "agency hangup"
        [handed_audit] = [a for a in await stack.audit(ticket) if a.action == "handed over"]
        assert handed_audit.actor == "sari"
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        app.live.unlisten(changes)

