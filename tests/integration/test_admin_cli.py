"""Admin CLI against a real database: operators, shifts, tickets (as an admin or a script)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
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
    assert listed == [{"id": listed[0]["id"], "operator": "op7",
                       "starts_at": "2025-05-19T00:00:00+00:00",
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


def local(delta_h: float) -> str:
    """A site-local (WIB) time `delta_h` hours from now, as the shift options take it."""
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    return (datetime.now(ZoneInfo("Asia/Jakarta")) + timedelta(hours=delta_h)).strftime(
        "%Y-%m-%d %H:%M")


def cli_runner(var_dir: Path, db_url: str
               ) -> Callable[..., Awaitable[subprocess.CompletedProcess[str]]]:
    async def run(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(cli, var_dir, db_url, *args)

    return run


async def seed(db_url: str, shifts: dict[str, list[tuple[float, float]]]) -> None:
    """Operators with shifts (hours from now), through the same functions the CLI uses."""
    from datetime import UTC, datetime, timedelta

    from ari_app.routing.operators import add_operator, add_shift

    now = datetime.now(UTC)
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            for name, spans in shifts.items():
                await add_operator(s, load_site("jepara"), name, name, now)
                for start, end in spans:
                    await add_shift(s, name, now + timedelta(hours=start),
                                    now + timedelta(hours=end))
    finally:
        await engine.dispose()


async def stored(db_url: str) -> tuple[list[tuple[str, bool]], list[tuple[int, str]]]:
    """Operators (name, active) and shifts (id, operator) as the database holds them."""
    from ari_app.routing.operators import list_operators, list_shifts

    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s:
            ops = [(o.name, o.active) for o in await list_operators(s, "jepara")]
            return ops, [(r.id, r.operator) for r in await list_shifts(s, "jepara")]
    finally:
        await engine.dispose()


async def test_bad_admin_input_gets_a_clear_message_and_changes_nothing(
    tmp_path: Path, db_url: str,
) -> None:
    run = cli_runner(tmp_path, db_url)
    await seed(db_url, {"op1": [(-2, 6)]})
    before = await stored(db_url)

    unknown = await run("operators", "disable", "op9")
    assert unknown.returncode == 2
    assert "no operator named 'op9' at site jepara (known: op1)" in unknown.stderr
    backwards = await run("shifts", "add", "op1", "--from", "2025-05-19 15:00", "--to",
                          "2025-05-19 07:00")
    assert backwards.returncode == 2 and "is not after start" in backwards.stderr
    no_shift = await run("shifts", "remove", "op1", "--at", "2020-01-01 10:00")
    assert no_shift.returncode == 2
    assert "op1 has no shift at 2020-01-01T10:00:00+07:00" in no_shift.stderr
    assert "nothing changed" in no_shift.stderr
    for refused in (("operators", "remove", "op1"), ("operators", "disable", "op1"),
                    ("shifts", "remove", "op1", "--at", local(0))):
        out = await run(*refused)
        assert out.returncode == 2, (refused, out.stdout, out.stderr)
        assert "leaves nobody on duty now (on duty: op1)" in out.stderr
        assert "add --force" in out.stderr
    assert await stored(db_url) == before

    forced = await run("operators", "disable", "op1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "WARNING: disabling op1 leaves nobody on duty now" in forced.stderr
    assert (await stored(db_url))[0] == [("op1", False)]
    again = await run("operators", "disable", "op1")
    assert again.returncode == 0 and "already disabled; nothing changed" in again.stdout


async def test_operators_and_shifts_can_be_undone_by_id_or_by_operator_and_time(
    tmp_path: Path, db_url: str,
) -> None:
    run = cli_runner(tmp_path, db_url)
    await seed(db_url, {"op1": [(-1, 7)], "op2": [(-1, 7), (10, 18)]})
    listed = json.loads((await run("shifts", "list", "--json")).stdout)
    first, second, later = listed
    assert (first["operator"], second["operator"], later["operator"]) == ("op1", "op2", "op2")
    by_time = await run("shifts", "remove", "op2", "--at", local(12))
    assert by_time.returncode == 0, by_time.stderr
    assert f"shift {later['id']} of op2 removed" in by_time.stdout
    by_id = await run("shifts", "remove", str(first["id"]))
    assert by_id.returncode == 0, by_id.stderr
    assert (await stored(db_url))[1] == [(second["id"], "op2")]
    # Asterisk is not rendered here: the command says so instead of pretending it reloaded.
    assert "Asterisk config not rendered yet" in by_id.stdout
    assert "the app is not running" in by_id.stdout

    disabled = await run("operators", "disable", "op1")
    assert disabled.returncode == 0 and "operator op1 disabled" in disabled.stdout
    assert (await run("operators", "enable", "op1")).returncode == 0
    password = await run("operators", "passwd", "op1")
    assert password.returncode == 0 and "password:" in password.stdout
    removed = await run("operators", "remove", "op2", "--force")
    assert removed.returncode == 0, removed.stderr
    assert "operator op2 removed with 1 shift(s)" in removed.stdout
    assert "WARNING: removing op2 leaves nobody on duty" in removed.stderr
    assert await stored(db_url) == ([("op1", True)], [])
