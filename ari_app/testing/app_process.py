"""`siaga112 serve` as a separate process, for fault tests (SIGKILL, restart, second instance)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import aiohttp

from ari_app.testing.asterisk import PrivateAsterisk
from ari_app.testing.web import web_session, web_url

log = logging.getLogger(__name__)


class AppProcess:
    def __init__(self, asterisk: PrivateAsterisk, var_dir: Path, database_url: str,
                 web_port: int, *, fake_time: str | None = None, node: str = "") -> None:
        self.asterisk, self.var_dir, self.database_url = asterisk, var_dir, database_url
        self.web_port, self.fake_time, self.node = web_port, fake_time, node
        self.proc: asyncio.subprocess.Process | None = None
        self.log_path = var_dir / f"app-{web_port}.log"

    def env(self) -> dict[str, str]:
        r = self.asterisk.rendered
        env = {k: v for k, v in os.environ.items() if not k.startswith("SIAGA112_")}
        env |= {
            "SIAGA112_ARI_URL": self.asterisk.ari_url, "SIAGA112_ARI_USER": r.ari_user,
            "SIAGA112_ARI_PASSWORD": r.ari_password, "DATABASE_URL": self.database_url,
            "SIAGA112_WEB_PORT": str(self.web_port), "SIAGA112_VAR": str(self.var_dir),
            "SIAGA112_SITE": self.asterisk.site.code,
        }
        if self.fake_time:
            env["SIAGA112_FAKE_TIME"] = self.fake_time
        if self.node:
            env["SIAGA112_NODE"] = self.node
        return env

    async def spawn(self) -> asyncio.subprocess.Process:
        with open(self.log_path, "ab") as out:  # noqa: ASYNC230 - a local log file, opened once
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ari_app.cli", "serve", env=self.env(),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=asyncio.subprocess.STDOUT)

    async def start(self, timeout: float = 20.0) -> None:
        self.proc = await self.spawn()
        await self.wait_healthy(timeout)

    async def wait_healthy(self, timeout: float = 20.0) -> None:
        """Until /healthz says the ARI websocket is up (polling another process's port)."""
        url = f"{web_url(self.web_port)}/healthz"
        async with asyncio.timeout(timeout), web_session() as http:
            while True:
                if self.proc is not None and self.proc.returncode is not None:
                    raise RuntimeError(f"app exited {self.proc.returncode}: {self.log_tail()}")
                try:
                    async with http.get(url) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: the app holds its ARI websocket but handles nothing (a hung process)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
