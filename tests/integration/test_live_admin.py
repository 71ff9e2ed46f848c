"""Live administration on a running line: operators come and go with calls up (real Asterisk,
SIPp phones, the app as its own process, the admin commands as an admin types them)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ari_app.ari import AriClient
from ari_app.testing.app_process import AppProcess
from ari_app.testing.ports import free_port
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import Ticket
from tests.integration.conftest import PhoneFactory, Stack, StackFactory, until
from tests.integration.test_faults import bridged, caller_in_app
from tests.integration.test_screening_fallback import fallback_call, invites_received

pytestmark = pytest.mark.integration

WITA = ZoneInfo("Asia/Makassar")  # Batola: open 24 h, so the real clock is always in hours


def admin(stack: Stack, *args: str, web_port: int = 0, expect: int = 0) -> str:
    """`siaga112 ...` as the admin runs it on the server; its output (exit code ``expect``)."""
    env = {"DATABASE_URL": stack.db_url, "PATH": "/usr/bin:/bin", "SIAGA112_SITE": "batola",
           "SIAGA112_HTTP_PORT": str(stack.site.asterisk.http_port),
           "SIAGA112_WEB_PORT": str(web_port or free_port())}
    out = subprocess.run([sys.executable, "-m", "ari_app.cli", "--var-dir", str(stack.var_dir),
                          *args], capture_output=True, text=True, timeout=60, env=env,
                         check=False)
    assert out.returncode == expect, (args, out.stdout, out.stderr)
    return out.stdout


def local(delta_h: float) -> str:
    return (datetime.now(WITA) + timedelta(hours=delta_h)).strftime("%Y-%m-%d %H:%M")


async def tx_counts(client: AriClient, channel_id: str) -> tuple[int, int]:
    """Packets Asterisk sent to this leg, and received from it (CHANNEL(rtcp,all))."""
    data = await client.get("channels", channel_id, "variable", variable="CHANNEL(rtcp,all)")
    fields = dict(p.split("=", 1) for p in str(data["value"]).split(";") if "=" in p)
    return int(fields["txcount"]), int(fields["rxcount"])


async def audio_flows(client: AriClient, caller: str, operator: str) -> None:
    """Both legs still in the bridge, and audio relayed both ways: Asterisk's packet counters
    towards each leg (and from the operator) rise by a second's worth of frames."""
    bridge = await client.get("bridges", f"call-{caller}")
    assert sorted(bridge["channels"]) == sorted([caller, operator]), bridge
    start_caller, start_op = await tx_counts(client, caller), await tx_counts(client, operator)

    async def rose() -> bool:
        now_caller, now_op = await tx_counts(client, caller), await tx_counts(client, operator)
        return (now_caller[0] - start_caller[0] >= 50 and now_op[0] - start_op[0] >= 50
                and now_op[1] - start_op[1] >= 50)

    await until(rose, timeout=10)


@pytest.fixture
async def client_and_app(make_stack: StackFactory) -> AsyncIterator[list[object]]:
    made: list[object] = []
    yield made
    for thing in made:
        if isinstance(thing, AppProcess):
            await thing.stop()
        elif isinstance(thing, AriClient):
            await thing.close()


async def test_operators_added_disabled_and_removed_during_a_call_the_call_goes_on_and_routing_follows(
    make_stack: StackFactory, phone: PhoneFactory, batola: object,
    client_and_app: list[object],
) -> None:
    op1, c1 = await phone("operator_answer_wait.xml", name="op1", calls=2)  # talks until BYE
    op2, c2 = await phone("operator_answer_talk.xml", name="op2", extra_args=["-d", "1500"])
    op3, c3 = await phone("operator_answer_talk.xml", name="op3", calls=2,
                          extra_args=["-d", "1500"])
    stack = await make_stack(batola, operators=[("op1", c1), ("op2", c2)], start_app=False)
    r = stack.asterisk.rendered
    client = AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)
    proc = AppProcess(stack.asterisk, stack.var_dir, stack.db_url, free_port())
    client_and_app += [client, proc]
    await proc.start()

    # A caller talks with op1 (first by name: both are equally idle).
    call = asyncio.create_task(stack.call("caller_talks.xml", keys={"caller": "081200001401"},
                                          timeout_s=150))
    caller = str(await until(lambda: caller_in_app(client, stack.site.stasis_app)))
    await until(lambda: bridged(client, caller))
    [operator_leg] = [c for c in (await client.get("bridges", f"call-{caller}"))["channels"]
                      if c != caller]
    await audio_flows(client, caller, operator_leg)

    added = admin(stack, "operators", "add", "op3", "--contact", c3)
    assert "Asterisk reloaded PJSIP and the dialplan" in added
    shift = admin(stack, "shifts", "add", "op3", "--from", local(-1), "--to", local(7))
    assert proc.proc is not None
    assert "Asterisk reloaded" in shift and f"the app (pid {proc.proc.pid}) reloaded" in shift
    await audio_flows(client, caller, operator_leg)
    admin(stack, "operators", "disable", "op2")
    await audio_flows(client, caller, operator_leg)
    removed = admin(stack, "operators", "remove", "op1")  # op1 is on this very call
    assert "operator op1 removed with 1 shift(s)" in removed
    await audio_flows(client, caller, operator_leg)
    # PJSIP's own objects (ARI's endpoint list keeps a stale entry for a deleted endpoint).
    shown = await asyncio.to_thread(stack.asterisk.cli, "pjsip show endpoints")
    endpoints = set(re.findall(r"^ Endpoint:  (\w+)", shown, re.M))
    assert endpoints == {"carrier", "op3"}, shown
    globals_ = await asyncio.to_thread(stack.asterisk.cli, "dialplan show globals")
    assert "SIAGA_FALLBACK_DIAL=PJSIP/op3\n" in globals_  # the list rung with the database down
    assert "roster changed by an admin command" in proc.log_tail(200)
    again = admin(stack, "operators", "apply")  # the stored state again: nothing moves
    assert "Asterisk reloaded PJSIP and the dialplan" in again
    await audio_flows(client, caller, operator_leg)

    # op1 finishes the call; the caller hangs up after that.
    await client.delete("channels", caller)
    result = await call
    assert result.ok, result.errors

    # The next caller goes to op3, the operator added a minute ago.
    nxt = await stack.call("caller_key.xml", template={"digit": "2"},
                           keys={"caller": "081200001402"})
    assert nxt.ok, nxt.errors
    await proc.stop()
    engine = make_engine(stack.db_url)
    try:
        async with sessions(engine)() as s:
            rows = (await s.execute(select(Ticket.caller_number, Ticket.operator)
                                    .order_by(Ticket.id))).all()
    finally:
        await engine.dispose()
    assert [tuple(row) for row in rows] == [("081200001401", "op1"), ("081200001402", "op3")]

    # The app is down: the line still answers, degraded (status exit 1), by the fallback,
    # which rings op3 only.
    status = json.loads(admin(stack, "status", "--json", web_port=proc.web_port, expect=1))
    assert (status["asterisk_up"], status["app_connected"]) == (True, False), status
    assert status["on_duty"] == status["reachable"] == ["op3"], status
    assert status["journal_backlog"] == 0  # read from the stopped app's journal file
    assert await fallback_call(stack, "081200001403") == "op3"
    assert (await op3.wait(20)).successful == 2
    assert invites_received(await op1.stop()) == 1   # removed: no INVITE after its call
    assert invites_received(await op2.stop()) == 0   # disabled: never rung
