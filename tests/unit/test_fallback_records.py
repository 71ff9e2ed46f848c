"""Fallback records (calls the dialplan took while the app was down) as tickets: the operator by
name, when they answered, the stage reached; and the 0009 migration mending old ones."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from ari_app.pbx.cel import endpoint_name
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.fallback import FallbackImporter
from ari_app.tickets.migrate import upgrade
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.tickets.service import TicketService
from ari_app.tickets.writer import Writer
from tests.conftest import BACKENDS, _create_pg_database, _drop_pg_database

AT = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)


def test_the_operator_is_named_by_endpoint_not_by_channel() -> None:
    assert endpoint_name("PJSIP/op29-00000241") == "op29"
    assert endpoint_name("PJSIP/op-north-2-0000000a") == "op-north-2"
    assert endpoint_name("op7") == "op7"
    assert endpoint_name("") == ""


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[tuple[Writer, TicketService]]:
    """A migrated SQLite database, the app's write journal on it and the tickets service."""
    url = f"sqlite+aiosqlite:///{tmp_path}/main.db"
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    writer = Writer(sessions(engine), tmp_path / "journal.db", node="t")
    yield writer, TicketService(writer, "jepara", "JPR", ZoneInfo("Asia/Jakarta"))
    writer.close()
    await engine.dispose()


async def test_an_answered_fallback_call_names_the_operator_and_when_they_answered(
    tmp_path: Path, journal: tuple[Writer, TicketService],
) -> None:
    writer, tickets = journal
    records = tmp_path / "fallback" / "calls.jsonl"
    records.parent.mkdir()
    end = AT + timedelta(seconds=40)
    lines = [{"event": "start", "at": AT.isoformat(), "uniqueid": "1.1", "caller": "0812"},
             {"event": "end", "at": end.isoformat(), "uniqueid": "1.1", "caller": "0812",
              "dialstatus": "ANSWER", "answered_s": "30", "operator": "PJSIP/op29-00000241"},
             {"event": "start", "at": AT.isoformat(), "uniqueid": "1.2", "caller": "0813"},
             {"event": "end", "at": end.isoformat(), "uniqueid": "1.2", "caller": "0813",
              "dialstatus": "NOANSWER", "answered_s": "", "operator": ""}]
    records.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert FallbackImporter(records, writer, tickets).import_new() == 4
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    task.cancel()
    async with writer.sessions() as s:
        answered, unanswered = (await s.scalars(select(Ticket).order_by(Ticket.id))).all()
    assert answered.operator == "op29" and answered.status == "in_call"
    assert answered.operator_answered_at == end - timedelta(seconds=30)
    assert answered.ended_at == end and not answered.callback_needed
    assert unanswered.operator is None and unanswered.status == "abandoned"
    assert unanswered.callback_needed and unanswered.end_reason == "fallback unanswered: NOANSWER"


@pytest.fixture(params=BACKENDS)
async def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database (no migrations yet) on each backend in use."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/main.db"
        return
    raw = await _create_pg_database()
    try:
        yield raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        await _drop_pg_database(raw)


async def test_migration_0009_mends_fallback_tickets_already_stored(empty_db: str) -> None:
    url = empty_db
    await asyncio.to_thread(upgrade, url, "0012")  # the schema before 0009
    engine = make_engine(url)
    end = AT + timedelta(seconds=40)
    async with sessions(engine)() as s, s.begin():
        for i, operator in enumerate(("PJSIP/op29-00000241", "op3")):
            s.add(Ticket(reference=f"JPR-20250519-000{i + 1}", site="jepara",
                         channel_id=f"1.{i}", arrived_at=AT, ended_at=end, status="new",
                         operator=operator))
        await s.flush()
        s.add(TicketAudit(ticket_id=1, at=end, actor="system", action="fallback ended",
                          detail=json.dumps({"answered_s": "12"})))
    await asyncio.to_thread(upgrade, url)
    async with sessions(engine)() as s:
        mended, untouched = (await s.scalars(select(Ticket).order_by(Ticket.id))).all()
        trail = (await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == 1)
                                 .order_by(TicketAudit.id))).all()
    assert (mended.operator, mended.status) == ("op29", "in_call")
    assert mended.operator_answered_at == end - timedelta(seconds=12)
    assert (untouched.operator, untouched.status, untouched.operator_answered_at) == \
        ("op3", "new", None)
    assert trail[-1].action == "migrated 0009"
    assert json.loads(trail[-1].detail)["before"]["operator"] == "PJSIP/op29-00000241"
    # and back: downgrade restores the stored names
    await asyncio.to_thread(_downgrade, url, "0012")
    async with sessions(engine)() as s:
        names = (await s.execute(sa.text("SELECT operator FROM tickets ORDER BY id"))).all()
    assert [n[0] for n in names] == ["PJSIP/op29-00000241", "op3"]
    await engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    from ari_app.tickets.migrate import alembic_config

    command.downgrade(alembic_config(url), revision)


@pytest.mark.parametrize(("why", "reason", "policy"), [
    (None, "overload: lines busy (40 callers)", "40 callers on the line"),
    ("slow", "overload: app too slow (ARI)", "ARI requests too slow"),
], ids=["line-full", "ari-slow"])
async def test_a_shed_caller_is_on_the_callback_list_with_the_reason(
    tmp_path: Path, journal: tuple[Writer, TicketService], why: str | None, reason: str,
    policy: str,
) -> None:
    """Refused by the dialplan: the line full (a record without "why", as before it existed),
    or the app's word that ARI was too slow."""
    writer, tickets = journal
    records = tmp_path / "fallback" / "calls.jsonl"
    records.parent.mkdir()
    record = {"event": "overload", "at": AT.isoformat(), "uniqueid": "1.9",
              "caller": "081299990003", "dialled": "112", "limit": "40"}
    records.write_text(json.dumps(record | ({"why": why} if why else {})) + "\n")
    importer = FallbackImporter(records, writer, tickets)
    assert importer.import_new() == 1
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    assert importer.import_new() == 0  # read once
    task.cancel()
    async with writer.sessions() as s:
        [t] = (await s.scalars(select(Ticket))).all()
        [_opened, ended] = (await s.scalars(select(TicketAudit).order_by(TicketAudit.id))).all()
    assert (t.status, t.callback_needed, t.outcome) == ("abandoned", True, "abandoned")
    assert t.end_reason == reason and policy in (t.policy or "")
    assert t.arrived_at == AT and t.ended_at == AT and t.caller_number == "081299990003"
    assert json.loads(ended.detail)["limit"] == "40"
    assert json.loads(ended.detail)["why"] == (why or "full")


async def test_records_are_read_from_the_old_file_and_every_day_file_each_once(
    tmp_path: Path, journal: tuple[Writer, TicketService],
) -> None:
    from agi_scripts.fallback_log import day_file, record
    from ari_app.tickets.fallback import journal_day, journal_files, read_offset

    writer, tickets = journal
    legacy = tmp_path / "fallback" / "calls.jsonl"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps({"event": "start", "at": AT.isoformat(), "uniqueid": "1.0",
                                  "caller": "0811"}) + "\n")
    later = AT + timedelta(days=1)
    for i, at in enumerate((AT, later)):  # the AGI's own writer, by the day of the event
        record(day_file(str(legacy), at), {"event": "start", "at": at.isoformat(),
                                           "uniqueid": f"2.{i}", "caller": "0812"})
    files = journal_files(legacy)
    assert [f.name for f in files] == ["calls.jsonl", "calls-2025-05-19.jsonl",
                                       "calls-2025-05-20.jsonl"]
    assert [journal_day(f) for f in files] == [None, AT.date(), later.date()]
    importer = FallbackImporter(legacy, writer, tickets)
    assert importer.import_new() == 3
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    assert all(read_offset(f) == f.stat().st_size for f in files)
    assert importer.import_new() == 0  # nothing twice
    record(str(files[2]), {"event": "end", "at": later.isoformat(), "uniqueid": "2.1",
                           "caller": "0812", "dialstatus": "NOANSWER"})
    assert importer.import_new() == 1  # only the new line
    await writer.flush(10)
    task.cancel()
    async with writer.sessions() as s:
        found = {t.channel_id: t.status for t in await s.scalars(select(Ticket))}
    assert found == {"1.0": "new", "2.0": "new", "2.1": "abandoned"}
