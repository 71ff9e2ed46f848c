"""Retention (recordings deleted, personal data anonymised, audited; open and held tickets
untouched) and backup/restore round trips, on a real SQLite or PostgreSQL database."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ari_app.admin_audit import record_admin_change
from ari_app.config import Retention
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import (
    AdminAudit,
    CallEvent,
    CallRecord,
    LocationRecord,
    Ticket,
    TicketAudit,
)
from ari_app.tickets.retention import run_retention
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database
from tests.integration.test_admin_cli import cli

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RULES = Retention(recordings_days=30, personal_days=90)


def recordings(var_dir: Path) -> Path:
    path = var_dir / "asterisk" / "spool" / "recording" / "siaga112" / "jepara"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def seed(db_url: str, var_dir: Path, name: str, *, status: str = "resolved",
               ended_days: float, hold: bool = False, callback: bool = False) -> None:
    """One ticket with its call, a recording, a location and audit entries holding the number."""
    number = f"0812{abs(hash(name)) % 10**8:08d}"
    rec = recordings(var_dir) / f"{name}.wav"
    rec.write_bytes(os.urandom(2048))
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            ended = NOW - timedelta(days=ended_days)
            s.add(CallRecord(channel_id=f"ch-{name}", site="jepara", caller_number=number,
                             started_at=ended - timedelta(minutes=3), ended_at=ended))
            await s.flush()
            s.add(CallEvent(channel_id=f"ch-{name}", seq=1, at=ended, kind="answered",
                            detail=json.dumps({"caller": number})))
            t = Ticket(reference=f"JPR-{name}", site="jepara", channel_id=f"ch-{name}",
                       caller_number=number, caller_key="+62" + number[1:], status=status,
                       arrived_at=ended - timedelta(minutes=3), ended_at=ended,
                       recording_path=str(rec), legal_hold=hold, callback_needed=callback,
                       notes=f"caller {number} says the bridge is down")
            s.add(t)
            await s.flush()
            s.add(TicketAudit(ticket_id=t.id, at=ended, actor="system", action="opened",
                              detail=json.dumps({"caller": number})))
            s.add(LocationRecord(ticket_id=t.id, caller_key="+62" + number[1:], source="aml",
                                 latitude=-6.5887, longitude=110.6684, radius_m=50.0,
                                 received_at=ended, raw=f"A\"ML=1;lt=-6.5887;lg=110.6684;{number}"))
    finally:
        await engine.dispose()


async def ticket(db_url: str, name: str) -> tuple[Ticket, list[LocationRecord], list[TicketAudit],
                                                   CallRecord | None]:
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s:
            t = await s.scalar(select(Ticket).where(Ticket.reference == f"JPR-{name}"))
            assert t is not None
            locs = list(await s.scalars(select(LocationRecord).where(LocationRecord.ticket_id == t.id)))
            audit = list(await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == t.id)
                                         .order_by(TicketAudit.id)))
            call = await s.scalar(select(CallRecord).where(CallRecord.channel_id == t.channel_id))
            return t, locs, audit, call
    finally:
        await engine.dispose()


async def test_retention_deletes_old_recordings_and_anonymises_old_closed_tickets_only(
        db_url: str, var_dir: Path) -> None:
    await seed(db_url, var_dir, "old", ended_days=100)          # past both limits
    await seed(db_url, var_dir, "mid", ended_days=40)           # past the recordings limit only
    await seed(db_url, var_dir, "open", status="dispatched", ended_days=100)
    await seed(db_url, var_dir, "held", ended_days=100, hold=True)
    await seed(db_url, var_dir, "cb", status="abandoned", ended_days=100, callback=True)
    await seed(db_url, var_dir, "new", ended_days=10)
    engine = make_engine(db_url)
    try:
        report = await run_retention(sessions(engine), RULES, NOW, actor="test", site_code="jepara")
        again = await run_retention(sessions(engine), RULES, NOW, actor="test", site_code="jepara")
        async with sessions(engine)() as s:
            runs = list(await s.scalars(select(AdminAudit).where(AdminAudit.entity == "retention")))
    finally:
        await engine.dispose()
    assert (report.recordings_deleted, report.tickets_anonymised, report.locations_anonymised) == (2, 1, 1)
    assert (again.recordings_deleted, again.tickets_anonymised) == (0, 0)  # nothing twice
    assert len(runs) == 2 and json.loads(runs[0].after)["recordings_deleted"] == 2

    t, locs, audit, call = await ticket(db_url, "old")
    assert not Path(str(t.recording_path)).exists() and t.recording_deleted_at is not None
    assert t.caller_number == "" and t.caller_key == "" and t.anonymised_at is not None
    assert call is not None and call.caller_number == ""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s:
            events = list(await s.scalars(select(CallEvent).where(CallEvent.channel_id == "ch-old")))
    finally:
        await engine.dispose()
    assert events and all("0812" not in e.detail for e in events)
    assert locs[0].latitude is None and locs[0].raw == "" and locs[0].source == "aml"
    assert "[anonymised]" in t.notes and "0812" not in t.notes
    assert all("0812" not in a.detail for a in audit)
    assert [a.action for a in audit][-2:] == ["recording deleted", "personal data anonymised"]
    deleted = json.loads(audit[-2].detail)
    assert deleted["path"] == t.recording_path and len(deleted["sha256"]) == 64

    t, locs, audit, _ = await ticket(db_url, "mid")
    assert t.recording_deleted_at is not None and not Path(str(t.recording_path)).exists()
    assert t.caller_number.startswith("0812") and locs[0].latitude is not None
    for untouched in ("open", "held", "cb", "new"):
        t, locs, audit, call = await ticket(db_url, untouched)
        assert Path(str(t.recording_path)).exists(), untouched
        assert t.recording_deleted_at is None and t.anonymised_at is None, untouched
        assert t.caller_number.startswith("0812") and locs[0].latitude == -6.5887, untouched
        assert [a.action for a in audit] == ["opened"], untouched


async def test_legal_hold_from_the_cli_is_audited_and_keeps_the_ticket(
        db_url: str, var_dir: Path) -> None:
    await seed(db_url, var_dir, "case", ended_days=100)
    held = await asyncio.to_thread(cli, var_dir, db_url, "retention", "hold", "JPR-case",
                                   "--by", "kejaksaan", "--reason", "court order 12/2026")
    assert held.returncode == 0, held.stderr
    missing = await asyncio.to_thread(cli, var_dir, db_url, "retention", "hold", "JPR-nope",
                                      "--by", "x")
    assert missing.returncode == 1 and "no ticket JPR-nope" in missing.stderr
    engine = make_engine(db_url)
    try:
        report = await run_retention(sessions(engine), RULES, NOW, actor="test", site_code="jepara")
    finally:
        await engine.dispose()
    assert report.recordings_deleted == 0 and report.tickets_anonymised == 0
    t, _, audit, _ = await ticket(db_url, "case")
    assert t.legal_hold and audit[-1].action == "legal hold" and "court order" in audit[-1].detail


# ---- backup and restore -----------------------------------------------------------------------

@pytest.fixture
async def fresh_db_url(db_url: str, tmp_path: Path) -> AsyncIterator[str]:
    """A second, empty database of the same kind: the fresh machine's."""
    if db_url.startswith("sqlite"):
        yield f"sqlite+aiosqlite:///{tmp_path}/fresh-{uuid.uuid4().hex[:6]}.db"
        return
    assert PG_URL
    raw = await _create_pg_database()
    try:
        yield raw.replace("postgresql://", "postgresql+asyncpg://", 1)
    finally:
        await _drop_pg_database(raw)


async def snapshot(db_url: str, var_dir: Path) -> dict[str, Any]:
    """Everything a round trip must keep, with recording paths relative to the var dir."""
    engine = make_engine(db_url)

    def rows(objs: Any, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        return [{c: getattr(o, c) for c in o.__table__.columns.keys() if c not in skip} for o in objs]

    try:
        async with sessions(engine)() as s:
            tickets = rows(await s.scalars(select(Ticket).order_by(Ticket.id)))
            for t in tickets:
                t["recording_path"] = str(Path(t["recording_path"]).relative_to(var_dir.resolve()))
            return {"tickets": tickets,
                    "audit": rows(await s.scalars(select(TicketAudit).order_by(TicketAudit.id))),
                    "locations": rows(await s.scalars(select(LocationRecord)
                                                      .order_by(LocationRecord.id))),
                    # the backup and restore commands audit themselves afterwards
                    "admin_audit": rows(await s.scalars(select(AdminAudit)
                                                        .where(AdminAudit.entity != "backup")
                                                        .order_by(AdminAudit.id))),
                    "recordings": {str(p.relative_to(var_dir)): p.read_bytes() for p in
                                   sorted((var_dir / "asterisk").rglob("*.wav"))}}
    finally:
        await engine.dispose()


async def test_backup_then_restore_on_a_fresh_machine_gives_identical_data(
        db_url: str, fresh_db_url: str, var_dir: Path, tmp_path: Path) -> None:
    for name, days in (("a", 5), ("b", 50), ("c", 500)):
        await seed(db_url, var_dir, name, ended_days=days)
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            await record_admin_change(s, actor="os:admin", entity="agency", key="DAMKAR",
                                      action="set", before={"email": ""}, after={"email": "x@y.id"})
    finally:
        await engine.dispose()
    (var_dir / "secrets").mkdir(exist_ok=True)
    (var_dir / "secrets" / "ari.password").write_text("s3cret\n")
    before = await snapshot(db_url, var_dir)

    target = tmp_path / "backup-1"
    made = await asyncio.to_thread(cli, var_dir, db_url, "backup", str(target))
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["counts"]["tickets"] == 3 and len(manifest["files"]) >= 5
    again = await asyncio.to_thread(cli, var_dir, db_url, "backup", str(target))
    assert again.returncode == 1 and "already exists" in again.stderr

    fresh_var = tmp_path / "fresh-var"
    restored = await asyncio.to_thread(cli, fresh_var, fresh_db_url, "restore", str(target))
    assert restored.returncode == 0, restored.stderr
    after = await snapshot(fresh_db_url, fresh_var)
    assert after == before
    assert (fresh_var / "secrets" / "ari.password").read_text() == "s3cret\n"
    assert stat.S_IMODE((fresh_var / "secrets" / "ari.password").stat().st_mode) == 0o600
    # a second restore onto the now-used machine is refused, and changes nothing
    twice = await asyncio.to_thread(cli, fresh_var, fresh_db_url, "restore", str(target))
    assert twice.returncode == 1 and "fresh machine" in twice.stderr
    assert await snapshot(fresh_db_url, fresh_var) == after


async def test_a_damaged_backup_is_refused_before_anything_is_written(
        db_url: str, fresh_db_url: str, var_dir: Path, tmp_path: Path) -> None:
    await seed(db_url, var_dir, "a", ended_days=5)
    target = tmp_path / "backup-2"
    made = await asyncio.to_thread(cli, var_dir, db_url, "backup", str(target))
    assert made.returncode == 0, made.stderr
    wav = next((target / "recordings").rglob("*.wav"))
    wav.write_bytes(b"altered")
    fresh_var = tmp_path / "fresh-var"
    refused = await asyncio.to_thread(cli, fresh_var, fresh_db_url, "restore", str(target))
    assert refused.returncode == 1 and "checksum does not match" in refused.stderr
    assert not (fresh_var / "asterisk").exists() and not (fresh_var / "secrets").exists()
