"""Reading Asterisk's CEL rows (as cel_sqlite3_custom writes them) into what a call reached."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

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
