"""REST API /api/v1: tickets, classify, dispatch, complaints, agency acknowledgement, OpenAPI."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ari_app.admin import ticket_dict
from ari_app.secrets import secret
from ari_app.tickets.models import Agency, LocationRecord, Notification, Ticket, TicketAudit
from ari_app.web.actions import SCREEN_STATUSES, ActionError, site_categories
from ari_app.web.auth import clear_lock, current_user, list_locks, require, same_secret
from ari_app.web.links import LinkError
from ari_app.web.openapi import openapi_document
from ari_app.web.operator_console import run_live_action
from ari_app.web.ratelimit import COMPLAINTS_LIMITER, client_ip, too_many_requests

if TYPE_CHECKING:
    from ari_app.web.console import Console

log = logging.getLogger(__name__)

MAX_ID = 2**31 - 1
PHONE = re.compile(r"\+?[0-9][0-9 \-]{5,19}")


def _iso(v: datetime | None) -> str | None:
    return v.isoformat() if v is not None else None


async def ticket_view(s: AsyncSession, site: str, reference: str | None = None, *,
                      channel_id: str | None = None, now: datetime) -> dict[str, Any] | None:
    """Everything the console card and GET /tickets/{ref} show about one ticket."""
    q = select(Ticket).where(Ticket.site == site)
    q = q.where(Ticket.reference == reference) if reference else q.where(Ticket.channel_id == channel_id)
    t = await s.scalar(q)
    if t is None:
        return None
    data = ticket_dict(t)
    data["caller_key"], data["outcome"], data["id"] = t.caller_key, t.outcome, t.id
    data["channel_id"] = t.channel_id
    audit = await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == t.id)
                            .order_by(TicketAudit.id))
    data["audit"] = [{"at": a.at.isoformat(), "actor": a.actor, "action": a.action,
                      "detail": json.loads(a.detail or "{}")} for a in audit]
    locs = await s.scalars(select(LocationRecord).where(LocationRecord.ticket_id == t.id)
                           .order_by(LocationRecord.received_at.desc()))
    data["locations"] = [{"source": loc.source, "latitude": loc.latitude, "longitude": loc.longitude,
                          "radius_m": loc.radius_m, "method": loc.method, "civic": loc.civic,
                          "received_at": loc.received_at.isoformat(),
                          "age_s": round((now - loc.received_at).total_seconds())} for loc in locs]
    rows = await s.execute(select(Notification, Agency.code).join(Agency, Agency.id == Notification.agency_id)
                           .where(Notification.ticket_id == t.id).order_by(Notification.id))
    data["notifications"] = [{"id": n.id, "agency": code, "status": n.status, "attempts": n.attempts,
                              "last_error": n.last_error, "delivered_at": _iso(n.delivered_at),
                              "acknowledged_at": _iso(n.acknowledged_at),
                              "resolved_at": _iso(n.resolved_at), "evidence": n.evidence,
                              "photo_url": n.photo_url} for n, code in rows]
    earlier: list[dict[str, Any]] = []
    if t.caller_key:
        prev = await s.scalars(select(Ticket).where(Ticket.caller_key == t.caller_key,
                                                    Ticket.id != t.id)
                               .order_by(Ticket.arrived_at.desc()).limit(10))
        earlier = [{"reference": p.reference, "arrived_at": p.arrived_at.isoformat(),
                    "category": p.category, "status": p.status, "outcome": p.outcome} for p in prev]
    data["earlier_tickets"] = earlier
    return data


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise web.HTTPUnprocessableEntity(text=json.dumps({"error": "body is not JSON"}),
                                          content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPUnprocessableEntity(text=json.dumps({"error": "body must be a JSON object"}),
                                          content_type="application/json")
    if not storable(body):
        raise web.HTTPUnprocessableEntity(text=json.dumps({"error": NOT_TEXT}),
                                          content_type="application/json")
    return body


NOT_TEXT = "text must be valid Unicode without NUL characters"


def storable(value: Any, depth: int = 0) -> bool:
    """False when a string anywhere in a JSON value holds NUL or a lone surrogate (a JSON
    \\ud800 escape): neither can be stored (PostgreSQL text refuses NUL, UTF-8 surrogates)."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if depth > 50:
        return False
    if isinstance(value, dict):
        return all(storable(k, depth + 1) and storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v, depth + 1) for v in value)
    return True


def validate(body: dict[str, Any], fields: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """A small JSON-schema subset (type, enum, lengths, pattern, required, no unknown keys)."""
    errors = [{"field": k, "message": "unknown field"} for k in sorted(set(body) - set(fields))]
    for name, rule in fields.items():
        if name not in body:
            if rule.get("required"):
                errors.append({"field": name, "message": "required"})
            continue
        v = body[name]
        kind = rule["type"]
        if kind == "string" and not isinstance(v, str):
            errors.append({"field": name, "message": f"expected a string, got {type(v).__name__}"})
        elif kind == "array" and not (isinstance(v, list) and all(isinstance(i, str) for i in v)):
            errors.append({"field": name, "message": "expected a list of strings"})
        elif kind == "string":
            if "\x00" in v:  # PostgreSQL text cannot store it; say so instead of failing
                errors.append({"field": name, "message": "must not contain NUL characters"})
            elif len(v) < rule.get("minLength", 0):
                errors.append({"field": name, "message": f"at least {rule['minLength']} characters"})
            elif len(v) > rule.get("maxLength", 10**6):
                errors.append({"field": name, "message": f"at most {rule['maxLength']} characters"})
            elif "enum" in rule and v not in rule["enum"]:
                errors.append({"field": name, "message": f"expected one of {rule['enum']}"})
            elif "pattern" in rule and not re.fullmatch(rule["pattern"], v):
                errors.append({"field": name, "message": rule.get("hint", "bad format")})
    return errors


def whatsapp_signature_refusal(var_dir: Path, secret_name: str, header: str,
                               raw: bytes) -> tuple[int, str] | None:
    """None when ``header`` is ``sha256=<hex HMAC-SHA256 of raw>`` under the WhatsApp app secret
    (var/secrets/<secret_name>, put there by `siaga112 whatsapp secret`); else (status, reason)."""
    path = var_dir / "secrets" / secret_name
    try:
        app_secret = path.read_text().strip()
    except OSError:
        app_secret = ""
    if not app_secret:
        return 503, (f"WhatsApp app secret not configured ({path} is missing or empty): run "
                     "`siaga112 whatsapp secret`; the message is refused, not stored")
    if not header:
        return 401, "X-Hub-Signature-256 missing: the sender is not proven"
    expected = "sha256=" + hmac.new(app_secret.encode(), raw, hashlib.sha256).hexdigest()
    if not same_secret(header.strip().lower(), expected):
        return 403, "X-Hub-Signature-256 does not match the body (wrong app secret or altered body)"
    return None


def whatsapp_messages(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(phone, name, text) for every text message in a Cloud API webhook; other kinds skipped."""
    out = []
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise ValueError('"entry" must be a list')
    for entry in entries:
        for change in (entry.get("changes") or []) if isinstance(entry, dict) else []:
            value = change.get("value") if isinstance(change, dict) else None
            if not isinstance(value, dict):
                continue
            names = {c.get("wa_id"): (c.get("profile") or {}).get("name", "")
                     for c in value.get("contacts") or [] if isinstance(c, dict)}
            for msg in value.get("messages") or []:
                if not isinstance(msg, dict) or msg.get("type") != "text":
                    continue
                text = (msg.get("text") or {}).get("body")
                sender = msg.get("from")
                if not isinstance(text, str) or not isinstance(sender, str):
                    raise ValueError("a text message needs from and text.body")
                name = names.get(sender, "")
                out.append(("+" + sender.lstrip("+"), name if isinstance(name, str) else "", text))
    return out


def complaint_fields(categories: list[str]) -> dict[str, dict[str, Any]]:
    return {
        "description": {"type": "string", "required": True, "minLength": 10, "maxLength": 2000},
        "phone": {"type": "string", "required": True, "minLength": 6, "maxLength": 20,
                  "pattern": PHONE.pattern, "hint": "a phone number: digits, spaces, -, leading +"},
        "name": {"type": "string", "maxLength": 100},
        "category": {"type": "string", "enum": categories},
    }


CLASSIFY_FIELDS: dict[str, dict[str, Any]] = {
    "category": {"type": "string", "maxLength": 32},
    "kind": {"type": "string", "enum": ["emergency", "complaint", "information"]},
    "notes": {"type": "string", "maxLength": 4000},
    "status": {"type": "string", "enum": list(SCREEN_STATUSES)},
}
DISPATCH_FIELDS: dict[str, dict[str, Any]] = {"agencies": {"type": "array", "required": True}}
ACK_FIELDS: dict[str, dict[str, Any]] = {
    "action": {"type": "string", "required": True, "enum": ["acknowledge", "resolve"]},
    "evidence": {"type": "string", "maxLength": 4000},
    "photo_url": {"type": "string", "maxLength": 1000, "pattern": r"https?://\S+",
                  "hint": "an http(s) link"},
}


@web.middleware
async def json_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """API clients get every error as JSON {"error": ...}: unknown paths, wrong methods, a body
    over the size limit (aiohttp raises those as plain text). Path and query values that cannot
    be stored or compared (NUL, lone surrogates) are refused before any handler sees them."""
    if request.path.startswith("/api/"):
        if not storable(list(request.match_info.values())):
            return _error(404, "not found: " + NOT_TEXT)  # no ticket or token can hold these
        if not storable([*request.query.keys(), *request.query.values()]):
            return _error(422, NOT_TEXT)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if (not request.path.startswith("/api/") or exc.status < 400
                or exc.content_type == "application/json"):
            raise
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return web.json_response({"error": exc.reason}, status=exc.status, headers=headers)


def register_api(web_app: web.Application, console: Console) -> None:
    app, actions = console.app, console.actions
    site = app.settings.site

    async def list_tickets(request: web.Request) -> web.Response:
        require(request, "operator")
        status = request.query.get("status")
        raw = request.query.get("limit", "50").strip()
        if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < 1:  # no negative LIMIT for SQL
            return _error(422, "limit: expected an integer from 1 to 500")
        limit = min(int(raw), 500)
        async with app.sessions() as s:
            q = select(Ticket).where(Ticket.site == site.code)
            if status:
                q = q.where(Ticket.status == status)
            if request.query.get("callback", "0") not in ("0", "1"):
                return _error(422, "callback: expected 0 or 1")
            if request.query.get("callback") == "1":
                q = q.where(Ticket.callback_needed.is_(True))
            rows = await s.scalars(q.order_by(Ticket.id.desc()).limit(limit))
            return web.json_response({"tickets": [ticket_dict(t) for t in rows]})

    async def get_ticket(request: web.Request) -> web.Response:
        require(request, "operator")
        async with app.sessions() as s:
            data = await ticket_view(s, site.code, request.match_info["ref"],
                                     now=app.settings.clock.now())
        return web.json_response(data) if data else _error(404, "no such ticket")

    async def classify(request: web.Request) -> web.Response:
        user = require(request, "operator")
        body = await _json_body(request)
        fields = CLASSIFY_FIELDS | {"category": {"type": "string",
                                                 "enum": site_categories(site)}}
        errors = validate(body, fields)
        if errors:
            return _error(422, "invalid body", errors=errors)
        try:
            status = await actions.classify(request.match_info["ref"], user.username, **body)
        except ActionError as exc:
            return _error(exc.status, exc.message)
        return web.json_response({"reference": request.match_info["ref"], "status": status})

    async def dispatch(request: web.Request) -> web.Response:
        user = require(request, "operator")
        body = await _json_body(request)
        errors = validate(body, DISPATCH_FIELDS)
        if errors:
            return _error(422, "invalid body", errors=errors)
        try:
            ids = await actions.dispatch(request.match_info["ref"], body["agencies"], user.username)
        except ActionError as exc:
            return _error(exc.status, exc.message)
        return web.json_response({"reference": request.match_info["ref"], "status": "dispatched",
                                  "notifications": ids}, status=201)

    async def complaints(request: web.Request) -> web.Response:
        limiter = request.app.get(COMPLAINTS_LIMITER)
        wait = limiter.acquire(client_ip(request)) if limiter is not None else 0.0
        if wait > 0:  # refused before the body is read: nothing of it is stored
            log.warning("complaint from %s refused: over the rate limit", client_ip(request))
            return too_many_requests(wait, "from this address")
        form = request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data")
        if form:
            try:
                data = dict(await request.post())
            except ValueError as exc:  # e.g. multipart without a boundary
                return _error(400, f"malformed form body: {exc}")
            if not storable([*data, *(str(v) for v in data.values())]):
                return _error(422, NOT_TEXT)
            csrf = str(data.pop("csrf", ""))
            if not console.auth.check_pre_csrf(request, csrf):
                return _error(403, "CSRF token missing or wrong: reload the form")
            body: dict[str, Any] = {k: str(v) for k, v in data.items() if str(v) != ""}
            actor = "web-form"
        else:
            user = await console.auth.user(request)
            if user is None:
                return _error(401, "authentication required (or use the public form at /complaint)")
            if user.csrf is not None and not same_secret(
                    request.headers.get("X-CSRF-Token", ""), user.csrf):
                return _error(403, "CSRF token missing or wrong")
            body = await _json_body(request)
            actor = user.username
        errors = validate(body, complaint_fields(sorted({*site_categories(site), "complaint"})))
        if errors:
            return _error(422, "invalid complaint", errors=errors)
        ref = await actions.create_complaint(description=body["description"], phone=body["phone"],
                                             name=body.get("name", ""),
                                             category=body.get("category", "complaint"), actor=actor)
        if form:
            raise web.HTTPSeeOther(f"/complaint?ref={ref}")
        return web.json_response({"reference": ref, "status": "new"}, status=201)

    async def call_agency(request: web.Request) -> web.Response:
        """Conference an agency (110, 113, 118...) into a live call through the trunk."""
        user = require(request, "operator")
        if user.csrf is not None and not same_secret(request.headers.get("X-CSRF-Token", ""),
                                                     user.csrf):
            return _error(403, "CSRF token missing or wrong")
        body = await _json_body(request)
        numbers = sorted(set(site.other_services.values()))
        errors = validate(body, {"number": {"type": "string", "required": True, "enum": numbers}})
        if errors:
            return _error(422, "invalid body", errors=errors)
        return await run_live_action(console, "agency", request, user, body)

    async def whatsapp(request: web.Request) -> web.Response:
        """A WhatsApp Cloud API webhook mapped onto complaints, one per text message. The sender
        is proven by X-Hub-Signature-256 (HMAC-SHA256 of the raw body with the app secret);
        every refusal is stored as an input rejection with the raw body."""
        limiter = request.app.get(COMPLAINTS_LIMITER)
        wait = limiter.acquire(client_ip(request)) if limiter is not None else 0.0
        if wait > 0:
            return too_many_requests(wait, "from this address")
        raw = await request.read()
        refusal = whatsapp_signature_refusal(app.settings.var_dir, site.web.whatsapp_app_secret,
                                             request.headers.get("X-Hub-Signature-256", ""), raw)
        if refusal is not None:
            status, reason = refusal
            app.locations.rejected("whatsapp", client_ip(request), reason,
                                   raw[:65536].decode("utf-8", "replace"), app.settings.clock.now())
            return _error(status, reason)
        body = await _json_body(request)
        try:
            messages = whatsapp_messages(body)
        except ValueError as exc:
            return _error(422, f"not a WhatsApp webhook body: {exc}")
        checked = []
        for phone, name, text in messages:  # all checked first: a bad message stores nothing
            errors = validate({"description": text, "phone": phone, "name": name},
                              complaint_fields(["complaint"]))
            if errors:
                return _error(422, "invalid message", errors=errors)
            checked.append((phone, name, text))
        refs = [await actions.create_complaint(description=text, phone=phone, name=name,
                                               actor="whatsapp")
                for phone, name, text in checked]
        return web.json_response({"references": refs}, status=201 if refs else 200)

    async def whatsapp_verify(request: web.Request) -> web.Response:
        """Meta's subscription handshake: echo hub.challenge when hub.verify_token is ours."""
        expected = secret(app.settings.var_dir, "whatsapp-verify.token", 24)
        if (request.query.get("hub.mode") != "subscribe"
                or not same_secret(request.query.get("hub.verify_token", ""), expected)):
            return _error(403, "hub.verify_token does not match var/secrets/whatsapp-verify.token")
        return web.Response(text=request.query.get("hub.challenge", "")[:200])

    async def agencies(request: web.Request) -> web.Response:
        require(request, "operator")
        async with app.sessions() as s:
            rows = await s.scalars(select(Agency).where(Agency.site == site.code).order_by(Agency.code))
            return web.json_response({"agencies": [
                {"code": a.code, "name": a.name, "phone": a.phone, "active": a.active,
                 "webhook": bool(a.webhook_url)} for a in rows]})

    async def ack(request: web.Request) -> web.Response:
        try:
            nid = console.signer.verify(request.match_info["token"], app.settings.clock.now())
        except LinkError as exc:
            return _error(403, str(exc))
        body = await _json_body(request)
        errors = validate(body, ACK_FIELDS)
        if errors:
            return _error(422, "invalid body", errors=errors)
        try:
            r = await actions.agency_step(nid, body["action"], evidence=body.get("evidence", ""),
                                          photo_url=body.get("photo_url", ""))
        except ActionError as exc:
            return _error(exc.status, exc.message)
        return web.json_response({"reference": r.reference, "status": r.status, "agency": r.agency})

    async def retry(request: web.Request) -> web.Response:
        require(request, "supervisor")
        raw = request.match_info["id"]
        if not re.fullmatch(r"[0-9]{1,10}", raw) or int(raw) > MAX_ID:  # a database integer
            return _error(404, "no such notification")
        nid = int(raw)
        if not await console.worker.retry(nid):
            return _error(409, "only a failed notification can be retried")
        return web.json_response({"notification": nid, "status": "pending"})

    async def login_locks(request: web.Request) -> web.Response:
        require(request, "admin")
        async with app.sessions() as s:
            return web.json_response({"locks": await list_locks(s)})

    async def clear_login_lock(request: web.Request) -> web.Response:
        """An admin clears a user name's or an address's failed logins and lock (audited)."""
        admin = require(request, "admin")
        body = await _json_body(request)
        errors = validate(body, {"kind": {"type": "string", "required": True,
                                          "enum": ["user", "address"]},
                                 "key": {"type": "string", "required": True, "minLength": 1,
                                         "maxLength": 128}})
        if errors:
            return _error(422, "invalid body", errors=errors)
        async with app.sessions() as s, s.begin():
            cleared = await clear_lock(s, body["kind"], body["key"], app.settings.clock.now(),
                                       actor=f"console:{admin.username}")
        if not cleared:
            return _error(404, f"{body['kind']} {body['key']!r} has no failed logins or lock")
        return web.json_response({"kind": body["kind"], "key": body["key"], "cleared": True})

    async def me(request: web.Request) -> web.Response:
        user = current_user(request)
        return web.json_response({"username": user.username, "role": user.role})

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(openapi_document(site_categories(site)))

    web_app.middlewares.append(json_errors)
    r = web_app.router
    r.add_get("/api/v1/openapi.json", openapi)
    r.add_get("/api/v1/me", me)
    r.add_get("/api/v1/tickets", list_tickets)
    r.add_get("/api/v1/tickets/{ref}", get_ticket)
    r.add_post("/api/v1/tickets/{ref}/classify", classify)
    r.add_post("/api/v1/tickets/{ref}/dispatch", dispatch)
    r.add_post("/api/v1/complaints", complaints)
    r.add_post("/api/v1/whatsapp", whatsapp)
    r.add_get("/api/v1/whatsapp", whatsapp_verify)
    r.add_post("/api/v1/calls/{call}/agency", call_agency)
    r.add_get("/api/v1/agencies", agencies)
    r.add_post("/api/v1/ack/{token}", ack)
    r.add_post("/api/v1/notifications/{id}/retry", retry)
    r.add_get("/api/v1/login-locks", login_locks)
    r.add_post("/api/v1/login-locks/clear", clear_login_lock)
