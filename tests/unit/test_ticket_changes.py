"""Ticket writes as the journal applies them: what changes, what stands, what is refused."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.migrate import upgrade
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.tickets.service import TicketService
from ari_app.tickets.writer import Writer

AT = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)


async def _service(tmp_path: Path) -> tuple[TicketService, Writer]:
    url = f"sqlite+aiosqlite:///{tmp_path}/main.db"
    await asyncio.to_thread(upgrade, url)
    writer = Writer(sessions(make_engine(url)), tmp_path / "journal.db", node="t")
    return TicketService(writer, "jepara", "JPR", ZoneInfo("Asia/Jakarta")), writer


async def _applied(writer: Writer) -> tuple[Ticket, list[TicketAudit]]:
    task = asyncio.create_task(writer.run())
    await writer.flush(10)
    task.cancel()
    async with writer.sessions() as s:
        ticket = (await s.scalars(select(Ticket))).one()
        audit = list((await s.scalars(select(TicketAudit).order_by(TicketAudit.id))).all())
    return ticket, audit


async def test_changes_keep_operator_decisions_and_audit_only_what_changed(
    tmp_path: Path,
) -> None:
    tickets, writer = await _service(tmp_path)
    refs: list[str] = []
    tickets.open("ch-1", "081299990002", AT, refs.append, caller_key="+6281299990002")
    tickets.change("ch-1", "menu", AT, category="fire", priority=1)
    tickets.change("ch-1", "answered", AT + timedelta(seconds=1),
                   answered_at=AT + timedelta(seconds=1))
    # Set once: a second "answered" (an adopted call, say) does not move the first time.
    tickets.change("ch-1", "adopted", AT + timedelta(seconds=9), only_if_unset=("answered_at",),
                   answered_at=AT + timedelta(seconds=9))
    tickets.change("ch-1", "classified", AT + timedelta(seconds=20), actor="op1",
                   status="classified")
    # The call's own status change does not undo an operator's classification.
    tickets.change("ch-1", "ended", AT + timedelta(seconds=30), status_from=("new", "in_call"),
                   status="closed", ended_at=AT + timedelta(seconds=30))
    ticket, audit = await _applied(writer)
    assert refs == ["JPR-20250519-0001"] and ticket.reference == refs[0]
    assert (ticket.category, ticket.priority) == ("fire", 1)
    assert ticket.answered_at == AT + timedelta(seconds=1)
    assert ticket.status == "classified" and ticket.ended_at == AT + timedelta(seconds=30)
    assert [a.action for a in audit] == ["opened", "menu", "answered", "adopted", "classified",
                                         "ended"]
    details = {a.action: json.loads(a.detail) for a in audit}
    assert details["adopted"] == {}  # nothing changed, and the line says so
    assert details["ended"] == {"ended_at": (AT + timedelta(seconds=30)).isoformat()}
    assert audit[4].actor == "op1"
    writer.close()


async def test_a_change_naming_no_column_is_refused_and_kept_not_lost(tmp_path: Path) -> None:
    tickets, writer = await _service(tmp_path)
    tickets.open("ch-2", "081299990003", AT)
    tickets.change("ch-2", "menu", AT, categroy="fire")  # a typo in code, not caller input
    tickets.change("ch-2", "menu", AT, category="police")
    ticket, audit = await _applied(writer)
    assert writer.failed == ["ticket.change#2"]
    [(kind, error)] = writer.journal.db.execute("SELECT kind, error FROM dead").fetchall()
    assert kind == "ticket.change" and "categroy" in error
    assert ticket.category == "police"  # the writes around it landed
    # and the ticket's trail says a write was refused (a change: the later ones went on)
    assert [a.action for a in audit] == ["opened", "menu", "write refused"]
    refused = json.loads(audit[-1].detail)
    assert refused["write"] == "ticket.change#2" and refused["later writes"] == "go on"
    writer.close()


async def test_status_never_goes_backwards_whatever_order_the_writes_land_in(
    tmp_path: Path,
) -> None:
    tickets, writer = await _service(tmp_path)
    tickets.open("ch-3", "081299990004", AT)
    tickets.change("ch-3", "operator answered", AT, actor="op1", operator="op1",
                   operator_answered_at=AT, status="in_call")
    # the closing write of a call whose menu never classified it proposes "new", and an
    # adopted or replayed one "abandoned": an operator answered, so it stays in_call
    tickets.change("ch-3", "ended", AT + timedelta(seconds=30), status="new",
                   ended_at=AT + timedelta(seconds=30))
    tickets.change("ch-3", "ended", AT + timedelta(seconds=31), status="abandoned")
    ticket, audit = await _applied(writer)
    assert ticket.status == "in_call" and ticket.ended_at == AT + timedelta(seconds=30)
    assert "status" not in json.loads(audit[-1].detail)
    writer.close()


async def test_a_late_operator_answer_moves_an_abandoned_ticket_on(tmp_path: Path) -> None:
    tickets, writer = await _service(tmp_path)
    tickets.open("ch-4", "081299990005", AT)
    tickets.change("ch-4", "ended", AT, status="abandoned", callback_needed=True)
    tickets.change("ch-4", "reconciled", AT, status="in_call", operator="op2")  # from CEL
    tickets.change("ch-4", "ended", AT, status="new")
    ticket, _ = await _applied(writer)
    assert ticket.status == "in_call" and ticket.operator == "op2"
    writer.close()


def test_status_stages_are_ordered_and_an_operators_judgement_stands() -> None:
    from ari_app.tickets.service import furthest

    assert furthest("new", "in_call") == "in_call"
    assert furthest("in_call", "new") == "in_call"
    assert furthest("classified", "in_call") == "classified"
    assert furthest("in_call", "abandoned") == "in_call"
    assert furthest("new", "abandoned") == "abandoned"
    assert furthest("abandoned", "in_call") == "in_call"
    assert furthest("prank", "in_call") == "prank"


async def test_reconcile_closes_only_a_ticket_its_call_left_open(tmp_path: Path) -> None:
    tickets, writer = await _service(tmp_path)
    tickets.open("ch-5", "081299990006", AT)
    tickets.change("ch-5", "ended", AT + timedelta(seconds=5), ended_at=AT + timedelta(seconds=5),
                   end_reason="caller hangup", status="abandoned")
    # a reconcile pass that read the database before that write landed: a no-op
    tickets.reconcile("ch-5", AT + timedelta(seconds=60), ended_at=AT + timedelta(seconds=60),
                      end_reason="ended unseen (no record)", known={}, unknown=["end time"])
    ticket, audit = await _applied(writer)
    assert ticket.ended_at == AT + timedelta(seconds=5) and ticket.end_reason == "caller hangup"
    assert [a.action for a in audit] == ["opened", "ended"]
    writer.close()


async def test_reconcile_closes_an_open_ticket_from_the_record_and_puts_it_on_the_callback_list(
    tmp_path: Path,
) -> None:
    tickets, writer = await _service(tmp_path)
    tickets.open("ch-6", "081299990007", AT)
    tickets.change("ch-6", "answered", AT, answered_at=AT + timedelta(seconds=1))
    # the record lags our own writes: the end is never put before what the ticket knows
    tickets.reconcile("ch-6", AT + timedelta(seconds=90), ended_at=AT,
                      end_reason="asterisk restart", known={"source": "cel"},
                      unknown=["exact end time"])
    ticket, audit = await _applied(writer)
    assert (ticket.status, ticket.callback_needed, ticket.outcome) == ("abandoned", True,
                                                                       "abandoned")
    assert ticket.ended_at == AT + timedelta(seconds=1) and ticket.end_reason == "asterisk restart"
    detail = json.loads(audit[-1].detail)
    assert audit[-1].action == "reconciled" and detail["unknown"] == ["exact end time"]
    writer.close()
