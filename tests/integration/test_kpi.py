"""Supervisor KPIs on a seeded set of tickets equal figures computed by hand (page, CSV, CLI)."""

from __future__ import annotations

import asyncio
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import select

from ari_app.config import Site
from ari_app.tickets.models import Agency, Notification
from tests.integration.console_stack import WebStack, browser, web_stack

WIB = ZoneInfo("Asia/Jakarta")
T0 = datetime(2025, 5, 19, 10, 0, tzinfo=WIB)

# (answer wait s or None, outcome, category); the 6th arrives the next local day (still in range);
# one more arrives outside the range and must not count.
CALLS = [(5, "genuine", "fire"), (8, "genuine", "fire"), (15, "genuine", "health"),
         (25, "genuine", "police"), (None, "abandoned", "uncategorised"), (None, "ghost", "uncategorised"),
         (12, "prank", "police"), (40, "genuine", "natural_disaster")]


PRIORITY = {"fire": 1, "natural_disaster": 1, "health": 2, "police": 3, "uncategorised": 3}


async def seed(stack: WebStack) -> None:
    for i, (wait, outcome, category) in enumerate(CALLS):
        arrived = T0 + timedelta(hours=i * 2)  # 10:00 .. 00:00 next day (i=7 → 2025-05-20 00:00)
        # The app answers 1 s after arrival; the operator's phone rings 3 s before the answer.
        await stack.ticket(f"JPR-K-{i}", channel_id=f"k{i}", arrived_at=arrived, outcome=outcome,
                           category=category, priority=PRIORITY[category],
                           answered_at=arrived + timedelta(seconds=1),
                           operator_rung_at=arrived + timedelta(seconds=wait - 3) if wait else None,
                           operator_answered_at=arrived + timedelta(seconds=wait) if wait else None)
    # Forwarded to the 24-hour service: reported apart, in no share.
    await stack.ticket("JPR-K-FWD", channel_id="kfwd", arrived_at=T0, status="forwarded",
                       end_reason="forwarded to 110")
    await stack.ticket("JPR-K-OUT", channel_id="kout", arrived_at=T0 - timedelta(days=3),
                       outcome="genuine", operator_answered_at=T0 - timedelta(days=3))
    await stack.ticket("JPR-K-WEB", arrived_at=T0, kind="complaint", category="complaint",
                       outcome="complaint")  # a web complaint: a ticket, not a call
    async with stack.app.sessions() as s, s.begin():
        agencies = {a.code: a.id for a in await s.scalars(select(Agency))}
        from ari_app.tickets.models import Ticket
        tickets = {t.reference: t.id for t in await s.scalars(select(Ticket))}
        for ref, code, ack, res in [("JPR-K-0", "DAMKAR", 60, 600), ("JPR-K-1", "DAMKAR", 120, None),
                                    ("JPR-K-2", "DINKES", 30, 300)]:
            created = T0
            s.add(Notification(ticket_id=tickets[ref], agency_id=agencies[code], status="delivered",
                               attempts=1, next_attempt_at=created, created_at=created,
                               acknowledged_at=created + timedelta(seconds=ack),
                               resolved_at=created + timedelta(seconds=res) if res else None))


# By hand: 8 calls. Waits answered: 5, 8, 15, 25, 12, 40 → 6 answered.
# within 10 s: 5, 8 → 2/8 = 25 %; within 20 s: 5, 8, 15, 12 → 4/8 = 50 %.
# average (5+8+15+25+12+40)/6 = 17.5; p90 nearest rank ceil(0.9*6)=6th of sorted → 40.
# abandoned 1/8 = 12.5 %, ghost 12.5 %, prank 12.5 %.
# Time to a human (nearest rank: p50 = ceil(0.5 n)-th, p90 = ceil(0.9 n)-th of the sorted spans):
# priority 1 waits 5, 8, 40 → arrival→operator p50 8, p90 40; arrival→ringing (wait-3) 5, 37;
#   answer→operator (wait-1) 7, 39; answer→ringing (wait-4) 4, 36.
# priority 2: 15 → 15/15, 12/12, 14/14, 11/11.  priority 3 answered 25, 12 → 12, 25; 9, 22.
# all six: 5 8 12 15 25 40 → p50 3rd = 12, p90 6th = 40; ringing 9 / 37.
# DAMKAR: 2 dispatched, ack avg (60+120)/2 = 90, resolve 600; DINKES ack 30, resolve 300.
# overall ack avg (60+120+30)/3 = 70; resolve avg (600+300)/2 = 450.
EXPECTED = {
    ("calls", "calls"): "8", ("calls", "forwarded"): "1", ("calls", "answered_by_human"): "6",
    ("to_human:p1", "arrival_to_operator_p50_s"): "8", ("to_human:p1", "arrival_to_operator_p90_s"): "40",
    ("to_human:p1", "arrival_to_ringing_p50_s"): "5", ("to_human:p1", "arrival_to_ringing_p90_s"): "37",
    ("to_human:p1", "answer_to_operator_p50_s"): "7", ("to_human:p1", "answer_to_operator_p90_s"): "39",
    ("to_human:p1", "answer_to_ringing_p50_s"): "4", ("to_human:p1", "answer_to_ringing_p90_s"): "36",
    ("to_human:p2", "arrival_to_operator_p90_s"): "15", ("to_human:p2", "answer_to_ringing_p50_s"): "11",
    ("to_human:p3", "arrival_to_operator_p50_s"): "12", ("to_human:p3", "arrival_to_operator_p90_s"): "25",
    ("to_human:p3", "arrival_to_ringing_p50_s"): "9", ("to_human:p3", "arrival_to_ringing_p90_s"): "22",
    ("to_human:all", "arrival_to_operator_p50_s"): "12", ("to_human:all", "arrival_to_operator_p90_s"): "40",
    ("to_human:all", "arrival_to_ringing_p50_s"): "9", ("to_human:all", "arrival_to_ringing_p90_s"): "37",
    ("calls", "answered_within_10s_pct"): "25", ("calls", "answered_within_20s_pct"): "50",
    ("calls", "avg_answer_s"): "17.5", ("calls", "p90_answer_s"): "40",
    ("calls", "abandoned_pct"): "12.5", ("calls", "ghost_pct"): "12.5", ("calls", "prank_pct"): "12.5",
    ("agencies", "avg_ack_s"): "70", ("agencies", "avg_resolve_s"): "450",
    ("agency:DAMKAR", "dispatched"): "2", ("agency:DAMKAR", "avg_ack_s"): "90",
    ("agency:DAMKAR", "avg_resolve_s"): "600", ("agency:DINKES", "avg_ack_s"): "30",
    ("category", "fire"): "2", ("category", "police"): "2", ("category", "complaint"): "1",
}


async def test_kpis_on_seeded_tickets_equal_hand_computed_figures(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    async with web_stack(db_url, var_dir, jepara) as stack:
        await seed(stack)
        await stack.add_user("sup", "supervisor", "supervisor pass 1")
        async with browser() as http:
            await stack.login(http, "sup", "supervisor pass 1")
            async with http.get(f"{stack.url}/kpi.csv?from=2025-05-19&to=2025-05-20") as r:
                assert r.status == 200
                lines = (await r.text()).splitlines()
            async with http.get(f"{stack.url}/kpi?from=2025-05-19&to=2025-05-20") as r:
                page = await r.text()
                assert r.status == 200 and "<svg" in page and "<script" not in page
        figures = {(a, b): c for a, b, c in (line.split(",") for line in lines[1:])}
        for key, value in EXPECTED.items():
            assert figures.get(key) == value, (key, figures.get(key), value)
        # the CLI prints the same figures
        env = {"DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ari_app.cli", "--site", "jepara", "--var-dir", str(var_dir),
            "report", "--from", "2025-05-19", "--to", "2025-05-20", "--csv",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert out.decode().splitlines() == lines


async def test_time_per_operator_state_for_a_day_from_the_audited_changes(
        db_url: str, var_dir: Path, jepara: Site) -> None:
    from ari_app.clock import Clock
    from ari_app.routing.operators import add_operator, add_shift
    from ari_app.routing.states import WRAP_UP
    from ari_app.tickets.console_models import OperatorStateLog
    from ari_app.tickets.models import Ticket, TicketAudit

    def at(hh: int, mm: int = 0, ss: int = 0, day: int = 19) -> datetime:
        return datetime(2025, 5, day, hh, mm, ss, tzinfo=WIB)

    clock = Clock(at(10, day=20))
    async with web_stack(db_url, var_dir, jepara, clock=clock) as stack:
        async with stack.app.sessions() as s, s.begin():
            await add_operator(s, jepara, "op1", "Sari", at(0, day=1))
            await add_operator(s, replace_code(jepara, "batola"), "opx", "Other site", at(0, day=1))
            for day in (19, 20):
                await add_shift(s, "op1", at(7, day=day), at(15, day=day))
            for name, when, state, reason, until in [
                    ("op1", at(20, day=18), "not_ready", "break", None),  # open at midnight
                    ("op1", at(6, 30), "ready", None, None),
                    ("op1", at(11, 30), "wrap_up", None, at(11, 30, 20)),
                    ("op1", at(13), "not_ready", "meeting", None),       # open at day end
                    ("opx", at(9), "ready", None, None)]:                # another site's
                s.add(OperatorStateLog(operator_name=name, state=state, reason=reason, at=when,
                                       until=until, actor="sari", previous=None))
            # op1 answers at 11:00 and hands the caller over to an agency at 11:30
            t = Ticket(reference="JPR-S-1", site="jepara", channel_id="s1", arrived_at=at(10, 59),
                       operator="op1", operator_answered_at=at(11), ended_at=at(11, 40))
            s.add(t)
            await s.flush()
            s.add(TicketAudit(ticket_id=t.id, at=at(11, 30), actor="op1", action="handed over",
                              detail="{}"))
        # today: a wrap-up the app itself starts, through the journal, keeps its end
        stack.app.states.set("op1", WRAP_UP, actor="system", wrap_up_s=15)
        await stack.app.writer.flush(10)
        clock.advance(60)  # a minute later: 15 s of wrap-up, then ready without a row
        await stack.add_user("sup", "supervisor", "supervisor pass 1")
        await stack.add_user("opr", "operator", "operator pass 1")
        async with browser() as http:
            csrf = await stack.login(http, "sup", "supervisor pass 1")
            async with http.get(f"{stack.url}/kpi/states?day=2025-05-19") as r:
                assert r.status == 200
                page = await r.text()
            async with http.post(stack.url + "/console/lang", json={"lang": "en"},
                                 headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            async with http.get(f"{stack.url}/kpi/states?day=2025-05-19") as r:
                english = await r.text()
            async with http.post(stack.url + "/console/lang", json={"lang": "id"},
                                 headers={"X-CSRF-Token": csrf}) as r:
                assert r.status == 200
            async with http.get(f"{stack.url}/kpi/states") as r:  # today, up to now
                today = await r.text()
            async with http.get(f"{stack.url}/kpi/states?day=19-05-2025") as r:
                assert r.status == 400
        async with browser() as http:
            await stack.login(http, "opr", "operator pass 1")
            async with http.get(f"{stack.url}/kpi/states?day=2025-05-19") as r:
                assert r.status == 403
    assert "Waktu per status operator" in page and "WIB" in page and "<script" not in page
    assert 'data-operator="opx"' not in page
    assert "Time per operator state" in english and "Waktu per status" not in english
    assert row_of(english, "op1") == row_of(page, "op1")  # the same figures in English
    # By hand, 19 May WIB, shift 07-15: 00:00-07:00 off shift (break, then ready);
    # ready 07-11 and 11:30:20-13:00; on call 11-11:30 (handed over); wrap-up 20 s;
    # meeting 13-15, then off shift to midnight.
    cells = dict(re.findall(r'<td data-bucket="(\w+)" data-seconds="(\d+)">', row_of(page, "op1")))
    assert cells == {"ready": str(4 * 3600 + 5380), "not_ready_break": "0",
                     "not_ready_training": "0", "not_ready_meeting": str(2 * 3600),
                     "wrap_up": "20", "on_call": "1800", "off_shift": str(16 * 3600)}
    assert "<td>siap</td>" not in page and ">siap</th>" in page and ">16:00:00<" in page
    assert ">24:00:00<" in page  # every second of the day is in one column
    now_cells = dict(re.findall(r'<td data-bucket="(\w+)" data-seconds="(\d+)">',
                                row_of(today, "op1")))
    assert now_cells["wrap_up"] == "15"
    # the meeting from yesterday goes on from midnight: off shift to 07:00, then until the
    # wrap-up a few seconds after 10:00 (the test clock started at 10:00 and runs)
    assert 3 * 3600 <= int(now_cells["not_ready_meeting"]) < 3 * 3600 + 120
    assert now_cells["off_shift"] == str(7 * 3600) and 45 <= int(now_cells["ready"]) < 120
    async with stack.app.sessions() as s:
        [row] = await s.scalars(select(OperatorStateLog).where(OperatorStateLog.state == WRAP_UP,
                                                             OperatorStateLog.actor == "system"))
    assert row.until is not None and (row.until - row.at).total_seconds() == 15


def row_of(page: str, operator: str) -> str:
    m = re.search(rf'<tr data-operator="{operator}">(.*?)</tr>', page, re.S)
    assert m, page
    return m.group(1)


def replace_code(site: Site, code: str) -> Site:
    import dataclasses
    return dataclasses.replace(site, code=code)
