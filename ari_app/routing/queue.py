"""Waiting callers and operator claims, behind one small interface.

A caller joins the queue the moment the app answers (the menu plays while the caller is already
offered to the operators), and the menu's answer only changes the caller's place in it. Callers
are served by priority (1 is most urgent), then age (the time they joined). An operator is
*claimed* for one caller at a time: from the offer, through ringing and the conversation, until
``release``.

The interface (``WaitingQueue``), as the call flow uses it:

- ``join(call_id, priority) -> Waiting``: the caller waits; an offer may be made at once.
- ``reprioritise(call_id, priority)``: the menu (or the silent-caller watch) decided; the caller
  keeps its age.
- ``next_offer(entry) -> Future[str]``: resolves to the operator claimed for this caller.
- ``accept(entry) -> str``: the caller takes the offered claim (to ring that operator); it is
  the caller's until ``requeue`` or ``release``. An offer never accepted is released by ``leave``.
- ``requeue(entry, tried)``: the claimed operator did not answer: release the claim and wait
  again, same place in line, that operator tried last.
- ``claim(operator, call_id)``: claim an operator without an offer (a call adopted after a restart that
  is already ringing or bridged to that operator).
- ``release(operator, talked=...)``: the claim ends (talked: the operator's idle time restarts).
- ``leave(call_id)``: the caller is gone or connected; an offer not taken is released.
- ``position(call_id)``: 0 for the next caller served, -1 when not waiting.

Every method but ``next_offer`` returns at once and never waits on anything outside the process,
so the telephony path never blocks on it. ``MemoryQueue`` is the implementation of one node.
``SharedQueue`` (shared_queue.py: several nodes, PostgreSQL rows taken with ``SELECT ... FOR
UPDATE SKIP LOCKED`` and leases that expire with a dead node) keeps these meanings: a caller is
offered at most one operator at a time, an operator is claimed by at most one caller, and the
order is priority then age across every node.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Protocol

from ari_app.routing.roster import Roster

log = logging.getLogger(__name__)


@dataclass(order=True)
class Waiting:
    priority: int
    queued_at: float
    seq: int
    call_id: str = field(compare=False)
    offer: asyncio.Future[str] = field(compare=False, repr=False)
    tried: set[str] = field(compare=False, default_factory=set)
    accepted: bool = field(compare=False, default=False)


class WaitingQueue(Protocol):
    def join(self, call_id: str, priority: int) -> Waiting: ...
    def reprioritise(self, call_id: str, priority: int) -> None: ...
    def next_offer(self, entry: Waiting) -> asyncio.Future[str]: ...
    def accept(self, entry: Waiting) -> str: ...
    def requeue(self, entry: Waiting, tried: str) -> None: ...
    def claim(self, operator: str, call_id: str = "") -> None: ...
    def release(self, operator: str, *, talked: bool) -> None: ...
    def leave(self, call_id: str) -> None: ...
    def position(self, call_id: str) -> int: ...


class MemoryQueue:
    """The queue and the claims of one node, in memory (the roster holds who is claimed)."""

    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.waiting: dict[str, Waiting] = {}   # not yet offered an operator
        self.entries: dict[str, Waiting] = {}   # every caller in the queue, offered or not
        self._seq = itertools.count()
        roster.listeners.append(self.dispatch)

    def join(self, call_id: str, priority: int) -> Waiting:
        loop = asyncio.get_running_loop()
        entry = Waiting(priority, loop.time(), next(self._seq), call_id, loop.create_future())
        self.waiting[call_id] = self.entries[call_id] = entry
        self.dispatch()
        return entry

    def reprioritise(self, call_id: str, priority: int) -> None:
        entry = self.entries.get(call_id)
        if entry is None or entry.priority == priority:
            return
        entry.priority = priority
        self.dispatch()

    def next_offer(self, entry: Waiting) -> asyncio.Future[str]:
        return entry.offer

    def accept(self, entry: Waiting) -> str:
        entry.accepted = True
        return entry.offer.result()

    def requeue(self, entry: Waiting, tried: str) -> None:
        """Back in line after an unanswered ring, keeping its place (priority, then age)."""
        entry.tried.add(tried)
        entry.accepted = False
        entry.offer = asyncio.get_running_loop().create_future()
        self.waiting[entry.call_id] = self.entries[entry.call_id] = entry
        self.roster.release(tried, talked=False)  # dispatches: the next free operator is offered

    def claim(self, operator: str, call_id: str = "") -> None:
        self.roster.reserve(operator)

    def release(self, operator: str, *, talked: bool) -> None:
        self.roster.release(operator, talked=talked)

    def leave(self, call_id: str) -> None:
        self.waiting.pop(call_id, None)
        entry = self.entries.pop(call_id, None)
        if entry is None:
            return
        if not entry.offer.done():
            entry.offer.cancel()
        elif not entry.offer.cancelled() and not entry.accepted:
            self.roster.release(entry.offer.result(), talked=False)  # offered but not taken

    def position(self, call_id: str) -> int:
        ordered = sorted(self.waiting.values())
        return next((i for i, e in enumerate(ordered) if e.call_id == call_id), -1)

    def dispatch(self) -> None:
        """Offer free operators to the most urgent, oldest waiting calls."""
        while True:
            pending = sorted(e for e in self.waiting.values() if not e.offer.done())
            if not pending:
                return
            best = pending[0]
            free = self.roster.candidates(exclude=best.tried)
            if not free and best.tried and self.roster.candidates():
                best.tried.clear()  # everyone was tried once: start another round
                free = self.roster.candidates()
            if not free:
                return
            operator = free[0]
            self.roster.reserve(operator)
            del self.waiting[best.call_id]
            best.offer.set_result(operator)


CallQueue = MemoryQueue  # the name the rest of the app knew it by
