"""Ready / not ready / wrap-up: which operators the roster may offer a call to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from ari_app.clock import Clock
from ari_app.routing.roster import Roster
from ari_app.routing.states import NOT_READY, READY, WRAP_UP, OperatorStates, StateError


class FakeClock:
    def __init__(self) -> None:
        self.at = datetime(2025, 5, 19, 3, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.at


def roster_with(clock: FakeClock, wrap_up_s: float = 0.0) -> Roster:
    states = OperatorStates(None, clock.now)
    roster = Roster(cast(Any, None), cast(Any, None), "jepara", cast(Clock, clock), states=states,
                    wrap_up_s=wrap_up_s)
    roster.on_shift = ["op1", "op2", "op3"]
    roster.reachable = {"op1": True, "op2": True, "op3": False}
    return roster


def test_only_ready_registered_free_operators_are_candidates() -> None:
    clock = FakeClock()
    roster = roster_with(clock)
    assert roster.candidates() == ["op1", "op2"]  # op3's phone is not registered
    roster.states.set("op1", NOT_READY, actor="sari", reason="break")
    assert roster.candidates() == ["op2"]
    roster.states.set("op1", READY, actor="sari")
    assert roster.candidates() == ["op1", "op2"]


def test_wrap_up_after_a_call_holds_calls_until_its_time_is_up_or_ready_is_pressed() -> None:
    clock = FakeClock()
    roster = roster_with(clock, wrap_up_s=30)
    changed: list[int] = []
    roster.listeners.append(lambda: changed.append(1))
    roster.reserve("op1")
    roster.release("op1", talked=True)
    assert roster.states.get("op1").state == WRAP_UP and roster.candidates() == ["op2"]
    clock.at += timedelta(seconds=29)
    assert not roster.ready("op1")
    clock.at += timedelta(seconds=1)
    assert roster.ready("op1")  # the wrap-up ran out: ready without anyone writing it
    roster.reserve("op2")
    roster.release("op2", talked=True)
    roster.states.set("op2", READY, actor="budi")  # pressed ready before the time was up
    assert roster.ready("op2") and changed  # every change tells the queue to offer again
    roster.reserve("op1")
    roster.release("op1", talked=False)  # rung, not answered: no wrap-up
    assert roster.states.get("op1").state == WRAP_UP and roster.ready("op1")


def test_no_wrap_up_when_the_site_sets_none_and_bad_states_are_refused() -> None:
    clock = FakeClock()
    roster = roster_with(clock)
    roster.reserve("op1")
    roster.release("op1", talked=True)
    assert roster.ready("op1") and roster.states.get("op1").since is None
    with pytest.raises(StateError, match="reason: expected one of break, training, meeting"):
        roster.states.set("op1", NOT_READY, actor="x", reason="lunch")
    with pytest.raises(StateError, match="state: expected one of"):
        roster.states.set("op1", "away", actor="x")


def test_a_newer_state_from_the_database_replaces_ours_an_older_one_does_not() -> None:
    from ari_app.tickets.console_models import OperatorStateRow

    clock = FakeClock()
    states = OperatorStates(None, clock.now)
    states.set("op1", NOT_READY, actor="sari", reason="meeting")
    states.merge([OperatorStateRow(operator_name="op1", state=READY, reason=None,
                                   since=clock.at - timedelta(seconds=5), until=None)])
    assert states.get("op1").state == NOT_READY
    states.merge([OperatorStateRow(operator_name="op1", state=READY, reason=None,
                                   since=clock.at + timedelta(seconds=5), until=None)])
    assert states.get("op1").state == READY
