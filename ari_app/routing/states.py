"""Operator console states: ready, not ready (break, training, meeting), wrap-up after a call.

The roster asks ``ready(name)`` on every offer, from memory: the call path never waits on the
database. Every change is journaled through the Writer (current state + an audit row), so it
survives a database outage and a restart; a refresh merges what other nodes wrote (newest wins).
An operator with no state at all is ready, so a site that never uses the console rings as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from ari_app.tickets.console_models import OperatorStateLog, OperatorStateRow
from ari_app.tickets.writer import Writer

log = logging.getLogger(__name__)

READY, NOT_READY, WRAP_UP = "ready", "not_ready", "wrap_up"
STATES = (READY, NOT_READY, WRAP_UP)
REASONS = ("break", "training", "meeting")


class StateError(ValueError):
    pass


@dataclass(frozen=True)
class OperatorState:
    state: str = READY
    reason: str | None = None
    since: datetime | None = None
    until: datetime | None = None  # end of a timed wrap-up; None: until the operator is ready

    def effective(self, now: datetime) -> str:
        """A timed wrap-up that has run out is ready again, without anyone writing it."""
        if self.state == WRAP_UP and self.until is not None and now >= self.until:
            return READY
        return self.state


class StateRecord(Protocol):
    """A stored state as read back (an ``OperatorStateRow`` or a row of its columns)."""

    operator_name: str
    state: str
    reason: str | None
    since: datetime
    until: datetime | None


_STATES = select(OperatorStateRow.operator_name, OperatorStateRow.state, OperatorStateRow.reason,
                 OperatorStateRow.since, OperatorStateRow.until)


class OperatorStates:
    def __init__(self, writer: Writer | None, now: Callable[[], datetime]) -> None:
        self.writer, self.now = writer, now
        self.current: dict[str, OperatorState] = {}
        self.listeners: list[Callable[[str, OperatorState], None]] = []
        if writer is not None:
            writer.register("operator.state", _apply)

    def get(self, name: str) -> OperatorState:
        return self.current.get(name, OperatorState())

    def ready(self, name: str) -> bool:
        return self.get(name).effective(self.now()) == READY

    def set(self, name: str, state: str, *, actor: str, reason: str | None = None,
            wrap_up_s: float | None = None) -> OperatorState:
        if state not in STATES:
            raise StateError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
        if state == NOT_READY and reason not in REASONS:
            raise StateError(f"reason: expected one of {', '.join(REASONS)}, got {reason!r}")
        if state != NOT_READY:
            reason = None
        now = self.now()
        until = now + timedelta(seconds=wrap_up_s) if state == WRAP_UP and wrap_up_s else None
        previous = self.get(name).effective(now)
        new = OperatorState(state, reason, now, until)
        self.current[name] = new
        if self.writer is not None:
            self.writer.submit("operator.state", {
                "operator": name, "state": state, "reason": reason, "at": now, "until": until,
                "actor": actor, "previous": previous})
        log.info("operator=%s state %s -> %s%s by %s", name, previous, state,
                 f" ({reason})" if reason else "", actor)
        for listener in list(self.listeners):
            listener(name, new)
        return new

    def merge(self, rows: Iterable[StateRecord]) -> None:
        """States read from the database: a newer one (another node, a restart) replaces ours."""
        for row in rows:
            mine = self.current.get(row.operator_name)
            if mine is None or mine.since is None or row.since > mine.since:
                self.current[row.operator_name] = OperatorState(row.state, row.reason, row.since,
                                                                row.until)

    async def load(self, s: AsyncSession) -> None:
        """Every operator's stored state (a Core query: the roster runs it every refresh)."""
        self.merge((await s.execute(_STATES)).all())


def _apply(s: Session, p: dict[str, Any]) -> None:
    row = s.get(OperatorStateRow, p["operator"])
    if row is None:
        s.add(OperatorStateRow(operator_name=p["operator"], state=p["state"], reason=p["reason"],
                               since=p["at"], until=p["until"]))
    elif row.since <= p["at"]:
        row.state, row.reason, row.since, row.until = p["state"], p["reason"], p["at"], p["until"]
    s.add(OperatorStateLog(operator_name=p["operator"], state=p["state"], reason=p["reason"],
                           previous=p["previous"], at=p["at"], actor=p["actor"],
                           until=p["until"]))
