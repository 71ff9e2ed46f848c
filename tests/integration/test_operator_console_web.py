"""The operator console's web side on a real database (no Asterisk): language per user, ready
state linked to the SIP operator and audited, recordings only for those allowed, closing tickets."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from ari_app.config import Site
from ari_app.routing.operators import add_operator
from ari_app.tickets.console_models import OperatorStateLog
from ari_app.tickets.models import Ticket, TicketAudit
from ari_app.web.profiles import link_operator
from tests.integration.console_stack import WebStack, browser, web_stack


def cli(var_dir: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`siaga112 ...` as an admin runs it, on this test's database."""
    env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin", "SIAGA112_SITE": "jepara"}
    return subprocess.run([sys.executable, "-m", "ari_app.cli", "--var-dir", str(var_dir), *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


async def linked_user(stack: WebStack, user: str, operator: str, role: str = "operator") -> str:
    password = await stack.add_user(user, role)
    async with stack.app.sessions() as s, s.begin():
        await add_operator(s, stack.app.settings.site, operator, operator.upper(),
                           stack.app.settings.clock.now())
        await link_operator(s, user, operator)
    return password


async def test_pages_are_indonesian_by_default_and_english_by_each_users_choice(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        pw = await stack.add_user("sari", "operator")
        await stack.add_user("budi", "operator")
        async with browser() as http:
            async with http.get(stack.url + "/login") as resp:
                page = await resp.text()
                assert '<html lang="id">' in page and "Kata sandi" in page and "Password" not in page
            async with http.get(stack.url + "/complaint?lang=en") as resp:
                page = await resp.text()
                assert '<html lang="en">' in page and "Public complaint" in page
            async with http.get(stack.url + "/login") as resp:  # the choice is kept (cookie)
                assert "Password" in await resp.text()
        async with browser() as http:
            csrf = await stack.login(http, "sari", pw)
            async with http.get(stack.url + "/console") as resp:
                page = await resp.text()
                assert "Penelepon menunggu" in page and "Callers waiting" not in page
            async with http.post(stack.url + "/console/lang", json={"lang": "en"},
                                 headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 200
            async with http.get(stack.url + "/console") as resp:
                page = await resp.text()
                assert '<html lang="en">' in page and "Callers waiting" in page
            async with http.post(stack.url + "/console/lang", json={"lang": "fr"},
                                 headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 422 and "expected one of id, en" in (await resp.json())["error"]
            async with http.post(stack.url + "/console/lang", json={"lang": "id"}) as resp:
                assert resp.status == 403  # no CSRF token, no change
        # one user's English is not another's
        async with browser() as http:
            await stack.login(http, "budi", "correct horse battery")
            async with http.get(stack.url + "/console") as resp:
                assert "Penelepon menunggu" in await resp.text()


async def test_ready_state_belongs_to_the_linked_operator_is_audited_and_gates_the_roster(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        pw = await linked_user(stack, "sari", "op_sari")
        other_pw = await stack.add_user("tamu", "operator")
        roster = stack.app.roster
        async with browser() as http:
            csrf = await stack.login(http, "tamu", other_pw)
            async with http.post(stack.url + "/console/state", json={"state": "ready"},
                                 headers={"X-CSRF-Token": csrf}) as resp:
                assert resp.status == 409 and "not linked" in (await resp.json())["error"]
        async with browser() as http:
            csrf = await stack.login(http, "sari", pw)
            h = {"X-CSRF-Token": csrf}
            assert roster.ready("op_sari")  # never touched: ready, as before the console existed
            async with http.post(stack.url + "/console/state", json={"state": "not_ready",
                                                                    "reason": "break"}, headers=h) as resp:
                assert resp.status == 200
                view = await resp.json()
                assert view["state"] == "not_ready" and view["reason"] == "break"
                assert view["registered"] is False  # no phone registered: shown as such
            assert not roster.ready("op_sari")
            async with http.post(stack.url + "/console/state", json={"state": "not_ready",
                                                                    "reason": "nap"}, headers=h) as resp:
                assert resp.status == 422 and "break, training, meeting" in (await resp.json())["error"]
            async with http.post(stack.url + "/console/state", json={"state": "wrap_up"},
                                 headers=h) as resp:
                assert resp.status == 422
            async with http.post(stack.url + "/console/state", json={"state": "ready"},
                                 headers=h) as resp:
                assert resp.status == 200 and (await resp.json())["state"] == "ready"
            assert roster.ready("op_sari")
        await stack.app.writer.flush(10)
        async with stack.app.sessions() as s:
            log = list(await s.scalars(select(OperatorStateLog).order_by(OperatorStateLog.id)))
        assert [(r.operator_name, r.previous, r.state, r.reason, r.actor) for r in log] == [
            ("op_sari", "ready", "not_ready", "break", "sari"),
            ("op_sari", "not_ready", "ready", None, "sari")]
        assert log[0].at <= log[1].at
        # a restarted app reads the state back from the database
        stack.app.states.current.clear()
        async with stack.app.sessions() as s:
            await stack.app.states.load(s)
        assert stack.app.states.get("op_sari").state == "ready"


async def test_recording_plays_for_a_supervisor_and_its_operator_and_is_403_for_others(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    wav = var_dir / "asterisk" / "spool" / "recording" / "call-1.wav"
    wav.parent.mkdir(parents=True)
    wav.write_bytes(b"RIFF" + b"\0" * 40)
    async with web_stack(db_url, var_dir, jepara) as stack:
        sari_pw = await linked_user(stack, "sari", "op_sari")
        budi_pw = await linked_user(stack, "budi", "op_budi")
        boss_pw = await stack.add_user("boss", "supervisor")
        ref = "JPR-20250519-0001"
        await stack.ticket(ref, channel_id="call-1", caller_number="0812", operator="op_sari",
                           recording_path=str(wav))
        await stack.ticket("JPR-20250519-0002", channel_id="call-2", operator="op_sari",
                           recording_path="/etc/passwd")
        for user, pw, status in [("budi", budi_pw, 403), ("sari", sari_pw, 200), ("boss", boss_pw, 200)]:
            async with browser() as http:
                await stack.login(http, user, pw)
                async with http.get(f"{stack.url}/console/recording/{ref}") as resp:
                    assert resp.status == status, (user, resp.status)
                    if status == 200:
                        assert resp.headers["Content-Type"] == "audio/wav"
                        assert (await resp.read()).startswith(b"RIFF")
                async with http.get(f"{stack.url}/console/card?ref={ref}") as resp:
                    shown = 'id="recording"' in await resp.text()
                    assert shown == (status == 200), user
        async with browser() as http:  # a path outside var/ is never served
            await stack.login(http, "boss", boss_pw)
            async with http.get(f"{stack.url}/console/recording/JPR-20250519-0002") as resp:
                assert resp.status == 404
        async with stack.app.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.reference == ref))
            assert t is not None
            audit = [(a.actor, a.action) for a in await s.scalars(
                select(TicketAudit).where(TicketAudit.ticket_id == t.id).order_by(TicketAudit.id))]
        assert audit[1:] == [("budi", "recording refused"), ("sari", "recording played"),
                             ("boss", "recording played")]


async def test_a_ticket_is_resolved_then_closed_with_a_note(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        pw = await stack.add_user("sari", "operator")
        ref = "JPR-20250519-0003"
        await stack.ticket(ref, channel_id="call-3", status="dispatched", notes="api kecil")
        async with browser() as http:
            csrf = await stack.login(http, "sari", pw)
            h = {"X-CSRF-Token": csrf}
            url = f"{stack.url}/console/tickets/{ref}/close"
            async with http.post(url, json={"status": "resolved"}, headers=h) as resp:
                assert resp.status == 422 and "note" in (await resp.json())["error"]
            async with http.post(url, json={"status": "resolved", "note": "Api padam, unit kembali"},
                                 headers=h) as resp:
                assert resp.status == 200
            async with http.post(url, json={"status": "resolved", "note": "lagi"}, headers=h) as resp:
                assert resp.status == 409
            async with http.post(url, json={"status": "closed", "note": "Ditutup"}, headers=h) as resp:
                assert resp.status == 200
            async with http.post(url, json={"status": "closed", "note": "lagi"}, headers=h) as resp:
                assert resp.status == 409
        async with stack.app.sessions() as s:
            t = await s.scalar(select(Ticket).where(Ticket.reference == ref))
            assert t is not None and t.status == "closed"
            assert t.notes == "api kecil\nApi padam, unit kembali\nDitutup"
            actions = [(a.actor, a.action) for a in await s.scalars(
                select(TicketAudit).where(TicketAudit.ticket_id == t.id).order_by(TicketAudit.id))]
        assert actions[1:] == [("sari", "resolved"), ("sari", "closed")]


async def test_wallboard_shows_operators_by_state_and_todays_answer_and_abandon_figures(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        boss_pw = await stack.add_user("boss", "supervisor")
        op_pw = await stack.add_user("sari", "operator")
        now = stack.app.settings.clock.now()
        for i, (answer_s, outcome) in enumerate([(5, "genuine"), (30, "genuine"), (None, "abandoned")]):
            await stack.ticket(f"JPR-20250519-00{i + 1:02d}", channel_id=f"c{i}", outcome=outcome,
                               arrived_at=now - timedelta(seconds=1),  # today, even at 23:59
                               operator_answered_at=(now + timedelta(seconds=answer_s - 1)
                                                     if answer_s is not None else None))
        roster = stack.app.roster
        roster.on_shift = ["op_a", "op_b", "op_c", "op_d"]
        roster.reachable = {"op_a": True, "op_b": True, "op_c": True, "op_d": False}
        stack.app.states.set("op_b", "not_ready", actor="test", reason="meeting")
        stack.app.states.set("op_c", "wrap_up", actor="system", wrap_up_s=600)
        async with browser() as http:
            await stack.login(http, "sari", op_pw)
            async with http.get(stack.url + "/wallboard") as resp:
                assert resp.status == 403
        async with browser() as http:
            await stack.login(http, "boss", boss_pw)
            async with http.get(stack.url + "/wallboard.json") as resp:
                board = await resp.json()
            assert board["by_state"] == {"ready": 1, "not_ready:meeting": 1, "wrap_up": 1,
                                         "unregistered": 1}
            assert board["calls_today"] == 3 and board["within_10s_pct"] == 33.3
            assert board["abandoned_today"] == 1 and board["waiting"] == 0
            async with http.get(stack.url + "/wallboard") as resp:
                page = await resp.text()
                assert resp.status == 200 and "Papan pantau" in page and "Rapat" in page
            async with http.get(stack.url + "/wallboard/events") as resp:
                line = b""
                while not line.startswith(b"data: "):
                    line = await asyncio.wait_for(resp.content.readline(), 10)
                assert json.loads(line[6:])["by_state"]["wrap_up"] == 1


async def test_users_link_ties_a_user_to_one_operator_and_unlink_undoes_it(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        await stack.add_user("sari", "operator")
        await stack.add_user("budi", "operator")
        async with stack.app.sessions() as s, s.begin():
            await add_operator(s, jepara, "op1", "OP1", stack.app.settings.clock.now())
        done = await asyncio.to_thread(cli, var_dir, db_url, "users", "link", "sari",
                                       "--operator", "op1", "--lang", "en")
        assert done.returncode == 0 and "operator op1, language en" in done.stdout, done.stderr
        taken = await asyncio.to_thread(cli, var_dir, db_url, "users", "link", "budi", "--operator", "op1")
        assert taken.returncode == 2 and "already linked to user 'sari'" in taken.stderr
        missing = await asyncio.to_thread(cli, var_dir, db_url, "users", "link", "budi", "--operator", "op9")
        assert missing.returncode == 2 and "no operator named 'op9'" in missing.stderr
        undone = await asyncio.to_thread(cli, var_dir, db_url, "users", "link", "sari", "--unlink")
        assert undone.returncode == 0
        relinked = await asyncio.to_thread(cli, var_dir, db_url, "users", "link", "budi", "--operator", "op1")
        assert relinked.returncode == 0, relinked.stderr


async def test_the_live_queue_shows_each_waiting_callers_reference_and_database_badges(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    # The FLAGGED and CALLBACK badges come from the database (the ticket's screening policy, and
    # another ticket of the same number still to be called back), looked up once per caller.
    async with web_stack(db_url, var_dir, jepara) as stack:
        queue, live = stack.console.queue, stack.app.live
        earlier = "6281200001111"
        await stack.ticket("JPR-20250519-0001", channel_id="old", caller_key=earlier,
                           callback_needed=True, status="abandoned")
        await stack.ticket("JPR-20250519-0002", channel_id="done", caller_key="6281200002222",
                           callback_needed=True, status="closed")  # called back already
        await stack.ticket("JPR-20250519-0003", channel_id="c1", caller_key=earlier,
                           policy="warned: flagged (3 ghost calls)")
        await stack.ticket("JPR-20250519-0004", channel_id="c2", caller_key="6281200002222",
                           policy="screen: unscreened")
        await stack.ticket("JPR-20250519-0005", channel_id="c3", caller_key=None)  # withheld
        changed = asyncio.Event()
        queue.listeners.append(changed.set)

        def rows() -> dict[str, dict[str, object]]:
            return {r["call"]: r for r in queue.snapshot()["waiting"]}

        for call, caller in (("c1", "081200001111"), ("c2", "081200002222"), ("c3", "")):
            live.publish(call, "arrived", caller=caller)
            live.publish(call, "queued", priority=2)
        async with asyncio.timeout(15):
            while len(rows()) < 3 or not all(r["reference"] for r in rows().values()):
                changed.clear()
                await changed.wait()
        got = {c: (r["reference"], r["badges"]) for c, r in rows().items()}
        assert got == {"c1": ("JPR-20250519-0003", ["flagged", "callback"]),
                       "c2": ("JPR-20250519-0004", []),
                       "c3": ("JPR-20250519-0005", [])}
        live.publish("c1", "ended", reason="caller hangup")
        async with asyncio.timeout(15):
            while "c1" in rows():
                changed.clear()
                await changed.wait()
        assert sorted(rows()) == ["c2", "c3"]
