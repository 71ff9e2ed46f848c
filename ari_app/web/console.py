"""Wiring for the console side: ticket actions, notification worker, auth, routes.

`register_console(web_app, app)` is called from make_web_app; `start_background(app)` from
App.start (it returns the worker task, which App.stop cancels with its others).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from ari_app.admin_audit import cli_actor, record_site_settings
from ari_app.secrets import secret
from ari_app.web.actions import TicketActions, TicketBus
from ari_app.web.agencies import public_url_problem, seed_agencies
from ari_app.web.auth import Auth, make_middleware
from ari_app.web.cluster import Cluster
from ari_app.web.links import LinkSigner
from ari_app.web.livequeue import LiveQueue
from ari_app.web.outbox import OutboxWorker

if TYPE_CHECKING:
    from ari_app.app import App

log = logging.getLogger(__name__)


@dataclass
class Console:
    app: App
    bus: TicketBus
    actions: TicketActions
    signer: LinkSigner
    worker: OutboxWorker
    auth: Auth
    queue: LiveQueue
    cluster: Cluster | None = None  # several nodes on one PostgreSQL: the other nodes' calls
    task: asyncio.Task[None] | None = None

    def base_url(self) -> str:
        """Where agency links point: web.public_url (SIAGA112_PUBLIC_URL), else this server's
        own HTTPS address, which an agency outside cannot reach (status and setup say so)."""
        web_ = self.app.settings.site.web
        if web_.public_url:
            return web_.public_url.rstrip("/")
        port = self.app.web.port if self.app.web is not None else web_.port
        return f"https://{web_.bind}:{port}"


_consoles: weakref.WeakKeyDictionary[App, Console] = weakref.WeakKeyDictionary()


def console_for(app: App) -> Console:
    found = _consoles.get(app)
    if found is not None:
        return found
    s = app.settings
    bus = TicketBus()
    signer = LinkSigner(secret(s.var_dir, "ack-links.key", 32))
    holder: list[Console] = []
    worker = OutboxWorker(app.sessions, s.site.code, s.clock, signer,
                          lambda: holder[0].base_url(), bus, config=s.site, var_dir=s.var_dir)
    actions = TicketActions(app.sessions, s.site, s.clock, bus, on_dispatch=worker.wake)
    console = Console(app, bus, actions, signer, worker,
                      Auth(app.sessions, s.clock, secret(s.var_dir, "console-csrf.key", 32)),
                      LiveQueue(app.live, app.sessions, s.site.menu.uncategorised_priority))
    if app.shared_queue is not None:
        console.cluster = console.queue.cluster = Cluster(
            app, console.queue, site=s.site.code, node=s.node, dsn=s.database_url,
            lease_s=s.node_lease_s)
    holder.append(console)
    _consoles[app] = console
    return console


def register_console(web_app: web.Application, app: App) -> None:
    from ari_app.web.api import register_api
    from ari_app.web.operator_console import lang_middleware
    from ari_app.web.pages import register_pages

    console = console_for(app)
    web_app.middlewares.append(make_middleware(console.auth))
    web_app.middlewares.append(lang_middleware(console))
    register_api(web_app, console)
    register_pages(web_app, console)


async def _background(console: Console) -> None:
    cluster = [console.cluster.run()] if console.cluster is not None else []
    await asyncio.gather(_agencies_and_outbox(console), console.queue.run(), *cluster)


async def _agencies_and_outbox(console: Console) -> None:
    s = console.app.settings
    while True:  # the agencies must exist before anything is dispatched; the DB may be late
        try:
            async with console.app.sessions() as session, session.begin():
                added = await seed_agencies(session, s.site.code, s.var_dir)
                if await record_site_settings(session, s.site.code, s.site.file,
                                              actor=cli_actor(), at=s.clock.now()):
                    log.info("site settings of %s changed since the last start: audited",
                             s.site.code)
            if added:
                log.info("seeded %d agencies for site %s", added, s.site.code)
            async with console.app.sessions() as session:
                problem = await public_url_problem(session, s.site.code, s.site.web.public_url)
            if problem:
                log.error("%s", problem)
            break
        except Exception:
            log.exception("seeding agencies failed; retrying in 5 s")
            await asyncio.sleep(5)
    await asyncio.gather(console.worker.run(), _retention_timer(console))


async def _retention_timer(console: Console) -> None:
    """`siaga112 retention run` on the site's timer, inside the running app."""
    from ari_app.pbx.cel import cel_path
    from ari_app.tickets.retention import run_retention

    s = console.app.settings
    while True:
        try:
            await run_retention(console.app.sessions, s.site.retention, s.clock.now(),
                                actor="retention timer", site_code=s.site.code,
                                cel=cel_path(s.var_dir), var_dir=s.var_dir)
        except Exception:
            log.exception("retention run failed; the next run tries again")
        await asyncio.sleep(s.site.retention.run_every_h * 3600)


def start_background(app: App) -> asyncio.Task[None]:
    """Start (once) the agency seeding and the notification worker for this app."""
    console = console_for(app)
    if console.task is None or console.task.done():
        console.task = asyncio.create_task(_background(console), name="notifications")
    return console.task
