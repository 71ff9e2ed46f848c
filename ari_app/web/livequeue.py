"""The console's view of the line: callers waiting (serving order, time waited, badges).

It follows the call bus (``app.live``) from the app's start, so a console opened later still
sees how long everyone has waited. Badges that need the database (FLAGGED from the screening
policy on the ticket, CALLBACK for a caller with an open callback) are looked up once per call,
off the call path; a database outage only leaves those two badges off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from ari_app.live import LiveBus
from ari_app.tickets.models import Ticket

if TYPE_CHECKING:
    from ari_app.web.cluster import Cluster

log = logging.getLogger(__name__)

_EARLIER = aliased(Ticket)
# One Core query per waiting caller (not ORM entities): the ticket's badges, and whether the same
# caller has another ticket still to be called back.
_BADGES = select(
    Ticket.reference, Ticket.policy, Ticket.silent,
    exists().where(Ticket.caller_key.is_not(None), _EARLIER.caller_key == Ticket.caller_key,
                   _EARLIER.id != Ticket.id, _EARLIER.callback_needed.is_(True),
                   _EARLIER.status.not_in(("resolved", "closed"))),
).where(Ticket.channel_id == bindparam("ch")).limit(1)

LOOKUP_DELAY_S = 0.5  # the ticket row is written just after "arrived"
# The bus's stages a waiting caller goes through; other changes ("location", "silent",
# "language", "agency") only add to what is known about the call.
STAGES = ("arrived", "menu", "queued", "ringing")


@dataclass
class Waiter:
    call: str
    caller: str = ""
    arrived: float = field(default_factory=time.monotonic)
    arrived_wall: float = field(default_factory=time.time)  # what other nodes count from
    stage: str = "arrived"
    priority: int | None = None
    operator: str | None = None   # the operator being rung
    reference: str | None = None
    choice: str | None = None
    silent: bool = False
    located: bool = False
    flagged: bool = False
    callback: bool = False

    def badges(self) -> list[str]:
        return [b for b, on in (("silent", self.silent), ("located", self.located),
                                ("flagged", self.flagged), ("callback", self.callback)) if on]

    def view(self, now: float) -> dict[str, Any]:
        return {"call": self.call, "caller": self.caller, "stage": self.stage,
                "priority": self.priority, "operator": self.operator, "reference": self.reference,
                "choice": self.choice, "waited_s": round(now - self.arrived, 1),
                "badges": self.badges()}


class LiveQueue:
    def __init__(self, live: LiveBus, sessions: async_sessionmaker[AsyncSession],
                 default_priority: int) -> None:
        self.live, self.sessions, self.default_priority = live, sessions, default_priority
        self.waiting: dict[str, Waiter] = {}
        self.listeners: list[Callable[[], None]] = []
        self._lookups: set[asyncio.Task[None]] = set()
        # several nodes on one PostgreSQL: every other node's waiting callers join this view
        self.cluster: Cluster | None = None

    def ordered(self) -> list[Waiter]:
        """The order they will be served: priority (1 first), then who came first."""
        return sorted(self.waiting.values(), key=lambda w: (
            w.priority if w.priority is not None else self.default_priority, w.arrived))

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        ordered = self.ordered()
        rows = [w.view(now) for w in ordered]
        if self.cluster is not None:
            rows = self.cluster.merge([{**r, "arrived_wall": w.arrived_wall}
                                       for r, w in zip(rows, ordered, strict=True)])
        return {"waiting": rows, "count": len(rows),
                "longest_s": max((r["waited_s"] for r in rows), default=0)}

    def apply(self, change: dict[str, Any]) -> None:
        cid, stage = str(change.get("call")), str(change.get("stage"))
        if stage in ("ended", "bridged"):
            if self.waiting.pop(cid, None) is not None:
                self.changed()
            return
        w = self.waiting.get(cid)
        if w is None:
            if stage not in ("arrived", "menu", "queued", "ringing", "location", "silent"):
                return
            w = self.waiting[cid] = Waiter(cid)
            self._lookup_later(w)
        if stage == "location":
            w.located = True
        elif stage == "silent":
            w.silent = True
        elif stage in STAGES:
            w.stage = stage
        if change.get("caller"):
            w.caller = str(change["caller"])
        if isinstance(change.get("priority"), int):
            w.priority = change["priority"]
        if change.get("silent"):
            w.silent = True
        if change.get("choice"):
            w.choice = str(change["choice"])
        if stage == "ringing":
            w.operator = change.get("operator")
        elif stage == "queued":
            w.operator = None
            self._lookup_later(w)  # a warned (flagged) caller's policy is written by now
        self.changed()

    def changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    def _lookup_later(self, w: Waiter) -> None:
        task = asyncio.create_task(self._lookup(w))
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)

    async def _lookup(self, w: Waiter) -> None:
        if w.reference:
            return  # queued again (after a ring that was not answered): its badges are known
        await asyncio.sleep(LOOKUP_DELAY_S)
        for _ in range(10):
            if w.call not in self.waiting:
                return
            try:
                async with self.sessions() as s:
                    row = (await s.execute(_BADGES, {"ch": w.call})).first()
            except Exception as exc:
                log.warning("call=%s live queue: ticket not readable (%s)", w.call, exc)
                return
            if row is not None:
                reference, policy, silent, callback = row
                w.reference = reference
                w.flagged = bool(policy and ("flagged" in policy or policy.startswith("warned")))
                w.silent = w.silent or bool(silent)
                w.callback = bool(callback)
                self.changed()
                return
            await asyncio.sleep(0.3)

    async def run(self) -> None:
        changes = self.live.listen()
        try:
            for state in list(self.live.state.values()):
                self.apply(state)
            while True:
                self.apply(await changes.get())
        finally:
            self.live.unlisten(changes)
            for task in list(self._lookups):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._lookups, return_exceptions=True)
