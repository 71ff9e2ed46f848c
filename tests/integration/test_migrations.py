"""Migrations keep what is stored: 0008 rereads the system's old `ghost` rows (SQLite and
PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from alembic import command
from sqlalchemy import text

from ari_app.tickets.db import make_engine
from ari_app.tickets.migrate import alembic_config, upgrade

INSERT = ("INSERT INTO tickets (reference, site, caller_number, caller_key, kind, category,"
          " priority, status, silent, silent_confirmed, notes, callback_needed, arrived_at,"
          " operator_answered_at, outcome) VALUES (:ref, 'jepara', '0812', '+62812', 'emergency',"
          " 'uncategorised', 3, :status, false, false, '', false, :at, :answered, 'ghost')")


async def test_0008_reads_the_systems_old_ghost_rows_as_silent_unreached_and_keeps_operators(
        db_url: str) -> None:
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007")
    engine = make_engine(db_url)
    at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)
    try:
        async with engine.begin() as conn:
            for ref, status, answered in (("SYS", "abandoned", None),   # written by the system
                                          ("OPR", "ghost", None),        # marked by an operator
                                          ("TALKED", "new", at)):        # an operator answered
                await conn.execute(text(INSERT), {"ref": ref, "status": status, "at": at,
                                                  "answered": answered})
        await asyncio.to_thread(upgrade, db_url)
        async with engine.connect() as conn:
            rows = {r[0]: tuple(r[1:]) for r in await conn.execute(text(
                "SELECT reference, outcome, callback_needed, language FROM tickets"))}
            audit = [tuple(r) for r in await conn.execute(text(
                "SELECT t.reference, a.actor, a.action, a.detail FROM ticket_audit a"
                " JOIN tickets t ON t.id = a.ticket_id"))]
        assert rows == {"SYS": ("silent-unreached", True, None), "OPR": ("ghost", False, None),
                        "TALKED": ("ghost", False, None)}
        [(ref, actor, action, detail)] = audit
        assert (ref, actor, action) == ("SYS", "migration", "outcome reread")
        assert '"before": "ghost"' in detail
        await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0007")
        async with engine.connect() as conn:
            back = {r[0]: r[1] for r in await conn.execute(text(
                "SELECT reference, outcome FROM tickets"))}
            left = (await conn.execute(text("SELECT count(*) FROM ticket_audit"))).scalar_one()
        assert back == {"SYS": "ghost", "OPR": "ghost", "TALKED": "ghost"} and left == 0
    finally:
        await engine.dispose()
        await asyncio.to_thread(upgrade, db_url)
