"""The 112 call end to end: menu, ticket, on-duty operator, queue, bridge (real Asterisk + SIPp)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ari_app.calls.registry import UNUSED_EVENTS
from ari_app.live import next_change
from tests.integration.conftest import WIB, PhoneFactory, Stack, StackFactory, at

pytestmark = pytest.mark.integration




async def rtp_counts(stack: Stack, channel_id: str) -> tuple[int, int]:
    """Packets Asterisk received from and sent to one leg (CHANNEL(rtcp,all))."""
    assert stack.app is not None
    data = await stack.app.ari.get("channels", channel_id, "variable", variable="CHANNEL(rtcp,all)")
    fields = dict(p.split("=", 1) for p in str(data["value"]).split(";") if "=" in p)
    return int(fields["rxcount"]), int(fields["txcount"])


async def test_jepara_fire_call_at_ten_reaches_operator_with_two_way_audio_and_recording(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "4000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB))
    assert stack.app is not None
    changes = stack.app.live.listen()
    caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                            keys={"caller": "081299990002"}))
    bridged = await next_change(changes, "bridged", timeout=40)
    caller_id = bridged["call"]
    # Two parties and the recording on the caller's channel (MixMonitor, from the dialplan):
    # Asterisk relays frames between the two legs instead of running a mixer for a third.
    bridge_info = await stack.app.ari.get("bridges", bridged["bridge"])
    assert bridge_info["technology"] == "simple_bridge", bridge_info
    assert sorted(bridge_info["channels"]) == sorted([caller_id, bridged["operator_channel"]])
    first = (await rtp_counts(stack, caller_id), await rtp_counts(stack, bridged["operator_channel"]))
    await asyncio.sleep(1.0)  # let media flow for a second between two readings
    second = (await rtp_counts(stack, caller_id), await rtp_counts(stack, bridged["operator_channel"]))
    # In a two-party bridge every packet Asterisk sends to one leg came from the other leg, so
    # both tx counters rising means audio flows both ways. (A natively bridged leg's rx counter
    # is not updated by Asterisk 16, so rx is checked on the operator leg only.)
    (caller_before, op_before), (caller_after, op_after) = first, second
    assert caller_after[1] - caller_before[1] >= 20, (first, second)
    assert op_after[1] - op_before[1] >= 20, (first, second)
    assert op_after[0] - op_before[0] >= 20, (first, second)

    result = await caller
    assert result.ok, result.errors
    assert (await uas.wait(30)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.reference == "JPR-20250519-0001"
    assert (ticket.category, ticket.kind, ticket.agency) == ("fire", "emergency", "DAMKAR")
    assert ticket.priority == 1 and ticket.operator == "op1" and not ticket.silent
    assert ticket.caller_number == "081299990002"
    times = [ticket.arrived_at, ticket.answered_at, ticket.queued_at, ticket.operator_answered_at,
             ticket.ended_at]
    assert all(t is not None for t in times)
    assert times == sorted(times)  # type: ignore[type-var]
    assert ticket.end_reason == "operator hangup" and ticket.status == "classified"
    # The whole call is recorded (menu and conversation), by the dialplan, under the site's
    # directory, and the ticket points at the file.
    assert ticket.recording_path == str(stack.var_dir.resolve() / "asterisk" / "spool" /
                                        "recording" / "siaga112" / "jepara" / f"{caller_id}.wav")
    assert Path(ticket.recording_path).stat().st_size > 8000
    audit = await stack.audit(ticket)
    actions = [a.action for a in audit]
    # A human first: the free operator is rung from the answer, the key is taken while it
    # rings (the caller presses 1.5 s in, the phone answers 3 s after it rang).
    assert actions[:5] == ["opened", "screening", "answered", "queued", "ringing"]
    assert actions.index("menu") < actions.index("operator answered")
    [ringing] = [a for a in audit if a.action == "ringing"]
    assert ticket.queued_at is not None and ticket.operator_rung_at == ringing.at
    assert "operator answered" in actions and actions[-1] == "ended"
    # Asterisk was asked not to send the events no call code waits for (a bridge, an answer
    # and a playback each make several); the ones the call needs all came.
    received = stack.app.events.by_type
    assert not set(received) & set(UNUSED_EVENTS), received
    assert {"StasisStart", "ChannelDtmfReceived", "PlaybackFinished", "StasisEnd"} <= set(received)


async def test_operator_keys_star_113_hash_and_the_fire_brigade_joins_through_the_trunk(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    fire_brigade, trunk = await phone("operator_answer_wait.xml", name="113")
    uas, contact = await phone("operator_adds_agency.xml", extra_args=["-d", "3000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at(10, WIB),
                             trunk_contact=trunk.replace("sip:113@", "sip:"))
    result = await stack.call("caller_key.xml", template={"digit": "2"})
    assert result.ok, result.errors
    assert (await uas.wait(20)).successful == 1
    assert (await fire_brigade.wait(20)).successful == 1  # joined, then hung up with the call
    await stack.settle()
    [ticket] = await stack.tickets()
    [added] = [a for a in await stack.audit(ticket) if a.action == "agency added"]
    assert added.actor == "op1" and '"number": "113"' in added.detail
