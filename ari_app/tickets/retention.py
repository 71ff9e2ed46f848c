"""Retention of the data of people in distress (UU 27/2022): keep only as long as the site says.

For each *closed* ticket past the site's limits, and never one under legal hold:
- its recording is deleted (``recordings_days`` after the call ended);
- its caller number and locations are anonymised (``personal_days``): the number becomes empty
  on the ticket and its call row, the locations lose their coordinates, civic address, raw message
  and number; the number is masked in the ticket's notes, audit details and call events.
  (Not touched: the local write journal, which holds only writes not yet in the database, and
  the dialplan's fallback record, var/fallback/calls.jsonl.)
Locations never matched to a ticket and input rejections older than ``personal_days`` lose their
raw message and coordinates too (they hold numbers and positions of people).

Asterisk's own call record (CEL, var/asterisk/log/master.db, written by cel_sqlite3_custom) loses
its rows older than ``cel_days``, except those of calls the database still holds as live (call
row or ticket without an end time): reconcile reads the record only for those. The rows hold no
caller number (channel names, ids, times); the count, the bound and the calls kept go in the
run's admin audit entry.

Every deletion is a ticket audit entry (who, when, what) in the same transaction as the change,
and each run adds one admin audit entry with its counts. A ticket is handled in its own
transaction; a recording file is unlinked only after its transaction committed (a crash in
between leaves a marked ticket whose file the next run unlinks).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.admin_audit import record_admin_change
from ari_app.config import Retention
from ari_app.tickets.models import (
    CallEvent,
    CallRecord,
    InputRejection,
    LocationRecord,
    Ticket,
    TicketAudit,
)

log = logging.getLogger(__name__)

# A ticket is closed when its case is over: nothing more will be done on it.
CLOSED_STATUSES = ("resolved", "closed", "prank", "ghost", "duplicate", "abandoned")
MASK = "[anonymised]"
BATCH = 200


@dataclass
class RetentionReport:
    recordings_deleted: int = 0
    tickets_anonymised: int = 0
    locations_anonymised: int = 0
    unattached_locations_cleared: int = 0
    rejections_cleared: int = 0
    files_missing: int = 0
    cel_rows_deleted: int = 0
    cel_live_calls_kept: int = 0
    errors: int = 0


def _closed(now: datetime, days: int) -> list[ColumnElement[bool]]:
    """Closed, not held, the call over, and past ``days`` since it ended."""
    cutoff = now - timedelta(days=days)
    return [Ticket.status.in_(CLOSED_STATUSES), Ticket.legal_hold.is_(False),
            # an abandoned caller still on the callback list is not closed
            or_(Ticket.status != "abandoned", Ticket.callback_needed.is_(False)),
            func.coalesce(Ticket.ended_at, Ticket.arrived_at) < cutoff]


def _file_sha256(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


async def _delete_recordings(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                             now: datetime, actor: str, report: RetentionReport) -> None:
    async with sessions() as s:
        due = list(await s.execute(
            select(Ticket.id, Ticket.recording_path)
            .where(Ticket.recording_path.is_not(None), Ticket.recording_deleted_at.is_(None),
                   *_closed(now, rules.recordings_days)).order_by(Ticket.id)))
        # marked in an earlier run whose unlink did not happen (crash, or the disk refused)
        left = list(await s.execute(
            select(Ticket.id, Ticket.recording_path)
            .where(Ticket.recording_path.is_not(None), Ticket.recording_deleted_at.is_not(None))))
    for _tid, path in left:
        if path:
            await asyncio.to_thread(_unlink, Path(path), report)
    for tid, path in due:
        file = Path(str(path))
        digest = await asyncio.to_thread(_file_sha256, file)
        async with sessions() as s, s.begin():
            t = await s.get(Ticket, tid)
            if t is None or t.legal_hold or t.recording_deleted_at is not None:
                continue  # changed since we looked (a hold was put on it): leave it
            t.recording_deleted_at = now
            s.add(TicketAudit(ticket_id=tid, at=now, actor=actor, action="recording deleted",
                              detail=json.dumps({"path": path, "sha256": digest,
                                                 "rule": f"recordings_days={rules.recordings_days}",
                                                 "file_found": digest is not None})))
        if digest is None:
            report.files_missing += 1
        else:
            await asyncio.to_thread(_unlink, file, report)
        report.recordings_deleted += 1


def _unlink(file: Path, report: RetentionReport) -> None:
    try:
        file.unlink(missing_ok=True)
    except OSError as exc:
        report.errors += 1
        log.error("retention: could not delete recording %s: %s (the next run tries again)",
                  file, exc)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def _mask(text: str, number: str) -> str:
    return text.replace(number, MASK) if number and len(number) >= 4 else text


async def _anonymise_tickets(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                             now: datetime, actor: str, report: RetentionReport) -> None:
    async with sessions() as s:
        due = list(await s.scalars(select(Ticket.id).where(
            Ticket.anonymised_at.is_(None), *_closed(now, rules.personal_days)).order_by(Ticket.id)))
    for tid in due:
        async with sessions() as s, s.begin():
            t = await s.get(Ticket, tid)
            if t is None or t.legal_hold or t.anonymised_at is not None:
                continue
            numbers = {n for n in (t.caller_number, t.caller_key) if n}
            for n in sorted(numbers, key=len, reverse=True):
                t.notes = _mask(t.notes, n)
            for a in await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == tid)):
                for n in sorted(numbers, key=len, reverse=True):
                    a.detail = _mask(a.detail, n)
            locations = _count(await s.execute(
                update(LocationRecord).where(LocationRecord.ticket_id == tid)
                .values(latitude=None, longitude=None, radius_m=None, civic=None, raw="",
                        caller_key="", warnings="")))
            if t.channel_id:
                await s.execute(update(CallRecord).where(CallRecord.channel_id == t.channel_id)
                                .values(caller_number=""))
                for e in await s.scalars(select(CallEvent).where(CallEvent.channel_id == t.channel_id)):
                    for n in sorted(numbers, key=len, reverse=True):
                        e.detail = _mask(e.detail, n)
            t.caller_number, t.caller_key, t.anonymised_at = "", "", now
            s.add(TicketAudit(ticket_id=tid, at=now, actor=actor, action="personal data anonymised",
                              detail=json.dumps({"caller_number": True, "locations": locations,
                                                 "rule": f"personal_days={rules.personal_days}"})))
        report.tickets_anonymised += 1
        report.locations_anonymised += locations


async def _clear_unattached(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                            now: datetime, report: RetentionReport) -> None:
    cutoff = now - timedelta(days=rules.personal_days)
    async with sessions() as s, s.begin():
        report.unattached_locations_cleared = _count(await s.execute(
            update(LocationRecord).where(LocationRecord.ticket_id.is_(None),
                                         LocationRecord.received_at < cutoff,
                                         or_(LocationRecord.raw != "",
                                             LocationRecord.latitude.is_not(None),
                                             LocationRecord.caller_key != ""))
            .values(latitude=None, longitude=None, radius_m=None, civic=None, raw="",
                    caller_key="", warnings="")))
        report.rejections_cleared = _count(await s.execute(
            update(InputRejection).where(InputRejection.received_at < cutoff,
                                         InputRejection.raw != "")
            .values(raw="", origin="")))


async def _prune_cel(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                     now: datetime, site_code: str, cel: Path, report: RetentionReport
                     ) -> dict[str, object]:
    """Old CEL rows out of Asterisk's file, while Asterisk keeps writing it (pbx/cel.py)."""
    from ari_app.pbx.cel import prune_cel
    from ari_app.tickets.calls import open_calls

    cutoff = now - timedelta(days=rules.cel_days)
    live = await open_calls(sessions, site_code)  # read first: a call opened later is newer
    try:
        pruned = await asyncio.to_thread(prune_cel, cel, cutoff.timestamp(), list(live))
    except Exception as exc:  # the file damaged or locked for good: the rest of the run stands
        report.errors += 1
        log.error("retention: CEL record %s not pruned: %s (the next run tries again)", cel, exc)
        return {"path": str(cel), "before": cutoff.isoformat(), "error": str(exc)}
    report.cel_rows_deleted = pruned.deleted
    report.cel_live_calls_kept = pruned.live_kept
    return {"path": str(cel), "before": cutoff.isoformat(), "transactions": pruned.transactions,
            "busy_retries": pruned.busy_retries, "rule": f"cel_days={rules.cel_days}"}


async def run_retention(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                        now: datetime, *, actor: str, site_code: str,
                        cel: Path | None = None) -> RetentionReport:
    """Apply the site's retention once; safe to run again at any time (it only finds the rest).

    ``cel``: Asterisk's CEL file (``pbx.cel.cel_path(var_dir)``) to prune as well."""
    report = RetentionReport()
    await _delete_recordings(sessions, rules, now, actor, report)
    await _anonymise_tickets(sessions, rules, now, actor, report)
    await _clear_unattached(sessions, rules, now, report)
    cel_detail = await _prune_cel(sessions, rules, now, site_code, cel, report) \
        if cel is not None else None
    async with sessions() as s, s.begin():
        after: dict[str, object] = {"rules": asdict(rules), **asdict(report)}
        if cel_detail is not None:
            after["cel"] = cel_detail
        await record_admin_change(s, actor=actor, entity="retention", key=site_code, action="run",
                                  before=None, after=after, at=now)
    log.info("retention for %s: %s", site_code, asdict(report))
    return report


async def set_legal_hold(s: AsyncSession, reference: str, hold: bool, now: datetime, *,
                         actor: str, reason: str) -> bool:
    """Put (or lift) a legal hold: retention then leaves the ticket's data alone. False: no ticket."""
    t = await s.scalar(select(Ticket).where(Ticket.reference == reference))
    if t is None:
        return False
    before = t.legal_hold
    t.legal_hold = hold
    s.add(TicketAudit(ticket_id=t.id, at=now, actor=actor,
                      action="legal hold" if hold else "legal hold lifted",
                      detail=json.dumps({"reason": reason})))
    await record_admin_change(s, actor=actor, entity="retention", key=reference,
                              action="hold" if hold else "hold lifted",
                              before={"legal_hold": before}, after={"legal_hold": hold,
                                                                     "reason": reason}, at=now)
    return True
