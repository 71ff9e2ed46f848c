"""The IVR menu: barge-in on DTMF, a timeout, one repeat on an invalid key, then a human."""

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


async def listen(call: Call, media: list[str], after_s: float) -> tuple[str | None, bool]:
    """Play ``media`` and listen; the first key stops the prompt. Returns (digit, talked)."""
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
        elif kind == "PlaybackFinished":
            playing = False
            deadline = loop_time() + after_s


async def ask(ctx: CallContext, call: Call) -> Choice:
    site = ctx.site
    menu = site.menu
    media = [ctx.sound(site.prompts["greeting"]), ctx.sound(site.prompts["menu"])]
    invalid = 0
    talked_any = False
    digits = ""
    while True:
        digit, talked = await listen(call, media, menu.timeout_s)
        talked_any = talked_any or talked
        if digit is None:
            if talked_any:
                log.info("%s spoke without a key: operator, uncategorised", call.tag)
                return Choice(None, talked=True, invalid_keys=invalid, digits=digits)
            log.info("%s no key and no speech: silent caller", call.tag)
            return Choice(None, silent=True, invalid_keys=invalid, digits=digits)
        digits += digit
        option = menu.options.get(digit)
        if option is not None:
            log.info("%s chose %s (%s, priority %d)", call.tag, digit, option.category,
                     option.priority)
            return Choice(option, talked=talked_any, invalid_keys=invalid, digits=digits)
        invalid += 1
        log.info("%s invalid key %r (%d)", call.tag, digit, invalid)
        if invalid > menu.invalid_repeats:
            return Choice(None, talked=talked_any, invalid_keys=invalid, digits=digits)
        media = [ctx.sound(site.prompts["invalid"]), ctx.sound(site.prompts["menu"])]
