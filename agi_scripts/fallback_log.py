"""AGI: write a durable record of a call the app could not take (Stasis() failed).

    AGI(fallback_log,start)   ; when the fallback begins
    AGI(fallback_log,end)     ; from the hangup handler, with DIALSTATUS and ANSWEREDTIME
    AGI(fallback_log,early)   ; the caller hung up before the app took the call
    AGI(fallback_log,overload,DIALLED,LIMIT,WHY)  ; refused, to be called back: WHY is full
                                                   ; (LIMIT callers) or slow (ARI too slow)

One JSON line per event, appended and fsync'ed to var/fallback/calls-YYYY-MM-DD.jsonl (the UTC
day of the event). No database: it may be down too. When the app starts it turns these records
into tickets, exactly once. It may never disturb the call: every error is swallowed after a
verbose line.

One file per day, so that retention never has to rewrite a file this script may be appending to:
a past day's file is never opened for writing again (no lock for a call to wait on).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import Any


def day_file(journal: str, at: datetime) -> str:
    """``.../calls.jsonl`` -> ``.../calls-2026-12-02.jsonl`` for an event on that UTC day."""
    base, ext = os.path.splitext(journal)
    return f"{base}-{at.astimezone(UTC):%Y-%m-%d}{ext}"


def record(journal: str, line: dict[str, str]) -> None:
    os.makedirs(os.path.dirname(journal), exist_ok=True)
    fd = os.open(journal, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(line, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


ON_DUTY_SQLITE = """
SELECT DISTINCT o.name FROM operators o JOIN shifts s ON s.operator_id = o.id
 WHERE o.site = ? AND o.active = 1 AND s.starts_at <= ? AND s.ends_at > ? ORDER BY o.name
"""
ON_DUTY_PG = """
SELECT DISTINCT o.name FROM operators o JOIN shifts s ON s.operator_id = o.id
 WHERE o.site = $1 AND o.active AND s.starts_at <= $2 AND s.ends_at > $2 ORDER BY o.name
"""


def on_duty_dial(config: dict[str, object]) -> str:
    """``PJSIP/op1&PJSIP/op2`` for the operators on shift now; '' if unknown (ring everyone)."""
    import time

    from ari_app.pbx.agi_query import fallback_dial, query, sqlite_time

    deadline = time.monotonic() + int(str(config.get("budget_ms", 400))) / 1000
    now = datetime.now(UTC)
    try:
        rows = query(str(config["database_url"]), deadline,
                     ON_DUTY_SQLITE, (config["site"], sqlite_time(now), sqlite_time(now)),
                     ON_DUTY_PG, (config["site"], now))
    except Exception:
        return ""  # the database is down too: the dialplan rings every operator
    return fallback_dial([str(r[0]) for r in rows])


def log_event(agi: Any, config_path: str, args: list[str]) -> int:
    """Write one record for ``agi`` (pyst2, over stdio or a FastAGI socket); ``args``: the
    AGI arguments after the script (event first)."""
    try:
        with open(config_path) as fh:
            config = json.load(fh)
        event = args[0] if args else "start"
        now = datetime.now(UTC)
        line = {
            "event": event,
            "at": now.isoformat(),
            "uniqueid": agi.env.get("agi_uniqueid", ""),
            "caller": agi.env.get("agi_callerid", ""),
        }
        if event == "overload":
            # Everything from the arguments and the environment Asterisk sent first: the record
            # is written before any AGI command, so a caller hanging up cannot cost it.
            line["dialled"] = args[1] if len(args) > 1 else ""
            line["limit"] = args[2] if len(args) > 2 else ""
            line["why"] = args[3] if len(args) > 3 else "full"  # or "slow": ARI too slow
            record(day_file(str(config["fallback_journal"]), now), line)
            return 0
        line["dialled"] = agi.get_variable("SIAGA_DIALLED") or ""
        if event == "start":
            line["recording"] = agi.get_variable("MIXMONITOR_FILENAME") or ""
        if event == "end":
            line["dialstatus"] = agi.get_variable("DIALSTATUS") or ""
            line["answered_s"] = agi.get_variable("ANSWEREDTIME") or ""
            line["operator"] = agi.get_variable("DIALEDPEERNAME") or ""
        record(day_file(str(config["fallback_journal"]), now), line)
        if event == "start":
            dial = on_duty_dial(config)
            if dial:
                agi.set_variable("SIAGA_FALLBACK_ON_DUTY", dial)
    except Exception as exc:
        agi.verbose(f"siaga112 fallback_log: {type(exc).__name__}: {exc}", 1)
    return 0


def fastagi(agi: Any, config_path: str, started: float) -> int:
    """From our FastAGI server (``agi://.../fallback_log,overload,...``): the arguments come in
    the AGI environment (agi_arg_1, ...) instead of argv."""
    args: list[str] = []
    while (arg := agi.env.get(f"agi_arg_{len(args) + 1}")) is not None:
        args.append(arg)
    return log_event(agi, config_path, args)


def main() -> int:
    from asterisk.agi import AGI  # pyst2: per-process AGI only

    return log_event(AGI(), sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
