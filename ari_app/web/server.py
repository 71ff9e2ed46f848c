"""The app's web side (HTTPS): /aml, /healthz, /metrics (the console and API join here)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ari_app.logs import LAST_ERROR
from ari_app.secrets import secret
from ari_app.tls import CertPair, ensure_pair, server_context
from ari_app.web.access import ACCESS, AccessLogger, close_file, open_file
from ari_app.web.aml import AmlReceiver, load_gateways
from ari_app.web.auth import same_secret
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

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def metrics_refusal(request: web.Request, token: str, loopback_open: bool) -> web.Response | None:
    """None when /metrics may be answered: the metrics bearer token, or a loopback peer."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and same_secret(header[7:].strip(), token):
        return None
    if header:
        return web.json_response({"error": "wrong metrics token"}, status=403)
    if loopback_open and is_loopback(request.remote):
        return None
    return web.json_response(
        {"error": "metrics need Authorization: Bearer <var/secrets/metrics.token>"
                  + ("" if loopback_open else " (web.metrics_loopback_open is false)")},
        status=401, headers={"WWW-Authenticate": 'Bearer realm="siaga112-metrics"'})


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
    Gauge("siaga112_shedding", "1 while new callers are refused because ARI is slow",
          registry=registry).set_function(lambda: 1 if app.shedder.shedding else 0)
    Gauge("siaga112_shedding_episodes", "times shedding on ARI latency began since start",
          registry=registry).set_function(lambda: app.shedder.turned_on)
    Gauge("siaga112_ari_p90_seconds", "90th percentile of the last seconds' ARI round trips",
          registry=registry).set_function(lambda: app.shedder.p90_s)
    Gauge("siaga112_callers_waiting", "callers waiting for an operator",
          registry=registry).set_function(lambda: len(app.queue.waiting))

    async def healthz(_: web.Request) -> web.Response:
        body = {"ari_connected": app.events.ready, "db_ok": app.writer.db_ok,
                "db_backlog": app.writer.backlog, "calls": len(app.registry.calls),
                "callers_waiting": len(app.queue.waiting), "pid": os.getpid(),
                # new callers refused on the record while ARI is slow (routing/shedding.py)
                "shedding": app.shedder.shedding,
                "last_error": LAST_ERROR.snapshot(),
                # several nodes: whether this one dispatches through the shared PostgreSQL
                # (False: it goes on alone, its own callers to its own roster)
                "queue": app.shared_queue.status() if app.shared_queue is not None else None}
        return web.json_response(body, status=200 if app.events.ready else 503)

    metrics_token = secret(app.settings.var_dir, "metrics.token", 32)

    async def metrics(request: web.Request) -> web.Response:
        refused = metrics_refusal(request, metrics_token, site.web.metrics_loopback_open)
        if refused is not None:
            return refused
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


HSTS = "max-age=31536000"
PLAIN_ONLY = "/healthz"


@web.middleware
async def https_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Plain HTTP (the loopback health listener) serves /healthz and nothing else."""
    if not request.secure and request.path != PLAIN_ONLY:
        return web.json_response({"error": "plain HTTP serves only /healthz: use the HTTPS port"},
                                 status=403)
    return await handler(request)


async def _hsts(request: web.Request, response: web.StreamResponse) -> None:
    if request.secure:
        response.headers["Strict-Transport-Security"] = HSTS


class WebServer:
    """The web side over HTTPS (the admin's pair or a self-signed one made at first start), and,
    when web.health_port is set, plain HTTP on 127.0.0.1 for /healthz only."""

    def __init__(self, app: App, port: int | None = None) -> None:
        self.app = app
        self.port = port if port is not None else app.settings.site.web.port
        self.runner: web.AppRunner | None = None
        self.access_file: logging.Handler | None = None
        self.certificate: CertPair | None = None

    async def start(self) -> None:
        w, var_dir = self.app.settings.site.web, self.app.settings.var_dir
        self.access_file = open_file(var_dir)
        hosts = [w.bind] + ([urlsplit(w.public_url).hostname or ""] if w.public_url else [])
        self.certificate = await asyncio.to_thread(ensure_pair, var_dir, "web-tls",
                                                   [h for h in hosts if h],
                                                   cert=w.tls_cert, key=w.tls_key)
        web_app = make_web_app(self.app)
        web_app.middlewares.insert(0, https_only)
        web_app.on_response_prepare.append(_hsts)
        self.runner = web.AppRunner(web_app, access_log=ACCESS, access_log_class=AccessLogger)
        await self.runner.setup()
        site = web.TCPSite(self.runner, w.bind, self.port,
                           ssl_context=server_context(self.certificate))
        await site.start()
        log.info("web on https://%s:%d (certificate %s, SHA-256 %s)", w.bind, self.port,
                 self.certificate.cert, self.certificate.fingerprint)
        if w.health_port:
            await web.TCPSite(self.runner, "127.0.0.1", w.health_port).start()
            log.info("plain HTTP /healthz on http://127.0.0.1:%d", w.health_port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
        if self.access_file is not None:
            close_file(self.access_file)
            self.access_file = None
