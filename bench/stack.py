"""One target per step: a fresh private Asterisk (+ the app in its own process for "app").

Both targets use the same rendered configuration (the project's config/ and dialplan/, the
same operators, plus bench/twin.conf); only the dialled number differs: 112 enters the app's
Stasis path, 9112 the dialplan twin, 9113 the human-first twin (the operator rung during the
menu, as the app does). The app runs as `python -m ari_app.cli serve`, a separate
process, so its CPU and memory are its own.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from ari_app.clock import Clock
from ari_app.config import PROJECT_ROOT, Site, load_site
from ari_app.pbx.installation import installation
from ari_app.pbx.render import OperatorEndpoint
from ari_app.routing.operators import add_operator, add_shift, endpoints
from ari_app.testing.agi_server import start_agi_server, stop_agi_server
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports
from ari_app.testing.ports import free_port, rtp_range
from ari_app.tickets.db import make_engine, sessions
from ari_app.tickets.migrate import upgrade
from bench.procstat import Reaped, cpu_seconds, peak_rss_mb, reap, reaped_children_cpu_seconds

log = logging.getLogger(__name__)

TWIN_TEMPLATE = Path(__file__).resolve().parent / "twin.conf"
FAKE_TIME = "2025-05-19T10:00:00+07:00"  # a Monday morning: Jepara is open
SERVICES = {"app": "112", "twin": "9112", "twin-human": "9113", "twin-full": "9114"}
#: The twins that ring the operator during the menu (Originate), and what their dialplan needs
#: beyond the product's modules.conf.
HUMAN_FIRST_TWINS = ("twin-human", "twin-full")
TWIN_HUMAN_MODULES = ("app_originate.so", "app_softhangup.so")
#: The targets whose callers are screened by `siaga112 agi serve` (the full twin runs the same
#: screening AGI as the product's dialplan).
SCREENED = ("app", "twin-full")


def unsupported(target: str) -> str | None:
    """Why this Asterisk cannot serve ``target``; None if it can."""
    if target in HUMAN_FIRST_TWINS and installation().major < 20:
        return (f"the human-first twin ({target}) needs Asterisk 20 or later (Originate's v() "
                f"option); this is {installation().version}")
    return None


async def seed_operators(db_url: str, site: Site, clock: Clock, count: int,
                         contact_port: int) -> list[OperatorEndpoint]:
    """op0..opN-1, all on shift now, all with a static contact at the bench's operator UAS."""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            now = clock.now()
            for i in range(count):
                name = f"op{i}"
                await add_operator(s, site, name, name.upper(), now,
                                   contact=f"sip:{name}@127.0.0.1:{contact_port}")
                await add_shift(s, name, now - timedelta(hours=4), now + timedelta(hours=4))
        async with sessions(engine)() as s:
            return await endpoints(s, site.code)
    finally:
        await engine.dispose()


async def read_endpoints(db_url: str, site: Site) -> list[OperatorEndpoint]:
    """The roster another node already wrote in the database the nodes share."""
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s:
            return await endpoints(s, site.code)
    finally:
        await engine.dispose()


def twin_dialplan(var_dir: Path, operators: int) -> Path:
    text = TWIN_TEMPLATE.read_text().replace("{{operators}}", str(operators))
    text = text.replace("{{last}}", str(operators - 1))
    out = var_dir / "bench-twin.conf"
    out.write_text(text)
    return out


@dataclass
class CpuMark:
    asterisk_s: float
    app_s: float
    at: float
    # The screening AGI: our FastAGI server (itself and the per-call children it forked and
    # reaped) plus Asterisk's reaped children (per-process AGIs, when the server did not answer).
    agi_s: float = 0.0
    kamailio_s: float = 0.0  # the SIP edge, all its processes (bench edge only): utime+stime
    kamailio_sched_s: float = 0.0  # the same from the scheduler's ns counters
    kamailio_processes: int = 0


class TargetStack:
    def __init__(self, target: str, var_dir: Path, sounds: Path, operators: int,
                 operator_port: int, *, bind: str = "127.0.0.1", db_url: str | None = None,
                 node: str = "", seed: bool = True, trunk_host: str | None = None) -> None:
        """``bind``/``db_url``/``node``/``trunk_host``: one node of several (bench edge): its own
        loopback address, the PostgreSQL the nodes share (``seed``: this node writes the roster),
        the carrier being the edge's address."""
        if target not in SERVICES:
            raise ValueError(f"target must be one of {sorted(SERVICES)}, got {target!r}")
        if problem := unsupported(target):
            raise ValueError(problem)
        self.target, self.var_dir, self.sounds = target, var_dir, sounds
        self.operators, self.operator_port = operators, operator_port
        self.service = SERVICES[target]
        self.node, self.seed = node, seed
        base = load_site("jepara")
        if trunk_host is not None:
            base = dataclasses.replace(
                base, asterisk=dataclasses.replace(base.asterisk, trunk_host=trunk_host))
        site = on_free_ports(base, bind=bind)
        # The harness's default 400 RTP ports (200 channels) ran out at 8 cps (run of
        # 2026-11-22): a bridged call takes two channels. 2000 ports = 1000 channels.
        start, end = rtp_range(2000)
        self.site: Site = dataclasses.replace(
            site, asterisk=dataclasses.replace(site.asterisk, rtp_start=start, rtp_end=end))
        self.db_url = db_url or f"sqlite+aiosqlite:///{var_dir}/siaga112.db"
        self.web_port = free_port()
        self.asterisk: PrivateAsterisk | None = None
        self.app: subprocess.Popen[bytes] | None = None
        self.app_reaped: Reaped | None = None
        self.agi_server: subprocess.Popen[bytes] | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        link = self.var_dir / "sounds"
        if not link.exists():
            link.symlink_to(self.sounds, target_is_directory=True)
        clock = Clock(datetime.fromisoformat(FAKE_TIME))
        if self.seed:
            upgrade(self.db_url)
            eps = asyncio.run(seed_operators(self.db_url, self.site, clock, self.operators,
                                             self.operator_port))
        else:
            eps = asyncio.run(read_endpoints(self.db_url, self.site))
        self.asterisk = PrivateAsterisk(self.site, self.var_dir, operators=eps,
                                        extra_dialplan=[twin_dialplan(self.var_dir,
                                                                      self.operators)],
                                        database_url=None if self.db_url.startswith("sqlite")
                                        else self.db_url, node=self.node or None)
        self.asterisk.start()
        if self.target in HUMAN_FIRST_TWINS:
            for module in TWIN_HUMAN_MODULES:
                out = self.asterisk.cli(f"module load {module}")
                if "Loaded" not in out and "already" not in out:
                    raise RuntimeError(f"the human-first twin needs {module}: {out.strip()}")
        if self.target in SCREENED:
            self._start_agi_server()
        if self.target == "app":
            self._start_app()

    def _start_agi_server(self) -> None:
        """`siaga112 agi serve`, as scripts/run.sh starts it beside the app."""
        self.agi_server = start_agi_server(self.site, self.var_dir,
                                           self.var_dir / "agi-server.log")

    def _start_app(self) -> None:
        assert self.asterisk is not None
        env = dict(os.environ)
        env.update({
            "SIAGA112_ARI_URL": self.asterisk.ari_url,
            "SIAGA112_ARI_USER": self.asterisk.rendered.ari_user,
            "SIAGA112_ARI_PASSWORD": self.asterisk.rendered.ari_password,
            "DATABASE_URL": self.db_url,
            "SIAGA112_VAR": str(self.var_dir),
            "SIAGA112_FAKE_TIME": FAKE_TIME,
            "SIAGA112_WEB_PORT": str(self.web_port),
        })
        env.pop("SIAGA112_NODE", None)
        if self.node:
            env["SIAGA112_NODE"] = self.node
        with open(self.var_dir / "app.log", "wb") as out:
            self.app = subprocess.Popen(
                [sys.executable, "-m", "ari_app.cli", "--site", "jepara", "serve"],
                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.app.poll() is not None:
                raise RuntimeError(f"app exited with {self.app.returncode}; see "
                                   f"{self.var_dir / 'app.log'}")
            if self._ari_ok(f"applications/{self.site.stasis_app}"):
                time.sleep(1.5)  # the roster's first refresh runs right after connecting
                return
            time.sleep(0.2)
        raise RuntimeError("app did not connect to ARI within 30 s")

    def _ari_ok(self, path: str) -> bool:
        assert self.asterisk is not None
        r = self.asterisk.rendered
        req = urllib.request.Request(f"{self.asterisk.ari_url}/ari/{path}")
        token = base64.b64encode(f"{r.ari_user}:{r.ari_password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.app is not None and self.app_reaped is None:
            self.app.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                self.app_reaped = reap(self.app.pid, block=False)
                if self.app_reaped is not None:
                    break
                time.sleep(0.1)
            if self.app_reaped is None:
                self.app.kill()
                self.app_reaped = reap(self.app.pid, block=True)
            self.app.returncode = 0
        if self.agi_server is not None:
            stop_agi_server(self.agi_server)
        if self.asterisk is not None:
            try:
                self.asterisk.stop()
            except Exception as exc:  # a stuck Asterisk must not hide the figures
                log.error("asterisk stop: %s", exc)

    # ---- measures --------------------------------------------------------------------------
    @property
    def caller_port(self) -> int:
        """Where the callers' SIPp sends its INVITEs (127.0.0.1): this node's Asterisk."""
        return self.site.asterisk.sip_port

    def node_calls(self) -> dict[str, int]:
        """Tickets per node (channel-id prefix "a-", "b-"); empty for a single node."""
        return {}

    @property
    def asterisk_pid(self) -> int:
        assert self.asterisk is not None and self.asterisk.process.proc is not None
        return self.asterisk.process.proc.pid

    @property
    def app_pid(self) -> int | None:
        return self.app.pid if self.app is not None else None

    def cpu_mark(self) -> CpuMark:
        app = cpu_seconds(self.app_pid) if self.app_pid else 0.0
        agi = reaped_children_cpu_seconds(self.asterisk_pid)
        if self.agi_server is not None and self.agi_server.poll() is None:
            pid = self.agi_server.pid
            agi += cpu_seconds(pid) + reaped_children_cpu_seconds(pid)
        return CpuMark(cpu_seconds(self.asterisk_pid), app, time.monotonic(), agi)

    def agi_served(self) -> int:
        """Calls the FastAGI server screened (its log has a line per call)."""
        log_path = self.var_dir / "agi-server.log"
        if self.agi_server is None or not log_path.exists():
            return 0
        return log_path.read_text(errors="replace").count(" screen_caller done in ")

    def shed_callers(self) -> int:
        """Callers the dialplan refused on the record (lines busy, 503, callback list): the
        line full, or the app's word that its ARI was too slow (routing/shedding.py)."""
        from ari_app.tickets.fallback import read_records

        return sum(1 for r in read_records(self.var_dir / "fallback" / "calls.jsonl")
                   if r.get("event") == "overload")

    def recordings(self) -> int:
        """The audio files this Asterisk's MixMonitors opened: the product's recordings
        directory (the app path, the full twin) and the spool's monitor directory (the plain
        and human-first twins record there, relative paths)."""
        spool = self.var_dir / "asterisk" / "spool"
        return sum(1 for sub in ("recording", "monitor") for _ in (spool / sub).rglob("*.wav"))

    def peak_rss(self) -> tuple[float, float]:
        app = peak_rss_mb(self.app_pid) if self.app_pid else 0.0
        return peak_rss_mb(self.asterisk_pid), app

    def log_size(self) -> int:
        """Where Asterisk's log ends now (warnings after this mark belong to the load)."""
        return len(self.asterisk.log_text()) if self.asterisk is not None else 0

    def taskprocessor_warnings(self, since: int = 0) -> list[str]:
        """High-water warnings logged after ``since`` (a ``log_size()`` mark).

        Starting Asterisk with a few hundred operator endpoints can push one device-state
        queue past its mark before any call arrives (seen once, twin at 12 cps); that is not
        the load's doing, so a step counts only what was logged once its callers started.
        """
        if self.asterisk is None:
            return []
        return [line for line in self.asterisk.log_text()[since:].splitlines()
                if "task processor queue reached" in line or ("taskprocessor" in line.lower()
                and "high water" in line.lower())]

    def ws_bytes(self) -> int:
        """Bytes Asterisk sent on the app's events websocket (from the kernel's tcp_info).

        The websocket is the connection to the HTTP port on which Asterisk sent the most while
        receiving almost nothing (REST connections carry requests both ways).
        """
        http_port = self.site.asterisk.http_port
        try:
            out = subprocess.run(["ss", "-tinH", "state", "established", "(", "sport", "=",
                                  f":{http_port}", ")"], capture_output=True, text=True,
                                 timeout=5, check=False).stdout
        except (OSError, subprocess.TimeoutExpired):
            return 0
        best = 0
        blocks: list[str] = []
        for line in out.splitlines():
            if line[:1].isspace() and blocks:
                blocks[-1] += " " + line
            else:
                blocks.append(line)
        for block in blocks:
            sent = _field(block, "bytes_acked:")
            received = _field(block, "bytes_received:")
            if sent > best and sent > 20 * max(received, 1):
                best = sent
        return best


def _field(text: str, name: str) -> int:
    i = text.find(name)
    if i < 0:
        return 0
    digits = ""
    for ch in text[i + len(name):]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0
