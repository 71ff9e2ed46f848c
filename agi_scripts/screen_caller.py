"""AGI: screen the caller before Stasis() — count recent pranks and ghost calls from this number.

Run by the dialplan as one process per call (pyst2's AGI class; never its fastagi module).
Sets SIAGA_FLAGS (clean | allowlisted | flagged:<count>) and SIAGA_PRIORITY (a penalty) within
a strict time budget. On any error or time-out it sets nothing and the call goes on: screening
may never block a call.

    AGI(screen_caller)   ; the wrapper in agi-bin passes var/agi/config.json as argv[1]

or, without Asterisk forking anything, through our FastAGI server (ari_app/pbx/agi_server.py),
which forks a ready process of its own per call and calls screen() in it.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from ari_app.pbx.agi_query import OutOfTime, query, sqlite_time

COUNT_SQLITE = """
SELECT COUNT(*) FROM tickets
 WHERE caller_key = ? AND outcome IN ('prank', 'ghost') AND arrived_at >= ?
   AND arrived_at > COALESCE((SELECT MAX(cleared_at) FROM caller_flag_clears
                              WHERE caller_key = ?), '')
"""
COUNT_PG = """
SELECT COUNT(*) FROM tickets
 WHERE caller_key = $1 AND outcome IN ('prank', 'ghost') AND arrived_at >= $2
   AND arrived_at > COALESCE((SELECT MAX(cleared_at) FROM caller_flag_clears
                              WHERE caller_key = $1), 'epoch'::timestamptz)
"""


def decide(config: dict[str, Any], number: str, now: datetime, deadline: float) -> dict[str, str]:
    """The variables to set for this caller ({} when the number cannot be screened)."""
    from ari_app.location.numbers import InvalidNumber, normalise_msisdn

    try:
        key = normalise_msisdn(number)
    except InvalidNumber:
        return {}
    if key in {normalise_msisdn(n) for n in config.get("allowlist", [])}:
        return {"SIAGA_FLAGS": "allowlisted"}
    since = now - timedelta(hours=float(config["window_h"]))
    [(count,)] = query(str(config["database_url"]), deadline,
                       COUNT_SQLITE, (key, sqlite_time(since), key), COUNT_PG, (key, since))
    if count >= int(config["threshold"]):
        priority = min(9, int(config["uncategorised_priority"]) + int(config["priority_penalty"]))
        return {"SIAGA_FLAGS": f"flagged:{count}", "SIAGA_PRIORITY": str(priority)}
    return {"SIAGA_FLAGS": "clean"}


def screen(agi: Any, config_path: str, started: float) -> int:
    """Screen the caller on ``agi`` (a pyst2 AGI, over stdio or a FastAGI socket)."""
    try:
        with open(config_path) as fh:
            config = json.load(fh)
        deadline = started + int(config.get("budget_ms", 400)) / 1000
        variables = decide(config, agi.env.get("agi_callerid", ""), datetime.now(UTC), deadline)
        if time.monotonic() > deadline:
            raise OutOfTime
    except OutOfTime:
        agi.verbose("siaga112 screen_caller: over budget, call goes on unscreened", 1)
        return 0
    except Exception as exc:  # screening may never block a call
        agi.verbose(f"siaga112 screen_caller: {type(exc).__name__}: {exc}; unscreened", 1)
        return 0
    for name, value in variables.items():
        agi.set_variable(name, value)
    return 0


fastagi = screen  # what our FastAGI server calls (ari_app/pbx/agi_server.py)


def main() -> int:
    started = time.monotonic()
    from asterisk.agi import AGI  # pyst2: per-process AGI only

    return screen(AGI(), sys.argv[1], started)


if __name__ == "__main__":
    sys.exit(main())
