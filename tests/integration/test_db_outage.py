"""PostgreSQL unreachable for 30 s while calls come in: every call is served, no write is lost."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import datetime
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest

from ari_app.clock import Clock
from ari_app.testing.tcpproxy import TcpProxy
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database
from tests.integration.conftest import PhoneFactory, StackFactory

pytestmark = pytest.mark.integration

CALLS = 10
OUTAGE_S = 30.0


@pytest.fixture
async def pg_through_proxy() -> AsyncIterator[tuple[str, TcpProxy]]:
    """A fresh PostgreSQL database reached through a proxy the test can cut."""
    raw = await _create_pg_database()
    target = urlsplit(raw)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    port = await proxy.start()
    via_proxy = raw.replace(f"{target.hostname}:{target.port or 5432}", f"127.0.0.1:{port}")
    try:
        yield via_proxy.replace("postgresql://", "postgresql+asyncpg://", 1), proxy
    finally:
        await proxy.stop()
        await _drop_pg_database(raw)


@pytest.mark.skipif(not PG_URL, reason="needs SIAGA112_TEST_POSTGRES_URL (CI sets it)")
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_postgres_down_30s_calls_are_answered_and_every_ticket_lands_once_in_order(
    make_stack: StackFactory, phone: PhoneFactory, pg_through_proxy: tuple[str, TcpProxy],
    db_url: str,
) -> None:
    url, proxy = pg_through_proxy
    from ari_app.tickets.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    phones = [await phone("operator_answer_talk.xml", calls=CALLS // 2, name=f"op{i}",
                          extra_args=["-d", "1500"]) for i in (1, 2)]
    stack = await make_stack(operators=[("op1", phones[0][1]), ("op2", phones[1][1])],
                             clock=Clock(datetime(2025, 5, 19, 10, 0,
                                                  tzinfo=ZoneInfo("Asia/Jakarta"))),
                             app_db_url=url)
    assert stack.app is not None
    proxy.cut()
    loop = asyncio.get_running_loop()
    cut_at = loop.time()
    callers = [f"0812555500{i:02d}" for i in range(CALLS)]
    result = await stack.call("caller_key.xml", calls=CALLS, rate=0.5, limit=CALLS,
                              inject=[[c] for c in callers], template={"digit": "2"},
                              timeout_s=120)
    assert result.ok and result.successful == CALLS, result.errors
    assert sum([(await p.wait(30)).successful for p, _ in phones]) == CALLS  # all bridged
    assert stack.app.writer.backlog > 0 and not stack.app.writer.db_ok
    await asyncio.sleep(max(0.0, OUTAGE_S - (loop.time() - cut_at)))  # the outage lasts 30 s
    proxy.restore()
    await stack.app.writer.flush(60)
    tickets = await stack.tickets()
    assert len(tickets) == CALLS and len({t.channel_id for t in tickets}) == CALLS
    assert [t.caller_number for t in tickets] == callers  # in arrival order
    assert [t.reference for t in tickets] == [f"JPR-20250519-{i:04d}" for i in range(1, CALLS + 1)]
    assert all(t.operator in ("op1", "op2") and t.operator_answered_at for t in tickets)
    assert os.environ.get("SIAGA112_TEST_POSTGRES_URL")
