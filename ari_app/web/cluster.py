"""The console of any node shows the calls of every node, and acts on any of them.

Several nodes (each its own Asterisk and app) share one PostgreSQL (``routing/shared_queue.py``).
A node's live views (the waiting queue, the calls in progress, the wallboard) come from its own
call bus; this module adds the other nodes' through the same database:

- **Live state.** Every node writes its own live state (its waiting callers with their badges,
  its calls in progress) as one row of ``cluster_live``, when it changes and at least every few
  seconds, and reads the other living nodes' rows every second and at once when one NOTIFYs
  ``siaga112_actions`` that its state changed (a node whose queue lease ran out is left out:
  its calls died with it). The waiting callers of every node are shown in the one
  order the shared queue serves them (``queue_callers`` by priority, joined_at, call_id); callers
  still at the menu follow, by priority then arrival. Waiting times are the nodes' wall clocks.
- **Actions on another node's call** go through the table ``node_actions``: the console's node
  writes the action (who, their role and phone, the call, the body) and NOTIFYs
  ``siaga112_actions``; the owning node takes it (``FOR UPDATE SKIP LOCKED``), runs the very
  function its own console would (``live_calls.py``), which audits as always, and writes the
  result back, which the first node returns to the browser. Why the database, not an HTTP call
  to the other node's web side: the nodes already trust each other through it, so there is no
  new listener, no node-to-node secret to generate and copy to every machine, no other node's
  certificate to pin, and no address table that can go stale. An action the owner has not taken
  within ``ACTION_TIMEOUT_S`` is withdrawn (so it can never run late) and the console says
  "node b is not answering; the call may have died with it".

With PostgreSQL unreachable each node shows its own calls only (as on one node) and an action on
another node's call is refused with the same clear message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import asyncpg

from ari_app.routing.shared_queue import UNREACHABLE, asyncpg_dsn
from ari_app.web.live_calls import ACTIONS, Actor, Result, error

if TYPE_CHECKING:
    from ari_app.app import App
    from ari_app.web.livequeue import LiveQueue

log = logging.getLogger(__name__)

CHANNEL = "siaga112_actions"  # NOTIFY "<site> <node>" (act) or "<site> live <node>" (changed)
EVERY_S = 1.0                 # read the other nodes' live state (and publish ours) this often
MIN_GAP_S = 0.1               # at least this between two passes
REFRESH_S = 3.0               # publish our row at least this often (readers drop stale rows)
ACTION_TIMEOUT_S = 8.0        # the owner takes an action within this, or it is withdrawn
SWEEP_S = 60.0                # rows of nodes silent this long are deleted, this often
ACTION_RUN_S = 20.0           # an action taken is done within this (ARI calls time out before)


def not_answering(node: str) -> Result:
    return error(503, f"node {node} is not answering; the call may have died with it",
                 node=node)


def node_of(call_id: str) -> str:
    """The node a channel id names: Asterisk prefixes its uniqueids with its systemname."""
    return call_id.rsplit("-", 1)[0] if "-" in call_id else ""


class Cluster:
    def __init__(self, app: App, queue: LiveQueue, *, site: str, node: str, dsn: str,
                 lease_s: float) -> None:
        self.app, self.queue = app, queue
        self.site, self.node, self.dsn, self.lease_s = site, node, asyncpg_dsn(dsn), lease_s
        self.connected = False
        self.alive: set[str] = set()                       # other nodes with a fresh row
        self.waiting: dict[str, dict[str, Any]] = {}       # other nodes' waiting callers
        self.calls: dict[str, dict[str, Any]] = {}         # other nodes' calls, latest state
        self.order: list[str] = []                         # queue_callers, every node, served order
        self.claims: dict[str, tuple[str, str]] = {}       # operator -> (call id, node), every node
        self.call_listeners: set[Callable[[dict[str, Any]], None]] = set()
        self._published = ""
        self._published_at = 0.0
        self._swept_at = float("-inf")
        self._conn: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    # -- what the views read ---------------------------------------------------------------

    def merge(self, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """This node's waiting rows and every other living node's, in the one served order."""
        now = time.time()
        rows = [{**r, "node": self.node} for r in local]
        seen = {r["call"] for r in rows}
        for call_id, w in self.waiting.items():
            if call_id not in seen:
                rows.append({**w, "waited_s": round(max(0.0, now - float(w["arrived_wall"])), 1)})
        rank = {c: i for i, c in enumerate(self.order)}
        default = self.app.settings.site.menu.uncategorised_priority

        def key(r: dict[str, Any]) -> tuple[Any, ...]:
            if r["call"] in rank:
                return (0, rank[r["call"]], 0, "")
            prio = r["priority"] if r.get("priority") is not None else default
            return (1, prio, float(r.get("arrived_wall") or now), r["call"])

        return sorted(rows, key=key)

    def busy(self, operator: str) -> str | None:
        """The node where this operator holds a call now (any node), or None."""
        held = self.claims.get(operator)
        return held[1] if held is not None else None

    def owner(self, call_id: str) -> str:
        """The node that holds a call: the one whose live state has it, else its channel id."""
        state = self.calls.get(call_id)
        return str(state["node"]) if state is not None else node_of(call_id)

    # -- acting on another node's call ----------------------------------------------------------

    async def forward(self, kind: str, actor: Actor, call_id: str, body: dict[str, Any]) -> Result:
        owner = self.owner(call_id)
        if not owner or owner == self.node:
            return error(409, f"call {call_id} is not talking to an operator now")
        if owner not in self.alive or not self.connected:
            log.warning("call=%s %s by %s: node %s not answering (no live state from it)",
                        call_id, kind, actor.username, owner)
            return not_answering(owner)
        log.info("call=%s %s by %s: forwarded to node %s", call_id, kind, actor.username, owner)
        try:
            conn = await asyncpg.connect(self.dsn, timeout=3.0, command_timeout=5.0)
        except UNREACHABLE as exc:
            log.warning("call=%s %s: database unreachable (%s)", call_id, kind, exc)
            return not_answering(owner)
        try:
            action_id = await conn.fetchval(
                "INSERT INTO node_actions (site, node, from_node, call_id, kind, actor, body,"
                " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, now()) RETURNING id",
                self.site, owner, self.node, call_id, kind, json.dumps(actor.as_dict()),
                json.dumps(body))
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.site} {owner}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + ACTION_TIMEOUT_S
            taken_deadline: float | None = None
            for _ in range(int((ACTION_TIMEOUT_S + ACTION_RUN_S) / 0.05) + 1):  # bounded
                row = await conn.fetchrow("SELECT taken_at, status, result FROM node_actions"
                                          " WHERE id = $1", action_id)
                if row is not None and row["status"] is not None:
                    if row["status"] == 0:  # withdrawn below: cannot happen here
                        break
                    return int(row["status"]), json.loads(row["result"] or "{}")
                now = loop.time()
                if row is not None and row["taken_at"] is not None and taken_deadline is None:
                    taken_deadline = now + ACTION_RUN_S
                if taken_deadline is None and now >= deadline:
                    withdrawn = await conn.fetchval(
                        "UPDATE node_actions SET status = 0, done_at = now(),"
                        " result = '{\"error\": \"withdrawn: not taken in time\"}'"
                        " WHERE id = $1 AND taken_at IS NULL RETURNING id", action_id)
                    if withdrawn is not None:
                        break
                    taken_deadline = now + ACTION_RUN_S  # taken just now: let it finish
                if taken_deadline is not None and now >= taken_deadline:
                    break
                await asyncio.sleep(0.05)
        except UNREACHABLE as exc:
            log.warning("call=%s %s: database lost while forwarding (%s)", call_id, kind, exc)
        finally:
            conn.terminate()
        log.warning("call=%s %s by %s: node %s did not answer within %.0f s", call_id, kind,
                    actor.username, owner, ACTION_TIMEOUT_S)
        return not_answering(owner)

    async def _take_actions(self, conn: asyncpg.Connection) -> None:
        rows = await conn.fetch(
            "UPDATE node_actions SET taken_at = now() WHERE id IN (SELECT id FROM node_actions"
            " WHERE site = $1 AND node = $2 AND taken_at IS NULL AND status IS NULL"
            # one its requester gave up on (or died waiting for) is never run late
            " AND created_at >= now() - make_interval(secs => $3)"
            " ORDER BY id FOR UPDATE SKIP LOCKED)"
            " RETURNING id, from_node, call_id, kind, actor, body", self.site, self.node,
            ACTION_TIMEOUT_S)
        for row in rows:
            task = asyncio.create_task(self._run_action(dict(row)), name="node-action")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run_action(self, row: dict[str, Any]) -> None:
        kind, call_id, via = str(row["kind"]), str(row["call_id"]), str(row["from_node"])
        try:
            actor = Actor.from_dict(json.loads(row["actor"]), via=via)
            action = ACTIONS.get(kind)
            if action is None:
                status, result = error(422, f"unknown live-call action {kind!r}")
            else:
                log.info("call=%s %s by %s from node %s: running it here", call_id, kind,
                         actor.username, via)
                status, result = await action(self.app, actor, call_id, json.loads(row["body"]))
        except Exception as exc:
            log.exception("call=%s %s from node %s failed", call_id, kind, via)
            status, result = error(500, f"node {self.node} failed: {type(exc).__name__}")
        for _ in range(3):  # the requester waits for this row; a lost connection is retried
            try:
                conn = await asyncpg.connect(self.dsn, timeout=3.0, command_timeout=5.0)
                try:
                    await conn.execute("UPDATE node_actions SET status = $2, result = $3,"
                                       " done_at = now() WHERE id = $1", row["id"], status,
                                       json.dumps(result, default=str))
                finally:
                    conn.terminate()
                return
            except UNREACHABLE as exc:
                log.warning("call=%s %s: result not written (%s); retrying", call_id, kind, exc)
                await asyncio.sleep(0.5)

    # -- running ---------------------------------------------------------------------------

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        # "<site> <node>": an action for that node; "<site> live <node>": its live state changed
        words = payload.split(" ")
        if words[0] == self.site and (words[1:] == [self.node]
                                      or (words[1:2] == ["live"] and words[2:] != [self.node])):
            self._wake.set()

    async def _follow(self) -> None:
        """A change on this node's call bus: publish it now, not at the next tick."""
        changes = self.app.live.listen()
        try:
            while True:
                await changes.get()
                self._wake.set()
        finally:
            self.app.live.unlisten(changes)

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=3.0, command_timeout=6.0)
            self._listener = await asyncpg.connect(self.dsn, timeout=3.0)
            await self._listener.add_listener(CHANNEL, self._notified)
        return self._conn

    async def _close(self) -> None:
        for conn in (self._listener, self._conn):
            if conn is not None:
                conn.terminate()
        self._conn = self._listener = None

    async def run(self) -> None:
        follow = asyncio.create_task(self._follow(), name="cluster-follow")
        try:
            while True:
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if not isinstance(exc, UNREACHABLE):
                        log.exception("cluster view: pass failed")
                    elif self.connected:
                        log.warning("cluster view: PostgreSQL unreachable (%s): showing node "
                                    "%s's calls only", exc, self.node)
                    self._forget()
                    await self._close()
                    await asyncio.sleep(2.0)
                    continue
                await asyncio.sleep(MIN_GAP_S)  # a burst of changes: one pass for several
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(EVERY_S):  # 3.11's wait_for can lose a cancel
                        await self._wake.wait()
                self._wake.clear()
        finally:
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)
            with contextlib.suppress(Exception):
                if self._conn is not None:
                    await self._conn.execute("DELETE FROM cluster_live WHERE site = $1 AND "
                                             "node = $2", self.site, self.node)
            await self._close()

    def _forget(self) -> None:
        self.connected = False
        self._published = ""
        self._apply({}, [], {})

    def own_state(self) -> dict[str, Any]:
        now = time.monotonic()
        waiting = []
        for w in self.queue.ordered():
            view = w.view(now)
            view["arrived_wall"] = round(w.arrived_wall, 3)
            view["node"] = self.node
            waiting.append(view)
        calls = [{**state, "node": self.node} for state in self.app.live.state.values()]
        return {"waiting": waiting, "calls": calls}

    async def step(self) -> None:
        conn = await self._connect()
        await self._take_actions(conn)
        state = json.dumps(self.own_state(), default=str, sort_keys=True)
        # waited_s changes every second: compare without it, refresh the row now and then
        compare = json.dumps({k: [{f: v for f, v in r.items() if f != "waited_s"} for r in rows]
                              for k, rows in json.loads(state).items()}, sort_keys=True)
        loop = asyncio.get_running_loop()
        if compare != self._published or loop.time() - self._published_at >= REFRESH_S:
            await conn.execute(
                "INSERT INTO cluster_live (site, node, state, updated_at) VALUES ($1, $2, $3,"
                " now()) ON CONFLICT (site, node) DO UPDATE SET state = EXCLUDED.state,"
                " updated_at = now()", self.site, self.node, state)
            if compare != self._published:
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL,
                                   f"{self.site} live {self.node}")
            self._published, self._published_at = compare, loop.time()
        rows = await conn.fetch(
            "SELECT l.node, l.state FROM cluster_live l JOIN queue_nodes n"
            " ON n.site = l.site AND n.node = l.node WHERE l.site = $1 AND l.node <> $2"
            " AND n.seen_at >= now() - make_interval(secs => n.lease_s)"
            " AND l.updated_at >= now() - make_interval(secs => n.lease_s)", self.site, self.node)
        order = [str(r["call_id"]) for r in await conn.fetch(
            "SELECT call_id FROM queue_callers WHERE site = $1"
            " ORDER BY priority, joined_at, call_id", self.site)]
        claims = {str(r["operator"]): (str(r["call_id"]), str(r["node"])) for r in await conn.fetch(
            "SELECT operator, call_id, node FROM queue_operators WHERE site = $1"
            " AND call_id IS NOT NULL", self.site)}
        if loop.time() - self._swept_at >= SWEEP_S:
            # A node gone for good leaves no callers' numbers behind; answered actions are in
            # the tickets' audit, so their rows go after a day.
            await conn.execute("DELETE FROM cluster_live WHERE site = $1 AND updated_at <"
                               " now() - make_interval(secs => $2)", self.site, SWEEP_S)
            await conn.execute("DELETE FROM node_actions WHERE site = $1 AND created_at <"
                               " now() - interval '1 day'", self.site)
            self._swept_at = loop.time()
        self.connected = True
        self._apply({str(r["node"]): json.loads(r["state"]) for r in rows}, order, claims)

    def _apply(self, states: dict[str, dict[str, Any]], order: list[str],
               claims: dict[str, tuple[str, str]]) -> None:
        waiting = {str(w["call"]): w for s in states.values() for w in s.get("waiting", [])}
        calls = {str(c["call"]): c for s in states.values() for c in s.get("calls", [])}

        def shape(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
            return {k: {f: v for f, v in r.items() if f != "waited_s"} for k, r in rows.items()}

        queue_changed = (shape(waiting) != shape(self.waiting) or order != self.order
                         or claims != self.claims)
        changes = [c for k, c in calls.items() if self.calls.get(k) != c]
        ended = [{"call": k, "stage": "ended", "node": c.get("node")}
                 for k, c in self.calls.items() if k not in calls]
        self.alive = set(states)
        self.waiting, self.calls, self.order, self.claims = waiting, calls, order, claims
        for change in [*changes, *ended]:
            for fn in list(self.call_listeners):
                fn(change)
        if queue_changed:
            self.queue.changed()
