"""The integration stack: a private Asterisk, our app in-process, SIPp against them."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ari_app.app import App, AppSettings
from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.pbx.render import OperatorEndpoint
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.sipp import SippProcess, SippResult, SippRun, run_sipp
from ari_app.tickets.models import CallEvent, CallRecord

pytestmark = pytest.mark.integration


@dataclass
class Stack:
    site: Site
    var_dir: Path
    db_url: str
    asterisk: PrivateAsterisk
    app: App | None = None
    clock: Clock = field(default_factory=Clock)

    def settings(self) -> AppSettings:
        return AppSettings(site=self.site, var_dir=self.var_dir, database_url=self.db_url,
                           ari_url=self.asterisk.ari_url, ari_user=self.asterisk.rendered.ari_user,
                           ari_password=self.asterisk.rendered.ari_password, clock=self.clock)

    async def start_app(self) -> App:
        self.app = App(self.settings())
        await self.app.start()
        await self.app.wait_ready(15)
        return self.app

    async def stop_app(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

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


@pytest.fixture
async def make_stack(var_dir: Path, db_url: str, jepara: Site) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []
    uas: list[SippProcess] = []

    async def make(site: Site | None = None, *, operators: list[OperatorEndpoint] | None = None,
                   clock: Clock | None = None, start_app: bool = True,
                   trunk_contact: str | None = None) -> Stack:
        chosen = on_free_ports(site or jepara)
        ast = PrivateAsterisk(chosen, var_dir, operators=operators or [],
                              trunk_contact=trunk_contact)
        await asyncio.to_thread(ast.start)
        stack = Stack(chosen, var_dir, db_url, ast, clock=clock or Clock())
        stacks.append(stack)
        if start_app:
            await stack.start_app()
        return stack

    make.uas = uas  # type: ignore[attr-defined]
    yield make
    for proc in uas:
        await proc.stop()
    for stack in stacks:
        try:
            await stack.stop_app()
        finally:
            await asyncio.to_thread(stack.asterisk.stop)


def replace_site(site: Site, **changes: Any) -> Site:
    return dataclasses.replace(site, **changes)
