"""The local write journal: durable, ordered, replayed exactly once (SQLite main database)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session

from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.migrate import upgrade
from ari_app.tickets.models import CallEvent, CallRecord, JournalApplied, table
from ari_app.tickets.writer import Journal, Writer, core, insert_later


async def _writer(tmp_path: Path, url: str) -> tuple[Writer, list[dict[str, Any]]]:
    engine = make_engine(url)
    writer = Writer(sessions(engine), tmp_path / "journal.db", node="n1", retry_initial=0.01)
    seen: list[dict[str, Any]] = []

    def apply(s: Session, p: dict[str, Any]) -> str:
        seen.append(p)
        s.add(CallRecord(channel_id=p["id"], site="t", started_at=p["at"]))
        return str(p["id"])

    def broken(s: Session, p: dict[str, Any]) -> None:
        raise ValueError("a bug, not an outage")

    writer.register("rec", apply)
    writer.register("broken", broken)
    return writer, seen


async def test_journal_survives_a_crash_and_replays_in_order_without_duplicates(
    tmp_path: Path,
) -> None:
    url = await _main_db(tmp_path)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    first, _ = await _writer(tmp_path, url)
    for i in range(5):
        first.submit("rec", {"id": f"c{i}", "at": at})
    first.close()  # "crash": nothing was applied yet, the entries are on disk
    assert Journal(tmp_path / "journal.db").size == 5

    second, seen = await _writer(tmp_path, url)
    refs: list[Any] = []
    second.submit("rec", {"id": "c5", "at": at}, refs.append)
    second.submit("broken", {"x": 1})
    await _drained(second)
    # The batch with the bad entry was rolled back and re-applied one by one: the appliers may
    # run twice, the database must hold each write once and in order (checked below).
    assert [p["id"] for p in seen][-6:] == [f"c{i}" for i in range(6)]
    assert seen[0]["at"] == at  # datetimes come back as aware datetimes
    assert refs == ["c5"] and second.failed == ["broken#7"]
    dead = second.journal.db.execute("SELECT kind, error FROM dead").fetchall()
    assert dead == [("broken", "ValueError: a bug, not an outage")]
    assert second.backlog == 0
    async with second.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
    assert ids == [f"c{i}" for i in range(6)]
    # Re-applying an entry already recorded as applied (crash before the local delete) is a no-op.
    second.journal.append("rec", {"id": "c0", "at": at})
    second.journal.db.execute("UPDATE entries SET seq = 1")
    task = asyncio.create_task(second.run())
    second.last_seq = 1
    second._wakeup.set()
    await asyncio.wait_for(_until_empty(second), 10)
    task.cancel()
    async with second.sessions() as s:
        assert len((await s.scalars(select(CallRecord))).all()) == 6


async def _main_db(tmp_path: Path) -> str:
    """A migrated SQLite main database; its URL."""
    url = f"sqlite+aiosqlite:///{tmp_path}/main.db"
    await asyncio.to_thread(upgrade, url)
    return url


async def _drained(writer: Writer) -> None:
    """Run the writer until everything journaled so far is in the database."""
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    task.cancel()


async def _until_empty(writer: Writer) -> None:
    while writer.backlog:
        writer._progress.clear()
        await writer._progress.wait()


async def test_a_burst_is_applied_in_one_transaction_and_a_bad_write_in_it_costs_only_itself(
    tmp_path: Path,
) -> None:
    url = await _main_db(tmp_path)
    writer, _ = await _writer(tmp_path, url)
    commits: list[int] = []
    event.listen(writer.write_engine, "commit", lambda _c: commits.append(1))
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    for i in range(20):
        writer.submit("rec", {"id": f"b{i}", "at": at})
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    assert len(commits) == 1  # 20 writes, one transaction
    commits.clear()
    for i in range(20, 25):
        writer.submit("rec", {"id": f"b{i}", "at": at})
    writer.submit("broken", {"x": 1})
    for i in range(25, 30):
        writer.submit("rec", {"id": f"b{i}", "at": at})
    await writer.flush(10)
    task.cancel()
    assert writer.failed == ["broken#26"]
    async with writer.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
    assert ids == [f"b{i}" for i in range(30)]
    assert len(commits) == 10  # the refused batch fell back to one transaction per good write
    writer.close()


async def test_a_commit_whose_reply_was_lost_is_not_applied_again_on_retry(
    tmp_path: Path,
) -> None:
    """The writer keeps its journal's mark in memory; a failed commit makes it read it again."""
    url = await _main_db(tmp_path)
    writer, seen = await _writer(tmp_path, url)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    task = asyncio.create_task(writer.run())
    writer.submit("rec", {"id": "c0", "at": at})
    await writer.flush(10)  # the writer has read and moved its mark
    lost: list[int] = []

    def reply_lost(_session: Session) -> None:  # the COMMIT landed, its reply did not
        if not lost:
            lost.append(1)
            raise sa_exc.OperationalError("COMMIT", {}, ConnectionResetError("reply lost"))

    assert writer._sync is not None  # SQLite: the writer's own sessions
    event.listen(writer._sync, "after_commit", reply_lost)
    writer.submit("rec", {"id": "c1", "at": at})
    await writer.flush(10)
    task.cancel()
    assert lost == [1] and writer.failed == []
    assert [p["id"] for p in seen] == ["c0", "c1"]  # the retry skipped what had landed
    async with writer.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
        marks = list((await s.scalars(select(JournalApplied.seq))).all())
    assert ids == ["c0", "c1"] and marks == [2]
    writer.close()


def test_an_appended_write_is_fsynced_off_the_callers_thread(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.db")
    seqs = [journal.append("rec", {"n": n}) for n in range(50)]
    assert journal.wait_synced(seqs[-1], timeout=10)
    assert journal.synced_seq >= seqs[-1] and 1 <= journal.syncs <= 50
    journal.close()
    reopened = Journal(tmp_path / "j.db")
    assert [p["n"] for _s, _k, p in reopened.pending()] == list(range(50))
    reopened.close()


async def test_a_new_journal_file_is_a_new_node_so_its_first_entries_are_not_taken_as_applied(
    tmp_path: Path,
) -> None:
    url = await _main_db(tmp_path)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    first, _ = await _writer(tmp_path, url)
    for i in range(3):
        first.submit("rec", {"id": f"old{i}", "at": at})
    await _drained(first)
    first.close()
    for leftover in tmp_path.glob("journal.db*"):  # the journal file is lost or cleared
        leftover.unlink()
    second, _ = await _writer(tmp_path, url)
    assert second.node != first.node  # seq 1 of the new file is not seq 1 of the old one
    second.submit("rec", {"id": "new0", "at": at})
    second.submit("rec", {"id": "new1", "at": at})
    await _drained(second)
    async with second.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
    assert ids == ["old0", "old1", "old2", "new0", "new1"]
    second.close()


async def test_a_journal_from_before_ids_keeps_its_node_and_its_applied_entries(
    tmp_path: Path,
) -> None:
    """Upgrading must not re-apply an entry that was applied but not yet removed."""
    url = await _main_db(tmp_path)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    legacy = sqlite3.connect(tmp_path / "journal.db")
    legacy.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT "
                   "NULL, payload TEXT NOT NULL, created REAL NOT NULL)")
    for i in range(2):
        legacy.execute("INSERT INTO entries (kind, payload, created) VALUES ('rec', ?, 0)",
                       (json.dumps({"id": f"c{i}", "at": {"$dt": at.isoformat()}}),))
    legacy.commit()
    legacy.close()
    engine = make_engine(url)
    async with sessions(engine)() as s, s.begin():  # c0 reached the database before the upgrade
        s.add(CallRecord(channel_id="c0", site="t", started_at=at))
        s.add(JournalApplied(node="n1", seq=1))
    writer, _ = await _writer(tmp_path, url)
    assert writer.node == "n1"
    await _drained(writer)
    async with writer.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
        marks = (await s.execute(select(JournalApplied.node, JournalApplied.seq))).all()
    assert ids == ["c0", "c1"]
    assert [tuple(m) for m in marks] == [("n1", 2)]  # one high-water mark row per journal
    writer.close()


def _pg_error(cls: type[Exception], message: str) -> sa_exc.DBAPIError:
    """An asyncpg error as SQLAlchemy hands it to us (a DBAPIError over asyncpg's own)."""
    orig = cls(message)
    return sa_exc.DBAPIError("INSERT ...", {}, orig)


def test_database_errors_are_classified_by_what_they_are() -> None:
    import asyncpg.exceptions as pg

    from ari_app.tickets.writer import classify

    transient = [
        _pg_error(pg.CannotConnectNowError, "the database system is shutting down"),
        _pg_error(pg.CannotConnectNowError, "the database system is starting up"),
        _pg_error(pg.AdminShutdownError, "terminating connection due to administrator command"),
        _pg_error(pg.SerializationError, "could not serialize access"),
        _pg_error(pg.DeadlockDetectedError, "deadlock detected"),
        _pg_error(pg.TooManyConnectionsError, "too many clients"),
        _pg_error(pg.ConnectionDoesNotExistError, "connection was closed"),
        pg.CannotConnectNowError("the database system is starting up"),  # unwrapped, at connect
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionResetError(104, "Connection reset by peer"),
        sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached"),
        sa_exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked")),
    ]
    permanent = [
        _pg_error(pg.UniqueViolationError, "duplicate key value violates unique constraint"),
        _pg_error(pg.StringDataRightTruncationError, "value too long for type varchar(16)"),
        _pg_error(pg.UndefinedColumnError, "column \"x\" does not exist"),
        sa_exc.IntegrityError("INSERT ...", {}, sqlite3.IntegrityError("UNIQUE failed")),
        sa_exc.OperationalError("INSERT ...", {}, sqlite3.OperationalError("no such table: x")),
        KeyError("tickets has no column 'categroy'"),
        ValueError("a bug, not an outage"),
    ]
    assert [classify(e)[0] for e in transient] == [True] * len(transient)
    assert [classify(e)[0] for e in permanent] == [False] * len(permanent)
    assert "57P03" in classify(transient[0])[1]


async def test_a_refused_opening_holds_its_calls_later_writes_until_retried_after_a_fix(
    tmp_path: Path,
) -> None:
    """The outage bug: one refused write must not take the call's later writes with it."""
    url = await _main_db(tmp_path)
    engine = make_engine(url)
    writer = Writer(sessions(engine), tmp_path / "journal.db", node="n1", retry_initial=0.01)
    broken = {"c1"}
    changes: list[tuple[str, str]] = []

    def opened(s: Session, p: dict[str, Any]) -> None:
        if p["channel"] in broken:
            raise ValueError("refused (a bug in the build, fixed later)")
        s.add(CallRecord(channel_id=p["channel"], site="t", started_at=p["at"]))

    def changed(s: Session, p: dict[str, Any]) -> None:
        row = s.scalars(select(CallRecord).where(CallRecord.channel_id == p["channel"])).one()
        row.end_reason = p["what"]  # fails with NoResultFound if its opening is missing
        changes.append((p["channel"], p["what"]))

    writer.register("open", opened, holds_later=True)
    writer.register("change", changed)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    for channel in ("c0", "c1", "c2"):
        writer.submit("open", {"channel": channel, "at": at})
    for what in ("menu", "ended"):
        for channel in ("c0", "c1", "c2"):
            writer.submit("change", {"channel": channel, "what": what})
    await _drained(writer)
    assert changes == [("c0", "menu"), ("c2", "menu"), ("c0", "ended"), ("c2", "ended")]
    dead = writer.journal.dead_entries()
    assert [(d["seq"], d["kind"], d["key"], d["held_by"]) for d in dead] == [
        (2, "open", "c1", None), (5, "change", "c1", 2), (8, "change", "c1", 2)]
    assert "waiting behind refused write #2" in dead[1]["error"]
    # the fix is deployed; the admin runs `siaga112 journal retry`
    broken.clear()
    moved = writer.journal.retry_dead()
    assert [(old, kind) for old, _new, kind in moved] == [(2, "open"), (5, "change"),
                                                           (8, "change")]
    writer.last_seq = max(new for _o, new, _k in moved)
    await _drained(writer)
    assert changes[-2:] == [("c1", "menu"), ("c1", "ended")]
    assert writer.journal.dead_entries() == [] and writer.backlog == 0
    async with writer.sessions() as s:
        rows = (await s.scalars(select(CallRecord).order_by(CallRecord.channel_id))).all()
    assert [(r.channel_id, r.end_reason) for r in rows] == [("c0", "ended"), ("c1", "ended"),
                                                            ("c2", "ended")]
    writer.close()
    await engine.dispose()


def test_siaga112_journal_lists_dead_writes_and_retry_puts_them_back_in_order(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    path = tmp_path / "journal" / "siaga112-jepara.db"
    journal = Journal(path)
    for what in ("open", "menu", "ended"):
        journal.append("ticket.change", {"channel": "c9", "what": what})
    journal.dead(1, "ValueError: refused", "c9")
    journal.dead(2, "waiting behind refused write #1", "c9", 1)
    journal.dead(3, "waiting behind refused write #1", "c9", 1)
    journal.done_upto(3)
    journal.close()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ari_app.cli", "--site", "jepara",
                               "--var-dir", str(tmp_path), "journal", *args],
                              capture_output=True, text=True, timeout=60, check=True)

    listed = cli().stdout
    assert "0 write(s) waiting for the database, 1 refused, 2 held behind a refused one" in listed
    assert "#1" in listed and "call=c9" in listed and "ValueError: refused" in listed
    retried = cli("retry").stdout
    assert "3 write(s) queued again" in retried
    journal = Journal(path)
    try:
        entries = journal.pending()
        assert [(k, p.get("what")) for _s, k, p in entries] == [
            ("ticket.change", "open"), ("ticket.change", "menu"), ("ticket.change", "ended"),
            ("journal.notice", None)]  # and a line for the ticket's audit saying so
        assert entries[-1][2]["ticket_channel"] == "c9" and journal.dead_entries() == []
    finally:
        journal.close()


async def test_an_idle_writer_always_stops_when_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cancel that lands while the idle wait times out still stops the writer (on 3.11,
    asyncio.wait_for turned such a cancel into a TimeoutError, and the writer went on: a test
    teardown, or an app's stop, then waited for it forever)."""
    import ari_app.tickets.writer as writer_module

    monkeypatch.setattr(writer_module, "IDLE_POLL_S", 0.0005)  # a timeout at every turn
    writer, _ = await _writer(tmp_path, await _main_db(tmp_path))
    rng = random.Random(112)
    try:
        for attempt in range(300):
            task = asyncio.create_task(writer.run())
            await asyncio.sleep(rng.uniform(0, 0.002))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert task in done and task.cancelled(), f"attempt {attempt}: the writer went on"
    finally:
        writer.close()


async def test_under_load_partial_batches_wait_their_gap_and_a_full_batch_goes_at_once(
    tmp_path: Path,
) -> None:
    """A batch (one transaction) costs the writer about as much as several writes: while
    writes keep coming, a partial batch begins at most every ``batch_gap`` seconds, but a full
    batch (a backlog) never waits, and a lone write after idle lands after the short window."""
    url = await _main_db(tmp_path)
    writer = Writer(sessions(make_engine(url)), tmp_path / "journal.db", node="n1",
                    batch_size=10, batch_gap=30.0)
    writer.register("rec", lambda s, p: s.add(CallRecord(channel_id=p["id"], site="t",
                                                           started_at=p["at"])))
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    task = asyncio.create_task(writer.run())
    try:
        writer.submit("rec", {"id": "w0", "at": at})  # after idle: within the window
        await writer.flush(10)
        assert writer.batches == 1
        for i in range(1, 11):  # a full batch right after: not held for the 30 s gap
            writer.submit("rec", {"id": f"w{i}", "at": at})
        await writer.flush(10)
        assert writer.batches == 2 and writer.backlog == 0
        writer.submit("rec", {"id": "w11", "at": at})  # a partial one: waits for its gap
        with pytest.raises(TimeoutError):
            await writer.flush(0.5)
        assert writer.batches == 2 and writer.backlog == 1
    finally:
        task.cancel()
        writer.close()

    # Paced: 60 writes arriving over 0.6 s, with a 0.2 s gap, go in a handful of transactions
    # (with the old 50 ms window alone they took one each 50-60 ms: about a dozen).
    paced = Writer(sessions(make_engine(url)), tmp_path / "journal2.db", node="n2",
                   batch_gap=0.2)
    paced.register("rec", lambda s, p: s.add(CallRecord(channel_id=p["id"], site="t",
                                                          started_at=p["at"])))
    task = asyncio.create_task(paced.run())
    try:
        for i in range(60):
            paced.submit("rec", {"id": f"p{i}", "at": at})
            await asyncio.sleep(0.01)
        await paced.flush(10)
        assert paced.applied == 60 and paced.batches <= 6
    finally:
        task.cancel()
        paced.close()
    async with paced.sessions() as s:
        ids = list((await s.scalars(select(CallRecord.channel_id).order_by(CallRecord.id))).all())
    assert ids == ["w0", *[f"w{i}" for i in range(1, 11)], *[f"p{i}" for i in range(60)]]


def test_writes_made_together_share_one_commit_and_an_error_keeps_them(tmp_path: Path) -> None:
    """A call event's writes (the call row, the ticket, its screening) are one commit: another
    reader sees none of them during the block and all of them after it; a failure inside the
    block keeps what was appended before it; and the syncer makes them durable as one."""
    journal = Journal(tmp_path / "journal.db")
    other = sqlite3.connect(tmp_path / "journal.db")
    try:
        def seen() -> int:
            return int(other.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

        with journal.group():
            journal.append("a", {"n": 1})
            with journal.group():  # nested: still the outer block's commit
                journal.append("b", {"n": 2})
            journal.append("c", {"n": 3})
            assert seen() == 0 and journal.appended_seq == 0
        assert seen() == 3 and journal.appended_seq == 3
        assert journal.wait_synced(3, timeout=10)
        with pytest.raises(RuntimeError), journal.group():
            journal.append("d", {"n": 4})
            raise RuntimeError("the call's code failed half-way")
        assert seen() == 4 and journal.appended_seq == 4
        assert [k for _, k, _ in journal.pending()] == ["a", "b", "c", "d"]
        journal.append("e", {"n": 5})  # outside a block: committed at once, as before
        assert seen() == 5
    finally:
        other.close()
        journal.close()


async def test_rows_inserted_later_go_in_one_statement_in_order_and_a_bad_one_costs_its_write(
    tmp_path: Path,
) -> None:
    """Audit lines are inserted at the end of their batch, all in one statement: in the order
    the writes made them, atomic with the batch, and a row the database refuses sends only its
    own write to the dead table, as a refused write always did."""
    url = await _main_db(tmp_path)
    writer = Writer(sessions(make_engine(url)), tmp_path / "journal.db", node="n1")
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    calls, events = table(CallRecord), table(CallEvent)
    writer.register("call", lambda s, p: core(s).execute(insert(calls), {
        "channel_id": p["ch"], "site": "t", "started_at": at}))
    writer.register("note", lambda s, p: insert_later(s, events, {
        "channel_id": p["ch"], "seq": p["seq"], "at": at, "kind": p["kind"], "detail": ""}))
    inserts: list[tuple[bool, int]] = []  # (executemany, rows) of each insert into call_events

    def seen(_conn: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
        if statement.startswith("INSERT INTO call_events"):
            inserts.append((many, len(params) if many else 1))

    event.listen(writer.write_engine, "before_cursor_execute", seen)
    writer.submit("call", {"ch": "c1"})
    for n in (1, 2, 3):
        writer.submit("note", {"ch": "c1", "seq": n, "kind": f"n{n}"})
        writer.submit("call", {"ch": f"x{n}"})  # other writes between them
    await _drained(writer)
    assert inserts == [(True, 3)] and writer.batches == 1

    inserts.clear()
    writer.submit("note", {"ch": "c1", "seq": 4, "kind": "n4"})
    writer.submit("note", {"ch": "c1", "seq": 2, "kind": "again"})  # refused: seq 2 is taken
    writer.submit("note", {"ch": "c1", "seq": 5, "kind": "n5"})
    await _drained(writer)
    assert writer.failed == ["note#9"]
    assert inserts[0] == (True, 3)  # the batch, refused as a whole, then one write at a time
    async with writer.sessions() as s:
        kinds = list((await s.scalars(select(CallEvent.kind).order_by(CallEvent.id))).all())
    assert kinds == ["n1", "n2", "n3", "n4", "n5"]
    writer.close()
