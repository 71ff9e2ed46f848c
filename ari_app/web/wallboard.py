"""The supervisor's wallboard: who waits and how long, operators by state, today's figures.

Live over server-sent events like the console: a new board on every queue or roster change (at
most one a second) and every few seconds anyway. Today's figures come from the database, read
at most every 5 s; with the database down the live half goes on and the figures stay as last read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import func, select

from ari_app.tickets.models import Ticket
from ari_app.web.auth import require
from ari_app.web.i18n import LANGS, Translator
from ari_app.web.kpi import load, period
from ari_app.web.operator_console import Render, live_state_view

if TYPE_CHECKING:
    from ari_app.web.console import Console

log = logging.getLogger(__name__)

FIGURES_EVERY_S = 5.0
# Callers who hung up before a human answered (silent-unreached: a silent one, issue 13's word)
ABANDONED = ("abandoned", "silent-unreached")
PUSH_EVERY_S = 5.0


def bucket(view: dict[str, Any]) -> str:
    """One operator's column on the board; a phone that is not registered trumps the state."""
    if not view["registered"]:
        return "unregistered"
    if view["in_call"]:
        return "in_call"
    if view["state"] == "not_ready" and view["reason"]:
        return f"not_ready:{view['reason']}"
    return str(view["state"])


class Wallboard:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.figures: dict[str, Any] = {"calls_today": 0, "within_10s_pct": 0.0,
                                        "abandoned_today": 0}
        self.figures_at = 0.0

    async def today(self) -> dict[str, Any]:
        if time.monotonic() - self.figures_at < FIGURES_EVERY_S:
            return self.figures
        app = self.console.app
        site = app.settings.site
        day = app.settings.clock.now().astimezone(site.timezone).date()
        try:
            lo, hi = period(day, day, site.timezone)
            async with app.sessions() as s:
                k = await load(s, site.code, site.timezone, day, day)
                abandoned = await s.scalar(select(func.count()).select_from(Ticket).where(
                    Ticket.site == site.code, Ticket.channel_id.is_not(None),
                    Ticket.arrived_at >= lo, Ticket.arrived_at < hi,
                    Ticket.outcome.in_(ABANDONED)))
            self.figures = {"calls_today": k.calls, "within_10s_pct": k.within_10s_pct,
                            "abandoned_today": int(abandoned or 0)}
            self.figures_at = time.monotonic()
        except Exception as exc:
            log.warning("wallboard: today's figures not readable (%s); showing the last ones", exc)
        return self.figures

    async def board(self) -> dict[str, Any]:
        roster = self.console.app.roster
        queue = self.console.queue.snapshot()
        # several nodes: an operator on a call on any of them is on a call
        operators = [live_state_view(self.console, name) for name in roster.on_shift]
        for view in operators:
            view["bucket"] = bucket(view)
        return {"waiting": queue["count"], "longest_s": queue["longest_s"],
                "queue": queue["waiting"],
                "operators": operators, "by_state": dict(Counter(v["bucket"] for v in operators)),
                **await self.today()}


def register_wallboard(web_app: web.Application, console: Console, render: Render) -> None:
    wallboard = Wallboard(console)

    async def page(request: web.Request) -> web.Response:
        require(request, "supervisor")
        _ = Translator(request.get("lang", LANGS[0]))
        texts = {"console": _.prefix("console"), "reason": _.prefix("reason"),
                 "bucket": _.prefix("wallboard.bucket")}
        return render(request, "wallboard.html", title="wallboard", board=await wallboard.board(),
                      js_texts=texts)

    async def as_json(request: web.Request) -> web.Response:
        require(request, "supervisor")
        return web.json_response(await wallboard.board())

    async def events(request: web.Request) -> web.StreamResponse:
        require(request, "supervisor")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        changed = asyncio.Event()
        console.queue.listeners.append(changed.set)
        console.app.roster.listeners.append(changed.set)
        try:
            while True:
                board = await wallboard.board()
                await resp.write(f"event: board\ndata: {json.dumps(board)}\n\n".encode())
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PUSH_EVERY_S):  # 3.11's wait_for can lose a cancel
                        await changed.wait()
                await asyncio.sleep(1.0)  # at most one board a second
        except ConnectionResetError:
            pass
        finally:
            for listeners in (console.queue.listeners, console.app.roster.listeners):
                with contextlib.suppress(ValueError):
                    listeners.remove(changed.set)
        return resp

    web_app.router.add_get("/wallboard", page)
    web_app.router.add_get("/wallboard.json", as_json)
    web_app.router.add_get("/wallboard/events", events)
