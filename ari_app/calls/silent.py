"""The caller who cannot speak: never hung up on, located, and sent to a human first.

Also reads what the carrier told us about where the caller is (PIDF-LO via res_geolocation,
P-Access-Network-Info). Bad or missing data never disturbs the call.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ari_app.calls.call import Call
from ari_app.calls.context import CallContext
from ari_app.calls.menu import listen
from ari_app.location.cell import parse_p_access_network_info
from ari_app.location.model import Location, LocationParseError
from ari_app.location.pidf import parse_geoloc_profile_vars
from ari_app.location.service import cell_location

log = logging.getLogger(__name__)

CONFIRM = "55"
LISTEN_S = 6.0  # after the prompt: a frightened caller may need a moment to find the key


async def carrier_location(ctx: CallContext, call: Call) -> None:
    """Read the carrier's location for this call (runs beside the call, never in its way)."""
    now = ctx.clock.now()
    try:
        info = await call.get_var("GEOLOC_PROFILE(location_info)")
        header = await call.get_var("PJSIP_HEADER(read,Geolocation)")
        if info:
            fmt = await call.get_var("GEOLOC_PROFILE(format)") or ""
            method = await call.get_var("GEOLOC_PROFILE(method)") or ""
            try:
                location = parse_geoloc_profile_vars(info, fmt, method)
                ctx.locations.received(location, now, call.caller, call_id=call.id)
            except LocationParseError as exc:
                ctx.locations.rejected("pidf", call.id, exc.reason, f"{info} | {fmt} | {method}",
                                       now)
        elif header:
            ctx.locations.rejected("pidf", call.id, "Geolocation header present but Asterisk "
                                   "found no usable PIDF-LO location in the INVITE", header, now)
        pani = await call.get_var("PJSIP_HEADER(read,P-Access-Network-Info)")
        if pani:
            try:
                cell = parse_p_access_network_info(pani)
            except LocationParseError as exc:
                ctx.locations.rejected("cell", call.id, exc.reason, pani, now)
            else:
                if cell is not None:
                    ctx.locations.received(cell_location(cell), now, call.caller, call_id=call.id)
    except Exception:  # a location bug must never touch the call
        log.exception("%s reading carrier location failed", call.tag)


async def procedure(ctx: CallContext, call: Call) -> bool:
    """Prompt "press 5 twice if you cannot speak"; True if the caller confirmed with 55.

    Runs while the caller waits (the operators are already being rung), never before.
    """
    prompt = ctx.sound(ctx.site.prompts.get("silent", "silent_press_5"), call.language)
    first, _ = await listen(call, [prompt], LISTEN_S)
    digits = first or ""
    if first is not None:
        second, _ = await _next_digit(call, LISTEN_S)
        digits += second or ""
    confirmed = digits == CONFIRM
    log.info("%s silent caller%s", call.tag, " confirmed with 55" if confirmed else "")
    return confirmed


async def _next_digit(call: Call, timeout: float) -> tuple[str | None, bool]:
    event = await call.next_event(lambda e: e.get("type") == "ChannelDtmfReceived"
                                  and e.get("channel", {}).get("id") == call.id, timeout)
    return (str(event.get("digit", "")) if event else None), False


def location_note(best: Location) -> str:
    return f"location {best.source}: {best.latitude},{best.longitude} ±{best.radius_m} m"


def mark(ctx: CallContext, call: Call, why: str) -> None:
    """No key and no speech so far: flag the caller silent, at the silent priority, on the
    ticket, in the queue and on the operator's card (with the best location known)."""
    if call.marked_silent:
        return
    call.marked_silent = True
    priority = ctx.site.menu.silent_priority
    fields: dict[str, Any] = {"silent": True, "priority": priority}
    best = ctx.locations.best(call.id)
    if best is not None:
        fields["notes"] = location_note(best)
    ctx.tickets.change(call.id, "silent", ctx.clock.now(), audit={"why": why},
                       only_if_unset=("menu_choice",), menu_choice="silent", **fields)
    ctx.queue.reprioritise(call.id, priority)
    ctx.live.publish(call.id, "silent", priority=priority, why=why)
    log.info("%s silent caller (%s): priority %d", call.tag, why, priority)


async def watch(ctx: CallContext, call: Call) -> None:
    """From the answer: a caller who has neither pressed nor spoken after ``silent_after_s`` is a
    silent caller now, whether the menu is still playing, the caller waits, or an operator
    already listens. Bounds the time a silent caller waits at the uncategorised priority."""
    await asyncio.sleep(ctx.site.menu.silent_after_s)  # a deadline from the answer, not an event
    if not call.keys and not call.talked and not call.gone:
        mark(ctx, call, f"no key and no speech in {ctx.site.menu.silent_after_s:g} s")


def at_end(ctx: CallContext, call: Call) -> None:
    """The call ended before the watch ran: a caller who never pressed nor spoke was silent."""
    if not call.keys and not call.talked:
        mark(ctx, call, "no key and no speech in the whole call")
