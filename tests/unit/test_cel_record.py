"""Reading Asterisk's CEL rows (as cel_sqlite3_custom writes them) into what a call reached,
and what an adopted call's ticket takes from them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from ari_app.calls.call import Call
from ari_app.calls.context import CallContext
from ari_app.calls.flow import Outcome, bridged_unwatched
from ari_app.clock import Clock
from ari_app.pbx.cel import CelRecord

CALLER = "1700000000.1"


def _cel(tmp_path: Path, rows: list[tuple[str, float, str, str, dict[str, object]]]) -> CelRecord:
    path = tmp_path / "master.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE cel (AcctId INTEGER PRIMARY KEY, eventtype, eventtime, channame, "
               "uniqueid, linkedid, peer, eventextra)")
    for kind, at, name, uid, extra in rows:
        db.execute("INSERT INTO cel (eventtype, eventtime, channame, uniqueid, linkedid, peer, "
                   "eventextra) VALUES (?, ?, ?, ?, ?, '', ?)",
                   (kind, f"{at:.6f}", name, uid, uid, json.dumps(extra) if extra else ""))
    db.commit()
    db.close()
    return CelRecord(path)


BRIDGE: dict[str, object] = {"bridge_id": f"call-{CALLER}"}
CALLER_CH, OP_LEG, OP_LEG2 = "PJSIP/carrier-00000001", f"op-{CALLER}-aa", f"op-{CALLER}-bb"


def test_an_operator_bridged_with_the_caller_is_reached_and_the_hangup_side_is_known(
    tmp_path: Path,
) -> None:
    cel = _cel(tmp_path, [
        ("ANSWER", 10.0, CALLER_CH, CALLER, {}),
        ("ANSWER", 12.0, "PJSIP/op29-00000002", OP_LEG, {}),  # answered, then lost (app died)
        ("HANGUP", 12.1, "PJSIP/op29-00000002", OP_LEG, {"hangupcause": 0}),
        ("ANSWER", 14.0, "PJSIP/op29-00000003", OP_LEG2, {}),
        ("BRIDGE_ENTER", 14.1, "PJSIP/op29-00000003", OP_LEG2, BRIDGE),
        ("BRIDGE_ENTER", 14.3, CALLER_CH, CALLER, BRIDGE),
        ("HANGUP", 30.0, CALLER_CH, CALLER, {"hangupcause": 16}),
        ("HANGUP", 30.1, "PJSIP/op29-00000003", OP_LEG2, {"hangupcause": 16}),
    ])
    story = cel.story(CALLER)
    assert story is not None
    assert (story.bridged_at, story.operators, story.operator) == (14.3, ["op29"], "op29")
    assert (story.answered_at, story.hangup_at, story.hangup_cause) == (10.0, 30.0, 16)
    assert story.ended_by == "caller"
    assert cel.last_event_before(30.05) == 30.0


def test_an_operator_who_answered_after_the_caller_hung_up_was_never_reached(
    tmp_path: Path,
) -> None:
    cel = _cel(tmp_path, [
        ("ANSWER", 10.0, CALLER_CH, CALLER, {}),
        ("ANSWER", 20.0, "PJSIP/op27-00000002", OP_LEG, {}),
        ("HANGUP", 20.01, CALLER_CH, CALLER, {"hangupcause": 16}),
        ("BRIDGE_ENTER", 20.02, "PJSIP/op27-00000002", OP_LEG, BRIDGE),
    ])
    story = cel.story(CALLER)
    assert story is not None and story.operator_answered_at == 20.0
    assert story.bridged_at is None and story.operators == []
    assert cel.story("1700000000.9") is None  # nothing recorded for another call


class _Tickets:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str, dict[str, Any]]] = []

    def change(self, channel_id: str, action: str, at: object, **kw: Any) -> None:
        self.changes.append((channel_id, action, kw))


def _adopted(cel: CelRecord) -> tuple[Outcome, _Tickets]:
    tickets = _Tickets()
    ctx = cast(CallContext, SimpleNamespace(cel=cel, clock=Clock(), tickets=tickets))
    call = cast(Call, SimpleNamespace(id=CALLER, tag=f"call={CALLER}"))
    outcome = Outcome(adopted=True)
    bridged_unwatched(ctx, call, outcome)
    return outcome, tickets


def test_an_adopted_caller_who_left_while_bridged_unseen_is_recorded_as_talked(
    tmp_path: Path,
) -> None:
    # The dead app bridged caller and op5; the caller hung up as the restarted app adopted
    # them, so the new app found op5 alone in the call's bridge and the caller gone.
    cel = _cel(tmp_path, [
        ("ANSWER", 10.0, CALLER_CH, CALLER, {}),
        ("ANSWER", 14.0, "PJSIP/op5-00000003", OP_LEG, {}),
        ("BRIDGE_ENTER", 14.1, "PJSIP/op5-00000003", OP_LEG, BRIDGE),
        ("BRIDGE_ENTER", 14.3, CALLER_CH, CALLER, BRIDGE),
        ("HANGUP", 19.0, CALLER_CH, CALLER, {"hangupcause": 16}),
    ])
    outcome, tickets = _adopted(cel)
    assert (outcome.operator, outcome.operator_answered) == ("op5", True)
    [(channel, action, kw)] = tickets.changes
    assert (channel, action, kw["operator"], kw["status"]) == (
        CALLER, "bridged while unwatched", "op5", "in_call")
    assert kw["operator_answered_at"].timestamp() == pytest.approx(14.0, abs=0.01)
    assert kw["only_if_unset"] == ("operator", "operator_answered_at")
    assert kw["audit"]["source"] == "cel" and kw["audit"]["operators"] == ["op5"]


def test_an_adopted_caller_never_bridged_stays_unreached(tmp_path: Path) -> None:
    cel = _cel(tmp_path, [
        ("ANSWER", 10.0, CALLER_CH, CALLER, {}),
        ("ANSWER", 20.0, "PJSIP/op5-00000002", OP_LEG, {}),  # answered as the caller left
        ("HANGUP", 20.01, CALLER_CH, CALLER, {"hangupcause": 16}),
        ("BRIDGE_ENTER", 20.02, "PJSIP/op5-00000002", OP_LEG, BRIDGE),
    ])
    outcome, tickets = _adopted(cel)
    assert (outcome.operator, outcome.operator_answered, tickets.changes) == (None, False, [])
