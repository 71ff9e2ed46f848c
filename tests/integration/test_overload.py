"""The line full: the dialplan sheds a caller past SIAGA112_MAX_CALLERS with a record (issue 18),
and, the same way, while the app finds ARI too slow to serve one more caller (issue 17).

Real Asterisk and SIPp: two callers talk to two operators, a third is refused with a 503 after
the "lines busy" prompt, leaves a fallback record that becomes a ticket on the callback list
with the reason, and the two calls in progress stay up to their own end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from typing import Any

import pytest

from ari_app.ari import AriClient
from ari_app.routing.shedding import SHED_VARIABLE
from ari_app.testing.sipp import run_sipp
from ari_app.testing.tcpproxy import TcpProxy
from ari_app.tickets.fallback import read_records
from ari_app.web.callbacks import worklist
from tests.integration.conftest import (
    WIB,
    PhoneFactory,
    Stack,
    StackFactory,
    at,
    replace_site,
    until,
)

pytestmark = pytest.mark.integration

TALKING = ("081211110001", "081211110002")
SHED = "081299990003"


def ari(stack: Stack) -> AriClient:
    r = stack.asterisk.rendered
    return AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)


async def bridged_calls(client: AriClient) -> int:
    """Call bridges holding a caller and an operator."""
    return sum(1 for b in await client.get("bridges")
               if str(b["id"]).startswith("call-") and len(b["channels"]) == 2)


def journal_records(stack: Stack) -> list[dict[str, str]]:
    """Every fallback record (var/fallback/calls-<day>.jsonl and the older calls.jsonl)."""
    return read_records(stack.var_dir / "fallback" / "calls.jsonl")


@pytest.mark.parametrize("agi_server", [False, True], ids=["process-per-call", "fastagi-server"])
async def test_a_caller_past_the_line_limit_is_refused_recorded_and_on_the_callback_list(
    make_stack: StackFactory, phone: PhoneFactory, monkeypatch: pytest.MonkeyPatch,
    agi_server: bool,
) -> None:
    """The record written by `siaga112 agi serve` when it runs (Asterisk forks nothing), or
    else by the script as Asterisk's own process."""
    monkeypatch.setenv("SIAGA112_MAX_CALLERS", "2")  # rendered into the dialplan's globals
    _op1, c1 = await phone("operator_answer_wait.xml", name="op1", answer_after_ms="300")
    _op2, c2 = await phone("operator_answer_wait.xml", name="op2", answer_after_ms="300")
    # In Jepara's hours whatever the time of the run (out of hours, 112 is forwarded to 110)
    stack = await make_stack(operators=[("op1", c1), ("op2", c2)],
                             clock=at(10, WIB))
    assert stack.app is not None
    agi_log = await stack.start_agi_server() if agi_server else None
    conf = (stack.asterisk.rendered.etc_dir / "extensions.conf").read_text()
    assert "SIAGA_MAX_CALLERS = 2" in conf
    client = ari(stack)
    try:
        # Each talking caller presses 1 and hangs up by itself 12 s after: its BYE gets a 200
        # only if Asterisk still holds the call (a call dropped on it would fail the scenario).
        talking = [asyncio.create_task(run_sipp(stack.caller(
            "caller_key_hangup.xml", keys={"caller": number},
            template={"digit": "1", "key_after_ms": "800"}, extra_args=["-d", "12000"])))
            for number in TALKING]
        await until(lambda: _at_least(bridged_calls(client), 2))
        shed = await stack.call("caller_refused.xml", keys={"caller": SHED})
        assert shed.ok, shed.errors  # early media, then 503; never a 200
        assert await bridged_calls(client) == 2  # the calls in progress are untouched
        results = await asyncio.gather(*talking)
    finally:
        await client.close()
    for result in results:
        assert result.ok, result.errors
    [record] = [r for r in journal_records(stack) if r["caller"] == SHED]
    assert (record["event"], record["limit"], record["dialled"]) == ("overload", "2", "112")
    assert record["why"] == "full"  # the dialplan's fourth argument, through either AGI way
    if agi_log is not None:
        assert f"call={record['uniqueid']} fallback_log done" in agi_log.read_text()
    stack.app.fallback.import_new()
    await stack.settle()
    tickets = {t.caller_number: t for t in await stack.tickets()}
    assert set(tickets) == {*TALKING, SHED}
    refused = tickets[SHED]
    assert (refused.status, refused.callback_needed, refused.operator) == ("abandoned", True, None)
    assert refused.end_reason is not None and refused.end_reason.startswith("overload: ")
    assert refused.ended_at is not None and refused.channel_id == record["uniqueid"]
    assert {tickets[n].operator for n in TALKING} == {"op1", "op2"}
    assert not any(tickets[n].callback_needed for n in TALKING)
    # the callback list an operator reads shows the refused caller with the reason
    listed = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "ari_app.cli", "--site", stack.site.code,
        "--var-dir", str(stack.var_dir), "tickets", "list", "--callback"],
        capture_output=True, text=True, timeout=60,
        env={"DATABASE_URL": stack.db_url, "PATH": "/usr/bin:/bin"}, check=True)
    [row] = [line for line in listed.stdout.splitlines() if refused.reference in line]
    assert SHED in row and "overload: lines busy (2 callers)" in row
    async with stack.app.sessions() as s:  # and the console's callback worklist
        [listed_row] = [r for r in await worklist(s, stack.site.code)
                        if r.reference == refused.reference]
    assert listed_row.reason == "overload: lines busy (2 callers)"
    # one record for the shed caller (no "early" one from a hangup handler)
    assert [r["event"] for r in journal_records(stack) if r["caller"] == SHED] == ["overload"]
    # the count follows the calls: with them over, the next caller is answered again
    again = await stack.call("caller_key_hangup.xml", keys={"caller": "081277770004"},
                             template={"digit": "1", "key_after_ms": "300"},
                             extra_args=["-d", "300"])
    assert again.ok, again.errors


async def shed_until(client: AriClient) -> int:
    """The deadline the app gave the dialplan for refusing new callers (0: it is not)."""
    reply = await client.get("asterisk", "variable", variable=SHED_VARIABLE)
    return int(reply.get("value") or 0)


async def test_while_ari_is_slow_new_callers_are_refused_on_the_record_and_taken_again_after(
    make_stack: StackFactory, phone: PhoneFactory, jepara: Any,
) -> None:
    """The app reaches ARI through a proxy that can add latency (an overloaded Asterisk, as far
    as the app can tell). Slow: the call in progress still reaches its operator, a new caller
    hears lines-busy, gets a 503 and is on the callback list saying why. Fast again: the app
    takes the word back by itself and the next caller is answered."""
    site = replace_site(jepara, queue=dataclasses.replace(
        jepara.queue, shed_when_ari_p90_ms=400, resume_when_ari_p90_ms=150))
    _op1, c1 = await phone("operator_answer_wait.xml", name="op1", answer_after_ms="300")
    _op2, c2 = await phone("operator_answer_wait.xml", name="op2", answer_after_ms="300")
    stack = await make_stack(site, operators=[("op1", c1), ("op2", c2)], clock=at(10, WIB),
                             start_app=False)
    direct = ari(stack)  # the test's own look at Asterisk, never slowed
    proxy = TcpProxy(stack.site.asterisk.bind, stack.site.asterisk.http_port)
    stack.ari_url = f"http://127.0.0.1:{await proxy.start()}"
    try:
        app = await stack.start_app()
        assert await shed_until(direct) == 0  # rendered [globals]: not shedding
        talking = asyncio.create_task(run_sipp(stack.caller(
            "caller_key_hangup.xml", keys={"caller": TALKING[0]},
            template={"digit": "1", "key_after_ms": "800"}, extra_args=["-d", "25000"])))
        await until(lambda: _now(bool(app.registry.calls)))  # the app has taken the caller...
        proxy.delay_s = 0.8  # ... and serves them through a slow ARI from here on
        await until(lambda: _at_least(bridged_calls(direct), 1), timeout=40)
        deadline = await until(lambda: shed_until(direct), timeout=30)
        assert app.shedder.shedding and app.shedder.p90_s >= 0.4
        assert deadline > 0
        shed = await stack.call("caller_refused.xml", keys={"caller": SHED})
        assert shed.ok, shed.errors  # early media, then 503; never a 200
        assert await bridged_calls(direct) == 1  # the call in progress is untouched
        proxy.delay_s = 0.0
        await until(lambda: _is_zero(shed_until(direct)), timeout=30)
        assert not app.shedder.shedding and app.shedder.turned_on == 1
        again = await stack.call("caller_key_hangup.xml", keys={"caller": TALKING[1]},
                                 template={"digit": "1", "key_after_ms": "300"},
                                 extra_args=["-d", "300"])
        assert again.ok, again.errors  # answered: a 200, not a refusal
        talked = await talking
        assert talked.ok, talked.errors
        [record] = [r for r in journal_records(stack) if r["caller"] == SHED]
        assert (record["event"], record["why"], record["dialled"]) == ("overload", "slow", "112")
        app.fallback.import_new()
        await stack.settle()
        tickets = {t.caller_number: t for t in await stack.tickets()}
    finally:
        await direct.close()
        await stack.stop_app()
        await proxy.stop()
    refused = tickets[SHED]
    assert (refused.status, refused.callback_needed, refused.operator) == ("abandoned", True, None)
    assert refused.end_reason == "overload: app too slow (ARI)"
    assert tickets[TALKING[0]].operator in {"op1", "op2"}
    assert not tickets[TALKING[0]].callback_needed
    assert tickets[TALKING[1]].answered_at is not None  # taken again once ARI was fast


async def _now(value: bool) -> bool:
    return value


async def _is_zero(value: Any) -> bool:
    return int(await value) == 0


async def _at_least(count: Any, n: int) -> bool:
    return int(await count) >= n
