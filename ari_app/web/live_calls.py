"""The console's actions on a live call: supervise (listen/whisper/barge), hand over (warm or
blind) and conference an agency in.

Each needs the call's own Asterisk and app, so each is one function of (app, actor, call, body)
that returns (HTTP status, JSON body): the web handler of the node that holds the call runs it
directly, and a node whose console was asked about another node's call forwards it there
(``cluster.py``), where the same function runs for the same user and audits as it always does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from ari_app.ari import AriError
from ari_app.calls.connect import add_agency, blind_transfer, hand_over
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.auth import ROLES

if TYPE_CHECKING:
    from ari_app.app import App

log = logging.getLogger(__name__)

SUPERVISE_MODES = ("listen", "whisper", "barge")
Result = tuple[int, dict[str, Any]]


@dataclass(frozen=True)
class Actor:
    """Who acts: the console user (their role was checked by the node they are logged in to)
    and the SIP operator their profile is linked to (their own phone)."""
    username: str
    role: str
    operator: str | None = None
    via: str = ""  # the node whose console the action came from, when forwarded

    def has(self, role: str) -> bool:
        return self.role in ROLES and ROLES.index(self.role) >= ROLES.index(role)

    def as_dict(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "operator": self.operator}

    @classmethod
    def from_dict(cls, d: dict[str, Any], via: str) -> Actor:
        op = d.get("operator")
        return cls(str(d["username"]), str(d["role"]), str(op) if op else None, via)


def error(status: int, message: str, **more: Any) -> Result:
    return status, {"error": message, **more}


def is_local(app: App, call_id: str) -> bool:
    return call_id in app.registry.calls or call_id in app.live.state


async def supervise(app: App, actor: Actor, call_id: str, body: dict[str, Any]) -> Result:
    """Listen / whisper / barge: the supervisor's own phone rings and joins by ChanSpy."""
    if not actor.has("supervisor"):
        return error(403, "only a supervisor listens in")
    mode = str(body.get("mode", ""))
    if mode not in SUPERVISE_MODES:
        return error(422, f"mode: expected one of {', '.join(SUPERVISE_MODES)}, got {mode!r}")
    phone = actor.operator
    if phone is None:
        return error(409, "link this supervisor to their own phone first (siaga112 users link)")
    talking = app.ctx.links.get(call_id)  # bridged caller and operator, until either hangs up
    state = app.live.state.get(call_id, {})
    leg = talking.operator_channel if talking is not None else None
    if not leg:
        return error(409, f"call {call_id} is not talking to an operator now")
    try:
        channel = await app.ari.get("channels", str(leg))
        await app.ari.post("channels", body={"variables": {"SIAGA_SPY": channel["name"]}},
                           endpoint=f"PJSIP/{phone}", context="siaga112-supervise",
                           extension=mode, priority="1", timeout="30",
                           callerId=f'"112 {mode}" <{state.get("caller") or "112"}>')
    except AriError as exc:
        log.error("call=%s supervisor %s %s failed: %s", call_id, actor.username, mode, exc)
        return error(502, f"the phone system refused: {exc}")
    now = app.settings.clock.now()
    detail: dict[str, Any] = {"phone": phone, "operator": state.get("operator")}
    if actor.via:
        detail["from node"] = actor.via
    async with app.sessions() as s, s.begin():
        ticket_id = await s.scalar(select(Ticket.id).where(Ticket.channel_id == call_id))
        if ticket_id is not None:
            s.add(TicketAudit(ticket_id=ticket_id, at=now, actor=actor.username,
                              action=f"supervisor {mode}", detail=json.dumps(detail)))
    log.info("call=%s supervisor %s %s on phone %s (operator=%s)%s", call_id, actor.username,
             mode, phone, state.get("operator"), f" from node {actor.via}" if actor.via else "")
    return 200, {"call": call_id, "mode": mode, "phone": phone}


async def handover(app: App, actor: Actor, call_id: str, body: dict[str, Any]) -> Result:
    """Warm transfer (leave the caller with the agency already on the line) or blind
    transfer (dial an agency; the operator leaves as soon as it answers)."""
    mode = str(body.get("mode", ""))
    call = app.registry.calls.get(call_id)
    talking = app.ctx.links.get(call_id)
    if call is None or talking is None:
        return error(409, f"call {call_id} is not talking to an operator now")
    if not actor.has("supervisor") and actor.operator != talking.operator:
        return error(403, "only the operator on the call (or a supervisor) hands it over")
    services = set(app.settings.site.other_services.values())
    if mode == "warm":
        if not await hand_over(app.ctx, call, talking, actor.username, actor.via):
            return error(409, "no agency is on the line yet: conference one in first")
    elif mode == "blind":
        number = str(body.get("number", ""))
        if number not in services:
            return error(422, f"number: expected one of {', '.join(sorted(services))}, "
                              f"got {number!r}")
        if await blind_transfer(app.ctx, call, talking, number, actor.username,
                                actor.via) is None:
            return error(502, f"{number} could not be dialled through the trunk")
    else:
        return error(422, f"mode: expected warm or blind, got {mode!r}")
    log.info("call=%s %s hand-over by %s%s", call_id, mode, actor.username,
             f" from node {actor.via}" if actor.via else "")
    return 202, {"call": call_id, "mode": mode}


async def agency(app: App, actor: Actor, call_id: str, body: dict[str, Any]) -> Result:
    """Conference an agency (110, 113, 118...) into a live call through the trunk."""
    numbers = sorted(set(app.settings.site.other_services.values()))
    number = body.get("number")
    if not isinstance(number, str) or number not in numbers:
        return error(422, "invalid body", errors=[
            {"field": "number", "message": f"expected one of {numbers}"}])
    call = app.registry.calls.get(call_id)
    link = app.ctx.links.get(call_id)
    if call is None or link is None:
        return error(409, "that call is not connected to an operator now")
    leg = await add_agency(app.ctx, call, link, number, actor.username, actor.via)
    if leg is None:
        return error(502, f"{number} could not be dialled through the trunk")
    log.info("call=%s agency %s conferenced in by %s%s", call_id, number, actor.username,
             f" from node {actor.via}" if actor.via else "")
    return 202, {"call": call.id, "number": number, "channel": leg}


LiveAction = Callable[["App", Actor, str, dict[str, Any]], Awaitable[Result]]
ACTIONS: dict[str, LiveAction] = {"supervise": supervise, "handover": handover, "agency": agency}
