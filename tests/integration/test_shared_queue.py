"""The queue and the operator claims shared by two nodes through a real PostgreSQL.

Each "node" here is a SharedQueue with its own roster and its own connections, as two apps on two
machines would have; the rosters are set by hand (who is on shift and reachable), which is what
the roster would read from the database and Asterisk. Calls through Kamailio and two Asterisks
are in test_edge_kamailio.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import asyncpg
import pytest

from ari_app.clock import Clock
from ari_app.routing.queue import Waiting
from ari_app.routing.roster import Roster
from ari_app.routing.shared_queue import LostNode, SharedQueue, asyncpg_dsn
from ari_app.testing.netns import Namespace
from ari_app.testing.postgres import PrivateCluster, pg_bin
from ari_app.tickets.migrate import upgrade
from tests.conftest import PG_URL

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not PG_URL and pg_bin() is None,
                                 reason="no PostgreSQL: neither a test URL nor server binaries")]

SITE = "batola"
OPERATORS = ("op1", "op2", "op3")


@pytest.fixture
async def cluster() -> AsyncIterator[PrivateCluster]:
    """A PostgreSQL of this test's own, which it may stop (the shared server never is)."""
    pg = PrivateCluster()
    try:
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        yield pg
    finally:
        await asyncio.to_thread(pg.destroy)


def roster(on_shift: tuple[str, ...] = OPERATORS, reachable: bool = True) -> Roster:
    r = Roster(cast(Any, None), cast(Any, None), SITE, Clock())
    r.on_shift = list(on_shift)
    r.reachable = {name: reachable for name in on_shift}
    r.loaded = True
    return r


NodeFactory = Callable[..., Awaitable[SharedQueue]]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    made: list[SharedQueue] = []

    async def make(url: str, node: str, r: Roster | None = None, **kw: Any) -> SharedQueue:
        q = SharedQueue(r or roster(), site=SITE, node=node, dsn=url, poll_s=0.2, **kw)
        q.start()
        made.append(q)
        await q.until(lambda: q.shared, 15)  # the first pass: connect, resync, heartbeat
        return q

    yield make
    for q in made:
        await q.stop()


async def offer(entry: Waiting, timeout: float = 10) -> str:
    return await asyncio.wait_for(asyncio.shield(entry.offer), timeout)


async def claims(url: str) -> dict[str, str | None]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT operator, call_id FROM queue_operators WHERE site = $1",
                                SITE)
    finally:
        await conn.close()
    return {str(r["operator"]): r["call_id"] for r in rows}


async def test_one_operator_two_nodes_rings_once_for_the_older_caller_of_the_higher_priority(
    shared_pg_url: str, make_node: NodeFactory,
) -> None:
    ra, rb = roster(("op1",), reachable=False), roster(("op1",), reachable=False)
    a = await make_node(shared_pg_url, "a", ra)
    b = await make_node(shared_pg_url, "b", rb)
    a_low = a.join("a-1.1", 3)          # first, but less urgent
    b_old = b.join("b-1.1", 1)          # the older of the two urgent ones
    await asyncio.sleep(0.01)
    a_new = a.join("a-1.2", 1)
    b_new = b.join("b-1.3", 2)
    for q in (a, b):                    # every caller is in the shared order
        await q.until(lambda q=q: len(q._order) == 4, 10)  # type: ignore[misc]
    assert a._order == ["b-1.1", "a-1.2", "b-1.3", "a-1.1"] and b._order == a._order
    assert b.position("b-1.1") == 0 and a.position("a-1.1") == 3
    # the operator becomes reachable on both nodes at once: both dispatch, one wins
    ra.reachable["op1"] = rb.reachable["op1"] = True
    ra._changed()
    rb._changed()
    assert await offer(b_old) == "op1"
    await asyncio.sleep(1.0)  # five poll rounds on each node: nobody else may be offered op1
    assert not a_low.offer.done() and not a_new.offer.done() and not b_new.offer.done()
    assert (await claims(shared_pg_url))["op1"] == "b-1.1"
    assert a.assigned + b.assigned == 1 and b.offers_taken == 1 and a.offers_taken == 0
    # served in the global order as the operator frees up: node a's urgent caller next
    b.accept(b_old)
    b.leave("b-1.1")
    b.release("op1", talked=True)
    assert await offer(a_new) == "op1"
    a.accept(a_new)
    a.leave("a-1.2")
    a.release("op1", talked=True)
    assert await offer(b_new) == "op1"
    assert not a_low.offer.done()


async def test_ten_callers_on_two_nodes_three_operators_one_global_order_nobody_double_booked(
    shared_pg_url: str, make_node: NodeFactory,
) -> None:
    ra, rb = roster(reachable=False), roster(reachable=False)
    nodes = {"a": await make_node(shared_pg_url, "a", ra), "b": await make_node(shared_pg_url, "b", rb)}
    rng = random.Random(112)
    entries: dict[str, tuple[SharedQueue, Waiting]] = {}
    expected: list[tuple[int, int, str]] = []
    for i in range(10):
        name = "ab"[i % 2]
        call_id, priority = f"{name}-2.{i}", rng.choice((1, 2, 3))
        entries[call_id] = (nodes[name], nodes[name].join(call_id, priority))
        expected.append((priority, i, call_id))
        await asyncio.sleep(0.005)  # distinct join times
    await nodes["a"].until(lambda: len(nodes["a"]._order) == 10, 10)
    order = [c for _, _, c in sorted(expected)]
    assert nodes["a"]._order == order
    for r in (ra, rb):
        for op in OPERATORS:
            r.reachable[op] = True
        r._changed()
    served: list[str] = []
    busy: dict[str, str] = {}   # operator -> caller, as the nodes were told

    async def serve(call_id: str) -> None:
        q, entry = entries[call_id]
        operator = await offer(entry, 20)
        assert operator not in busy, f"{operator} offered to {call_id} while on {busy}"
        busy[operator] = call_id
        served.append(call_id)
        q.accept(entry)
        q.leave(call_id)
        held = await claims(shared_pg_url)
        assert held[operator] == call_id
        assert len([c for c in held.values() if c]) <= len(OPERATORS)
        await asyncio.sleep(0.3)  # the conversation
        del busy[operator]
        q.release(operator, talked=True)

    async with asyncio.timeout(60):
        await asyncio.gather(*(serve(c) for c in order))
    # three operators work in parallel: each caller is offered no later than the two after it
    for i, call_id in enumerate(order):
        assert served.index(call_id) <= i + 2, (order, served)
    assert served[:3] and set(served[:3]) == set(order[:3])
    assert sorted(served) == sorted(order)
    assert sum(q.assigned for q in nodes.values()) == 10


async def test_a_dead_nodes_callers_and_claims_are_cleared_after_its_lease_and_reported(
    shared_pg_url: str, make_node: NodeFactory,
) -> None:
    lost: list[LostNode] = []
    a = await make_node(shared_pg_url, "a", roster(("op1",)), lease_s=1.0)
    b = await make_node(shared_pg_url, "b", roster(("op1",)), lease_s=1.0, on_node_lost=lost.append)
    talking = a.join("a-3.1", 2)
    assert await offer(talking) == "op1"
    a.accept(talking)
    a.leave("a-3.1")            # connected: op1 stays claimed for the conversation
    waiting = a.join("a-3.2", 2)
    b_caller = b.join("b-3.1", 2)
    await b.until(lambda: "a-3.2" in b._order, 5)
    await a.stop()              # node a dies: no goodbye, its rows stay behind
    assert not b_caller.offer.done() and not waiting.offer.done()
    assert await offer(b_caller, 10) == "op1"   # freed by b once a's lease ran out
    [dead] = lost
    assert dead.node == "a" and set(dead.calls) == {"a-3.1", "a-3.2"}
    assert (await claims(shared_pg_url))["op1"] == "b-3.1"


async def test_requeue_offers_another_free_operator_first_and_the_same_one_when_alone(
    shared_pg_url: str, make_node: NodeFactory,
) -> None:
    a = await make_node(shared_pg_url, "a", roster(("op1", "op2")))
    entry = a.join("a-4.1", 1)
    first = await offer(entry)
    a.requeue(entry, first)     # rang, no answer
    second = await offer(entry)
    assert second != first and {first, second} == {"op1", "op2"}
    a.leave("a-4.1")            # gone before the second phone answered: both are free again
    a.roster.on_shift = ["op1"]  # one operator left on shift
    lone = a.join("a-4.2", 1)
    assert await offer(lone) == "op1"
    a.requeue(lone, "op1")
    assert await offer(lone) == "op1"  # everyone free was tried: another round
    assert (await claims(shared_pg_url)) == {"op1": "a-4.2", "op2": None}


async def test_postgres_stopped_each_node_goes_on_alone_and_resyncs_when_it_is_back(
    cluster: PrivateCluster, make_node: NodeFactory,
) -> None:
    raw = await asyncio.to_thread(cluster.createdb, "siaga112")
    url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(upgrade, url)
    a = await make_node(url, "a", roster(("op1",)))
    b = await make_node(url, "b", roster(("op1",)))
    await asyncio.to_thread(cluster.stop, "fast")
    await a.until(lambda: not a.shared, 10)
    assert a.status()["shared"] is False and a.status()["error"]
    alone = a.join("a-5.1", 1)
    assert await offer(alone, 2) == "op1"   # from memory, at once: the caller is not held up
    a.accept(alone)
    a.leave("a-5.1")
    waiting = a.join("a-5.2", 2)
    await asyncio.to_thread(cluster.start)
    await a.until(lambda: a.shared, 20)   # back: a has put its rows back (a resync)
    await b.until(lambda: b.shared and "a-5.2" in b._order, 20)
    assert (await claims(url))["op1"] == "a-5.1"  # the call a connected while alone
    later = b.join("b-5.1", 1)
    await asyncio.sleep(1.0)
    assert not later.offer.done() and not waiting.offer.done()  # op1 still talks on node a
    a.release("op1", talked=True)
    assert await offer(later) == "op1"  # b's caller is more urgent: the global order holds


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"] if PG_URL else ["sqlite"],
                         indirect=True)
async def test_first_tickets_of_a_day_opened_at_once_on_two_nodes_get_distinct_references(
    db_url: str,
) -> None:
    """Each "node" its own engine (its own connections), all opening the day's first tickets
    at the same moment: one upsert per reference, no primary-key clash, no number twice."""
    from ari_app.tickets.db import make_engine, sessions
    from ari_app.tickets.service import next_reference

    engines = [make_engine(db_url) for _ in range(2)]
    try:
        async def take(i: int) -> str:
            async with sessions(engines[i % 2])() as s, s.begin():
                return str(await s.run_sync(next_reference, SITE, "BTL", "20261202"))

        refs = await asyncio.gather(*(take(i) for i in range(12)))
    finally:
        for engine in engines:
            await engine.dispose()
    assert sorted(refs) == [f"BTL-20261202-{n:04d}" for n in range(1, 13)], refs


@pytest.fixture
async def partitioned_cluster() -> AsyncIterator[tuple[PrivateCluster, Namespace]]:
    """A PostgreSQL inside a network namespace of the test's own, reached over a veth pair that
    the test can cut (packets dropped, no reply) and heal."""
    ns = Namespace()
    pg: PrivateCluster | None = None
    try:
        await asyncio.to_thread(ns.create)
        pg = PrivateCluster(host=ns.inner_ip, wrap=ns.prefix)
        await asyncio.to_thread(pg.init)
        await asyncio.to_thread(pg.start)
        yield pg, ns
    finally:
        if pg is not None:
            await asyncio.to_thread(ns.heal)
            await asyncio.to_thread(pg.destroy)
        await asyncio.to_thread(ns.destroy)


async def test_a_partition_from_postgresql_leaves_each_node_alone_and_serving_until_it_heals(
    partitioned_cluster: tuple[PrivateCluster, Namespace], make_node: NodeFactory,
) -> None:
    pg, ns = partitioned_cluster
    raw = await asyncio.to_thread(pg.createdb, "siaga112")
    url = raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    await asyncio.to_thread(upgrade, url)
    a = await make_node(url, "a", roster(("op1",)))
    b = await make_node(url, "b", roster(("op2",)))
    await asyncio.to_thread(ns.cut)  # silence: no refusal, no reset, only time-outs
    caller = a.join("a-6.1", 1)     # joins while node a still believes it shares
    assert await offer(caller, 15) == "op1"  # served from memory once the time-out says alone
    assert not a.shared and "Timeout" in a.status()["error"]
    await b.until(lambda: not b.shared, 15)
    a.accept(caller)
    a.leave("a-6.1")
    await asyncio.to_thread(ns.heal)
    await a.until(lambda: a.shared, 30)
    await b.until(lambda: b.shared, 30)
    assert (await claims(url)) == {"op1": "a-6.1", "op2": None}  # a's call, put back
    later = b.join("b-6.1", 1)
    assert await offer(later) == "op2"  # shared again: b's caller, b's free operator
    assert a.lost_nodes == [] and b.lost_nodes == []  # nobody was taken for dead


async def test_a_restarted_app_keeps_the_claims_its_adopted_calls_hold_and_frees_the_rest(
    shared_pg_url: str, make_node: NodeFactory,
) -> None:
    a = await make_node(shared_pg_url, "a", roster(("op1", "op2")))
    b = await make_node(shared_pg_url, "b", roster(("op1", "op2")))
    talking = {}
    for call_id in ("a-7.1", "a-7.2"):
        entry = a.join(call_id, 2)
        talking[call_id] = await offer(entry)
        a.accept(entry)
        a.leave(call_id)        # connected: the operator stays claimed
    await a.stop()              # the app dies; its Asterisk and both calls live on
    # The supervisor's restart: the same node, a new process. One call is still bridged and is
    # adopted a moment later; the other ended while the app was away.
    a2 = await make_node(shared_pg_url, "a", roster(("op1", "op2")), adoption_grace_s=1.5)
    waiting = b.join("b-7.1", 1)
    a2.claim(talking["a-7.1"], "a-7.1")
    assert await offer(waiting, 10) == talking["a-7.2"]  # freed after the grace; never the other
    held = await claims(shared_pg_url)
    assert held == {talking["a-7.1"]: "a-7.1", talking["a-7.2"]: "b-7.1"}
    assert a2.lost_nodes == [] and b.lost_nodes == []
