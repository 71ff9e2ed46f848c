"""Retention prunes Asterisk's CEL file while a real Asterisk keeps writing it (issue 18).

Callers reach the "number not in service" branch (Answer, prompt, Hangup: an ANSWER and a
HANGUP row each, written by cel_sqlite3_custom); meanwhile old rows are added and pruned over
and over in small batches, each its own transaction against Asterisk's. Every row Asterisk
wrote is still there afterwards, every old row is gone except a live call's.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from ari_app.pbx.cel import cel_path, prune_cel
from ari_app.testing.sipp import run_sipp
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import AdminAudit, Ticket
from ari_app.tickets.retention import run_retention
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.integration

CALLS = 40
LIVE = "1700000000.77"  # a call the database still holds as live (no end time)


def seed_old(path: Path, start: int, count: int, at: float) -> None:
    """Old rows in short transactions: a second writer besides Asterisk."""
    db = sqlite3.connect(path, timeout=5.0)
    try:
        for i in range(start, start + count, 100):
            time.sleep(0.01)  # Asterisk's turn: SQLite's busy wait is not fair
            with db:
                db.executemany(
                    "INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid, peer, "
                    "eventextra) VALUES ('HANGUP', ?, 'PJSIP/carrier-x', ?, ?, '', '{}')",
                    [(f"{at:.6f}", f"old.{j}", f"old.{j}") for j in range(i, min(i + 100, start + count))])
    finally:
        db.close()


def rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        return list(db.execute(sql, params))
    finally:
        db.close()


async def test_pruning_while_asterisk_writes_loses_no_new_row_and_keeps_live_calls(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(start_app=False)
    cel = cel_path(stack.var_dir)
    # Asterisk makes the table on its first event: one call first
    first = await stack.call("caller_listen.xml", service="999", keys={"caller": "0811000"})
    assert first.ok, first.errors
    async with asyncio.timeout(10):
        while not rows(cel, "SELECT 1 FROM cel WHERE eventtype = 'HANGUP' LIMIT 1"):  # noqa: ASYNC110 - Asterisk writes the file
            await asyncio.sleep(0.05)
    old = (datetime.now(UTC) - timedelta(days=40)).timestamp()
    # a live call's old rows, its operator leg's, and a row linked to it: all kept
    db = sqlite3.connect(cel, timeout=5.0)
    with db:
        db.executemany("INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid, "
                       "peer, eventextra) VALUES (?, ?, '', ?, ?, '', '{}')",
                       [("ANSWER", f"{old:.6f}", LIVE, LIVE),
                        ("ANSWER", f"{old:.6f}", f"op-{LIVE}-0a1b2c3d", f"op-{LIVE}-0a1b2c3d"),
                        ("HANGUP", f"{old:.6f}", "1700000000.78", LIVE)])
    db.close()
    keep = [LIVE]
    stop = threading.Event()
    seeded, deleted, rounds = [0], [0], [0]

    def churn() -> None:
        """Seed and prune old rows, in batches of 20, until the callers are done."""
        while not stop.is_set():
            seed_old(cel, seeded[0], 1000, old)
            seeded[0] += 1000
            deleted[0] += prune_cel(cel, old + 1, keep, batch=20).deleted
            rounds[0] += 1

    worker = asyncio.create_task(asyncio.to_thread(churn))
    started = time.monotonic()
    load = await run_sipp(stack.caller("caller_listen.xml", service="999", calls=CALLS, rate=10,
                                       limit=CALLS, keys={"caller": "0811999"}, timeout_s=90))
    stop.set()
    await worker
    assert load.ok, load.errors
    assert rounds[0] >= 2, "pruning did not overlap Asterisk's writes"
    assert deleted[0] == seeded[0]
    # every call Asterisk took is in its record: an answer and a hangup, none lost to our locks
    hangups = ("SELECT 1 FROM cel WHERE eventtype = 'HANGUP' AND uniqueid NOT LIKE 'old.%' "
               "AND uniqueid NOT LIKE '17000%' AND uniqueid NOT LIKE 'op-%'")
    async with asyncio.timeout(10):
        while len(rows(cel, hangups)) < CALLS + 1:  # noqa: ASYNC110 - Asterisk writes the file
            await asyncio.sleep(0.05)
    new = rows(cel, "SELECT uniqueid, eventtype FROM cel WHERE uniqueid NOT LIKE 'old.%' "
                    "AND uniqueid NOT LIKE '17000%' AND uniqueid NOT LIKE 'op-%'")
    by_call: dict[str, list[str]] = {}
    for uniqueid, kind in new:
        by_call.setdefault(str(uniqueid), []).append(str(kind))
    assert len(by_call) == CALLS + 1
    assert all(sorted(kinds) == ["ANSWER", "HANGUP"] for kinds in by_call.values()), by_call
    assert rows(cel, "SELECT count(*) FROM cel WHERE uniqueid LIKE 'old.%'") == [(0,)]
    assert len(rows(cel, "SELECT 1 FROM cel WHERE uniqueid LIKE '%1700000000.7%' "
                         "OR linkedid = ?", LIVE)) == 3
    messages = (stack.var_dir / "asterisk" / "log" / "messages").read_text(errors="replace")
    assert "cel_sqlite3_custom" not in "\n".join(
        line for line in messages.splitlines() if "ERROR" in line or "WARNING" in line)
    elapsed = time.monotonic() - started

    # The retention run does it too, keeping the live call the database holds, and audits it.
    seed_old(cel, 10**6, 250, old)
    engine = make_engine(stack.db_url)
    try:
        maker = sessions(engine)
        async with maker() as s, s.begin():
            s.add(Ticket(reference="JPR-LIVE-1", site=stack.site.code, channel_id=LIVE,
                         arrived_at=datetime.fromtimestamp(old, UTC), status="in_call"))
        report = await run_retention(maker, stack.site.retention, datetime.now(UTC),
                                     actor="test", site_code=stack.site.code, cel=cel)
        async with maker() as s:
            entry = (await s.scalars(select(AdminAudit).where(AdminAudit.entity == "retention")
                                     .order_by(AdminAudit.id.desc()))).first()
    finally:
        await engine.dispose()
    assert (report.cel_rows_deleted, report.cel_live_calls_kept, report.errors) == (250, 1, 0)
    assert entry is not None
    after = json.loads(entry.after)
    assert after["cel_rows_deleted"] == 250 and after["cel"]["rule"] == "cel_days=30"
    assert len(rows(cel, "SELECT 1 FROM cel WHERE uniqueid LIKE '%1700000000.7%' "
                         "OR linkedid = ?", LIVE)) == 3
    assert len(rows(cel, "SELECT 1 FROM cel WHERE uniqueid NOT LIKE 'old.%' "
                         "AND uniqueid NOT LIKE '17000%' AND uniqueid NOT LIKE 'op-%'")) == \
        len(new)
    assert elapsed < 120
