"""The waiting queue and the operator claims of several nodes, shared through PostgreSQL.

``SharedQueue`` keeps the meanings of ``WaitingQueue`` (see ``queue.py``) across every node of a
site that shares one PostgreSQL:

- callers on any node are served in one order, priority then age (the wall-clock time they
  joined, from their node);
- an operator is claimed by at most one caller, on one node, at a time: the claim is the
  operator's row in ``queue_operators``, taken with ``SELECT ... FOR UPDATE SKIP LOCKED``, so
  two nodes dispatching at once never ring the same operator;
- a waiting caller is offered at most one operator: its row in ``queue_callers`` is locked the
  same way while an operator is assigned to it, and carries the offer.

The telephony path never waits on PostgreSQL. Every method changes this node's own state at once
(it *is* a ``MemoryQueue``) and leaves an operation for one background task, which applies the
operations in order, then dispatches (any node may assign a free operator to any node's caller)
and picks up the offers made to this node's callers. ``LISTEN``/``NOTIFY`` wakes the other nodes
at once; a short poll covers a lost notification.

Leases: each node's heartbeat is a row in ``queue_nodes``. A node silent for longer than its
lease is dead: the first living node to see it deletes its rows, frees the operators it held,
and is told (``on_node_lost``) which calls died with it, to close their tickets and call back.

PostgreSQL unreachable: the node goes on alone. Its own callers are dispatched to its own roster
in memory (exactly as ``MemoryQueue``), ``shared`` turns False for ``/healthz`` and
``siaga112 status``, and once the database is back the node replaces its rows with what it holds
now (a resync) and dispatches through PostgreSQL again. Two nodes cut off from the database may
both ring the same operator then; the phone that is busy refuses the second call, which goes on
to the next operator: a double ring is better than a caller nobody rings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ari_app.routing.queue import MemoryQueue, Waiting
from ari_app.routing.roster import Roster

log = logging.getLogger(__name__)

CHANNEL = "siaga112_queue"  # NOTIFY channel: "<site> <node>" of whatever changed
# What a lost database looks like to asyncpg (the connection, not our SQL).
UNREACHABLE = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, asyncpg.CannotConnectNowError,
               asyncpg.AdminShutdownError, asyncpg.exceptions.ConnectionDoesNotExistError)


@dataclass(frozen=True)
class LostNode:
    node: str
    last_seen: datetime
    calls: tuple[str, ...]  # the channel ids of the calls that were waiting or talking there


NodeLost = Callable[[LostNode], Awaitable[None] | None]


def asyncpg_dsn(url: str) -> str:
    """``postgresql+asyncpg://...`` (SQLAlchemy) as asyncpg takes it."""
    for prefix in ("postgresql+asyncpg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


class SharedQueue(MemoryQueue):
    def __init__(self, roster: Roster, *, site: str, node: str, dsn: str,
                 lease_s: float = 10.0, poll_s: float = 0.5, connect_timeout_s: float = 2.0,
                 alive: Callable[[], bool] = lambda: True, adoption_grace_s: float = 5.0,
                 on_node_lost: NodeLost | None = None) -> None:
        super().__init__(roster)
        self.site, self.node, self.dsn = site, node, asyncpg_dsn(dsn)
        self.lease_s, self.poll_s, self.connect_timeout_s = lease_s, poll_s, connect_timeout_s
        self.alive = alive  # False while this node cannot take calls (its Asterisk is gone)
        self.on_node_lost = on_node_lost
        self.shared = False  # True while dispatch goes through PostgreSQL
        self.last_error = ""
        self.offers_taken = 0  # offers made by any node's dispatcher to this node's callers
        self.assigned = 0      # operators this node's dispatcher assigned (to any node's caller)
        self.lost_nodes: list[LostNode] = []
        self.joined_wall: dict[str, float] = {}
        self.claims: dict[str, str] = {}  # operator -> call id, this node's claims
        self._ops: list[tuple[Any, ...]] = []
        self._version: dict[str, int] = {}  # per call: bumped by every local change
        self._order: list[str] = []  # every node's waiting callers, in the order served
        self._wake = asyncio.Event()
        self._passed = asyncio.Event()  # set after every pass of the background task
        self._conn: asyncpg.Connection | None = None
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._resync = True
        self._stopping = False
        self._registered = False
        self._shared_since: float | None = None  # loop time this node's connection came up
        self._rows_for: list[str] = []  # the operators whose rows this node made sure of
        self._sweep_at: float | None = None  # when to release claims no call here holds
        self.adoption_grace_s = adoption_grace_s

    # -- the interface (all return at once) -------------------------------------------------

    def join(self, call_id: str, priority: int) -> Waiting:
        self.joined_wall[call_id] = time.time()
        self._bump(call_id)
        entry = super().join(call_id, priority)
        self._push("upsert", call_id)
        return entry

    def reprioritise(self, call_id: str, priority: int) -> None:
        entry = self.entries.get(call_id)
        if entry is None or entry.priority == priority:
            return
        self._bump(call_id)
        self._push("upsert", call_id)
        super().reprioritise(call_id, priority)

    def accept(self, entry: Waiting) -> str:
        operator = super().accept(entry)
        self.claims[operator] = entry.call_id
        return operator

    def requeue(self, entry: Waiting, tried: str) -> None:
        self._bump(entry.call_id)
        self.claims.pop(tried, None)
        self._push("requeue", entry.call_id, tried)
        super().requeue(entry, tried)

    def claim(self, operator: str, call_id: str = "") -> None:
        self.claims[operator] = call_id
        self._push("claim", operator, call_id)
        super().claim(operator)

    def release(self, operator: str, *, talked: bool) -> None:
        self.claims.pop(operator, None)
        self._push("release", operator)
        super().release(operator, talked=talked)

    def leave(self, call_id: str) -> None:
        entry = self.entries.get(call_id)
        if entry is not None:
            self._bump(call_id)
            taken = entry.offer.done() and not entry.offer.cancelled() and entry.accepted
            if not taken and entry.offer.done() and not entry.offer.cancelled():
                self.claims.pop(entry.offer.result(), None)
            self._push("leave", call_id, taken)
        self.joined_wall.pop(call_id, None)
        super().leave(call_id)
        self._version.pop(call_id, None)

    def position(self, call_id: str) -> int:
        if self.shared and call_id in self.waiting:
            try:
                return self._order.index(call_id)
            except ValueError:
                pass  # joined since the last pass
        return super().position(call_id)

    def dispatch(self) -> None:
        """Sharing: wake the background task (dispatch happens in PostgreSQL); alone: here."""
        if self.shared:
            self._wake.set()
        else:
            super().dispatch()

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="shared-queue")

    async def stop(self) -> None:
        """Stop the background task. Its connections are cut first: a cancelled transaction
        would otherwise wait for its rollback on a connection that may never answer."""
        self._stopping = True
        await self._close()
        if self._task is not None:
            for _ in range(3):  # a cancellation can be lost in a wake-up racing it: ask again
                self._task.cancel()
                done, _ = await asyncio.wait([self._task], timeout=2)
                if done:
                    break
            else:
                log.error("shared queue: node %s background task did not stop", self.node)
            self._task = None

    async def until(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Until ``predicate()`` holds, checked after each pass (for status checks and tests)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._passed.clear()
                self._wake.set()
                await self._passed.wait()

    async def run(self) -> None:
        backoff = 0.2
        while not self._stopping:
            try:
                await self._pass()
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except UNREACHABLE as exc:
                if self._stopping:
                    break  # stop() cut the connections
                self._alone(exc)
                await self._close()
                self._passed.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except Exception as exc:  # a bug or a schema problem: alone, loudly, and retry
                log.exception("shared queue: pass failed")
                self._alone(exc)
                await self._close()
                self._passed.set()
                await asyncio.sleep(2.0)
                continue
            self._passed.set()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that arrives as the wake-up does, and the task would never stop.
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    def _alone(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.shared:
            log.warning("shared queue: PostgreSQL unreachable (%s); node %s goes on alone",
                        self.last_error, self.node)
        self.shared = False
        self._shared_since = None
        self._ops.clear()   # replaced by a resync once the database is back
        self._resync = True
        super().dispatch()  # this node's callers, this node's roster, from memory

    async def _close(self) -> None:
        for conn in (self._listener, self._conn):
            if conn is not None:
                conn.terminate()
        self._conn = self._listener = None

    async def _connect(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self.dsn, timeout=self.connect_timeout_s,
                                               command_timeout=self.connect_timeout_s)
            self._listener = await asyncpg.connect(self.dsn, timeout=self.connect_timeout_s)
            await self._listener.add_listener(CHANNEL, self._notified)
        return self._conn

    def _notified(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload.split(" ", 1)[0] == self.site:
            self._wake.set()

    async def _pass(self) -> None:
        conn = await self._connect()
        alive = self.alive()
        if self._resync and alive:
            await self._do_resync(conn)
        elif alive:
            await self._apply_ops(conn)
        registered = await self._heartbeat(conn, alive)
        if alive and not registered:
            await self._do_resync(conn)  # another node took us for dead: put our rows back
        loop = asyncio.get_running_loop()
        if self._shared_since is None:
            self._shared_since = loop.time()
        if loop.time() - self._shared_since >= self.lease_s:
            # Only a node that has itself been connected for a whole lease may call another
            # dead: after a database outage every node's heartbeat is old, and the first one
            # back must not close the others' live calls.
            await self._expire(conn)
        if not alive:
            self.shared = False
            return
        if not self.shared:
            log.info("shared queue: node %s dispatching through PostgreSQL", self.node)
        self.shared, self.last_error = True, ""
        await self._stale_claims(conn)
        await self._operators(conn)
        await self._dispatch(conn)
        await self._take_offers(conn)

    # -- the background task's steps -------------------------------------------------------

    def _bump(self, call_id: str) -> None:
        self._version[call_id] = self._version.get(call_id, 0) + 1

    def _pending(self) -> set[str]:
        """The calls with a local change not yet applied in PostgreSQL."""
        return {str(op[1]) for op in self._ops if op[0] in ("upsert", "requeue", "leave")}

    def _push(self, *op: Any) -> None:
        self._ops.append(op)  # idempotent: after a resync they apply again harmlessly
        self._wake.set()

    async def _notify(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{self.site} {self.node}")

    async def _apply_ops(self, conn: asyncpg.Connection) -> None:
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        try:
            async with conn.transaction():
                for op in ops:
                    await self._apply(conn, op)
                await self._notify(conn)
        except BaseException:
            self._ops[:0] = ops  # applied all or none: try again in order
            raise

    async def _apply(self, conn: asyncpg.Connection, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "upsert":
            call_id = op[1]
            entry = self.entries.get(call_id)
            if entry is None:
                return  # left since
            await conn.execute(
                "INSERT INTO queue_callers (call_id, site, node, priority, joined_at, tried)"
                " VALUES ($1, $2, $3, $4, $5, '') ON CONFLICT (call_id) DO UPDATE"
                " SET priority = EXCLUDED.priority",
                call_id, self.site, self.node, entry.priority,
                self.joined_wall.get(call_id, time.time()))
        elif kind == "requeue":
            call_id, tried = op[1], op[2]
            await conn.execute(
                "UPDATE queue_callers SET offered_to = NULL,"
                " tried = tried || ' ' || $2 || ' ' WHERE call_id = $1", call_id, tried)
            await conn.execute(
                "UPDATE queue_operators SET call_id = NULL, node = NULL, claimed_at = NULL"
                " WHERE site = $1 AND operator = $2 AND call_id = $3", self.site, tried, call_id)
        elif kind == "claim":
            operator, call_id = op[1], op[2]
            await conn.execute(
                "INSERT INTO queue_operators (site, operator, call_id, node, claimed_at)"
                " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (site, operator) DO UPDATE"
                " SET call_id = EXCLUDED.call_id, node = EXCLUDED.node, claimed_at = now()",
                self.site, operator, call_id, self.node)
        elif kind == "release":
            await conn.execute(
                "UPDATE queue_operators SET call_id = NULL, node = NULL, claimed_at = NULL"
                " WHERE site = $1 AND operator = $2 AND node = $3", self.site, op[1], self.node)
        elif kind == "leave":
            call_id, taken = op[1], op[2]
            await conn.execute("DELETE FROM queue_callers WHERE call_id = $1", call_id)
            if not taken:  # offered (perhaps by another node) but never rung: free the operator
                await conn.execute(
                    "UPDATE queue_operators SET call_id = NULL, node = NULL, claimed_at = NULL"
                    " WHERE site = $1 AND call_id = $2", self.site, call_id)
        else:
            raise ValueError(f"shared queue: unknown operation {kind!r}")

    async def _do_resync(self, conn: asyncpg.Connection) -> None:
        """Replace this node's rows with what it holds now (start, or back from alone)."""
        self._ops.clear()
        entries = list(self.entries.items())  # callers may join while this awaits
        async with conn.transaction():
            await conn.execute("DELETE FROM queue_callers WHERE site = $1 AND node = $2",
                               self.site, self.node)
            # This node's claims are not cleared here: an operator it held may still be talking
            # to a caller of this node that the app adopts after a restart (an adopted call
            # claims its operator a moment after the app is back). Claims nobody here holds
            # any more are released once the adoptions had time to land (_stale_claims).
            for call_id, entry in entries:
                offered = None
                if entry.offer.done() and not entry.offer.cancelled():
                    offered = entry.offer.result()
                await conn.execute(
                    "INSERT INTO queue_callers (call_id, site, node, priority, joined_at,"
                    " offered_to, tried) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    " ON CONFLICT (call_id) DO NOTHING",
                    call_id, self.site, self.node, entry.priority,
                    self.joined_wall.get(call_id, time.time()), offered,
                    "".join(f" {t} " for t in sorted(entry.tried)))
            for operator, call_id in self._held(entries).items():
                taken = await conn.fetchval(
                    "INSERT INTO queue_operators (site, operator, call_id, node, claimed_at)"
                    " VALUES ($1, $2, $3, $4, now()) ON CONFLICT (site, operator) DO UPDATE"
                    " SET call_id = EXCLUDED.call_id, node = EXCLUDED.node, claimed_at = now()"
                    " WHERE queue_operators.call_id IS NULL OR queue_operators.node = $4"
                    " RETURNING operator",
                    self.site, operator, call_id, self.node)
                if taken is None:
                    log.warning("shared queue: node %s holds operator %s for call=%s, which "
                                "another node claimed meanwhile (both rang them while the "
                                "database was away)", self.node, operator, call_id)
            await self._notify(conn)
        self._resync = False
        self._sweep_at = asyncio.get_running_loop().time() + self.adoption_grace_s

    def _held(self, entries: list[tuple[str, Waiting]]) -> dict[str, str]:
        """operator -> call id: every operator a call of this node holds or was offered."""
        held = dict(self.claims)
        for call_id, entry in entries:
            if entry.offer.done() and not entry.offer.cancelled():
                held.setdefault(entry.offer.result(), call_id)
        return held

    async def _stale_claims(self, conn: asyncpg.Connection) -> None:
        """After a resync's grace: release this node's claims that no call here holds."""
        if self._sweep_at is None or asyncio.get_running_loop().time() < self._sweep_at:
            return
        self._sweep_at = None
        freed = await conn.fetch(
            "UPDATE queue_operators SET call_id = NULL, node = NULL, claimed_at = NULL"
            " WHERE site = $1 AND node = $2 AND NOT (operator = ANY($3::text[]))"
            " RETURNING operator", self.site, self.node,
            sorted(self._held(list(self.entries.items()))))
        if freed:
            log.info("shared queue: node %s released claim(s) no call holds any more: %s",
                     self.node, " ".join(str(r["operator"]) for r in freed))
            await self._notify(conn)

    async def _heartbeat(self, conn: asyncpg.Connection, alive: bool) -> bool:
        """Renew this node's lease while it can take calls. False: the row had gone (another
        node took this one for dead and cleared its rows), so they must be put back."""
        if not alive:
            return True
        inserted = await conn.fetchval(
            "INSERT INTO queue_nodes (site, node, seen_at, lease_s, started_at)"
            " VALUES ($1, $2, now(), $3, now()) ON CONFLICT (site, node) DO UPDATE"
            " SET seen_at = now(), lease_s = EXCLUDED.lease_s RETURNING (xmax = 0)",
            self.site, self.node, self.lease_s)
        was, self._registered = self._registered, True
        return not (inserted and was)

    async def _expire(self, conn: asyncpg.Connection) -> None:
        """Clear the rows of every node whose lease ran out; say which calls died with it."""
        lost: list[LostNode] = []
        async with conn.transaction():
            dead = await conn.fetch(
                "DELETE FROM queue_nodes WHERE site = $1 AND node <> $2"
                " AND seen_at < now() - make_interval(secs => lease_s)"
                " RETURNING node, seen_at", self.site, self.node)
            for row in dead:
                waiting = await conn.fetch(
                    "DELETE FROM queue_callers WHERE site = $1 AND node = $2 RETURNING call_id",
                    self.site, row["node"])
                talking = await conn.fetch(
                    "WITH held AS (SELECT operator, call_id FROM queue_operators"
                    " WHERE site = $1 AND node = $2 FOR UPDATE)"
                    " UPDATE queue_operators q SET call_id = NULL, node = NULL, claimed_at = NULL"
                    " FROM held WHERE q.site = $1 AND q.operator = held.operator"
                    " RETURNING held.call_id", self.site, row["node"])
                calls = {str(r["call_id"]) for r in [*waiting, *talking] if r["call_id"]}
                lost.append(LostNode(str(row["node"]), row["seen_at"], tuple(sorted(calls))))
            if dead:
                await self._notify(conn)
        for node in lost:
            log.warning("shared queue: node %s lost (last seen %s); %d call(s) died with it: %s",
                        node.node, node.last_seen.isoformat(), len(node.calls),
                        " ".join(f"call={c}" for c in node.calls) or "none")
            self.lost_nodes.append(node)
            if self.on_node_lost is not None:
                result = self.on_node_lost(node)
                if result is not None:
                    await result

    async def _operators(self, conn: asyncpg.Connection) -> None:
        """Every operator this node knows of has a row to lock (rows are never deleted)."""
        names = sorted(set(self.roster.on_shift) | set(self.claims))
        if names and names != self._rows_for:
            await conn.execute(
                "INSERT INTO queue_operators (site, operator)"
                " SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING", self.site, names)
            self._rows_for = names

    async def _dispatch(self, conn: asyncpg.Connection) -> None:
        """Assign this node's free operators to the first callers of every node, one by one.

        The operator's row is locked first (SKIP LOCKED: another node assigning them passes
        over), then the first caller in the global order (SKIP LOCKED: a caller another node is
        assigning an operator to right now is that node's). Only a node that holds a free
        operator locks callers, so a skipped caller is always being served at that moment.
        """
        for _ in range(64):  # bounded: at most one assignment per free operator and pass
            free = self.roster.candidates()
            if not free:
                return
            # One read first: whether anyone waits, and which of ours are unclaimed anywhere
            # (so a pass costs a statement or two, not a transaction per operator on shift).
            row = await conn.fetchrow(
                "SELECT EXISTS (SELECT 1 FROM queue_callers WHERE site = $1"
                " AND offered_to IS NULL) AS waiting,"
                " ARRAY(SELECT operator FROM queue_operators WHERE site = $1"
                " AND call_id IS NULL AND operator = ANY($2::text[])) AS unclaimed",
                self.site, free)
            if row is None or not row["waiting"]:
                return
            unclaimed = set(row["unclaimed"])
            free = [o for o in free if o in unclaimed]
            if not free:
                return
            assigned = False
            for operator in free:
                async with conn.transaction():
                    locked = await conn.fetchval(
                        "SELECT operator FROM queue_operators WHERE site = $1 AND operator = $2"
                        " AND call_id IS NULL FOR UPDATE SKIP LOCKED", self.site, operator)
                    if locked is None:
                        continue  # claimed, or being claimed, by another node
                    best = await conn.fetchrow(
                        "SELECT c.call_id, c.node, c.tried FROM queue_callers c"
                        " JOIN queue_nodes n ON n.site = c.site AND n.node = c.node"
                        " WHERE c.site = $1 AND c.offered_to IS NULL"
                        " AND n.seen_at >= now() - make_interval(secs => n.lease_s)"
                        " ORDER BY c.priority, c.joined_at, c.call_id"
                        " FOR UPDATE OF c SKIP LOCKED LIMIT 1", self.site)
                    if best is None:
                        return  # nobody waits (that another node is not serving)
                    tried = set(str(best["tried"]).split())
                    if operator in tried:
                        if any(o not in tried for o in free if o != operator):
                            continue  # another free operator has not been tried for them
                        tried = set()  # everyone free was tried: another round
                    await conn.execute(
                        "UPDATE queue_callers SET offered_to = $2, tried = $3 WHERE call_id = $1",
                        best["call_id"], operator, "".join(f" {t} " for t in sorted(tried)))
                    await conn.execute(
                        "UPDATE queue_operators SET call_id = $3, node = $4, claimed_at = now()"
                        " WHERE site = $1 AND operator = $2",
                        self.site, operator, best["call_id"], best["node"])
                    await self._notify(conn)
                self.assigned += 1
                log.info("shared queue: node %s assigned operator %s to call=%s on node %s",
                         self.node, operator, best["call_id"], best["node"])
                assigned = True
                break
            if not assigned:
                return

    async def _take_offers(self, conn: asyncpg.Connection) -> None:
        """Resolve this node's callers' offers, whichever node made them; refresh the order."""
        versions = dict(self._version)
        rows = await conn.fetch(
            "SELECT call_id, offered_to FROM queue_callers WHERE site = $1 ORDER BY"
            " priority, joined_at, call_id", self.site)
        self._order = [str(r["call_id"]) for r in rows if r["offered_to"] is None]
        for row in rows:
            call_id, operator = str(row["call_id"]), row["offered_to"]
            entry = self.waiting.get(call_id)
            if operator is None or entry is None or entry.offer.done():
                continue
            if self._version.get(call_id) != versions.get(call_id) or call_id in self._pending():
                # changed here while we read, or a change not yet in PostgreSQL (a requeue
                # whose row still shows the old offer): the next pass decides
                continue
            self.roster.reserve(str(operator))
            self.claims[str(operator)] = call_id
            del self.waiting[call_id]
            self.offers_taken += 1
            entry.offer.set_result(str(operator))

    def status(self) -> dict[str, Any]:
        return {"node": self.node, "shared": self.shared, "error": self.last_error,
                "waiting_everywhere": len(self._order), "lost_nodes": len(self.lost_nodes)}
