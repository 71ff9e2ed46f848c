"""`siaga112 status`: can the line answer a 112 call right now, and how well?

Asks Asterisk (ARI), the app (its /healthz), and the database (who is on duty), each with a
short timeout, and says what it found. The exit code follows the monitoring convention:
0 the line is fine; 1 it answers, degraded (the app is down and the dialplan fallback rings the
operators, or the database is unreachable); 2 it cannot answer (Asterisk does not answer, or
no operator on duty is reachable).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from ari_app.clock import Clock
from ari_app.config import Site

OK, DEGRADED, DOWN = 0, 1, 2
TIMEOUT = aiohttp.ClientTimeout(total=3)


@dataclass
class Status:
    asterisk_up: bool = False
    asterisk_version: str = ""
    asterisk_uptime_s: float | None = None
    asterisk_channels: int | None = None
    app_connected: bool = False
    app_pid: int | None = None
    calls_live: int | None = None
    callers_waiting: int | None = None
    journal_backlog: int | None = None
    db_ok: bool | None = None
    on_duty: list[str] = field(default_factory=list)
    reachable: list[str] = field(default_factory=list)
    last_error: dict[str, Any] | None = None
    queue: dict[str, Any] | None = None  # several nodes: the shared queue as the app sees it
    problems: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        if not self.asterisk_up or not self.reachable:
            return DOWN
        if not self.app_connected or self.db_ok is False:
            return DEGRADED
        if self.queue is not None and not self.queue.get("shared"):
            return DEGRADED
        return OK

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"code": self.code,
                               "verdict": ("ok", "degraded", "cannot answer")[self.code]}


def _host(bind: str) -> str:
    return "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind


def _read_secret(var_dir: Path, name: str) -> str:
    """A secret as it is: status only reads (it never makes a new one)."""
    try:
        return (var_dir / "secrets" / name).read_text().strip()
    except OSError:
        return ""


async def collect(site: Site, var_dir: Path, database_url: str) -> Status:
    st = Status()
    ari_url = os.environ.get("SIAGA112_ARI_URL") or (
        f"http://{_host(site.asterisk.bind)}:{site.asterisk.http_port}")
    password = os.environ.get("SIAGA112_ARI_PASSWORD") or _read_secret(var_dir, "ari.password")
    user = os.environ.get("SIAGA112_ARI_USER", "siaga112")
    auth = {"Authorization": aiohttp.encode_basic_auth(user, password)}
    endpoints: list[dict[str, Any]] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
        try:
            async with http.get(f"{ari_url}/ari/asterisk/info", headers=auth) as resp:
                resp.raise_for_status()
                info = await resp.json()
            st.asterisk_up = True
            st.asterisk_version = str(info.get("system", {}).get("version", ""))
            started = info.get("status", {}).get("startup_time")
            if started:
                st.asterisk_uptime_s = round((datetime.now(UTC) - datetime.fromisoformat(
                    started)).total_seconds())
            async with http.get(f"{ari_url}/ari/channels", headers=auth) as resp:
                st.asterisk_channels = len(await resp.json())
            async with http.get(f"{ari_url}/ari/endpoints/PJSIP", headers=auth) as resp:
                endpoints = list(await resp.json())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            st.problems.append(f"Asterisk does not answer over ARI at {ari_url}: "
                               f"{exc or type(exc).__name__}")
        web = f"https://{_host(site.web.bind)}:{site.web.port}/healthz"
        try:
            # Our own process on this machine, and nothing secret is sent: a liveness read,
            # so the (often self-signed) certificate is not verified here.
            async with http.get(web, ssl=False) as resp:
                health = await resp.json()
            st.app_connected = bool(health.get("ari_connected"))
            st.app_pid = health.get("pid")
            st.calls_live = health.get("calls")
            st.callers_waiting = health.get("callers_waiting")
            st.journal_backlog = health.get("db_backlog")
            st.db_ok = health.get("db_ok")
            st.last_error = health.get("last_error")
            st.queue = health.get("queue")
            if st.queue is not None and not st.queue.get("shared"):
                st.problems.append(
                    f"node {st.queue.get('node')} goes on ALONE: the shared queue in PostgreSQL "
                    f"is unreachable ({st.queue.get('error') or 'not connected yet'}); its "
                    "callers go to the operators it can reach, in its own order")
            if not st.app_connected:
                st.problems.append("the app runs but is not connected to Asterisk: calls go "
                                   "to the dialplan fallback")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            st.problems.append(f"the app does not answer at {web} ({exc or type(exc).__name__}): "
                               "calls go to the dialplan fallback")
    if st.journal_backlog is None:  # the app is down: what its journal file holds
        st.journal_backlog = journal_entries(var_dir / "journal" / f"{site.stasis_app}.db")
    await _roster(st, site, database_url, endpoints)
    return st


def journal_entries(path: Path) -> int | None:
    """Writes waiting in the app's local journal (read-only; None if there is no journal)."""
    import sqlite3

    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


async def _roster(st: Status, site: Site, database_url: str,
                  endpoints: list[dict[str, Any]]) -> None:
    from ari_app.routing.operators import on_shift
    from ari_app.tickets.db import make_engine, sessions
    from ari_app.web.agencies import public_url_problem

    engine = make_engine(database_url)
    try:
        async with asyncio.timeout(5), sessions(engine)() as s:
            st.on_duty = await on_shift(s, site.code, Clock.from_env().now())
            missing = await public_url_problem(s, site.code, site.web.public_url)
            if missing:  # agency links would point nowhere useful; calls are not affected
                st.problems.append(f"MISSING setting: {missing}")
        if st.db_ok is None:
            st.db_ok = True
    except Exception as exc:  # any driver error: the database is what is down
        st.db_ok = False
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        st.problems.append(f"database not readable: {first}")
    finally:
        await engine.dispose()
    states = {str(e.get("resource")): str(e.get("state")) for e in endpoints}
    st.reachable = [n for n in st.on_duty if states.get(n, "offline") != "offline"]
    if st.asterisk_up and not st.reachable:
        st.problems.append("no operator on duty is reachable (registered or with a contact): "
                           f"on duty: {', '.join(st.on_duty) or 'nobody'}")


def format_text(st: Status) -> str:
    def dur(s: float | None) -> str:
        if s is None:
            return "-"
        d, rest = divmod(int(s), 86400)
        return (f"{d}d " if d else "") + f"{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"

    lines = [
        f"line:           {('OK', 'DEGRADED (answers, by the fallback)', 'CANNOT ANSWER')[st.code]}",
        f"asterisk:       {'up' if st.asterisk_up else 'DOWN'}"
        + (f", {st.asterisk_version}, up {dur(st.asterisk_uptime_s)}, "
           f"{st.asterisk_channels} channel(s)" if st.asterisk_up else ""),
        f"app:            {'connected' if st.app_connected else 'NOT connected'}"
        + (f" (pid {st.app_pid})" if st.app_pid else ""),
        f"calls live:     {'-' if st.calls_live is None else st.calls_live}"
        f", waiting {'-' if st.callers_waiting is None else st.callers_waiting}",
        f"on duty:        {', '.join(st.on_duty) or 'nobody'}",
        f"reachable:      {', '.join(st.reachable) or 'nobody'}",
        f"database:       {'-' if st.db_ok is None else 'ok' if st.db_ok else 'UNREACHABLE'}"
        f", journal backlog {'-' if st.journal_backlog is None else st.journal_backlog}",
        *([f"node:           {st.queue.get('node')}, queue "
           + ("shared (PostgreSQL)" if st.queue.get("shared") else "ALONE (PostgreSQL unreachable)")
           + f", {st.queue.get('waiting_everywhere')} waiting on every node"]
          if st.queue is not None else []),
        "last error:     " + (f"{st.last_error['at']} {st.last_error['logger']}: "
                              f"{st.last_error['msg']}" if st.last_error else "none"),
    ]
    lines += [f"problem:        {p}" for p in st.problems]
    return "\n".join(lines)
