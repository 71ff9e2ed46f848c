"""The write journal: telephony never waits on the database, and no write is ever lost.

A call's coroutine submits a named write with a JSON payload. It is appended to a local
SQLite journal (a file beside the app, WAL, fsync'ed at commit) and the call goes on. One writer
task applies journal entries to the main database in order, retrying while the database is
unreachable; an entry leaves the journal only after its transaction committed. Each entry's
sequence number is recorded in the same transaction (journal_applied), so replaying the journal
after a crash applies nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.tickets.models import JournalApplied

log = logging.getLogger(__name__)

Applier = Callable[[AsyncSession, dict[str, Any]], Awaitable[Any]]

TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError,
             ConnectionError, OSError, asyncio.TimeoutError)


def _transient(exc: BaseException) -> bool:
    """Database unreachable (retry until it is back) rather than a bad write."""
    if isinstance(exc, TRANSIENT):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    name = type(exc).__name__
    return "Connection" in name or "CannotConnectNow" in name or "TooManyConnections" in name


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"not journalable: {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"$dt"}:
        return datetime.fromisoformat(obj["$dt"])
    return obj


class Journal:
    """Append-only local queue of writes (SQLite; used synchronously: appends are ~0.1 ms)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # an appended write survives a power cut
        self.db.execute("CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY "
                        "AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL, "
                        "created REAL NOT NULL)")
        # Writes the database refused for good (a bug, not an outage): kept for an admin.
        self.db.execute("CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, kind TEXT, "
                        "payload TEXT, created REAL, error TEXT)")
        self.size = int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def append(self, kind: str, payload: dict[str, Any]) -> int:
        cur = self.db.execute("INSERT INTO entries (kind, payload, created) VALUES (?, ?, ?)",
                              (kind, json.dumps(payload, default=_encode), time.time()))
        self.size += 1
        return int(cur.lastrowid or 0)

    def pending(self, limit: int = 200) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self.db.execute("SELECT seq, kind, payload FROM entries ORDER BY seq LIMIT ?",
                               (limit,)).fetchall()
        return [(int(seq), str(kind), json.loads(payload, object_hook=_decode))
                for seq, kind, payload in rows]

    def dead(self, seq: int, error: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO dead SELECT seq, kind, payload, created, ? "
                        "FROM entries WHERE seq = ?", (error, seq))

    def done(self, seq: int) -> None:
        self.done_upto(seq)

    def done_upto(self, seq: int) -> None:
        """Drop every entry up to ``seq`` (applied in order): one fsync for a whole batch."""
        cur = self.db.execute("DELETE FROM entries WHERE seq <= ?", (seq,))
        self.size -= max(0, cur.rowcount)

    def close(self) -> None:
        self.db.close()


class Writer:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], journal: Path, node: str,
                 *, retry_initial: float = 0.2, retry_max: float = 5.0) -> None:
        self.sessions = sessions
        self.journal = Journal(journal)
        self.node = node
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.appliers: dict[str, Applier] = {}
        self.callbacks: dict[int, Callable[[Any], None]] = {}
        self.applied = 0
        self.failed: list[str] = []
        self.db_ok = True
        self.last_seq = 0
        self.done_seq = 0
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def backlog(self) -> int:
        return self.journal.size

    def register(self, kind: str, applier: Applier) -> None:
        self.appliers[kind] = applier

    def submit(self, kind: str, payload: dict[str, Any],
               on_done: Callable[[Any], None] | None = None) -> None:
        """Journal a write (local, durable) and return; it reaches the database in order."""
        if kind not in self.appliers:
            raise KeyError(f"no applier registered for {kind!r}")
        seq = self.journal.append(kind, payload)
        self.last_seq = max(self.last_seq, seq)
        if on_done is not None:
            self.callbacks[seq] = on_done
        self._wakeup.set()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is in the database (tests, shutdown)."""
        target = self.last_seq
        async with asyncio.timeout(timeout):
            while self.done_seq < target and self.journal.size > 0:
                self._progress.clear()
                await self._progress.wait()

    async def run(self) -> None:
        while True:
            entries = self.journal.pending()
            if not entries:
                self._wakeup.clear()
                self._progress.set()
                await self._wakeup.wait()
                continue
            for seq, kind, payload in entries:
                result = await self._apply(seq, kind, payload)
                self.done_seq = max(self.done_seq, seq)
                self.last_seq = max(self.last_seq, seq)
                callback = self.callbacks.pop(seq, None)
                if callback is not None:
                    try:
                        callback(result)
                    except Exception:
                        log.exception("callback after %s failed", kind)
            # Remove the batch from the local journal at once; a crash before this line only
            # means replays that journal_applied turns into no-ops.
            self.journal.done_upto(entries[-1][0])
            self._progress.set()

    async def _apply(self, seq: int, kind: str, payload: dict[str, Any]) -> Any:
        delay = self.retry_initial
        while True:
            try:
                async with self.sessions() as session, session.begin():
                    seen = await session.scalar(select(JournalApplied.seq).where(
                        JournalApplied.node == self.node, JournalApplied.seq == seq))
                    if seen is not None:
                        return None  # applied before a crash, just not yet removed here
                    result = await self.appliers[kind](session, payload)
                    session.add(JournalApplied(node=self.node, seq=seq))
                self.applied += 1
                if not self.db_ok:
                    log.warning("database back; journal backlog=%d", self.journal.size)
                self.db_ok = True
                return result
            except Exception as exc:
                if not _transient(exc):
                    log.exception("write %s #%d refused by the database; kept in the journal's "
                                  "dead table", kind, seq)
                    self.journal.dead(seq, f"{type(exc).__name__}: {exc}"[:2000])
                    self.failed.append(f"{kind}#{seq}")
                    return None
                if self.db_ok:
                    log.error("database unreachable writing %s (journal keeps it): %s", kind, exc)
                self.db_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)

    def close(self) -> None:
        self.journal.close()
