"""From the holding bridge to an operator: wait your turn, ring the operator, bridge, record."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

from ari_app.ari import (
    AriClient,
    AriConnectionError,
    AriError,
    BadRequest,
    NotFound,
    NotInStasis,
    Unprocessable,
)
from ari_app.calls.call import Call, CallerHungUp
from ari_app.calls.context import CallContext
from ari_app.routing.queue import Waiting

log = logging.getLogger(__name__)


@dataclass
class Connected:
    operator: str
    operator_channel: str
    bridge_id: str
    ended_by: str = ""  # "caller", "operator" or "agency"
    agencies: set[str] = field(default_factory=set)  # agency legs conferenced in
    answered: set[str] = field(default_factory=set)  # agency legs now in the bridge
    numbers: dict[str, str] = field(default_factory=dict)  # agency leg -> the number dialled
    # Hand-over: the operator has left; caller and agency stay connected until one hangs up.
    handed_over: bool = False
    hand_over_on_answer: bool = False  # blind transfer: the operator leaves when the agency answers
    hand_over_by: str = ""             # who asked for the blind transfer (console user)
    hand_over_via: str = ""            # the node whose console they asked on, if not this one
    operator_released: bool = False    # the roster already has the operator back (after hand-over)


async def hold(ctx: CallContext, call: Call) -> None:
    """Put the caller in the site's holding bridge (music on hold for everyone waiting)."""
    await call.end_ringback()  # the holding bridge's music, not the ringback under it
    call.on_hold = True  # before the request: an unhold that races it must still undo it
    try:
        await ctx.ari.post("bridges", ctx.holding_bridge, "addChannel", channel=call.id,
                           role="participant")
    except NotFound as exc:
        raise CallerHungUp(call.id) from exc
    except Unprocessable:
        log.info("%s already in the holding bridge", call.tag)  # adopted after a restart
    except AriError as exc:  # no holding bridge: the caller still waits, with channel MOH
        log.warning("%s holding bridge unavailable (%s): channel music instead", call.tag, exc)
        try:
            await ctx.ari.post("channels", call.id, "moh")
        except NotFound as nf:
            raise CallerHungUp(call.id) from nf


async def unhold(ctx: CallContext, call: Call) -> None:
    """Out of the holding bridge (or channel music); no request for a caller never put there
    (an operator who answered during the menu: most calls), two saved ARI round trips."""
    if call.on_hold is False:
        return
    call.on_hold = False
    try:
        await ctx.ari.post("bridges", ctx.holding_bridge, "removeChannel", channel=call.id)
    except AriError:
        try:
            await ctx.ari.delete("channels", call.id, "moh")
        except AriError:
            pass


async def next_operator(ctx: CallContext, call: Call, entry: Waiting) -> str:
    """Wait until an operator is claimed for this caller (or the caller hangs up)."""
    offer = ctx.queue.next_offer(entry)
    while not offer.done():
        if call.gone:
            raise CallerHungUp(call.id)
        hangup: asyncio.Future[Any] = asyncio.ensure_future(call.hung_up.wait())
        try:
            await asyncio.wait([cast("asyncio.Future[Any]", offer), hangup],
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            hangup.cancel()
    return ctx.queue.accept(entry)


async def reminders(ctx: CallContext, call: Call) -> None:
    """In the holding bridge: "please stay on the line" every period, until taken out."""
    every = ctx.site.queue.reminder_every_s
    while True:
        await asyncio.sleep(every)  # a period of music between reminders, not an event wait
        if call.gone:
            raise CallerHungUp(call.id)
        try:
            await call.play(ctx.sound(ctx.site.prompts["hold"], call.language))
        except CallerHungUp:
            raise
        except AriError as exc:
            log.info("%s reminder not played: %s", call.tag, exc)


def operator_leg_id(caller_id: str) -> str:
    """Operator legs carry their caller's id, so a restarted app can pair them again."""
    return f"op-{caller_id}-{uuid.uuid4().hex[:8]}"


def operator_name(channel_name: str) -> str:
    """``PJSIP/op1-0000000a`` → ``op1``."""
    return channel_name.split("/", 1)[-1].rsplit("-", 1)[0]


async def wait_answer(ctx: CallContext, call: Call, channel_id: str, timeout: float, *,
                      source: asyncio.Queue[dict[str, Any]] | None = None) -> bool:
    """Wait for an operator leg to answer (enter Stasis); hang it up if it does not in time."""
    try:
        event = await call.next_event(
            lambda e: e.get("channel", {}).get("id") == channel_id
            and e.get("type") in ("StasisStart", "ChannelDestroyed"), timeout, source=source)
    except CallerHungUp:
        await _hangup(ctx, channel_id)
        raise
    if event is not None and event["type"] == "StasisStart":
        return True
    if event is None:
        await _hangup(ctx, channel_id)
    return False


async def ring(ctx: CallContext, call: Call, operator: str, *,
               source: asyncio.Queue[dict[str, Any]] | None = None) -> str | None:
    """Ring one operator; the operator's channel id if answered, None if not.

    ``source``: the events to watch (an ``aside()`` queue while the menu listens to the caller).
    """
    channel_id = operator_leg_id(call.id)
    ctx.registry.attach(channel_id, call)
    timeout = int(ctx.site.queue.ring_timeout_s)
    log.info("%s ringing operator=%s for %ds", call.tag, operator, timeout)
    ctx.live.publish(call.id, "ringing", operator=operator)
    try:
        await ctx.ari.post(
            "channels", endpoint=f"PJSIP/{operator}", app=ctx.site.stasis_app,
            appArgs=f"operator,{call.id}", channelId=channel_id, timeout=timeout,
            callerId=f'"112 {call.caller}" <{call.caller or "112"}>')
    except AriError as exc:
        log.warning("%s operator=%s could not be rung: %s", call.tag, operator, exc)
        return None
    if await wait_answer(ctx, call, channel_id, timeout + 10, source=source):
        return channel_id
    log.info("%s operator=%s did not answer", call.tag, operator)
    return None


async def _hangup(ctx: CallContext, channel_id: str) -> None:
    try:
        await ctx.ari.delete("channels", channel_id)
    except AriError:
        pass


async def bridge(ctx: CallContext, call: Call, operator: str, op_channel: str) -> Connected | None:
    """Caller and operator in one mixing bridge; None if the operator left before it was made."""
    bridge_id = f"call-{call.id}"
    try:
        await make_bridge(ctx.ari, call, bridge_id)
    except CallerHungUp:  # gone while Asterisk was slow to make the bridge
        await _hangup(ctx, op_channel)
        raise
    with contextlib.suppress(CallerHungUp):  # a caller gone: the addChannel below finds it
        await call.end_ringback()
    if call.on_hold is False:
        # Most calls (the operator answered during the menu): both legs in one request. ARI
        # checks every channel before it adds any, so a refusal means neither is in the
        # bridge, and the steps below, one leg at a time, find out which one left.
        try:
            await ctx.ari.post("bridges", bridge_id, "addChannel",
                               channel=f"{op_channel},{call.id}")
            return Connected(operator, op_channel, bridge_id)
        except (NotFound, BadRequest, Unprocessable, NotInStasis) as exc:
            log.info("%s operator=%s: both legs not bridged at once (%s); one at a time",
                     call.tag, operator, exc)
    try:
        await ctx.ari.post("bridges", bridge_id, "addChannel", channel=op_channel)
    except (NotFound, BadRequest):
        log.warning("%s operator=%s hung up before the bridge", call.tag, operator)
        await _destroy(ctx, bridge_id)
        return None
    await unhold(ctx, call)
    try:
        await ctx.ari.post("bridges", bridge_id, "addChannel", channel=call.id)
    except (NotFound, BadRequest) as exc:
        await _hangup(ctx, op_channel)
        await _destroy(ctx, bridge_id)
        raise CallerHungUp(call.id) from exc
    return Connected(operator, op_channel, bridge_id)


#: Requests for the call's bridge when Asterisk is too busy to reply in time (see make_bridge).
BRIDGE_TRIES = 3


async def make_bridge(ari: AriClient, call: Call, bridge_id: str) -> None:
    """Create the call's bridge, by our own id.

    If Asterisk is too busy to reply within the request's time-out, the request may have made
    the bridge all the same, and asking again would be refused once it has (409 on Asterisk 22,
    500 on 16). So the next try looks first, and creates the bridge only if it is not there. A
    time-out is not a bug in the call: before, it sent the caller, operator already on the line,
    to the dialplan fallback.

    The slow request can still land between that look and the new creation, which Asterisk
    then refuses: a refusal after a time-out is checked the same way, and the bridge the slow
    request made is the call's.
    """
    for attempt in range(1, BRIDGE_TRIES + 1):
        try:
            if attempt > 1 and await _bridge_exists(ari, bridge_id):
                return
            # dtmf_events: the operator's keypad must reach the app (agency conference codes).
            await ari.post("bridges", bridge_id, type="mixing,dtmf_events", name=f"112 {call.id}")
            return
        except AriConnectionError as exc:
            if call.gone:
                raise CallerHungUp(call.id) from exc
            if not exc.timed_out or attempt == BRIDGE_TRIES:
                raise
            log.warning("%s bridge %s: ARI timed out (try %d of %d): Asterisk is busy; looking "
                        "again", call.tag, bridge_id, attempt, BRIDGE_TRIES)
        except AriError as exc:
            if attempt == 1 or isinstance(exc, NotFound) or not await _bridge_exists(ari, bridge_id):
                raise
            log.info("%s bridge %s: made by the request that timed out (the new one was refused "
                     "with %s)", call.tag, bridge_id, exc.status)
            return


async def _bridge_exists(ari: AriClient, bridge_id: str) -> bool:
    try:
        await ari.get("bridges", bridge_id)
    except NotFound:
        return False
    return True


async def _destroy(ctx: CallContext, bridge_id: str) -> None:
    try:
        await ctx.ari.delete("bridges", bridge_id)
    except AriError:
        pass


async def record(ctx: CallContext, call: Call, link: Connected) -> str | None:
    """Record the conversation; returns the file path, or None if recording failed."""
    name = f"siaga112/{ctx.site.code}/{call.id}"
    try:
        await ctx.ari.post("bridges", link.bridge_id, "record", name=name, format="wav",
                           ifExists="overwrite")
    except AriError as exc:
        log.error("%s recording failed: %s", call.tag, exc)
        return None
    return str(ctx.recordings_dir / f"{name}.wav")


FEATURE_START, FEATURE_END = "*", "#"
HAND_OVER = "0"  # *0# on the operator's keypad: leave the caller with the agency conferenced in


async def talk(ctx: CallContext, call: Call, link: Connected) -> None:
    """Until either side hangs up; then end the other side and the bridge.

    The operator can add an agency to the call: ``*`` + the agency's number + ``#`` on the
    phone's keypad (e.g. ``*113#`` for the fire brigade) dials it through the carrier trunk
    and conferences it in. Only the site's other emergency numbers are accepted.
    """
    keys = ""
    agencies = link.agencies  # also added from the console (add_agency)
    op = link.operator_channel

    def ours(e: dict[str, Any]) -> bool:
        cid = e.get("channel", {}).get("id")
        return cid == op or cid in agencies

    try:
        while True:
            event = await call.next_event(ours)
            assert event is not None  # no timeout: only a matching event or a hangup ends this
            kind, cid = event.get("type"), event.get("channel", {}).get("id")
            if cid == op and kind in ("ChannelHangupRequest", "StasisEnd", "ChannelDestroyed"):
                if link.handed_over:
                    continue  # the operator leaving was the hand-over: caller and agency go on
                break
            if cid == op and kind == "ChannelDtmfReceived":
                keys = (keys + str(event.get("digit", "")))[-24:]
                if keys.endswith(FEATURE_END) and FEATURE_START in keys:
                    number = keys[keys.rindex(FEATURE_START) + 1:-1]
                    keys = ""
                    if number == HAND_OVER:
                        await hand_over(ctx, call, link, link.operator)
                    else:
                        await add_agency(ctx, call, link, number)
            elif cid in agencies and kind == "StasisStart":
                try:
                    await ctx.ari.post("bridges", link.bridge_id, "addChannel", channel=cid)
                    link.answered.add(cid)
                    ctx.live.publish(call.id, "agency", number=link.numbers.get(cid, "?"),
                                     joined=True)
                except AriError as exc:
                    log.warning("%s agency leg %s not bridged: %s", call.tag, cid, exc)
                if link.hand_over_on_answer and link.answered:
                    await hand_over(ctx, call, link, link.hand_over_by or link.operator,
                                    link.hand_over_via)
            elif cid in agencies and kind in ("StasisEnd", "ChannelDestroyed"):
                link.answered.discard(cid)
                if link.handed_over and not link.answered:
                    link.ended_by = "agency"
                    break
        if not link.ended_by:
            link.ended_by = "operator"
        await call.hangup()
    except CallerHungUp:
        link.ended_by = "caller"
        await _hangup(ctx, op)
    finally:
        for leg in agencies:
            await _hangup(ctx, leg)
        await _destroy(ctx, link.bridge_id)


async def hand_over(ctx: CallContext, call: Call, link: Connected, actor: str,
                    via: str = "") -> bool:
    """Warm transfer: the operator leaves, the caller and the answered agency stay connected.

    The recording goes on (MixMonitor is on the caller's channel). The operator is free for the
    next call at once; the ticket records who handed over to which agency, and when.
    """
    if link.handed_over:
        return True
    if not link.answered:
        log.warning("%s hand-over asked with no agency on the line", call.tag)
        return False
    link.handed_over = True
    numbers = sorted({link.numbers.get(leg, "?") for leg in link.answered})
    now = ctx.clock.now()
    log.info("%s operator=%s hands the caller over to %s", call.tag, link.operator, ",".join(numbers))
    audit: dict[str, object] = {"agencies": numbers, "operator": link.operator}
    if via:
        audit["from node"] = via  # asked on another node's console (cluster.py)
    ctx.tickets.change(call.id, "handed over", now, actor=actor, audit=audit)
    await _hangup(ctx, link.operator_channel)
    ctx.queue.release(link.operator, talked=True)
    link.operator_released = True
    ctx.live.publish(call.id, "handed_over", agencies=numbers, operator=link.operator)
    return True


async def blind_transfer(ctx: CallContext, call: Call, link: Connected, number: str,
                         actor: str = "", via: str = "") -> str | None:
    """Dial the agency and leave the caller with it as soon as it answers (the operator need
    not speak to it); if it never answers, the operator is still on the line."""
    leg = await add_agency(ctx, call, link, number, actor, via)
    if leg is not None:
        link.hand_over_on_answer, link.hand_over_by, link.hand_over_via = True, actor, via
    return leg


async def add_agency(ctx: CallContext, call: Call, link: Connected, number: str,
                     actor: str = "", via: str = "") -> str | None:
    """Dial an agency through the trunk into this call's bridge; the leg's id, or None.
    ``actor`` is who asked (the operator keying *1xx# unless a console user is named), ``via``
    the node whose console they asked on."""
    allowed = set(ctx.site.other_services.values())
    if number not in allowed:
        log.warning("%s operator=%s asked for %r, not an agency number (%s)", call.tag,
                    link.operator, number, ", ".join(sorted(allowed)))
        return None
    leg = f"ag-{call.id}-{uuid.uuid4().hex[:6]}"
    ctx.registry.attach(leg, call)
    try:
        await ctx.ari.post("channels", endpoint=f"PJSIP/{number}@carrier", app=ctx.site.stasis_app,
                           appArgs=f"agency,{call.id}", channelId=leg, timeout=60,
                           callerId=f'"112 {call.caller}" <{call.caller or "112"}>')
    except AriError as exc:
        log.error("%s agency %s could not be dialled: %s", call.tag, number, exc)
        return None
    link.agencies.add(leg)
    link.numbers[leg] = number
    log.info("%s operator=%s adds agency %s", call.tag, link.operator, number)
    detail: dict[str, object] = {"number": number, "channel": leg, "operator": link.operator}
    if via:
        detail["from node"] = via
    ctx.tickets.change(call.id, "agency added", ctx.clock.now(), actor=actor or link.operator,
                       audit=detail)
    ctx.live.publish(call.id, "agency", number=number)
    return leg
