"""The ARI requests of putting a caller on hold and taking them off it.

Most callers reach an operator during the menu and are never in the holding bridge: taking them
"off hold" must cost no request. A caller that was held, or whose state a restarted app cannot
know, is taken off as before. (The calls themselves, with a real Asterisk, are in
tests/integration/test_queue_hold.py and test_call_flow.py.)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from ari_app.ari import AriClient
from ari_app.calls import connect
from ari_app.calls.call import Call
from ari_app.calls.context import CallContext
from tests.unit.ari_recorder import Recorder


def setup(state: str, fail: set[str] | None = None) -> tuple[Recorder, CallContext, Call]:
    ari = Recorder(fail)
    call = Call(cast(AriClient, ari), {"id": "c1", "state": state, "caller": {"number": "0812"}},
                [])
    ctx = cast(CallContext, SimpleNamespace(ari=ari, holding_bridge="hold-jepara"))
    return ari, ctx, call


async def test_a_caller_never_held_is_taken_off_hold_without_a_request() -> None:
    ari, ctx, call = setup("Ring")
    await connect.unhold(ctx, call)
    assert ari.requests == []


async def test_a_held_caller_leaves_the_holding_bridge_once() -> None:
    ari, ctx, call = setup("Ring")
    await connect.hold(ctx, call)
    await connect.unhold(ctx, call)
    await connect.unhold(ctx, call)  # the second: already off hold
    assert ari.requests == [("POST", "bridges/hold-jepara/addChannel"),
                            ("POST", "bridges/hold-jepara/removeChannel")]


async def test_held_again_after_an_operator_left_is_taken_off_again() -> None:
    ari, ctx, call = setup("Ring")
    for _ in range(2):
        await connect.hold(ctx, call)
        await connect.unhold(ctx, call)
    assert [p for _, p in ari.requests].count("bridges/hold-jepara/removeChannel") == 2


@pytest.mark.parametrize("fail", [set(), {"bridges/hold-jepara/removeChannel"}])
async def test_a_caller_up_before_the_app_is_taken_off_whatever_the_dead_app_did(
        fail: set[str]) -> None:
    """Adopted after a restart: it may be in the holding bridge, or on channel music."""
    ari, ctx, call = setup("Up", fail)
    await connect.unhold(ctx, call)
    expected = [("POST", "bridges/hold-jepara/removeChannel")]
    if fail:
        expected.append(("DELETE", "channels/c1/moh"))
    assert ari.requests == expected
