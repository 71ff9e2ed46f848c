"""The story of one call, top to bottom."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ari_app.ari import AriError
from ari_app.calls import adopt, connect, menu, silent
from ari_app.calls.call import Call, CallerHungUp
from ari_app.calls.context import CallContext

log = logging.getLogger(__name__)


@dataclass
class Screening:
    """What screen_caller (AGI, before Stasis) said about this number."""

    flags: str = ""
    priority: int | None = None
    ms: int | None = None

    @classmethod
    def from_args(cls, args: list[str]) -> Screening:
        flags = args[2] if len(args) > 2 else ""
        priority = int(args[3]) if len(args) > 3 and args[3].isdigit() else None
        ms = int(args[4]) if len(args) > 4 and args[4].lstrip("-").isdigit() else None
        return cls(flags, priority if priority is None or 1 <= priority <= 9 else None, ms)

    @property
    def flagged(self) -> bool:
        return self.flags.startswith("flagged:")


@dataclass
class Outcome:
    """What happened, for the ticket's closing line."""

    reason: str = "caller hangup"
    operator: str | None = None
    operator_answered: bool = False
    forwarded: bool = False
    callback: bool = False
    classified: bool = False
    complaint: bool = False
    answered_at: datetime | None = None
    adopted: bool = False  # taken up after a restart: what the caller did before is unknown
    extra: dict[str, Any] = field(default_factory=dict)


async def handle(ctx: CallContext, call: Call) -> None:
    kind = call.args[0] if call.args else "emergency"
    if kind in ("operator", "agency"):  # a leg whose caller we no longer know (app restarted)
        log.warning("call=%s operator leg without its caller: hanging up", call.id)
        await call.hangup()
        return
    if kind == "adopted":
        await adopted_caller(ctx, call)
        return
    await serve_caller(ctx, call)


async def adopted_caller(ctx: CallContext, call: Call) -> None:
    """After a restart: the ticket exists (or is made once), the call carries on."""
    now = ctx.clock.now()
    ctx.calls.opened(call.id, call.caller, "", now)
    key = ctx.locations.call_arrived(call.id, call.caller, now)
    ctx.tickets.open(call.id, call.caller, now, caller_key=key,
                     on_reference=lambda ref: setattr(call, "ticket_ref", ref))
    outcome = Outcome(answered_at=now, adopted=True)
    try:
        stopped = await call.stop_earlier_prompts()
        if stopped:
            log.info("%s stopped %d prompt(s) the previous app had started", call.tag, stopped)
            ctx.tickets.change(call.id, "prompts stopped", now, audit={"stopped": stopped})
        if not call.up_at_start:
            # Killed between StasisStart and its answer: the caller still hears ringback, and an
            # unanswered channel bridged to an operator would be declined when either hangs up.
            outcome.answered_at = await answer(ctx, call)
            log.info("%s answered on adoption", call.tag)
        await adopt.resume(ctx, call, outcome)
    except CallerHungUp:
        log.info("%s caller hung up", call.tag)
    finally:
        bridged_unwatched(ctx, call, outcome)
        _close(ctx, call, outcome)
        ctx.locations.call_ended(call.id, call.caller)


def bridged_unwatched(ctx: CallContext, call: Call, outcome: Outcome) -> None:
    """An adopted caller we never saw talking may still have talked: bridged to an operator by
    the app that died, and gone before this one found them together (an operator alone in the
    call's bridge looks the same as one the dead app had not yet joined to the caller).
    Asterisk's own record (CEL) says which; the ticket follows it, and the audit says so."""
    if outcome.operator_answered or ctx.cel is None:
        return
    story = ctx.cel.story(call.id)
    if story is None or story.bridged_at is None or story.operator is None:
        return
    operator = story.operator
    answered = ctx.clock.at(story.operator_answered_at or story.bridged_at)
    outcome.operator, outcome.operator_answered = operator, True
    log.warning("%s operator=%s was bridged to the caller while no app watched (from CEL)",
                call.tag, operator)
    ctx.tickets.change(call.id, "bridged while unwatched", ctx.clock.now(), actor="system",
                       operator=operator, operator_answered_at=answered, status="in_call",
                       only_if_unset=("operator", "operator_answered_at"),
                       audit={"source": "cel", "operators": story.operators,
                              "bridged": ctx.clock.at(story.bridged_at).isoformat()})


async def answer(ctx: CallContext, call: Call) -> datetime:
    """Answer the caller and record when, on the call row and the ticket."""
    await call.answer()
    now = ctx.clock.now()
    with ctx.together():
        ctx.calls.answered(call.id, now)
        ctx.tickets.change(call.id, "answered", now, answered_at=now)
    return now


def dialplan_recording(call: Call) -> str | None:
    """The file the dialplan's MixMonitor records this call into (Stasis argument 6), if any."""
    path = call.args[5] if len(call.args) > 5 else ""
    return path or None


async def serve_caller(ctx: CallContext, call: Call) -> None:
    """Ticket first (a caller who hangs up at once still leaves one), then a human, fast."""
    clock = ctx.clock
    dialled = call.args[1] if len(call.args) > 1 else ""
    arrived = clock.now()
    screening = Screening.from_args(call.args)
    with ctx.together():  # the call row, its ticket and the screening: one journal commit
        ctx.calls.opened(call.id, call.caller, dialled, arrived)
        key = ctx.locations.call_arrived(call.id, call.caller, arrived)
        ctx.tickets.open(call.id, call.caller, arrived, caller_key=key,
                         attach_locations_since=arrived - ctx.locations.before,
                         on_reference=lambda ref: setattr(call, "ticket_ref", ref),
                         recording_path=dialplan_recording(call))
        ctx.tickets.change(call.id, "screening", arrived,
                           policy=f"screen: {screening.flags or 'unscreened'}",
                           audit={"flags": screening.flags, "screen_ms": screening.ms})
    locating = asyncio.create_task(silent.carrier_location(ctx, call))
    ctx.live.publish(call.id, "arrived", caller=call.caller, at=arrived.isoformat())
    log.info("%s from=%s dialled=%s arrived", call.tag, call.caller, dialled)
    outcome = Outcome()
    watching: asyncio.Task[None] | None = None
    try:
        now = outcome.answered_at = await answer(ctx, call)
        await _talk_detect(call)
        local = now.astimezone(ctx.site.timezone)
        if not ctx.site.is_open(local.time()):
            log.info("%s out of hours (%s local)", call.tag, local.strftime("%H:%M"))
            await out_of_hours(ctx, call, outcome, "closed")
            return
        if not ctx.roster.anyone_on_duty():
            log.warning("%s no operator on duty at all", call.tag)
            await out_of_hours(ctx, call, outcome, "no operator on duty")
            return
        if screening.flagged:  # its warning first, and the priority the policy gives it
            await warned_caller(ctx, call, screening, outcome)
            return
        watching = asyncio.create_task(silent.watch(ctx, call), name=f"silent {call.id}")
        if ctx.site.queue.offer_during_menu:
            # A human first: the operators are rung while the caller hears the greeting and menu.
            await to_operator(ctx, call, ctx.site.menu.uncategorised_priority, outcome,
                              meanwhile=intake(ctx, call, outcome))
        else:  # the site keeps the old order: the menu first, then the queue
            priority = await intake(ctx, call, outcome)
            await to_operator(ctx, call, priority, outcome)
    except CallerHungUp:
        log.info("%s caller hung up", call.tag)
    finally:
        locating.cancel()
        with ctx.together():  # the call's last writes: one journal commit
            if watching is not None:
                watching.cancel()
                silent.at_end(ctx, call)
            _close(ctx, call, outcome)
        ctx.locations.call_ended(call.id, call.caller)


async def intake(ctx: CallContext, call: Call, outcome: Outcome) -> int:
    """The menu, then what the choice asks for (its prompt, the silent-caller step).

    Runs while the caller is already offered to the operators: each answer is written to the
    ticket and the card at once, and moves the caller's place in the queue. Returns the priority.
    """
    so_far = menu.Choice(None)
    try:
        choice = await menu.ask(ctx, call, so_far)
    except asyncio.CancelledError:  # an operator answered first: write what the caller did
        if so_far.invalid_keys or call.talked:
            so_far.talked = so_far.talked or call.talked
            ctx.tickets.change(call.id, "menu", ctx.clock.now(), menu_choice=so_far.label,
                               language=call.language or ctx.site.languages[0],
                               audit={"cut short": "operator answered"})
        raise
    priority = _priority(ctx, choice)
    language = call.language or ctx.site.languages[0]
    fields: dict[str, Any] = {
        "menu_choice": choice.label, "priority": priority, "silent": choice.silent,
        "language": language,
    }
    card: dict[str, Any] = {}
    if choice.option is not None:
        card = {"category": choice.option.category, "kind": choice.option.kind,
                "agency": choice.option.agency}
        fields |= card
        outcome.classified = True
        outcome.complaint = choice.option.kind == "complaint"
    ctx.tickets.change(call.id, "menu", ctx.clock.now(), **fields)
    call.marked_silent = choice.silent  # a key or speech after the watch's mark undoes it
    ctx.queue.reprioritise(call.id, priority)
    ctx.live.publish(call.id, "menu", choice=choice.label, priority=priority,
                     silent=choice.silent, language=language, **card)
    if choice.option is not None and choice.option.prompt:
        await call.play_and_wait(ctx.sound(choice.option.prompt, call.language), timeout=30)
    if choice.silent:
        confirmed = await silent.procedure(ctx, call)
        found: dict[str, Any] = {"silent_confirmed": confirmed}
        best = await ctx.locations.wait_for_location(call.id, 2.0)
        if best is not None:
            found["notes"] = silent.location_note(best)
        ctx.tickets.change(call.id, "silent procedure", ctx.clock.now(), **found)
        ctx.live.publish(call.id, "silent", confirmed=confirmed)
    return priority


async def warned_caller(ctx: CallContext, call: Call, screening: Screening,
                        outcome: Outcome) -> None:
    """A number with recent pranks/ghosts: a short warning, then a human at lower priority.

    Never dropped: pressing any key or simply staying on the line reaches an operator.
    """
    sc = ctx.site.screening
    count = screening.flags.split(":", 1)[1]
    policy = f"warned: {count} prank/ghost calls in {sc.window_h:g} h, priority lowered"
    log.info("%s %s", call.tag, policy)
    warning = ctx.sound(ctx.site.prompts.get("warning", "prank_warning"), call.language)
    digit, _ = await menu.listen(call, [warning], 3.0)
    priority = screening.priority or min(9, ctx.site.menu.uncategorised_priority
                                         + sc.priority_penalty)
    ctx.tickets.change(call.id, "warned", ctx.clock.now(), policy=policy, priority=priority,
                       menu_choice="warned-key" if digit else "warned-stayed")
    await to_operator(ctx, call, priority, outcome)


def _priority(ctx: CallContext, choice: menu.Choice) -> int:
    m = ctx.site.menu
    if choice.option is not None:
        return choice.option.priority
    return m.silent_priority if choice.silent else m.uncategorised_priority


#: TALK_DETECT(set): silence threshold (ms) and talking threshold (energy); 20-emergency.conf
#: sets the same values before Stasis().
TALK_DETECT = "1000,256"
TALK_ARG = 6  # Stasis() argument "talk": the dialplan set talk detection already


async def _talk_detect(call: Call) -> None:
    if len(call.args) > TALK_ARG and call.args[TALK_ARG] == "talk":
        return  # set by the dialplan just before Stasis(): no ARI round trip
    try:
        await call.set_var("TALK_DETECT(set)", TALK_DETECT)
    except CallerHungUp:
        raise
    except AriError as exc:  # never let a missing feature keep a caller from a human
        log.warning("%s talk detection unavailable: %s", call.tag, exc)


async def to_operator(ctx: CallContext, call: Call, priority: int, outcome: Outcome, *,
                      hold_first: bool = False,
                      meanwhile: Coroutine[Any, Any, Any] | None = None) -> None:
    """Queue the caller and bridge the first operator who answers.

    ``meanwhile``: what the caller goes through while the operators are rung (the menu); then the
    holding bridge and its reminders. ``hold_first``: wait until the caller is in the holding
    bridge before ringing anyone (an adopted call may still be playing a prompt the previous app
    started, and the caller cannot be bridged before it ends).
    """
    if not ctx.roster.anyone_on_duty():
        if meanwhile is not None:
            meanwhile.close()
        log.warning("%s no operator on duty at all", call.tag)
        await out_of_hours(ctx, call, outcome, "no operator on duty")
        return
    now = ctx.clock.now()
    # Offered during the menu: the ticket carries the place in line until the menu answers.
    ranked: dict[str, Any] = {"priority": priority} if meanwhile is not None else {}
    ctx.tickets.change(call.id, "queued", now, queued_at=now, **ranked)
    # The caller's side (menu, holding bridge) runs beside the ringing: on Asterisk 16 a command
    # on the caller's channel can wait up to 200 ms, and it must not delay the operator's phone.
    side = WhileWaiting(ctx, call, meanwhile)
    entry = ctx.queue.join(call.id, priority)
    ctx.live.publish(call.id, "queued", priority=priority)
    try:
        if hold_first:
            await side.in_holding_bridge()
        while True:
            operator = await connect.next_operator(ctx, call, entry)
            rung = ctx.clock.now()
            ctx.tickets.change(call.id, "ringing", rung, actor=operator, operator_rung_at=rung,
                               only_if_unset=("operator_rung_at",))
            try:
                with call.aside() as events:  # the menu keeps the call's own events
                    op_channel = await connect.ring(ctx, call, operator, source=events)
                link = None
                if op_channel is not None:
                    await side.stop()  # the prompt stops: the operator is on the line
                    link = await connect.bridge(ctx, call, operator, op_channel)
            except CallerHungUp:
                ctx.queue.release(operator, talked=False)
                raise
            if link is not None:
                break
            ctx.queue.requeue(entry, operator)
            side = side.carry_on()
    finally:
        ctx.queue.leave(call.id)
        await side.stop()
    await talk_with(ctx, call, operator, link, outcome)


class WhileWaiting:
    """The caller's side of the wait: the menu if still to come, then the holding bridge with
    its reminders. Stopped before the bridge; taken up again if the operator leaves first."""

    def __init__(self, ctx: CallContext, call: Call,
                 first: Coroutine[Any, Any, Any] | None) -> None:
        self.ctx, self.call = ctx, call
        self.holding: asyncio.Task[None] | None = None
        self.held = asyncio.Event()
        self.stopped = False
        self.task = asyncio.create_task(self._run(first), name=f"waiting {call.id}")

    async def _run(self, first: Coroutine[Any, Any, Any] | None) -> None:
        call = self.call
        if first is not None:
            try:
                await first
            except (CallerHungUp, asyncio.CancelledError):
                raise
            except Exception:  # a menu bug never keeps the caller from the operators
                log.exception("%s menu failed: the caller waits for an operator", call.tag)
        # Shielded: the request must land before the caller is moved on to the operator.
        self.holding = asyncio.create_task(connect.hold(self.ctx, call), name=f"hold {call.id}")
        await asyncio.shield(self.holding)
        self.held.set()
        await connect.reminders(self.ctx, call)

    async def in_holding_bridge(self) -> None:
        held = asyncio.ensure_future(self.held.wait())
        gone = asyncio.ensure_future(self.call.hung_up.wait())
        try:
            await asyncio.wait([held, gone, self.task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            held.cancel()
            gone.cancel()
        if self.call.gone:
            raise CallerHungUp(self.call.id)

    async def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        await _settle(self.task)
        if self.holding is not None:
            await _settle(self.holding, cancel=False)
        if not self.call.gone:
            await self.call.stop_playbacks()

    def carry_on(self) -> WhileWaiting:
        """After an operator who answered and left before the bridge: back to holding."""
        return WhileWaiting(self.ctx, self.call, None) if self.stopped else self


async def _settle(task: asyncio.Task[None], *, cancel: bool = True) -> None:
    """Finish with a side task: cancel it if still running; its outcome is not ours to raise."""
    if cancel and not task.done():
        task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves, not just the side task
    except CallerHungUp:
        pass
    except AriError as exc:
        log.info("side task not completed: %s", exc)


async def talk_with(ctx: CallContext, call: Call, operator: str, link: connect.Connected,
                    outcome: Outcome) -> None:
    """Bridged: record, write it down, and stay until either side hangs up."""
    outcome.operator = operator
    try:
        now = ctx.clock.now()
        outcome.operator_answered = True
        recorded: dict[str, Any] = {}
        if dialplan_recording(call) is None:  # a dialplan without MixMonitor: record the bridge
            recorded["recording_path"] = await connect.record(ctx, call, link)
        ctx.tickets.change(call.id, "operator answered", now, actor=operator,
                           operator=operator, operator_answered_at=now, status="in_call",
                           **recorded)
        ctx.live.publish(call.id, "bridged", operator=operator,
                         operator_channel=link.operator_channel, bridge=link.bridge_id)
        log.info("%s operator=%s bridged", call.tag, operator)
        ctx.links[call.id] = link
        await connect.talk(ctx, call, link)
        outcome.reason = f"{link.ended_by} hangup"
    finally:
        ctx.links.pop(call.id, None)
        if not link.operator_released:  # a hand-over gave the operator back already
            ctx.queue.release(operator, talked=True)


async def out_of_hours(ctx: CallContext, call: Call, outcome: Outcome, why: str) -> None:
    """The site's policy: forward through the trunk, or a message and a callback ticket."""
    policy = ctx.site.out_of_hours
    closed = ctx.sound(ctx.site.prompts["closed"], call.language)
    ctx.tickets.change(call.id, "out of hours", ctx.clock.now(), policy=f"{policy.policy}: {why}")
    ctx.calls.event(call.id, "playback_started", ctx.clock.now(), closed)
    played = await call.play_and_wait(closed, timeout=30)
    ctx.calls.event(call.id, "playback_finished" if played else "playback_stopped",
                    ctx.clock.now(), closed)
    if policy.policy == "forward" and policy.forward_number:
        log.info("%s forwarding to %s (%s)", call.tag, policy.forward_number, why)
        outcome.forwarded = True
        outcome.reason = f"forwarded to {policy.forward_number}"
        await ctx.ari.post("channels", call.id, "continue", context="siaga112-forward",
                           extension=policy.forward_number, priority=1)
        return
    outcome.callback = True
    outcome.reason = f"callback ({why})"
    await call.hangup()


SILENT_UNREACHED = "silent-unreached"


def _outcome_class(call: Call, outcome: Outcome, now: datetime) -> str | None:
    """genuine/complaint once a human talked; silent-unreached for no key and no voice before a
    human answered (never counted by screening, first to call back); else abandoned.

    Ghost and prank are an operator's judgement, never the system's.
    """
    if outcome.forwarded:
        return None
    if outcome.operator_answered:
        return "complaint" if outcome.complaint else "genuine"
    if outcome.adopted:
        return "abandoned"  # what the caller did before the restart is unknown
    if not call.keys and not call.talked:
        return SILENT_UNREACHED
    return "abandoned"


def _close(ctx: CallContext, call: Call, outcome: Outcome) -> None:
    now: datetime = call.lost_at or ctx.clock.now()  # lost with Asterisk: when it went away
    if call.lost_reason:
        outcome.reason = call.lost_reason
    if outcome.forwarded:
        status = "forwarded"
    elif outcome.operator_answered:
        status = "classified" if outcome.classified else "new"
    elif outcome.callback:
        status = "new"
    else:
        status = "abandoned"  # hung up before a human answered: call them back
    callback = outcome.callback or status == "abandoned"
    ctx.tickets.change(call.id, "ended", now, ended_at=now, end_reason=outcome.reason,
                       status=status, callback_needed=callback,
                       outcome=_outcome_class(call, outcome, now),
                       status_from=("new", "in_call"), only_if_unset=("outcome",))
    ctx.calls.closed(call.id, now, outcome.reason)
    ctx.live.publish(call.id, "ended", reason=outcome.reason, status=status)
    log.info("%s ended: %s (%s)", call.tag, outcome.reason, status)
