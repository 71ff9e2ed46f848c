"""A human first: the operators are rung while the menu plays; silent callers are not ghosts.

Real Asterisk and SIPp. Orders are read from Asterisk's own event stream (an observer ARI app
subscribed to everything) and from the ticket's audit trail, not from a stopwatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import wave
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ari_app import admin
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.live import next_change
from tests.integration.conftest import PhoneFactory, Stack, StackFactory
from tests.integration.test_location import PIDF
from tests.integration.test_queue_hold import Event, observing

pytestmark = pytest.mark.integration

SILENT = "081233330000"


def at_ten() -> Clock:
    return Clock(datetime(2025, 5, 19, 10, 0, tzinfo=ZoneInfo("Asia/Jakarta")))


def with_menu(site: Site, **menu: Any) -> Site:
    return dataclasses.replace(site, menu=dataclasses.replace(site.menu, **menu))


def on_caller(caller_id: str) -> Any:
    return lambda e: e.get("playback", {}).get("target_uri") == f"channel:{caller_id}"


async def test_silent_callers_operator_phone_rings_before_the_greeting_has_finished(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_wait.xml", answer_after_ms="7000")
    stack = await make_stack(operators=[("op1", contact)], clock=at_ten())
    assert stack.app is not None
    changes = stack.app.live.listen()
    greeting = stack.site.prompts["greeting"]
    async with observing(stack) as observer:
        caller = asyncio.create_task(stack.call("caller_silent.xml", keys={"caller": SILENT}))
        arrived = await next_change(changes, "arrived", timeout=20)
        caller_id = arrived["call"]

        def op_ringing(e: Event) -> bool:
            return bool(e["type"] == "ChannelStateChange" and e["channel"]["state"] == "Ringing"
                    and e["channel"]["id"].startswith(f"op-{caller_id}-"))

        def greeting_over(e: Event) -> bool:  # the greeting's end: on to the menu, or stopped
            return (e["type"] in ("PlaybackContinuing", "PlaybackFinished")
                    and on_caller(caller_id)(e)
                    and e["playback"]["media_uri"].endswith(f"/{greeting}"))

        started = await observer.next(lambda e: e["type"] == "PlaybackStarted"
                                      and on_caller(caller_id)(e), 20)
        assert started["playback"]["media_uri"].endswith(f"/{greeting}"), started
        await observer.next(op_ringing, 20)
        over = await observer.next(greeting_over, 30)
        # Asterisk's own event order: the operator's phone rang before the greeting had finished
        # (on Asterisk 16 often even before its first frame: the caller's channel waits for
        # its next Stasis turn, the operator's does not).
        ringing_at = next(i for i, e in enumerate(observer.seen) if op_ringing(e))
        over_at = observer.seen.index(over)
        assert ringing_at < over_at, (ringing_at, over_at)
        assert observer.seen.index(started) < over_at
        bridged = await next_change(changes, "bridged", timeout=20)
        assert bridged["call"] == caller_id
        # The operator answered 7 s after it rang, mid-menu: the prompt stopped before the caller joined
        # the operator's bridge.
        stopped = await observer.next(lambda e: e["type"] == "PlaybackFinished"
                                      and on_caller(caller_id)(e), 10)
        joined = await observer.next(lambda e: e["type"] == "ChannelEnteredBridge"
                                     and e["channel"]["id"] == caller_id
                                     and e["bridge"]["id"] == f"call-{caller_id}", 10)
        assert stopped["playback"]["media_uri"].endswith(f"/{stack.site.prompts['menu']}")
        assert observer.seen.index(stopped) < observer.seen.index(joined)
        await stack.app.ari.delete("channels", caller_id)
    assert (await caller).ok
    assert (await uas.wait(20)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.operator == "op1" and ticket.silent  # no key, no speech in the whole call
    actions = [a.action for a in await stack.audit(ticket)]
    assert actions.index("ringing") < actions.index("operator answered")
    assert "menu" not in actions  # the menu never came to an answer: the operator did


async def test_key_pressed_while_the_operators_phone_rings_is_on_the_ticket_before_answer(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", answer_after_ms="6000",
                               extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at_ten())
    assert stack.app is not None
    app = stack.app
    changes = app.live.listen()
    caller = asyncio.create_task(stack.call("caller_key.xml", keys={"caller": "081244440001"},
                                            template={"digit": "2", "key_after_ms": "1000"}))
    ringing = await next_change(changes, "ringing", timeout=20)
    chosen = await next_change(changes, "menu", timeout=20, call=ringing["call"])
    # The card's update: what the console shows while the phone still rings.
    assert (chosen["choice"], chosen["category"], chosen["agency"], chosen["priority"]) == (
        "2", "fire", "DAMKAR", 1)
    await app.writer.flush(10)
    [ticket] = await stack.tickets()
    assert app.live.state[ringing["call"]]["stage"] != "bridged"
    assert ticket.operator_answered_at is None and ticket.operator_rung_at is not None
    assert (ticket.category, ticket.agency, ticket.priority) == ("fire", "DAMKAR", 1)
    await next_change(changes, "bridged", timeout=20)
    assert (await caller).ok
    assert (await uas.wait(20)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.category == "fire" and ticket.operator == "op1"
    actions = [a.action for a in await stack.audit(ticket)]
    assert actions.index("ringing") < actions.index("menu") < actions.index("operator answered")


async def test_all_operators_busy_a_silent_caller_is_served_before_an_older_complaint(
    make_stack: StackFactory, phone: PhoneFactory, jepara: Site,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", calls=3, answer_after_ms="200",
                                extra_args=["-d", "8000"])
    stack = await make_stack(with_menu(jepara, silent_after_s=3.0), operators=[("op1", contact)],
                             clock=at_ten())
    assert stack.app is not None
    changes, silences = stack.app.live.listen(), stack.app.live.listen()
    busy = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"},
                                          keys={"caller": "081255550000"}))
    await next_change(changes, "bridged", timeout=30)
    complaint = asyncio.create_task(stack.call(
        "caller_key.xml", template={"digit": "9", "key_after_ms": "500"},
        keys={"caller": "081255550001"}, timeout_s=120))
    older = (await next_change(changes, "queued", timeout=20))["call"]
    silent = asyncio.create_task(stack.call("caller_silent.xml", keys={"caller": SILENT},
                                            timeout_s=120))
    younger = (await next_change(changes, "queued", timeout=20))["call"]
    marked = await next_change(silences, "silent", timeout=20, call=younger)
    assert marked["priority"] == stack.site.menu.silent_priority
    # Marked while the operator still talks to the first caller: the silent caller goes first.
    assert stack.app.queue.position(younger) == 0 and stack.app.queue.position(older) == 1
    served = await next_change(changes, "bridged", timeout=30)
    assert served["call"] == younger
    await stack.app.ari.delete("channels", younger)
    results = await asyncio.gather(busy, complaint, silent)
    assert all(r.ok for r in results), [r.errors for r in results]
    await stack.settle()
    by_caller = {t.caller_number: t for t in await stack.tickets()}
    first, second = by_caller[SILENT], by_caller["081255550001"]
    assert first.silent and first.priority == 1 and first.menu_choice == "silent"
    assert first.arrived_at > second.arrived_at
    assert first.operator_answered_at is not None and second.operator_answered_at is not None
    assert first.operator_answered_at < second.operator_answered_at


def prompt_seconds(stack: Stack, *names: str) -> float:
    assert stack.app is not None
    total = 0.0
    for name in names:
        path = Path(stack.app.ctx.sounds_dir) / stack.site.languages[0] / f"{name}.wav"
        with wave.open(str(path)) as w:
            total += w.getnframes() / w.getframerate()
    return total


async def test_speech_without_a_key_is_not_held_for_the_menu_timeout(
    make_stack: StackFactory, jepara: Site,
) -> None:
    # op1 is on shift but not logged in: nobody is free, the menu's answer orders the queue.
    stack = await make_stack(with_menu(jepara, timeout_s=30.0), operators=[("op1", None)],
                             clock=at_ten())
    assert stack.app is not None
    changes = stack.app.live.listen()
    caller = asyncio.create_task(stack.call("caller_talks.xml", keys={"caller": "081266660000"}))
    arrived = await next_change(changes, "arrived", timeout=20)
    prompt = prompt_seconds(stack, stack.site.prompts["greeting"], stack.site.prompts["menu"])
    # Held for the 30 s timeout, the answer would come 30 s after the prompt; it comes with the
    # prompt's end (a bound with 20 s to spare either way, not a measurement).
    chosen = await next_change(changes, "menu", timeout=prompt + 10, call=arrived["call"])
    assert (chosen["choice"], chosen["silent"]) == ("talked", False)
    assert chosen["priority"] == stack.site.menu.uncategorised_priority
    await stack.app.ari.delete("channels", arrived["call"])
    assert (await caller).ok
    await stack.settle()
    [ticket] = await stack.tickets()
    assert ticket.menu_choice == "talked" and not ticket.silent
    assert ticket.outcome == "abandoned"  # spoke: a caller to call back, but not a silent one


async def test_pressing_0_during_the_greeting_switches_to_english_and_the_ticket_says_so(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", answer_after_ms="8000",
                               extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=at_ten())
    assert stack.app is not None
    changes = stack.app.live.listen()
    async with observing(stack) as observer:
        caller = asyncio.create_task(stack.call(
            "caller_two_keys.xml", keys={"caller": "081277771111"},
            template={"digit": "0", "key_after_ms": "400", "second_digit": "2",
                      "second_after_ms": "1500"}))
        arrived = await next_change(changes, "arrived", timeout=20)
        caller_id = arrived["call"]
        english = await next_change(changes, "language", timeout=20, call=caller_id)
        assert english["language"] == "en"
        chosen = await next_change(changes, "menu", timeout=20, call=caller_id)
        assert (chosen["category"], chosen["language"]) == ("fire", "en")
        menu_uri = f"/en/{stack.site.prompts['menu']}"
        english_menu = await observer.next(
            lambda e: e["type"] == "PlaybackStarted" and on_caller(caller_id)(e)
            and e["playback"]["media_uri"].endswith(menu_uri), 20)
        # Before it, only the site's language (the greeting; its start event may be missed
        # when the 0 stops it at once, so only what was heard is checked).
        before = observer.seen[:observer.seen.index(english_menu)]
        assert all("/id/" in e["playback"]["media_uri"] for e in before
                   if e["type"] == "PlaybackStarted" and on_caller(caller_id)(e))
    assert (await caller).ok
    assert (await uas.wait(30)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert (ticket.language, ticket.category, ticket.operator) == ("en", "fire", "op1")


async def test_silent_pidf_caller_unanswered_three_times_is_not_warned_and_is_called_back_first(
    make_stack: StackFactory, batola: Site,
) -> None:
    # Batola (24 h), its only operator on shift but not logged in: nobody answers. Real time:
    # the screening AGI counts the last 24 h of the real clock.
    stack = await make_stack(batola, operators=[("op1", None)])
    await stack.start_agi_server()  # screening as in production: `siaga112 agi serve`
    assert stack.app is not None
    pidf = {"pidf": PIDF, "tac_eci": "0A1B2C3D4E5F6"}
    for _ in range(3):
        result = await stack.call("caller_pidf_hangup.xml", keys={"caller": SILENT},
                                  template=pidf, extra_args=["-d", "2500"])
        assert result.ok, result.errors
        await stack.settle()
    # A caller who pressed a key and gave up, after them: newer, but not silent.
    keyed = await stack.call("caller_key_hangup.xml", keys={"caller": "081288889999"},
                             template={"digit": "3", "key_after_ms": "500"},
                             extra_args=["-d", "1000"])
    assert keyed.ok, keyed.errors
    await stack.settle()
    silent = [t for t in await stack.tickets() if t.caller_number == SILENT]
    assert [t.outcome for t in silent] == ["silent-unreached"] * 3
    assert all(t.silent and t.callback_needed and t.status == "abandoned" for t in silent)
    for t in silent:  # each with the carrier's location
        assert [loc.source for loc in await stack.locations(t)] == ["pidf", "cell"]
    # The fourth call: screening counts no silent-unreached call, so no warning.
    fourth = await stack.call("caller_pidf_hangup.xml", keys={"caller": SILENT}, template=pidf,
                              extra_args=["-d", "2500"])
    assert fourth.ok, fourth.errors
    await stack.settle()
    last = (await stack.tickets())[-1]
    assert last.caller_number == SILENT and last.policy == "screen: clean"
    assert "warned" not in [a.action for a in await stack.audit(last)]
    async with stack.app.sessions() as s:
        callbacks = await admin.list_tickets(s, stack.site.code, callback=True)
    assert [r["caller_number"] for r in callbacks] == [SILENT] * 4 + ["081288889999"]
    assert [r["outcome"] for r in callbacks[:4]] == ["silent-unreached"] * 4


async def test_a_centre_that_keeps_the_old_order_plays_the_menu_before_ringing(
    make_stack: StackFactory, phone: PhoneFactory, jepara: Site,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", answer_after_ms="200",
                               extra_args=["-d", "1000"])
    menu_first = dataclasses.replace(jepara, queue=dataclasses.replace(
        jepara.queue, offer_during_menu=False))
    stack = await make_stack(menu_first, operators=[("op1", contact)], clock=at_ten())
    result = await stack.call("caller_key.xml", template={"digit": "2"})
    assert result.ok, result.errors
    assert (await uas.wait(20)).successful == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert (ticket.category, ticket.operator) == ("fire", "op1")
    actions = [a.action for a in await stack.audit(ticket)]
    assert actions.index("menu") < actions.index("queued") < actions.index("ringing")
