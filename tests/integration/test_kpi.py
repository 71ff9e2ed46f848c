"""Supervisor KPIs on a seeded set of tickets equal figures computed by hand (page, CSV, CLI)."""

from __future__ import annotations

import asyncio
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
