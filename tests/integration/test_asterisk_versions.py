"""What differs between Asterisk 16 and 22, against the real one this run chose (SIAGA112_ASTERISK).

Each test states what either version does, so a run on 16 and a run on 22 both check their own
expectation; the call code must work with both (it never branches on the version).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from ari_app.ari import AriClient, AriError
from ari_app.ari.events import Event, iter_events
from ari_app.pbx.installation import Installation
from ari_app.pbx.process import AsteriskError
from tests.integration.conftest import PhoneFactory, Stack, StackFactory
from tests.integration.test_location import PIDF

pytestmark = pytest.mark.integration

CALLER = "081233334444"


class Probe:
    """Our Stasis app's websocket held by the test itself (the app is not started), so the test
    sees every event of the channels in the app and can ask ARI what the app would ask."""

    def __init__(self, stack: Stack) -> None:
        r = stack.asterisk.rendered
        self.client = AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)
        self.app = stack.site.stasis_app
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._opened = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async def opened() -> None:
            self._opened.set()

        async for event in iter_events(self.client, self.app, on_open=opened):
            self.events.put_nowait(event)

    async def __aenter__(self) -> Probe:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._opened.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self.client.close()

    async def next(self, kind: str, channel_id: str | None = None, timeout: float = 20) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                e = await self.events.get()
                if e.get("type") == kind and channel_id in (None, e.get("channel", {}).get("id")):
                    return e

    async def var(self, channel_id: str, name: str) -> Any:
        return (await self.client.get("channels", channel_id, "variable", variable=name))["value"]


def installed(stack: Stack) -> Installation:
    ast = stack.asterisk.rendered.asterisk
    assert ast is not None
    return ast


def at_least(ast: Installation, *version: int) -> bool:
    parts = tuple(int(p) for p in ast.version.split("+")[0].split("~")[0].split(".")[:3])
    return parts >= version


@contextlib.asynccontextmanager
async def caller_in_stasis(stack: Stack, probe: Probe) -> AsyncIterator[str]:
    """A carrier call with a PIDF-LO body and cell header, held in Stasis; yields its channel id."""
    call = asyncio.create_task(stack.call("caller_pidf.xml", keys={"caller": CALLER},
                                          template={"pidf": PIDF, "tac_eci": "0A1B2C3D4E5F6"}))
    try:
        start = await probe.next("StasisStart")
        yield start["channel"]["id"]
    finally:
        with contextlib.suppress(AriError):
            await probe.client.delete("channels", start["channel"]["id"])
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call, 30)


async def test_every_function_the_app_uses_over_ari_works_without_live_dangerously(
    make_stack: StackFactory,
) -> None:
    """22.10.1 refuses "dangerous" dialplan functions over ARI unless live_dangerously is set.
    We never set it, and every function the app reads or writes over ARI (calls/silent.py:
    PJSIP_HEADER, GEOLOC_PROFILE; calls/flow.py: TALK_DETECT; plain variables) must still work
    and leave no refusal in the log. DB() is the control that the restriction is on (22.10.1+)."""
    stack = await make_stack(start_app=False)
    conf = stack.asterisk.rendered.asterisk_conf.read_text()
    assert "live_dangerously" not in conf
    ast = installed(stack)
    async with Probe(stack) as probe, caller_in_stasis(stack, probe) as ch:
        assert await probe.var(ch, "PJSIP_HEADER(read,Geolocation)") == \
            "<cid:loc-1@siaga112.test>"
        assert (await probe.var(ch, "PJSIP_HEADER(read,P-Access-Network-Info)")).endswith(
            "utran-cell-id-3gpp=510100A1B2C3D4E5F6")
        info = await probe.var(ch, "GEOLOC_PROFILE(location_info)")
        assert 'pos="-3.05000 114.60000"' in info and 'radius="850"' in info, info
        assert await probe.var(ch, "GEOLOC_PROFILE(format)") == "GML"
        assert await probe.var(ch, "GEOLOC_PROFILE(method)") == "Cell"
        await probe.client.post("channels", ch, "variable", variable="TALK_DETECT(set)",
                                value="1000,256")
        await probe.client.post("channels", ch, "variable", variable="TALK_DETECT(remove)",
                                value="")
        if at_least(ast, 22, 10, 1):
            # The control: DB() is "dangerous". ARI still answers 204 to the write; Asterisk
            # logs the refusal. So the log, not the HTTP status, shows what was refused.
            await probe.client.post("channels", ch, "variable", variable="DB(siaga112/probe)",
                                    value="1")
            await probe.client.post("channels", ch, "variable", variable="SIAGA_PROBE_END",
                                    value="1")
            # 22 sets a variable before answering (16 queues it to the channel's Stasis loop).
            assert await probe.var(ch, "SIAGA_PROBE_END") == "1"  # so the DB write is done
    refused = [line for line in stack.asterisk.log_text().splitlines()
               if "Dangerous function" in line]
    if at_least(ast, 22, 10, 1):
        assert len(refused) == 1 and "Dangerous function DB write blocked" in refused[0], refused
    else:
        assert refused == []


async def test_pidf_lo_circle_reaches_geoloc_profile_with_the_crs_the_parser_expects(
    make_stack: StackFactory,
) -> None:
    """22.8 checks GML ``crs`` strictly. The carrier's 2-D Circle gives crs="2d" on both
    versions, which is what location/pidf.py parses (the full ticket path: test_location.py)."""
    stack = await make_stack(start_app=False)
    async with Probe(stack) as probe, caller_in_stasis(stack, probe) as ch:
        info = await probe.var(ch, "GEOLOC_PROFILE(location_info)")
    assert 'shape="Circle"' in info and 'crs="2d"' in info, info


async def test_unanswered_operator_leg_ends_with_the_version_s_no_answer_cause(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    """An originate whose timeout runs out: 22.4+ ends the leg with cause 19 (no answer) and
    tech_cause 480; 16.28 with cause 0 ("Unknown").
    The app treats any end of an unanswered operator leg as "not answered"
    (calls/connect.py wait_answer), so either cause moves it to the next operator; this pins
    down which one this Asterisk sends, and that 22 adds tech_cause to the hangup events."""
    _uas, contact = await phone("operator_no_answer.xml", name="op1")
    stack = await make_stack(operators=[("op1", contact)], start_app=False)
    ast = installed(stack)
    async with Probe(stack) as probe:
        await probe.client.post("channels", endpoint="PJSIP/op1", app=probe.app,
                                appArgs="operator,probe", channelId="probe-op1", timeout=2)
        destroyed = await probe.next("ChannelDestroyed", "probe-op1")
    if at_least(ast, 22, 4):
        assert destroyed["cause"] == 19, (ast.version, destroyed)
    elif ast.major == 16:
        assert destroyed["cause"] == 0, (ast.version, destroyed)
    else:
        assert destroyed["cause"] in (0, 16), (ast.version, destroyed)
    if ast.major >= 22:
        assert destroyed["tech_cause"] == 480, destroyed  # SIP's 480 for the CANCEL at timeout
    else:
        assert "tech_cause" not in destroyed


async def test_a_port_held_by_another_program_is_named_before_asterisk_starts(
    make_stack: StackFactory,
) -> None:
    """A system Asterisk (e.g. the Debian package's service) on the site's SIP port is left
    alone; ours refuses to start without it, naming the port and the setting to change."""
    stack = await make_stack(start_app=False)
    await asyncio.to_thread(stack.asterisk.stop)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", stack.asterisk.sip_port))
        with pytest.raises(AsteriskError, match=rf"SIP \(UDP\) 127\.0\.0\.1:{stack.asterisk.sip_port} "
                                                r"already in use.*asterisk\.sip_port"):
            await asyncio.to_thread(stack.asterisk.start)
    await asyncio.to_thread(stack.asterisk.start)  # the port is free again: it starts
    assert stack.asterisk.process.running()
