"""Turn the dialplan fallback's durable records (fallback_log AGI) into tickets, exactly once.

The journal is append-only JSON lines, one file per UTC day (``calls-YYYY-MM-DD.jsonl``; the
single ``calls.jsonl`` of earlier versions is still read, first). For each file we remember how
far we have read in an offset file beside it (``calls-YYYY-MM-DD.offset``) that is only moved
after the tickets are written. Ticket writes are keyed by the channel's unique id, so reading a
line twice (a crash between write and offset) creates nothing twice. Retention (retention.py)
removes lines only from files that are fully read and of a past day, which no AGI writes again.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from ari_app.location.service import caller_key
from ari_app.pbx.cel import endpoint_name
from ari_app.tickets.service import TicketService
from ari_app.tickets.writer import Writer

log = logging.getLogger(__name__)


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if value >= 0 else None


DAY_GLOB = "-[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"


def journal_files(journal: Path) -> list[Path]:
    """The journal's files in the order they were written: the old single file, then by day."""
    days = sorted(journal.parent.glob(f"{journal.stem}{DAY_GLOB}{journal.suffix}"))
    return ([journal] if journal.exists() else []) + days


def journal_day(path: Path) -> date | None:
    """The UTC day a per-day file holds (None for the old single file)."""
    try:
        return date.fromisoformat(path.stem[-10:]) if path.stem[-11:-10] == "-" else None
    except ValueError:
        return None


def offset_path(path: Path) -> Path:
    return path.with_suffix(".offset")


def read_offset(path: Path) -> int:
    """How far into ``path`` the importer has read (bytes of whole lines whose tickets exist)."""
    try:
        return int(offset_path(path).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def write_offset(path: Path, offset: int) -> None:
    tmp = path.with_suffix(".offset.tmp")
    tmp.write_text(str(offset))
    os.replace(tmp, offset_path(path))


def read_records(journal: Path) -> list[dict[str, Any]]:
    """Every readable record in every file of the journal, in order (for tests and tools)."""
    out: list[dict[str, Any]] = []
    for path in journal_files(journal):
        for raw in path.read_bytes().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


class FallbackImporter:
    def __init__(self, journal: Path, writer: Writer, tickets: TicketService) -> None:
        """``journal``: the old single file's path (``var/fallback/calls.jsonl``); the per-day
        files are found beside it."""
        self.journal, self.writer, self.tickets = journal, writer, tickets
        self.imported = 0
        self.bad_lines = 0
        writer.register("fallback.offset", self._save_offset)

    def import_new(self) -> int:
        """Queue tickets for the records written since last time; returns how many records."""
        count = 0
        for path in journal_files(self.journal):
            count += self._import_file(path)
        self.imported += count
        if count:
            log.warning("fallback journal: %d record(s) of calls taken while the app was down",
                        count)
        return count

    def _import_file(self, path: Path) -> int:
        start = read_offset(path)
        try:
            with open(path, "rb") as fh:
                if os.fstat(fh.fileno()).st_size <= start:
                    return 0  # read already (most files, most of the time)
                fh.seek(start)
                data = fh.read()
        except FileNotFoundError:
            return 0  # retention removed it
        end = data.rfind(b"\n") + 1  # a line still being written waits for next time
        if end == 0:
            return 0
        count = 0
        for raw in data[:end].splitlines():
            try:
                rec = json.loads(raw)
                self._queue(rec)
                count += 1
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines += 1
                log.error("fallback journal %s: unreadable line %r: %s", path.name, raw[:200], exc)
        # Moved only once the tickets before it are in the database (the journal keeps order).
        self.writer.submit("fallback.offset", {"offset": start + end, "file": path.name})
        return count

    def _save_offset(self, _: Session, p: dict[str, Any]) -> None:
        path = self.journal.parent / str(p.get("file") or self.journal.name)  # before per-day
        if path.exists():  # a file retention removed needs no offset any more
            write_offset(path, int(p["offset"]))

    def _queue(self, rec: dict[str, str]) -> None:
        channel = str(rec["uniqueid"])
        at = datetime.fromisoformat(rec["at"])
        if rec["event"] == "start":
            self.tickets.open(channel, rec.get("caller", ""), at,
                              caller_key=caller_key(rec.get("caller")),
                              policy="fallback: app not connected, operators rung directly",
                              recording_path=rec.get("recording") or None)
            log.info("call=%s fallback record imported", channel)
        elif rec["event"] == "end":
            answered = rec.get("dialstatus") == "ANSWER"
            operator = endpoint_name(rec.get("operator") or "") or None
            fields: dict[str, Any] = {}
            talked = _seconds(rec.get("answered_s"))
            if answered and talked is not None:
                fields["operator_answered_at"] = at - timedelta(seconds=talked)
            why = rec.get("dialstatus") or "caller hangup"
            self.tickets.change(
                channel, "fallback ended", at, ended_at=at,
                end_reason=f"fallback: {why}" if answered else f"fallback unanswered: {why}",
                status="in_call" if answered else "abandoned", callback_needed=not answered,
                operator=operator, outcome="genuine" if answered else "abandoned",
                audit={"answered_s": rec.get("answered_s", ""),
                       "dialled_peer": rec.get("operator", "")}, **fields)
        elif rec["event"] == "early":
            self.tickets.open(channel, rec.get("caller", ""), at,
                              caller_key=caller_key(rec.get("caller")),
                              policy="hung up before the app took the call")
            self.tickets.change(channel, "ended", at, ended_at=at,
                                end_reason="caller hangup before the app", status="abandoned",
                                callback_needed=True, outcome="silent-unreached")
        elif rec["event"] == "overload":
            # Shed by the dialplan (siaga112-overload): the line already had its limit of
            # callers ("full"), or the app had found ARI too slow to serve one more ("slow").
            # Never reached a human: on the callback list, with the reason.
            limit = str(rec.get("limit") or "?")[:8]
            if rec.get("why") == "slow":
                policy = "overload: the app's ARI requests too slow, refused (503)"
                reason = "overload: app too slow (ARI)"  # <= 40
            else:
                policy = f"overload: {limit} callers on the line, refused (503)"
                reason = f"overload: lines busy ({limit} callers)"  # <= 40
            self.tickets.open(channel, rec.get("caller", ""), at,
                              caller_key=caller_key(rec.get("caller")), policy=policy)
            self.tickets.change(channel, "ended", at, ended_at=at, end_reason=reason,
                                status="abandoned", callback_needed=True, outcome="abandoned",
                                audit={"limit": limit, "dialled": rec.get("dialled", ""),
                                       "why": str(rec.get("why") or "full")[:8],
                                       "refused": "503 after the lines_busy prompt"})
            log.warning("call=%s refused (%s): on the callback list", channel, reason)
        else:
            raise KeyError(f"unknown event {rec['event']!r}")
