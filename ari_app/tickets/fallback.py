"""Turn the dialplan fallback's durable records (fallback_log AGI) into tickets, exactly once.

The journal is append-only JSON lines; we remember how far we have read in an offset file that
is only moved after the tickets are written. Ticket writes are keyed by the channel's unique id,
so reading a line twice (a crash between write and offset) creates nothing twice.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timedelta
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


class FallbackImporter:
    def __init__(self, journal: Path, writer: Writer, tickets: TicketService) -> None:
        self.journal, self.writer, self.tickets = journal, writer, tickets
        self.offset_path = journal.with_suffix(".offset")
        self.imported = 0
        self.bad_lines = 0
        writer.register("fallback.offset", self._save_offset)

    def _offset(self) -> int:
        try:
            return int(self.offset_path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def import_new(self) -> int:
        """Queue tickets for the records written since last time; returns how many records."""
        try:
            with open(self.journal, "rb") as fh:
                fh.seek(self._offset())
                data = fh.read()
        except FileNotFoundError:
            return 0
        end = data.rfind(b"\n") + 1  # a line still being written waits for next time
        if end == 0:
            return 0
        start = self._offset()
        count = 0
        for raw in data[:end].splitlines():
            try:
                rec = json.loads(raw)
                self._queue(rec)
                count += 1
            except (ValueError, KeyError, TypeError) as exc:
                self.bad_lines += 1
                log.error("fallback journal: unreadable line %r: %s", raw[:200], exc)
        # Moved only once the tickets before it are in the database (the journal keeps order).
        self.writer.submit("fallback.offset", {"offset": start + end})
        self.imported += count
        if count:
            log.warning("fallback journal: %d record(s) of calls taken while the app was down",
                        count)
        return count

    def _save_offset(self, _: Session, p: dict[str, Any]) -> None:
        tmp = self.offset_path.with_suffix(".offset.tmp")
        tmp.write_text(str(p["offset"]))
        os.replace(tmp, self.offset_path)

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
            # callers. Never reached a human: on the callback list, with the reason.
            limit = str(rec.get("limit") or "?")[:8]
            self.tickets.open(channel, rec.get("caller", ""), at,
                              caller_key=caller_key(rec.get("caller")),
                              policy=f"overload: {limit} callers on the line, refused (503)")
            self.tickets.change(channel, "ended", at, ended_at=at,
                                end_reason=f"overload: lines busy ({limit} callers)",  # <= 40
                                status="abandoned", callback_needed=True, outcome="abandoned",
                                audit={"limit": limit, "dialled": rec.get("dialled", ""),
                                       "refused": "503 after the lines_busy prompt"})
            log.warning("call=%s refused, line full (%s callers): on the callback list",
                        channel, limit)
        else:
            raise KeyError(f"unknown event {rec['event']!r}")
