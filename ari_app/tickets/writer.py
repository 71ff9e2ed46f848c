"""The write queue: telephony never waits on the database.

A call's coroutine submits idempotent write operations and carries on; one writer task applies
them in order and retries while the database is unreachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

Operation = Callable[[AsyncSession], Awaitable[None]]

TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
             ConnectionError, OSError, asyncio.TimeoutError)


@dataclass
class Pending:
    label: str
    op: Operation


class Writer:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *,
                 retry_initial: float = 0.2, retry_max: float = 5.0) -> None:
        self.sessions = sessions
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.applied = 0
        self.failed: list[str] = []
        self.db_ok = True

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, label: str, op: Operation) -> None:
        self._queue.put_nowait(Pending(label, op))

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        await asyncio.wait_for(self._queue.join(), timeout)

    async def run(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                await self._apply(item)
            finally:
                self._queue.task_done()

    async def _apply(self, item: Pending) -> None:
        delay = self.retry_initial
        while True:
            try:
                async with self.sessions() as session, session.begin():
                    await item.op(session)
                self.applied += 1
                if not self.db_ok:
                    log.warning("database back; backlog=%d", self._queue.qsize())
                self.db_ok = True
                return
            except TRANSIENT as exc:
                if self.db_ok:
                    log.error("database unreachable writing %s: %s", item.label, exc)
                self.db_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
            except Exception:
                log.exception("write %s failed and is kept in the failed list", item.label)
                self.failed.append(item.label)
                return
