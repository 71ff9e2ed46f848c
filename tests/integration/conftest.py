"""The integration stack: a private Asterisk, our app in-process, SIPp against them."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from ari_app.app import App, AppSettings
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.routing.operators import add_operator, add_shift, endpoints
from ari_app.secrets import secret
from ari_app.testing.agi_server import start_agi_server, stop_agi_server
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.ports import free_port
from ari_app.testing.sipp import SippProcess, SippResult, SippRun, run_sipp
from ari_app.testing.web import web_session, web_url
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import (
    CallEvent,
    CallRecord,
    InputRejection,
    LocationRecord,
    Ticket,
    TicketAudit,
)

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    site: Site
    var_dir: Path
    db_url: str
    asterisk: PrivateAsterisk
    app: App | None = None
    clock: Clock = field(default_factory=Clock)
    web_port: int = field(default_factory=free_port)
    agi_server: subprocess.Popen[bytes] | None = None
    stranded_sweep_s: float = 15.0
    node: str = ""            # several nodes on one PostgreSQL: this one's name
    node_lease_s: float = 10.0
    ari_url: str | None = None  # the app's way to ARI, when not straight to Asterisk (a proxy)

    def settings(self) -> AppSettings:
        return AppSettings(site=self.site, var_dir=self.var_dir, database_url=self.db_url,
                           ari_url=self.ari_url or self.asterisk.ari_url,
                           ari_user=self.asterisk.rendered.ari_user,
                           ari_password=self.asterisk.rendered.ari_password, clock=self.clock,
                           web_port=self.web_port, stranded_sweep_s=self.stranded_sweep_s,
                           node=self.node, node_lease_s=self.node_lease_s)

    async def start_app(self) -> App:
        self.app = App(self.settings())
        await self.app.start()
        await self.app.wait_ready(15)
        return self.app

    async def start_agi_server(self) -> Path:
        """`siaga112 agi serve` for this stack (the dialplan asks it first); its log file."""
        log_path = self.var_dir / "agi-server.log"
        self.agi_server = await asyncio.to_thread(start_agi_server, self.site, self.var_dir,
                                                  log_path)
        return log_path

    async def stop_app(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

    @property
    def web_url(self) -> str:
        return web_url(self.web_port)

    async def post_aml(self, body: str | bytes, *, content_type: str = "application/json",
                       gateway: str = "smsgw", token: str | None = None) -> tuple[int, Any]:
        """POST to /aml as a gateway would (its token comes from var/secrets)."""
        token = token if token is not None else secret(self.var_dir, f"aml-{gateway}.token")
        async with web_session() as http, http.post(
            f"{self.web_url}/aml", data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        ) as resp:
            try:
                return resp.status, await resp.json(content_type=None)
            except ValueError:
                return resp.status, await resp.text()

    def caller(self, scenario: str = "caller_listen.xml", **kw: Any) -> SippRun:
        keys = {"caller": "081234567890"} | kw.pop("keys", {})
        return SippRun(scenario=scenario, target_port=self.asterisk.sip_port, keys=keys, **kw)

    async def call(self, scenario: str = "caller_listen.xml", **kw: Any) -> SippResult:
        return await run_sipp(self.caller(scenario, **kw))

    async def settle(self) -> None:
        """Wait for every call task to end and every database write to land."""
        assert self.app is not None
        await self.app.registry.wait_idle(30)
        await self.app.writer.flush(30)

    async def tickets(self) -> list[Ticket]:
        assert self.app is not None
        async with self.app.sessions() as s:
            return list((await s.scalars(select(Ticket).order_by(Ticket.id))).all())

    async def audit(self, ticket: Ticket) -> list[TicketAudit]:
        assert self.app is not None
        async with self.app.sessions() as s:
            rows = await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == ticket.id)
                                   .order_by(TicketAudit.id))
            return list(rows.all())

    async def locations(self, ticket: Ticket | None = None) -> list[LocationRecord]:
        assert self.app is not None
        async with self.app.sessions() as s:
            q = select(LocationRecord).order_by(LocationRecord.id)
            if ticket is not None:
                q = q.where(LocationRecord.ticket_id == ticket.id)
            return list((await s.scalars(q)).all())

    async def rejections(self) -> list[InputRejection]:
        assert self.app is not None
        async with self.app.sessions() as s:
            return list((await s.scalars(select(InputRejection).order_by(InputRejection.id))).all())

    async def calls(self) -> list[CallRecord]:
        assert self.app is not None
        async with self.app.sessions() as s:
            return list((await s.scalars(select(CallRecord).order_by(CallRecord.id))).all())

    async def call_events(self, channel_id: str) -> list[CallEvent]:
        assert self.app is not None
        async with self.app.sessions() as s:
            rows = await s.scalars(select(CallEvent).where(CallEvent.channel_id == channel_id)
                                   .order_by(CallEvent.seq))
            return list(rows.all())


StackFactory = Callable[..., Awaitable[Stack]]


WIB = ZoneInfo("Asia/Jakarta")
WITA = ZoneInfo("Asia/Makassar")


def at(hour: int, tz: ZoneInfo) -> Clock:
    """A fixed clock on a working day (19 May 2025) at ``hour`` in ``tz``: call tests run in a
    site's opening hours, or out of them, whatever the time of the run."""
    return Clock(datetime(2025, 5, 19, hour, 0, tzinfo=tz))


async def seed_operators(db_url: str, site: Site, clock: Clock,
                         operators: list[tuple[str, str | None]], on_shift: bool = True) -> list[Any]:
    """Operators and a shift around 'now' in the database, as `siaga112 operators add` does."""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            now = clock.now()
            for name, contact in operators:
                await add_operator(s, site, name, name.upper(), now, contact=contact)
                if on_shift:
                    await add_shift(s, name, now - timedelta(hours=4), now + timedelta(hours=4))
        async with sessions(engine)() as s:
            return await endpoints(s, site.code)
    finally:
        await engine.dispose()


PhoneFactory = Callable[..., Awaitable[tuple[SippProcess, str]]]


@pytest.fixture
async def phone() -> AsyncIterator[PhoneFactory]:
    """SIPp UASes standing in for operators' softphones (or the carrier's far end)."""
    started: list[SippProcess] = []

    async def make(scenario: str = "operator_answer_wait.xml", *, calls: int = 1,
                   name: str = "op1", extra_args: list[str] | None = None,
                   timeout_s: float = 180, **template: str) -> tuple[SippProcess, str]:
        proc = SippProcess(SippRun(scenario=scenario, uas=True, calls=calls, timeout_s=timeout_s,
                                   extra_args=extra_args or [], template=template))
        await proc.start()
        started.append(proc)
        return proc, f"sip:{name}@127.0.0.1:{proc.port}"

    yield make
    for proc in started:
        if proc.proc is not None and proc.proc.returncode is None:
            await proc.stop()


@pytest.fixture
async def make_stack(var_dir: Path, db_url: str, jepara: Site) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(site: Site | None = None, *,
                   operators: list[tuple[str, str | None]] | None = None,
                   clock: Clock | None = None, start_app: bool = True, on_shift: bool = True,
                   trunk_contact: str | None = None,
                   agi_database_url: str | None = None,
                   app_db_url: str | None = None) -> Stack:
        chosen = on_free_ports(site or jepara)
        clock = clock or Clock()
        database = app_db_url or db_url
        eps = await seed_operators(database, chosen, clock, operators or [], on_shift)
        ast = PrivateAsterisk(chosen, var_dir, operators=eps, trunk_contact=trunk_contact,
                              database_url=agi_database_url or database)
        await asyncio.to_thread(ast.start)
        stack = Stack(chosen, var_dir, database, ast, clock=clock)
        stacks.append(stack)
        if start_app:
            await stack.start_app()
        return stack

    yield make
    for stack in stacks:
        try:
            await stack.stop_app()
            if stack.agi_server is not None:
                await asyncio.to_thread(stop_agi_server, stack.agi_server)
        finally:
            await asyncio.to_thread(stack.asterisk.stop)


def replace_site(site: Site, **changes: Any) -> Site:
    return dataclasses.replace(site, **changes)


@pytest.fixture
async def shared_pg_url() -> AsyncIterator[str]:
    """A fresh, migrated PostgreSQL database for several nodes to share: on the CI's server
    when its URL is given, else in a private cluster of the test's own."""
    from ari_app.testing.postgres import PrivateCluster
    from ari_app.tickets.migrate import upgrade
    from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database

    if PG_URL:
        raw = await _create_pg_database()
        try:
            url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
            await asyncio.to_thread(upgrade, url)
            yield url
        finally:
            await _drop_pg_database(raw)
        return
    pg = PrivateCluster()
    try:
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        raw = await asyncio.to_thread(pg.createdb, "siaga112")
        url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
        await asyncio.to_thread(upgrade, url)
        yield url
    finally:
        await asyncio.to_thread(pg.destroy)


async def until(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Poll what another process changes (Asterisk over ARI, a shared database) until ``check``
    returns something truthy; there is no event of ours to await."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)
