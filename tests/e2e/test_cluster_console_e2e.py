"""Two real nodes behind a real Kamailio on one PostgreSQL, one supervisor in real Chromium on
one node's console: the caller waiting on the other node is in the live queue with its node,
then talking in the calls list; the supervisor opens its card and listens in from there."""

from __future__ import annotations

import asyncio
import json

import pytest
from playwright.async_api import expect

from ari_app.testing.sipp import SippRun, run_sipp
from tests.e2e.browser import chromium, js_errors, new_page, screenshot
from tests.integration.conftest import PhoneFactory, shared_pg_url  # noqa: F401
from tests.integration.test_edge_kamailio import (  # noqa: F401
    PASSWORD,
    EdgeFactory,
    first_node_with,
    make_edge,
    two_nodes_and_a_supervisor,
)

pytestmark = pytest.mark.e2e

CALLER = "081291110002"


async def test_a_supervisor_on_one_nodes_console_sees_the_other_nodes_caller_and_listens_in(
    shared_pg_url: str, make_edge: EdgeFactory, phone: PhoneFactory,  # noqa: F811
) -> None:
    edge, apps, sup_phone, uas = await two_nodes_and_a_supervisor(make_edge, shared_pg_url, phone)
    changes = {n: app.live.listen() for n, app in apps.items()}
    caller = asyncio.create_task(run_sipp(SippRun(
        scenario="caller_key.xml", target_port=edge.port, keys={"caller": CALLER},
        timeout_s=80, template={"digit": "2", "bye_timeout_ms": "60000"})))
    try:
        owner, other, call_id = await first_node_with(changes, "queued")
        async with chromium() as browser:
            page = await new_page(browser)
            await page.goto(edge.nodes[other].web_url + "/login")
            await page.fill("input[name=username]", "boss")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")
            await page.wait_for_url("**/console")
            await expect(page.locator("#sse-state")).to_have_attribute("data-state", "live")
            waiting = page.locator(f"#waiting tbody tr[data-call='{call_id}']")
            await expect(waiting).to_have_attribute("data-node", owner)
            await expect(waiting).to_contain_text(CALLER)
            await expect(waiting.locator("td").nth(3)).to_contain_text(f"· {owner}")
            await expect(page.locator("#waiting-count")).to_have_text("1")
            await screenshot(page, "cluster-console-waiting")

            for app in apps.values():
                app.states.set("op1", "ready", actor="test")
            row = page.locator(f"#calls tbody tr[data-call='{call_id}']")
            await expect(row).to_have_attribute("data-stage", "bridged")
            await expect(row).to_have_attribute("data-node", owner)
            await expect(page.locator("#waiting-count")).to_have_text("0")
            await row.click()
            card = page.locator(f"#card article[data-call='{call_id}']")
            await expect(card).to_be_visible()
            await card.locator("#supervise-listen").click()
            owning = edge.nodes[owner].asterisk
            spying = ""
            for _ in range(50):  # the supervisor's phone answers within ~0.2 s
                spying = await asyncio.to_thread(owning.cli, "core show channels concise")
                if "ChanSpy" in spying:
                    break
                await asyncio.sleep(0.2)
            [line] = [ln for ln in spying.splitlines() if "ChanSpy" in ln]
            assert line.startswith("PJSIP/sup1-") and "!siaga112-supervise!listen!" in line
            await expect(page.locator("#card-error")).to_have_text("")
            await screenshot(page, "cluster-console-listening")
            assert js_errors(page) == []
        result = await caller
        assert result.ok, result.errors or result.stdout[-2000:]
        assert (await sup_phone.wait(30)).successful == 1
        await apps[owner].writer.flush(30)
        [ticket] = [t for t in await edge.nodes[owner].tickets() if t.channel_id == call_id]
        audit = [(a.actor, a.action, json.loads(a.detail or "{}").get("from node"))
                 for a in await edge.nodes[owner].audit(ticket)]
        assert ("boss", "supervisor listen", other) in audit
        assert (await uas.wait(30)).successful == 1
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        for n, c in changes.items():
            apps[n].live.unlisten(c)
