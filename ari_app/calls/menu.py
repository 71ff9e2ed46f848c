"""The IVR menu: barge-in on DTMF, a timeout, one repeat on an invalid key, then a human.

It classifies; it never holds a caller from a free operator (they are rung while it plays).
0 switches the menu and every later prompt to English (when 0 is not a menu choice).
A caller who has spoken is not held for the timeout once the prompt has ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ari_app.calls.call import Call
from ari_app.calls.context import CallContext
from ari_app.config import MenuOption

log = logging.getLogger(__name__)


@dataclass
class Choice:
    option: MenuOption | None
    silent: bool = False
    talked: bool = False
    invalid_keys: int = 0
    digits: str = ""

    @property
    def label(self) -> str:
        if self.option:
            return self.option.digit
        if self.silent:
            return "silent"
        return "invalid" if self.invalid_keys else "talked"


ENGLISH = "0"


async def listen(call: Call, media: list[str], after_s: float, *,
                 talk_ends: bool = False) -> tuple[str | None, bool]:
    """Play ``media`` and listen; the first key stops the prompt. Returns (digit, talked).

    ``talk_ends``: speech means an answer: once the prompt has ended, the caller who spoke
    (before or after its end) is not kept waiting for a key.
    """
    playback_id = await call.play(",".join(media))
    talked = False
    playing = True
    loop_time = call.loop_time
    deadline: float | None = None
    while True:
        remaining = None if deadline is None else max(0.0, deadline - loop_time())
        event = await call.next_event(
            lambda e: e.get("type") in ("ChannelDtmfReceived", "ChannelTalkingStarted",
                                        "PlaybackFinished")
            and (e.get("channel", {}).get("id") == call.id
                 or e.get("playback", {}).get("id") == playback_id),
            remaining if playing is False else None)
        if event is None:
            return None, talked
        kind = event["type"]
        if kind == "ChannelDtmfReceived":
            if playing:
                await call.stop_playback(playback_id)
            return str(event.get("digit", "")), talked
        if kind == "ChannelTalkingStarted":
            talked = True
            if talk_ends and not playing:
                return None, True
        elif kind == "PlaybackFinished":
            playing = False
            if talk_ends and talked:
                return None, True
            deadline = loop_time() + after_s


async def ask(ctx: CallContext, call: Call, so_far: Choice | None = None) -> Choice:
    """The caller's answer. ``so_far`` is kept up to date for a menu cut short (the operator
    answered first): what the caller did until then (invalid keys, speech)."""
    site = ctx.site
    menu = site.menu
    media = [ctx.sound(site.prompts["greeting"]), ctx.sound(site.prompts["menu"])]
    seen = so_far if so_far is not None else Choice(None)
    while True:
        digit, talked = await listen(call, media, menu.timeout_s, talk_ends=True)
        seen.talked = seen.talked or talked
        if digit is None:
            if seen.talked:
                log.info("%s spoke without a key: operator, uncategorised", call.tag)
            else:
                log.info("%s no key and no speech: silent caller", call.tag)
                seen.silent = True
            return seen
        seen.digits += digit
        if digit == ENGLISH and english_offered(ctx, call):
            call.language = "en"
            log.info("%s chose English", call.tag)
            ctx.tickets.change(call.id, "language", ctx.clock.now(), language="en")
            ctx.live.publish(call.id, "language", language="en")
            media = [ctx.sound(site.prompts["menu"], "en")]
            continue
        option = menu.options.get(digit)
        if option is not None:
            log.info("%s chose %s (%s, priority %d)", call.tag, digit, option.category,
                     option.priority)
            seen.option = option
            return seen
        seen.invalid_keys += 1
        log.info("%s invalid key %r (%d)", call.tag, digit, seen.invalid_keys)
        if seen.invalid_keys > menu.invalid_repeats:
            return seen
        media = [ctx.sound(site.prompts["invalid"], call.language),
                 ctx.sound(site.prompts["menu"], call.language)]


def english_offered(ctx: CallContext, call: Call) -> bool:
    """0 means English: the site builds English prompts, 0 is no menu choice, not yet chosen."""
    site = ctx.site
    return ("en" in site.languages and site.languages[0] != "en" and call.language is None
            and ENGLISH not in site.menu.options)
