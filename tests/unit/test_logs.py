"""JSON log lines: the message's key=value pairs (call, ticket, operator) become fields."""

from __future__ import annotations

import json
import logging

from ari_app.logs import JsonFormatter, LastError, message_fields


def record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("ari_app.calls.flow", level, "flow.py", 1, msg, args, None)
    for key, value in extra.items():
        setattr(r, key, value)
    return r


def test_a_call_line_becomes_json_with_the_call_ticket_and_operator_as_fields() -> None:
    line = JsonFormatter().format(record("call=%s ticket=%s operator=%s bridged",
                                         "1700000000.12", "JPR-20250519-0007", "op2",
                                         node="a"))
    data = json.loads(line)
    assert data["call"] == "1700000000.12" and data["ticket"] == "JPR-20250519-0007"
    assert data["operator"] == "op2" and data["node"] == "a"
    assert data["msg"] == "call=1700000000.12 ticket=JPR-20250519-0007 operator=op2 bridged"
    assert (data["level"], data["logger"]) == ("info", "ari_app.calls.flow")
    assert data["ts"].endswith("+00:00")


def test_fields_come_only_from_key_value_words() -> None:
    assert message_fields("web method=GET path=/api/v1/tickets status=200 (ab=cd,e)") == {
        "method": "GET", "path": "/api/v1/tickets", "status": "200", "ab": "cd"}
    assert message_fields("x==y http://h/?call=1 e-mail=z") == {}


def test_the_last_error_is_kept_for_status() -> None:
    handler = LastError()
    handler.handle(record("call=%s rescue failed", "c1", level=logging.ERROR))
    handler.handle(record("not kept: info", level=logging.INFO))
    snap = handler.snapshot()
    assert snap is not None and snap["msg"] == "call=c1 rescue failed"
    assert snap["logger"] == "ari_app.calls.flow" and snap["age_s"] >= 0
