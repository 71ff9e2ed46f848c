"""The ARI requests of answering a caller and bridging them to an operator.

The dialplan's ringback tone is ended by the greeting (a file stream replaces a channel's
generator in Asterisk), so answering costs one request, and the tone is stopped by request only
where the caller would meet an operator or the music first. Both legs join the call's bridge in
one request; when ARI refuses it (it checks every channel before adding any), one leg at a time
finds out who left. (The calls themselves, with a real Asterisk and SIPp, are in
tests/integration/test_call_flow.py and the other call tests.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from ari_app.ari import AriClient
from ari_app.calls import connect
from ari_app.calls.call import Call, CallerHungUp
from ari_app.calls.context import CallContext
from tests.unit.ari_recorder import Recorder

BRIDGE = "bridges/call-c1"


def setup(gone: set[str] | None = None) -> tuple[Recorder, CallContext, Call]:
    ari = Recorder(gone=gone)
    call = Call(cast(AriClient, ari), {"id": "c1", "state": "Ring", "caller": {"number": "0812"}},
                [])
    ctx = cast(CallContext, SimpleNamespace(ari=ari, holding_bridge="hold-jepara"))
    return ari, ctx, call


async def test_answer_then_greeting_then_operator_stops_no_tone_by_request() -> None:
    ari, ctx, call = setup()
    await call.answer()
    await call.play("sound:greeting")
    link = await connect.bridge(ctx, call, "op1", "c1-op")
    assert link is not None and link.bridge_id == "call-c1"
    assert ari.sent() == [("POST", "channels/c1/answer", ""),
                            ("POST", "channels/c1/play", ""),
                            ("POST", BRIDGE, ""),
                            ("POST", f"{BRIDGE}/addChannel", "c1-op,c1")]


async def test_a_caller_bridged_before_any_prompt_has_the_ringback_stopped_first() -> None:
    ari, ctx, call = setup()
    await call.answer()
    await connect.bridge(ctx, call, "op1", "c1-op")
    paths = ari.requests
    assert paths.index(("DELETE", "channels/c1/ring")) < paths.index(("POST",
                                                                     f"{BRIDGE}/addChannel"))
    assert paths.count(("DELETE", "channels/c1/ring")) == 1


async def test_a_caller_held_before_any_prompt_hears_the_music_not_the_ringback() -> None:
    ari, ctx, call = setup()
    await call.answer()
    await connect.hold(ctx, call)
    await connect.hold(ctx, call)  # held again later: the tone is long gone, no request
    assert ari.requests == [
        ("POST", "channels/c1/answer"), ("DELETE", "channels/c1/ring"),
        ("POST", "bridges/hold-jepara/addChannel"), ("POST", "bridges/hold-jepara/addChannel")]


async def test_a_held_caller_leaves_the_holding_bridge_before_joining_the_operator() -> None:
    ari, ctx, call = setup()
    await call.answer()
    await call.play("sound:greeting")
    await connect.hold(ctx, call)
    await connect.bridge(ctx, call, "op1", "c1-op")
    assert ari.sent()[-4:] == [("POST", BRIDGE, ""),
                                 ("POST", f"{BRIDGE}/addChannel", "c1-op"),
                                 ("POST", "bridges/hold-jepara/removeChannel", "c1"),
                                 ("POST", f"{BRIDGE}/addChannel", "c1")]


async def test_an_operator_gone_before_the_bridge_is_found_one_leg_at_a_time() -> None:
    ari, ctx, call = setup(gone={"c1-op"})
    await call.play("sound:greeting")
    assert await connect.bridge(ctx, call, "op1", "c1-op") is None
    assert ari.sent()[-3:] == [("POST", f"{BRIDGE}/addChannel", "c1-op,c1"),
                                 ("POST", f"{BRIDGE}/addChannel", "c1-op"),
                                 ("DELETE", BRIDGE, "")]


async def test_a_caller_gone_before_the_bridge_ends_the_operator_leg_too() -> None:
    ari, ctx, call = setup(gone={"c1"})
    with pytest.raises(CallerHungUp):
        await connect.bridge(ctx, call, "op1", "c1-op")
    assert ("DELETE", "channels/c1-op", "") in ari.sent()
    assert ari.sent()[-1] == ("DELETE", BRIDGE, "")


async def test_a_caller_gone_while_the_ringback_is_stopped_ends_the_operator_leg_too() -> None:
    ari, ctx, call = setup()
    await call.answer()
    ari.gone = {"c1"}  # hung up after the answer, before any prompt
    with pytest.raises(CallerHungUp):
        await connect.bridge(ctx, call, "op1", "c1-op")
    assert ("DELETE", "channels/c1/ring", "") in ari.sent()
    assert ari.sent()[-2:] == [("DELETE", "channels/c1-op", ""), ("DELETE", BRIDGE, "")]
