"""A real Asterisk answers 112 through our ARI app (issue: foundation)."""

from __future__ import annotations

import asyncio

import pytest

from ari_app.config import Site
from tests.integration.conftest import StackFactory

# Batola is open around the clock; with no operator on shift the caller hears the site's
# message and is put on the callback list, which exercises answer, playback and hangup.
NO_OPERATOR = "callback (no operator on duty)"

pytestmark = pytest.mark.integration


async def test_caller_hears_greeting_and_call_row_is_closed(make_stack: StackFactory,
                                                            batola: Site) -> None:
    stack = await make_stack(batola)
    result = await stack.call("caller_listen.xml", keys={"caller": "081234500001"})
    assert result.ok, result.errors
    assert result.successful == 1
    await stack.settle()

    [row] = await stack.calls()
    assert row.caller_number == "081234500001"
    assert row.dialled == "112"
    assert row.site == "batola"
    assert row.answered_at is not None and row.ended_at is not None
    assert row.started_at <= row.answered_at <= row.ended_at
    assert row.end_reason == NO_OPERATOR
    kinds = [e.kind for e in await stack.call_events(row.channel_id)]
    assert kinds == ["playback_started", "playback_finished"]


async def test_twenty_calls_at_five_per_second_each_leave_exactly_one_row(
    make_stack: StackFactory, batola: Site,
) -> None:
    stack = await make_stack(batola)
    result = await stack.call("caller_listen.xml", calls=20, rate=5, limit=20,
                              inject=[[f"08123450{i:04d}"] for i in range(20)],
                              keys={})
    assert result.ok, result.errors
    assert result.successful == 20
    await stack.settle()
    rows = await stack.calls()
    assert len(rows) == 20
    assert len({r.channel_id for r in rows}) == 20
    assert sorted(r.caller_number for r in rows) == [f"08123450{i:04d}" for i in range(20)]
    assert all(r.end_reason == NO_OPERATOR and r.answered_at is not None for r in rows)
    assert len({t.reference for t in await stack.tickets()}) == 20


async def test_caller_hanging_up_during_greeting_leaves_closed_row_without_traceback(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture, batola: Site,
) -> None:
    stack = await make_stack(batola)
    result = await stack.call("caller_hangup_early.xml", extra_args=["-d", "300"])
    assert result.ok, result.errors
    await stack.settle()
    [row] = await stack.calls()
    assert row.end_reason == "caller hangup"
    assert row.ended_at is not None and row.answered_at is not None
    kinds = [e.kind for e in await stack.call_events(row.channel_id)]
    assert "playback_finished" not in kinds
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "CRITICAL")]


async def test_app_reconnects_by_itself_after_asterisk_restart_and_answers_next_call(
    make_stack: StackFactory, batola: Site,
) -> None:
    stack = await make_stack(batola)
    assert stack.app is not None
    events = stack.app.events
    assert events.connections == 1
    await asyncio.to_thread(stack.asterisk.restart)
    await events.wait_ready(15)
    assert events.connections == 2
    result = await stack.call("caller_listen.xml")
    assert result.ok, result.errors
    await stack.settle()
    [row] = await stack.calls()
    assert row.end_reason == NO_OPERATOR
