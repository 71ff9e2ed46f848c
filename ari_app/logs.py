"""Logging for every `siaga112` command: text (default) or JSON lines for journald and ELK.

``SIAGA112_LOG_FORMAT=json`` (or ``--log-json``) writes one JSON object per line with ``ts``,
``level``, ``logger``, ``msg``, and each ``key=value`` of the message as a field of its own:
our log lines about a call say ``call=<id> ticket=<ref> operator=<name>``, so a search on
``call`` finds every line of one call. The last error is kept for ``/healthz`` and
``siaga112 status``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from datetime import UTC, datetime
from typing import Any

# key=value tokens in a message; the value runs to the next space (ids, refs, names).
# A key starts a word (not inside a URL's query string, not after a hyphen).
_FIELD = re.compile(r"(?<![\w.?&/=-])([a-z][a-z_]{1,23})=([^\s,;()]+)")
# Fields of a LogRecord that are not "extra" data given by the caller.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def message_fields(message: str) -> dict[str, str]:
    """``call=1700000000.12 ticket=JPR-1 bridged`` -> {"call": "...", "ticket": "JPR-1"}."""
    return {k: v for k, v in _FIELD.findall(message)}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
        }
        for key, value in message_fields(message).items():
            data.setdefault(key, value)
        for key, value in vars(record).items():  # logger.info(..., extra={...})
            if key not in _STANDARD and not key.startswith("_"):
                data.setdefault(key, value if isinstance(value, (int, float, bool)) else str(value))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class LastError(logging.Handler):
    """Remembers the newest ERROR (or worse) record of this process."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.record: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= self.level:  # also when called directly, not through a logger
            self.record = record

    def snapshot(self) -> dict[str, Any] | None:
        r = self.record
        if r is None:
            return None
        return {"at": datetime.fromtimestamp(r.created, UTC).isoformat(timespec="seconds"),
                "age_s": round(time.time() - r.created, 1), "logger": r.name,
                "msg": r.getMessage()[:500]}


LAST_ERROR = LastError()


def json_wanted(flag: bool = False) -> bool:
    return flag or os.environ.get("SIAGA112_LOG_FORMAT", "").lower() == "json"


def setup(verbose: bool = False, as_json: bool = False) -> None:
    """Configure the root logger once per process (stderr; journald reads it as is)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_wanted(as_json) else
                         logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.addHandler(LAST_ERROR)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
