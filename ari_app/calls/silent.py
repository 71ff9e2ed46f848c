"""The caller who cannot speak: never hung up on, located, and sent to a human first.

Also reads what the carrier told us about where the caller is (PIDF-LO via res_geolocation,
P-Access-Network-Info). Bad or missing data never disturbs the call.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CarrierInfo:
    """What Asterisk knows of the caller's location from the INVITE (empty: not sent)."""

    location_info: str = ""  # GEOLOC_PROFILE(location_info): the PIDF-LO, parsed by Asterisk
    geolocation: str = ""    # the Geolocation header
    format: str = ""         # GEOLOC_PROFILE(format)
    method: str = ""         # GEOLOC_PROFILE(method)
    pani: str = ""           # the P-Access-Network-Info header


CARRIER_ARG_TAG = "loc1"
CARRIER_ARG = 7  # Stasis() argument (after the app name) where 20-emergency.conf puts them


def carrier_from_args(args: list[str]) -> CarrierInfo | None:
    """The carrier values 20-emergency.conf passed as one Stasis() argument: "loc1.", then
    base64 of "=" + value, joined by ".": the Geolocation and P-Access-Network-Info headers,
    then GEOLOC_PROFILE location_info, format and method when there was a Geolocation header.
    None if absent or unreadable (the caller then asks Asterisk over ARI)."""
    arg = args[CARRIER_ARG] if len(args) > CARRIER_ARG else ""
    tag, _, rest = arg.partition(".")
    if tag != CARRIER_ARG_TAG:
        return None
    parts = rest.split(".")
    if len(parts) not in (2, 5):
        return None
    values = []
    for part in parts:
        try:
            value = base64.b64decode(part, validate=True).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return None
        if not value.startswith("="):
            return None
        values.append(value[1:])
    geolocation, pani, *profile = values
    info, fmt, method = profile or ("", "", "")
    return CarrierInfo(info, geolocation, fmt, method, pani)


async def carrier_from_channel(call: Call) -> CarrierInfo:
    """The same values asked of Asterisk over ARI: for a call that did not bring them (one that
    entered Stasis some other way, or a dialplan from before they were passed)."""
    info = await call.get_var("GEOLOC_PROFILE(location_info)") or ""
    header = await call.get_var("PJSIP_HEADER(read,Geolocation)") or ""
    fmt = method = ""
    if info:
        fmt = await call.get_var("GEOLOC_PROFILE(format)") or ""
        method = await call.get_var("GEOLOC_PROFILE(method)") or ""
    pani = await call.get_var("PJSIP_HEADER(read,P-Access-Network-Info)") or ""
    return CarrierInfo(info, header, fmt, method, pani)


async def carrier_location(ctx: CallContext, call: Call) -> None:
    """Read the carrier's location for this call (runs beside the call, never in its way)."""
    now = ctx.clock.now()
    try:
        carrier = carrier_from_args(call.args)
        if carrier is None:
            log.debug("%s carrier location not in the Stasis arguments: asking Asterisk",
                      call.tag)
            carrier = await carrier_from_channel(call)
        info, header = carrier.location_info, carrier.geolocation
        if info:
            try:
                location = parse_geoloc_profile_vars(info, carrier.format, carrier.method)
                ctx.locations.received(location, now, call.caller, call_id=call.id)
            except LocationParseError as exc:
                ctx.locations.rejected("pidf", call.id, exc.reason,
                                       f"{info} | {carrier.format} | {carrier.method}", now)
        elif header:
            ctx.locations.rejected("pidf", call.id, "Geolocation header present but Asterisk "
                                   "found no usable PIDF-LO location in the INVITE", header, now)
        pani = carrier.pani
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
