"""Routes ARI events to the call that owns the channel (or playback) they are about."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ari_app.ari import AriClient, AriError, NotFound
from ari_app.calls.call import Call

log = logging.getLogger(__name__)

Event = dict[str, Any]
Handler = Callable[[Call], Awaitable[None]]

# Event types Asterisk would send for our calls that no call code waits for. The app asks
# Asterisk not to send them (ARI eventFilter): each one costs Asterisk a JSON encoding and the
# app a decoding and a trip through the call's queue. A bridge's and a playback's life alone
# is a dozen of them per call. The calls wait for StasisStart/End, ChannelDestroyed,
# ChannelHangupRequest, ChannelDtmfReceived, ChannelTalkingStarted and PlaybackFinished.
UNUSED_EVENTS = (
    "ChannelVarset", "ChannelDialplan", "ChannelStateChange", "ChannelConnectedLine",
    "ChannelCallerId", "ChannelTalkingFinished", "ChannelHold", "ChannelUnhold",
    "ChannelEnteredBridge", "ChannelLeftBridge", "BridgeCreated", "BridgeDestroyed",
    "BridgeMerged", "BridgeVideoSourceChanged", "Dial", "PlaybackStarted",
    "PlaybackContinuing", "RecordingStarted",
)


def _target_channel(event: Event) -> str | None:
    channel = event.get("channel")
    if isinstance(channel, dict) and isinstance(channel.get("id"), str):
        return str(channel["id"])
    playback = event.get("playback")
    if isinstance(playback, dict):
        uri = str(playback.get("target_uri", ""))
        if uri.startswith("channel:"):
            return uri[len("channel:"):]
    return None


class CallRegistry:
    """Owns the per-call tasks. ``on_event`` must stay fast: it only enqueues."""

    def __init__(self, ari: AriClient, handler: Handler) -> None:
        self.ari, self.handler = ari, handler
        self.calls: dict[str, Call] = {}
        self.fallback_context = "siaga112-fallback"
        self.owners: dict[str, Call] = {}  # every channel id (caller's, operator's) → its call
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = 0
        self.finished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def on_event(self, event: Event) -> None:
        kind = event.get("type")
        channel_id = _target_channel(event)
        if kind == "StasisStart" and channel_id and channel_id not in self.owners:
            args = [str(a) for a in event.get("args", [])]
            caller = (self.calls.get(args[1])
                      if len(args) > 1 and args[0] in ("operator", "agency") else None)
            if caller is not None:  # an operator leg rung before a restart, now answered
                self.attach(channel_id, caller)
                caller.deliver(event)
                return
            self.start(event["channel"], args)
            return
        owner = self.owners.get(channel_id) if channel_id else None
        if owner is not None:
            owner.deliver(event)
            if kind == "ChannelDestroyed" and channel_id and channel_id != owner.id:
                self.owners.pop(channel_id, None)

    def attach(self, channel_id: str, call: Call) -> None:
        """Route events of another channel (e.g. the operator leg) to this call."""
        self.owners[channel_id] = call

    def start(self, channel: dict[str, Any], args: list[str]) -> Call | None:
        call = Call(self.ari, channel, args)
        if call.id in self.calls:
            return None
        self.calls[call.id] = call
        self.owners[call.id] = call
        self.started += 1
        self._idle.clear()
        task = asyncio.create_task(self._run(call), name=f"call-{call.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return call

    async def _run(self, call: Call) -> None:
        try:
            await self.handler(call)
        except Exception:
            log.exception("%s handler failed: handing the caller to the dialplan fallback",
                          call.tag)
            await self.rescue(call)
        finally:
            self.calls.pop(call.id, None)
            for cid, owner in list(self.owners.items()):
                if owner is call:
                    del self.owners[cid]
            self.finished += 1
            if not self.calls:
                self._idle.set()

    async def rescue(self, call: Call) -> None:
        """The safe step when our own code fails: the dialplan rings the operators directly."""
        if call.gone or (call.args and call.args[0] in ("operator", "agency")):
            return
        for _ in range(3):
            try:
                await self.ari.post("channels", call.id, "continue", context=self.fallback_context,
                                    extension="s", priority=1)
                log.warning("%s sent to %s", call.tag, self.fallback_context)
                return
            except NotFound:
                return  # the caller has gone
            except AriError as exc:
                log.error("%s rescue failed: %s", call.tag, exc)
                await asyncio.sleep(0.2)

    async def wait_idle(self, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):  # 3.11's wait_for can lose a cancel
            await self._idle.wait()

    async def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
