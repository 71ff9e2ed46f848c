"""Batola's WhatsApp channel into complaints; an operator conferences an agency from the console."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import next_change
from ari_app.secrets import secret
from ari_app.testing.web import web_session
from ari_app.tickets.models import InputRejection, Ticket
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


def signed(body: dict[str, object], app_secret: str) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    mac = hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    return raw, {"Content-Type": "application/json", "X-Hub-Signature-256": f"sha256={mac}"}


async def test_whatsapp_messages_become_complaint_tickets(db_url: str, var_dir: Path,
                                                          batola: Site) -> None:
    async with web_stack(db_url, var_dir, batola) as stack:
        url = f"{stack.url}/api/v1/whatsapp"
        body = cloud_api(("6281255550001", "Rina", "Jembatan rusak di Desa Anjir"),
                         ("6281255550002", "Budi", "Pohon tumbang menutup jalan"))
        async with web_session() as http:
            raw, headers = signed(body, "meta-app-secret")
            async with http.post(url, data=raw, headers=headers) as r:  # no app secret yet
                assert r.status == 503 and "whatsapp secret" in (await r.json())["error"]
            (var_dir / "secrets" / "whatsapp-app.secret").write_text("meta-app-secret\n")
            async with http.post(url, json=body) as r:
                assert r.status == 401 and "X-Hub-Signature-256 missing" in (await r.json())["error"]
            _, forged = signed(body, "not-the-secret")
            async with http.post(url, data=raw, headers=forged) as r:
                assert r.status == 403
            tampered = raw.replace(b"Rina", b"Rini")
            async with http.post(url, data=tampered, headers=headers) as r:
                assert r.status == 403
            async with http.post(url, data=raw, headers=headers) as r:
                assert r.status == 201, await r.text()
                refs = (await r.json())["references"]
            bad, bad_headers = signed({"entry": "x"}, "meta-app-secret")
            async with http.post(url, data=bad, headers=bad_headers) as r:
                assert r.status == 422
            verify = secret(var_dir, "whatsapp-verify.token")
            async with http.get(url, params={"hub.mode": "subscribe", "hub.verify_token": verify,
                                             "hub.challenge": "1158201444"}) as r:
                assert r.status == 200 and await r.text() == "1158201444"
            async with http.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "x",
                                             "hub.challenge": "1"}) as r:
                assert r.status == 403
        assert len(refs) == 2 and all(ref.startswith("BTL-") for ref in refs)
        await stack.app.writer.flush()
        async with stack.app.sessions() as s:
            rows = list(await s.scalars(select(Ticket).order_by(Ticket.id)))
            rejections = list(await s.scalars(select(InputRejection)
                                              .where(InputRejection.source == "whatsapp")
                                              .order_by(InputRejection.id)))
        assert [(t.kind, t.caller_number) for t in rows] == [
            ("complaint", "+6281255550001"), ("complaint", "+6281255550002")]
        assert "Jembatan rusak" in rows[0].notes
        assert [r.reason.split(" ")[0] for r in rejections] == [
            "WhatsApp", "X-Hub-Signature-256", "X-Hub-Signature-256", "X-Hub-Signature-256"]
        assert "Rini" in rejections[3].raw and rejections[3].origin == "127.0.0.1"


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
    async with web_session(headers={"Authorization": f"Bearer {token}"}) as http:
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
    # who asked (the console user), and the operator on the call
    assert added.actor == "sari" and '"number": "113"' in added.detail
    assert '"operator": "op1"' in added.detail
