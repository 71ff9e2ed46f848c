"""Time per operator state for one site-local day, from the audited state changes.

Definitions (the page and its tests share them):
- between two logged changes (operator_state_log) an operator is in the earlier one's state;
  the state at the day's start is the last change before it;
- a timed wrap-up (``until``, kept since migration 0015) is wrap-up up to its end and ready
  after it (the app makes it ready without writing a row); a wrap-up without an end (written
  before 0015) lasts until the next change;
- a state still open at the day's end counts to the end of the day, or to now for today;
  time before an operator's first change ever is not counted (the state is unknown);
- on call: from the operator's answer (the ticket's ``operator_answered_at``) to the call's
  end or the operator's hand-over to an agency, whatever the logged state (it stays ready
  during a call); a call still going counts to now;
- off shift: time outside the operator's shifts that is not on a call (no call is offered
  then, whatever the state);
- days are the site's time zone (WIB for Jepara, WITA for Batola), midnight to midnight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.routing.states import NOT_READY, READY, REASONS, WRAP_UP
from ari_app.tickets.console_models import OperatorStateLog
from ari_app.tickets.models import Operator, Shift, Ticket, TicketAudit
from ari_app.web.auth import require
from ari_app.web.kpi import period

if TYPE_CHECKING:
    from ari_app.web.console import Console

Span = tuple[datetime, datetime]
ON_CALL, OFF_SHIFT, OTHER_REASON = "on_call", "off_shift", "not_ready_other"
BUCKETS = (READY, *(f"{NOT_READY}_{r}" for r in REASONS), WRAP_UP, ON_CALL, OFF_SHIFT)
HANDED_OVER = "handed over"  # the ticket audit's action when the operator left the call


@dataclass(frozen=True)
class Change:
    at: datetime
    state: str
    reason: str | None = None
    until: datetime | None = None


@dataclass
class OperatorDay:
    operator: str
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.seconds.values())


def bucket(change: Change) -> str:
    if change.state == NOT_READY:
        return f"{NOT_READY}_{change.reason}" if change.reason in REASONS else OTHER_REASON
    return change.state


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, merged, non-empty spans."""
    out: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def within(span: Span, spans: list[Span]) -> list[Span]:
    """The parts of ``span`` inside the merged ``spans``."""
    return [(max(span[0], s), min(span[1], e)) for s, e in spans
            if min(span[1], e) > max(span[0], s)]


def minus(span: Span, spans: list[Span]) -> list[Span]:
    """The parts of ``span`` outside the merged ``spans``."""
    out, start = [], span[0]
    for s, e in spans:
        if e <= start or s >= span[1]:
            continue
        if s > start:
            out.append((start, s))
        start = max(start, e)
    if start < span[1]:
        out.append((start, span[1]))
    return out


def state_spans(changes: list[Change], end: datetime) -> list[tuple[Span, str]]:
    """Each logged state from its change to the next (or ``end``), a timed wrap-up split."""
    ordered = sorted(changes, key=lambda c: c.at)
    out: list[tuple[Span, str]] = []
    for i, change in enumerate(ordered):
        stop = ordered[i + 1].at if i + 1 < len(ordered) else max(end, change.at)
        if change.state == WRAP_UP and change.until is not None and change.until < stop:
            out += [((change.at, max(change.at, change.until)), WRAP_UP),
                    ((max(change.at, change.until), stop), READY)]
        else:
            out.append(((change.at, stop), bucket(change)))
    return out


def operator_day(changes: list[Change], calls: list[Span], shifts: list[Span] | None,
                 lo: datetime, hi: datetime) -> dict[str, float]:
    """Seconds per bucket in [lo, hi) for one operator (``shifts`` None: shifts not known).

    ``changes`` must hold the last change before ``lo`` (the state the day starts in) and every
    change up to ``hi``; ``calls`` are [answer, end) spans.
    """
    seconds = dict.fromkeys(BUCKETS, 0.0)
    if hi <= lo:
        return seconds
    busy = union(part for c in calls for part in within(c, [(lo, hi)]))
    seconds[ON_CALL] = sum((e - s).total_seconds() for s, e in busy)
    on_shift = union(shifts) if shifts is not None else [(lo, hi)]
    for span, name in state_spans(changes, hi):
        for part in within(span, [(lo, hi)]):
            for free in minus(part, busy):
                for s, e in within(free, on_shift):
                    seconds[name] = seconds.get(name, 0.0) + (e - s).total_seconds()
                for s, e in minus(free, on_shift):
                    seconds[OFF_SHIFT] += (e - s).total_seconds()
    return seconds


def day_report(changes: dict[str, list[Change]], calls: dict[str, list[Span]],
               shifts: dict[str, list[Span]] | None, day: date, tz: ZoneInfo,
               now: datetime) -> list[OperatorDay]:
    """Every operator with a logged change or a call, for the site-local ``day``."""
    lo, hi = period(day, day, tz)
    hi = min(hi, now)
    names = sorted(set(changes) | set(calls))
    return [OperatorDay(n, operator_day(changes.get(n, []), calls.get(n, []),
                                        None if shifts is None else shifts.get(n, []), lo, hi))
            for n in names]


async def load(s: AsyncSession, site: str, tz: ZoneInfo, day: date,
               now: datetime) -> list[OperatorDay]:
    lo, hi = period(day, day, tz)
    # this site's operators, and those removed since (no operators row): their time still shows
    mine = OperatorStateLog.operator_name.not_in(select(Operator.name).where(Operator.site != site))
    before = (select(OperatorStateLog.operator_name, func.max(OperatorStateLog.at).label("last"))
              .where(OperatorStateLog.at < lo).group_by(OperatorStateLog.operator_name).subquery())
    rows = await s.scalars(select(OperatorStateLog).outerjoin(
        before, and_(before.c.operator_name == OperatorStateLog.operator_name,
                     before.c.last == OperatorStateLog.at))
        .where(mine, or_(and_(OperatorStateLog.at >= lo, OperatorStateLog.at < hi),
                         before.c.last.is_not(None)))
        .order_by(OperatorStateLog.at, OperatorStateLog.id))
    changes: dict[str, list[Change]] = {}
    for r in rows:
        changes.setdefault(r.operator_name, []).append(Change(r.at, r.state, r.reason, r.until))
    tickets = list(await s.scalars(select(Ticket).where(
        Ticket.site == site, Ticket.operator.is_not(None), Ticket.operator_answered_at.is_not(None),
        Ticket.operator_answered_at < hi,
        or_(Ticket.ended_at.is_(None), Ticket.ended_at > lo))))
    left: dict[int, datetime] = {}
    if tickets:
        for ticket_id, at in await s.execute(
                select(TicketAudit.ticket_id, func.min(TicketAudit.at))
                .where(TicketAudit.ticket_id.in_([t.id for t in tickets]),
                       TicketAudit.action == HANDED_OVER).group_by(TicketAudit.ticket_id)):
            left[ticket_id] = at
    calls: dict[str, list[Span]] = {}
    for t in tickets:
        assert t.operator is not None and t.operator_answered_at is not None
        end = min(x for x in (t.ended_at, left.get(t.id), now) if x is not None)
        calls.setdefault(t.operator, []).append((t.operator_answered_at, end))
    shifts: dict[str, list[Span]] = {}
    for name, start, end in await s.execute(
            select(Operator.name, Shift.starts_at, Shift.ends_at)
            .join(Operator, Operator.id == Shift.operator_id)
            .where(Operator.site == site, Shift.starts_at < hi, Shift.ends_at > lo)):
        shifts.setdefault(name, []).append((start, end))
    return day_report(changes, calls, shifts, day, tz, now)


def hms(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


Render = Callable[..., web.Response]


def register_kpi_states(web_app: web.Application, console: Console, render: Render) -> None:
    app = console.app
    site = app.settings.site

    async def page(request: web.Request) -> web.Response:
        require(request, "supervisor")
        now = app.settings.clock.now()
        today = now.astimezone(site.timezone).date()
        try:
            day = date.fromisoformat(request.query.get("day", today.isoformat()))
        except ValueError:
            raise web.HTTPBadRequest(text="day: expected YYYY-MM-DD") from None
        async with app.sessions() as s:
            report = await load(s, site.code, site.timezone, day, now)
        columns: list[str] = list(BUCKETS)
        if any(r.seconds.get(OTHER_REASON) for r in report):
            columns.insert(columns.index(WRAP_UP), OTHER_REASON)
        shown: list[dict[str, Any]] = [
            {"operator": r.operator, "cells": {c: hms(r.seconds.get(c, 0.0)) for c in columns},
             "seconds": {c: round(r.seconds.get(c, 0.0)) for c in columns},
             "total": hms(r.total)} for r in report]
        zone = datetime.combine(day, time(12), site.timezone).tzname() or str(site.timezone)
        return render(request, "kpi_states.html", title="kpi_states", day=day, columns=columns,
                      report=shown, tz=zone, previous=day - timedelta(days=1), next=day + timedelta(days=1))

    web_app.router.add_get("/kpi/states", page)
