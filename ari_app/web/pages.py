"""Server-rendered pages: login, operator console (+ SSE), agency ack link, complaint form, admin."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web
from sqlalchemy import select

from ari_app.admin_audit import record_admin_change
from ari_app.config import is_http_url
from ari_app.routing.states import REASONS
from ari_app.tickets.models import Agency, Notification, Ticket, User
from ari_app.web.actions import ActionError, site_categories
from ari_app.web.api import ticket_view
from ari_app.web.auth import (
    SESSION_COOKIE,
    SESSION_TTL,
    UserError,
    add_user,
    require,
    same_secret,
)
from ari_app.web.i18n import LANGS, Translator
from ari_app.web.incidents import candidates as incident_candidates
from ari_app.web.incidents import summary as incident_summary
from ari_app.web.links import LinkError
from ari_app.web.operator_console import (
    JS_PREFIXES,
    flagged_policy,
    live_state_view,
    may_play_recording,
    register_operator_console,
    request_profile,
)
from ari_app.web.ratelimit import client_ip

if TYPE_CHECKING:
    from ari_app.web.console import Console

log = logging.getLogger(__name__)
CARD_WRITES_WAIT_S = 1.0  # a slow database shows the card a little late, never not at all

HERE = Path(__file__).parent
MAP_URL = "https://www.openstreetmap.org/?mlat={lat}&mlon={lon}#map=17/{lat}/{lon}"


def _age(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def local_time(iso: str | None, tz: ZoneInfo) -> str:
    """An ISO instant from the database as the site's wall-clock time (operators think in WIB)."""
    if not iso:
        return ""
    at = datetime.fromisoformat(iso)
    if at.tzinfo is None:  # SQLite hands back naive UTC
        at = at.replace(tzinfo=UTC)
    return at.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["age"] = _age
    return env


def register_pages(web_app: web.Application, console: Console) -> None:
    app, auth, actions = console.app, console.auth, console.actions
    site = app.settings.site
    env = make_env()
    env.filters["local"] = lambda iso, width=19: local_time(iso, site.timezone)[:width]
    map_url = os.environ.get("SIAGA112_MAP_URL", MAP_URL)
    tiles = urlsplit(site.console.tile_url)  # the map's tiles are the only images from elsewhere
    csp = f"default-src 'self'; img-src 'self' data: {tiles.scheme}://{tiles.netloc}"

    def tr(request: web.Request) -> Translator:
        return Translator(request.get("lang", LANGS[0]))

    def render(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
        user = request.get("user")
        _ = tr(request)
        title = ctx.pop("title", "")
        html = env.get_template(name).render(site_name=site.name, user=user,
                                             csrf=user.csrf if user else "",
                                             title=_("title." + title, title) if title else "",
                                             map_url=map_url, lang=_.lang, langs=LANGS, _=_, **ctx)
        return web.Response(text=html, content_type="text/html", status=status,
                            headers={"Content-Security-Policy": csp,
                                     "X-Frame-Options": "DENY", "Cache-Control": "no-store"})

    def with_pre(request: web.Request, name: str, status: int = 200, **ctx: Any) -> web.Response:
        value, form_csrf = auth.pre_csrf(request)
        resp = render(request, name, status, form_csrf=form_csrf, **ctx)
        auth.set_pre_cookie(resp, value)
        return resp

    async def root(_: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/console")

    async def login_form(request: web.Request) -> web.Response:
        nxt = request.query.get("next", "/console")
        return with_pre(request, "login.html", title="login", next=nxt if nxt.startswith("/") else "/console",
                        error="")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        nxt = str(form.get("next", "/console"))
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/console"
        if not auth.check_pre_csrf(request, str(form.get("csrf", ""))):
            return with_pre(request, "login.html", 403, title="login", next=nxt,
                            error=tr(request)("login.expired"))
        result = await auth.attempt(str(form.get("username", "")), str(form.get("password", "")),
                                    client_ip(request))
        if result.user is None:
            resp = with_pre(request, "login.html", result.status, title="login", next=nxt,
                            error=result.message(tr(request)))
            if result.retry_after_s:
                resp.headers["Retry-After"] = str(result.retry_after_s)
            return resp
        user = result.user
        token, _ = await auth.login(user)
        resp = web.HTTPSeeOther(nxt)
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="Strict", path="/",
                        max_age=int(SESSION_TTL.total_seconds()), secure=request.secure)
        raise resp

    async def logout(request: web.Request) -> web.Response:
        await auth.logout(request)
        resp = web.HTTPSeeOther("/login")
        resp.del_cookie(SESSION_COOKIE, path="/")
        raise resp

    async def console_page(request: web.Request) -> web.Response:
        require(request, "operator")
        operator = request_profile(request).operator
        _ = tr(request)
        js_texts = {p: _.prefix(p) for p in JS_PREFIXES}
        async with app.sessions() as s:
            recent = list(await s.scalars(
                select(Ticket).where(Ticket.site == site.code,
                                     Ticket.status.in_(("new", "in_call", "classified", "dispatched",
                                                        "acknowledged", "abandoned")))
                .order_by(Ticket.id.desc()).limit(30)))
        return render(request, "console.html", title="console", recent=recent, operator=operator,
                      reasons=REASONS, js_texts=js_texts)

    async def card(request: web.Request) -> web.Response:
        user = require(request, "operator")
        # The card follows a live call: a key pressed while the phone rings is on the call bus
        # before the writer has put it in the database; read after what was journaled so far.
        with contextlib.suppress(TimeoutError):
            await app.writer.wait_applied(app.writer.last_seq, CARD_WRITES_WAIT_S)
        async with app.sessions() as s:
            t = await ticket_view(s, site.code, request.query.get("ref") or None,
                                  channel_id=request.query.get("call"), now=app.settings.clock.now())
            agencies = list(await s.scalars(select(Agency).where(Agency.site == site.code,
                                                                 Agency.active.is_(True))
                                            .order_by(Agency.code)))
            if t is not None:
                incident = await incident_summary(s, t["id"])
                suggested = await incident_candidates(s, site.code, t["reference"], site.console)
        if t is None:
            raise web.HTTPNotFound(text="no ticket yet")
        html = env.get_template("card.html").render(
            t=t, agencies=agencies, map_url=map_url, categories=site_categories(site),
            services=sorted(site.other_services.items()), _=tr(request),
            tile_url=site.console.tile_url, tile_attribution=site.console.tile_attribution,
            flagged=flagged_policy(t.get("policy")), incident=incident, candidates=suggested,
            supervisor=user.has("supervisor"),
            may_play=may_play_recording(user, request_profile(request), t))
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        require(request, "operator")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        calls = app.live.listen()
        out: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

        def on_ticket(change: dict[str, Any]) -> None:
            out.put_nowait(("ticket", change))

        def on_queue() -> None:
            if not queue_pending:
                queue_pending.append(True)
                out.put_nowait(("queue", {}))
                if cluster is not None:  # another node's claims changed: am I on a call there?
                    on_roster()

        operator = request_profile(request).operator
        shown_me: list[dict[str, Any]] = []

        def on_roster() -> None:
            if operator is not None:
                out.put_nowait(("me", {}))

        queue_pending: list[bool] = []

        async def pump() -> None:
            while True:
                change = await calls.get()
                out.put_nowait(("call", {**change, "node": app.settings.node}
                                if app.settings.node else change))

        refs: dict[str, str] = {}

        async def enrich(change: dict[str, Any]) -> dict[str, Any]:
            cid = str(change.get("call"))
            if cid not in refs and change.get("stage") != "ended":
                with contextlib.suppress(Exception):
                    async with app.sessions() as s:
                        ref = await s.scalar(select(Ticket.reference).where(Ticket.channel_id == cid))
                    if ref:
                        refs[cid] = ref
            return {**change, "reference": refs.get(cid)}

        def on_remote_call(change: dict[str, Any]) -> None:  # another node's call
            out.put_nowait(("call", change))

        cluster = console.cluster
        console.bus.subscribe(on_ticket)
        console.queue.listeners.append(on_queue)
        app.roster.listeners.append(on_roster)
        if cluster is not None:
            cluster.call_listeners.add(on_remote_call)
        task = asyncio.create_task(pump())
        try:
            node = app.settings.node
            for state in list(app.live.state.values()):
                state = {**state, "node": node} if node else state
                await resp.write(f"event: call\ndata: {json.dumps(await enrich(state))}\n\n".encode())
            for state in list(cluster.calls.values()) if cluster is not None else []:
                await resp.write(f"event: call\ndata: {json.dumps(await enrich(state))}\n\n".encode())
            on_queue()
            on_roster()
            while True:
                try:
                    async with asyncio.timeout(15):  # 3.11's wait_for can lose a cancel
                        kind, change = await out.get()
                except TimeoutError:
                    await resp.write(b": keep-alive\n\n")
                    continue
                if kind == "queue":
                    queue_pending.clear()
                    change = console.queue.snapshot()
                if kind == "me" and operator is not None:
                    change = live_state_view(console, operator)
                    if shown_me and shown_me[0] == change:
                        continue  # the roster refreshes every 2 s: send only what changed
                    shown_me[:] = [change]
                if kind == "call":
                    change = await enrich(change)
                    if change["reference"] is None and change.get("stage") != "ended":
                        await asyncio.sleep(0.3)  # the ticket row is written just after 'arrived'
                        change = await enrich(change)
                await resp.write(f"event: {kind}\ndata: {json.dumps(change, default=str)}\n\n".encode())
        except ConnectionResetError:
            pass  # the browser went away (a cancellation on shutdown propagates)
        finally:
            task.cancel()
            console.bus.unsubscribe(on_ticket)
            if cluster is not None:
                cluster.call_listeners.discard(on_remote_call)
            with contextlib.suppress(ValueError):
                console.queue.listeners.remove(on_queue)
            with contextlib.suppress(ValueError):
                app.roster.listeners.remove(on_roster)
            app.live.unlisten(calls)
        return resp

    async def _ack_context(token: str) -> tuple[int, dict[str, Any], str]:
        nid = console.signer.verify(token, app.settings.clock.now())
        async with app.sessions() as s:
            n = await s.get(Notification, nid)
            if n is None:
                raise LinkError("this notification no longer exists")
            ticket = await s.get(Ticket, n.ticket_id)
            agency = await s.get(Agency, n.agency_id)
            assert ticket is not None and agency is not None
            t = await ticket_view(s, site.code, ticket.reference, now=app.settings.clock.now())
        assert t is not None
        return nid, t, agency.name

    async def ack_page(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            _, t, agency = await _ack_context(token)
        except LinkError as exc:
            return render(request, "ack.html", 403, title="link", error=str(exc), form_csrf="")
        return render(request, "ack.html", title=t["reference"], error="", t=t, agency=agency,
                      done=request.query.get("done", ""), form_csrf=console.signer.form_token(token))

    async def ack_post(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            nid, t, agency = await _ack_context(token)
        except LinkError as exc:
            return render(request, "ack.html", 403, title="link", error=str(exc), form_csrf="")
        form = await request.post()
        if not same_secret(str(form.get("csrf", "")), console.signer.form_token(token)):
            raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page")
        try:
            await actions.agency_step(nid, str(form.get("action", "")),
                                      evidence=str(form.get("evidence", ""))[:4000],
                                      photo_url=str(form.get("photo_url", "")).strip())
        except ActionError as exc:
            return render(request, "ack.html", exc.status, title=t["reference"], error="", t=t,
                          agency=agency, done=f"not saved: {exc.message}",
                          form_csrf=console.signer.form_token(token))
        raise web.HTTPSeeOther(f"/ack/{token}?done=saved")

    async def complaint_form(request: web.Request) -> web.Response:
        return with_pre(request, "complaint.html", title="complaint", ref=request.query.get("ref", ""),
                        categories=sorted({*site_categories(site), "complaint"}))

    async def admin_page(request: web.Request, message: str = "") -> web.Response:
        require(request, "admin")
        async with app.sessions() as s:
            users = list(await s.scalars(select(User).order_by(User.username)))
            agencies = list(await s.scalars(select(Agency).where(Agency.site == site.code)
                                            .order_by(Agency.code)))
        return render(request, "admin.html", title="admin", users=users, agencies=agencies,
                      message=message)

    async def admin_get(request: web.Request) -> web.Response:
        return await admin_page(request)

    async def admin_add_user(request: web.Request) -> web.Response:
        admin = require(request, "admin")
        form = await request.post()
        try:
            async with app.sessions() as s, s.begin():
                password = await add_user(s, str(form.get("username", "")), str(form.get("role", "")),
                                          None, app.settings.clock.now(),
                                          actor=f"console:{admin.username}")
        except UserError as exc:
            return await admin_page(request, f"not added: {exc}")
        name = str(form.get("username", ""))
        log.info("admin %s added user %s", admin.username, name)
        return await admin_page(request, f"user {name} added; password (shown once): {password}")

    async def admin_agency(request: web.Request) -> web.Response:
        admin = require(request, "admin")
        form = await request.post()
        url = str(form.get("webhook_url", "")).strip()
        if url and not is_http_url(url):
            return await admin_page(request, "webhook URL must be http(s)")
        async with app.sessions() as s, s.begin():
            agency = await s.scalar(select(Agency).where(Agency.site == site.code,
                                                         Agency.code == str(form.get("code", ""))))
            if agency is None:
                return await admin_page(request, f"no agency {str(form.get('code', ''))[:32]!r}")
            if agency.webhook_url != url:
                await record_admin_change(s, actor=f"console:{admin.username}", entity="agency",
                                          key=agency.code, action="webhook set",
                                          before={"webhook_url": agency.webhook_url},
                                          after={"webhook_url": url}, at=app.settings.clock.now())
                agency.webhook_url = url
        log.info("admin %s set webhook of %s", admin.username, form.get("code"))
        return await admin_page(request, "saved")

    from ari_app.web.kpi import register_kpi
    from ari_app.web.kpi_states import register_kpi_states
    from ari_app.web.wallboard import register_wallboard

    r = web_app.router
    r.add_get("/", root)
    r.add_get("/login", login_form)
    r.add_post("/login", login)
    r.add_post("/logout", logout)
    r.add_get("/console", console_page)
    r.add_get("/console/card", card)
    r.add_get("/console/events", events)
    r.add_get("/ack/{token}", ack_page)
    r.add_post("/ack/{token}", ack_post)
    r.add_get("/complaint", complaint_form)
    r.add_get("/admin", admin_get)
    r.add_post("/admin/users", admin_add_user)
    r.add_post("/admin/agencies", admin_agency)
    r.add_static("/static/", HERE / "static")
    register_kpi(web_app, console, render)
    register_kpi_states(web_app, console, render)
    register_operator_console(web_app, console, render, env, tr)
    register_wallboard(web_app, console, render)
