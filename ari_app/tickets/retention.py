"""Retention of the data of people in distress (UU 27/2022): keep only as long as the site says.

For each *closed* ticket past the site's limits, and never one under legal hold:
- its recording is deleted (``recordings_days`` after the call ended);
- its caller number and locations are anonymised (``personal_days``): the number becomes empty
  on the ticket and its call row, the locations lose their coordinates, civic address, raw message
  and number. Free text kept with the ticket is scrubbed (scrub.py): its notes, audit details
  (before/after included), call events, callback notes, agencies' evidence and the admin audit
  of its legal holds lose the caller's number as stored, a complaint's name (structured in its
  "opened" audit entry) and every Indonesian phone number we can recognise. Tickets anonymised by
  an earlier version are scrubbed once too (they have no "free text scrubbed" entry).
Also past ``personal_days``:
- the dialplan fallback's journal (var/fallback/calls-<day>.jsonl): lines of anonymised (or
  never stored) tickets go, from files fully imported and of a day no AGI writes to any more;
  lines of other tickets stay as they are (the file is rewritten atomically), and a file not yet
  fully imported is not touched;
- screening history: a supervisor's clear of a number's prank/ghost flags loses the number once
  no ticket it was about still holds the number;
- call rows with no ticket lose their caller number; locations never matched to a ticket and
  input rejections lose their raw message and coordinates (they hold numbers and positions).
Not touched: the local write journal (it holds writes only until they reach the database; its
dead table keeps refused writes for an admin), and logs (SECURITY.md).

Asterisk's own call record (CEL, var/asterisk/log/master.db, written by cel_sqlite3_custom) loses
its rows older than ``cel_days``, except those of calls the database still holds as live (call
row or ticket without an end time): reconcile reads the record only for those. The rows hold no
caller number (channel names, ids, times); the count, the bound and the calls kept go in the
run's admin audit entry.

Every deletion is a ticket audit entry (who, when, what) in the same transaction as the change,
and each run adds one admin audit entry with its counts (changes with no ticket are counted
there, and a screening clear gets its own admin entry). A ticket is handled in its own
transaction; a file is unlinked or replaced only after its transaction committed (a crash in
between leaves an audit entry whose change the next run makes).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ari_app.admin_audit import record_admin_change
from ari_app.config import Retention
from ari_app.tickets.console_models import CallbackAttempt
from ari_app.tickets.fallback import journal_day, journal_files, offset_path, read_offset, write_offset
from ari_app.tickets.models import (
    AdminAudit,
    CallerFlagClear,
    CallEvent,
    CallRecord,
    InputRejection,
    LocationRecord,
    Notification,
    Ticket,
    TicketAudit,
)
from ari_app.tickets.scrub import scrub_json, scrub_text

log = logging.getLogger(__name__)

# A ticket is closed when its case is over: nothing more will be done on it.
CLOSED_STATUSES = ("resolved", "closed", "prank", "ghost", "duplicate", "abandoned")
BATCH = 200
SCRUBBED = "free text scrubbed"
LEGACY_QUIET = timedelta(hours=1)  # the pre-per-day journal file: untouched this long = no writer


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
    free_text_masked: int = 0          # numbers and names masked in notes, audit, events...
    tickets_scrubbed_late: int = 0     # anonymised by an earlier version, scrubbed now
    fallback_lines_removed: int = 0
    fallback_lines_kept: int = 0       # old lines of tickets still open or held
    fallback_files_removed: int = 0
    fallback_files_waiting: int = 0    # old but not fully imported yet: left for the next run
    screening_clears_anonymised: int = 0
    calls_without_ticket_anonymised: int = 0
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


def _opened_names(audit: list[TicketAudit]) -> set[str]:
    """Names the ticket holds in a structured place: a complaint's "opened" entry."""
    names: set[str] = set()
    for a in audit:
        if a.action != "opened":
            continue
        try:
            detail = json.loads(a.detail or "{}")
        except ValueError:
            continue
        if isinstance(detail, dict) and isinstance(detail.get("name"), str) and detail["name"]:
            names.add(detail["name"])
    return names


async def _scrub_ticket(s: AsyncSession, t: Ticket, known: set[str], now: datetime,
                        actor: str, rule: str) -> int:
    """Mask the known strings and phone numbers in the ticket's free text; one audit entry."""
    audit = list(await s.scalars(select(TicketAudit).where(TicketAudit.ticket_id == t.id)))
    keys = known | _opened_names(audit)
    where: Counter[str] = Counter()
    t.notes, where["notes"] = scrub_text(t.notes, keys)
    for a in audit:
        a.detail, n = scrub_json(a.detail, keys)
        where["ticket_audit"] += n
    if t.channel_id:
        for e in await s.scalars(select(CallEvent).where(CallEvent.channel_id == t.channel_id)):
            e.detail, n = scrub_json(e.detail, keys)
            where["call_events"] += n
    for c in await s.scalars(select(CallbackAttempt).where(CallbackAttempt.ticket_id == t.id)):
        c.note, n = scrub_text(c.note, keys)
        where["callback_notes"] += n
    for nt in await s.scalars(select(Notification).where(Notification.ticket_id == t.id)):
        nt.evidence, n = scrub_text(nt.evidence, keys)
        where["agency_evidence"] += n
    for aa in await s.scalars(select(AdminAudit).where(AdminAudit.entity == "retention",
                                                       AdminAudit.key == t.reference)):
        aa.before, n1 = scrub_json(aa.before, keys)
        aa.after, n2 = scrub_json(aa.after, keys)
        where["admin_audit"] += n1 + n2
    counts = {k: v for k, v in where.items() if v}
    s.add(TicketAudit(ticket_id=t.id, at=now, actor=actor, action=SCRUBBED,
                      detail=json.dumps({"masked": counts, "names": len(keys - known),
                                         "rule": rule}, sort_keys=True)))
    return sum(counts.values())


async def _anonymise_tickets(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                             now: datetime, actor: str, report: RetentionReport) -> None:
    rule = f"personal_days={rules.personal_days}"
    async with sessions() as s:
        due = list(await s.scalars(select(Ticket.id).where(
            Ticket.anonymised_at.is_(None), *_closed(now, rules.personal_days)).order_by(Ticket.id)))
    for tid in due:
        async with sessions() as s, s.begin():
            t = await s.get(Ticket, tid)
            if t is None or t.legal_hold or t.anonymised_at is not None:
                continue
            numbers = {n for n in (t.caller_number, t.caller_key) if n and len(n) >= 4}
            report.free_text_masked += await _scrub_ticket(s, t, numbers, now, actor, rule)
            locations = _count(await s.execute(
                update(LocationRecord).where(LocationRecord.ticket_id == tid)
                .values(latitude=None, longitude=None, radius_m=None, civic=None, raw="",
                        caller_key="", warnings="")))
            if t.channel_id:
                await s.execute(update(CallRecord).where(CallRecord.channel_id == t.channel_id)
                                .values(caller_number=""))
            t.caller_number, t.caller_key, t.anonymised_at = "", "", now
            s.add(TicketAudit(ticket_id=tid, at=now, actor=actor, action="personal data anonymised",
                              detail=json.dumps({"caller_number": True, "locations": locations,
                                                 "rule": rule})))
        report.tickets_anonymised += 1
        report.locations_anonymised += locations


async def _scrub_earlier(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                         now: datetime, actor: str, report: RetentionReport) -> None:
    """Tickets anonymised before free text was scrubbed: scrub them once (no hold on them)."""
    rule = f"personal_days={rules.personal_days}"
    scrubbed = exists().where(TicketAudit.ticket_id == Ticket.id, TicketAudit.action == SCRUBBED)
    async with sessions() as s:
        due = list(await s.scalars(select(Ticket.id).where(
            Ticket.anonymised_at.is_not(None), Ticket.legal_hold.is_(False), ~scrubbed)
            .order_by(Ticket.id)))
    for tid in due:
        async with sessions() as s, s.begin():
            t = await s.get(Ticket, tid)
            if t is None or t.legal_hold:
                continue
            report.free_text_masked += await _scrub_ticket(s, t, set(), now, actor, rule)
        report.tickets_scrubbed_late += 1


async def _screening_clears(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                            now: datetime, actor: str, report: RetentionReport) -> None:
    """A clear older than personal_days that no ticket still holding the number depends on."""
    cutoff = now - timedelta(days=rules.personal_days)
    still_counted = exists().where(Ticket.caller_key == CallerFlagClear.caller_key,
                                   Ticket.arrived_at <= CallerFlagClear.cleared_at)
    async with sessions() as s, s.begin():
        rows = list(await s.scalars(select(CallerFlagClear).where(
            CallerFlagClear.cleared_at < cutoff, CallerFlagClear.caller_key != "",
            ~still_counted)))
        for row in rows:
            before = {"cleared_at": row.cleared_at, "cleared_by": row.cleared_by,
                      "caller_key": True}
            row.caller_key = ""
            row.reason = scrub_text(row.reason)[0]
            await record_admin_change(s, actor=actor, entity="retention", key=f"screening-clear:{row.id}",
                                      action="anonymised", before=before,
                                      after={"caller_key": "",
                                             "rule": f"personal_days={rules.personal_days}"},
                                      at=now)
        report.screening_clears_anonymised = len(rows)


async def _calls_without_ticket(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                                now: datetime, report: RetentionReport) -> None:
    cutoff = now - timedelta(days=rules.personal_days)
    has_ticket = exists().where(Ticket.channel_id == CallRecord.channel_id)
    async with sessions() as s, s.begin():
        report.calls_without_ticket_anonymised = _count(await s.execute(
            update(CallRecord).where(CallRecord.caller_number != "", ~has_ticket,
                                     func.coalesce(CallRecord.ended_at,
                                                   CallRecord.started_at) < cutoff)
            .values(caller_number="")))


def _line_fate(raw: bytes, cutoff: datetime, tickets: dict[str, tuple[int, bool]]) -> int | None:
    """For one journal line: -1 remove (no ticket / unreadable), a ticket id to remove it for,
    or None to keep it. ``tickets``: channel id -> (ticket id, may go)."""
    try:
        rec = json.loads(raw)
        at = datetime.fromisoformat(rec["at"])
        channel = str(rec["uniqueid"])
    except (ValueError, KeyError, TypeError):
        return -1  # the importer could not read it either; it may still hold a number
    if at.tzinfo is None or at >= cutoff:
        return None
    found = tickets.get(channel)
    if found is None:
        return -1  # no ticket: its writes are in the local journal if anywhere; nothing to keep
    return found[0] if found[1] else None


def _channels(lines: list[bytes]) -> set[str]:
    out = set()
    for raw in lines:
        try:
            out.add(str(json.loads(raw)["uniqueid"]))
        except (ValueError, KeyError, TypeError):
            continue
    return out


def _write_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap(path: Path, kept: Path | None) -> None:
    """The journal file becomes ``kept`` (its offset: all of it read), or goes if None."""
    if kept is not None:
        size = kept.stat().st_size
        os.replace(kept, path)
        write_offset(path, size)
    else:
        path.unlink(missing_ok=True)
        offset_path(path).unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _fallback_journal(sessions: async_sessionmaker[AsyncSession], rules: Retention,
                            now: datetime, actor: str, journal: Path,
                            report: RetentionReport) -> None:
    """Old lines of the dialplan fallback's journal (see the module's docstring).

    Safe while the AGI appends: only files of a day before the cutoff are considered (the AGI
    writes today's file; the cutoff is at least a day back), and of those only files the importer
    has read to the end (its offset at the file's size), so no line not yet imported is lost.
    The file is rewritten to a temporary file, the audit committed, then renamed over it; the
    offset is set to the new size after the rename (a crash in between leaves an offset past
    the end, which reads as fully imported). Two runs (the timer, the CLI) take a lock first.
    """
    if not journal.parent.is_dir():
        return
    cutoff = now - timedelta(days=rules.personal_days)
    rule = f"personal_days={rules.personal_days}"
    lock = await asyncio.to_thread(open, journal.parent / ".retention.lock", "a")
    try:
        await asyncio.to_thread(fcntl.flock, lock.fileno(), fcntl.LOCK_EX)
        for path in await asyncio.to_thread(journal_files, journal):
            day = journal_day(path)
            # the AGI names files by the real clock: today's file is never touched, whatever
            # ``now`` says
            if day is not None and day >= min(cutoff.date(), datetime.now(UTC).date()):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if day is None and time.time() - st.st_mtime < LEGACY_QUIET.total_seconds():
                continue  # the old single file, written a moment ago: an old AGI may still write
            if read_offset(path) < st.st_size:
                report.fallback_files_waiting += 1
                log.warning("retention: %s is not fully imported yet; left for the next run",
                            path.name)
                continue
            await _fallback_file(sessions, path, cutoff, rule, now, actor, report)
    finally:
        lock.close()  # and with it the lock


async def _fallback_file(sessions: async_sessionmaker[AsyncSession], path: Path,
                         cutoff: datetime, rule: str, now: datetime, actor: str,
                         report: RetentionReport) -> None:
    lines = (await asyncio.to_thread(path.read_bytes)).splitlines(keepends=True)
    async with sessions() as s:
        rows = (await s.execute(select(Ticket.channel_id, Ticket.id, Ticket.anonymised_at,
                                       Ticket.legal_hold)
                                .where(Ticket.channel_id.in_(_channels(lines))))).all() \
            if lines else []
    tickets = {str(c): (tid, anon is not None and not hold) for c, tid, anon, hold in rows}
    kept: list[bytes] = []
    per_ticket: Counter[int] = Counter()
    orphans = 0
    for raw in lines:
        fate = _line_fate(raw, cutoff, tickets) if raw.strip() else -1
        if fate is None:
            kept.append(raw)
        elif fate == -1:
            orphans += 1 if raw.strip() else 0
        else:
            per_ticket[fate] += 1
    removed = sum(per_ticket.values()) + orphans
    if len(kept) == len(lines):
        report.fallback_lines_kept += len(kept)
        return
    tmp = path.with_suffix(".retention.tmp")
    if kept:
        await asyncio.to_thread(_write_synced, tmp, b"".join(kept))
    async with sessions() as s, s.begin():
        for tid, n in sorted(per_ticket.items()):
            s.add(TicketAudit(ticket_id=tid, at=now, actor=actor, action="fallback record removed",
                              detail=json.dumps({"file": path.name, "lines": n, "rule": rule})))
    await asyncio.to_thread(_swap, path, tmp if kept else None)
    if not kept:
        report.fallback_files_removed += 1
    report.fallback_lines_removed += removed
    report.fallback_lines_kept += len(kept)
    log.info("retention: %s: %d line(s) removed (%d without a ticket), %d kept", path.name,
             removed, orphans, len(kept))


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
                        cel: Path | None = None,
                        var_dir: Path | None = None) -> RetentionReport:
    """Apply the site's retention once; safe to run again at any time (it only finds the rest).

    ``cel``: Asterisk's CEL file (``pbx.cel.cel_path(var_dir)``) to prune as well.
    ``var_dir``: where the dialplan fallback's journal is (var/fallback/); None leaves it."""
    report = RetentionReport()
    await _delete_recordings(sessions, rules, now, actor, report)
    await _anonymise_tickets(sessions, rules, now, actor, report)
    await _scrub_earlier(sessions, rules, now, actor, report)
    await _screening_clears(sessions, rules, now, actor, report)
    await _calls_without_ticket(sessions, rules, now, report)
    await _clear_unattached(sessions, rules, now, report)
    cel_detail = await _prune_cel(sessions, rules, now, site_code, cel, report) \
        if cel is not None else None
    if var_dir is not None:
        await _fallback_journal(sessions, rules, now, actor,
                                var_dir / "fallback" / "calls.jsonl", report)
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
