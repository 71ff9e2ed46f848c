"""The app's HTTP side: /aml, /healthz, /metrics (the console and API join here)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ari_app.logs import LAST_ERROR
from ari_app.web.access import ACCESS, AccessLogger, close_file, open_file
from ari_app.web.aml import AmlReceiver, load_gateways
from ari_app.web.console import register_console
from ari_app.web.ratelimit import (
    AML_DEFAULT,
    AML_LIMITER,
    COMPLAINTS_DEFAULT,
    COMPLAINTS_LIMITER,
    RateLimit,
    TokenBucketLimiter,
)

if TYPE_CHECKING:
    from ari_app.app import App

log = logging.getLogger(__name__)


def make_web_app(app: App) -> web.Application:
    site = app.settings.site
    registry = CollectorRegistry()
    aml_limiter = TokenBucketLimiter(RateLimit.from_env("SIAGA112_AML", AML_DEFAULT))
    receiver = AmlReceiver(app.locations, app.settings.clock,
                           load_gateways(app.settings.var_dir, site.web.aml_gateways), registry,
                           require_hmac=site.web.aml_require_hmac, limiter=aml_limiter)
    Gauge("siaga112_db_backlog", "database writes waiting", registry=registry).set_function(
        lambda: app.writer.backlog)
    Gauge("siaga112_ari_connected", "1 when the ARI websocket is up",
          registry=registry).set_function(lambda: 1 if app.events.ready else 0)
    Gauge("siaga112_calls_active", "calls being handled", registry=registry).set_function(
        lambda: len(app.registry.calls))
    Gauge("siaga112_taskprocessor_queue_depth", "deepest ARI/PJSIP taskprocessor queue now",
          registry=registry).set_function(lambda: app.taskprocessors.deepest_now)
    Gauge("siaga112_taskprocessor_high_water", "ARI/PJSIP taskprocessors past their high water",
          registry=registry).set_function(lambda: len(app.taskprocessors.high_water_queues))
    Gauge("siaga112_journal_dead", "writes the database refused (see the journal's dead table)",
          registry=registry).set_function(lambda: len(app.writer.failed))
    Gauge("siaga112_callers_waiting", "callers waiting for an operator",
          registry=registry).set_function(lambda: len(app.queue.waiting))

    async def healthz(_: web.Request) -> web.Response:
        body = {"ari_connected": app.events.ready, "db_ok": app.writer.db_ok,
                "db_backlog": app.writer.backlog, "calls": len(app.registry.calls),
                "callers_waiting": len(app.queue.waiting), "pid": os.getpid(),
                "last_error": LAST_ERROR.snapshot()}
        return web.json_response(body, status=200 if app.events.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    web_app = web.Application(client_max_size=site.web.max_body_bytes)
    web_app[AML_LIMITER] = aml_limiter
    web_app[COMPLAINTS_LIMITER] = TokenBucketLimiter(
        RateLimit.from_env("SIAGA112_COMPLAINTS", COMPLAINTS_DEFAULT))
    web_app.router.add_post("/aml", receiver.handle)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/metrics", metrics)
    register_console(web_app, app)
    return web_app


class WebServer:
    def __init__(self, app: App, port: int | None = None) -> None:
        self.app = app
        self.port = port if port is not None else app.settings.site.web.port
        self.runner: web.AppRunner | None = None
        self.access_file: logging.Handler | None = None

    async def start(self) -> None:
        self.access_file = open_file(self.app.settings.var_dir)
        self.runner = web.AppRunner(make_web_app(self.app), access_log=ACCESS,
                                    access_log_class=AccessLogger)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.app.settings.site.web.bind, self.port)
        await site.start()
        log.info("web on http://%s:%d", self.app.settings.site.web.bind, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.access_file is not None:
            close_file(self.access_file)
            self.access_file = None
