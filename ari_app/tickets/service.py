"""Ticket service: open at StasisStart, change with an audit line, never block the call.

Every operation is queued on the Writer and keyed by the caller's channel id, so replaying it
(after a crash or a database outage) changes nothing twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from ari_app.tickets.models import (
    CallRecord,
    LocationRecord,
    Ticket,
    TicketAudit,
    TicketCounter,
    table,
)
from ari_app.tickets.writer import NOTICE, Writer, core, insert_later

log = logging.getLogger(__name__)

STATUSES = ("new", "in_call", "classified", "dispatched", "acknowledged", "resolved", "closed",
            "abandoned", "prank", "duplicate", "forwarded")

# How far a ticket has got. The system only ever moves a ticket forward: a late, replayed or
# adopted write ("new" at hang-up, "abandoned" for a call an operator did answer) never undoes
# a stage the call really reached. Ended without a human (abandoned, forwarded) sits just above
# new: a late "operator answered" (CEL after a restart) still moves it on. An operator's
# judgement (prank, ghost, duplicate) is never overridden by the system.
STAGE = {"new": 0, "abandoned": 1, "forwarded": 1, "in_call": 2, "classified": 3,
         "dispatched": 4, "acknowledged": 5, "resolved": 6, "closed": 7,
         "prank": 100, "ghost": 100, "duplicate": 100}


RESTART_UNCATEGORISED = "uncategorised (restart)"  # for the operator to classify
CUT_BY_RESTART = "asterisk restart"  # the call died with Asterisk: its caller is called back
NODE_LOST = "node lost"  # the call died with its node (another node saw its lease run out)
CALLED_BACK_EVEN_IF_TALKED = (CUT_BY_RESTART, NODE_LOST)  # cut off mid-call: call them back


def furthest(current: str, proposed: str) -> str:
    """The status a ticket has after the system proposes ``proposed``: never backwards."""
    return proposed if STAGE.get(proposed, 0) > STAGE.get(current, 0) else current


# The journal's appliers run a few times per call: plain Core statements, built once (the ORM's
# unit of work cost more CPU than everything else a call does in the app; see BENCHMARKS.md).
_TICKETS, _AUDIT, _COUNTERS = table(Ticket), table(TicketAudit), table(TicketCounter)
_LOCATIONS = table(LocationRecord)
_CALLS = table(CallRecord)
_CALL_CLOSE = (update(_CALLS)
               .where(_CALLS.c.channel_id == bindparam("ch"), _CALLS.c.ended_at.is_(None))
               .values(ended_at=bindparam("at"), end_reason=bindparam("why")))
_TICKET_BY_CHANNEL = select(_TICKETS).where(_TICKETS.c.channel_id == bindparam("ch"))
_TICKET_ID = select(_TICKETS.c.id).where(_TICKETS.c.channel_id == bindparam("ch"))
_TICKET_REFERENCE = select(_TICKETS.c.reference).where(_TICKETS.c.channel_id == bindparam("ch"))
_TICKET_SET = update(_TICKETS).where(_TICKETS.c.id == bindparam("tid"))
_ATTACH_LOCATIONS = (update(_LOCATIONS)
                     .where(_LOCATIONS.c.caller_key == bindparam("key"),
                            _LOCATIONS.c.ticket_id.is_(None),
                            _LOCATIONS.c.received_at >= bindparam("since"))
                     .values(ticket_id=bindparam("tid")))
# What a change always reads of its ticket beside the fields it sets (see _change).
_CHANGE_READS = ("id", "status", "callback_needed", "operator_answered_at")
_change_selects: dict[tuple[str, ...], Select[Any]] = {}


def _change_select(fields: Iterable[str]) -> Select[Any]:
    """The ticket's columns a change needs, not all of its 37: reading and converting the
    whole row was the largest single cost of the database writer (a few changes per call)."""
    keys = tuple(dict.fromkeys([*_CHANGE_READS, *fields]))
    stmt = _change_selects.get(keys)
    if stmt is None:
        for key in keys:
            if key not in _TICKETS.c:
                raise KeyError(f"tickets has no column {key!r}")
        stmt = select(*(_TICKETS.c[k] for k in keys)).where(
            _TICKETS.c.channel_id == bindparam("ch"))
        if len(_change_selects) < 256:  # the app's call sites use a few dozen field sets
            _change_selects[keys] = stmt
    return stmt


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def next_reference(s: Session, site: str, prefix: str, day: str) -> str:
    """``<PREFIX>-<YYYYMMDD>-<NNNN>``, counted per site and site-local day.

    One upsert that returns the new count: nodes sharing one PostgreSQL that open the first
    tickets of a day at the same moment get distinct numbers (a read, then an insert, would let
    both insert the day's row and one fail on its primary key).
    """
    conn = core(s)
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = upsert(_COUNTERS).values(site=site, day=day, last=1)
    stmt = stmt.on_conflict_do_update(index_elements=[_COUNTERS.c.site, _COUNTERS.c.day],
                                      set_={"last": _COUNTERS.c.last + 1})
    last = conn.scalar(stmt.returning(_COUNTERS.c.last))
    if last is None:
        raise RuntimeError(f"site={site} day={day}: the reference counter returned nothing")
    return f"{prefix}-{day}-{int(last):04d}"


class TicketService:
    def __init__(self, writer: Writer, site: str, prefix: str, tz: ZoneInfo) -> None:
        self.writer, self.site, self.prefix, self.tz = writer, site, prefix, tz
        writer.register("ticket.open", self._open, holds_later=True)
        writer.register("ticket.change", self._change)
        writer.register(NOTICE, self._notice)
        writer.register("ticket.reconcile", self._reconcile)
        writer.register("ticket.restart_uncategorised", self._restart_uncategorised)

    def open(self, channel_id: str, caller: str, at: datetime,
             on_reference: Callable[[str], None] | None = None, caller_key: str = "",
             attach_locations_since: datetime | None = None, **fields: Any) -> None:
        def done(reference: Any) -> None:
            if on_reference is not None and isinstance(reference, str):
                on_reference(reference)

        self.writer.submit("ticket.open", {
            "channel": channel_id, "caller": caller, "at": at, "caller_key": caller_key,
            "attach_since": attach_locations_since, "fields": fields}, done)

    def _open(self, s: Session, p: dict[str, Any]) -> str:
        channel_id, at, caller_key = p["channel"], p["at"], p["caller_key"]
        conn = core(s)
        reference = conn.scalar(_TICKET_REFERENCE, {"ch": channel_id})
        if reference is None:
            day = at.astimezone(self.tz).strftime("%Y%m%d")
            reference = next_reference(s, self.site, self.prefix, day)
            opened = conn.execute(insert(_TICKETS), {
                "reference": reference, "site": self.site, "channel_id": channel_id,
                "caller_number": p["caller"], "caller_key": caller_key, "arrived_at": at,
                "status": "new", **p["fields"]})
            if opened.inserted_primary_key is None:
                raise RuntimeError(f"call={channel_id}: the database gave the ticket no id")
            ticket_id = int(opened.inserted_primary_key[0])
            if caller_key and p["attach_since"] is not None:
                # Locations (AML) that reached us before the call belong to it.
                conn.execute(_ATTACH_LOCATIONS, {"tid": ticket_id, "key": caller_key,
                                                 "since": p["attach_since"]})
            insert_later(s, _AUDIT, {
                "ticket_id": ticket_id, "at": at, "actor": "system", "action": "opened",
                "detail": json.dumps({"caller": p["caller"], "channel": channel_id})})
            log.info("call=%s ticket=%s opened", channel_id, reference)
        return str(reference)

    def change(self, channel_id: str, action: str, at: datetime, actor: str = "system",
               only_if_unset: tuple[str, ...] = (), audit: dict[str, Any] | None = None,
               status_from: tuple[str, ...] | None = None, **fields: Any) -> None:
        """Set fields on the call's ticket and write one audit line describing the change."""
        self.writer.submit("ticket.change", {
            "channel": channel_id, "action": action, "at": at, "actor": actor,
            "only_if_unset": list(only_if_unset), "audit": audit or {},
            "status_from": list(status_from) if status_from is not None else None,
            "fields": fields})

    def _change(self, s: Session, p: dict[str, Any]) -> None:
        conn = core(s)
        ticket = conn.execute(_change_select(p["fields"]),
                              {"ch": p["channel"]}).mappings().first()
        if ticket is None:
            log.error("call=%s no ticket for %s", p["channel"], p["action"])
            return
        changed: dict[str, Any] = {}
        status_from = p["status_from"]
        if p["fields"].get("end_reason") == CUT_BY_RESTART and not ticket["callback_needed"]:
            changed["callback_needed"] = True  # cut off mid-call: call them back, talked or not
        for key, value in p["fields"].items():
            if key in p["only_if_unset"] and ticket[key] is not None:
                continue
            if key == "status":
                if status_from is not None and ticket["status"] not in status_from:
                    continue  # an operator's classification/dispatch during the call stands
                value = furthest(ticket["status"], value)
            if key == "callback_needed" and value and ticket["operator_answered_at"] is not None \
                    and p["fields"].get("operator_answered_at") is None \
                    and p["fields"].get("end_reason") != CUT_BY_RESTART:
                continue  # a human talked to the caller (a late or replayed write says not)
            if ticket[key] != value:
                changed[key] = value
        if changed:
            conn.execute(_TICKET_SET, {"tid": ticket["id"], **changed})
        insert_later(s, _AUDIT, {
            "ticket_id": ticket["id"], "at": p["at"], "actor": p["actor"], "action": p["action"],
            "detail": json.dumps({k: _jsonable(v) for k, v in changed.items()} | p["audit"],
                                 sort_keys=True)})

    def _notice(self, s: Session, p: dict[str, Any]) -> None:
        """What happened to a call's writes (refused, held, retried), on its ticket's audit."""
        conn = core(s)
        ticket_id = conn.scalar(_TICKET_ID, {"ch": p["ticket_channel"]})
        if ticket_id is None:
            log.warning("call=%s %s (no ticket yet): %s", p["ticket_channel"], p["action"],
                        p["detail"])
            return
        at = p["at"]
        at = datetime.fromtimestamp(at, UTC) if isinstance(at, (int, float)) else at
        insert_later(s, _AUDIT, {"ticket_id": ticket_id, "at": at, "actor": "journal",
                                      "action": p["action"],
                                      "detail": json.dumps(p["detail"], sort_keys=True)})

    def reconcile(self, channel_id: str, at: datetime, *, ended_at: datetime, end_reason: str,
                  known: dict[str, Any], unknown: list[str], answered_at: datetime | None = None,
                  operator: str | None = None, operator_answered_at: datetime | None = None,
                  human: bool = False, uncategorised_after_restart: bool = False) -> None:
        """Close the ticket of a call that ended while nobody here watched it.

        Decided in the write's own transaction: a ticket its call already closed (its closing
        write landed first) is left alone. ``human``: Asterisk's record shows an operator bridged
        to the caller. ``known``/``unknown`` go on the audit line as they are.
        """
        self.writer.submit("ticket.reconcile", {
            "channel": channel_id, "at": at, "ended_at": ended_at, "end_reason": end_reason,
            "answered_at": answered_at, "operator": operator,
            "operator_answered_at": operator_answered_at, "human": human,
            "known": known, "unknown": unknown,
            "uncategorised": uncategorised_after_restart})

    def _reconcile(self, s: Session, p: dict[str, Any]) -> None:
        conn = core(s)
        conn.execute(_CALL_CLOSE, {"ch": p["channel"], "at": p["ended_at"],
                                   "why": p["end_reason"][:40]})
        ticket = conn.execute(_TICKET_BY_CHANNEL, {"ch": p["channel"]}).mappings().first()
        if ticket is None or ticket["ended_at"] is not None:
            return  # no ticket to close, or its call closed it itself
        # never before anything the ticket knows happened (a record can lag our own writes)
        ended = max([p["ended_at"]] + [ticket[k] for k in ("arrived_at", "answered_at",
                                                             "queued_at", "operator_answered_at")
                                       if ticket[k] is not None])
        changed: dict[str, Any] = {"ended_at": ended, "end_reason": p["end_reason"][:40]}
        for key in ("answered_at", "operator", "operator_answered_at"):
            if p[key] is not None and ticket[key] is None:
                changed[key] = p[key]
        human = bool(p["human"] or ticket["operator_answered_at"] is not None)
        status = furthest(ticket["status"], "in_call" if human else "abandoned")
        if status != ticket["status"]:
            changed["status"] = status
        if (not human or p["end_reason"] in CALLED_BACK_EVEN_IF_TALKED) \
                and not ticket["callback_needed"]:
            changed["callback_needed"] = True  # no human, or cut off with Asterisk: call back
        if ticket["outcome"] is None:
            changed["outcome"] = "genuine" if human else "abandoned"
        if p["uncategorised"] and ticket["category"] == "uncategorised" \
                and ticket["menu_choice"] is None:
            changed["category"] = RESTART_UNCATEGORISED
        conn.execute(_TICKET_SET, {"tid": ticket["id"], **changed})
        insert_later(s, _AUDIT, {
            "ticket_id": ticket["id"], "at": p["at"], "actor": "system", "action": "reconciled",
            "detail": json.dumps({"changed": {k: _jsonable(v) for k, v in changed.items()},
                                  "known": p["known"], "unknown": p["unknown"]},
                                 sort_keys=True, default=str)})
        log.info("call=%s ticket=%s reconciled: %s", p["channel"], ticket["reference"],
                 p["end_reason"])

    def uncategorised_after_restart(self, channel_id: str, at: datetime) -> None:
        """An adopted caller whose menu choice never reached us: for the operator to classify.

        Applied in order after every write the previous app journaled, so a choice that was
        made and journaled is never overwritten.
        """
        self.writer.submit("ticket.restart_uncategorised", {"channel": channel_id, "at": at})

    def _restart_uncategorised(self, s: Session, p: dict[str, Any]) -> None:
        conn = core(s)
        ticket = conn.execute(_TICKET_BY_CHANNEL, {"ch": p["channel"]}).mappings().first()
        if ticket is None or ticket["menu_choice"] is not None \
                or ticket["category"] != "uncategorised":
            return
        conn.execute(_TICKET_SET, {"tid": ticket["id"], "category": RESTART_UNCATEGORISED})
        insert_later(s, _AUDIT, {
            "ticket_id": ticket["id"], "at": p["at"], "actor": "system",
            "action": "uncategorised (restart)",
            "detail": json.dumps({"category": RESTART_UNCATEGORISED,
                                  "why": "adopted after a restart before any menu choice "
                                         "reached us"})})
