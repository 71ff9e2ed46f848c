"""The operator's side of the console: language, ready state, recordings, closing tickets.

Routes under /console/ are for logged-in browsers (session cookie + CSRF header), not part of
the public REST API documented at /api/v1/openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from sqlalchemy import select

from ari_app.ari import AriError
from ari_app.routing.roster import Roster
from ari_app.routing.states import NOT_READY, WRAP_UP, StateError
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.auth import AuthUser, require
from ari_app.web.callbacks import (
    OUTCOMES,
    CallbackError,
    claim,
    dial_params,
    owned,
    record_attempt,
    worklist,
)
from ari_app.web.i18n import LANGS, Translator, pick_lang
from ari_app.web.incidents import IncidentError, incident_reference
from ari_app.web.incidents import link as link_incident
from ari_app.web.incidents import unlink as unlink_incident
from ari_app.web.live_calls import ACTIONS, Actor, is_local
from ari_app.web.profiles import Profile, ProfileError, profile_of, set_lang

if TYPE_CHECKING:
    from ari_app.web.console import Console

log = logging.getLogger(__name__)

LANG_COOKIE = "siaga112_lang"
JS_PREFIXES = ("console", "state", "reason", "queue", "badge", "stage", "status", "category")
CLOSE_STATUSES = ("resolved", "closed")
Render = Callable[..., web.Response]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_profile(request: web.Request) -> Profile:
    found: Profile = request.get("profile", Profile())
    return found


def flagged_policy(policy: str | None) -> bool:
    """The screening AGI flagged this number (recent pranks/ghost calls): warned, lower priority."""
    return bool(policy and ("flagged" in policy or policy.startswith("warned")))


def may_play_recording(user: AuthUser, profile: Profile, ticket: dict[str, Any]) -> bool:
    """A supervisor (or admin), or the operator who took the call; nobody else."""
    if user.has("supervisor"):
        return True
    return profile.operator is not None and profile.operator == ticket.get("operator")


def state_view(roster: Roster, operator: str) -> dict[str, Any]:
    """What the operator's own bar shows: state, reason, wrap-up left, phone, on shift, on a call."""
    state = roster.states.get(operator)
    now = roster.clock.now()
    shown = state.effective(now)
    left = None
    if shown == WRAP_UP and state.until is not None:
        left = max(0, round((state.until - now).total_seconds()))
    return {"operator": operator, "state": shown, "reason": state.reason if shown == NOT_READY else None,
            "wrap_up_left_s": left, "registered": roster.reachable.get(operator, False),
            "on_shift": operator in roster.on_shift,
            "in_call": operator in roster.reserved or operator in roster.in_use}


def live_state_view(console: Console, operator: str) -> dict[str, Any]:
    """``state_view``, and with several nodes: on a call if any node holds them (``call_node``)."""
    view = state_view(console.app.roster, operator)
    if console.cluster is not None:
        view["call_node"] = console.cluster.busy(operator)
        if view["call_node"] is not None:
            view["in_call"] = True
    return view


def lang_middleware(console: Console) -> Any:
    site_lang = console.app.settings.site.languages[0] if console.app.settings.site.languages else None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        user: AuthUser | None = request.get("user")
        asked = request.query.get("lang")
        profile = Profile()
        if user is not None and user.csrf is not None:  # a browser session (API clients: no page)
            try:
                async with console.app.sessions() as s:
                    profile = await profile_of(s, user.id)
            except Exception as exc:  # the page still renders, in the site's language
                log.warning("user %s: console profile not readable (%s)", user.username, exc)
        request["profile"] = profile
        request["lang"] = pick_lang(profile.lang, asked, request.cookies.get(LANG_COOKIE), site_lang)
        resp = await handler(request)
        if asked in LANGS and user is None:
            resp.set_cookie(LANG_COOKIE, str(asked), samesite="Strict", path="/", httponly=True)
        return resp

    return middleware


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPUnprocessableEntity(text=json.dumps({"error": "body is not JSON"}),
                                              content_type="application/json") from None
        if not isinstance(body, dict):
            raise web.HTTPUnprocessableEntity(text=json.dumps({"error": "body must be an object"}),
                                              content_type="application/json")
        return body
    return {k: str(v) for k, v in (await request.post()).items()}


def _inside(path: Path, var_dir: Path) -> Path | None:
    """The recording file, if it exists under var/ (a path from the database is not trusted)."""
    file = path.resolve()
    return file if file.is_relative_to(var_dir.resolve()) and file.is_file() else None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def run_live_action(console: Console, kind: str, request: web.Request, user: AuthUser,
                          body: dict[str, Any] | None = None) -> web.Response:
    """An action on a live call, here when the call is this node's, else on the node that
    holds it (several nodes on one PostgreSQL: see cluster.py)."""
    call_id = request.match_info["call"]
    if body is None:
        body = await _body(request)
    actor = Actor(user.username, user.role, request_profile(request).operator)
    app = console.app
    if console.cluster is not None and not is_local(app, call_id):
        status, result = await console.cluster.forward(kind, actor, call_id, body)
    else:
        status, result = await ACTIONS[kind](app, actor, call_id, body)
    return web.json_response(result, status=status)


def register_operator_console(web_app: web.Application, console: Console, render: Render,
                              env: jinja2.Environment,
                              tr: Callable[[web.Request], Translator]) -> None:
    app = console.app
    site = app.settings.site

    async def set_language(request: web.Request) -> web.StreamResponse:
        user = require(request, "operator")
        body = await _body(request)
        try:
            async with app.sessions() as s, s.begin():
                await set_lang(s, user.username, str(body.get("lang", "")))
        except ProfileError as exc:
            return _error(422, str(exc))
        if request.content_type == "application/json":
            return web.json_response({"lang": body["lang"]})
        back = request.headers.get("Referer", "/console")
        raise web.HTTPSeeOther(back if back.startswith(("/", "http")) else "/console")

    async def my_state(request: web.Request) -> web.Response:
        require(request, "operator")
        operator = request_profile(request).operator
        if operator is None:
            return _error(409, "this user is not linked to a SIP operator")
        return web.json_response(live_state_view(console, operator))

    async def set_state(request: web.Request) -> web.Response:
        user = require(request, "operator")
        operator = request_profile(request).operator
        if operator is None:
            return _error(409, "this user is not linked to a SIP operator")
        body = await _body(request)
        state = str(body.get("state", ""))
        if state == WRAP_UP:
            return _error(422, "state: wrap-up starts by itself after a call; expected ready or not_ready")
        reason = body.get("reason")
        try:
            app.states.set(operator, state, actor=user.username,
                           reason=str(reason) if reason is not None else None)
        except StateError as exc:
            return _error(422, str(exc))
        return web.json_response(live_state_view(console, operator))

    async def recording(request: web.Request) -> web.StreamResponse:
        user = require(request, "operator")
        ref = request.match_info["ref"]
        now = app.settings.clock.now()
        async with app.sessions() as s, s.begin():
            t = await s.scalar(select(Ticket).where(Ticket.site == site.code, Ticket.reference == ref))
            if t is None:
                raise web.HTTPNotFound(text="no such ticket")
            allowed = may_play_recording(user, request_profile(request), {"operator": t.operator})
            s.add(TicketAudit(ticket_id=t.id, at=now, actor=user.username,
                              action="recording played" if allowed else "recording refused",
                              detail=json.dumps({"range": request.headers.get("Range", "")})))
            path = t.recording_path
        if not allowed:
            log.warning("ticket=%s user %s refused the recording (took it: %s)", ref,
                        user.username, t.operator)
            raise web.HTTPForbidden(text="only a supervisor or the operator who took the call")
        if not path:
            raise web.HTTPNotFound(text="no recording")
        file = await asyncio.to_thread(_inside, Path(path), app.settings.var_dir)
        if file is None:
            log.error("ticket=%s recording %s missing or outside var/", ref, path)
            raise web.HTTPNotFound(text="recording file not found")
        log.info("ticket=%s recording played by %s", ref, user.username)
        return web.FileResponse(file, headers={"Content-Type": "audio/wav",
                                               "Cache-Control": "no-store"})

    async def close_ticket(request: web.Request) -> web.Response:
        user = require(request, "operator")
        ref = request.match_info["ref"]
        body = await _body(request)
        status, note = str(body.get("status", "")), str(body.get("note", "")).strip()
        if status not in CLOSE_STATUSES:
            return _error(422, f"status: expected one of {', '.join(CLOSE_STATUSES)}, got {status!r}")
        if not note:
            return _error(422, "note: expected what was done (a closing note), got nothing")
        now = app.settings.clock.now()
        async with app.sessions() as s, s.begin():
            t = await s.scalar(select(Ticket).where(Ticket.site == site.code, Ticket.reference == ref)
                               .with_for_update())
            if t is None:
                return _error(404, f"no ticket {ref}")
            if t.status == "closed" or (t.status == "resolved" and status == "resolved"):
                return _error(409, f"ticket {ref} is already {t.status}")
            previous = t.status
            t.status = status
            t.notes = f"{t.notes}\n{note}".strip() if t.notes else note
            s.add(TicketAudit(ticket_id=t.id, at=now, actor=user.username, action=status,
                              detail=json.dumps({"note": note, "from": previous})))
        log.info("ticket=%s %s by %s", ref, status, user.username)
        console.bus.publish(ref, status, action=status)
        return web.json_response({"reference": ref, "status": status})

    async def callbacks_page(request: web.Request, message: str = "", failed: bool = False
                             ) -> web.Response:
        user = require(request, "operator")
        async with app.sessions() as s:
            rows = await worklist(s, site.code)
        return render(request, "callbacks.html", title="callbacks", rows=rows, me=user.username,
                      operator=request_profile(request).operator, outcomes=OUTCOMES,
                      message=message or request.query.get("done", ""), failed=failed)

    async def callback_step(request: web.Request) -> web.Response:
        user = require(request, "operator")
        ref, step = request.match_info["ref"], request.match_info["step"]
        _ = tr(request)
        form = await _body(request)
        now = app.settings.clock.now()
        try:
            if step == "claim":
                async with app.sessions() as s, s.begin():
                    await claim(s, site.code, ref, user.username, now)
                done = f"{ref}: {_('callbacks.claimed_by_you')}"
            elif step == "attempts":
                outcome = str(form.get("outcome", ""))
                async with app.sessions() as s, s.begin():
                    reached = await record_attempt(s, site.code, ref, user.username, outcome,
                                                   str(form.get("note", "")).strip(), now)
                done = f"{ref}: {_('outcome.' + outcome)}" + (f" · {_('callbacks.done')}" if reached else "")
                if reached:
                    console.bus.publish(ref, "callback", action="callback reached")
            elif step == "call":
                done = await click_to_call(request, user, ref, now)
            else:
                raise web.HTTPNotFound()
        except CallbackError as exc:
            return await callbacks_page(request, exc.message, failed=True)
        log.info("ticket=%s callback %s by %s", ref, step, user.username)
        raise web.HTTPSeeOther("/console/callbacks?" + urlencode({"done": done}))

    async def click_to_call(request: web.Request, user: AuthUser, ref: str, now: Any) -> str:
        operator = request_profile(request).operator
        if operator is None:
            raise CallbackError(409, "this user is not linked to a SIP operator")
        async with app.sessions() as s, s.begin():
            t = await owned(s, site.code, ref, user.username)
            params = dial_params(t, operator)
            s.add(TicketAudit(ticket_id=t.id, at=now, actor=user.username, action="callback dialled",
                              detail=json.dumps({"operator": operator})))
        try:
            await app.ari.post("channels", body={"variables": {"SIAGA_CALLBACK_REF": ref}}, **params)
        except AriError as exc:
            log.error("ticket=%s click-to-call operator=%s failed: %s", ref, operator, exc)
            raise CallbackError(502, f"the phone system refused the call: {exc}") from None
        log.info("ticket=%s click-to-call: ringing operator=%s, then %s", ref, operator,
                 params["extension"])
        return f"{ref}: {tr(request)('callbacks.call')} → {operator}"

    async def incident_step(request: web.Request) -> web.Response:
        user = require(request, "operator")
        step = request.match_info["step"]
        body = await _body(request)
        now = app.settings.clock.now()
        ref = str(body.get("ticket", ""))
        try:
            async with app.sessions() as s, s.begin():
                if step == "link":
                    incident = await link_incident(s, site.code, [ref, str(body.get("with", ""))],
                                                   user.username, now)
                    result: dict[str, str | None] = {"incident": incident_reference(incident.id)}
                elif step == "unlink":
                    await unlink_incident(s, site.code, ref, user.username, now)
                    result = {"incident": None}
                else:
                    raise web.HTTPNotFound()
        except IncidentError as exc:
            return _error(exc.status, exc.message)
        log.info("ticket=%s incident %s by %s: %s", ref, step, user.username, result)
        console.bus.publish(ref, "incident", action=step)
        return web.json_response(result)

    async def supervise(request: web.Request) -> web.Response:
        """Listen / whisper / barge: the supervisor's own phone rings and joins by ChanSpy."""
        user = require(request, "supervisor")
        return await run_live_action(console, "supervise", request, user)

    async def handover(request: web.Request) -> web.Response:
        """Warm transfer (leave the caller with the agency already on the line) or blind
        transfer (dial an agency; the operator leaves as soon as it answers)."""
        user = require(request, "operator")
        return await run_live_action(console, "handover", request, user)

    r = web_app.router
    r.add_post("/console/calls/{call}/handover", handover)
    r.add_post("/console/calls/{call}/supervise", supervise)
    r.add_post("/console/incidents/{step}", incident_step)
    r.add_get("/console/callbacks", callbacks_page)
    r.add_post("/console/callbacks/{ref}/{step}", callback_step)
    r.add_post("/console/lang", set_language)
    r.add_get("/console/state", my_state)
    r.add_post("/console/state", set_state)
    r.add_get("/console/recording/{ref}", recording)
    r.add_post("/console/tickets/{ref}/close", close_ticket)
    _ = env
