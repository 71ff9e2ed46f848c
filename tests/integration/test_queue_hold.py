"""A caller waiting for an operator hears music on hold and a periodic "please hold" reminder.

Proven from Asterisk's side: a second ARI application (an observer, subscribed to everything)
sees the caller enter the holding bridge and the reminder's Playback events; Asterisk's own RTP
counters and a snoop recording of what Asterisk sends to the caller show the music.
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import io
import itertools
import json
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest

from ari_app.ari import AriClient
from ari_app.clock import Clock
from ari_app.config import Site
from tests.integration.conftest import Stack, StackFactory

pytestmark = pytest.mark.integration

OBSERVER = "siaga112-observer"
REMINDER_EVERY_S = 5.0  # the shortest period a site file may set (config: 5..300 s)

Event = dict[str, Any]


class Observer:
    """A separate ARI app that sees every channel's events without owning any call."""

    def __init__(self, ari: AriClient) -> None:
        self.ari = ari
        self.seen: list[Event] = []
        self.taken: set[int] = set()
        self.arrived = asyncio.Condition()

    async def add(self, event: Event) -> None:
        async with self.arrived:
            self.seen.append(event)
            self.arrived.notify_all()

    async def next(self, match: Callable[[Event], bool], timeout: float) -> Event:
        """The earliest matching event not yet taken, arrived or still to come (none is lost)."""

        def first() -> int | None:
            return next((i for i, e in enumerate(self.seen) if i not in self.taken and match(e)),
                        None)

        async with asyncio.timeout(timeout), self.arrived:
            await self.arrived.wait_for(lambda: first() is not None)
            index = first()
            assert index is not None
            self.taken.add(index)
            return self.seen[index]


@asynccontextmanager
async def observing(stack: Stack) -> AsyncIterator[Observer]:
    ari = AriClient(stack.asterisk.ari_url, stack.asterisk.rendered.ari_user,
                    stack.asterisk.rendered.ari_password)
    observer = Observer(ari)
    opened = asyncio.Event()

    async def read() -> None:
        async with ari.session.ws_connect(ari.ws_url(OBSERVER, subscribe_all=True)) as ws:
            opened.set()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await observer.add(json.loads(msg.data))

    reader = asyncio.create_task(read())
    try:
        async with asyncio.timeout(10):
            await opened.wait()
        yield observer
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ari.close()


def at_ten_wib() -> Clock:
    return Clock(datetime(2025, 5, 19, 10, 0, tzinfo=ZoneInfo("Asia/Jakarta")))


def reminding(site: Site) -> Site:
    return dataclasses.replace(site, queue=dataclasses.replace(
        site.queue, reminder_every_s=REMINDER_EVERY_S))


def stamp(event: Event) -> datetime:
    """Asterisk's own time of an event (e.g. 2025-05-19T10:00:00.123+0700)."""
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z")


async def tx_packets(ari: AriClient, channel_id: str) -> int:
    """RTP packets Asterisk has sent to this channel (CHANNEL(rtcp,all) txcount)."""
    data = await ari.get("channels", channel_id, "variable", variable="CHANNEL(rtcp,all)")
    fields = dict(p.split("=", 1) for p in str(data["value"]).split(";") if "=" in p)
    return int(fields["txcount"])


def tone_frames(wav: bytes, *, hz: float, min_rms: float = 300.0) -> int:
    """20 ms frames of a signed-linear WAV that carry a tone near ``hz`` (zero-crossing count)."""
    with wave.open(io.BytesIO(wav)) as w:
        assert (w.getsampwidth(), w.getnchannels()) == (2, 1), w.getparams()
        rate = w.getframerate()
        samples = array.array("h", w.readframes(w.getnframes()))
    size, found = rate // 50, 0
    for i in range(0, len(samples) - size + 1, size):
        frame = samples[i:i + size]
        rms = (sum(s * s for s in frame) / size) ** 0.5
        crossings = sum(1 for a, b in itertools.pairwise(frame) if (a < 0) != (b < 0))
        if rms >= min_rms and abs(crossings * 50 / 2 - hz) <= hz * 0.15:
            found += 1
    return found


async def record_what_caller_hears(observer: Observer, caller_id: str, seconds: int) -> bytes:
    """Snoop on the audio Asterisk sends to the caller and record it, all through ARI."""
    ari, snoop_id = observer.ari, f"snoop-{caller_id}"
    await ari.post("channels", caller_id, "snoop", spy="out", whisper="none", app=OBSERVER,
                   snoopId=snoop_id)
    await observer.next(lambda e: e["type"] == "StasisStart"
                        and e["channel"]["id"] == snoop_id, 10)
    name = f"hold-{caller_id}"
    await ari.post("channels", snoop_id, "record", name=name, format="wav",
                   maxDurationSeconds=seconds, ifExists="overwrite")
    finished = await observer.next(lambda e: e["type"] in ("RecordingFinished", "RecordingFailed")
                                   and e["recording"]["name"] == name, seconds + 10)
    assert finished["type"] == "RecordingFinished", finished
    await ari.delete("channels", snoop_id)
    async with ari.session.get(ari.url("recordings", "stored", name, "file")) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.read()


async def test_caller_waiting_for_a_busy_line_hears_music_and_a_please_hold_every_period(
    make_stack: StackFactory, jepara: Site,
) -> None:
    # op1 is on shift but not logged in (no registration, no contact): nobody can take the call.
    stack = await make_stack(reminding(jepara), operators=[("op1", None)], clock=at_ten_wib())
    assert stack.app is not None
    holding = stack.app.ctx.holding_bridge
    hold_prompt = stack.site.prompts["hold"]
    async with observing(stack) as observer:
        caller = asyncio.create_task(stack.call(
            "caller_key.xml", template={"digit": "2"}, keys={"caller": "081244445555"}))
        held = await observer.next(lambda e: e["type"] == "ChannelEnteredBridge"
                                   and e["bridge"]["id"] == holding, 30)
        caller_id = held["channel"]["id"]
        ari = observer.ari

        def reminder(kind: str) -> Callable[[Event], bool]:
            return lambda e: (e["type"] == kind
                              and e["playback"]["target_uri"] == f"channel:{caller_id}"
                              and e["playback"]["media_uri"].endswith(f"/{hold_prompt}"))

        # (a) Music on hold: before any reminder, Asterisk sends the caller audio, and it is
        # the built music's tone (prompts.build: 330 Hz), not the silence Asterisk would also
        # send (transmit_silence = yes keeps RTP flowing even with nothing to play).
        tx_held = await tx_packets(ari, caller_id)
        heard = await record_what_caller_hears(observer, caller_id, seconds=3)
        assert tone_frames(heard, hz=330.0) >= 25, "no music on hold in what the caller hears"

        # (b) The reminder: played to the end, at least twice, one period apart.
        started = await observer.next(reminder("PlaybackStarted"), REMINDER_EVERY_S + 10)
        tx_first_reminder = await tx_packets(ari, caller_id)
        starts = [stamp(held)]
        while True:
            finished = await observer.next(reminder("PlaybackFinished"), 30)
            assert finished["playback"]["state"] == "done", finished
            # Streamed to the end, not skipped: a missing file would finish at once.
            assert (stamp(finished) - stamp(started)).total_seconds() >= 1.0, (started, finished)
            starts.append(stamp(started))
            if len(starts) == 3:
                break
            started = await observer.next(reminder("PlaybackStarted"), REMINDER_EVERY_S + 10)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
        for gap in gaps:  # held -> first reminder -> second reminder
            assert REMINDER_EVERY_S - 0.3 <= gap <= REMINDER_EVERY_S + 1.5, gaps
        # About 50 packets a second went to the caller while held, before the first reminder.
        assert tx_first_reminder - tx_held >= 40 * (gaps[0] - 1), (tx_held, tx_first_reminder)

        await ari.delete("channels", caller_id)  # the caller gives up: Asterisk sends the BYE
        result = await caller
    assert result.ok, result.errors
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.status == "abandoned" and ticket.callback_needed
    actions = [a.action for a in await stack.audit(ticket)]
    assert "queued" in actions and "ringing" not in actions
