"""Supervision: the README's run command (`./scripts/run.sh`) keeps the line up when the app
crashes, and the systemd unit's Asterisk command (`asterisk start --foreground`) behaves as
systemd expects (ready once ARI answers, a clean stop on SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ari_app.ari import AriClient
from ari_app.clock import Clock
from ari_app.config import PROJECT_ROOT, Site, load_site
from ari_app.pbx.process import is_our_asterisk, pid_path
from ari_app.running import app_pid
from ari_app.secrets import secret
from ari_app.testing.ports import free_port, rtp_range
from ari_app.testing.sipp import SippRun, run_sipp
from ari_app.testing.web import web_session, web_url
from ari_app.tickets.fallback import read_records
from tests.integration.conftest import PhoneFactory, seed_operators, until
from tests.integration.test_faults import bridged, caller_in_app
from tests.integration.test_live_admin import audio_flows

pytestmark = pytest.mark.integration


class RunSh:
    """./scripts/run.sh on free ports, with its state in the test's var dir."""

    def __init__(self, var_dir: Path, db_url: str) -> None:
        self.var_dir = var_dir
        rtp_start, rtp_end = rtp_range()
        self.ports = {name: free_port() for name in ("SIP", "HTTP", "WEB", "FASTAGI")}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA112_")} | {
            f"SIAGA112_{name}_PORT": str(port) for name, port in self.ports.items()} | {
            "SIAGA112_SITE": "batola", "SIAGA112_VAR": str(var_dir), "DATABASE_URL": db_url,
            "SIAGA112_RTP_START": str(rtp_start), "SIAGA112_RTP_END": str(rtp_end),
            "SIAGA112_SKIP_SETUP": "1",  # setup.sh has run (test.sh runs it first)
            # The app is back ~0.6 s after its restart begins; the 1.5 s wait first leaves a
            # caller placed just after the kill no chance of reaching it, so the fallback's
            # part is shown every time (and the app is still back within 3 s).
            "SIAGA112_RESTART_DELAY_S": "1.5",
            "SIAGA112_LOG_FORMAT": "json"}  # as the systemd units run the app
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = var_dir / "run.log"

    def site(self) -> Site:
        saved = dict(os.environ)
        os.environ.update(self.env)
        try:
            return load_site("batola")
        finally:
            os.environ.clear()
            os.environ.update(saved)

    async def start(self) -> None:
        with open(self.log_path, "ab") as out:  # noqa: ASYNC230 - a local log file, opened once
            self.proc = await asyncio.create_subprocess_exec(
                str(PROJECT_ROOT / "scripts" / "run.sh"), env=self.env, cwd=PROJECT_ROOT,
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)

    async def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise AssertionError(f"run.sh exited {self.proc.returncode}: {self.log()}")
        try:
            async with web_session() as http, http.get(
                    f"{web_url(self.ports['WEB'])}/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    async def status(self) -> tuple[int, dict[str, Any]]:
        """`siaga112 status --json` as an admin (or a monitoring check) runs it."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ari_app.cli", "status", "--json", env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, json.loads(out or b"{}") if out else {"stderr": err.decode()}

    def json_lines(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    async def stop(self) -> int | None:
        if self.proc is None or self.proc.returncode is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)  # our own child (run.sh execs the supervisor)
        try:
            return await asyncio.wait_for(self.proc.wait(), 40)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return None


@pytest.fixture
async def run_sh(var_dir: Path, db_url: str) -> AsyncIterator[RunSh]:
    run = RunSh(var_dir, db_url)
    yield run
    await run.stop()


async def ari_up_throughout(url: str, password: str, done: asyncio.Event) -> int:
    """Ask Asterisk over ARI every 100 ms until ``done``; every answer must be 200."""
    answers = 0
    auth = {"Authorization": aiohttp.encode_basic_auth("siaga112", password)}
    async with aiohttp.ClientSession(headers=auth) as http:
        while not done.is_set():
            async with http.get(f"{url}/ari/asterisk/info",
                                timeout=aiohttp.ClientTimeout(total=2)) as resp:
                assert resp.status == 200, resp.status
            answers += 1
            try:
                await asyncio.wait_for(done.wait(), 0.1)
            except TimeoutError:
                pass
    return answers


async def test_run_sh_app_killed_asterisk_answers_throughout_fallback_takes_the_new_call_and_the_talk_goes_on(
    run_sh: RunSh, phone: PhoneFactory, db_url: str,
) -> None:
    op1, c1 = await phone("operator_answer_wait.xml", name="op1")         # on the long call
    _op2, c2 = await phone("operator_answer_talk.xml", name="op2", extra_args=["-d", "1500"])
    site = run_sh.site()
    await seed_operators(db_url, site, Clock(), [("op1", c1), ("op2", c2)])
    await run_sh.start()
    await until(run_sh.healthy, timeout=60)
    code, status = await run_sh.status()
    assert code == 0, status
    assert status["asterisk_up"] and status["asterisk_version"] and status["app_connected"]
    assert status["on_duty"] == ["op1", "op2"] and status["reachable"] == ["op1", "op2"]
    assert status["journal_backlog"] == 0 and status["asterisk_uptime_s"] >= 0
    url = f"http://127.0.0.1:{run_sh.ports['HTTP']}"
    password = secret(run_sh.var_dir, "ari.password")
    client = AriClient(url, "siaga112", password)
    try:
        call = asyncio.create_task(run_sipp(SippRun(
            "caller_talks.xml", target_port=run_sh.ports["SIP"],
            keys={"caller": "081200001411"}, timeout_s=120)))
        caller = str(await until(lambda: caller_in_app(client, site.stasis_app)))
        await until(lambda: bridged(client, caller))
        [operator_leg] = [c for c in (await client.get("bridges", f"call-{caller}"))["channels"]
                          if c != caller]
        asterisk_pid = int(pid_path(run_sh.var_dir).read_text())

        done = asyncio.Event()
        watch = asyncio.create_task(ari_up_throughout(url, password, done))
        killed = app_pid(run_sh.var_dir, site.stasis_app)
        assert killed is not None
        os.kill(killed, signal.SIGKILL)  # found through its instance lock, checked in /proc
        killed_at = time.monotonic()

        async def back() -> float:
            await until(run_sh.healthy, timeout=30)
            return time.monotonic() - killed_at

        back_after = asyncio.create_task(back())
        # A caller arriving now finds no app: the dialplan fallback rings the idle operator.
        meanwhile = await run_sipp(SippRun("caller_listen.xml", target_port=run_sh.ports["SIP"],
                                           keys={"caller": "081200001412"}))
        print(f"app back (healthz 200) {await back_after:.2f} s after SIGKILL "
              f"(restart delay {run_sh.env['SIAGA112_RESTART_DELAY_S']} s)")
        assert app_pid(run_sh.var_dir, site.stasis_app) not in (None, killed)
        done.set()
        assert await watch > 0
        assert meanwhile.ok, meanwhile.errors
        end = await fallback_end_for(run_sh, "081200001412")
        assert end["dialstatus"] == "ANSWER" and "op2" in end["operator"], end

        # The call in progress when the app died: still bridged, audio both ways.
        await until(lambda: bridged(client, caller))
        await audio_flows(client, caller, operator_leg)
        await client.delete("channels", caller)
        result = await call
        assert result.ok, result.errors
        assert (await op1.wait(20)).successful == 1
        # Asterisk never restarted: the same process throughout.
        assert int(pid_path(run_sh.var_dir).read_text()) == asterisk_pid
    finally:
        await client.close()
    assert await run_sh.stop() == 0
    assert not is_our_asterisk(asterisk_pid, run_sh.var_dir)  # Asterisk stopped with run.sh
    assert any(r["msg"].startswith("supervise: app exited with -9")
               for r in run_sh.json_lines())
    # JSON log lines, the call id as a field of its own (journald, ELK).
    adopted = [r for r in run_sh.json_lines() if r["logger"] == "ari_app.app"
               and r["msg"].endswith("adopted")]
    assert [r["call"] for r in adopted] == [caller], adopted
    # The web side's access log: every /healthz the test asked, without query strings.
    access = [json.loads(line) for line in
              (run_sh.var_dir / "log" / "web-access.log").read_text().splitlines()]
    assert {"path": "/healthz", "status": "200", "method": "GET"}.items() <= access[-1].items()
    code, status = await run_sh.status()
    assert code == 2 and not status["asterisk_up"], status  # the line cannot answer now


async def fallback_end_for(run: RunSh, caller: str) -> dict[str, str]:
    """The fallback's hangup record of a call (var/fallback/calls-<day>.jsonl), once written."""
    journal = run.var_dir / "fallback" / "calls.jsonl"

    async def ended() -> dict[str, str] | None:
        return next((r for r in read_records(journal)
                     if r["event"] == "end" and r["caller"] == caller), None)

    return dict(await until(ended, timeout=15))


async def test_asterisk_start_foreground_says_ready_once_ari_answers_and_stops_cleanly_on_sigterm(
    var_dir: Path, tmp_path: Path,
) -> None:
    run = RunSh(var_dir, f"sqlite+aiosqlite:///{var_dir}/siaga112.db")
    notify = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    env = run.env | {"NOTIFY_SOCKET": str(notify)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ari_app.cli", "asterisk", "start", "--foreground", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    try:
        loop = asyncio.get_running_loop()
        ready = await asyncio.wait_for(loop.sock_recv(sock, 64), 60)
        assert ready == b"READY=1"
        password = secret(var_dir, "ari.password")
        client = AriClient(f"http://127.0.0.1:{run.ports['HTTP']}", "siaga112", password)
        try:
            info = await client.get("asterisk", "info")  # ARI answered before READY
        finally:
            await client.close()
        assert "system" in info
        asterisk_pid = int(pid_path(var_dir).read_text())
        assert is_our_asterisk(asterisk_pid, var_dir)
        proc.send_signal(signal.SIGTERM)  # what systemd sends on stop
        code = await asyncio.wait_for(proc.wait(), 30)
        assert proc.stdout is not None
        shown = (await proc.stdout.read()).decode(errors="replace")
        assert code == 0, shown
        assert not is_our_asterisk(asterisk_pid, var_dir)
    finally:
        sock.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_sh_asterisk_killed_is_started_again_and_the_app_reconnects_by_itself(
    run_sh: RunSh, phone: PhoneFactory, db_url: str,
) -> None:
    _op1, c1 = await phone("operator_answer_talk.xml", name="op1", extra_args=["-d", "1000"])
    await seed_operators(db_url, run_sh.site(), Clock(), [("op1", c1)])
    await run_sh.start()
    await until(run_sh.healthy, timeout=60)
    first = int(pid_path(run_sh.var_dir).read_text())
    assert is_our_asterisk(first, run_sh.var_dir)
    app_before = app_pid(run_sh.var_dir, run_sh.site().stasis_app)
    os.kill(first, signal.SIGKILL)  # checked above: our Asterisk, started by run.sh

    async def new_asterisk() -> bool:
        try:
            pid = int(pid_path(run_sh.var_dir).read_text())
        except (OSError, ValueError):
            return False
        return pid != first and is_our_asterisk(pid, run_sh.var_dir)

    await until(new_asterisk, timeout=60)
    await until(run_sh.healthy, timeout=30)  # the same app, reconnected with its back-off
    assert app_pid(run_sh.var_dir, run_sh.site().stasis_app) == app_before
    result = await run_sipp(SippRun("caller_key.xml", target_port=run_sh.ports["SIP"],
                                    keys={"caller": "081200001421"}, template={"digit": "2"}))
    assert result.ok, result.errors
    assert any(r["msg"] == "supervise: asterisk exited with -9; starting it again"
               for r in run_sh.json_lines())
