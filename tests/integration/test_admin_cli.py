"""Admin CLI against a real database: operators, shifts, tickets (as an admin or a script)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from ari_app.clock import Clock
from ari_app.config import load_site
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.service import TicketService
from ari_app.tickets.writer import Writer


@asynccontextmanager
async def ticket_service(tmp_path: Path, db_url: str) -> AsyncIterator[tuple[TicketService, Any]]:
    """The app's ticket service on the test database; everything is written on exit."""
    site = load_site("jepara")
    engine = make_engine(db_url)
    writer = Writer(sessions(engine), tmp_path / "journal.db", node="test")
    task = asyncio.create_task(writer.run())
    try:
        yield TicketService(writer, site.code, site.reference_prefix, site.timezone), Clock().now()
        await writer.flush()
    finally:
        task.cancel()
        await engine.dispose()
        writer.close()


def cli(var_dir: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "SIAGA112_SITE": "jepara"}
    return subprocess.run([sys.executable, "-m", "ari_app.cli", "--var-dir", str(var_dir), *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


async def test_admin_adds_operator_and_shift_then_lists_them(tmp_path: Path, db_url: str) -> None:
    added = await asyncio.to_thread(cli, tmp_path, db_url, "operators", "add", "op7",
                                    "--display-name", "Sari")
    assert added.returncode == 0, added.stderr
    assert "password:" in added.stdout
    again = await asyncio.to_thread(cli, tmp_path, db_url, "operators", "add", "op7")
    assert again.returncode == 2 and "already exists" in again.stderr
    shift = await asyncio.to_thread(cli, tmp_path, db_url, "shifts", "add", "op7", "--from",
                                    "2025-05-19 07:00", "--to", "2025-05-19 15:00")
    assert shift.returncode == 0, shift.stderr
    bad = await asyncio.to_thread(cli, tmp_path, db_url, "shifts", "add", "op7", "--from",
                                  "7am", "--to", "2025-05-19 15:00")
    assert bad.returncode == 2 and "--from: expected YYYY-MM-DD HH:MM" in bad.stderr
    listed = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "shifts", "list",
                                                 "--json")).stdout)
    assert listed == [{"operator": "op7", "starts_at": "2025-05-19T00:00:00+00:00",
                       "ends_at": "2025-05-19T08:00:00+00:00"}]
    ops = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "operators", "list",
                                              "--json")).stdout)
    assert [o["name"] for o in ops] == ["op7"]


async def test_tickets_list_and_show_read_what_the_service_wrote(tmp_path: Path,
                                                                 db_url: str) -> None:
    async with ticket_service(tmp_path, db_url) as (service, now):
        service.open("chan-1", "081234", now)
        service.change("chan-1", "menu", now, category="fire", priority=1)
    listed = await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "list", "--json")
    [row] = json.loads(listed.stdout)
    assert row["category"] == "fire" and row["reference"].startswith("JPR-")
    shown = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "show",
                                                row["reference"], "--json")).stdout)
    assert [a["action"] for a in shown["audit"]] == ["opened", "menu"]
    assert shown["audit"][1]["detail"] == {"category": "fire", "priority": 1}
    text = await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "list")
    assert row["reference"] in text.stdout
    missing = await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "show", "JPR-0")
    assert missing.returncode == 1 and "no ticket JPR-0" in missing.stderr




async def test_supervisor_clears_flags_and_history_counts_only_what_came_after(
    tmp_path: Path, db_url: str,
) -> None:
    async with ticket_service(tmp_path, db_url) as (service, now):
        for i in range(3):
            service.open(f"g{i}", "081277770001", now, caller_key="+6281277770001")
            service.change(f"g{i}", "ended", now, outcome="ghost")
    history = json.loads((await asyncio.to_thread(
        cli, tmp_path, db_url, "callers", "history", "0812-7777-0001", "--json")).stdout)
    assert history["counts"]["ghost"] == 3 and history["flagged"] is True
    cleared = await asyncio.to_thread(cli, tmp_path, db_url, "callers", "clear", "081277770001",
                                      "--by", "supervisor1", "--reason", "hospital line")
    assert cleared.returncode == 0, cleared.stderr
    history = json.loads((await asyncio.to_thread(
        cli, tmp_path, db_url, "callers", "history", "+6281277770001", "--json")).stdout)
    assert history["counts"]["ghost"] == 0 and history["flagged"] is False
    ref = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "list",
                                              "--json")).stdout)[0]["reference"]
    shown = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "show", ref,
                                                "--json")).stdout)
    assert any(a["action"] == "flags cleared" and a["actor"] == "supervisor1"
               for a in shown["audit"])
    marked = await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "mark", ref, "prank",
                                     "--by", "op1")
    assert marked.returncode == 0
    shown = json.loads((await asyncio.to_thread(cli, tmp_path, db_url, "tickets", "show", ref,
                                                "--json")).stdout)
    assert shown["status"] == "prank"
