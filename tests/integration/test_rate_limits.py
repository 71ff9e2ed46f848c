"""Rate limits on the public endpoints: /aml per gateway, /api/v1/complaints per client IP.

Small limits are configured through the environment; every loop is bounded and every request
goes to a loopback port. A refused request is answered 429 with Retry-After and stores nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from ari_app.config import ConfigError, Site
from ari_app.secrets import secret
from ari_app.testing.web import web_session
from ari_app.tickets.models import InputRejection, LocationRecord, Ticket
from ari_app.web.ratelimit import RateLimit, TokenBucketLimiter
from tests.integration.console_stack import WebStack, web_stack

AML_SMS = ('A"ML=1;lt=-6.58870;lg=+110.66840;rd=50;top=20250519030405;lc=68;pm=G;'
           "si=510100000000000;ei=353472104343540;mcc=510;mnc=10;ml=122")
COMPLAINT = {"description": "Lampu jalan mati sejak kemarin malam", "phone": "081234567890"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(RateLimit(2.0, 3), clock=clock)
    assert [limiter.acquire("gw") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("gw") == pytest.approx(0.5)  # one token takes 1/rate seconds
    assert limiter.acquire("other") == 0.0  # keys do not share a bucket
    clock.now += 0.5
    assert limiter.acquire("gw") == 0.0
    assert limiter.acquire("gw") > 0
    clock.now += 3600  # a long idle refills to the burst, never beyond it
    assert [limiter.acquire("gw") for _ in range(4)][:3] == [0.0, 0.0, 0.0]
    assert limiter.refused == 2 + 1


def test_bucket_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(RateLimit(1.0, 1), max_keys=50, clock=FakeClock())
    for i in range(1000):
        limiter.acquire(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 50


def test_limits_come_from_the_environment_and_are_checked() -> None:
    default = RateLimit(20.0, 100)
    assert RateLimit.from_env("X", default, {}) == default
    assert RateLimit.from_env("X", default, {"X_RATE_PER_S": "0.5", "X_BURST": "4"}) == \
        RateLimit(0.5, 4)
    for bad in ({"X_RATE_PER_S": "0"}, {"X_RATE_PER_S": "nan"}, {"X_RATE_PER_S": "fast"},
                {"X_BURST": "0"}, {"X_BURST": "-1"}, {"X_BURST": "1.5"}):
        with pytest.raises(ConfigError):
            RateLimit.from_env("X", default, bad)


async def _count(stack: WebStack, model: type[Any]) -> int:
    await stack.app.writer.flush(30)
    async with stack.app.sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


async def _post(http: aiohttp.ClientSession, url: str, token: str, **kw: Any) -> tuple[int, str]:
    async with http.post(url, headers={"Authorization": f"Bearer {token}"}, **kw) as resp:
        return resp.status, resp.headers.get("Retry-After", "")


async def test_aml_over_the_limit_is_429_per_gateway_and_stores_nothing(
        db_url: str, tmp_path: Path, jepara: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAGA112_AML_RATE_PER_S", "0.001")  # no refill within the test
    monkeypatch.setenv("SIAGA112_AML_BURST", "3")
    site = dataclasses.replace(jepara, web=dataclasses.replace(
        jepara.web, aml_gateways=("smsgw", "backup")))
    var_dir = tmp_path / "var"
    async with web_stack(db_url, var_dir, site) as stack, web_session() as http:
        url = f"{stack.url}/aml"
        token = secret(var_dir, "aml-smsgw.token")
        message = {"json": {"from": "+6281234567890", "text": AML_SMS}}
        answers = [await _post(http, url, token, **message) for _ in range(5)]
        assert [status for status, _ in answers] == [200, 200, 200, 429, 429]
        assert all(int(after) >= 1 for _, after in answers[3:])
        # a wrong token is still 401 (and costs the gateway nothing); another gateway has its own
        assert (await _post(http, url, "wrong", **message))[0] == 401
        assert (await _post(http, url, secret(var_dir, "aml-backup.token"), **message))[0] == 200
        assert await _count(stack, LocationRecord) == 4
        assert await _count(stack, InputRejection) == 0


async def test_complaints_over_the_limit_are_429_per_ip_and_store_nothing(
        db_url: str, tmp_path: Path, jepara: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIAGA112_COMPLAINTS_RATE_PER_S", "0.001")
    monkeypatch.setenv("SIAGA112_COMPLAINTS_BURST", "2")
    async with web_stack(db_url, tmp_path / "var", jepara) as stack, \
            web_session() as http:
        token = await stack.token("clerk", "operator")
        url = f"{stack.url}/api/v1/complaints"
        answers = [await _post(http, url, token, json=COMPLAINT) for _ in range(4)]
        assert [status for status, _ in answers] == [201, 201, 429, 429]
        assert int(answers[2][1]) >= 1
        # the limit is per address, whoever asks: an anonymous request is refused the same way
        async with http.post(url, json=COMPLAINT) as resp:
            assert resp.status == 429 and resp.headers["Retry-After"]
        assert await _count(stack, Ticket) == 2
