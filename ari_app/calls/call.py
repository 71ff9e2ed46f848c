"""A call as the flow sees it: one channel, its own event queue, a few ARI verbs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from ari_app.ari import AriClient, AriConnectionError, AriError, NotFound, NotInStasis

log = logging.getLogger(__name__)

Event = dict[str, Any]
HANGUP_EVENTS = ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed")
EARLIER_PROMPTS = 16  # more than a caller's prompts before the queue (menu, repeats, warning)


class CallerHungUp(Exception):
    """The caller's channel left our app (hung up) while we waited."""


class Call:
    def __init__(self, ari: AriClient, channel: dict[str, Any], args: list[str]) -> None:
        self.ari = ari
        self.id: str = channel["id"]
        self.name: str = channel.get("name", "")
        caller = channel.get("caller") or {}
        self.caller: str = str(caller.get("number") or "")
        self.args = args
        self.linkedid: str = channel.get("linkedid") or self.id
        # Up when the app got it: answered in the dialplan, or by an earlier app (adopted).
        self.up_at_start = channel.get("state") == "Up"
        # In the holding bridge (or on channel music): False for a caller we answered, who is
        # only put there by ``connect.hold``; None (unknown) for one that was up before us, e.g.
        # adopted after a restart, whom ``connect.unhold`` takes out whatever the dead app did.
        self.on_hold: bool | None = None if self.up_at_start else False
        # The dialplan's ringback tone (Playtones, a channel generator) still sounds after our
        # answer until a prompt replaces it or ``end_ringback`` stops it (see ``answer``). A
        # channel up before us (adopted after a restart) may still have it: assumed so.
        self.ringback = self.up_at_start
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.gone = False
        self.hangup_cause: int | None = None
        self.ticket_ref: str | None = None
        self.keys = ""          # every DTMF digit the caller pressed
        self.talked = False     # talk detection heard the caller at least once
        self.language: str | None = None  # the caller chose another language (None: the site's)
        self.marked_silent = False  # flagged as a silent caller on the ticket and the card
        self.lost_reason: str | None = None  # e.g. "asterisk restart"
        self.lost_at: datetime | None = None  # when the channel was lost, if not at the close
        self.hung_up = asyncio.Event()  # set on the caller's hangup, for waits beside the queue
        self._plays = 0  # playback ids are <channel>-p<n>, so a restarted app can stop them
        self.playing: set[str] = set()  # playbacks started and not yet finished
        self._starting: set[asyncio.Task[Any]] = set()  # play requests still on their way
        self._asides: list[asyncio.Queue[Event]] = []

    @staticmethod
    def loop_time() -> float:
        return asyncio.get_running_loop().time()

    async def set_var(self, name: str, value: str) -> None:
        try:
            await self.ari.post("channels", self.id, "variable", variable=name, value=value)
        except (NotFound, NotInStasis) as exc:
            raise CallerHungUp(self.id) from exc

    async def get_var(self, name: str, channel_id: str | None = None) -> str | None:
        """A channel variable or function value; None if unset or the channel is gone."""
        try:
            data = await self.ari.get("channels", channel_id or self.id, "variable", variable=name)
        except AriError:
            return None
        value = data.get("value") if isinstance(data, dict) else None
        return str(value) if value not in (None, "") else None

    def __repr__(self) -> str:
        return f"call={self.id}"

    @property
    def tag(self) -> str:
        """Prefix for log lines: call id and, once known, the ticket reference."""
        return f"call={self.id}" + (f" ticket={self.ticket_ref}" if self.ticket_ref else "")

    def deliver(self, event: Event) -> None:
        log.debug("%s event %s", self.tag, event)
        if event.get("channel", {}).get("id") == self.id:
            if event.get("type") == "ChannelDtmfReceived":
                self.keys += str(event.get("digit", ""))
            elif event.get("type") == "ChannelTalkingStarted":
                self.talked = True
        if event.get("type") == "PlaybackFinished":
            self.playing.discard(str(event.get("playback", {}).get("id", "")))
        if event.get("type") in HANGUP_EVENTS and event.get("channel", {}).get("id") == self.id:
            self.gone = True
            self.hung_up.set()
            cause = event.get("cause")
            if isinstance(cause, int):
                self.hangup_cause = cause
        self.events.put_nowait(event)
        for aside in self._asides:
            aside.put_nowait(event)

    @contextmanager
    def aside(self) -> Iterator[asyncio.Queue[Event]]:
        """A second copy of this call's events from now on, for a wait that runs beside the
        call's own (the operator's phone rings while the menu still listens for keys)."""
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._asides.append(queue)
        try:
            yield queue
        finally:
            self._asides.remove(queue)

    async def next_event(
        self, match: Callable[[Event], bool], timeout: float | None = None, *,
        source: asyncio.Queue[Event] | None = None,
    ) -> Event | None:
        """The next event that matches, or None at timeout. Raises CallerHungUp if the caller goes.

        ``source``: a queue from ``aside()`` instead of the call's own.
        """
        events = self.events if source is None else source
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.gone and events.empty():
                raise CallerHungUp(self.id)
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation when an
            # event arrives at the same moment, leaving the caller waiting for nothing.
            try:
                async with asyncio.timeout(remaining):
                    event = await events.get()
            except TimeoutError:
                return None
            if match(event):
                return event
            if event.get("type") in HANGUP_EVENTS and event.get("channel", {}).get("id") == self.id:
                raise CallerHungUp(self.id)

    async def answer(self) -> None:
        if self.up_at_start:
            return  # answered before Stasis() or before a restart: no ARI round trip
        try:
            # Asked again if Asterisk is too busy to reply in time: the caller hears the
            # ringback meanwhile, and handing them to the fallback instead would ring many
            # operators at once for them, more load on an Asterisk already too busy.
            await self.ari.post_repeatable("channels", self.id, "answer",
                                           still_wanted=lambda: not self.gone)
        except (NotFound, NotInStasis) as exc:
            raise CallerHungUp(self.id) from exc
        except AriConnectionError as exc:
            if self.gone:  # the caller hung up while we waited for Asterisk
                raise CallerHungUp(self.id) from exc
            raise
        # The dialplan plays a ringback tone until the app answers (dialplan/20-emergency). The
        # greeting, which follows at once, ends it: Asterisk stops a channel's generator when a
        # file stream starts on it (main/file.c, on 16 and 22 alike). So no ARI round trip
        # here; ``end_ringback`` stops it where a caller would meet something else first.
        self.ringback = True

    async def end_ringback(self) -> None:
        """Stop the dialplan's ringback tone if no prompt has replaced it yet: before the caller
        is bridged or held, where it would sound on top of the operator or the music."""
        if not self.ringback:
            return
        self.ringback = False
        try:
            await self.ari.delete("channels", self.id, "ring")
        except (NotFound, NotInStasis) as exc:
            raise CallerHungUp(self.id) from exc

    async def play(self, media: str) -> str:
        playback_id = f"{self.id}-p{self._plays}"
        self._plays += 1
        self.playing.add(playback_id)
        self.ringback = False  # the prompt's file stream takes the ringback tone's place
        # Shielded: a cancelled menu must not leave a request in flight that starts a prompt
        # after stop_playbacks() has run (the caller would hear it over the operator).
        request = asyncio.create_task(
            self.ari.post("channels", self.id, "play", media=media, playbackId=playback_id))
        self._starting.add(request)
        request.add_done_callback(self._play_request_done)
        try:
            await asyncio.shield(request)
        except (NotFound, NotInStasis) as exc:
            self.playing.discard(playback_id)
            raise CallerHungUp(self.id) from exc
        return playback_id

    def _play_request_done(self, request: asyncio.Task[Any]) -> None:
        """A prompt request that ends after its caller moved on (the menu cancelled as the
        caller hung up) has nobody awaiting it: its error is expected, and taken here, not left
        for asyncio to report as "Task exception was never retrieved"."""
        self._starting.discard(request)
        if not request.cancelled() and (exc := request.exception()) is not None:
            log.debug("%s prompt request failed: %s", self.tag, exc)

    async def stop_playbacks(self) -> None:
        """Stop every prompt this app started on the channel (the operator has answered)."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        for playback_id in list(self.playing):
            try:
                await self.ari.delete("playbacks", playback_id)
            except AriError:
                pass  # it already ended
            self.playing.discard(playback_id)

    async def play_and_wait(self, media: str, timeout: float = 60.0) -> bool:
        """Play to the end; False if it did not finish within the timeout (it is stopped)."""
        playback_id = await self.play(media)
        done = await self.next_event(
            lambda e: e.get("type") == "PlaybackFinished"
            and e.get("playback", {}).get("id") == playback_id, timeout)
        if done is None:
            await self.stop_playback(playback_id)
            return False
        return bool(done.get("playback", {}).get("state") != "failed")

    async def stop_earlier_prompts(self, count: int = EARLIER_PROMPTS) -> int:
        """Stop what a previous app process played or queued on this channel; returns how many.

        Its playbacks are ``<channel>-p0`` and on (ARI 16 cannot list a channel's playbacks);
        ours are numbered after them. A prompt left running would hold the caller out of the
        holding bridge, keys unheard, until it ends. Prompts past ``count`` (only hold
        reminders, a few seconds each) are left to end by themselves.
        """
        results = await asyncio.gather(
            *(self.ari.delete("playbacks", f"{self.id}-p{n}") for n in range(count)),
            return_exceptions=True)
        self._plays = max(self._plays, count)
        return sum(1 for r in results if not isinstance(r, BaseException))

    async def stop_playback(self, playback_id: str) -> None:
        try:
            await self.ari.delete("playbacks", playback_id)
        except NotFound:
            pass  # it already ended

    async def hangup(self, reason: str = "normal") -> None:
        try:
            await self.ari.delete("channels", self.id, reason=reason)
        except NotFound:
            pass  # already gone: that is the state we wanted
