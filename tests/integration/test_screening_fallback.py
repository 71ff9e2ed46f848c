"""Ghost and prank screening (AGI before Stasis) and the dialplan fallback when the app is down."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ari_app.ari import AriClient, AriError
from ari_app.ari.events import iter_events
from ari_app.calls.connect import operator_name
from ari_app.clock import Clock
from ari_app.pbx import render
from ari_app.routing.operators import add_shift
from ari_app.testing.sipp import SippProcess, SippResult
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.fallback import read_records
from ari_app.tickets.models import Ticket
from bench.procstat import reaped_children_cpu_seconds
from tests.integration.conftest import PhoneFactory, Stack, StackFactory

pytestmark = pytest.mark.integration

FLAGGED = "081277770000"
CLEAN = "081288880000"


def clock() -> Clock:
    return Clock(datetime(2025, 5, 19, 10, 0, tzinfo=ZoneInfo("Asia/Jakarta")))


async def seed_ghosts(stack: Stack, number: str, count: int) -> None:
    """Earlier ghost calls from this number, within the last 24 h of real time (AGI's clock)."""
    assert stack.app is not None
    key = "+62" + number[1:]
    async with stack.app.sessions() as s, s.begin():
        for i in range(count):
            s.add(Ticket(reference=f"OLD-{number}-{i}", site=stack.site.code, caller_number=number,
                         caller_key=key, arrived_at=datetime.now(UTC) - timedelta(hours=i + 1),
                         outcome="ghost", status="abandoned"))


async def audit_detail(stack: Stack, ticket: Ticket, action: str) -> dict[str, object]:
    [entry] = [a for a in await stack.audit(ticket) if a.action == action]
    return dict(json.loads(entry.detail))


@pytest.mark.parametrize("agi_server", [False, True], ids=["process-per-call", "fastagi-server"])
async def test_flagged_number_hears_warning_presses_key_and_reaches_operator(
    make_stack: StackFactory, phone: PhoneFactory, agi_server: bool,
) -> None:
    """Screened either way: by `siaga112 agi serve` (Asterisk forks nothing), or, with the
    server not running, by the same script as a process Asterisk starts (the dialplan's
    fallback; the other tests here run that way too)."""
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    log_path = await stack.start_agi_server() if agi_server else None
    await seed_ghosts(stack, FLAGGED, 3)
    result = await stack.call("caller_key.xml", keys={"caller": FLAGGED},
                              template={"digit": "1", "key_after_ms": "1200"})
    assert result.ok, result.errors
    await stack.settle()
    ticket = next(t for t in await stack.tickets() if t.channel_id)
    assert ticket.policy is not None and ticket.policy.startswith("warned: 3 prank/ghost calls")
    assert ticket.menu_choice == "warned-key" and ticket.operator == "op1"
    assert ticket.priority == stack.site.menu.uncategorised_priority + 3
    assert (await audit_detail(stack, ticket, "screening"))["flags"] == "flagged:3"
    assert stack.asterisk.process.proc is not None
    forked = reaped_children_cpu_seconds(stack.asterisk.process.proc.pid)
    if log_path is not None:
        assert f"call={ticket.channel_id} screen_caller done" in log_path.read_text()
        assert forked == 0  # no AGI process started by Asterisk
    else:
        assert forked > 0  # the per-call script ran as Asterisk's child


async def test_flagged_number_staying_silent_still_reaches_an_operator(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    await seed_ghosts(stack, FLAGGED, 3)
    result = await stack.call("caller_silent.xml", keys={"caller": FLAGGED})
    assert result.ok, result.errors
    await stack.settle()
    ticket = next(t for t in await stack.tickets() if t.channel_id)
    assert ticket.menu_choice == "warned-stayed" and ticket.operator == "op1"
    assert ticket.status != "abandoned"


async def test_clean_number_hears_no_warning(make_stack: StackFactory,
                                             phone: PhoneFactory) -> None:
    _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock())
    await seed_ghosts(stack, CLEAN, 2)  # below the threshold of 3
    result = await stack.call("caller_key.xml", keys={"caller": CLEAN}, template={"digit": "2"})
    assert result.ok, result.errors
    await stack.settle()
    ticket = next(t for t in await stack.tickets() if t.channel_id)
    assert ticket.policy == "screen: clean"
    assert not [a for a in await stack.audit(ticket) if a.action == "warned"]
    assert ticket.category == "fire"


async def test_unreachable_database_screening_returns_within_budget_and_call_goes_on(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    # A "database" that accepts connections and never answers: the worst kind of outage.
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    port = blackhole.getsockname()[1]
    try:
        _uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1000"])
        stack = await make_stack(operators=[("op1", contact)], clock=clock(),
                                 agi_database_url=f"postgresql://x@127.0.0.1:{port}/none")
        result = await stack.call("caller_key.xml", template={"digit": "2"})
        assert result.ok, result.errors
        await stack.settle()
        [ticket] = await stack.tickets()
        assert ticket.policy == "screen: unscreened" and ticket.operator == "op1"
        detail = await audit_detail(stack, ticket, "screening")
        budget = stack.site.screening.budget_ms
        assert isinstance(detail["screen_ms"], int)
        # The budget starts when the AGI process does; allow for Python's own start-up.
        assert detail["screen_ms"] <= budget + 600, detail
    finally:
        blackhole.close()


async def test_app_down_caller_reaches_operator_by_fallback_and_gets_one_ticket_later(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    uas, contact = await phone("operator_answer_talk.xml", extra_args=["-d", "1500"])
    stack = await make_stack(operators=[("op1", contact)], clock=clock(), start_app=False)
    result = await stack.call("caller_listen.xml", keys={"caller": "081233334444"})
    assert result.ok, result.errors
    assert (await uas.wait(15)).successful == 1  # a human answered with the app down
    await stack.start_app()
    await stack.app.writer.flush()  # type: ignore[union-attr]
    [ticket] = await stack.tickets()
    assert ticket.caller_number == "081233334444"
    assert ticket.policy is not None and ticket.policy.startswith("fallback")
    assert ticket.operator == "op1"  # by name, not by channel (PJSIP/op1-0000000a)
    assert ticket.end_reason == "fallback: ANSWER" and ticket.status == "in_call"
    assert ticket.operator_answered_at is not None and ticket.ended_at is not None
    assert ticket.arrived_at < ticket.operator_answered_at <= ticket.ended_at
    # The dialplan recorded the call although the app was down, and the ticket points at it.
    assert ticket.recording_path is not None
    assert ticket.recording_path.endswith(f"/siaga112/{stack.site.code}/{ticket.channel_id}.wav")
    assert Path(ticket.recording_path).stat().st_size > 8000
    # The app restarting again does not import the same call twice.
    await stack.stop_app()
    await stack.start_app()
    await stack.app.writer.flush()  # type: ignore[union-attr]
    assert len(await stack.tickets()) == 1


async def test_caller_hanging_up_during_screening_still_leaves_an_abandoned_ticket(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(clock=clock())
    assert stack.app is not None
    result = await stack.call("caller_cancel.xml", keys={"caller": "081299998888"},
                              template={"cancel_after_ms": "20"})
    assert result.ok, result.errors
    journal = stack.var_dir / "fallback" / "calls.jsonl"

    async def recorded() -> bool:  # the hangup handler's AGI is another process
        return any(r["event"] == "early" for r in read_records(journal))

    async with asyncio.timeout(10):
        while not await recorded():  # noqa: ASYNC110 - another process writes the file
            await asyncio.sleep(0.05)
    assert stack.app.fallback.import_new() == 1
    await stack.settle()
    [ticket] = await stack.tickets()
    assert (ticket.caller_number, ticket.status, ticket.callback_needed) == (
        "081299998888", "abandoned", True)
    assert ticket.end_reason == "caller hangup before the app"
    assert ticket.outcome == "silent-unreached"  # no key, no speech, no human: never a ghost


async def set_shifts(stack: Stack, shifts: dict[str, list[tuple[timedelta, timedelta]]]) -> None:
    """Shifts relative to the real time now: the fallback AGI reads the wall clock, not the app's."""
    now = datetime.now(UTC)
    engine = make_engine(stack.db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            for name, spans in shifts.items():
                for start, end in spans:
                    await add_shift(s, name, now + start, now + end)
    finally:
        await engine.dispose()


async def fallback_end(stack: Stack, caller: str) -> dict[str, str]:
    """The fallback's hangup-handler record of a call: written when the call is over."""
    journal = stack.var_dir / "fallback" / "calls.jsonl"

    def ended() -> dict[str, str] | None:
        return next((r for r in read_records(journal)
                     if r["event"] == "end" and r["caller"] == caller), None)

    async with asyncio.timeout(15):
        while (record := ended()) is None:  # noqa: ASYNC110 - an AGI process writes the file
            await asyncio.sleep(0.05)
    return record


async def fallback_call(stack: Stack, caller: str) -> str:
    """A caller through the fallback (the app down): the operator who answered, e.g. ``op1``."""
    result = await stack.call("caller_listen.xml", keys={"caller": caller})
    assert result.ok, result.errors
    end = await fallback_end(stack, caller)
    assert end["dialstatus"] == "ANSWER" and end["operator"].startswith("PJSIP/"), end
    return operator_name(end["operator"])


async def assert_never_rung(uas: SippProcess) -> None:
    stopped = await uas.stop()
    assert invites_received(stopped) == 0, stopped.stdout[-2000:]


def invites_received(result: SippResult) -> int:
    """INVITEs a SIPp UAS saw, from its own message trace (-trace_msg) and call counter."""
    [trace] = result.workdir.glob("*_messages.log")  # the UAS ran and traced (even if empty)
    traced = len(re.findall(r"^INVITE sip:", trace.read_text(errors="replace"), re.M))
    header, *_, last = csv.reader((result.workdir / "stat.csv").read_text().splitlines(),
                                  delimiter=";")
    incoming = int(last[header.index("IncomingCall(C)")])
    assert traced == incoming, (traced, incoming)
    return traced


async def test_app_down_fallback_rings_the_operator_on_shift_and_never_the_one_off_shift(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    on_duty, c1 = await phone("operator_answer_talk.xml", name="op1", extra_args=["-d", "1500"])
    off_duty, c2 = await phone("operator_answer_talk.xml", name="op2", extra_args=["-d", "1500"])
    stack = await make_stack(operators=[("op1", c1), ("op2", c2)], on_shift=False,
                             start_app=False)
    # op2's shifts ended an hour ago and start in an hour: registered, but not on duty now.
    await set_shifts(stack, {"op1": [(timedelta(hours=-4), timedelta(hours=4))],
                             "op2": [(timedelta(hours=-9), timedelta(hours=-1)),
                                     (timedelta(hours=1), timedelta(hours=9))]})
    assert await fallback_call(stack, "081233335555") == "op1"
    assert (await on_duty.wait(15)).successful == 1
    await assert_never_rung(off_duty)


async def test_app_and_database_down_fallback_rings_every_operator(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    blackhole = socket.socket()  # accepts connections and never answers
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(16)
    port = blackhole.getsockname()[1]
    try:
        answers, c1 = await phone("operator_answer_talk.xml", name="op1",
                                  extra_args=["-d", "1500"], answer_after_ms="1000")
        rings, c2 = await phone("operator_no_answer.xml", name="op2")
        stack = await make_stack(operators=[("op1", c1), ("op2", c2)], on_shift=False,
                                 start_app=False,
                                 agi_database_url=f"postgresql://x@127.0.0.1:{port}/none")
        # Only op1 is on shift, but the fallback cannot know that: it must ring everyone.
        await set_shifts(stack, {"op1": [(timedelta(hours=-4), timedelta(hours=4))]})
        assert await fallback_call(stack, "081233336666") == "op1"
        assert (await answers.wait(15)).successful == 1
        rung = await rings.wait(15)  # rang, then cancelled when op1 answered
        assert rung.successful == 1, rung.errors
        assert invites_received(rung) == 1
    finally:
        blackhole.close()


@asynccontextmanager
async def on_a_call(stack: Stack, *operators: str) -> AsyncIterator[None]:
    """The operators' phones busy: a call of the test's own (ARI originate into a Stasis app)."""
    r = stack.asterisk.rendered
    client = AriClient(stack.asterisk.ari_url, r.ari_user, r.ari_password)
    app = "test-busy-operators"
    opened, answered = asyncio.Event(), asyncio.Event()
    up: set[str] = set()

    async def mark_open() -> None:
        opened.set()

    async def watch() -> None:
        async for event in iter_events(client, app, on_open=mark_open):
            if event.get("type") == "StasisStart":  # an originated channel enters when answered
                up.add(event["channel"]["id"])
                if len(up) == len(operators):
                    answered.set()

    watching = asyncio.create_task(watch())
    try:
        await asyncio.wait_for(opened.wait(), 10)
        for name in operators:
            await client.post("channels", endpoint=f"PJSIP/{name}", app=app,
                              channelId=f"busy-{name}")
        await asyncio.wait_for(answered.wait(), 15)
        yield
    finally:
        for name in operators:
            with contextlib.suppress(AriError):
                await client.delete("channels", f"busy-{name}")
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await client.close()


async def test_app_down_fallback_rings_the_idle_operator_and_not_the_one_on_a_call(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    busy, c1 = await phone("operator_answer_wait.xml", name="op1")
    idle, c2 = await phone("operator_answer_talk.xml", name="op2", extra_args=["-d", "1500"])
    stack = await make_stack(operators=[("op1", c1), ("op2", c2)], start_app=False)
    async with on_a_call(stack, "op1"):
        assert await fallback_call(stack, "081233337777") == "op2"
        assert (await idle.wait(15)).successful == 1
    talked = await busy.wait(15)  # its own call, ended by the test: never rung for the caller
    assert talked.successful == 1, talked.errors
    assert invites_received(talked) == 1


async def test_app_down_fallback_with_every_operator_busy_rings_them_all_the_same(
    make_stack: StackFactory, phone: PhoneFactory,
) -> None:
    # Each call talks 6 s, then the operator hangs up: the caller arrives well within the first.
    busy, contact = await phone("operator_answer_talk.xml", name="op1", calls=2,
                                extra_args=["-d", "6000"])
    stack = await make_stack(operators=[("op1", contact)], start_app=False)
    async with on_a_call(stack, "op1"):
        # Nobody idle: the busy operator's phone gets the caller as a waiting call, and takes it.
        assert await fallback_call(stack, "081233338888") == "op1"
    both = await busy.wait(15)
    assert both.successful == 2, both.errors
    assert invites_received(both) == 2


async def test_app_down_fallback_rings_no_more_idle_operators_than_its_cap(
    make_stack: StackFactory, phone: PhoneFactory, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(render, "FALLBACK_FREE_MAX", 1)  # rendered as SIAGA_FALLBACK_FREE_MAX
    first, c1 = await phone("operator_answer_talk.xml", name="op1", extra_args=["-d", "1500"])
    second, c2 = await phone("operator_no_answer.xml", name="op2")
    stack = await make_stack(operators=[("op1", c1), ("op2", c2)], start_app=False)
    assert await fallback_call(stack, "081233339999") == "op1"
    assert (await first.wait(15)).successful == 1
    await assert_never_rung(second)
