"""Batola's WhatsApp channel into complaints; an operator conferences an agency from the console."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import next_change
from ari_app.tickets.models import Ticket
from ari_app.web.auth import add_token, add_user
from tests.integration.conftest import PhoneFactory, StackFactory
from tests.integration.console_stack import web_stack

pytestmark = pytest.mark.integration


def cloud_api(*messages: tuple[str, str, str]) -> dict[str, object]:
    """The shape a WhatsApp Cloud API provider posts: entry → changes → value → messages."""
    return {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {
            "contacts": [{"wa_id": m[0], "profile": {"name": m[1]}} for m in messages],
            "messages": [{"from": m[0], "id": f"wamid.{i}", "type": "text",
                          "text": {"body": m[2]}} for i, m in enumerate(messages)]
            + [{"from": "6281100000000", "id": "wamid.img", "type": "image"}]}}]}]}


async def test_whatsapp_messages_become_complaint_tickets(db_url: str, var_dir: Path,
                                                          batola: Site) -> None:
    async with web_stack(db_url, var_dir, batola) as stack:
        token = await stack.token("wa-provider", "operator")
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{stack.url}/api/v1/whatsapp", json=cloud_api()) as r:
                assert r.status == 401
            body = cloud_api(("6281255550001", "Rina", "Jembatan rusak di Desa Anjir"),
                             ("6281255550002", "Budi", "Pohon tumbang menutup jalan"))
            async with http.post(f"{stack.url}/api/v1/whatsapp", json=body, headers=auth) as r:
                assert r.status == 201
                refs = (await r.json())["references"]
            async with http.post(f"{stack.url}/api/v1/whatsapp", json={"entry": "x"},
                                 headers=auth) as r:
                assert r.status == 422
        assert len(refs) == 2 and all(ref.startswith("BTL-") for ref in refs)
        async with stack.app.sessions() as s:
            rows = list(await s.scalars(select(Ticket).order_by(Ticket.id)))
        assert [(t.kind, t.caller_number) for t in rows] == [
            ("complaint", "+6281255550001"), ("complaint", "+6281255550002")]
        assert "Jembatan rusak" in rows[0].notes


async def test_operator_conferences_the_fire_brigade_into_a_live_call_from_the_console(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    fire_brigade, trunk = await phone("operator_answer_wait.xml", name="113")
    _uas, contact = await phone("operator_answer_wait.xml")
    stack = await make_stack(operators=[("op1", contact)],
                             clock=Clock(datetime(2025, 5, 19, 10, 0,
                                                  tzinfo=ZoneInfo("Asia/Jakarta"))),
                             trunk_contact=trunk.replace("sip:113@", "sip:"))
    assert stack.app is not None
    now = stack.clock.now()
    async with stack.app.sessions() as s, s.begin():
        await add_user(s, "sari", "operator", "correct horse battery", now)
    async with stack.app.sessions() as s, s.begin():
        token = await add_token(s, "sari", "test", now)
    changes = stack.app.live.listen()
    call = asyncio.create_task(stack.call("caller_key_hangup.xml", template={"digit": "2"},
                                          extra_args=["-d", "8000"]))
    bridged = await next_change(changes, "bridged", timeout=40)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        url = f"{stack.web_url}/api/v1/calls/{bridged['call']}/agency"
        async with http.post(url, json={"number": "999"}) as r:
            assert r.status == 422  # only the site's emergency numbers
        async with http.post(url, json={"number": "113"}) as r:
            assert r.status == 202, await r.text()
        await next_change(changes, "agency", timeout=10, number="113")
    assert (await call).ok
    assert (await fire_brigade.wait(20)).successful == 1  # joined, and hung up with the call
    await stack.settle()
    [ticket] = await stack.tickets()
    [added] = [a for a in await stack.audit(ticket) if a.action == "agency added"]
    assert added.actor == "op1" and '"number": "113"' in added.detail
