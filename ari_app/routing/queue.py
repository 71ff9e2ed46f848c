"""Waiting callers, served by priority (1 is most urgent), then age."""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

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


class CallQueue:
    def __init__(self, roster: Roster) -> None:
        self.roster = roster
        self.waiting: dict[str, Waiting] = {}
        self._seq = itertools.count()
        roster.listeners.append(self.dispatch)

    def join(self, call_id: str, priority: int) -> Waiting:
        loop = asyncio.get_running_loop()
        entry = Waiting(priority, loop.time(), next(self._seq), call_id, loop.create_future())
        self.waiting[call_id] = entry
        self.dispatch()
        return entry

    def requeue(self, entry: Waiting, tried: str) -> None:
        """Back in line after an unanswered ring, keeping its place (priority, then age)."""
        entry.tried.add(tried)
        entry.offer = asyncio.get_running_loop().create_future()
        self.waiting[entry.call_id] = entry
        self.dispatch()

    def leave(self, call_id: str) -> None:
        entry = self.waiting.pop(call_id, None)
        if entry is not None and entry.offer.done() and not entry.offer.cancelled():
            self.roster.release(entry.offer.result(), talked=False)  # offered but not taken
        elif entry is not None:
            entry.offer.cancel()

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
