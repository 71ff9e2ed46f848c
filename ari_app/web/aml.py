"""POST /aml: Advanced Mobile Location from handsets (ELS HTTPS form) and SMS gateways (JSON).

Each gateway has its own bearer token (and, where required, an HMAC-SHA256 key for the body),
generated into var/secrets. A bad token gets 401 and nothing is stored. Once a message is
received it is answered 2xx (the ELS contract): accepted, or rejected with its reason, which is
also stored with the raw text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from ari_app.clock import Clock
from ari_app.location.aml import parse_https_form, parse_sms_text, parse_sms_user_data_hex
from ari_app.location.model import Location, LocationParseError
from ari_app.location.service import LocationService
from ari_app.secrets import secret
from ari_app.web.ratelimit import TokenBucketLimiter, too_many_requests

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gateway:
    name: str
    token: str
    hmac_key: str


def load_gateways(var_dir: Path, names: tuple[str, ...]) -> list[Gateway]:
    return [Gateway(n, secret(var_dir, f"aml-{n}.token"), secret(var_dir, f"aml-{n}.hmac"))
            for n in names]


class AmlReceiver:
    def __init__(self, locations: LocationService, clock: Clock, gateways: list[Gateway],
                 registry: CollectorRegistry, *, require_hmac: bool = False,
                 limiter: TokenBucketLimiter | None = None) -> None:
        self.locations, self.clock, self.gateways = locations, clock, gateways
        self.require_hmac = require_hmac
        self.limiter = limiter  # per gateway; None: unlimited
        self.counter = Counter("siaga112_aml_messages", "AML messages by result",
                               ["result"], registry=registry)

    def _gateway(self, request: web.Request) -> Gateway | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        found = None
        for gw in self.gateways:  # compare against every gateway: no timing hint of which
            if hmac.compare_digest(token.encode(), gw.token.encode()):
                found = gw
        return found

    async def handle(self, request: web.Request) -> web.Response:
        gateway = self._gateway(request)
        if gateway is None:
            self.counter.labels("unauthorised").inc()
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        wait = self.limiter.acquire(gateway.name) if self.limiter is not None else 0.0
        if wait > 0:  # refused before the body is read: nothing of it is stored
            self.counter.labels("rate_limited").inc()
            log.warning("aml from %s refused: over the rate limit", gateway.name)
            return too_many_requests(wait, f"from gateway {gateway.name}")
        body = await request.read()  # aiohttp refuses bodies over client_max_size with 413
        signature = request.headers.get("X-Siaga-Signature", "")
        if signature or self.require_hmac:
            expected = "sha256=" + hmac.new(gateway.hmac_key.encode(), body,
                                            hashlib.sha256).hexdigest()
            if not hmac.compare_digest(signature.encode("utf-8", "surrogateescape"),
                                       expected.encode()):
                self.counter.labels("unauthorised").inc()
                return web.json_response({"error": "X-Siaga-Signature does not match the body"},
                                         status=401)
        now = self.clock.now()
        raw = body.decode("utf-8", errors="replace")
        try:
            location, number = self._parse(request.content_type, raw)
        except LocationParseError as exc:
            self.locations.rejected("aml", gateway.name, exc.reason, raw, now)
            self.counter.labels("rejected").inc()
            return web.json_response({"status": "rejected", "reason": exc.reason}, status=200)
        self.locations.received(location, now, number)
        self.counter.labels("accepted").inc()
        return web.json_response({"status": "accepted", "has_location": location.has_location,
                                  "warnings": list(location.warnings)}, status=200)

    @staticmethod
    def _parse(content_type: str, raw: str) -> tuple[Location, str | None]:
        if content_type == "application/json":
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as exc:  # RecursionError: [[[[... thousands deep
                raise LocationParseError(f"body is not JSON: {exc}", raw) from None
            if not isinstance(data, dict):
                raise LocationParseError("JSON body must be an object", raw)
            unknown = set(data) - {"from", "text", "hex", "received_at"}
            if unknown:
                raise LocationParseError(f"unknown JSON field(s): {', '.join(sorted(unknown))}", raw)
            sender = data.get("from")
            if not isinstance(sender, str) or not sender:
                raise LocationParseError('JSON body needs "from": the SMS sender number', raw)
            if isinstance(data.get("text"), str):
                return parse_sms_text(data["text"]), sender
            if isinstance(data.get("hex"), str):
                return parse_sms_user_data_hex(data["hex"]), sender
            raise LocationParseError('JSON body needs "text" (SMS text) or "hex" (user data)', raw)
        if content_type in ("application/x-www-form-urlencoded", "text/plain", ""):
            location = parse_https_form(raw)
            return location, location.caller_number
        raise LocationParseError(f"unsupported content type {content_type!r}", raw)
