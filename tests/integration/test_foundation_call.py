"""A real Asterisk answers 112 through our ARI app (issue: foundation)."""

from __future__ import annotations

import pytest

from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.integration


async def test_caller_hears_greeting_and_call_row_is_closed(make_stack: StackFactory) -> None:
    stack = await make_stack()
    result = await stack.call("caller_listen.xml", keys={"caller": "081234500001"})
    assert result.ok, result.errors
    assert result.successful == 1
    await stack.settle()

    [row] = await stack.calls()
    assert row.caller_number == "081234500001"
    assert row.dialled == "112"
    assert row.site == "jepara"
    assert row.answered_at is not None and row.ended_at is not None
    assert row.started_at <= row.answered_at <= row.ended_at
    assert row.end_reason == "completed"
    kinds = [e.kind for e in await stack.call_events(row.channel_id)]
    assert kinds == ["playback_started", "playback_finished"]
