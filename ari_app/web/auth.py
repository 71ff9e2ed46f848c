"""Console users, sessions, API tokens, CSRF and roles.

Passwords: argon2id hashes (verified off the event loop). Sessions: a random cookie (HttpOnly,
SameSite=Strict) whose SHA-256 is stored with a per-session CSRF token. API clients send
``Authorization: Bearer <token>``; tokens expire (90 days unless told) and can be revoked. There
is no default account: `siaga112 users add` makes one.

Login is throttled per user name and per source address (rows in ``login_throttle``, shared by
every process): after ``backoff_after`` failures each further attempt waits a doubling delay
(429 with Retry-After, the password not even checked); at ``lock_after_*`` failures the name or
address is locked for ``lock_for`` (refused even with the right password), with an admin audit
entry. `siaga112 users unlock` (or the API) clears a lock, audited too.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from aiohttp import web
from aiohttp.typedefs import Middleware
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.admin_audit import record_admin_change
from ari_app.clock import Clock
from ari_app.tickets.models import ApiToken, ConsoleSession, LoginThrottle, User
from ari_app.web.i18n import Translator

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
                   now: datetime, *, actor: str = "system") -> str:
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
    await record_admin_change(s, actor=actor, entity="user", key=username, action="added",
                              before=None, after={"role": role, "active": True}, at=now)
    return password


TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 3650


async def add_token(s: AsyncSession, username: str, name: str, now: datetime, *,
                    days: int = TOKEN_DAYS, actor: str = "system") -> str:
    """A bearer token for ``username`` valid ``days`` days; only its SHA-256 is stored."""
    if not 1 <= days <= MAX_TOKEN_DAYS:
        raise UserError(f"token lifetime: expected 1..{MAX_TOKEN_DAYS} days, got {days}")
    user = await s.scalar(select(User).where(User.username == username))
    if user is None:
        raise UserError(f"no user {username}")
    token = "s112_" + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_sha256=sha256(token), name=name, created_at=now,
                   expires_at=now + timedelta(days=days))
    s.add(row)
    await s.flush()
    await record_admin_change(s, actor=actor, entity="token", key=str(row.id), action="issued",
                              before=None, after={"user": username, "name": name,
                                                  "expires_at": row.expires_at}, at=now)
    return token


async def list_tokens(s: AsyncSession, username: str | None = None) -> list[dict[str, object]]:
    q = select(ApiToken, User.username).join(User, User.id == ApiToken.user_id)
    if username:
        q = q.where(User.username == username)
    out: list[dict[str, object]] = []
    for t, name in await s.execute(q.order_by(ApiToken.id)):
        out.append({"id": t.id, "user": name, "name": t.name, "created_at": t.created_at.isoformat(),
                    "expires_at": t.expires_at.isoformat() if t.expires_at else None,
                    "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
                    "revoked_by": t.revoked_by})
    return out


async def revoke_token(s: AsyncSession, token_id: int, now: datetime, *, actor: str) -> None:
    t = await s.get(ApiToken, token_id)
    if t is None:
        raise UserError(f"no API token {token_id}")
    if t.revoked_at is not None:
        raise UserError(f"API token {token_id} was already revoked at {t.revoked_at.isoformat()}")
    t.revoked_at, t.revoked_by = now, actor[:64]
    await record_admin_change(s, actor=actor, entity="token", key=str(token_id), action="revoked",
                              before={"revoked_at": None}, after={"revoked_at": now}, at=now)


@dataclass(frozen=True)
class ThrottlePolicy:
    backoff_after: int = 3           # failures before each further attempt must wait
    base_delay_s: float = 2.0        # ... 2 s, 4 s, 8 s ... (doubling)
    max_delay_s: float = 60.0
    lock_after_user: int = 10        # failures on one user name that lock it
    lock_after_address: int = 30     # failures from one address (a NAT hides many operators)
    lock_for: timedelta = timedelta(minutes=15)
    forget_after: timedelta = timedelta(minutes=30)  # no failure for this long: start again

    def delay_s(self, failures: int) -> float:
        if failures < self.backoff_after:
            return 0.0
        return float(min(self.max_delay_s, self.base_delay_s * 2.0 ** (failures - self.backoff_after)))


@dataclass(frozen=True)
class LoginResult:
    """``text`` names the refusal's words in the console texts (``login.<text>``, every language),
    filled with ``values``: the page says it in the reader's language."""

    user: User | None
    status: int                       # 200 on success, 401 wrong password, 429 throttled/locked
    text: str                         # wrong, backoff, locked_user, locked_address ('' if in)
    values: dict[str, int] = field(default_factory=dict)
    retry_after_s: int = 0

    def message(self, tr: Translator) -> str:
        return tr(f"login.{self.text}").format(**self.values) if self.text else ""


def _throttle_keys(username: str, address: str) -> list[tuple[str, str]]:
    return [("user", username.strip().lower()[:128]), ("address", address[:128])]


async def _throttle_rows(s: AsyncSession, keys: list[tuple[str, str]]) -> list[LoginThrottle | None]:
    return [await s.scalar(select(LoginThrottle).where(LoginThrottle.kind == k,
                                                       LoginThrottle.key == v))
            for k, v in keys]


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


async def clear_lock(s: AsyncSession, kind: str, key: str, now: datetime, *, actor: str) -> bool:
    """An admin clears a user name's or an address's failures and lock. True if there was one."""
    if kind not in ("user", "address"):
        raise UserError(f"lock kind: expected user or address, got {kind!r}")
    row = await s.scalar(select(LoginThrottle).where(LoginThrottle.kind == kind,
                                                     LoginThrottle.key == key))
    if row is None:
        return False
    before = {"failures": row.failures, "locked_until": row.locked_until}
    await s.delete(row)
    await record_admin_change(s, actor=actor, entity="login_lock", key=f"{kind}:{key}",
                              action="cleared", before=before, after=None, at=now)
    return True


async def list_locks(s: AsyncSession) -> list[dict[str, object]]:
    rows = await s.scalars(select(LoginThrottle).order_by(LoginThrottle.kind, LoginThrottle.key))
    return [{"kind": r.kind, "key": r.key, "failures": r.failures,
             "last_failure_at": r.last_failure_at.isoformat(),
             "locked_until": r.locked_until.isoformat() if r.locked_until else None} for r in rows]


async def check_password(s: AsyncSession, username: str, password: str) -> User | None:
    user = await s.scalar(select(User).where(User.username == username, User.active.is_(True)))
    digest = user.password_hash if user is not None else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, digest, password)
    except (VerificationError, InvalidHashError):
        return None
    return user


class Auth:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, key: str,
                 policy: ThrottlePolicy | None = None) -> None:
        self.sessions, self.clock, self.key = sessions, clock, key.encode()
        self.policy = policy or ThrottlePolicy()

    async def attempt(self, username: str, password: str, address: str) -> LoginResult:
        """Check a login against the throttle, then the password; count a failure, lock at the
        limit (audited), forget the user name's failures on success."""
        now, policy = self.clock.now(), self.policy
        keys = _throttle_keys(username, address)
        async with self.sessions() as s:
            for (kind, _key), row in zip(keys, await _throttle_rows(s, keys), strict=True):
                if row is None:
                    continue
                last = _aware(row.last_failure_at)
                if now - last > policy.forget_after and (row.locked_until is None
                                                         or _aware(row.locked_until) <= now):
                    continue
                if row.locked_until is not None and _aware(row.locked_until) > now:
                    wait = math.ceil((_aware(row.locked_until) - now).total_seconds())
                    return LoginResult(None, 429, f"locked_{kind}",
                                       {"failures": row.failures, "wait": wait}, wait)
                wait_s = (last + timedelta(seconds=policy.delay_s(row.failures)) - now).total_seconds()
                if wait_s > 0:
                    wait = math.ceil(wait_s)
                    return LoginResult(None, 429, "backoff", {"wait": wait}, wait)
            user = await check_password(s, username, password)
        if user is not None:
            async with self.sessions() as s, s.begin():
                await s.execute(delete(LoginThrottle).where(LoginThrottle.kind == "user",
                                                            LoginThrottle.key == keys[0][1]))
            return LoginResult(user, 200, "")
        for attempt in range(3):  # two first failures at once race on the unique key: retry
            try:
                await self._count_failure(keys, now, address)
                break
            except IntegrityError:
                if attempt == 2:
                    raise
        log.warning("failed login for %r from %s", username[:64], address)
        return LoginResult(None, 401, "wrong")

    async def _count_failure(self, keys: list[tuple[str, str]], now: datetime, address: str) -> None:
        policy = self.policy
        async with self.sessions() as s, s.begin():
            # forgotten failures go, so guessed user names cannot fill the table
            await s.execute(delete(LoginThrottle).where(
                LoginThrottle.last_failure_at < now - policy.forget_after,
                (LoginThrottle.locked_until.is_(None)) | (LoginThrottle.locked_until < now)))
            for (kind, key), row in zip(keys, await _throttle_rows(s, keys), strict=True):
                if row is None:
                    row = LoginThrottle(kind=kind, key=key, failures=0, last_failure_at=now)
                    s.add(row)
                elif now - _aware(row.last_failure_at) > policy.forget_after and (
                        row.locked_until is None or _aware(row.locked_until) <= now):
                    row.failures, row.locked_until = 0, None
                row.failures += 1
                row.last_failure_at = now
                limit = policy.lock_after_user if kind == "user" else policy.lock_after_address
                if row.failures >= limit and (row.locked_until is None
                                              or _aware(row.locked_until) <= now):
                    row.locked_until = now + policy.lock_for
                    await record_admin_change(
                        s, actor=f"throttle (last attempt from {address})", entity="login_lock",
                        key=f"{kind}:{key}", action="locked", before=None,
                        after={"failures": row.failures, "locked_until": row.locked_until}, at=now)
                    log.warning("login %s %s locked until %s after %d failures", kind, key,
                                row.locked_until.isoformat(), row.failures)
                await s.flush()

    # anonymous forms: the cookie holds a random value, the form field its HMAC
    def pre_csrf(self, request: web.Request, response: web.StreamResponse | None = None) -> tuple[str, str]:
        value = request.cookies.get(PRE_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_\-]{20,64}", value):
            value = secrets.token_urlsafe(24)
        return value, hmac.new(self.key, f"pre:{value}".encode(), hashlib.sha256).hexdigest()

    @staticmethod
    def set_pre_cookie(response: web.StreamResponse, value: str) -> None:
        response.set_cookie(PRE_COOKIE, value, httponly=True, samesite="Strict", path="/",
                            secure=True)

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
                found_token = (await s.execute(
                    select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id)
                    .where(ApiToken.token_sha256 == sha256(header[7:].strip()),
                           User.active.is_(True)))).first()
                if found_token is None:
                    return None
                row, tok = found_token
                if tok.revoked_at is not None:
                    request["auth_error"] = "this API token was revoked"
                    return None
                if tok.expires_at is not None and _aware(tok.expires_at) <= now:
                    request["auth_error"] = (f"this API token expired at {tok.expires_at.isoformat()}:"
                                             " ask an admin for a new one")
                    return None
                return AuthUser(row.id, row.username, row.role, None)
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
        # a malformed form (multipart without a boundary...) is the client's error, not a 500;
        # parsed once here (aiohttp keeps the result). Complaints are rate limited before their
        # body is read, so they check their own form; /aml stores every body it gets.
        if (request.method in UNSAFE and path not in ("/api/v1/complaints", "/aml")
                and request.content_type in ("application/x-www-form-urlencoded",
                                             "multipart/form-data")):
            try:
                await request.post()
            except ValueError as exc:
                if is_api:
                    return web.json_response({"error": f"malformed form body: {exc}"}, status=400)
                raise web.HTTPBadRequest(text=f"malformed form body: {exc}") from None
        # /api/v1/complaints checks for itself: a bearer token, a session or the public form's CSRF
        # /api/v1/whatsapp: the X-Hub-Signature-256 of the body is the credential
        public = path.startswith(PUBLIC_PREFIXES) or path in ("/api/v1/complaints",
                                                               "/api/v1/whatsapp")
        user = None if public else await auth.user(request)
        request["user"] = user
        if public:
            return await handler(request)
        if user is None:
            if is_api:
                return web.json_response({"error": request.get("auth_error",
                                                                "authentication required")},
                                         status=401,
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
