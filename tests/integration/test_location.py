"""Silent callers are located: AML over HTTPS/SMS, carrier PIDF-LO, cell id (real Asterisk + SIPp)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import next_change
from tests.integration.conftest import PhoneFactory, StackFactory

pytestmark = pytest.mark.integration

CALLER = "081211112222"
AML = ('A"ML=1;lt=-6.58870;lg=+110.66840;rd=12;top=20250519030000;lc=68;pm=G;'
       "si=510101234567890;ei=3582390590425420;mcc=510;mnc=10;ml=124")
PIDF = """<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"
 xmlns:gml="http://www.opengis.net/gml" xmlns:gs="http://www.opengis.net/pidflo/1.0"
 entity="pres:081211112222@carrier.test">
<tuple id="carrier"><status><gp:geopriv><gp:location-info>
<gs:Circle srsName="urn:ogc:def:crs:EPSG::4326"><gml:pos>-3.05000 114.60000</gml:pos>
<gs:radius uom="urn:ogc:def:uom:EPSG::9001">850</gs:radius></gs:Circle>
</gp:location-info><gp:usage-rules/><gp:method>Cell</gp:method></gp:geopriv></status>
</tuple></presence>"""


def clock() -> Clock:
    return Clock(datetime(2025, 5, 19, 10, 0, tzinfo=ZoneInfo("Asia/Jakarta")))


def sms(text: str = AML, sender: str = "+62" + CALLER[1:]) -> str:
    return json.dumps({"from": sender, "text": text})


async def test_silent_caller_reaches_operator_flagged_with_aml_location_posted_after_start(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    assert stack.app is not None
    changes = stack.app.live.listen()
    call = asyncio.create_task(stack.call("caller_silent.xml", keys={"caller": CALLER}))
    arrived = await next_change(changes, "arrived", timeout=20)
    await asyncio.sleep(3)  # the handset's AML SMS reaches the gateway three seconds in
    status, body = await stack.post_aml(sms())
    assert (status, body["status"]) == (200, "accepted")
    located = await next_change(changes, "location", timeout=10, call=arrived["call"])
    assert (located["latitude"], located["longitude"]) == (-6.5887, 110.6684)
    assert (await call).ok
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.silent and ticket.operator == "op1" and ticket.priority == 1
    [loc] = await stack.locations(ticket)
    assert (loc.source, loc.latitude, loc.longitude, loc.radius_m, loc.method) == (
        "aml-sms", -6.5887, 110.6684, 12.0, "GNSS")
    assert loc.raw == AML and loc.caller_key == "+6281211112222"
    assert "-6.5887,110.6684" in ticket.notes


async def test_aml_that_arrives_ten_seconds_before_the_call_is_attached_when_it_comes(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    status, _ = await stack.post_aml(sms())
    assert status == 200
    stack.clock.advance(10)  # the INVITE comes ten seconds after the SMS
    assert (await stack.call("caller_silent.xml", keys={"caller": CALLER})).ok
    await stack.settle()
    [ticket] = await stack.tickets()
    [loc] = await stack.locations(ticket)
    assert loc.source == "aml-sms" and ticket.silent
    assert (ticket.arrived_at - loc.received_at).total_seconds() >= 10
    assert "-6.5887,110.6684" in ticket.notes


async def test_carrier_pidf_lo_and_cell_id_become_locations_on_the_ticket(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    result = await stack.call("caller_pidf.xml", keys={"caller": CALLER},
                              template={"pidf": PIDF, "tac_eci": "0A1B2C3D4E5F6"})
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    by_source = {loc.source: loc for loc in await stack.locations(ticket)}
    pidf = by_source["pidf"]
    assert (pidf.latitude, pidf.longitude, pidf.radius_m, pidf.method) == (
        -3.05, 114.6, 850.0, "Cell")
    cell = by_source["cell"]
    assert cell.latitude is None and json.loads(cell.civic or "{}")["radio"] == "E-UTRAN"
    assert ticket.operator == "op1"


def ari_requests(stack: Any) -> list[tuple[str, str]]:
    """Every ARI request the app makes from now on, as (method, path)."""
    seen: list[tuple[str, str]] = []
    client = stack.app.ari
    request = client.request

    async def recording(method: str, *path: str, **kw: Any) -> Any:
        seen.append((method, "/".join(path)))
        return await request(method, *path, **kw)

    client.request = recording
    return seen


def variable_requests(seen: list[tuple[str, str]], call_id: str) -> list[tuple[str, str]]:
    return [(m, p) for m, p in seen if p == f"channels/{call_id}/variable"]


async def test_carrier_location_and_talk_detection_come_from_the_dialplan_without_ari_requests(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    """20-emergency.conf hands the PIDF-LO and P-Access-Network-Info values to the app as one
    Stasis() argument and sets TALK_DETECT itself: no channel variable is read or set over ARI,
    and Asterisk logs nothing about it (on 22 and 16 alike)."""
    _uas, contact = await phone("operator_answer_talk.xml", calls=2, extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    seen = ari_requests(stack)
    result = await stack.call("caller_pidf.xml", keys={"caller": CALLER},
                              template={"pidf": PIDF, "tac_eci": "0A1B2C3D4E5F6"})
    assert result.ok, result.errors
    await stack.settle()
    plain = await stack.call("caller_key.xml", template={"digit": "1"})  # no location at all
    assert plain.ok, plain.errors
    await stack.settle()
    ticket, other = sorted(await stack.tickets(), key=lambda t: t.reference)
    assert await stack.locations(other) == [] and other.operator == "op1"
    assert variable_requests(seen, str(other.channel_id)) == []
    by_source = {loc.source: loc for loc in await stack.locations(ticket)}
    assert (by_source["pidf"].latitude, by_source["pidf"].longitude) == (-3.05, 114.6)
    assert json.loads(by_source["cell"].civic or "{}")["radio"] == "E-UTRAN"
    assert variable_requests(seen, str(ticket.channel_id)) == []
    complaints = [line for line in stack.asterisk.log_text().splitlines()
                  if ("WARNING" in line or "ERROR" in line or "geoloc_dialplan" in line)
                  and any(w in line for w in ("func_", "pbx", "geoloc", "header_funcs"))]
    assert complaints == []  # nor "There is no geoloc profile" for the call without one


async def test_a_call_without_the_dialplan_arguments_still_gets_its_carrier_location_over_ari(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    """A call that entered Stasis without the carrier and talk arguments (another dialplan, one
    from before they were passed): the app reads the values and sets TALK_DETECT over ARI."""
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    assert stack.app is not None
    events = stack.app.events
    on_event = events.on_event

    def older_dialplan(event: dict[str, Any]) -> None:
        if event.get("type") == "StasisStart":
            event = event | {"args": event.get("args", [])[:6]}
        on_event(event)

    events.on_event = older_dialplan
    seen = ari_requests(stack)
    result = await stack.call("caller_pidf.xml", keys={"caller": CALLER},
                              template={"pidf": PIDF, "tac_eci": "0A1B2C3D4E5F6"})
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert {loc.source for loc in await stack.locations(ticket)} == {"pidf", "cell"}
    asked = variable_requests(seen, str(ticket.channel_id))
    assert asked.count(("GET", f"channels/{ticket.channel_id}/variable")) == 5
    assert ("POST", f"channels/{ticket.channel_id}/variable") in asked  # TALK_DETECT


async def test_garbage_pidf_lo_still_reaches_operator_and_the_rejection_is_recorded(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    result = await stack.call("caller_pidf.xml", keys={"caller": CALLER},
                              template={"pidf": "<presence>not a location</nonsense>",
                                        "tac_eci": "zz"})
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.operator == "op1"
    assert await stack.locations(ticket) == []
    sources = {r.source for r in await stack.rejections()}
    assert {"pidf", "cell"} <= sources


async def test_aml_without_valid_token_is_refused_and_nothing_is_stored(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(start_app=True)
    status, _ = await stack.post_aml(sms(), token="wrong")
    assert status == 401
    status, _ = await stack.post_aml(sms(), token="")
    assert status == 401
    status, _ = await stack.post_aml(b"x" * (1024 * 1024))
    assert status == 413
    await stack.settle()
    assert await stack.locations() == [] and await stack.rejections() == []


async def test_bad_aml_gets_2xx_with_its_reason_and_the_rejection_keeps_the_raw_text(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    bad = AML.replace("pm=G", "pm=Z")
    status, body = await stack.post_aml(sms(bad))
    assert status == 200 and body["status"] == "rejected"
    assert "pm" in body["reason"] and "'Z'" in body["reason"]
    await stack.settle()
    [rejection] = await stack.rejections()
    assert rejection.source == "aml" and rejection.origin == "smsgw"
    assert json.loads(rejection.raw)["text"] == bad and rejection.reason == body["reason"]


async def test_silent_caller_who_presses_5_twice_is_a_confirmed_silent_emergency(
    make_stack: StackFactory, phone: PhoneFactory, batola: Site,
) -> None:
    # The operator's phone rings from the answer on; it is picked up 25 s later (the ring
    # timeout is raised so that this one ring lasts), after the caller has confirmed.
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"],
                                answer_after_ms="25000")
    patient = dataclasses.replace(batola, queue=dataclasses.replace(batola.queue,
                                                                    ring_timeout_s=60))
    stack = await make_stack(patient, operators=[("op1", contact)], clock=clock())
    # The caller keys 5 twice about 18.5 s in: after Batola's menu (~10 s) and its 5 s timeout,
    # while "if you cannot speak, press 5 twice" plays or is listened for (a ~10 s window),
    # and while the operator's phone rings: the step never delays the ringing.
    result = await stack.call("caller_silent_confirms.xml", keys={"caller": CALLER},
                              template={"confirm_after_ms": "18500"}, timeout_s=90)
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.silent and ticket.silent_confirmed and ticket.operator == "op1"
    assert ticket.priority == 1
    actions = [a.action for a in await stack.audit(ticket)]
    assert actions.index("ringing") < actions.index("silent procedure") \
        < actions.index("operator answered")
