"""A prompt request still on its way when the caller hangs up and the menu is cancelled.

The request is shielded (it must land before the prompts are stopped), so nobody awaits it any
more when Asterisk answers 404: its error must be taken, not reported by asyncio as "Task
exception was never retrieved" (an ERROR line in the app's log per such caller, seen in the
bench at 8 cps).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, cast

from ari_app.ari import AriClient, NotFound
from ari_app.calls.call import Call


class SlowGone:
    """Answers a play request only when released, and then with 404: the caller is gone."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.asked = asyncio.Event()

    async def post(self, *path: str, **params: Any) -> Any:
        self.asked.set()
        await self.release.wait()
        raise NotFound("POST", "/".join(path), 404, "Channel not found")


async def test_a_prompt_request_that_fails_after_its_menu_was_cancelled_is_not_reported() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        ari = SlowGone()
        call = Call(cast(AriClient, ari), {"id": "c9", "state": "Ring"}, [])
        menu = asyncio.create_task(call.play("sound:greeting"))
        await ari.asked.wait()
        menu.cancel()  # the caller hung up: the flow cancels the menu
        await asyncio.gather(menu, return_exceptions=True)
        assert call._starting, "the shielded request is still on its way"
        request = next(iter(call._starting))
        ari.release.set()
        await asyncio.wait({request})  # ends it without taking its error, as nobody would
        await asyncio.sleep(0)  # the request's done callbacks run
        assert not call._starting
        del request, menu
        gc.collect()  # an exception never retrieved is reported when its task is collected
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in reported] == []
