"""The write journal: telephony never waits on the database, and no write is ever lost.

A call's coroutine submits a named write with a JSON payload. It is appended to a local
SQLite journal (a file beside the app, WAL) and the call goes on. One writer task applies journal
entries to the main database in order, in batches of one transaction each (woken from idle, it
waits BATCH_WINDOW_S so that writes made together share a batch; under load a partial batch
begins at most every BATCH_GAP_S, a full one at once), retrying while the
database is unreachable; an entry leaves the journal only after its transaction committed. Each
entry's sequence number is recorded in the same transaction (journal_applied), so replaying the
journal after a crash applies nothing twice.

Durability of an append: the INSERT is committed before submit() returns, so the entry survives
the app being killed (it is in the WAL file, in the kernel's page cache); the writes one call
event makes at once (``Writer.together``, a block with no await) share one commit at the end of
the block, before the call goes on to anything else. A power cut is covered
by a syncer thread that fsyncs the WAL right after appends, off the event loop: appends that
arrive during one fsync share the next (group commit), and ``Journal.wait_synced`` tells when an
entry is on disk. The event loop itself never waits for a disk flush.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Table, bindparam, delete, func, insert, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker

from ari_app.tickets.db import make_sqlite_sync_engine
from ari_app.tickets.models import JournalApplied, table

log = logging.getLogger(__name__)

# An applier is plain synchronous ORM code: on SQLite a whole batch runs in the writer's own
# thread (one hand-off per batch); on PostgreSQL through AsyncSession.run_sync (asyncpg).
Applier = Callable[[Session, dict[str, Any]], Any]
T = TypeVar("T")
NOTICE = "journal.notice"  # a line for the call's ticket audit about its writes (see service)
IDLE_POLL_S = 2.0
# After an idle writer is woken, it waits this long before reading the journal, so that the
# several writes one call event makes (and those of other calls at the same moment) share one
# database transaction instead of one each. Appends are durable in the journal meanwhile.
BATCH_WINDOW_S = 0.05
# Under load, a batch starts at most this often unless a full batch is waiting: each
# transaction costs the writer about as much as several of its writes (session, commit, the
# journal's mark, the journal's own read and delete), and at 8 calls a second the writes of
# one 50 ms window were a handful. A lone write after idle still waits only BATCH_WINDOW_S.
BATCH_GAP_S = 0.2
_APPLIED = table(JournalApplied)
_MARK = select(func.max(_APPLIED.c.seq)).where(_APPLIED.c.node == bindparam("jnode"))
_MARK_MOVE = (update(_APPLIED).where(_APPLIED.c.node == bindparam("jnode"))
              .values(seq=bindparam("upto")))


def core(s: Session) -> Connection:
    """The batch transaction's connection, for an applier's Core statements.

    ORM objects that an earlier applier of the same batch added are flushed first, so that
    Core statements see them and rows reach the database in journal order.
    """
    if s.new or s.dirty or s.deleted:
        s.flush()
    return s.connection()


_DEFERRED = "siaga112.deferred_rows"


def insert_later(s: Session, into: Table, row: dict[str, Any]) -> None:
    """Insert ``row`` into ``into`` with the batch's other rows for that table, in one
    statement (executemany) just before the batch's transaction commits, in the order given.

    For rows that nothing in the same batch reads back: the ticket audit's lines, several per
    call, were a statement each, and each statement costs the writer more in SQLAlchemy than in
    the database. Atomic with the batch as before: the rows commit, or roll back, with it.
    """
    s.info.setdefault(_DEFERRED, {}).setdefault(into, []).append(row)


def insert_deferred(s: Session) -> None:
    """Insert the rows ``insert_later`` kept for this transaction."""
    waiting: dict[Table, list[dict[str, Any]]] = s.info.pop(_DEFERRED, {})
    for into, rows in waiting.items():
        core(s).execute(insert(into), rows)  # setdefault().append(): never an empty list

# What a refusal is decides what happens to the write: a transient one (the database is away,
# shutting down, starting up, or a transaction lost a race) is retried from the journal until
# it lands; only a real data or constraint error is permanent and goes to the dead table.
# PostgreSQL's SQLSTATE classes and codes (asyncpg puts them on its errors as ``sqlstate``):
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "58")  # connection, resources, system/IO
TRANSIENT_SQLSTATES = {
    "57P01": "admin shutdown", "57P02": "crash shutdown",
    "57P03": "cannot connect now (shutting down or starting up)",
    "57P05": "idle session timeout", "57014": "query cancelled (statement timeout)",
    "40001": "serialization failure", "40P01": "deadlock", "55P03": "lock not available",
    "55006": "object in use",
}
TRANSIENT_TYPES = (sa_exc.InterfaceError, sa_exc.DisconnectionError, sa_exc.TimeoutError,
                   ConnectionError, OSError, asyncio.TimeoutError, TimeoutError)
# asyncpg's own errors for a connection that broke or never came (not always wrapped by SQLAlchemy)
TRANSIENT_NAMES = ("ConnectionDoesNotExist", "ConnectionFailure", "CannotConnectNow",
                   "TooManyConnections", "PostgresConnectionError", "AdminShutdown",
                   "CrashShutdown", "InterfaceError", "ConnectionResetError",
                   "ConnectionRefusedError", "InternalClientError")
# SQLite: another writer holds the file, or the disk is not there for a moment
TRANSIENT_SQLITE = ("database is locked", "database table is locked", "disk i/o error",
                    "unable to open database file", "database or disk is full")


def _chain(exc: BaseException) -> list[BaseException]:
    """The error, the DB-API error under it, and their causes (asyncpg's original)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 8:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return seen


def classify(exc: BaseException) -> tuple[bool, str]:
    """(transient, why): retry until it lands, or a refusal for good (a bug, bad data)."""
    chain = _chain(exc)
    for e in chain:
        state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            if state in TRANSIENT_SQLSTATES:
                return True, f"{TRANSIENT_SQLSTATES[state]} ({state})"
            if state[:2] in TRANSIENT_SQLSTATE_CLASSES:
                return True, f"connection or resources ({state})"
            return False, f"refused ({state})"
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True, "connection lost"
    if any(isinstance(e, sqlite3.Error) for e in chain):  # SQLite: its message says which
        text = " ".join(str(e).lower() for e in chain)
        if any(t in text for t in TRANSIENT_SQLITE):
            return True, "sqlite busy or unavailable"
        return False, "refused"
    for e in chain:
        if isinstance(e, (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)):
            return False, "refused"
        name = type(e).__name__
        if isinstance(e, TRANSIENT_TYPES) or any(n in name for n in TRANSIENT_NAMES):
            return True, f"unreachable ({name})"
        if isinstance(e, sa_exc.OperationalError):
            return True, "operational"
    return False, "refused"


def _transient(exc: BaseException) -> bool:
    """Database unreachable (retry until it is back) rather than a bad write."""
    return classify(exc)[0]


def entry_key(payload: dict[str, Any]) -> str:
    """The call a write belongs to (its channel id): a refused write holds the call's later
    writes behind it, so they never land on a ticket that is missing or half-written."""
    key = payload.get("channel")
    return key if isinstance(key, str) else ""


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$dt": value.isoformat()}
    raise TypeError(f"not journalable: {type(value).__name__}")


def _decode(obj: dict[str, Any]) -> Any:
    if set(obj) == {"$dt"}:
        return datetime.fromisoformat(obj["$dt"])
    return obj


class Journal:
    """Append-only local queue of writes (SQLite, WAL; appends never wait for the disk)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL: a commit is a write() into the WAL, no fsync on the caller's thread; the
        # syncer thread below makes appends durable against a power cut within one fsync.
        self.db.execute("PRAGMA synchronous=NORMAL")
        legacy = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone()
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        if self.db.execute("SELECT 1 FROM meta WHERE key = 'id'").fetchone() is None:
            # Sequence numbers are only unique within one journal file: a new file (the old one
            # lost or cleared) gets its own id, so its seq 1 is never taken for an old file's.
            # A file from before ids existed keeps the empty id (its numbering goes on).
            self.db.execute("INSERT INTO meta VALUES ('id', ?)",
                            ("" if legacy else uuid.uuid4().hex[:12],))
        self.id = str(self.db.execute("SELECT value FROM meta WHERE key = 'id'").fetchone()[0])
        self.db.execute("CREATE TABLE IF NOT EXISTS entries (seq INTEGER PRIMARY KEY "
                        "AUTOINCREMENT, kind TEXT NOT NULL, payload TEXT NOT NULL, "
                        "created REAL NOT NULL)")
        # Writes the database refused for good (a bug, not an outage): kept for an admin.
        self.db.execute("CREATE TABLE IF NOT EXISTS dead (seq INTEGER PRIMARY KEY, kind TEXT, "
                        "payload TEXT, created REAL, error TEXT)")
        # A refused write holds its call's later writes (same key) here too, in order, with
        # held_by naming the refused one: `siaga112 journal retry` puts them all back.
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(dead)")}
        if "key" not in columns:
            self.db.execute("ALTER TABLE dead ADD COLUMN key TEXT NOT NULL DEFAULT ''")
            self.db.execute("ALTER TABLE dead ADD COLUMN held_by INTEGER")
            self.db.execute("ALTER TABLE dead ADD COLUMN at REAL")
        self.size = int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        self.appended_seq = 0  # last seq appended by this process
        self.synced_seq = 0  # last seq known to be fsync'ed
        self.syncs = 0
        self._grouped = False  # inside group(): appends wait for its one commit
        self._group_seq = 0
        self._cond = threading.Condition()
        self._closing = False
        self._syncer = threading.Thread(target=self._sync_loop, name=f"journal-sync {path.name}",
                                        daemon=True)
        self._syncer.start()

    def append(self, kind: str, payload: dict[str, Any]) -> int:
        cur = self.db.execute("INSERT INTO entries (kind, payload, created) VALUES (?, ?, ?)",
                              (kind, json.dumps(payload, default=_encode), time.time()))
        self.size += 1
        seq = int(cur.lastrowid or 0)
        if self._grouped:
            self._group_seq = seq  # committed, and handed to the syncer, when the group ends
        else:
            self._appended(seq)
        return seq

    def _appended(self, seq: int) -> None:
        with self._cond:
            self.appended_seq = max(self.appended_seq, seq)
            self._cond.notify_all()

    @contextmanager
    def group(self) -> Iterator[None]:
        """The appends made in the block share one commit (one write into the WAL, where each
        append was one): for the writes one call event makes at once. The block must not
        await: its entries are committed when it ends, before the caller's code goes on. An
        error inside still commits what was appended before it."""
        if self._grouped:  # nested: the outer group commits
            yield
            return
        self.db.execute("BEGIN")
        self._grouped, self._group_seq = True, 0
        try:
            yield
        finally:
            self._grouped = False
            self.db.execute("COMMIT")
            if self._group_seq:
                self._appended(self._group_seq)

    def _sync_loop(self) -> None:
        wal = Path(f"{self.path}-wal")
        while True:
            with self._cond:
                while self.synced_seq >= self.appended_seq and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                target = self.appended_seq
            for candidate in (wal, self.path):  # no WAL file: the main file has the entry
                try:
                    fd = os.open(candidate, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                try:
                    os.fsync(fd)  # every frame written so far, this append's included
                except OSError as exc:
                    log.error("journal fsync of %s failed: %s", candidate, exc)
                finally:
                    os.close(fd)
                break
            with self._cond:
                self.synced_seq = max(self.synced_seq, target)
                self.syncs += 1
                self._cond.notify_all()

    def wait_synced(self, seq: int, timeout: float = 10.0) -> bool:
        """Block until entry ``seq`` is on disk (tests, shutdown); False on time-out."""
        with self._cond:
            return self._cond.wait_for(lambda: self.synced_seq >= seq, timeout)

    def last_seq(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM entries").fetchone()[0])

    def pending(self, limit: int = 200) -> list[tuple[int, str, dict[str, Any]]]:
        rows = self.db.execute("SELECT seq, kind, payload FROM entries ORDER BY seq LIMIT ?",
                               (limit,)).fetchall()
        return [(int(seq), str(kind), json.loads(payload, object_hook=_decode))
                for seq, kind, payload in rows]

    def dead(self, seq: int, error: str, key: str = "", held_by: int | None = None) -> None:
        """Move an entry aside: refused for good (``held_by`` None), or waiting behind the
        refused write ``held_by`` of the same call. It stays in ``entries`` until done_upto."""
        self.db.execute("INSERT OR REPLACE INTO dead (seq, kind, payload, created, error, key, "
                        "held_by, at) SELECT seq, kind, payload, created, ?, ?, ?, ? "
                        "FROM entries WHERE seq = ?", (error, key, held_by, time.time(), seq))

    def held_keys(self, kinds: set[str]) -> dict[str, int]:
        """Calls whose refused write (of one of ``kinds``) holds their later writes: key -> the
        seq of the refused write."""
        if not kinds:
            return {}
        marks = ",".join("?" * len(kinds))
        rows = self.db.execute(f"SELECT key, MIN(seq) FROM dead WHERE key != '' AND held_by IS "
                               f"NULL AND kind IN ({marks}) GROUP BY key",
                               sorted(kinds)).fetchall()
        return {str(k): int(q) for k, q in rows}

    def dead_entries(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT seq, kind, payload, created, error, key, held_by, at "
                               "FROM dead ORDER BY seq").fetchall()
        return [{"seq": r[0], "kind": r[1], "payload": json.loads(r[2]), "created": r[3],
                 "error": r[4], "key": r[5], "held_by": r[6], "at": r[7]} for r in rows]

    def retry_dead(self, seqs: list[int] | None = None) -> list[tuple[int, int, str]]:
        """Put refused writes (and the writes held behind them) back in the queue, in their
        original order, as new entries; returns (old seq, new seq, kind). The running app's
        writer picks them up within seconds; a stopped app on its next start."""
        rows = self.db.execute("SELECT seq, kind, payload, created, key, held_by FROM dead "
                               "ORDER BY seq").fetchall()
        if seqs is not None:
            chosen = set(seqs)
            chosen |= {int(r[0]) for r in rows if r[5] is not None and int(r[5]) in chosen}
            rows = [r for r in rows if int(r[0]) in chosen]
        moved: list[tuple[int, int, str]] = []
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for seq, kind, payload, created, _key, _held in rows:
                cur = self.db.execute("INSERT INTO entries (kind, payload, created) "
                                      "VALUES (?, ?, ?)", (kind, payload, created))
                self.db.execute("DELETE FROM dead WHERE seq = ?", (seq,))
                moved.append((int(seq), int(cur.lastrowid or 0), str(kind)))
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.size += len(moved)
        return moved

    def count(self) -> int:
        self.size = int(self.db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        return self.size

    def done_upto(self, seq: int) -> None:
        """Drop every entry up to ``seq`` (applied in order): one fsync for a whole batch."""
        cur = self.db.execute("DELETE FROM entries WHERE seq <= ?", (seq,))
        self.size -= max(0, cur.rowcount)

    def close(self) -> None:
        self.wait_synced(self.appended_seq)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._syncer.join(timeout=5)
        self.db.close()


class Writer:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], journal: Path, node: str,
                 *, retry_initial: float = 0.2, retry_max: float = 5.0,
                 batch_size: int = 50, batch_window: float = BATCH_WINDOW_S,
                 batch_gap: float = BATCH_GAP_S) -> None:
        self.sessions = sessions
        self.batch_size, self.batch_window, self.batch_gap = batch_size, batch_window, batch_gap
        self.batches = 0  # transactions that applied journal entries
        self._batch_began = -batch_gap  # loop time the last batch began
        engine = sessions.kw["bind"]
        self._sync: sessionmaker[Session] | None = None
        self._thread: ThreadPoolExecutor | None = None
        self.write_engine: Engine = engine.sync_engine  # where the journal's writes commit
        if engine.dialect.name == "sqlite":
            self.write_engine = make_sqlite_sync_engine(
                engine.url.render_as_string(hide_password=False))
            self._sync = sessionmaker(self.write_engine, expire_on_commit=False)
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
        self.journal = Journal(journal)
        # The database knows this journal as node/id: "applied up to seq N" per journal file.
        self.node = f"{node}/{self.journal.id}" if self.journal.id else node
        self.retry_initial, self.retry_max = retry_initial, retry_max
        self.appliers: dict[str, Applier] = {}
        self.callbacks: dict[int, Callable[[Any], None]] = {}
        self.applied = 0
        self.failed: list[str] = []
        self.transient_errors = 0
        self.transient_reasons: dict[str, int] = {}  # why -> how often (logged once each)
        self.db_ok = True
        self._upto: int | None = None  # this journal's mark in the database, once read
        # Kinds the call's later writes depend on (its opening): when one is refused, they
        # wait behind it instead of failing one by one on a missing row.
        self.holding: set[str] = set()
        self.held: dict[str, int] = {}  # call -> its refused opening write
        self.last_seq = self.journal.last_seq()  # flush() also waits for a replayed backlog
        self.done_seq = 0
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()

    @property
    def backlog(self) -> int:
        return self.journal.size

    def register(self, kind: str, applier: Applier, *, holds_later: bool = False) -> None:
        """``holds_later``: the call's later writes need this one (it makes the row they
        change); if it is refused they wait behind it rather than fail."""
        self.appliers[kind] = applier
        if holds_later:
            self.holding.add(kind)

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

    def together(self) -> AbstractContextManager[None]:
        """Writes submitted in the block share one journal commit (see ``Journal.group``)."""
        return self.journal.group()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything submitted so far is in the database (tests, shutdown)."""
        async with asyncio.timeout(timeout):
            # last_seq read each time: the notes the writer adds itself (a refusal) count too
            while self.done_seq < self.last_seq and self.journal.size > 0:
                self._progress.clear()
                await self._progress.wait()

    async def wait_applied(self, seq: int, timeout: float) -> None:
        """Wait until every entry up to ``seq`` has been through the database (or dead)."""
        async with asyncio.timeout(timeout):
            while self.done_seq < seq and self.journal.size > 0:
                self._progress.clear()
                await self._progress.wait()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            entries = self.journal.pending()
            if 0 < len(entries) < self.batch_size:
                # A partial batch waits for the gap since the last one began (writes keep
                # arriving meanwhile and join it); a full one, a backlog, goes at once.
                wait = self._batch_began + self.batch_gap - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    entries = self.journal.pending()
            # after pending(): a retry may have cleared it
            self.held = self.journal.held_keys(self.holding)
            if not entries:
                self._wakeup.clear()
                self._progress.set()
                try:  # also wakes for writes `siaga112 journal retry` put back from outside
                    async with asyncio.timeout(IDLE_POLL_S):  # 3.11's wait_for can lose a cancel
                        await self._wakeup.wait()
                except TimeoutError:
                    self.journal.count()
                else:
                    await asyncio.sleep(self.batch_window)
                continue
            self._batch_began = loop.time()
            for start in range(0, len(entries), self.batch_size):
                chunk = entries[start:start + self.batch_size]
                results = await self._apply_batch(chunk)
                for (seq, kind, _payload), result in zip(chunk, results, strict=True):
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

    async def _transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one database transaction, committed when it returns (with the rows
        its appliers handed to ``insert_later``)."""

        def whole(session: Session) -> T:
            result = work(session)
            insert_deferred(session)
            return result

        if self._sync is not None and self._thread is not None:
            sync = self._sync

            def run() -> T:
                with sync() as session, session.begin():
                    return whole(session)

            return await asyncio.get_running_loop().run_in_executor(self._thread, run)
        async with self.sessions() as session, session.begin():
            return await session.run_sync(whole)

    def _applied_upto(self, session: Session) -> int:
        """The highest seq of this journal already in the database (entries go in order).

        Read from the database once, then known here: only this writer moves its journal's
        mark. After any failed transaction it is read again, since a commit whose reply was
        lost may have landed.
        """
        if self._upto is None:
            self._upto = int(session.connection().scalar(_MARK, {"jnode": self.node}) or 0)
        return self._upto

    def _mark_applied(self, session: Session, seq: int) -> None:
        """One row per journal: its high-water mark, in the same transaction as the writes."""
        conn = session.connection()
        if conn.execute(_MARK_MOVE, {"jnode": self.node, "upto": seq}).rowcount != 1:
            conn.execute(delete(_APPLIED).where(_APPLIED.c.node == self.node))
            conn.execute(insert(_APPLIED).values(node=self.node, seq=seq))

    async def _apply_batch(self, chunk: list[tuple[int, str, dict[str, Any]]]) -> list[Any]:
        """Apply entries in order in ONE transaction (one commit for the lot).

        A write the database refuses for good rolls the batch back; the batch is then applied
        one entry per transaction, so only the bad entry goes to the dead table.
        """

        if any(entry_key(p) in self.held for _, _, p in chunk):
            return [await self._hold_or_apply(entry) for entry in chunk]

        def work(session: Session) -> tuple[list[Any], int]:
            upto = self._applied_upto(session)
            results: list[Any] = []
            skipped = 0
            for seq, kind, payload in chunk:
                if seq <= upto:  # applied before a crash, just not yet removed here
                    results.append(None)
                    skipped += 1
                    continue
                results.append(self.appliers[kind](session, payload))
            if chunk[-1][0] > upto:
                self._mark_applied(session, chunk[-1][0])
            return results, skipped

        try:
            results, skipped = await self._retrying(work, chunk[0][1])
        except Exception as exc:  # refused for good (a bug, bad data: not an outage)
            if len(chunk) > 1:
                log.warning("a batch of %d writes was refused (%s: %s); applying one by one",
                            len(chunk), type(exc).__name__, exc)
                return [await self._hold_or_apply(entry) for entry in chunk]
            seq, kind, payload = chunk[0]
            key = entry_key(payload)
            log.exception("call=%s write %s #%d refused by the database (%s); kept in the "
                          "journal's dead table, the call's later writes wait behind it",
                          key or "-", kind, seq, classify(exc)[1])
            error = f"{type(exc).__name__}: {exc}"[:2000]
            self.journal.dead(seq, error, key)
            self.failed.append(f"{kind}#{seq}")
            if key:
                if kind in self.holding:
                    self.held[key] = seq
                if NOTICE in self.appliers:  # said on the ticket, if it exists
                    self.submit(NOTICE, {"ticket_channel": key, "at": time.time(),
                                         "action": "write refused",
                                         "detail": {"write": f"{kind}#{seq}", "error": error,
                                                    "later writes": "held behind it"
                                                    if kind in self.holding else "go on"}})
            return [None]
        self.applied += len(chunk) - skipped
        self.batches += 1
        self._upto = max(self._upto or 0, chunk[-1][0])
        return results

    async def _hold_or_apply(self, entry: tuple[int, str, dict[str, Any]]) -> Any:
        """One entry on its own: held behind its call's refused write, or applied."""
        seq, kind, payload = entry
        key = entry_key(payload)
        blocker = self.held.get(key) if key else None
        if blocker is not None and blocker != seq:
            log.warning("call=%s write %s #%d waits behind refused write #%d", key, kind, seq,
                        blocker)
            self.journal.dead(seq, f"waiting behind refused write #{blocker}", key, blocker)
            self.failed.append(f"{kind}#{seq}")
            return None
        return (await self._apply_batch([entry]))[0]

    async def _retrying(self, work: Callable[[Session], T], kind: str) -> T:
        """Run ``work`` in a transaction, retrying while the database is unreachable."""
        delay = self.retry_initial
        while True:
            try:
                result = await self._transaction(work)
            except Exception as exc:
                self._upto = None  # rolled back, or committed with the reply lost: read again
                transient, why = classify(exc)
                if not transient:
                    raise
                self.transient_errors += 1
                if why not in self.transient_reasons and not self.db_ok:
                    log.warning("database still unavailable writing %s: %s", kind, why)
                self.transient_reasons[why] = self.transient_reasons.get(why, 0) + 1
                if self.db_ok:
                    log.error("database unavailable writing %s: %s; the journal keeps it and "
                              "retries until it lands: %s: %s", kind, why, type(exc).__name__,
                              exc)
                self.db_ok = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                continue
            if not self.db_ok:
                log.warning("database back; journal backlog=%d", self.journal.size)
            self.db_ok = True
            return result

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self.write_engine.dispose()
        self.journal.close()
