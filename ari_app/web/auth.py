"""Console users, sessions, API tokens, CSRF and roles.

Passwords: argon2id hashes (verified off the event loop). Sessions: a random cookie (HttpOnly,
SameSite=Strict) whose SHA-256 is stored with a per-session CSRF token. API clients send
``Authorization: Bearer <token>``. There is no default account: `siaga112 users add` makes one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Middleware
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.clock import Clock
from ari_app.tickets.models import ApiToken, ConsoleSession, User

log = logging.getLogger(__name__)

ROLES = ("operator", "supervisor", "admin")
SESSION_COOKIE = "siaga_session"
PRE_COOKIE = "siaga_pre"          # anonymous forms (login, public complaint): double-submit CSRF
SESSION_TTL = timedelta(hours=12)
USERNAME = re.compile(r"[a-z][a-z0-9_.\-]{1,63}")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))  # same work for unknown users


class UserError(Exception):
    pass


def same_secret(sent: str, expected: str) -> bool:
    """Constant-time comparison of a token sent by a client (hmac.compare_digest refuses str
    holding non-ASCII characters, which anyone can send: compare the bytes)."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"),
                               expected.encode("utf-8", "surrogatepass"))


def sha256(text: str) -> str:
    # surrogatepass: a header or cookie with bytes that are not UTF-8 reaches us as surrogates
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class AuthUser:
    id: int
    username: str
    role: str
    csrf: str | None     # None for bearer-token clients (no cookie, no CSRF exposure)

    def has(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


async def add_user(s: AsyncSession, username: str, role: str, password: str | None,
                   now: datetime) -> str:
    """Create a user; returns the password (generated when none was given)."""
    if not USERNAME.fullmatch(username):
        raise UserError(f"username: expected lower-case letters, digits, . _ - (2-64), got {username!r}")
    if role not in ROLES:
        raise UserError(f"role: expected one of {', '.join(ROLES)}, got {role!r}")
    if password is not None and len(password) < 10:
        raise UserError("password: expected at least 10 characters")
    if await s.scalar(select(User.id).where(User.username == username)) is not None:
        raise UserError(f"user {username} already exists")
    password = password or secrets.token_urlsafe(12)
    digest = await asyncio.to_thread(_hasher.hash, password)
    s.add(User(username=username, password_hash=digest, role=role, active=True, created_at=now))
    await s.flush()
    return password


async def add_token(s: AsyncSession, username: str, name: str, now: datetime) -> str:
    user = await s.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username}")
    token = "s112_" + secrets.token_urlsafe(32)
    s.add(ApiToken(user_id=user.id, token_sha256=sha256(token), name=name, created_at=now))
    await s.flush()
    return token


async def check_password(s: AsyncSession, username: str, password: str) -> User | None:
    user = await s.scalar(select(User).where(User.username == username, User.active.is_(True)))
    digest = user.password_hash if user is not None else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, digest, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


class Auth:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, key: str) -> None:
        self.sessions, self.clock, self.key = sessions, clock, key.encode()

    # anonymous forms: the cookie holds a random value, the form field its HMAC
    def pre_csrf(self, request: web.Request, response: web.StreamResponse | None = None) -> tuple[str, str]:
        value = request.cookies.get(PRE_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{20,64}", value):
            value = secrets.token_urlsafe(24)
        return value, hmac.new(self.key, f"pre:{value}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def set_pre_cookie(response: web.StreamResponse, value: str) -> None:
        response.set_cookie(PRE_COOKIE, value, httponly=True, samesite="Strict", path="/")

    def check_pre_csrf(self, request: web.Request, field: str) -> bool:
        value = request.cookies.get(PRE_COOKIE, "")
        if not value:
            return False
        expected = hmac.new(self.key, f"pre:{value}".encode(), hashlib.sha256).hexdigest()
        return same_secret(field, expected)

    async def login(self, user: User) -> tuple[str, str]:
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = self.clock.now()
        async with self.sessions() as s, s.begin():
            await s.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < now))
            s.add(ConsoleSession(token_sha256=sha256(token), user_id=user.id, csrf=csrf,
                                 created_at=now, expires_at=now + SESSION_TTL))
        log.info("user %s logged in (%s)", user.username, user.role)
        return token, csrf

    async def logout(self, request: web.Request) -> None:
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            async with self.sessions() as s, s.begin():
                await s.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == sha256(token)))

    async def user(self, request: web.Request) -> AuthUser | None:
        header = request.headers.get("Authorization", "")
        now = self.clock.now()
        async with self.sessions() as s:
            if header.startswith("Bearer "):
                row = (await s.execute(
                    select(User).join(ApiToken, ApiToken.user_id == User.id)
                    .where(ApiToken.token_sha256 == sha256(header[7:].strip()),
                           User.active.is_(True)))).scalar_one_or_none()
                return AuthUser(row.id, row.username, row.role, None) if row else None
            token = request.cookies.get(SESSION_COOKIE, "")
            if not token:
                return None
            found = (await s.execute(
                select(User, ConsoleSession.csrf).join(ConsoleSession, ConsoleSession.user_id == User.id)
                .where(ConsoleSession.token_sha256 == sha256(token), ConsoleSession.expires_at > now,
                       User.active.is_(True)))).first()
            if found is None:
                return None
            u, csrf = found
            return AuthUser(u.id, u.username, u.role, csrf)


PUBLIC_PREFIXES = ("/healthz", "/metrics", "/aml", "/login", "/static/", "/ack/", "/api/v1/ack/",
                   "/api/v1/openapi.json", "/complaint", "/favicon.ico")
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_middleware(auth: Auth) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        is_api = path.startswith("/api/")
        # /api/v1/complaints checks for itself: a bearer token, a session or the public form's CSRF
        public = path.startswith(PUBLIC_PREFIXES) or path == "/api/v1/complaints"
        user = None if public else await auth.user(request)
        request["user"] = user
        if public:
            return await handler(request)
        if user is None:
            if is_api:
                return web.json_response({"error": "authentication required"}, status=401,
                                         headers={"WWW-Authenticate": 'Bearer realm="siaga112"'})
            raise web.HTTPSeeOther(f"/login?next={path}")
        if request.method in UNSAFE and user.csrf is not None:
            sent = request.headers.get("X-CSRF-Token", "")
            if not sent and request.content_type in ("application/x-www-form-urlencoded",
                                                     "multipart/form-data"):
                sent = str((await request.post()).get("csrf", ""))
            if not same_secret(sent, user.csrf):
                log.warning("user %s %s %s refused: CSRF token missing or wrong", user.username,
                            request.method, path)
                if is_api:
                    return web.json_response({"error": "CSRF token missing or wrong"}, status=403)
                raise web.HTTPForbidden(text="CSRF token missing or wrong: reload the page")
        return await handler(request)

    return middleware


def current_user(request: web.Request) -> AuthUser:
    user: AuthUser | None = request.get("user")
    if user is None:
        raise web.HTTPUnauthorized()
    return user


def require(request: web.Request, role: str) -> AuthUser:
    user = current_user(request)
    if not user.has(role):
        if request.path.startswith("/api/"):
            raise web.HTTPForbidden(text=json.dumps({"error": f"needs role {role}"}),
                                    content_type="application/json")
        raise web.HTTPForbidden(text=f"This page needs the {role} role.")
    return user
