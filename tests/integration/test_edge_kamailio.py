"""Kamailio as the SIP edge of two nodes (real Kamailio, two real Asterisks + apps, SIPp).

Each node has its own loopback address (127.0.0.11, 127.0.0.12) and its own database here: what
this file shows is the edge (dispatching, failover, rejoin, one registration for every node).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.edge.kamailio import (
    EdgeSettings,
    KamailioProcess,
    RenderedEdge,
    node_states,
    nodes_from,
    render,
)
from ari_app.routing.operators import add_operator, add_shift, endpoints, sip_md5
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.ports import free_port
from ari_app.testing.sipp import SippProcess, SippResult, SippRun, run_sipp
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.migrate import upgrade
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

PASSWORD = "rahasia-op1-2025"


@dataclasses.dataclass
class Edge:
    rendered: RenderedEdge
    process: KamailioProcess
    port: int
    nodes: dict[str, Stack]

    def states(self) -> dict[str, str]:
        return node_states(self.rendered)

    def uri(self, node: str) -> str:
        return f"sip:{self.nodes[node].site.asterisk.bind}:{self.nodes[node].asterisk.sip_port}"

    async def wait_state(self, node: str, active: bool, timeout: float = 15.0) -> None:
        """Until the dispatcher's probing shows the node up (or down)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < timeout:
            flags = (await asyncio.to_thread(self.states)).get(self.uri(node), "")
            if flags.startswith("A") == active:
                return
            await asyncio.sleep(0.2)  # the dispatcher has no event we can subscribe to
        raise AssertionError(f"node {node} not {'up' if active else 'down'} after {timeout}s: "
                             f"{self.states()}")

    async def call(self, caller: str, digit: str = "1") -> SippResult:
        return await run_sipp(SippRun(scenario="caller_key.xml", target_port=self.port,
                                      keys={"caller": caller}, timeout_s=40,
                                      template={"digit": digit, "bye_timeout_ms": "30000"}))

    async def tickets_by_node(self) -> dict[str, list[str]]:
        return {name: [t.caller_number for t in await stack.tickets()]
                for name, stack in self.nodes.items()}


EdgeFactory = Callable[..., Awaitable[Edge]]


async def start_node(name: str, address: str, base: Site, root: Path, sounds: Path,
                     edge_port: int, clock: Clock) -> Stack:
    """One node: its Asterisk on its own loopback address, its app, its database; the
    carrier is the edge (identify by the edge's address) and operators are reached through it."""
    var = root / name
    var.mkdir()
    (var / "sounds").symlink_to(sounds)
    site = on_free_ports(dataclasses.replace(
        base, asterisk=dataclasses.replace(base.asterisk, trunk_host="127.0.0.1")), bind=address)
    db = f"sqlite+aiosqlite:///{var}/siaga112.db"
    await asyncio.to_thread(upgrade, db)
    engine = make_engine(db)
    try:
        async with sessions(engine)() as s, s.begin():
            now = clock.now()
            await add_operator(s, site, "op1", "OP1", now, password=PASSWORD,
                               contact=f"sip:op1@127.0.0.1:{edge_port}")
            await add_shift(s, "op1", now - timedelta(hours=4), now + timedelta(hours=4))
        async with sessions(engine)() as s:
            eps = await endpoints(s, site.code)
    finally:
        await engine.dispose()
    ast = PrivateAsterisk(site, var, operators=eps, database_url=db)
    await asyncio.to_thread(ast.start)
    stack = Stack(site, var, db, ast, clock=clock)
    await stack.start_app()
    return stack


@pytest.fixture
async def make_edge(tmp_path: Path, sounds_dir: Path, batola: Site) -> AsyncIterator[EdgeFactory]:
    made: list[Edge] = []

    async def make(ping_interval_s: int = 1) -> Edge:
        port = free_port()
        clock = Clock()
        nodes = {name: await start_node(name, address, batola, tmp_path, sounds_dir, port, clock)
                 for name, address in (("a", "127.0.0.11"), ("b", "127.0.0.12"))}
        settings = EdgeSettings(
            listen=f"127.0.0.1:{port}",
            nodes=nodes_from((n, f"{s.site.asterisk.bind}:{s.asterisk.sip_port}")
                             for n, s in nodes.items()),
            ping_interval_s=ping_interval_s,
            operators=(("op1", sip_md5("op1", PASSWORD)),))
        rendered = render(settings, tmp_path / "edge")
        process = KamailioProcess(rendered)
        await asyncio.to_thread(process.start)
        edge = Edge(rendered, process, port, nodes)
        made.append(edge)
        return edge

    yield make
    for edge in made:
        await asyncio.to_thread(edge.process.stop)
        for stack in edge.nodes.values():
            try:
                await stack.stop_app()
            finally:
                if stack.asterisk.process.running():
                    await asyncio.to_thread(stack.asterisk.stop)


async def operator_phone(edge: Edge, calls: int) -> SippProcess:
    """op1's phone: registers once, at the edge, then answers whatever node rings it."""
    uas = SippProcess(SippRun(scenario="operator_answer_talk.xml", uas=True, calls=calls,
                              extra_args=["-d", "1500"],
                              timeout_s=170))
    await uas.start()
    registered = await run_sipp(SippRun(
        scenario="operator_register.xml", target_port=edge.port, timeout_s=10,
        template={"user": "op1", "password": PASSWORD, "contact_port": str(uas.port)}))
    assert registered.ok, registered.errors or registered.stdout[-2000:]
    return uas


async def test_two_nodes_behind_the_edge_share_one_registration_survive_a_dead_node_and_rejoin(
    make_edge: EdgeFactory,
) -> None:
    edge = await make_edge(ping_interval_s=1)
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    uas = await operator_phone(edge, calls=7)
    a, b = edge.nodes["a"], edge.nodes["b"]

    # Round robin: one call to each node, and both ring the phone that registered once, here.
    for n in range(2):
        result = await edge.call(f"08125000000{n}")
        assert result.ok, result.errors or result.stdout[-2000:]
    placed = await edge.tickets_by_node()
    assert sorted(len(v) for v in placed.values()) == [1, 1], placed
    for stack in (a, b):
        (ticket,) = await stack.tickets()
        assert ticket.operator == "op1" and ticket.operator_answered_at is not None

    await asyncio.to_thread(a.asterisk.process.kill)  # SIGKILL of our own child: the box is gone
    # The very next calls, whichever node the dispatcher picked first, are answered by B: a
    # call sent to the dead node times out at the edge (fr_timer) and is retried on B at once.
    for n in range(2):
        result = await edge.call(f"08126000000{n}")
        assert result.ok, result.errors or result.stdout[-2000:]
    await edge.wait_state("a", active=False)
    result = await edge.call("081260000009")
    assert result.ok, result.errors or result.stdout[-2000:]
    after_kill = await edge.tickets_by_node()
    assert len(after_kill["b"]) == 4 and "081260000009" in after_kill["b"], after_kill

    # A comes back: probing puts it back in the set by itself, and it takes calls again.
    await asyncio.to_thread(a.asterisk.restart)
    assert a.app is not None
    await a.app.wait_ready(20)
    await edge.wait_state("a", active=True)
    for n in range(2):
        result = await edge.call(f"08127000000{n}")
        assert result.ok, result.errors or result.stdout[-2000:]
    rejoined = await edge.tickets_by_node()
    assert any(c.startswith("08127") for c in rejoined["a"]), rejoined
    phone = await uas.wait(30)
    assert phone.successful == 7, phone.workdir   # every caller reached the one phone
