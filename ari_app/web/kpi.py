"""Supervisor KPIs: answer times, abandoned/ghost/prank shares, per category and agency.

Definitions (one place, shared by the page, the CSV and `siaga112 report`):
- calls: tickets that came in by phone (have a channel) and arrived in the period (site-local
  dates), forwarded calls apart: they are counted as ``forwarded`` and are in no share below
  (another service took them);
- answered within N s: operator_answered_at - arrived_at <= N (a human within N s of the call's
  arrival), as a share of all calls;
- average and p90 answer time over calls a human answered (p90: nearest rank; the slowest 10%
  waited at least this long);
- time to a human, per priority (the ticket's final priority) and over all: p50 and p90
  (nearest rank) of arrival -> operator's phone ringing, arrival -> operator answered, answer
  (the app answered the caller) -> ringing, answer -> operator answered. Ringing is the first
  operator rung for the call (tickets before migration 0008 have no ringing time and count
  for the answered figures only);
- abandoned / silent-unreached / ghost / prank: ticket outcome, as a share of all calls;
- time to acknowledge / resolve: notification created → agency acknowledged / resolved.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.tickets.models import Agency, Notification, Ticket
from ari_app.web.auth import require
from ari_app.web.i18n import LANGS, Translator

if TYPE_CHECKING:
    from ari_app.web.console import Console


@dataclass
class AgencyFigures:
    dispatched: int = 0
    acknowledged: int = 0
    resolved: int = 0
    avg_ack_s: float | None = None
    avg_resolve_s: float | None = None


@dataclass
class Kpis:
    start: date
    end: date
    calls: int = 0
    answered: int = 0
    within_10s_pct: float = 0.0
    within_20s_pct: float = 0.0
    avg_answer_s: float | None = None
    p90_answer_s: float | None = None
    forwarded: int = 0
    abandoned_pct: float = 0.0
    silent_unreached_pct: float = 0.0
    ghost_pct: float = 0.0
    prank_pct: float = 0.0
    avg_ack_s: float | None = None
    avg_resolve_s: float | None = None
    categories: dict[str, int] = field(default_factory=dict)
    agencies: dict[str, AgencyFigures] = field(default_factory=dict)
    # "all" or "p<priority>" -> measure (e.g. "arrival_to_ringing") -> (p50, p90) in seconds
    to_human: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


MEASURES = (("arrival_to_ringing", "arrived_at", "operator_rung_at"),
            ("arrival_to_operator", "arrived_at", "operator_answered_at"),
            ("answer_to_ringing", "answered_at", "operator_rung_at"),
            ("answer_to_operator", "answered_at", "operator_answered_at"))


def _rank(values: list[float], share: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return round(values[math.ceil(share * len(values)) - 1], 1)


def _to_human(calls: list[Ticket]) -> dict[str, dict[str, tuple[float, float]]]:
    groups: dict[str, list[Ticket]] = {"all": calls}
    for t in sorted(calls, key=lambda t: t.priority):
        groups.setdefault(f"p{t.priority}", []).append(t)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for name, group in groups.items():
        for measure, since, until in MEASURES:
            spans = sorted((getattr(t, until) - getattr(t, since)).total_seconds() for t in group
                           if getattr(t, since) is not None and getattr(t, until) is not None)
            if spans:
                out.setdefault(name, {})[measure] = (_rank(spans, 0.5), _rank(spans, 0.9))
    return out


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def _pct(n: int, d: int) -> float:
    return round(100.0 * n / d, 1) if d else 0.0


def compute(start: date, end: date, tickets: list[Ticket],
            notifications: list[tuple[Notification, str]]) -> Kpis:
    k = Kpis(start, end)
    phoned = [t for t in tickets if t.channel_id is not None]
    calls = [t for t in phoned if t.status != "forwarded"]
    k.forwarded = len(phoned) - len(calls)
    k.calls = len(calls)
    waits = sorted((t.operator_answered_at - t.arrived_at).total_seconds()
                   for t in calls if t.operator_answered_at is not None)
    k.answered = len(waits)
    k.within_10s_pct = _pct(sum(1 for w in waits if w <= 10), k.calls)
    k.within_20s_pct = _pct(sum(1 for w in waits if w <= 20), k.calls)
    k.avg_answer_s = _mean(waits)
    k.p90_answer_s = _rank(waits, 0.9) if waits else None
    k.to_human = _to_human(calls)
    outcomes = Counter(t.outcome for t in calls)
    k.abandoned_pct = _pct(outcomes["abandoned"], k.calls)
    k.silent_unreached_pct = _pct(outcomes["silent-unreached"], k.calls)
    k.ghost_pct = _pct(outcomes["ghost"], k.calls)
    k.prank_pct = _pct(outcomes["prank"], k.calls)
    k.categories = dict(sorted(Counter(t.category for t in tickets).items()))
    acks: dict[str, list[float]] = {}
    resolves: dict[str, list[float]] = {}
    for n, code in notifications:
        fig = k.agencies.setdefault(code, AgencyFigures())
        fig.dispatched += 1
        if n.acknowledged_at is not None:
            fig.acknowledged += 1
            acks.setdefault(code, []).append((n.acknowledged_at - n.created_at).total_seconds())
        if n.resolved_at is not None:
            fig.resolved += 1
            resolves.setdefault(code, []).append((n.resolved_at - n.created_at).total_seconds())
    for code, fig in k.agencies.items():
        fig.avg_ack_s, fig.avg_resolve_s = _mean(acks.get(code, [])), _mean(resolves.get(code, []))
    k.agencies = dict(sorted(k.agencies.items()))
    k.avg_ack_s = _mean([v for vs in acks.values() for v in vs])
    k.avg_resolve_s = _mean([v for vs in resolves.values() for v in vs])
    return k


def period(start: date, end: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Site-local days start..end inclusive, as an aware [from, to) range."""
    return (datetime.combine(start, time(0), tz), datetime.combine(end + timedelta(days=1), time(0), tz))


async def load(s: AsyncSession, site: str, tz: ZoneInfo, start: date, end: date) -> Kpis:
    lo, hi = period(start, end, tz)
    tickets = list(await s.scalars(select(Ticket).where(Ticket.site == site, Ticket.arrived_at >= lo,
                                                        Ticket.arrived_at < hi)))
    rows = await s.execute(select(Notification, Agency.code)
                           .join(Agency, Agency.id == Notification.agency_id)
                           .join(Ticket, Ticket.id == Notification.ticket_id)
                           .where(Ticket.site == site, Ticket.arrived_at >= lo, Ticket.arrived_at < hi))
    return compute(start, end, tickets, [(n, c) for n, c in rows])


def _f(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def rows(k: Kpis) -> list[tuple[str, str, str]]:
    out = [("period", "from", k.start.isoformat()), ("period", "to", k.end.isoformat()),
           ("calls", "calls", str(k.calls)), ("calls", "forwarded", str(k.forwarded)),
           ("calls", "answered_by_human", str(k.answered)),
           ("calls", "answered_within_10s_pct", f"{k.within_10s_pct:g}"),
           ("calls", "answered_within_20s_pct", f"{k.within_20s_pct:g}"),
           ("calls", "avg_answer_s", _f(k.avg_answer_s)), ("calls", "p90_answer_s", _f(k.p90_answer_s)),
           ("calls", "abandoned_pct", f"{k.abandoned_pct:g}"),
           ("calls", "silent_unreached_pct", f"{k.silent_unreached_pct:g}"),
           ("calls", "ghost_pct", f"{k.ghost_pct:g}"),
           ("calls", "prank_pct", f"{k.prank_pct:g}"),
           ("agencies", "avg_ack_s", _f(k.avg_ack_s)), ("agencies", "avg_resolve_s", _f(k.avg_resolve_s))]
    for group, measures in k.to_human.items():
        for measure, (p50, p90) in measures.items():
            out += [(f"to_human:{group}", f"{measure}_p50_s", f"{p50:g}"),
                    (f"to_human:{group}", f"{measure}_p90_s", f"{p90:g}")]
    out += [("category", c, str(n)) for c, n in k.categories.items()]
    for code, fig in k.agencies.items():
        out += [(f"agency:{code}", "dispatched", str(fig.dispatched)),
                (f"agency:{code}", "acknowledged", str(fig.acknowledged)),
                (f"agency:{code}", "resolved", str(fig.resolved)),
                (f"agency:{code}", "avg_ack_s", _f(fig.avg_ack_s)),
                (f"agency:{code}", "avg_resolve_s", _f(fig.avg_resolve_s))]
    return out


def to_csv(k: Kpis) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("section", "metric", "value"))
    w.writerows(rows(k))
    return buf.getvalue()


def to_text(k: Kpis) -> str:
    return "\n".join(f"{section:<18} {metric:<26} {value}" for section, metric, value in rows(k))


def svg_bars(items: list[tuple[str, float]], unit: str = "", width: int = 420) -> str:
    """Horizontal bars as inline SVG (no script, no external file)."""
    from html import escape

    top = max((v for _, v in items), default=0) or 1
    h = 22 * len(items) + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" role="img">']
    for i, (label, value) in enumerate(items):
        y = 22 * i + 2
        bar = (width - 200) * value / top
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{escape(label)}</text>'
                     f'<rect x="130" y="{y}" width="{bar:.1f}" height="16" fill="#b00020"/>'
                     f'<text x="{134 + bar:.1f}" y="{y + 13}" font-size="12">{value:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


Render = Callable[..., web.Response]


def register_kpi(web_app: web.Application, console: Console, render: Render) -> None:
    app = console.app
    site = app.settings.site

    def dates(request: web.Request) -> tuple[date, date]:
        today = app.settings.clock.now().astimezone(site.timezone).date()
        try:
            start = date.fromisoformat(request.query.get("from", (today - timedelta(days=6)).isoformat()))
            end = date.fromisoformat(request.query.get("to", today.isoformat()))
        except ValueError:
            raise web.HTTPBadRequest(text="from/to: expected YYYY-MM-DD") from None
        if end < start:
            raise web.HTTPBadRequest(text="to must not be before from")
        return start, end

    async def page(request: web.Request) -> web.Response:
        require(request, "supervisor")
        start, end = dates(request)
        _ = Translator(request.get("lang", LANGS[0]))
        async with app.sessions() as s:
            k = await load(s, site.code, site.timezone, start, end)
        charts: dict[str, Any] = {
            "answer": svg_bars([(_("kpi.within_10s"), k.within_10s_pct),
                                (_("kpi.within_20s"), k.within_20s_pct),
                                (_("kpi.abandoned"), k.abandoned_pct),
                                (_("kpi.silent_unreached"), k.silent_unreached_pct),
                                (_("kpi.ghost"), k.ghost_pct),
                                (_("kpi.prank"), k.prank_pct)], "%"),
            "categories": svg_bars([(c, float(n)) for c, n in k.categories.items()]),
            "agencies": svg_bars([(c, float(f.dispatched)) for c, f in k.agencies.items()]),
        }
        return render(request, "kpi.html", title="KPI", k=k, rows=rows(k), charts=charts)

    async def export(request: web.Request) -> web.Response:
        require(request, "supervisor")
        start, end = dates(request)
        async with app.sessions() as s:
            k = await load(s, site.code, site.timezone, start, end)
        return web.Response(text=to_csv(k), content_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="kpi-{site.code}-{start}-{end}.csv"'})

    web_app.router.add_get("/kpi", page)
    web_app.router.add_get("/kpi.csv", export)
