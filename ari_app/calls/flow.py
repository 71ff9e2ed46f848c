"""The story of one call, top to bottom."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ari_app.calls.call import Call, CallerHungUp
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.tickets.calls import CallStore

log = logging.getLogger(__name__)


@dataclass
class CallContext:
    site: Site
    sounds_dir: Path
    clock: Clock
    calls: CallStore

    def sound(self, name: str, language: str | None = None) -> str:
        lang = language or self.site.languages[0]
        return f"sound:{self.sounds_dir / lang / name}"


async def handle(ctx: CallContext, call: Call) -> None:
    """Record the call first (a caller who hangs up at once still leaves a row), then serve it."""
    clock = ctx.clock
    dialled = call.args[1] if len(call.args) > 1 else ""
    ctx.calls.opened(call.id, call.caller, dialled, clock.now())
    log.info("%s from=%s dialled=%s arrived", call.tag, call.caller, dialled)
    reason = "completed"
    try:
        await call.answer()
        ctx.calls.answered(call.id, clock.now())
        greeting = ctx.sound(ctx.site.prompts.get("greeting", "greeting"))
        ctx.calls.event(call.id, "playback_started", clock.now(), greeting)
        finished = await call.play_and_wait(greeting, timeout=30)
        ctx.calls.event(call.id, "playback_finished" if finished else "playback_timeout",
                        clock.now(), greeting)
        await call.hangup()
        log.info("%s greeting played, hung up", call.tag)
    except CallerHungUp:
        reason = "caller hangup"
        log.info("%s caller hung up", call.tag)
    finally:
        ctx.calls.closed(call.id, clock.now(), reason)
