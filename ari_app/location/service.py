"""Locations meet calls: match by the caller's normalised number within a time window.

A location that arrives before the call (AML can precede the INVITE) waits and is attached when
the call comes; one that arrives during the call goes to it at once; one that arrives after the
call ended goes to that call's ticket. Every location and every rejection is stored with its raw
text. Nothing here ever blocks a call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from ari_app.live import LiveBus
from ari_app.location.cell import CellId
from ari_app.location.model import Location
from ari_app.location.numbers import InvalidNumber, normalise_msisdn
from ari_app.tickets.models import InputRejection, LocationRecord, Ticket, table
from ari_app.tickets.writer import Writer, core

log = logging.getLogger(__name__)

_TICKETS, _LOCATIONS = table(Ticket), table(LocationRecord)
_TICKET_OF_CALL = select(_TICKETS.c.id).where(_TICKETS.c.channel_id == bindparam("ch"))
_LATEST_TICKET_OF_CALLER = (select(_TICKETS.c.id)
                            .where(_TICKETS.c.caller_key == bindparam("key"),
                                   _TICKETS.c.arrived_at >= bindparam("since"))
                            .order_by(_TICKETS.c.arrived_at.desc()).limit(1))


def caller_key(number: str | None) -> str:
    """The normalised number used for matching; '' when the number is unusable (withheld)."""
    try:
        return normalise_msisdn(number or "")
    except InvalidNumber:
        return ""


def cell_location(cell: CellId) -> Location:
    """A serving cell as a location without coordinates (a cell database can add them later)."""
    return Location(source="cell", raw=cell.raw, method="Cell", mcc=cell.mcc, mnc=cell.mnc,
                    civic={"radio": cell.radio, "area_code": str(cell.area_code),
                           "cell_identity": str(cell.cell_identity)})


@dataclass
class Received:
    location: Location
    received_at: datetime


class LocationService:
    def __init__(self, writer: Writer, live: LiveBus, *, before_window_s: float = 600,
                 after_window_s: float = 1800) -> None:
        self.writer, self.live = writer, live
        self.before = timedelta(seconds=before_window_s)
        self.after = timedelta(seconds=after_window_s)
        self.calls_by_key: dict[str, set[str]] = defaultdict(set)
        self.by_call: dict[str, list[Received]] = defaultdict(list)
        self.pending: dict[str, list[Received]] = defaultdict(list)
        self._arrived: dict[str, asyncio.Event] = {}
        self.accepted = 0
        self.rejected_count = 0
        writer.register("location.store", self._store)
        writer.register("input.rejected", self._rejected)

    # -- calls ---------------------------------------------------------------------------
    def call_arrived(self, call_id: str, number: str, at: datetime) -> str:
        """Register a live call; locations received for its number shortly before are its own."""
        key = caller_key(number)
        if not key:
            return key
        self.calls_by_key[key].add(call_id)
        early = [r for r in self.pending.pop(key, []) if r.received_at >= at - self.before]
        self.by_call[call_id].extend(early)
        self._event(call_id)
        if early:
            self._event(call_id).set()
            log.info("call=%s %d location(s) received before the call attached", call_id,
                     len(early))
        return key

    def call_ended(self, call_id: str, number: str) -> None:
        key = caller_key(number)
        self.calls_by_key.get(key, set()).discard(call_id)
        self.by_call.pop(call_id, None)
        self._arrived.pop(call_id, None)

    def _event(self, call_id: str) -> asyncio.Event:
        return self._arrived.setdefault(call_id, asyncio.Event())

    def best(self, call_id: str) -> Location | None:
        """The most useful location: with coordinates, smallest radius, newest."""
        usable = [r for r in self.by_call.get(call_id, []) if r.location.has_location]
        if not usable:
            return None
        return min(usable, key=lambda r: (not r.location.has_coordinates,
                                          r.location.radius_m if r.location.radius_m is not None
                                          else 1e9, -r.received_at.timestamp())).location

    async def wait_for_location(self, call_id: str, timeout: float) -> Location | None:
        """The best location now, or the first that arrives within ``timeout`` seconds."""
        if self.best(call_id) is None:
            event = self._event(call_id)
            event.clear()
            try:
                async with asyncio.timeout(timeout):  # 3.11's wait_for can lose a cancel
                    await event.wait()
            except TimeoutError:
                return None
        return self.best(call_id)

    # -- inputs --------------------------------------------------------------------------
    def received(self, location: Location, at: datetime, number: str | None = None,
                 call_id: str | None = None) -> None:
        """Store a location and attach it to its call (live, coming, or just ended)."""
        key = caller_key(number or location.caller_number)
        self.accepted += 1
        entry = Received(location, at)
        live = [call_id] if call_id else sorted(self.calls_by_key.get(key, ()))
        if live:
            for cid in live:
                self.by_call[cid].append(entry)
                self._event(cid).set()
                self.live.publish(cid, "location", source=location.source,
                                  latitude=location.latitude, longitude=location.longitude,
                                  radius_m=location.radius_m)
        elif key:
            self.pending[key].append(entry)
            self._prune(key, at)
        self.writer.submit("location.store", {
            "key": key, "call": call_id, "at": at, "source": location.source,
            "latitude": location.latitude, "longitude": location.longitude,
            "radius_m": location.radius_m, "confidence_pct": location.confidence_pct,
            "method": location.method, "civic": location.civic, "fix_time": location.fix_time,
            "warnings": list(location.warnings), "raw": _storable(location.raw[:65536])})
        log.info("location source=%s caller=%s live_calls=%s", location.source, key or "?",
                 ",".join(live) or "-")

    def _prune(self, key: str, now: datetime) -> None:
        self.pending[key] = [r for r in self.pending[key] if r.received_at >= now - self.before]

    def _store(self, s: Session, p: dict[str, Any]) -> None:
        conn = core(s)
        ticket_id = None
        if p["call"]:
            ticket_id = conn.scalar(_TICKET_OF_CALL, {"ch": p["call"]})
        elif p["key"]:
            ticket_id = conn.scalar(_LATEST_TICKET_OF_CALLER,
                                    {"key": p["key"], "since": p["at"] - self.after})
        conn.execute(insert(_LOCATIONS), {
            "ticket_id": ticket_id, "caller_key": p["key"], "source": p["source"],
            "latitude": p["latitude"], "longitude": p["longitude"], "radius_m": p["radius_m"],
            "confidence_pct": p["confidence_pct"], "method": p["method"],
            "civic": json.dumps(p["civic"]) if p["civic"] else None, "fix_time": p["fix_time"],
            "received_at": p["at"], "warnings": "\n".join(p["warnings"]), "raw": p["raw"]})

    def rejected(self, source: str, origin: str, reason: str, raw: str, at: datetime) -> None:
        raw, reason = _storable(raw), _storable(reason)
        self.rejected_count += 1
        log.warning("rejected %s from %s: %s", source, origin or "?", reason)

        self.writer.submit("input.rejected", {"at": at, "source": source, "origin": origin[:128],
                                              "reason": reason[:2000], "raw": raw[:65536]})

    def _rejected(self, s: Session, p: dict[str, Any]) -> None:
        core(s).execute(insert(table(InputRejection)), {
            "received_at": p["at"], "source": p["source"], "origin": p["origin"],
            "reason": p["reason"], "raw": p["raw"]})


def _storable(text: str) -> str:
    """PostgreSQL text cannot hold NUL: keep the evidence visible instead of losing the row."""
    return text.replace("\x00", "\\x00")


def location_summary(location: Location) -> dict[str, object]:
    data = asdict(location)
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()
            if k in ("source", "latitude", "longitude", "radius_m", "confidence_pct", "method",
                     "fix_time")}
