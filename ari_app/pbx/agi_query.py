"""One read-only database query under a hard time budget, for the per-call AGI scripts.

The AGI runs in the dialplan before (or instead of) the app: it may never hold a call up.
SQLite is read through sqlite3 with a progress handler that aborts past the deadline;
PostgreSQL through asyncpg with connect and query bounded by the same deadline.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

# Asterisk's Dial() watches at most 256 channels (AST_MAX_WATCHERS), the caller's included; with
# more destinations app_dial overruns its stack and Asterisk aborts, every call with it (seen
# in the bench at 20 cps, when the fallback rang 400 operators at once). No centre needs more
# phones ringing for one caller than this.
FALLBACK_RING_MAX = 100
# Of those, the idle ones the fallback rings per attempt (dialplan siaga112-free-first): enough
# for any regency's shift, and few enough that a surge handed to the fallback (the app overloaded)
# does not ring hundreds of legs per caller (at 18-20 cps in the bench that doubled Asterisk's
# CPU per call).
FALLBACK_FREE_MAX = 20


def fallback_dial(operators: Sequence[str]) -> str:
    """``PJSIP/op1&PJSIP/op2...`` for the fallback's Dial(), at most FALLBACK_RING_MAX of them."""
    return "&".join(f"PJSIP/{name}" for name in list(operators)[:FALLBACK_RING_MAX])


class OutOfTime(Exception):
    """The budget ran out before the database answered."""


def sqlite_time(moment: datetime) -> str:
    """How SQLAlchemy stores an aware UTC datetime in SQLite (naive, ISO with microseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def query(url: str, deadline: float, sqlite_sql: str, sqlite_params: Sequence[Any],
          pg_sql: str, pg_params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Rows of one query, or OutOfTime once ``time.monotonic()`` passes ``deadline``."""
    if url.startswith("sqlite"):
        return _sqlite(url.split(":///", 1)[1], deadline, sqlite_sql, sqlite_params)
    import asyncio  # only PostgreSQL sites pay for the import (a third of the start-up)

    try:
        return asyncio.run(asyncio.wait_for(
            _pg(url.replace("+asyncpg", "", 1), deadline, pg_sql, pg_params), _left(deadline)))
    except TimeoutError as exc:
        raise OutOfTime from exc


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise OutOfTime
    return left


def _sqlite(path: str, deadline: float, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=_left(deadline))
    try:
        conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
        return [tuple(row) for row in conn.execute(sql, tuple(params))]
    except sqlite3.OperationalError as exc:
        if time.monotonic() > deadline:
            raise OutOfTime from exc
        raise
    finally:
        conn.close()


async def _pg(url: str, deadline: float, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    import asyncpg  # only PostgreSQL sites pay for the import

    conn = await asyncpg.connect(url, timeout=_left(deadline))
    try:
        return [tuple(row) for row in await conn.fetch(sql, *params)]
    finally:
        await conn.close(timeout=0.2)
