"""The ARI client against a real Asterisk."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from ari_app.ari import AriClient, BadRequest, NotFound
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.integration


async def test_vanished_channel_is_not_found_and_our_app_is_registered(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    r = stack.asterisk.rendered
    client = AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)
    try:
        info = await client.get("asterisk", "info")
        # ARI reports the version we rendered for, read from the binary (`asterisk -V`).
        ast = r.asterisk
        assert ast is not None and info["system"]["version"] == ast.version
        assert info["system"]["version"].startswith(f"{ast.major}.")
        chosen = os.environ.get("SIAGA112_ASTERISK")
        if chosen and not os.environ.get("SIAGA112_ASTERISK_BIN"):
            assert ast.major == int(chosen)
        app = await client.get("applications", stack.site.stasis_app)
        assert app["name"] == stack.site.stasis_app and app["channel_ids"] == []
        with pytest.raises(NotFound):
            await client.post("channels", "no-such-channel", "answer")
        with pytest.raises(BadRequest):
            await client.post("channels")  # originate without an endpoint
    finally:
        await client.close()


async def test_wrong_ari_password_is_refused(make_stack: StackFactory) -> None:
    stack = await make_stack(start_app=False)
    client = AriClient(stack.asterisk.ari_url, "siaga112", "wrong")
    try:
        with pytest.raises(Exception) as exc:
            await client.get("asterisk", "info")
        assert getattr(exc.value, "status", None) == 401
    finally:
        await client.close()


async def test_add_channel_checks_every_leg_before_adding_any(make_stack: StackFactory) -> None:
    """What connect.bridge relies on to add caller and operator in one request: when one leg
    is gone, Asterisk refuses the request and neither leg is in the bridge. The legs: two
    Local channels on the softphones' echo test (*43), in a Stasis app of the test's own."""
    stack = await make_stack(start_app=False)
    r = stack.asterisk.rendered
    client = AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)
    app = "siaga112-test-legs"
    opened, started = asyncio.Event(), asyncio.Queue[str]()

    async def listen() -> None:  # the app exists in Asterisk while its websocket is open
        async with client.session.ws_connect(client.ws_url(app)) as ws:
            opened.set()
            async for msg in ws:
                event = json.loads(msg.data)
                if event.get("type") == "StasisStart":
                    started.put_nowait(event["channel"]["id"])

    reader = asyncio.create_task(listen())
    try:
        async with asyncio.timeout(20):
            await opened.wait()
            for n in range(2):
                await client.post("channels", endpoint="Local/*43@from-operators", app=app,
                                  channelId=f"leg-{n}", otherChannelId=f"leg-{n}-echo")
            legs = sorted([await started.get(), await started.get()])
        assert legs == ["leg-0", "leg-1"]
        await client.post("bridges", "legs", type="mixing")
        with pytest.raises((NotFound, BadRequest)):  # 22 says 400 "Channel not found"
            await client.post("bridges", "legs", "addChannel", channel="leg-0,gone-leg")
        assert (await client.get("bridges", "legs"))["channels"] == []
        await client.post("bridges", "legs", "addChannel", channel="leg-0,leg-1")
        assert sorted((await client.get("bridges", "legs"))["channels"]) == legs
        for leg in legs:
            await client.delete("channels", leg)
        await client.delete("bridges", "legs")
    finally:
        reader.cancel()
        await client.close()
