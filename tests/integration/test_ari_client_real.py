"""The ARI client against a real Asterisk."""

from __future__ import annotations

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
