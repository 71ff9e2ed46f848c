"""A call found in our Stasis app after the app restarted: carry on, or get it to a human.

What Asterisk still holds tells us where the call was: a bridge ``call-<id>`` with an operator
in it (talking: keep it so), an operator leg ``op-<id>-...`` ringing (wait for it), or neither
(in the menu or queued: straight to the queue, urgent, since the caller has already waited).
The ticket writes are keyed by channel id, so nothing is created twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ari_app.ari import AriError, BadRequest, NotFound
from ari_app.calls import connect
from ari_app.calls.call import Call, CallerHungUp
from ari_app.calls.context import CallContext

if TYPE_CHECKING:
    from ari_app.calls.flow import Outcome

log = logging.getLogger(__name__)

ADOPTED_PRIORITY = 2


async def _get(ctx: CallContext, *path: str) -> Any:
    try:
        return await ctx.ari.get(*path)
    except NotFound:
        return None


async def _hangup(ctx: CallContext, channel_id: str) -> None:
    try:
        await ctx.ari.delete("channels", channel_id)
    except AriError:
        pass


async def resume(ctx: CallContext, call: Call, outcome: Outcome) -> None:
    from ari_app.calls.flow import to_operator

    now = ctx.clock.now()
    # Keys pressed while no app listened are lost: a caller whose choice never reached us is
    # marked "uncategorised (restart)" for the operator to classify. Applied after every write
    # the previous app journaled, so a choice it did record stands.
    ctx.tickets.uncategorised_after_restart(call.id, now)
    bridge = await _get(ctx, "bridges", f"call-{call.id}")
    others = [c for c in (bridge or {}).get("channels", []) if c != call.id]
    if bridge and others:
        op_channel = others[0]
        channel = await _get(ctx, "channels", op_channel)
        operator = connect.operator_name(str((channel or {}).get("name", "")))
        if call.id not in bridge.get("channels", []):
            # The dead app had put the operator in the call's bridge but not yet the caller
            # (still in the holding bridge): join them now, or they would never talk.
            log.warning("%s adopted with operator=%s alone in the call's bridge: joining them",
                        call.tag, operator)
            await connect.unhold(ctx, call)
            await call.end_ringback()
            try:
                await ctx.ari.post("bridges", bridge["id"], "addChannel", channel=call.id)
            except (NotFound, BadRequest) as exc:
                await _hangup(ctx, op_channel)
                raise CallerHungUp(call.id) from exc
        log.warning("%s adopted while bridged to operator=%s: the conversation goes on",
                    call.tag, operator)
        ctx.registry.attach(op_channel, call)
        ctx.queue.claim(operator, call.id)
        outcome.operator, outcome.operator_answered = operator, True
        # The previous app may have died between the bridge and writing it down: the answer
        # time is then the time we found them talking (an upper bound), and the audit says so.
        ctx.tickets.change(call.id, "adopted", now, actor="system", operator=operator,
                           operator_answered_at=now, status="in_call",
                           only_if_unset=("operator", "operator_answered_at"),
                           audit={"state": "bridged", "if unset, operator_answered_at":
                                  "when found bridged at adoption (an upper bound)"})
        link = connect.Connected(operator, op_channel, bridge["id"])
        ctx.live.publish(call.id, "bridged", operator=operator, operator_channel=op_channel,
                         bridge=link.bridge_id)
        ctx.links[call.id] = link
        try:
            await connect.talk(ctx, call, link)
            outcome.reason = f"{link.ended_by} hangup"
        finally:
            ctx.links.pop(call.id, None)
            ctx.queue.release(operator, talked=True)
        return
    if bridge:  # the operator left while we were away
        try:
            await ctx.ari.delete("bridges", bridge["id"])
        except AriError:
            pass
    channels = await _get(ctx, "channels") or []
    ringing = [c for c in channels if str(c.get("id", "")).startswith(f"op-{call.id}-")]
    for leg in ringing:
        operator = connect.operator_name(str(leg.get("name", "")))
        log.warning("%s adopted while operator=%s rings: waiting for the answer", call.tag,
                    operator)
        ctx.registry.attach(leg["id"], call)
        ctx.queue.claim(operator, call.id)
        ctx.tickets.change(call.id, "adopted", now, audit={"state": "ringing",
                                                           "operator": operator})
        try:
            answered = await connect.wait_answer(ctx, call, leg["id"],
                                                 ctx.site.queue.ring_timeout_s + 5)
            joined = await connect.bridge(ctx, call, operator, leg["id"]) if answered else None
        except BaseException:
            ctx.queue.release(operator, talked=False)
            raise
        if joined is not None:
            from ari_app.calls.flow import talk_with

            await talk_with(ctx, call, operator, joined, outcome)
            return
        ctx.queue.release(operator, talked=False)
    log.warning("%s adopted (menu or queue): to an operator at priority %d", call.tag,
                ADOPTED_PRIORITY)
    ctx.tickets.change(call.id, "adopted", now, audit={"state": "waiting"})
    await to_operator(ctx, call, ADOPTED_PRIORITY, outcome, hold_first=True)
