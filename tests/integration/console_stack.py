"""The app's web side on a real database, without Asterisk: for console, API and outbox tests."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp

from ari_app.app import App, AppSettings
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.testing.ports import free_port
from ari_app.testing.web import web_session, web_url
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.auth import add_token, add_user
from ari_app.web.console import Console, console_for, start_background


@dataclass
class WebStack:
    app: App
    console: Console
    url: str

    async def add_user(self, name: str, role: str, password: str = "correct horse battery") -> str:
        async with self.app.sessions() as s, s.begin():
            await add_user(s, name, role, password, self.app.settings.clock.now())
        return password

    async def token(self, name: str, role: str) -> str:
        await self.add_user(name, role)
        async with self.app.sessions() as s, s.begin():
            return await add_token(s, name, "test", self.app.settings.clock.now())

    async def ticket(self, reference: str, **fields: object) -> Ticket:
        now = self.app.settings.clock.now()
        async with self.app.sessions() as s, s.begin():
            t = Ticket(reference=reference, site=self.app.settings.site.code,
                       arrived_at=fields.pop("arrived_at", now), **fields)
            s.add(t)
            await s.flush()
            s.add(TicketAudit(ticket_id=t.id, at=now, actor="system", action="opened", detail="{}"))
        return t

    async def login(self, http: aiohttp.ClientSession, name: str, password: str) -> str:
        return await log_in(http, self.url, name, password)


async def log_in(http: aiohttp.ClientSession, base: str, name: str, password: str) -> str:
    """Log in through the form as a browser does; returns the session's CSRF token."""
    async with http.get(f"{base}/login") as resp:
        form_csrf = csrf_field(await resp.text())
    async with http.post(f"{base}/login", data={
            "username": name, "password": password, "csrf": form_csrf, "next": "/console"},
            allow_redirects=True) as resp:
        assert resp.status == 200, await resp.text()
        return meta_csrf(await resp.text())


def csrf_field(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def meta_csrf(html: str) -> str:
    m = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert m, html
    return m.group(1)


@asynccontextmanager
async def web_stack(db_url: str, var_dir: Path, site: Site,
                    clock: Clock | None = None) -> AsyncIterator[WebStack]:
    port = free_port()
    settings = AppSettings(site=site, var_dir=var_dir, database_url=db_url,
                           ari_url="http://127.0.0.1:9", ari_user="x", ari_password="x",
                           clock=clock or Clock(), web_port=port)
    app = App(settings)
    assert app.web is not None
    await app.web.start()
    writer = asyncio.create_task(app.writer.run())
    task = start_background(app)
    console = console_for(app)
    console.worker.base_delay_s, console.worker.max_delay_s, console.worker.poll_s = 0.2, 0.8, 0.5
    try:
        # agencies are seeded by the background task before the worker runs
        for _ in range(100):
            from sqlalchemy import func, select

            from ari_app.tickets.models import Agency
            async with app.sessions() as s:
                if await s.scalar(select(func.count()).select_from(Agency)):
                    break
            await asyncio.sleep(0.05)
        yield WebStack(app, console, web_url(port))
    finally:
        task.cancel()
        writer.cancel()
        # bounded: a delivery blocked in a worker thread (smtplib) cannot be cancelled, and a
        # teardown must never hang the run
        await asyncio.wait([task, writer], timeout=10)
        await app.web.stop()
        await app.ari.close()
        await app.engine.dispose()
        app.writer.close()


def now_utc(clock: Clock) -> datetime:
    return clock.now()


def browser(**kw: object) -> aiohttp.ClientSession:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's default jar refuses IP hosts)."""
    return web_session(cookies=True, **kw)
