"""`siaga112 supervise`: Asterisk, the screening server and the app, for a machine without systemd.

The same shape as the shipped systemd units: Asterisk starts first and never stops because the
app did; the screening server and the app are restarted whenever they exit (the app is back in
well under 3 s: the restart waits 0.2 s, doubling to 2 s only if it keeps failing at once).
A stop (Ctrl-C, SIGTERM) stops the app, then the screening server, then Asterisk: only the
processes this supervisor started, through their own child handles (a child that is not yet
reaped keeps its pid, so the number cannot belong to anyone else).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.config import Site
from ari_app.pbx.process import AsteriskProcess, running_pid
from ari_app.pbx.render import RenderResult

log = logging.getLogger(__name__)

# The first restart waits this long (SIAGA112_RESTART_DELAY_S): the app is back ~0.6 s later.
FIRST_DELAY_S = float(os.environ.get("SIAGA112_RESTART_DELAY_S") or 0.2)
MAX_DELAY_S = 2.0
HEALTHY_AFTER_S = 10.0   # a child that ran this long restarts at the first delay again
STOP_WAIT_S = 15.0


@dataclass
class Child:
    """A supervised program: restarted whenever it exits, until the supervisor stops."""

    name: str
    argv: list[str]
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    delay: float = FIRST_DELAY_S
    started_at: float = field(default=0.0)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(*self.argv, stdin=subprocess.DEVNULL)
        self.started_at = time.monotonic()
        log.info("supervise: %s started, pid %d", self.name, self.proc.pid)

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # our own unreaped child: its pid is still ours
        try:
            await asyncio.wait_for(proc.wait(), STOP_WAIT_S)
        except TimeoutError:
            log.warning("supervise: %s pid %d did not stop in %.0f s; killing it", self.name,
                        proc.pid, STOP_WAIT_S)
            proc.kill()
            await proc.wait()
        log.info("supervise: %s stopped", self.name)


class Supervisor:
    def __init__(self, site: Site, var_dir: Path, render: Callable[[], RenderResult]) -> None:
        self.site, self.var_dir, self.render = site, var_dir, render
        cli = [sys.executable, "-m", "ari_app.cli", "--site", str(site.file), "--var-dir",
               str(var_dir)]
        self.children = [Child("screening server", [*cli, "agi", "serve"]),
                         Child("app", [*cli, "serve"])]
        self.asterisk: AsteriskProcess | None = None
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: the terminal closed
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self._start_asterisk()
            for child in self.children:
                await child.start()
            watchers = [asyncio.create_task(self._keep(child), name=child.name)
                        for child in self.children]
            watchers.append(asyncio.create_task(self._keep_asterisk(), name="asterisk"))
            await self.stopping.wait()
            for task in watchers:
                task.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
        finally:
            for child in reversed(self.children):  # the app first, Asterisk last
                await child.stop()
            if self.asterisk is not None:
                await asyncio.to_thread(self.asterisk.stop)
                log.info("supervise: asterisk stopped")
        return 0

    async def _start_asterisk(self) -> None:
        pid = running_pid(self.var_dir)
        if pid is not None:
            # Ours (checked in /proc), left running by an earlier supervisor: calls may be up
            # on it, so it is used as it is and not restarted or stopped by this supervisor.
            log.warning("supervise: our Asterisk is already running (pid %d); using it, and "
                        "leaving it running on stop", pid)
            return
        self.asterisk = AsteriskProcess(self.var_dir, await asyncio.to_thread(self.render))
        await asyncio.to_thread(self.asterisk.start)
        log.info("supervise: asterisk started, pid %s", self.asterisk.pid)

    async def _keep_asterisk(self) -> None:
        """Asterisk is restarted too if it dies (the app reconnects by itself)."""
        while self.asterisk is not None:
            proc = self.asterisk.proc
            if proc is None:
                return
            code = await asyncio.to_thread(proc.wait)
            if self.stopping.is_set():
                return
            log.error("supervise: asterisk exited with %s; starting it again", code)
            try:
                self.asterisk = AsteriskProcess(self.var_dir, await asyncio.to_thread(self.render))
                await asyncio.to_thread(self.asterisk.start)
            except Exception as exc:
                log.error("supervise: asterisk did not start: %s; retrying", exc)
                await asyncio.sleep(MAX_DELAY_S)

    async def _keep(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            if ran >= HEALTHY_AFTER_S or child.restarts == 0:
                child.delay = FIRST_DELAY_S
            else:  # failing again at once (e.g. the database is not migrated): back off
                child.delay = min(child.delay * 2, MAX_DELAY_S)
            child.restarts += 1
            log.error("supervise: %s exited with %s after %.1f s; restart %d in %.1f s",
                      child.name, code, ran, child.restarts, child.delay)
            await asyncio.sleep(child.delay)
            await child.start()


def supervise(site: Site, var_dir: Path, render: Callable[[], RenderResult]) -> int:
    """Run until SIGINT/SIGTERM. ``render`` writes the Asterisk config before each start of
    Asterisk (operators from the database as they are then)."""
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return asyncio.run(Supervisor(site, var_dir, render).run())
