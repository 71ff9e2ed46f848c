"""The ARI events websocket: an async iterator per connection, and a loop that reconnects.

The reader never blocks: each event is handed to a synchronous callback that must only enqueue.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from ari_app.ari.client import AriClient
from ari_app.ari.errors import AriError

log = logging.getLogger(__name__)

Event = dict[str, Any]


async def iter_events(
    client: AriClient,
    app: str,
    *,
    on_open: Callable[[], Awaitable[None]] | None = None,
    heartbeat: float = 5.0,
) -> AsyncIterator[Event]:
    """Yield the events of one websocket connection until it closes.

    ``on_open`` runs once the socket is open (the app then exists in Asterisk) and before the
    first event is yielded; events arriving meanwhile wait in the socket's buffer, in order.
    """
    async with client.session.ws_connect(
        client.ws_url(app), heartbeat=heartbeat, max_msg_size=8 * 1024 * 1024
    ) as ws:
        if on_open is not None:
            await on_open()
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                try:
                    event = json.loads(msg.data)
                except ValueError:
                    log.warning("ARI sent a frame that is not JSON: %.200s", msg.data)
                    continue
                if isinstance(event, dict):
                    yield event
            elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                break


class EventLoop:
    """Keeps the app's websocket connected with capped back-off and exposes readiness.

    On every (re)connect it lists the channels in our Stasis app and hands them to ``on_connect``
    so that calls still in the app are adopted, before events flow to ``on_event``.
    """

    def __init__(
        self,
        client: AriClient,
        app: str,
        on_event: Callable[[Event], None],
        on_connect: Callable[[list[str]], Awaitable[None]],
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
        on_disconnect: Callable[[], None] | None = None,
        unused_events: Sequence[str] = (),
    ) -> None:
        self.client, self.app = client, app
        self.unused_events = tuple(unused_events)
        self.on_event, self.on_connect, self.on_disconnect = on_event, on_connect, on_disconnect
        self.initial_backoff, self.max_backoff = initial_backoff, max_backoff
        self.connections = 0
        self.events_received = 0
        self.by_type: Counter[str] = Counter()
        self._ready = asyncio.Event()
        self._down = asyncio.Event()  # set while the websocket is known to be down
        self._stopping = False
        self._backoff = initial_backoff

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def wait_ready(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):  # 3.11's wait_for can lose a cancel
            await self._ready.wait()

    async def wait_down(self, timeout: float | None = None) -> None:
        """Until a dropped websocket has been noticed (and on_disconnect has run)."""
        async with asyncio.timeout(timeout):
            await self._down.wait()

    def stop(self) -> None:
        self._stopping = True

    async def _opened(self) -> None:
        self.connections += 1
        app = await self.client.get("applications", self.app)
        if self.unused_events:
            await self._filter()
        channel_ids = [str(c) for c in app.get("channel_ids", [])]
        log.info("ARI app=%s connected (connection %d), %d channel(s) in app",
                 self.app, self.connections, len(channel_ids))
        await self.on_connect(channel_ids)
        self._backoff = self.initial_backoff
        self._down.clear()
        self._ready.set()

    async def _filter(self) -> None:
        """Ask Asterisk not to send the event types nobody here waits for (a saving only)."""
        body = {"disallowed": [{"type": kind} for kind in self.unused_events]}
        try:
            await self.client.put("applications", self.app, "eventFilter", body=body)
        except AriError as exc:  # an older Asterisk: every event comes, the calls skip them
            log.warning("ARI app=%s: event filter not set (%s); all events will be sent",
                        self.app, exc)

    async def run(self) -> None:
        self._backoff = self.initial_backoff
        while not self._stopping:
            try:
                async for event in iter_events(self.client, self.app, on_open=self._opened):
                    self.events_received += 1
                    self.by_type[str(event.get("type"))] += 1
                    try:
                        self.on_event(event)
                    except Exception:
                        log.exception("event handler failed on %s", event.get("type"))
                log.warning("ARI websocket for app=%s closed", self.app)
            except (TimeoutError, aiohttp.ClientError, AriError, OSError) as exc:
                log.warning("ARI websocket for app=%s: %s", self.app,
                            str(exc) or type(exc).__name__)
            if self._ready.is_set():
                self._ready.clear()
                if self.on_disconnect:
                    self.on_disconnect()
                self._down.set()
            if self._stopping:
                break
            delay = self._backoff * (0.75 + random.random() / 2)  # jitter: apps share Asterisk
            log.info("ARI app=%s reconnecting in %.2fs", self.app, delay)
            await asyncio.sleep(delay)
            self._backoff = min(self._backoff * 2, self.max_backoff)
