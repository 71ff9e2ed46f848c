"""Kamailio as the SIP edge of two nodes (real Kamailio, two real Asterisks + apps, SIPp).

Each node has its own loopback address (127.0.0.11, 127.0.0.12) and its own database here: what
this file shows is the edge (dispatching, failover, rejoin, one registration for every node).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ari_app.app import App
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
from ari_app.live import next_change
from ari_app.routing.operators import add_operator, add_shift, endpoints, sip_md5
from ari_app.testing.app_process import AppProcess
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.ports import free_port
from ari_app.testing.sipp import SippProcess, SippResult, SippRun, run_sipp
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.migrate import upgrade
from ari_app.web.auth import add_user
from ari_app.web.profiles import link_operator
from tests.integration.conftest import PhoneFactory, Stack, until
from tests.integration.console_stack import browser, log_in

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
                     edge_port: int, clock: Clock, shared_db: str | None = None,
                     lease_s: float = 10.0,
                     extra_operators: Sequence[tuple[str, str]] = (),
                     on_shift: Sequence[str] = ("op1",),
                     trunk_contact: str | None = None) -> Stack:
    """One node: its Asterisk on its own loopback address, its app, its database (or the
    PostgreSQL all nodes share); the carrier is the edge (identify by the edge's address) and
    operators are reached through it."""
    var = root / name
    var.mkdir()
    (var / "sounds").symlink_to(sounds)
    site = on_free_ports(dataclasses.replace(
        base, asterisk=dataclasses.replace(base.asterisk, trunk_host="127.0.0.1")), bind=address)
    db = shared_db or f"sqlite+aiosqlite:///{var}/siaga112.db"
    if shared_db is None:
        await asyncio.to_thread(upgrade, db)
    engine = make_engine(db)
    try:
        async with sessions(engine)() as s, s.begin():
            now = clock.now()
            if shared_db is None or name == "a":  # one roster for every node sharing it
                for op in on_shift:  # registered at the edge: every node rings them there
                    await add_operator(s, site, op, op.upper(), now, password=PASSWORD,
                                       contact=f"sip:{op}@127.0.0.1:{edge_port}")
                    await add_shift(s, op, now - timedelta(hours=4), now + timedelta(hours=4))
                for extra, contact in extra_operators:  # no shift: never offered a 112 call
                    await add_operator(s, site, extra, extra.upper(), now, password=PASSWORD,
                                       contact=contact)
        async with sessions(engine)() as s:
            eps = await endpoints(s, site.code)
    finally:
        await engine.dispose()
    node = name if shared_db else ""
    ast = PrivateAsterisk(site, var, operators=eps, database_url=db, node=node or None,
                          trunk_contact=trunk_contact)
    await asyncio.to_thread(ast.start)
    stack = Stack(site, var, db, ast, clock=clock, node=node, node_lease_s=lease_s)
    await stack.start_app()
    return stack


@pytest.fixture
async def make_edge(tmp_path: Path, sounds_dir: Path, batola: Site) -> AsyncIterator[EdgeFactory]:
    made: list[Edge] = []

    async def make(ping_interval_s: int = 1, shared_db: str | None = None,
                   lease_s: float = 10.0,
                   extra_operators: Sequence[tuple[str, str]] = (),
                   on_shift: Sequence[str] = ("op1",),
                   trunk_contact: str | None = None) -> Edge:
        port = free_port()
        clock = Clock()
        nodes = {name: await start_node(name, address, batola, tmp_path, sounds_dir, port, clock,
                                        shared_db, lease_s, extra_operators, on_shift,
                                        trunk_contact)
                 for name, address in (("a", "127.0.0.11"), ("b", "127.0.0.12"))}
        settings = EdgeSettings(
            listen=f"127.0.0.1:{port}",
            nodes=nodes_from((n, f"{s.site.asterisk.bind}:{s.asterisk.sip_port}")
                             for n, s in nodes.items()),
            ping_interval_s=ping_interval_s,
            operators=tuple((op, sip_md5(op, PASSWORD)) for op in on_shift))
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


async def operator_phone(edge: Edge, calls: int,
                         scenario: str = "operator_answer_talk.xml",
                         talk_ms: int = 1500, user: str = "op1") -> SippProcess:
    """An operator's phone (op1's unless told): registers once, at the edge, then answers
    whatever node rings it."""
    uas = SippProcess(SippRun(scenario=scenario, uas=True, calls=calls,
                              extra_args=["-d", str(talk_ms)],
                              timeout_s=170))
    await uas.start()
    registered = await run_sipp(SippRun(
        scenario="operator_register.xml", target_port=edge.port, timeout_s=10,
        template={"user": user, "password": PASSWORD, "contact_port": str(uas.port)}))
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


async def test_two_nodes_on_one_postgresql_ring_their_one_operator_for_one_caller_at_a_time(
    shared_pg_url: str, make_edge: EdgeFactory,
) -> None:
    """Callers on both nodes, one operator: the claim in PostgreSQL keeps the other node from
    ringing them while they talk, and the callers are served one after the other."""
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url)
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    a, b = edge.nodes["a"], edge.nodes["b"]
    assert a.app is not None and b.app is not None
    for stack in (a, b):
        queue = stack.app.shared_queue if stack.app else None
        assert queue is not None
        await queue.until(lambda q=queue: q.shared, 15)  # type: ignore[misc]
    uas = await operator_phone(edge, calls=3)
    results = await asyncio.gather(*(edge.call(f"08128000000{n}", digit=str(n + 1))
                                     for n in range(3)))
    for result in results:
        assert result.ok, result.errors or result.stdout[-2000:]
    await a.settle()
    await b.settle()
    tickets = sorted(await a.tickets(), key=lambda t: t.operator_answered_at or t.arrived_at)
    assert len(tickets) == 3 and {(t.channel_id or "")[:2] for t in tickets} == {"a-", "b-"}, \
        [t.channel_id for t in tickets]
    for t in tickets:
        assert t.operator == "op1" and t.operator_answered_at is not None and t.ended_at
    for first, then in itertools.pairwise(tickets):
        assert first.ended_at is not None and then.operator_answered_at is not None
        assert first.ended_at <= then.operator_answered_at, (first.reference, then.reference)
    queues = [s.app.shared_queue for s in (a, b) if s.app and s.app.shared_queue]
    assert len(queues) == 2 and sum(q.assigned for q in queues) == 3  # each caller once
    phone = await uas.wait(30)
    assert phone.successful == 3, phone.workdir  # one conversation at a time, all three


async def test_ten_real_callers_on_two_nodes_three_operators_one_global_order_nobody_double_booked(
    shared_pg_url: str, make_edge: EdgeFactory,
) -> None:
    """Ten SIPp callers through the edge (both nodes take some), each pressing a key that sets
    its priority, wait while op1..op3 are not ready; then all three are ready at once. The
    callers are answered by priority, then age, across both nodes, and no operator's phone
    ever holds two of them."""
    operators = ("op1", "op2", "op3")
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url, on_shift=operators)
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    apps = [s.app for s in edge.nodes.values() if s.app is not None]
    assert len(apps) == 2
    for app in apps:
        queue = app.shared_queue
        assert queue is not None
        await queue.until(lambda q=queue: q.shared, 15)  # type: ignore[misc]
        for op in operators:
            app.states.set(op, "not_ready", actor="test", reason="meeting")
    phones = {op: await operator_phone(edge, calls=10, talk_ms=2000, user=op)
              for op in operators}
    digits = random.Random(112).choices("13", k=10)  # 1: fire (priority 1); 3: crime (2)
    numbers = [f"0812930000{i:02d}" for i in range(10)]
    callers = []
    for number, digit in zip(numbers, digits, strict=True):
        callers.append(asyncio.create_task(run_sipp(SippRun(
            scenario="caller_key.xml", target_port=edge.port, keys={"caller": number},
            timeout_s=90, template={"digit": digit, "bye_timeout_ms": "80000"}))))
        await asyncio.sleep(0.3)  # distinct arrivals; the dispatcher alternates the nodes
    a = edge.nodes["a"]
    try:
        async def all_keyed() -> list[Any] | None:
            tickets = await a.tickets()
            keyed = [t for t in tickets if t.category in ("fire", "crime")]
            return tickets if len(keyed) == 10 else None
        waiting = await until(all_keyed, 40)
        assert {(t.channel_id or "")[:2] for t in waiting} == {"a-", "b-"}
        assert all(t.operator_answered_at is None for t in waiting)  # nobody was ready
        for app in apps:  # the keys' priorities have reached the shared queue on each node
            queue = app.shared_queue
            assert queue is not None
            await queue.until(lambda q=queue: len(q._order) == 10, 15)  # type: ignore[misc]
        for app in apps:
            for op in operators:
                app.states.set(op, "ready", actor="test")
        results = await asyncio.gather(*callers)
    finally:
        for task in callers:
            task.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
    for result in results:
        assert result.ok, result.errors or result.stdout[-2000:]
    for stack in edge.nodes.values():
        await stack.settle()
    priority = {n: 1 if d == "1" else 2 for n, d in zip(numbers, digits, strict=True)}
    order = sorted(numbers, key=lambda n: (priority[n], numbers.index(n)))
    tickets = await a.tickets()
    assert sorted(t.caller_number for t in tickets) == numbers
    assert all(t.priority == priority[t.caller_number] for t in tickets)
    answered = sorted(tickets, key=lambda t: t.operator_answered_at or t.arrived_at)
    served = [t.caller_number for t in answered]
    # three operators work in parallel: the first three are the top three, and each caller
    # is answered no later than the two after it in the global order
    assert set(served[:3]) == set(order[:3]), (order, served)
    for i, number in enumerate(order):
        assert served.index(number) <= i + 2, (order, served)
    for op in operators:  # nobody double-booked: one conversation at a time on each phone
        mine = [t for t in answered if t.operator == op]
        assert mine, (op, [(t.caller_number, t.operator) for t in answered])
        for first, then in itertools.pairwise(mine):
            assert first.ended_at is not None and then.operator_answered_at is not None
            assert first.ended_at <= then.operator_answered_at, (op, first.reference,
                                                                 then.reference)
    total = 0
    for uas in phones.values():
        total += (await uas.stop()).successful
    assert total == 10  # every caller reached a real phone, once
    queues = [app.shared_queue for app in apps if app.shared_queue]
    assert sum(q.assigned for q in queues) == 10


async def test_a_call_that_dies_with_its_node_is_closed_as_node_lost_by_the_other_node(
    shared_pg_url: str, make_edge: EdgeFactory,
) -> None:
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url, lease_s=3.0)
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    uas = await operator_phone(edge, calls=1, scenario="operator_answer_wait.xml")
    changes = {n: s.app.live.listen() for n, s in edge.nodes.items() if s.app}
    call = asyncio.create_task(edge.call("081290000001", digit="2"))
    waits = {n: asyncio.create_task(next_change(c, "bridged", timeout=40))
             for n, c in changes.items()}
    done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
    [dying] = [n for n, t in waits.items() if t in done]
    for t in waits.values():
        t.cancel()
    living = "b" if dying == "a" else "a"
    survivor = edge.nodes[living].app
    assert survivor is not None and survivor.shared_queue is not None
    await asyncio.to_thread(edge.nodes[dying].asterisk.process.kill)  # the node's box is gone
    queue = survivor.shared_queue
    await queue.until(lambda: bool(queue.lost_nodes), 20)
    [lost] = queue.lost_nodes
    assert lost.node == dying and len(lost.calls) == 1
    await survivor.writer.flush(30)
    [ticket] = await edge.nodes[living].tickets()
    assert ticket.channel_id == lost.calls[0] and ticket.channel_id.startswith(f"{dying}-")
    assert ticket.end_reason == "node lost" and ticket.ended_at is not None
    assert ticket.callback_needed and ticket.operator == "op1"
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)
    await uas.stop()


async def test_a_nodes_app_killed_mid_call_adopts_it_and_its_operator_stays_claimed_on_every_node(
    shared_pg_url: str, make_edge: EdgeFactory,
) -> None:
    """Node a's app is its own process, as under the supervisor. SIGKILL mid-call: Asterisk keeps
    the call up, the restarted app adopts it, and node b never rings the talking operator for
    its own caller meanwhile; op1 takes b's caller once a's call has ended."""
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url)
    a, b = edge.nodes["a"], edge.nodes["b"]
    await a.stop_app()
    proc = AppProcess(a.asterisk, a.var_dir, a.db_url, free_port(), node="a")
    try:
        await proc.start()
        assert b.app is not None and b.app.shared_queue is not None
        uas = SippProcess(SippRun(scenario="operator_answer_talk.xml", uas=True, calls=2,
                                  extra_args=["-d", "8000"], timeout_s=120))
        await uas.start()
        registered = await run_sipp(SippRun(
            scenario="operator_register.xml", target_port=edge.port, timeout_s=10,
            template={"user": "op1", "password": PASSWORD, "contact_port": str(uas.port)}))
        assert registered.ok, registered.errors

        def direct(stack: Stack, caller: str) -> Coroutine[Any, Any, SippResult]:
            return run_sipp(SippRun(scenario="caller_key.xml", target_host=stack.site.asterisk.bind,
                                    target_port=stack.asterisk.sip_port, keys={"caller": caller},
                                    timeout_s=60, template={"digit": "2",
                                                            "bye_timeout_ms": "40000"}))

        first = asyncio.create_task(direct(a, "081291000001"))

        async def talking() -> object:
            return [t for t in await b.tickets() if t.operator_answered_at is not None]

        await until(talking, 40)
        await proc.kill()           # SIGKILL: no clean-up
        await proc.start()          # the supervisor's restart
        second = asyncio.create_task(direct(b, "081291000002"))
        results = await asyncio.gather(first, second)
        for result in results:
            assert result.ok, result.errors or result.stdout[-2000:]
        await b.settle()
        tickets = {t.caller_number: t for t in await b.tickets()}
        on_a, on_b = tickets["081291000001"], tickets["081291000002"]
        assert (on_a.channel_id or "").startswith("a-") and (on_b.channel_id or "").startswith("b-")
        assert on_a.operator == "op1" and on_a.end_reason != "node lost"
        assert "adopted" in [x.action for x in await b.audit(on_a)]
        assert on_a.ended_at is not None and on_b.operator_rung_at is not None
        assert on_b.operator == "op1" and on_a.ended_at <= on_b.operator_rung_at  # never both
        assert b.app.shared_queue.lost_nodes == []  # back within its lease: never taken for dead
        phone = await uas.wait(30)
        assert phone.successful == 2, phone.workdir
    finally:
        await proc.stop()


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The server-sent events of a response, as (event, data)."""
    kind = ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def until_event(events: AsyncIterator[tuple[str, dict[str, Any]]], kind: str,
                      match: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        async for got, data in events:
            if got == kind and match(data):
                return data
    raise AssertionError(f"the stream ended before a matching {kind} event")


async def first_node_with(changes: dict[str, asyncio.Queue[Any]], stage: str,
                          timeout: float = 40) -> tuple[str, str, str]:
    """The node whose call bus shows ``stage`` first (which node the edge gave the caller):
    (that node, the other node, the call id)."""
    waits = {n: asyncio.create_task(next_change(c, stage, timeout=timeout))
             for n, c in changes.items()}
    try:
        done, _ = await asyncio.wait(waits.values(), return_when=asyncio.FIRST_COMPLETED)
        [owner] = [n for n, t in waits.items() if t in done]
        call_id = str(waits[owner].result()["call"])
    finally:
        for t in waits.values():
            t.cancel()
    [other] = [n for n in changes if n != owner]
    return owner, other, call_id


async def two_nodes_and_a_supervisor(
    make_edge: EdgeFactory, shared_pg_url: str, phone: PhoneFactory,
) -> tuple[Edge, dict[str, App], SippProcess, SippProcess]:
    """The cross-node console tests' setting: two nodes on one PostgreSQL sharing their queue,
    op1 not ready (a caller waits), supervisor "boss" on node a linked to phone sup1 (answers
    and waits), op1's phone registered at the edge (talks 15 s). Returns edge, apps, the
    supervisor's phone and op1's."""
    sup_phone, sup_contact = await phone("operator_answer_wait.xml", name="sup1")
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url,
                           extra_operators=[("sup1", sup_contact)])
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    apps = {n: s.app for n, s in edge.nodes.items() if s.app is not None}
    assert len(apps) == 2
    for app in apps.values():
        queue = app.shared_queue
        assert queue is not None
        await queue.until(lambda q=queue: q.shared, 15)  # type: ignore[misc]
        app.states.set("op1", "not_ready", actor="test", reason="meeting")  # the caller waits
    async with apps["a"].sessions() as s, s.begin():
        await add_user(s, "boss", "supervisor", PASSWORD, apps["a"].settings.clock.now())
        await link_operator(s, "boss", "sup1")
    uas = await operator_phone(edge, calls=1, talk_ms=15000)
    return edge, apps, sup_phone, uas


async def test_every_nodes_console_shows_every_nodes_calls_and_acts_on_another_nodes_call(
    shared_pg_url: str, make_edge: EdgeFactory, phone: PhoneFactory,
) -> None:
    """Two nodes on one PostgreSQL: a caller waiting on one node is in the other node's live
    queue and wallboard (its real web server, over SSE), with its node; once the caller talks
    to op1, a supervisor logged in to the other node's console listens in, and the ChanSpy
    runs on the node that holds the call, audited there with the supervisor's name."""
    edge, apps, sup_phone, uas = await two_nodes_and_a_supervisor(make_edge, shared_pg_url, phone)
    changes = {n: app.live.listen() for n, app in apps.items()}
    caller = asyncio.create_task(run_sipp(SippRun(
        scenario="caller_key.xml", target_port=edge.port, keys={"caller": "081291110001"},
        timeout_s=80, template={"digit": "2", "bye_timeout_ms": "60000"})))
    try:
        owner, other, call_id = await first_node_with(changes, "queued")
        console = edge.nodes[other]
        assert call_id.startswith(f"{owner}-") and call_id not in apps[other].live.state
        async with browser() as http:
            h = {"X-CSRF-Token": await log_in(http, console.web_url, "boss", PASSWORD)}
            async with http.get(console.web_url + "/console/events",
                                timeout=aiohttp.ClientTimeout(total=None)) as stream:
                events = sse(stream)
                queued = await until_event(events, "queue", lambda q: any(
                    w["call"] == call_id for w in q["waiting"]), 15)
                [row] = queued["waiting"]
                assert row["node"] == owner and row["caller"] == "081291110001"
                assert row["stage"] == "queued" and row["waited_s"] >= 0
                async with http.get(console.web_url + "/wallboard.json") as resp:
                    board = await resp.json()
                assert board["waiting"] == 1 and board["queue"][0]["node"] == owner
                # no node named zz: a clear answer, not a hang
                async with http.post(console.web_url + "/console/calls/zz-1733.1/supervise",
                                     json={"mode": "listen"}, headers=h) as resp:
                    assert resp.status == 503
                    assert (await resp.json())["error"] == (
                        "node zz is not answering; the call may have died with it")

                for app in apps.values():
                    app.states.set("op1", "ready", actor="test")
                await next_change(changes[owner], "bridged", 40, call=call_id)
                seen = await until_event(events, "call", lambda c: c.get("call") == call_id
                                         and c.get("stage") == "bridged", 15)
                assert seen["node"] == owner and seen["operator"] == "op1"
                assert seen["reference"]  # the ticket, from the shared database
                async with http.get(console.web_url + "/wallboard.json") as resp:
                    board = await resp.json()
                [op1] = [o for o in board["operators"] if o["operator"] == "op1"]
                assert op1["bucket"] == "in_call" and op1["call_node"] == owner
                assert board["waiting"] == 0
                async with http.post(f"{console.web_url}/console/calls/{call_id}/supervise",
                                     json={"mode": "listen"}, headers=h) as resp:
                    assert resp.status == 200, await resp.text()
                    assert (await resp.json())["phone"] == "sup1"
        owning = edge.nodes[owner].asterisk
        spying = ""
        for _ in range(50):  # the supervisor's phone answers within ~0.2 s
            spying = await asyncio.to_thread(owning.cli, "core show channels concise")
            if "ChanSpy" in spying:
                break
            await asyncio.sleep(0.2)
        [line] = [ln for ln in spying.splitlines() if "ChanSpy" in ln]
        assert line.startswith("PJSIP/sup1-") and "!siaga112-supervise!listen!" in line
        result = await caller
        assert result.ok, result.errors or result.stdout[-2000:]
        assert (await sup_phone.wait(30)).successful == 1  # ChanSpy ended with the call
        await apps[owner].writer.flush(30)
        [ticket] = [t for t in await edge.nodes[owner].tickets() if t.channel_id == call_id]
        audit = [(a.actor, a.action, json.loads(a.detail or "{}").get("from node"))
                 for a in await edge.nodes[owner].audit(ticket)]
        assert ("boss", "supervisor listen", other) in audit
        assert (await uas.wait(30)).successful == 1
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        for n, c in changes.items():
            apps[n].live.unlisten(c)


async def test_an_agency_is_conferenced_in_and_the_call_handed_over_from_another_nodes_console(
    shared_pg_url: str, make_edge: EdgeFactory, phone: PhoneFactory,
) -> None:
    """The caller talks to op1 on one node; sari, op1's console user, is logged in to the other
    node. Her "conference 113" and then "hand over" run on the node that holds the call: the
    fire brigade's real phone rings through that node's trunk, op1 is let go, caller and brigade
    stay connected. Budi, who is not on the call, is refused there, with that node's answer."""
    brigade, trunk = await phone("operator_answer_talk.xml", name="113",
                                 extra_args=["-d", "4000"], answer_after_ms="200")
    edge = await make_edge(ping_interval_s=1, shared_db=shared_pg_url,
                           trunk_contact=trunk.replace("sip:113@", "sip:"))
    await edge.wait_state("a", active=True)
    await edge.wait_state("b", active=True)
    apps = {n: s.app for n, s in edge.nodes.items() if s.app is not None}
    for app in apps.values():
        queue = app.shared_queue
        assert queue is not None
        await queue.until(lambda q=queue: q.shared, 15)  # type: ignore[misc]
    async with apps["a"].sessions() as s, s.begin():
        now = apps["a"].settings.clock.now()
        await add_user(s, "sari", "operator", PASSWORD, now)
        await add_user(s, "budi", "operator", PASSWORD, now)
        await link_operator(s, "sari", "op1")
    op1 = await operator_phone(edge, calls=1, scenario="operator_answer_wait.xml")
    changes = {n: app.live.listen() for n, app in apps.items()}
    caller = asyncio.create_task(run_sipp(SippRun(
        scenario="caller_key.xml", target_port=edge.port, keys={"caller": "081291110113"},
        timeout_s=80, template={"digit": "1", "bye_timeout_ms": "60000"})))
    try:
        owner, other, call_id = await first_node_with(changes, "bridged")
        console = edge.nodes[other].web_url
        assert call_id.startswith(f"{owner}-") and call_id not in apps[other].registry.calls
        async with browser() as http:
            h = {"X-CSRF-Token": await log_in(http, console, "budi", PASSWORD)}
            async with http.post(f"{console}/console/calls/{call_id}/handover",
                                 json={"mode": "warm"}, headers=h) as resp:
                assert resp.status == 403, await resp.text()  # judged by the owning node
                assert "only the operator on the call" in (await resp.json())["error"]
            http.cookie_jar.clear()
            h = {"X-CSRF-Token": await log_in(http, console, "sari", PASSWORD)}
            async with http.post(f"{console}/console/calls/{call_id}/handover",
                                 json={"mode": "warm"}, headers=h) as resp:
                assert resp.status == 409  # nobody on the line to hand over to yet
            async with http.post(f"{console}/api/v1/calls/{call_id}/agency",
                                 json={"number": "113"}, headers=h) as resp:
                assert resp.status == 202, await resp.text()
                assert (await resp.json())["channel"].startswith(f"ag-{call_id}-")
            await next_change(changes[owner], "agency", 20, call=call_id, joined=True)
            async with http.post(f"{console}/console/calls/{call_id}/handover",
                                 json={"mode": "warm"}, headers=h) as resp:
                assert resp.status == 202, await resp.text()
        handed = await next_change(changes[owner], "handed_over", 20, call=call_id)
        assert handed["agencies"] == ["113"] and handed["operator"] == "op1"
        assert (await op1.wait(20)).successful == 1  # let go by the owning node's app
        result = await caller  # the brigade hangs up after its 4 s; then the caller gets a BYE
        assert result.ok, result.errors or result.stdout[-2000:]
        assert (await brigade.wait(20)).successful == 1
        holder = edge.nodes[owner]
        await holder.settle()
        [ticket] = [t for t in await holder.tickets() if t.channel_id == call_id]
        assert ticket.end_reason == "agency hangup" and ticket.operator == "op1"
        audit = {a.action: (a.actor, json.loads(a.detail or "{}"))
                 for a in await holder.audit(ticket)}
        assert audit["agency added"][0] == "sari"
        assert audit["agency added"][1]["from node"] == other
        assert audit["handed over"][0] == "sari"
        assert audit["handed over"][1]["from node"] == other
        assert audit["handed over"][1]["agencies"] == ["113"]
    finally:
        if not caller.done():
            caller.cancel()
        await asyncio.gather(caller, return_exceptions=True)
        for n, c in changes.items():
            apps[n].live.unlisten(c)


async def test_operator_changes_reach_the_running_edge_without_a_restart(
    tmp_path: Path, batola: Site,
) -> None:
    """`operators add|passwd|remove` on the edge's machine: the running Kamailio takes the new
    digests at once (live htable), and its rendered config has them for its next start."""
    from ari_app.config import EdgeConfig
    from ari_app.edge.cli import follow_operators
    from ari_app.edge.kamailio import control_socket, operators_at_edge

    port = free_port()
    site = dataclasses.replace(batola, edge=EdgeConfig(
        f"127.0.0.1:{port}", (("a", f"127.0.0.11:{free_port()}"),), 1))
    var = tmp_path / "var"
    old = sip_md5("op1", PASSWORD)
    settings = EdgeSettings(listen=f"127.0.0.1:{port}",
                            nodes=nodes_from([("a", "127.0.0.11:5999")]),
                            operators=(("op1", old), ("op9", sip_md5("op9", "gone-2025"))))
    process = KamailioProcess(render(settings, var))
    await asyncio.to_thread(process.start)
    try:
        async def register(user: str, password: str) -> SippResult:
            return await run_sipp(SippRun(
                scenario="operator_register.xml", target_port=port, timeout_s=8,
                template={"user": user, "password": password, "contact_port": str(free_port())}))

        assert (await register("op1", PASSWORD)).ok
        new_pw, digits_only = "baru-op1-2026", "2" * 32  # a digest of digits only stays a string
        digests = {"op1": sip_md5("op1", new_pw), "op2": sip_md5("op2", "rahasia-op2"),
                   "op3": digits_only}
        line = await asyncio.to_thread(follow_operators, site, var, digests)
        assert line is not None and "op2 added" in line and "op9 removed" in line, line
        assert "op1 changed" in line, line
        assert operators_at_edge(control_socket(var)) == digests
        assert (await register("op2", "rahasia-op2")).ok     # added: registers at once
        assert (await register("op1", new_pw)).ok            # new password works...
        assert not (await register("op1", PASSWORD)).ok      # ...and the old one no longer
        assert not (await register("op9", "gone-2025")).ok   # removed
        rendered = (var / "kamailio" / "kamailio.cfg").read_text()
        assert digests["op2"] in rendered and "op9" not in rendered  # for the next start
        again = await asyncio.to_thread(follow_operators, site, var, digests)
        assert again == "the edge (Kamailio) already had these operators"
    finally:
        await asyncio.to_thread(process.stop)
    stopped = await asyncio.to_thread(follow_operators, site, var, digests)
    assert stopped is not None and "does not run on this machine" in stopped
