"""Asterisk's own record of each call (CEL), read after a restart to learn what happened while
the app was away.

Asterisk writes CEL rows (ANSWER, BRIDGE_ENTER, BRIDGE_EXIT, HANGUP) through cel_sqlite3_custom
into ``var/asterisk/log/master.db`` (see config/asterisk/cel*.conf), whether or not the app or the
database server is up. For a caller's channel ``<id>`` the record holds its own rows and those
of the operator legs the app originated for it (``op-<id>-...``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def cel_path(var_dir: Path) -> Path:
    return var_dir / "asterisk" / "log" / "master.db"


def prepare_cel_store(var_dir: Path) -> Path:
    """Make the CEL file in WAL mode before Asterisk opens it (the mode is kept in the file).

    cel_sqlite3_custom commits every event on its own; in SQLite's default rollback mode each
    commit costs several fsyncs (1.7 ms per row here, against 0.3 ms in WAL), on the thread that
    carries every CEL event, and our reads would block its writes. The module makes its table
    itself when the file has none.
    """
    path = cel_path(var_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()
    return path


def endpoint_name(channel_name: str) -> str:
    """The endpoint a channel belongs to: ``PJSIP/op29-00000241`` -> ``op29``.

    A bare name (``op29``) is returned as it is; '' stays ''.
    """
    name = channel_name.strip().split("&", 1)[0]
    if "/" not in name:
        return name
    endpoint = name.split("/", 1)[1]
    head, sep, tail = endpoint.rpartition("-")
    return head if sep and len(tail) >= 8 and all(c in "0123456789abcdef" for c in tail) \
        else endpoint


@dataclass
class CallStory:
    """What Asterisk recorded about one caller's channel and its operator legs (epoch seconds)."""

    channel: str
    answered_at: float | None = None
    hangup_at: float | None = None
    hangup_cause: int | None = None
    operator: str | None = None
    operator_answered_at: float | None = None
    # both the caller and an operator were in the call's bridge (the later of the two entries;
    # an operator entering after the caller hung up does not count)
    bridged_at: float | None = None
    operator_hangup_at: float | None = None
    last_at: float | None = None
    events: list[str] = field(default_factory=list)
    operators: list[str] = field(default_factory=list)  # every operator bridged to the caller

    @property
    def ended_by(self) -> str:
        if self.operator_hangup_at is not None and self.hangup_at is not None \
                and self.operator_hangup_at < self.hangup_at:
            return "operator"
        return "caller"


class CelRecord:
    """Read-only view of the CEL file (Asterisk keeps writing it while we read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._indexed = False

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        db = sqlite3.connect(self.path, timeout=2.0)
        if not self._indexed:  # cel_sqlite3_custom makes no index; reconcile looks up by id
            try:
                db.execute("CREATE INDEX IF NOT EXISTS siaga112_cel_uniqueid ON cel(uniqueid)")
                db.commit()
                self._indexed = True
            except sqlite3.Error as exc:
                log.warning("CEL record %s: no index (%s)", self.path, exc)
        return db

    def story(self, channel_id: str) -> CallStory | None:
        """The caller's rows and its operator legs' rows, or None if Asterisk recorded nothing."""
        db = self._connect()
        if db is None:
            return None
        try:
            rows = db.execute(
                "SELECT eventtype, eventtime, channame, uniqueid, eventextra FROM cel "
                "WHERE uniqueid = ? OR (uniqueid >= ? AND uniqueid < ?) ORDER BY rowid",
                (channel_id, f"op-{channel_id}-", f"op-{channel_id}.")).fetchall()
        except sqlite3.Error as exc:  # no table yet: Asterisk has written no event
            log.warning("call=%s CEL record not readable: %s", channel_id, exc)
            return None
        finally:
            db.close()
        if not rows:
            return None
        story = CallStory(channel_id)
        bridge = f"call-{channel_id}"
        caller_in: float | None = None  # the caller entered the call's bridge
        legs: dict[str, dict[str, Any]] = {}  # operator leg id -> name, entered, hung up
        for kind, at_text, channame, uniqueid, extra_text in rows:
            try:
                at = float(at_text)
            except (TypeError, ValueError):
                continue
            try:
                extra = json.loads(extra_text) if extra_text else {}
            except ValueError:
                extra = {}
            caller = uniqueid == channel_id
            story.last_at = max(story.last_at or at, at)
            story.events.append(f"{kind} {'caller' if caller else endpoint_name(channame)}")
            in_call_bridge = kind == "BRIDGE_ENTER" and isinstance(extra, dict) \
                and extra.get("bridge_id") == bridge
            if caller:
                if kind == "ANSWER" and story.answered_at is None:
                    story.answered_at = at
                elif in_call_bridge and caller_in is None:
                    caller_in = at
                elif kind == "HANGUP":
                    story.hangup_at = at
                    cause = extra.get("hangupcause") if isinstance(extra, dict) else None
                    story.hangup_cause = cause if isinstance(cause, int) else None
                continue
            leg = legs.setdefault(str(uniqueid), {"name": endpoint_name(str(channame))})
            if kind == "ANSWER" and story.operator_answered_at is None:
                story.operator_answered_at = at
                story.operator = leg["name"]
            elif in_call_bridge:
                leg.setdefault("in", at)
            elif kind == "HANGUP":
                leg.setdefault("out", at)
        if caller_in is not None:
            for leg in legs.values():
                if "in" not in leg:
                    continue
                together = max(caller_in, leg["in"])
                if (story.hangup_at is None or story.hangup_at > together) and \
                        leg.get("out", together + 1) > together:
                    if leg["name"] not in story.operators:
                        story.operators.append(leg["name"])
                    story.operator = leg["name"]
                    story.operator_hangup_at = leg.get("out")
                    if story.bridged_at is None:
                        story.bridged_at = together
        return story

    def last_event_before(self, epoch: float) -> float | None:
        """The last thing Asterisk recorded before ``epoch`` (e.g. before it restarted)."""
        db = self._connect()
        if db is None:
            return None
        try:  # rows are appended in time order: look back from the newest
            rows = db.execute("SELECT eventtime FROM cel ORDER BY rowid DESC LIMIT 20000").fetchall()
        except sqlite3.Error:
            return None
        finally:
            db.close()
        for (text,) in rows:
            try:
                at = float(text)
            except (TypeError, ValueError):
                continue
            if at < epoch:
                return at
        return None


@dataclass
class CelPrune:
    """What one pruning of the CEL file did."""

    deleted: int = 0
    transactions: int = 0
    live_kept: int = 0     # live calls whose old rows were left for reconcile
    busy_retries: int = 0  # batches that found Asterisk writing and tried again


def prune_cel(path: Path, before_epoch: float, keep: Collection[str], *, batch: int = 500,
              busy_timeout_s: float = 5.0, max_busy_retries: int = 20,
              pause_s: float = 0.01) -> CelPrune:
    """Delete the CEL rows older than ``before_epoch``, except those of the calls in ``keep``.

    Asterisk writes this file all the while (cel_sqlite3_custom, one short transaction per
    event, with its own short busy wait). So: WAL mode (readers and the writer do not block each
    other); the bound is found by a read, outside any write lock; then rows go in batches of
    ``batch``, each its own short ``BEGIN IMMEDIATE`` transaction over a rowid range (the
    primary key: no table scan under the lock), so Asterisk waits at most a few milliseconds
    for one batch. Between batches we leave the file alone for ``pause_s`` (and at least four
    times as long as the batch held it): SQLite's busy wait is not fair, and back-to-back
    transactions starved Asterisk's writer past its own timeout, which then drops the event
    ("Unable to write CEL ... database is locked", seen in the test on Asterisk 22). Our
    commits need no fsync (``synchronous=NORMAL``): a delete lost to a power cut is done again
    by the next run. Our own busy timeout waits for Asterisk's commits; a batch that still finds
    the file busy is retried. A row Asterisk writes meanwhile is newer than the bound: never
    touched. The pages freed are reused by Asterisk's next rows, so the file stops growing.

    ``keep``: caller channel ids; their own rows, their operator legs' (``op-<id>-...``) and
    any row linked to them are kept whatever their age.
    """
    result = CelPrune()
    if not path.exists():
        return result
    db = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None)
    try:
        try:
            bound = db.execute("SELECT max(rowid) FROM cel WHERE CAST(eventtime AS REAL) < ?",
                               (before_epoch,)).fetchone()[0]
        except sqlite3.OperationalError as exc:  # no table yet: Asterisk has written nothing
            log.info("CEL record %s: nothing to prune (%s)", path, exc)
            return result
        if bound is None:
            return result
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TEMP TABLE keep (id TEXT PRIMARY KEY)")  # temp: no lock on the file
        db.executemany("INSERT OR IGNORE INTO temp.keep VALUES (?)", [(k,) for k in keep])
        result.live_kept = len(set(keep))
        low = 0
        while low < bound:
            # the next ``batch`` rows by rowid, read outside the write lock
            row = db.execute("SELECT rowid FROM cel WHERE rowid > ? AND rowid <= ? "
                             "ORDER BY rowid LIMIT 1 OFFSET ?", (low, bound, batch - 1)).fetchone()
            high = bound if row is None else int(row[0])
            began = time.monotonic()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:  # busy past our timeout: Asterisk first
                result.busy_retries += 1
                time.sleep(pause_s)
                if result.busy_retries > max_busy_retries:
                    log.warning("CEL record %s: busy, pruning stops at row %d (%s); the next "
                                "retention run goes on", path, low, exc)
                    break
                continue
            try:
                cursor = db.execute(
                    "DELETE FROM cel WHERE rowid > ? AND rowid <= ? "
                    "AND CAST(eventtime AS REAL) < ? AND NOT EXISTS ("
                    " SELECT 1 FROM temp.keep k WHERE cel.uniqueid = k.id OR cel.linkedid = k.id"
                    " OR cel.uniqueid LIKE 'op-' || k.id || '-%')",
                    (low, high, before_epoch))
                db.execute("COMMIT")
            except sqlite3.Error:
                db.execute("ROLLBACK")
                raise
            result.deleted += max(cursor.rowcount, 0)
            result.transactions += 1
            low = high
            time.sleep(max(pause_s, 4 * (time.monotonic() - began)))  # Asterisk's turn
        with contextlib.suppress(sqlite3.Error):  # never waits for readers or the writer
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()
    log.info("CEL record %s: %d row(s) older than %.0f deleted in %d transaction(s), rows of "
             "%d live call(s) kept", path, result.deleted, before_epoch, result.transactions,
             result.live_kept)
    return result
