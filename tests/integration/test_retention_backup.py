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
from ari_app.config import Retention, Site
from ari_app.tickets.console_models import CallbackAttempt
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.models import (
    AdminAudit,
    Agency,
    CallerFlagClear,
    CallEvent,
    CallRecord,
    LocationRecord,
    Notification,
    Ticket,
    TicketAudit,
)
from ari_app.tickets.retention import run_retention
from tests.conftest import PG_URL, _create_pg_database, _drop_pg_database
from tests.integration.console_stack import browser, web_stack
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
    assert [a.action for a in audit][-3:] == ["recording deleted", "free text scrubbed",
                                              "personal data anonymised"]
    deleted = json.loads(audit[-3].detail)
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


FREE_TEXT = ("Pelapor Siti Aminah, HP +62 812-3456-7890, tetangga 0813 1111 2222\n"
             "location aml: -6.5887,110.6684 ±50.0 m")


async def add_free_text(db_url: str, name: str) -> None:
    """Personal data where people type it: notes, an audit's before/after, a callback note, an
    agency's evidence, a legal hold's reason, and the complaint's name in its "opened" entry."""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            t = await s.scalar(select(Ticket).where(Ticket.reference == f"JPR-{name}"))
            assert t is not None
            t.notes = f"{t.notes}\n{FREE_TEXT}"
            opened = await s.scalar(select(TicketAudit).where(TicketAudit.ticket_id == t.id))
            assert opened is not None
            opened.detail = json.dumps({"caller": t.caller_number, "name": "Siti Aminah"})
            s.add(TicketAudit(ticket_id=t.id, at=t.arrived_at, actor="op1", action="classified",
                              detail=json.dumps({"changed": {"notes": {
                                  "before": "SITI AMINAH 0857-1234-5678", "after": "ok"}}})))
            s.add(CallbackAttempt(ticket_id=t.id, at=t.arrived_at, actor="op1",
                                  outcome="no_answer", note="coba juga 0878.1234.5678"))
            agency = await s.scalar(select(Agency).where(Agency.code == "damkar"))
            if agency is None:
                agency = Agency(site="jepara", code="damkar", name="Damkar", webhook_secret="x")
                s.add(agency)
                await s.flush()
            s.add(Notification(ticket_id=t.id, agency_id=agency.id, next_attempt_at=t.arrived_at,
                               created_at=t.arrived_at, evidence="korban dihubungi di +6281311112222"))
            await record_admin_change(s, actor="cli", entity="retention", key=t.reference,
                                      action="hold lifted", before={"legal_hold": True},
                                      after={"legal_hold": False,
                                             "reason": "permintaan polisi 0812 5555 6666"},
                                      at=t.arrived_at)
    finally:
        await engine.dispose()


PHONE_BITS = ("3456", "1111 2222", "1234", "5555", "11112222", "Siti", "SITI", "6.5887")


def fallback_line(channel: str, at: datetime, event: str = "start") -> bytes:
    return (json.dumps({"event": event, "at": at.isoformat(), "uniqueid": channel,
                        "caller": "081234567890", "dialled": "112"}, sort_keys=True)
            + "\n").encode()


def journal_file(var_dir: Path, name: str, lines: list[bytes], *, imported: bool = True) -> Path:
    path = var_dir / "fallback" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    if imported:
        path.with_suffix(".offset").write_text(str(path.stat().st_size))
    return path


async def test_retention_scrubs_free_text_screening_and_the_fallback_journal_of_old_closed_tickets_only(
        db_url: str, var_dir: Path) -> None:
    for name, status, hold in (("old", "resolved", False), ("held", "resolved", True),
                               ("open", "dispatched", False), ("earlier", "resolved", False)):
        await seed(db_url, var_dir, name, status=status, ended_days=100, hold=hold)
        await add_free_text(db_url, name)
    await seed(db_url, var_dir, "new", ended_days=10)
    old_day, new_day = NOW - timedelta(days=100), NOW - timedelta(days=10)
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            # anonymised by the version before free text was scrubbed: numbers left in its notes
            earlier = await s.scalar(select(Ticket).where(Ticket.reference == "JPR-earlier"))
            assert earlier is not None
            earlier.caller_number, earlier.caller_key, earlier.anonymised_at = "", "", old_day
            keys = {n: (await s.scalar(select(Ticket.caller_key).where(
                Ticket.reference == f"JPR-{n}"))) for n in ("old", "held")}
            s.add_all([CallerFlagClear(caller_key=str(keys["old"]), cleared_at=old_day,
                                       cleared_by="spv", reason="keliru, nomor 0812 9999 0000"),
                       CallerFlagClear(caller_key=str(keys["held"]), cleared_at=old_day,
                                       cleared_by="spv", reason="kept: a held ticket counts"),
                       CallerFlagClear(caller_key=str(keys["old"]), cleared_at=new_day,
                                       cleared_by="spv", reason="recent")])
            s.add(CallRecord(channel_id="ch-lost", site="jepara", caller_number="081277776666",
                             started_at=old_day))
    finally:
        await engine.dispose()
    at = old_day + timedelta(minutes=1)
    held_line, open_line = fallback_line("ch-held", at), fallback_line("ch-open", at)
    mixed = journal_file(var_dir, f"calls-{old_day:%Y-%m-%d}.jsonl", [
        fallback_line("ch-old", at), held_line, b'{"event": "start", "caller": "0812 broken\n',
        fallback_line("ch-ghost", at), open_line, fallback_line("ch-old", at, "end")])
    only_old = journal_file(var_dir, f"calls-{old_day + timedelta(days=1):%Y-%m-%d}.jsonl",
                            [fallback_line("ch-old", at + timedelta(days=1), "end")])
    waiting = journal_file(var_dir, f"calls-{old_day + timedelta(days=2):%Y-%m-%d}.jsonl",
                           [fallback_line("ch-old", at)], imported=False)
    recent = journal_file(var_dir, f"calls-{new_day:%Y-%m-%d}.jsonl",
                          [fallback_line("ch-new", new_day)])
    legacy = journal_file(var_dir, "calls.jsonl", [fallback_line("ch-old", at), held_line])
    hours_ago = NOW.timestamp() - 7200
    os.utime(legacy, (hours_ago, hours_ago))  # no old AGI has written it for a while
    before = {p: p.read_bytes() for p in (waiting, recent)}

    engine = make_engine(db_url)
    try:
        report = await run_retention(sessions(engine), RULES, NOW, actor="test",
                                     site_code="jepara", var_dir=var_dir)
        again = await run_retention(sessions(engine), RULES, NOW, actor="test",
                                    site_code="jepara", var_dir=var_dir)
        async with sessions(engine)() as s:
            clears = {c.reason: c.caller_key for c in await s.scalars(select(CallerFlagClear))}
            flags_audit = list(await s.scalars(select(AdminAudit).where(
                AdminAudit.entity == "retention", AdminAudit.key.startswith("screening-clear:"))))
            lost = await s.scalar(select(CallRecord.caller_number).where(
                CallRecord.channel_id == "ch-lost"))
            data: dict[str, dict[str, Any]] = {}
            for name in ("old", "held", "open", "earlier"):
                t = await s.scalar(select(Ticket).where(Ticket.reference == f"JPR-{name}"))
                assert t is not None
                data[name] = {
                    "notes": t.notes,
                    "audit": [(a.action, a.detail) for a in await s.scalars(
                        select(TicketAudit).where(TicketAudit.ticket_id == t.id)
                        .order_by(TicketAudit.id))],
                    "callback": await s.scalar(select(CallbackAttempt.note).where(
                        CallbackAttempt.ticket_id == t.id)),
                    "evidence": await s.scalar(select(Notification.evidence).where(
                        Notification.ticket_id == t.id)),
                    "hold_audit": [a.after for a in await s.scalars(select(AdminAudit).where(
                        AdminAudit.entity == "retention", AdminAudit.key == t.reference))]}
    finally:
        await engine.dispose()

    assert (report.tickets_anonymised, report.tickets_scrubbed_late) == (1, 1)
    assert report.free_text_masked >= 2 * 9  # each of the two tickets: 9 places at least
    assert (report.fallback_lines_removed, report.fallback_files_removed,
            report.fallback_files_waiting) == (6, 1, 1)
    assert (report.screening_clears_anonymised, report.calls_without_ticket_anonymised) == (1, 1)
    assert (again.tickets_anonymised, again.tickets_scrubbed_late, again.free_text_masked,
            again.fallback_lines_removed, again.screening_clears_anonymised) == (0, 0, 0, 0, 0)

    for name in ("old", "earlier"):  # scrubbed everywhere, the rest of the text kept
        d = data[name]
        # (the recording's path and digest hold digits of their own: pytest-1234/, a SHA-256)
        everything = json.dumps(d | {"audit": [a for a in d["audit"]
                                               if a[0] != "recording deleted"]})
        assert not [bit for bit in PHONE_BITS if bit in everything], (name, everything)
        assert "says the bridge is down" in d["notes"] and "location aml: [anonymised]" in d["notes"]
        assert d["callback"] == "coba juga [anonymised]"
        assert d["evidence"] == "korban dihubungi di [anonymised]"
        assert json.loads(d["hold_audit"][0])["reason"] == "permintaan polisi [anonymised]"
        scrubbed = [json.loads(detail) for action, detail in d["audit"]
                    if action == "free text scrubbed"]
        assert len(scrubbed) == 1 and scrubbed[0]["masked"]["notes"] >= 3
    assert [json.loads(x) for a, x in data["old"]["audit"] if a == "fallback record removed"] == [
        {"file": legacy.name, "lines": 1, "rule": "personal_days=90"},  # the old file first
        {"file": mixed.name, "lines": 2, "rule": "personal_days=90"},
        {"file": only_old.name, "lines": 1, "rule": "personal_days=90"}]
    for name in ("held", "open"):  # untouched: same text, same audit trail
        d = data[name]
        assert FREE_TEXT in d["notes"] and d["callback"] == "coba juga 0878.1234.5678", name
        assert [a for a, _ in d["audit"]] == ["opened", "classified"], name
        assert "0812 5555 6666" in d["hold_audit"][0], name

    assert mixed.read_bytes() == held_line + open_line  # kept lines exactly as written
    assert int(mixed.with_suffix(".offset").read_text()) == mixed.stat().st_size
    assert not only_old.exists() and not only_old.with_suffix(".offset").exists()
    assert legacy.read_bytes() == held_line
    assert {p: p.read_bytes() for p in (waiting, recent)} == before  # not imported, or recent
    assert stat.S_IMODE(mixed.stat().st_mode) == 0o600

    assert clears == {"keliru, nomor [anonymised]": "", "kept: a held ticket counts": keys["held"],
                      "recent": keys["old"]}
    assert [a.action for a in flags_audit] == ["anonymised"]
    assert str(keys["old"]) not in flags_audit[0].before + flags_audit[0].after
    assert lost == ""


async def test_a_complaints_name_given_through_the_api_is_masked_once_the_ticket_is_past_retention(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        token = await stack.token("portal", "operator")
        async with browser() as http:
            async with http.post(f"{stack.url}/api/v1/complaints",
                                 headers={"Authorization": f"Bearer {token}"},
                                 json={"phone": "081234567890", "name": "Dewi Lestari",
                                       "description": "Jalan rusak; Bu Dewi Lestari bisa "
                                                      "ditelepon di 0813-2222-3333"}) as r:
                assert r.status == 201, await r.text()
                ref = (await r.json())["reference"]
        async with stack.app.sessions() as s, s.begin():
            t = await s.scalar(select(Ticket).where(Ticket.reference == ref))
            assert t is not None and "Dewi Lestari" in t.notes
            t.status, t.ended_at = "resolved", NOW - timedelta(days=100)
        report = await run_retention(stack.app.sessions, RULES, NOW, actor="test",
                                     site_code="jepara", var_dir=var_dir)
        async with stack.app.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.reference == ref))
            assert t is not None
            audit = list(await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == t.id)))
    assert report.tickets_anonymised == 1
    assert t.notes == "[anonymised]: Jalan rusak; Bu [anonymised] bisa ditelepon di [anonymised]"
    assert not [a.detail for a in audit if "Dewi" in a.detail or "0812" in a.detail]
    assert json.loads(audit[0].detail)["name"] == "[anonymised]"


async def test_retention_run_from_the_cli_removes_the_fallback_journal_of_an_old_ticket(
        db_url: str, var_dir: Path) -> None:
    await seed(db_url, var_dir, "cli", ended_days=800)  # past the site's 730 days
    day = NOW - timedelta(days=800)
    old = journal_file(var_dir, f"calls-{day:%Y-%m-%d}.jsonl", [fallback_line("ch-cli", day)])
    today = journal_file(var_dir, f"calls-{datetime.now(UTC):%Y-%m-%d}.jsonl",
                         [fallback_line("ch-cli", day)])  # today's file: the AGI's, never touched
    ran = await asyncio.to_thread(cli, var_dir, db_url, "retention", "run", "--json")
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert (report["tickets_anonymised"], report["fallback_lines_removed"],
            report["fallback_files_removed"]) == (1, 1, 1)
    assert not old.exists() and today.exists()
    _, _, audit, _ = await ticket(db_url, "cli")
    assert [json.loads(a.detail)["file"] for a in audit
            if a.action == "fallback record removed"] == [old.name]


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
