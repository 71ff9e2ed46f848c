"""Pruning the CEL file with a concurrent writer standing in for Asterisk (real SQLite, WAL).

The writer behaves as cel_sqlite3_custom does: one autocommitted INSERT per event, a 1 s busy
timeout, and an event lost if the file stays locked past it. The integration test
(tests/integration/test_cel_prune.py) does the same against a real Asterisk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from ari_app.pbx.cel import prune_cel

COLUMNS = "eventtype, eventtime, channame, uniqueid, linkedid, peer, eventextra"
OLD, NEW = 1_700_000_000.0, 1_800_000_000.0


def make_cel(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"CREATE TABLE cel (id INTEGER PRIMARY KEY AUTOINCREMENT, {COLUMNS})")
    db.commit()
    db.close()


def insert(db: sqlite3.Connection, rows: list[tuple[str, float, str, str]]) -> None:
    with db:
        db.executemany(f"INSERT INTO cel ({COLUMNS}) VALUES (?, ?, '', ?, ?, '', '{{}}')",
                       [(kind, f"{at:.6f}", uid, linked) for kind, at, uid, linked in rows])


def test_missing_file_or_table_prunes_nothing(tmp_path: Path) -> None:
    assert prune_cel(tmp_path / "none.db", NEW, []).deleted == 0
    sqlite3.connect(tmp_path / "empty.db").close()
    assert prune_cel(tmp_path / "empty.db", NEW, []).deleted == 0


def test_old_rows_go_but_a_live_calls_own_leg_and_linked_rows_stay(tmp_path: Path) -> None:
    path = tmp_path / "master.db"
    make_cel(path)
    db = sqlite3.connect(path)
    insert(db, [("ANSWER", OLD, "1.1", "1.1"), ("HANGUP", OLD, "1.1", "1.1"),
                ("ANSWER", OLD, "op-1.1-0a1b2c3d", "op-1.1-0a1b2c3d"),
                ("ANSWER", OLD, "1.2", "1.2"), ("ANSWER", OLD, "op-1.2-0a1b2c3d", "x"),
                ("HANGUP", OLD, "9.9", "1.2"), ("ANSWER", OLD, "1.22", "1.22"),
                ("ANSWER", NEW, "2.1", "2.1")])
    result = prune_cel(path, OLD + 1, ["1.2"], batch=2, pause_s=0)
    left = sorted(r[0] for r in db.execute("SELECT uniqueid FROM cel"))
    db.close()
    assert left == ["1.2", "2.1", "9.9", "op-1.2-0a1b2c3d"]  # 1.22 is not 1.2's
    assert (result.deleted, result.live_kept) == (4, 1)
    assert result.transactions >= 2  # in batches, each its own transaction


def test_pruning_while_another_writer_commits_every_event_loses_none_of_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "master.db"
    make_cel(path)
    db = sqlite3.connect(path)
    for start in range(0, 20000, 1000):
        insert(db, [("HANGUP", OLD, f"old.{i}", f"old.{i}") for i in range(start, start + 1000)])
    db.close()
    written, lost = [], []
    stop = threading.Event()

    def asterisk() -> None:
        conn = sqlite3.connect(path, timeout=1.0, isolation_level=None)  # autocommit
        n = 0
        while not stop.is_set():
            uid = f"new.{n}"
            try:
                conn.execute(f"INSERT INTO cel ({COLUMNS}) VALUES "
                             "('HANGUP', ?, '', ?, ?, '', '{}')", (f"{NEW:.6f}", uid, uid))
                written.append(uid)
            except sqlite3.OperationalError:
                lost.append(uid)
            n += 1
            time.sleep(0.001)
        conn.close()

    writer = threading.Thread(target=asterisk)
    writer.start()
    try:
        result = prune_cel(path, OLD + 1, [], batch=100)
    finally:
        stop.set()
        writer.join(10)
    assert lost == []
    assert result.deleted == 20000 and result.transactions >= 200
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM cel WHERE uniqueid LIKE 'old.%'").fetchone() == (0,)
    new = {r[0] for r in db.execute("SELECT uniqueid FROM cel WHERE uniqueid LIKE 'new.%'")}
    db.close()
    assert len(written) > 100 and new == set(written)  # they overlapped; every row is there
