"""The console's view of every node and its actions on another node's call, through a real
PostgreSQL (the node rows are written as the other node's app would; two real nodes behind
Kamailio are in test_edge_kamailio.py)."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any, cast

import asyncpg
import pytest

from ari_app.live import LiveBus
from ari_app.routing.shared_queue import asyncpg_dsn
from ari_app.testing.postgres import pg_bin
from ari_app.web import cluster as cluster_mod
from ari_app.web.cluster import Cluster
from ari_app.web.live_calls import Actor
from ari_app.web.livequeue import LiveQueue
from tests.conftest import PG_URL

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not PG_URL and pg_bin() is None,
                                 reason="no PostgreSQL: neither a test URL nor server binaries")]

SITE = "batola"


def node(url: str, name: str) -> tuple[Cluster, LiveQueue, LiveBus]:
    live = LiveBus()
    queue = LiveQueue(live, cast(Any, None), 5)
    app = SimpleNamespace(settings=SimpleNamespace(site=SimpleNamespace(
        menu=SimpleNamespace(uncategorised_priority=5))), live=live)
    c = Cluster(cast(Any, app), queue, site=SITE, node=name, dsn=url, lease_s=10.0)
    queue.cluster = c
    return c, queue, live


def waiter(call: str, priority: int, waited: float, stage: str = "queued") -> dict[str, Any]:
    return {"call": call, "caller": "0812" + call[-1], "stage": stage, "priority": priority,
            "operator": None, "reference": None, "choice": None, "waited_s": waited,
            "badges": ["silent"], "arrived_wall": time.time() - waited, "node": "b"}


async def test_another_nodes_callers_join_the_view_in_the_served_order_and_leave_with_its_lease(
        shared_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(shared_pg_url))
    a, queue, live = node(shared_pg_url, "a")
    b, _, _ = node(shared_pg_url, "b")
    try:
        now = time.time()
        await conn.execute("INSERT INTO queue_nodes (site, node, seen_at, lease_s, started_at)"
                           " VALUES ($1, 'b', now(), 10, now()), ($1, 'a', now(), 10, now())",
                           SITE)
        state = {"waiting": [waiter("b-1.1", 2, 5.0), waiter("b-1.2", 2, 2.0)],
                 "calls": [{"call": "b-1.1", "stage": "queued", "node": "b"},
                           {"call": "b-1.2", "stage": "queued", "node": "b"}]}
        await conn.execute("INSERT INTO cluster_live (site, node, state, updated_at)"
                           " VALUES ($1, 'b', $2, now())", SITE, json.dumps(state))
        for call, node_, prio, joined in (("b-1.1", "b", 2, now - 5), ("b-1.2", "b", 2, now - 2),
                                          ("a-1.1", "a", 1, now - 1)):
            await conn.execute("INSERT INTO queue_callers (call_id, site, node, priority,"
                               " joined_at) VALUES ($1, $2, $3, $4, $5)",
                               call, SITE, node_, prio, joined)
        live.publish("a-1.1", "queued", priority=1, caller="081200000001")
        live.publish("a-1.9", "menu", caller="081200000009")
        for change in list(live.state.values()):
            queue.apply(change)
        remote: list[dict[str, Any]] = []
        a.call_listeners.add(remote.append)

        await a.step()
        rows = queue.snapshot()["waiting"]
        assert [(r["call"], r["node"]) for r in rows] == [
            ("a-1.1", "a"), ("b-1.1", "b"), ("b-1.2", "b"), ("a-1.9", "a")]  # menu: last
        assert 4.5 <= rows[1]["waited_s"] <= 7 and rows[1]["badges"] == ["silent"]
        assert {c["call"] for c in remote} == {"b-1.1", "b-1.2"} and a.owner("b-1.1") == "b"
        mine = json.loads(await conn.fetchval(
            "SELECT state FROM cluster_live WHERE site = $1 AND node = 'a'", SITE))
        assert [w["call"] for w in mine["waiting"]] == ["a-1.1", "a-1.9"]

        # b's app is not taking actions: withdrawn in time, a clear answer, never run late
        monkeypatch.setattr(cluster_mod, "ACTION_TIMEOUT_S", 1.0)
        boss = Actor("boss", "supervisor", "sup1")
        status, body = await a.forward("supervise", boss, "b-1.1", {"mode": "listen"})
        assert status == 503
        assert body["error"] == "node b is not answering; the call may have died with it"
        row = await conn.fetchrow("SELECT status, taken_at, actor FROM node_actions")
        assert row["status"] == 0 and row["taken_at"] is None
        assert json.loads(row["actor"])["username"] == "boss"
        # ... nor one whose requester died waiting for it (never withdrawn, long past)
        await conn.execute(
            "INSERT INTO node_actions (site, node, from_node, call_id, kind, actor, body,"
            " created_at) VALUES ($1, 'b', 'a', 'b-1.1', 'supervise', $2, '{}',"
            " now() - interval '1 minute')", SITE, json.dumps(boss.as_dict()))
        await b.step()  # b comes back: neither is run
        assert await conn.fetchval("SELECT count(*) FROM node_actions"
                                   " WHERE taken_at IS NOT NULL") == 0
        status, body = await a.forward("supervise", boss, "zz-1.1", {"mode": "listen"})
        assert status == 503 and body["node"] == "zz"  # a node nobody has heard of

        # b's lease runs out: its callers and calls leave the view
        await conn.execute("UPDATE queue_nodes SET seen_at = now() - interval '1 minute'"
                           " WHERE node = 'b'")
        await conn.execute("UPDATE cluster_live SET state = $2 WHERE site = $1 AND node = 'b'",
                           SITE, json.dumps(state))
        remote.clear()
        await a.step()
        assert [r["call"] for r in queue.snapshot()["waiting"]] == ["a-1.1", "a-1.9"]
        assert sorted((c["call"], c["stage"]) for c in remote) == [
            ("b-1.1", "ended"), ("b-1.2", "ended")]
        # gone for good: its row (callers' numbers) is deleted by the next sweep
        await conn.execute("UPDATE cluster_live SET updated_at = now() - interval '2 minutes'"
                           " WHERE node = 'b'")
        a._swept_at = float("-inf")
        await a.step()
        assert await conn.fetchval("SELECT count(*) FROM cluster_live WHERE node = 'b'") == 0
        assert await conn.fetchval("SELECT count(*) FROM cluster_live WHERE node = 'a'") == 1
    finally:
        for c in (a, b):
            await c._close()
        await conn.close()
        await asyncio.sleep(0)
