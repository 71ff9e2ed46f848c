"""The callback worklist: who must be called back, who has claimed them, every attempt.

A ticket is on the list while ``callback_needed`` is set and it is not resolved or closed;
silent callers that were never reached come first. An operator claims a callback, calls the
caller back (click-to-call: the app rings the operator's own phone, then the dialplan dials the
caller through the trunk) and records each attempt's outcome; "reached" takes it off the list.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.console_models import CallbackAttempt, CallbackClaim
from ari_app.tickets.models import Ticket, TicketAudit

log = logging.getLogger(__name__)

OUTCOMES = ("reached", "no_answer", "busy", "wrong_number")
DIALABLE = re.compile(r"\+?[0-9]{3,20}")


class CallbackError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(frozen=True)
class CallbackRow:
    reference: str
    caller: str
    arrived_at: datetime
    reason: str
    silent: bool
    owner: str | None
    attempts: int
    last_outcome: str | None


async def worklist(s: AsyncSession, site: str, limit: int = 100) -> list[CallbackRow]:
    q = (select(Ticket, CallbackClaim.claimed_by)
         .outerjoin(CallbackClaim, CallbackClaim.ticket_id == Ticket.id)
         .where(Ticket.site == site, Ticket.callback_needed.is_(True),
                Ticket.status.not_in(("resolved", "closed", "prank", "duplicate")))
         .order_by(case((Ticket.silent.is_(True), 0), else_=1), Ticket.priority, Ticket.arrived_at)
         .limit(limit))
    rows = (await s.execute(q)).all()
    ids = [t.id for t, _ in rows]
    attempts: dict[int, list[CallbackAttempt]] = {}
    if ids:
        for a in await s.scalars(select(CallbackAttempt).where(CallbackAttempt.ticket_id.in_(ids))
                                 .order_by(CallbackAttempt.id)):
            attempts.setdefault(a.ticket_id, []).append(a)
    return [CallbackRow(t.reference, t.caller_number, t.arrived_at,
                        "silent-unreached" if t.silent and not t.operator_answered_at
                        else (t.end_reason or t.outcome or ""), t.silent, owner,
                        len(attempts.get(t.id, [])),
                        attempts[t.id][-1].outcome if attempts.get(t.id) else None)
            for t, owner in rows]


async def _ticket(s: AsyncSession, site: str, reference: str) -> Ticket:
    t = await s.scalar(select(Ticket).where(Ticket.site == site, Ticket.reference == reference)
                       .with_for_update())
    if t is None:
        raise CallbackError(404, f"no ticket {reference}")
    if not t.callback_needed:
        raise CallbackError(409, f"ticket {reference} is not on the callback list")
    return t


async def claim(s: AsyncSession, site: str, reference: str, user: str, now: datetime) -> None:
    t = await _ticket(s, site, reference)
    held = await s.get(CallbackClaim, t.id, with_for_update=True)
    if held is not None and held.claimed_by != user:
        raise CallbackError(409, f"callback {reference} is already claimed by {held.claimed_by}")
    if held is None:
        s.add(CallbackClaim(ticket_id=t.id, claimed_by=user, claimed_at=now))
        s.add(TicketAudit(ticket_id=t.id, at=now, actor=user, action="callback claimed",
                          detail="{}"))


async def owned(s: AsyncSession, site: str, reference: str, user: str) -> Ticket:
    t = await _ticket(s, site, reference)
    held = await s.get(CallbackClaim, t.id)
    if held is None or held.claimed_by != user:
        raise CallbackError(409, f"claim callback {reference} first"
                                 + (f" (held by {held.claimed_by})" if held else ""))
    return t


async def record_attempt(s: AsyncSession, site: str, reference: str, user: str, outcome: str,
                         note: str, now: datetime) -> bool:
    """One attempt and its outcome; returns True when the caller was reached (callback done)."""
    if outcome not in OUTCOMES:
        raise CallbackError(422, f"outcome: expected one of {', '.join(OUTCOMES)}, got {outcome!r}")
    t = await owned(s, site, reference, user)
    s.add(CallbackAttempt(ticket_id=t.id, at=now, actor=user, outcome=outcome, note=note[:2000]))
    s.add(TicketAudit(ticket_id=t.id, at=now, actor=user, action=f"callback {outcome}",
                      detail=json.dumps({"note": note[:2000]})))
    if outcome != "reached":
        return False
    t.callback_needed = False
    held = await s.get(CallbackClaim, t.id)
    assert held is not None
    held.done_at = now
    return True


def dial_params(ticket: Ticket, operator: str) -> dict[str, Any]:
    """The ARI originate that rings the operator's phone, then dials the caller (dialplan)."""
    number = ticket.caller_number.strip()
    if not DIALABLE.fullmatch(number):
        raise CallbackError(422, f"caller number: expected digits to dial, found {number!r}")
    return {"endpoint": f"PJSIP/{operator}", "context": "siaga112-callback",
            "extension": number.lstrip("+"), "priority": "1", "timeout": "30",
            "callerId": f'"112 callback {ticket.reference}" <{number}>'}
